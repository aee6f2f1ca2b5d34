import csv
import json
import os
import warnings

import numpy as np
import pytest

from experiments import compare
from kerasimpl import comparison, evaluation, inference, models
from kerasimpl.artifacts import load_model, read_csv
from kerasimpl.data import load_dataset, stratified_split
from kerasimpl.run_config import RunConfig

# float32: these tests compare against float32 Keras to 1e-4 (auto would pick bfloat16 on an AMX CPU).
FAST = ["--epochs", "2", "--batch-size", "32", "--quiet", "--plots-dir", "", "--hidden", "16", "--precision", "float32"]


def outputs_ok(out, backbones):
    for name in ("config.json", "results.json", "results.md", "results.csv", "plots/comparison.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    results = json.load(open(os.path.join(out, "results.json")))
    assert [r["backbone"] for r in results] == backbones
    rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
    assert [r["backbone"] for r in rows] == backbones
    md = open(os.path.join(out, "results.md")).read()
    assert all(f"| {b} |" in md for b in backbones)
    for r in results:
        for key in ("test_accuracy", "test_loss", "train_seconds", "params_total", "params_trainable",
                    "model_mb", "images_per_second", "top5_accuracy"):
            assert np.isfinite(r[key]), key
        folder = os.path.join(out, r.get("run", r["backbone"]))
        for name in ("model.keras", "history.csv", "learning_curves.png", "confusion_matrix.png"):
            assert os.path.getsize(os.path.join(folder, name)) > 0
        assert len(read_csv(os.path.join(folder, "history.csv"))) == r["epochs_run"]
        assert np.sum(r["confusion_matrix"]) == r["num_test"]
    return results


@pytest.mark.slow
def test_compare_end_to_end_on_synthetic_with_local_weights(tmp_path):
    # A local weights file stands in for the ImageNet download.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        donor = models.build_classifier("mobilenetv2", 10, weights=None, image_size=32, backbone_kwargs={"alpha": 0.35})
    weights = str(tmp_path / "mnv2.weights.h5")
    models.backbone_model(donor).save_weights(weights)
    out = str(tmp_path / "run")
    argv = ["--data", "synthetic", "--classes", "3", "--backbones", "smallcnn,mobilenetv2", "--weights", weights,
            "--image-size", "32", "--alpha", "0.35", "--finetune-epochs", "1", "--finetune-layers", "5", "--out", out,
            "--inference-batch-size", "8", *FAST]
    assert compare.main(argv) == 0
    results = outputs_ok(out, ["smallcnn", "mobilenetv2"])
    assert [r["throughput_batch"] for r in results] == [8, 8]  # the inference batch, not --batch-size
    small, mnv2 = results
    assert small["trained"] == "end-to-end" and mnv2["trained"] == "frozen base + fine-tune"
    assert mnv2["extract_seconds"] > 0 and mnv2["finetune_seconds"] > 0
    stages = {r["stage"] for r in read_csv(os.path.join(out, "mobilenetv2", "history.csv"))}
    assert stages == {"head", "finetune"}
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["split"]["seed"] == 0 and config["versions"]["backend"] and config["device"]
    # The reported accuracy is what the saved model gives on the same data.
    data = load_dataset("synthetic", classes=3)
    for r in results:
        model = load_model(os.path.join(out, r["backbone"], "model.keras"))
        probs = inference.predict(model, data.x_test)
        assert evaluation.classification_metrics(probs, data.y_test)["accuracy"] == pytest.approx(r["test_accuracy"])
    # A second call resumes: nothing is trained again, the results are the same;
    # --saliency explains the same test images with both saved models.
    assert compare.main(argv + ["--saliency", "3"]) == 0
    assert json.load(open(os.path.join(out, "results.json"))) == results
    report = json.load(open(os.path.join(out, "saliency_backbones.json")))
    assert list(report["models"]) == ["smallcnn", "mobilenetv2"] and len(set(report["images"])) == 3
    assert report["models"]["mobilenetv2"]["layer"] and all(len(m["predictions"]) == 3
                                                            for m in report["models"].values())
    assert os.path.getsize(os.path.join(out, "plots", "saliency_backbones.png")) > 10_000
    # Occlusion's 224-px window (30/20) is scaled to these 32-px models: a 10x10 map, not one 1x1 cell.
    assert compare.main(argv + ["--saliency", "2", "--saliency-method", "occlusion"]) == 0
    report = json.load(open(os.path.join(out, "saliency_backbones.json")))
    assert report["method"] == "occlusion"
    for m in report["models"].values():
        assert m["map_shape"] == [10, 10] and (m["options"]["patch"], m["options"]["stride"]) == (4, 3)


@pytest.mark.slow
def test_compare_smallcnn_on_real_subset_learns(subset_path, tmp_path):
    out = str(tmp_path / "run")
    argv = ["--preset", "smoke", "--data", subset_path, "--backbones", "smallcnn", "--out", out,
            "--epochs", "2", "--batch-size", "32", "--quiet", "--plots-dir", str(tmp_path / "plots")]
    assert compare.main(argv) == 0
    (r,) = outputs_ok(out, ["smallcnn"])
    assert r["num_test"] == 500
    # Chance is 0.1; 2 epochs at batch 32 on 4,136 real images: measured
    # 26.6% (torch) and 26.2% (jax).
    assert r["test_accuracy"] > 0.2
    assert os.path.exists(tmp_path / "plots" / "smoke" / "comparison.png")
    assert "NOT the full CIFAR-10 test set" in open(os.path.join(out, "results.md")).read()
    split = stratified_split(load_dataset(subset_path).y_train, 0.2, 0)
    assert json.load(open(os.path.join(out, "config.json")))["split"]["num_val"] == len(split.val)


@pytest.mark.parametrize("argv,message", [
    (["--backbones", "resnet9000"], "Accepted: .*smallcnn"),
    (["--data", "/nonexistent/cifar.tar.gz"], "Unknown data source"),
    (["--augment", "mixup!"], "Unknown augmentation"),
    (["--data-size", "64"], r"image_size applies to 'tfds:NAME' sources and image folders only.*Received: image_size=64"),
    (["--backbones", "vgg16,mobilenetv2", "--weights", "/some/file.h5"], "A weights file fits one backbone"),
])
def test_compare_bad_input_is_one_clear_line(tmp_path, capsys, argv, message):
    code = compare.main(["--data", "synthetic", "--out", str(tmp_path / "r"), *FAST, *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    import re
    assert re.search(message, err)


def test_compare_help_lists_backbones(capsys):
    with pytest.raises(SystemExit) as e:
        compare.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "mobilenetv3large" in out and "--finetune-epochs" in out


def test_compare_seeds_report_mean_and_std(compare_run):
    _, out, _ = compare_run  # --seeds 2 (tests/conftest.py)
    (r,) = json.load(open(os.path.join(out, "results.json")))
    per_seed = [json.load(open(os.path.join(out, "smallcnn", f"seed{s}", "result.json"))) for s in (0, 1)]
    accs = [p["test_accuracy"] for p in per_seed]
    assert r["seeds"] == [0, 1]
    assert r["test_accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert r["test_accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert (r["image_size"], r["params_total"]) == (per_seed[0]["image_size"], per_seed[0]["params_total"])  # shared
    assert "±" in open(os.path.join(out, "results.md")).read()
    row = next(csv.DictReader(open(os.path.join(out, "results.csv"))))
    assert float(row["test_accuracy_std"]) == pytest.approx(r["test_accuracy"]["std"])
    # The test set's own 95% interval, at the mean accuracy over its num_test images (the same on every seed).
    from kerasimpl.evaluation import wilson_interval

    assert r["num_test"] == per_seed[0]["num_test"]
    assert r["test_accuracy_ci95"] == pytest.approx(list(wilson_interval(np.mean(accs), r["num_test"])))
    assert float(row["test_accuracy_ci95_low"]) == pytest.approx(r["test_accuracy_ci95"][0])
    assert float(row["test_accuracy_ci95_high"]) == pytest.approx(r["test_accuracy_ci95"][1])


def test_wilson_interval_known_answers():
    """Wilson (1927): 414 of 500 right (82.8%) -> 79.25-85.85%; 0 of 10 -> 0-27.75%; 10 of 10 -> 72.25-100%."""
    from kerasimpl.evaluation import wilson_interval
    from kerasimpl.reporting import markdown_table, with_interval

    assert wilson_interval(0.828, 500) == pytest.approx((0.79245, 0.85855), abs=5e-5)
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.27754), abs=5e-5)
    assert wilson_interval(1.0, 10) == pytest.approx((0.72246, 1.0), abs=5e-5)
    with pytest.raises(ValueError, match="Received: accuracy=1.5, n=10"):
        wilson_interval(1.5, 10)
    row = with_interval({"backbone": "b", "test_accuracy": 0.828, "num_test": 500})
    assert "| 82.80% | 79.2%-85.9% |" in markdown_table([row])
    assert "test_accuracy_ci95" not in with_interval({"backbone": "b", "test_accuracy": 0.5})  # n unknown


@pytest.mark.slow
def test_compare_killed_mid_training_resumes_without_duplicate_rows(tmp_path):
    """SIGKILL the CLI after two epochs are logged; the rerun finishes the same epochs once each."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "experiments.compare", "--data", "synthetic", "--classes", "3", "--backbones",
            "smallcnn", "--epochs", "5", "--batch-size", "16", "--inference-batch-size", "8", "--quiet", "--plots-dir",
            "", "--out", str(out)]
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "torch")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "smallcnn" / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(read_csv(history)) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "smallcnn" / "result.json").exists()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    epochs = [int(r["epoch"]) for r in read_csv(history)]
    (result,) = json.load(open(out / "results.json"))
    assert epochs == list(range(len(epochs))) and result["epochs_run"] == len(epochs)
    assert len(epochs) >= 3  # at least one epoch ran after the restart


def test_frozen_base_evaluation_from_cached_features_equals_the_full_model(tmp_path, synthetic):
    """Test/val metrics of a frozen base come from cached pooled features and
    the head: the same probabilities as the full model on raw images."""
    from kerasimpl import comparison
    from kerasimpl.heads import HeadConfig
    from kerasimpl.training import TrainConfig

    data = synthetic
    split = data.split(0.2, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = models.build_classifier("mobilenetv2", data.num_classes, weights=None, image_size=32,
                                        backbone_kwargs={"alpha": 0.35}, head=HeadConfig((16,), 0.0))
    for layer in models.base_layers(model):  # non-trivial BN statistics
        if isinstance(layer, __import__("keras").layers.BatchNormalization):
            layer.moving_mean.assign(np.random.default_rng(0).normal(0, 0.1, layer.moving_mean.shape))
    run = comparison.BackboneRun("mobilenetv2", weights="local.weights.h5", image_size=32)
    config = TrainConfig(batch_size=32)
    test, val, path = comparison.evaluate(model, run, data, split, config, str(tmp_path))
    assert path == "cached pooled features + head"
    assert os.path.exists(tmp_path / "features_test.npz") and os.path.exists(tmp_path / "features_train.npz")
    np.testing.assert_allclose(test, inference.predict(model, data.x_test), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(val, inference.predict(model, data.x_train, indices=split.val), rtol=1e-4, atol=1e-6)
    # Fine-tuned (or end-to-end) models: features computed fresh, same probabilities.
    os.remove(tmp_path / "features_test.npz")
    test2, val2, path = comparison.evaluate(model, run, data, split, TrainConfig(finetune_epochs=1), str(tmp_path))
    assert path == "pooled features (fresh) + head" and not os.path.exists(tmp_path / "features_test.npz")
    np.testing.assert_allclose(test2, test, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(val2, val, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_finetune_row_shares_its_bases_features_and_fine_tunes_on_cached_activations(tmp_path):
    """NAME, NAME:finetune and NAME's linear probe in one run: the finetune row trains
    its backbone's fine-tuning epochs on the top of the base (cached activations, 2 views) while
    the others stay frozen; one feature cache (NAME's) serves all three; no probe of
    the finetune row; the preset that runs this for real is lite-subset."""
    from kerasimpl.backbones import get_spec

    row_epochs = get_spec("mobilenetv2").finetune.epochs  # the row's own, from the registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        donor = models.build_classifier("mobilenetv2", 10, weights=None, image_size=32, backbone_kwargs={"alpha": 0.35})
    weights = str(tmp_path / "mnv2.weights.h5")  # a local file stands in for the ImageNet download
    models.backbone_model(donor).save_weights(weights)
    out = str(tmp_path / "run")
    argv = ["--data", "synthetic", "--backbones", "mobilenetv2,mobilenetv2:finetune", "--weights", weights,
            "--alpha", "0.35", "--image-size", "32", "--linear-probe", "--finetune-layers", "10",
            "--finetune-views", "2", "--finetune-lr", "1e-4", "--out", out, *FAST]
    assert compare.main(argv) == 0
    results = {r["run"]: r for r in json.load(open(os.path.join(out, "results.json")))}
    assert list(results) == ["mobilenetv2", "mobilenetv2-linear-probe", "mobilenetv2-finetune"]
    history = read_csv(os.path.join(out, "mobilenetv2-finetune", "history.csv"))
    assert 1 <= sum(r["stage"] == "finetune" for r in history) <= row_epochs  # early stopping may cut it
    assert results["mobilenetv2-finetune"]["trained"] == "frozen base + fine-tune"
    assert results["mobilenetv2"]["trained"] == "frozen base"
    assert not any(r["stage"] == "finetune" for r in read_csv(os.path.join(out, "mobilenetv2", "history.csv")))
    info = json.load(open(os.path.join(out, "mobilenetv2-finetune", "finetune.json")))
    assert info["mode"] == "top on cached activations" and info["views"] == 2
    assert os.path.exists(os.path.join(out, "mobilenetv2", "features_train.npz"))
    assert not any(f.startswith("features_") for f in os.listdir(os.path.join(out, "mobilenetv2-finetune")))
    config = json.load(open(os.path.join(out, "config.json")))
    assert (config["finetune_learning_rate"], config["finetune_views"], config["finetune_top_layers"]) == (1e-4, 2, 10)


def test_the_width_option_reaches_exactly_the_backbones_whose_builder_takes_it():
    """--alpha goes to the MobileNets (keras.applications' and torchvision's) because their builders take
    `alpha`, not because of their names; the others never see it."""
    from kerasimpl.backbones import accepts, list_backbones

    takers = sorted(n for n in list_backbones() if accepts(n, "alpha"))
    assert takers == ["mobilenetv2", "mobilenetv2_tv", "mobilenetv3large", "mobilenetv3small"]
    options = RunConfig(("mobilenetv2_tv", "vgg16"), "synthetic", "unused", weights=None, image_size=32,
                        hidden=(8,), dropout=0.0, alpha=0.35, epochs=1, batch_size=8, augment=(), workers=1)
    for name in ("mobilenetv2_tv", "vgg16"):
        run, _ = comparison.row_setup(name, options, 0)
        assert run.backbone_kwargs == ({"alpha": 0.35} if name == "mobilenetv2_tv" else {})


def test_seeds_of_a_frozen_row_share_one_feature_extraction(tmp_path, monkeypatch):
    """--seeds 2 on a frozen base: the features are per image, extracted once into out/<row>/ and read by both
    seeds (whose heads still differ), for training and the test set alike."""
    from kerasimpl import features

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        donor = models.build_classifier("mobilenetv2", 10, weights=None, image_size=32, backbone_kwargs={"alpha": 0.35})
    weights = str(tmp_path / "mnv2.weights.h5")
    models.backbone_model(donor).save_weights(weights)
    calls = []
    real = features.extract_features
    monkeypatch.setattr(features, "extract_features", lambda *a, **k: calls.append(k.get("what")) or real(*a, **k))
    out = tmp_path / "run"
    argv = ["--data", "synthetic", "--backbones", "mobilenetv2", "--weights", weights, "--alpha", "0.35",
            "--image-size", "32", "--seeds", "2", "--inference-batch-size", "16", "--out", str(out), *FAST]
    assert compare.main(argv) == 0
    assert calls == ["extract train", "extract test"]  # once per pool, not once per seed
    assert sorted(f for f in os.listdir(out / "mobilenetv2") if f.startswith("features_")) == [
        "features_test.npz", "features_train.npz"]
    per_seed = [json.load(open(out / "mobilenetv2" / f"seed{s}" / "result.json")) for s in (0, 1)]
    assert per_seed[0]["test_accuracy"] != per_seed[1]["test_accuracy"] or per_seed[0]["test_loss"] != \
        per_seed[1]["test_loss"]  # two heads, one set of features


def test_a_finished_row_is_read_back_without_touching_its_stages(tmp_path):
    """A row whose result.json exists returns it, whatever else its folder holds (a damaged stages.json is
    never read); a row folder is not made before training starts."""
    from kerasimpl.run_folder import RowFolder

    row = tmp_path / "row"
    row.mkdir()
    (row / "stages.json").write_text("{damaged")
    (row / "result.json").write_text(json.dumps({"backbone": "smallcnn", "test_accuracy": 0.5, "train_seconds": 1}))
    assert comparison.run_backbone(None, None, None, None, str(row)) == {
        "backbone": "smallcnn", "test_accuracy": 0.5, "train_seconds": 1}
    assert RowFolder(tmp_path / "new").finished_result() is None and not (tmp_path / "new").exists()
