"""A user's errors are one-line errors; a resumed run is the run it claims; figures land where documented."""

import json
import os

import pytest

from experiments import compare, infer
from kerasimpl import comparison_checks, comparison_run

RUN = ["--data", "synthetic", "--backbones", "smallcnn", "--epochs", "1", "--batch-size", "32", "--quiet",
       "--hidden", "16"]


def _error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("value", ["0", "-3"])
def test_infer_rejects_a_batch_size_below_one(capsys, value):
    assert infer.main(["--model", "missing.keras", "--batch-size", value, "x.png"]) == 2
    assert f"--batch-size must be >= 1. Received: {value}" in _error(capsys)


@pytest.mark.parametrize("argv,message", [
    (["--epochs", "0"], "--epochs must be >= 1. Received: 0"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--inference-batch-size", "-1"], "--inference-batch-size must be >= 1"),
    (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
    (["--finetune-epochs", "-1"], "--finetune-epochs must be >= 0"),
    (["--saliency", "2", "--saliency-method", "nope"], "Unknown saliency method 'nope'"),  # before training
    (["--gallery-occlusion"], "--gallery-occlusion draws beside the Grad-CAM gallery: it needs --gradcam-gallery N "
                              "(N > 0). Received: --gradcam-gallery 0"),
    (["--preset", "mobilenetv2-subset", "--gradcam-gallery", "0"], "needs --gradcam-gallery N"),
])
def test_compare_rejects_out_of_range_numbers_before_anything_runs(tmp_path, capsys, argv, message):
    out = tmp_path / "r"
    assert compare.main([*RUN, "--out", str(out), *argv]) == 2
    assert message in _error(capsys)
    assert not out.exists()  # refused before the run folder was made


def test_slow_warning_names_vgg16_on_a_cpu_and_the_way_to_skip_it():
    rows = ["vgg16", "mobilenetv2", "mobilenetv3large"]
    message = comparison_checks.slow_warning(rows, None, accelerator=False)
    assert "hours" in message and "--backbones mobilenetv2,mobilenetv3large" in message
    assert "vgg16 at 224 px about 7.6 h" in message  # 60,000 images at its measured 2.2 img/s
    assert "mobilenetv2 at" not in message  # 0.30 G multiply-adds: minutes, not hours
    # The registry's count decides, not the name: ResNet50's 4.1 G at 224 px is about 2 h, at 96 px 0.4 h.
    assert "resnet50 at 224 px about 2.0 h" in comparison_checks.slow_warning(["resnet50"], None, False)
    assert comparison_checks.slow_warning(["resnet50"], 96, False) == ""
    assert comparison_checks.slow_warning(rows, None, accelerator=True) == ""
    assert comparison_checks.slow_warning(rows, 32, accelerator=False) == ""
    assert comparison_checks.slow_warning(["mobilenetv2"], None, accelerator=False) == ""


def test_resume_only_with_the_same_options_and_every_seed_in_the_gallery(compare_run, compare_run_copy, capsys):
    _, _, cwd = compare_run  # --seeds 2, run from an empty working folder (tests/conftest.py)
    argv, out = compare_run_copy
    assert os.listdir(cwd) == []  # the default --plots-dir wrote nothing there (committed galleries untouched)
    gallery = sorted(os.listdir(os.path.join(out, "plots")))
    for seed in (0, 1):  # --seeds 2: each seed's figures reach the run's gallery
        for png in ("learning_curves.png", "confusion_matrix.png"):
            assert f"smallcnn_seed{seed}_{png}" in gallery
    config = json.load(open(os.path.join(out, "config.json")))
    assert isinstance(config["inference_batch_size"], int) and config["inference_batch_size"] >= 1
    results = open(os.path.join(out, "results.json")).read()
    capsys.readouterr()

    # Other result-changing options: refused, naming what differs; nothing rewritten.
    assert compare.main([*argv, "--lr", "0.01", "--dropout", "0.5"]) == 2
    err = _error(capsys)
    assert "--lr: 0.001 there, 0.01 now" in err and "--dropout: 0.3 there, 0.5 now" in err  # named by flag
    assert json.load(open(os.path.join(out, "config.json"))) == config
    # Options that do not change results may differ: it resumes (nothing trained again).
    assert compare.main([*argv, "--workers", "2", "--inference-batch-size", "4"]) == 0
    assert open(os.path.join(out, "results.json")).read() == results


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b"\xff\xfe\x00"])
def test_resume_from_an_unreadable_config_is_one_clear_line(tmp_path, capsys, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_bytes(content)
    assert compare.main([*RUN, "--out", str(out)]) == 2
    assert "config.json that cannot be read" in _error(capsys)
    assert (out / "config.json").read_bytes() == content


def test_the_mobilenetv2_subset_presets_occlusion_gallery_can_be_turned_off():
    parse = compare.build_parser().parse_args
    on = compare.resolve(parse(["--preset", "mobilenetv2-subset", "--data", "x.tar.gz"]))
    off = compare.resolve(parse(["--preset", "mobilenetv2-subset", "--data", "x.tar.gz", "--no-gallery-occlusion"]))
    assert (on.gallery_occlusion, on.gradcam_gallery, on.backbones) == (
        True, 8, ("mobilenetv2_tv", "mobilenetv2_tv:finetune"))
    assert off.gallery_occlusion is False and off.gradcam_gallery == 8


def test_processes_other_than_rank_0_run_silent_through_a_log_level_not_a_stdout_redirect(monkeypatch, capsys):
    """A non-writer rank gets a `say` and slow-run hook that say nothing, no Keras progress, and the
    `kerasimpl` logger at WARNING for the run (restored after); nothing touches sys.stdout."""
    import logging
    import sys
    import types

    logger = logging.getLogger("kerasimpl")
    logger.setLevel(logging.INFO)
    seen = {}

    def fake_run(config, world, plots_dir, verbose, say, on_slow):
        seen.update(verbose=verbose, level=logger.level, stdout=sys.stdout)
        say("rank 1 speaking")
        on_slow("slow")
        return []

    monkeypatch.setattr(comparison_run, "check_resume", lambda config: None)
    monkeypatch.setattr(comparison_run, "_distribution", lambda config: types.SimpleNamespace(writer=False))
    monkeypatch.setattr(comparison_run, "_run", fake_run)
    stdout = sys.stdout
    said = []
    assert comparison_run.run_comparison({}, verbose="auto", say=said.append, on_slow=said.append) == []
    assert said == [] and seen == {"verbose": 0, "level": logging.WARNING, "stdout": stdout}
    assert logger.level == logging.INFO and "rank 1" not in capsys.readouterr().out
