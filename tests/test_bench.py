"""The benchmark scripts run and report what they claim (tiny settings; no timing asserted)."""

import json

import keras
import numpy as np
import pytest

from experiments import bench, bench_full
from kerasimpl import saliency


@pytest.mark.slow
def test_saliency_section_times_every_method_and_the_references(tmp_path, capsys):
    if keras.backend.backend() == "torch":  # skip without the references (fail where CI requires them)
        from reference_libs import pytorch_grad_cam, require

        require("captum")
        pytorch_grad_cam()
    out = tmp_path / "b.json"
    assert bench.main(["--sections", "saliency", "--saliency-size", "32", "--saliency-batch", "1", "--quick",
                       "--saliency-backbone", "smallcnn",
                       "--json", str(out)]) == 0
    rows = json.load(open(out))["saliency"]
    assert [r["method"] for r in rows] == saliency.list_methods()
    assert all(r["seconds_per_image"] > 0 for r in rows)
    if keras.backend.backend() == "torch":  # references are PyTorch libraries (installed by .ci/run)
        with_ref = {r["method"] for r in rows if r["reference"]}
        assert with_ref == {"gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "scorecam", "eigencam",
                            "gradients", "integrated-gradients", "occlusion"}
        assert all(np.isfinite(r["ratio"]) and r["ratio"] > 0 for r in rows if r["reference"])
    assert "| gradcam++ | smallcnn | 32 | 1 |" in capsys.readouterr().out
    assert bench.main(["--sections", "nope"]) == 2


def test_full_size_archive_is_the_official_format(tmp_path, subset_path):
    from kerasimpl.data import load_dataset

    path = str(tmp_path / "big.tar.gz")
    bench_full.build_archive(path, subset_path, 1000, 300)
    data, src = load_dataset(path), load_dataset(subset_path)
    assert data.x_train.shape == (1000, 32, 32, 3) and data.x_test.shape == (300, 32, 32, 3)
    assert list(data.class_names) == list(src.class_names)
    # Every image is one of the subset's, with its label.
    index = {img.tobytes(): int(y) for img, y in zip(src.x_train, src.y_train)}
    assert all(index[img.tobytes()] == int(y) for img, y in zip(data.x_train[:50], data.y_train[:50]))
