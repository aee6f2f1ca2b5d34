"""Hyperparameter search (--tune): KerasTuner's space and oracle driven by our own training."""

import dataclasses
import json
import os

import numpy as np
import pytest
from optional_libs import require

from kerasimpl import comparison
from kerasimpl.training import TrainConfig


@pytest.fixture(scope="module")
def keras_tuner():
    return require("keras_tuner", "KERASIMPL_REQUIRE_TUNER", "pip install -e '.[tune]'")  # .ci/run sets it: fail


class SpyImages:
    """Stands in for the test images: counts every read (the search must make none)."""

    dtype, ndim = np.dtype(np.uint8), 4

    def __init__(self, x):
        self.x, self.reads = x, 0

    @property
    def shape(self):
        return self.x.shape

    def __len__(self):
        return len(self.x)

    def __getitem__(self, idx):
        self.reads += 1
        return self.x[idx]

    def fingerprint(self):
        """The feature cache's key names the whole dataset (as `ImageFiles.fingerprint` does, from file
        names and times): identity, not pixels a model sees, so not counted."""
        import hashlib

        return hashlib.sha256(np.ascontiguousarray(self.x).data).hexdigest()

    def __array__(self, dtype=None, copy=None):
        self.reads += 1
        return np.asarray(self.x, dtype=dtype)


@pytest.fixture()
def tiny():
    from kerasimpl.data import synthetic_dataset

    data = synthetic_dataset(num_train=96, num_test=24, num_classes=3, image_size=32, seed=0)
    return dataclasses.replace(data, x_test=SpyImages(data.x_test))


def test_search_two_trials_ranked_on_validation_and_never_reads_test(tiny, tmp_path, keras_tuner):
    from kerasimpl import tuning

    split = tiny.split(0.25, 0)
    run = comparison.BackboneRun("smallcnn", None, None)
    config = TrainConfig(epochs=1, batch_size=32, augment=(), seed=0)
    space = tuning.SearchSpace(widths=(8, 16))
    chosen = tuning.tune(run, tiny, split, config, str(tmp_path), 2, space)
    assert tiny.x_test.reads == 0  # the search never touched the test images
    rows = list(__import__("csv").DictReader(open(tmp_path / "tuning.csv")))
    assert len(rows) == 2 and {r["backbone"] for r in rows} == {"smallcnn"}
    accs = [float(r["val_accuracy"]) for r in rows]
    assert float(chosen["val_accuracy"]) == max(accs) and accs == sorted(accs, reverse=True)
    for r in rows:  # every trial: hyperparameters inside the space, seconds, a validation score in [0, 1]
        assert 1e-4 <= float(r["learning_rate"]) <= 1e-2 and int(r["head_width"]) in (8, 16)
        assert 0.0 <= float(r["dropout"]) <= 0.5 and float(r["seconds"]) > 0 and 0 <= float(r["val_accuracy"]) <= 1
        assert "finetune_layers" not in r  # end-to-end backbone: no fine-tuning depth to search
    # An accuracy over the 24 validation rows (a count / 24), not over the 96 + 24 train or test rows.
    assert all(abs(a * len(split.val) - round(a * len(split.val))) < 1e-9 for a in accs) and len(split.val) == 24
    best = json.load(open(tmp_path / "tuning" / "smallcnn" / "chosen.json"))
    assert best == chosen
    assert os.path.exists(tmp_path / "tuning" / "smallcnn" / f"trial_{best['trial']}" / "history.csv")
    assert "| smallcnn | 1 |" in open(tmp_path / "tuning.md").read()
    # Resumed: the choice is read back, nothing is searched again.
    again = tuning.tune(run, tiny, split, config, str(tmp_path), 2, space)
    assert again == chosen


def test_apply_and_space(keras_tuner):
    from kerasimpl import tuning

    run = comparison.BackboneRun("mobilenetv2", "imagenet", 32)
    config = TrainConfig(epochs=1, finetune_epochs=0, finetune_from="block_13")  # the backbone's default block
    values = {"learning_rate": 3e-3, "dropout": 0.2, "head_width": 64, "finetune_layers": 10}
    r, c = tuning.apply(values, run, config)
    assert r.head.hidden == (64,) and r.head.dropout == 0.2 and c.learning_rate == 3e-3
    assert c.finetune_top_layers == 10 and c.finetune_epochs == tuning.SearchSpace().finetune_epochs
    assert c.finetune_from is None  # the searched depth replaces the block
    _, c0 = tuning.apply({**values, "finetune_layers": 0}, run, config)
    assert c0.finetune_epochs == 0  # depth 0: no fine-tuning stage
    names = {h.name for h in tuning.SearchSpace().hyperparameters(frozen_base=True).space}
    assert names == {"learning_rate", "dropout", "head_width", "finetune_layers"}
    with pytest.raises(ValueError, match="trials must be >= 1"):
        tuning.search(run, None, None, config, "/tmp/unused", 0)


@pytest.mark.slow
def test_compare_tune_adds_a_tuned_row(tmp_path, keras_tuner):
    from experiments import compare

    out = tmp_path / "run"
    argv = ["--data", "synthetic", "--classes", "2", "--backbones", "smallcnn", "--epochs", "1", "--batch-size", "32",
            "--inference-batch-size", "8", "--hidden", "8", "--tune", "2", "--quiet", "--plots-dir", "", "--out",
            str(out)]
    assert compare.main(argv) == 0
    results = json.load(open(out / "results.json"))
    assert [r["run"] for r in results] == ["smallcnn", "smallcnn-tuned"]
    tuned = results[1]
    chosen = json.load(open(out / "tuning" / "smallcnn" / "chosen.json"))
    assert tuned["tuned"] == chosen and "tuned: best of 2 trials" in tuned["trained"]
    assert len(list(__import__("csv").DictReader(open(out / "tuning.csv")))) == 2
    config = json.load(open(out / "config.json"))
    assert config["tune"] == 2
    assert "end-to-end (tuned: best of 2 trials on validation)" in open(out / "results.md").read()


@pytest.mark.slow
def test_frozen_base_search_includes_finetune_depth_and_shares_features(tiny, tmp_path, keras_tuner):
    import warnings

    from kerasimpl import models, tuning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        donor = models.build_classifier("mobilenetv2", 3, weights=None, image_size=32, backbone_kwargs={"alpha": 0.35})
    weights = str(tmp_path / "mnv2.weights.h5")
    models.backbone_model(donor).save_weights(weights)
    run = comparison.BackboneRun("mobilenetv2", weights, 32, {"alpha": 0.35})
    config = TrainConfig(epochs=1, batch_size=32, augment=(), seed=0, inference_batch_size=16)
    space = tuning.SearchSpace(widths=(8,), depths=(0, 5), finetune_epochs=1)
    features = str(tmp_path / "features")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trials = tuning.search(run, tiny, tiny.split(0.25, 0), config, str(tmp_path / "s"), 2, space,
                               features_folder=features)
    assert tiny.x_test.reads == 0
    assert len(trials) == 2 and all(t["finetune_layers"] in (0, 5) for t in trials)
    # one per-image file of the training pool (train and validation rows alike), no test features
    assert sorted(f for f in os.listdir(features) if f.startswith("features_")) == ["features_train.npz"]
