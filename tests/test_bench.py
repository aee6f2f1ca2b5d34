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
        require("torchcam")
        pytorch_grad_cam()
    out = tmp_path / "b.json"
    assert bench.main(["--sections", "saliency", "--saliency-size", "32", "--saliency-batch", "1", "--quick",
                       "--saliency-backbone", "smallcnn",
                       "--json", str(out)]) == 0
    rows = json.load(open(out))["saliency"]
    assert [r["method"] for r in rows] == saliency.list_methods()
    assert all(r["seconds_per_image"] > 0 for r in rows)
    masked = {"scorecam", "sscam", "iscam"}  # --quick: their references are not timed (a forward per channel)
    if keras.backend.backend() == "torch":  # references are PyTorch libraries (installed by .ci/run)
        with_ref = {r["method"] for r in rows if r["reference"]}
        assert with_ref == {"gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam",
                            "gradients", "integrated-gradients", "occlusion"}
        assert all(np.isfinite(r["ratio"]) and r["ratio"] > 0 for r in rows if r["reference"])
        from kerasimpl.saliency.reference import TORCHCAM

        # cam included: the head is linear
        assert {r["method"] for r in rows if r["torchcam"]} == set(TORCHCAM) - masked
        assert all(np.isfinite(r["torchcam_ratio"]) and r["torchcam_ratio"] > 0 for r in rows if r["torchcam"])
        assert {r["method"] for r in rows if r["note"]} == masked
    report = json.load(open(out))
    assert set(report["info"]["section_seconds"]) == {"saliency"} and report["info"]["section_seconds"]["saliency"] > 0
    text = capsys.readouterr().out
    assert "| gradcam++ | smallcnn | 32 | 1 |" in text and "[bench] section saliency: " in text
    assert bench.main(["--sections", "nope"]) == 2


@pytest.mark.slow
def test_saliency_section_times_the_masked_forward_references_unless_told_not_to():
    """Outside --quick, Score-CAM, SS-CAM and IS-CAM are timed against pytorch-grad-cam and torchcam too
    (here at --quick's small options, so it stays cheap)."""
    if keras.backend.backend() != "torch":
        pytest.skip("the references are PyTorch libraries")
    from reference_libs import pytorch_grad_cam, require

    require("torchcam")
    pytorch_grad_cam()
    from experiments.bench import saliency as section

    rows = {r["method"]: r for r in section.bench_saliency(32, 1, "smallcnn", section.QUICK_OPTIONS)}
    assert rows["scorecam"]["reference"] == "pytorch-grad-cam ScoreCAM"
    assert all(rows[m]["torchcam_seconds_per_image"] > 0 and rows[m]["note"] is None
               for m in ("scorecam", "sscam", "iscam"))
    assert rows["occlusion"]["options"]["patch"] == 4  # the 224-px window scaled to 32 px


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


def test_bench_precision_columns_and_saved_model_ratio(tmp_path, capsys):
    """One row per precision; the whole saved model timed beside its base; float32 is the error reference."""
    out = tmp_path / "b.json"
    assert bench.main(["--sections", "extraction", "--backbones", "mobilenetv2", "--batch", "2", "--image-size", "32",
                       "--repeats", "1", "--precision", "all", "--json", str(out)]) == 0
    report = json.load(open(out))
    rows = report["extraction"]
    on_torch = keras.backend.backend() == "torch"
    assert [r["precision"] for r in rows] == (["float32", "bfloat16"] if on_torch else ["float32"])
    assert report["info"]["precisions"] == ["float32", "bfloat16"]
    for r in rows:
        assert r["keras_img_per_s"] > 0 and r["gmacs_per_s"] == pytest.approx(
            0.30 * (32 / 224) ** 2 * r["keras_img_per_s"])  # the published count x img/s
    if on_torch:
        f32, bf16 = rows
        assert f32["feature_rel_error_vs_float32"] == 0.0 and 0 < bf16["feature_rel_error_vs_float32"] < 0.05
        assert all(r["saved_model_img_per_s"] > 0 and r["saved_vs_base"] == pytest.approx(
            r["saved_model_img_per_s"] / r["keras_img_per_s"]) for r in rows)
    text = capsys.readouterr().out
    assert "| mobilenetv2 |" in text and "float32 peak:" in text


def test_each_precision_row_is_compared_with_the_native_twin_at_that_precision(monkeypatch):
    """The interleaved loop times [plain, (base, whole) per precision, native per precision]; each row's
    native column and ratio read the native run of its own precision."""
    if keras.backend.backend() != "torch":
        pytest.skip("the native twin and bfloat16 rows are torch's")
    from experiments.bench import extraction

    monkeypatch.setattr(extraction, "native_twin", lambda name: lambda batch, precision: batch.mean((1, 2)))
    monkeypatch.setattr(extraction, "interleaved", lambda fns, repeats: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0][:len(fns)])
    f32, bf16 = extraction.bench_extraction(["mobilenetv2"], 4, 32, 1, ("float32", "bfloat16"))
    assert (f32["keras_img_per_s"], f32["native_img_per_s"], f32["ratio_vs_native"]) == (2.0, 4 / 6, 3.0)
    assert (bf16["keras_img_per_s"], bf16["native_img_per_s"], bf16["ratio_vs_native"]) == (1.0, 0.5, 2.0)
    assert f32["plain_keras_img_per_s"] == bf16["plain_keras_img_per_s"] == 4.0


@pytest.mark.slow  # extracts the whole subset twice (float32, bfloat16)
def test_bench_accuracy_section_on_the_real_subset(tmp_path, subset_path):
    out = tmp_path / "a.json"
    assert bench.main(["--sections", "accuracy", "--subset", subset_path, "--accuracy-backbone", "smallcnn",
                       "--accuracy-size", "32", "--epochs", "2", "--precision", "bfloat16", "--json", str(out)]) == 0
    rows = json.load(open(out))["accuracy"]
    assert [r["precision"] for r in rows] == ["float32", "bfloat16"]
    assert all(r["test_images"] == 500 and r["train_images"] == 5170 for r in rows)
    assert all(0.1 < r["test_accuracy"] <= 1 for r in rows)  # frozen random features carry information
    assert rows[0]["points_vs_float32"] == 0
    assert rows[1]["points_vs_float32"] == pytest.approx(100 * (rows[1]["test_accuracy"] - rows[0]["test_accuracy"]))


@pytest.mark.slow  # starts each backend's interpreter
def test_bench_backends_side_by_side(tmp_path, capsys):
    """--backends torch,jax: the other backend's rows come from its own process; one table side by side."""
    out = tmp_path / "b.json"
    assert bench.main(["--sections", "extraction", "--backbones", "mobilenetv2", "--batch", "2", "--image-size", "32",
                       "--repeats", "1", "--precision", "float32", "--backends", "torch,jax", "--json", str(out)]) == 0
    rows = json.load(open(out))["extraction"]
    assert sorted(r["backend"] for r in rows) == ["jax", "torch"]
    assert all(r["compiled"] and r["keras_img_per_s"] > 0 and r["plain_keras_img_per_s"] > 0 for r in rows)
    text = capsys.readouterr().out
    assert "| backbone | torch_fast_img_per_s | torch_plain_keras_img_per_s | jax_fast_img_per_s |" in text
    ratio = rows[[r["backend"] for r in rows].index("jax")]["keras_img_per_s"] / \
        rows[[r["backend"] for r in rows].index("torch")]["keras_img_per_s"]
    assert f"| {ratio:.2f} |" in text


def test_bench_training_section_rows_and_extrapolation(tmp_path, capsys):
    """One row per training row and size (ascending); the epoch time is the step rate over the epoch's images."""
    out = tmp_path / "t.json"
    assert bench.main(["--sections", "training", "--train-rows", "smallcnn:scratch", "--train-sizes", "48,32",
                       "--train-steps", "2", "--json", str(out)]) == 0
    rows = json.load(open(out))["training"]
    assert [(r["row"], r["image_size"]) for r in rows] == [("smallcnn:scratch", 32), ("smallcnn:scratch", 48)]
    for r in rows:
        assert r["seconds_per_step"] > 0 and r["train_img_per_s"] == pytest.approx(64 / r["seconds_per_step"])
        assert r["epoch_seconds_extrapolated"] == pytest.approx(r["seconds_per_step"] * 625)  # 40,000 / 64
        assert r["peak_rss_mb_so_far"] > 0
    assert rows[1]["peak_rss_mb_so_far"] >= rows[0]["peak_rss_mb_so_far"]
    assert "| smallcnn:scratch |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--sections", "training", "--train-rows", "nope:scratch"], "Unknown"),
    (["--backends", "torch,tensorflow"], "unknown --backends ['tensorflow']. Accepted: torch, jax"),
    (["--sections", "training", "--train-sizes", "64,x"], "--train-sizes must be comma-separated sizes >= 1"),
    (["--saliency-backbone", "nope"], "unknown --saliency-backbone 'nope'. Accepted: "),
    (["--backbones", "nope"], "unknown backbone ['nope']"),
    (["--precision", "fp8"], "Unknown precision. Received: 'fp8'"),
    (["--batch", "0"], "--batch must be >= 1. Received: 0"),
    (["--sections", "accuracy", "--subset", "/nonexistent.tar.gz"], "needs the real CIFAR-10 subset"),
])
def test_bench_bad_settings_are_one_clear_line(argv, message, capsys):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--backbones", "nope"], "unknown backbone ['nope']. Accepted: "),
    (["--sweep", "--backbones", "smallcnn", "--batches", "8,x"], "--batches must be comma-separated integers"),
    (["--sweep", "--backbones", "smallcnn", "--batches", "0"], "Received: '0'"),
])
def test_bench_full_bad_settings_are_one_clear_line(argv, message, capsys):
    assert bench_full.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


@pytest.mark.slow  # bench_full starts compare in a fresh interpreter: 6 s
def test_bench_full_failed_compare_is_one_line_and_keeps_the_log(tmp_path, capsys):
    work = tmp_path / "w"
    code = bench_full.main(["--backbones", "smallcnn", "--train", "20", "--test", "10", "--subset", "",
                            "--work", str(work), "--compare-args=--no-such-flag", "--json", str(tmp_path / "r.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: compare of smallcnn failed (exit 2)") and "unrecognized arguments" in err
    (log,) = list(work.glob("run-smallcnn-*/compare.log"))
    assert "--no-such-flag" in log.read_text()
    assert not (tmp_path / "r.json").exists()
    assert not [p for p in work.rglob(".tmp-*")]  # atomic writes leave no temporary files


def test_shared_bench_helpers_known_answers(tmp_path):
    from experiments.bench import common as benchmarking

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu MHz\t\t: 2000.000\nflags\t\t: fpu avx avx2 fma\n")
    peak, source = benchmarking.cpu_peak_macs(str(info))
    cores = len(__import__("os").sched_getaffinity(0))
    assert peak == cores * 8 * 2 * 2000e6 and "avx2+fma" in source and "2000 MHz" in source
    info.write_text("processor\t: 0\ncpu MHz\t\t: 1000\nflags\t\t: avx512f avx2 fma\n")
    assert benchmarking.cpu_peak_macs(str(info))[0] == cores * 16 * 2 * 1000e6
    assert benchmarking.cpu_peak_macs(str(tmp_path / "none"))[0] is None
    assert benchmarking.achieved_macs("vgg16", 112, 10.0) == pytest.approx(15.5e9 / 4 * 10)
    assert benchmarking.achieved_macs("smallcnn", 32, 10.0) is None
    table = benchmarking.markdown_table([{"a": 1, "b": 0.123, "c": None}], formats={"b": ".2f"})
    assert table.splitlines() == ["| a | b | c |", "| --- | --- | --- |", "| 1 | 0.12 | - |"]
    path = tmp_path / "r.json"
    benchmarking.write_report(str(path), {"x": [1, 2]})
    assert json.load(open(path)) == {"x": [1, 2]}
