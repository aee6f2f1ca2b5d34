"""Fine-tuning's MixUp (`Finetuning.mixup`, `--finetune-mixup`): `partial.ActivationMixUp`'s invariants, the
stage that uses it on cached activations and on the whole model, and the option from the flag to the record."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from kerasimpl import comparison, models, partial, training
from kerasimpl.backbones import Finetuning
from kerasimpl.heads import HeadConfig
from kerasimpl.run_config import ConfigError, RunConfig

OPTIONS = RunConfig(("efficientnetlite0",), "synthetic", "unused", hidden=(8,), dropout=0.0, epochs=1,
                    batch_size=8, augment=("flip",), workers=1)


def _batch(n=64, classes=5):
    labels = np.arange(n) % classes
    return np.eye(classes, dtype=np.float32)[labels], labels


def test_activation_mixup_mixes_rows_and_labels_with_the_same_weights():
    y = np.eye(64, dtype=np.float32)  # 64 rows, each its own class: a row's own label share is its weight
    x = np.repeat(np.repeat(y[:, None, None, :], 3, axis=1), 2, axis=2) * 7.0  # (64, 3, 2, 64): each row its label
    mx, my = partial.ActivationMixUp(0.4, seed=3)(x, y, key=(2, 5))
    assert mx.shape == x.shape and my.shape == y.shape and mx.dtype == my.dtype == np.float32
    np.testing.assert_allclose(mx, np.broadcast_to(my[:, None, None, :], x.shape) * 7.0, rtol=1e-6)  # same weights
    np.testing.assert_allclose(my.sum(1), 1.0, rtol=1e-6)  # convex: each row's weights sum to 1
    assert (my >= 0).all() and ((my > 0).sum(1) <= 2).all()  # each row mixes with at most one partner
    partner = np.where(np.eye(64, dtype=bool), -1.0, my).argmax(1)  # the other class in each row
    mixed = (my > 0).sum(1) == 2
    assert mixed.sum() >= 60 and len(set(partner[mixed])) == mixed.sum()  # a permutation: partners all differ
    own = np.diag(my)  # lam_i ~ Beta(0.4, 0.4): U-shaped, most weights near 0 or 1, about symmetric
    assert 0.35 < np.mean(np.abs(own - 0.5) > 0.4) < 0.8 and 0.3 < own.mean() < 0.7


def test_activation_mixup_is_a_function_of_seed_and_key():
    y, _ = _batch()
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    mix = partial.ActivationMixUp(1.0, seed=0)
    a, b = mix(x, y, key=(1, 2)), mix(x, y, key=(1, 2))
    np.testing.assert_array_equal(a[0], b[0])  # a resumed epoch replays its batches
    assert not np.allclose(a[0], mix(x, y, key=(2, 2))[0])  # the next epoch pairs anew
    assert not np.allclose(a[0], partial.ActivationMixUp(1.0, seed=1)(x, y, key=(1, 2))[0])


def test_activation_mixup_refuses_sparse_labels_and_a_bad_alpha():
    _, labels = _batch()
    with pytest.raises(ValueError, match=r"one-hot labels of shape \(batch, classes\).*Received labels of shape \(64,\)"):
        partial.ActivationMixUp(0.4)(np.zeros((64, 3), np.float32), labels, key=(0, 0))
    with pytest.raises(ValueError, match="alpha > 0. Received: alpha=0"):
        partial.ActivationMixUp(0)
    for bad in (-0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="a finite mixup >= 0"):
            Finetuning(mixup=bad)
        with pytest.raises(ValueError, match="finetune_mixup must be finite and >= 0"):
            training.TrainConfig(finetune_mixup=bad)
        with pytest.raises(ConfigError, match=rf"finetune_mixup.*must be finite and >= 0, 0 for none. Received: {bad}"):
            dataclasses.replace(OPTIONS, finetune_mixup=bad)


@pytest.mark.parametrize("views, mode", [(2, "top on cached activations"), (0, "whole model")])
def test_the_stage_mixes_where_it_trains(synthetic, tmp_path, monkeypatch, views, mode):
    """On cached activations every training batch goes through `ActivationMixUp`; with the whole model the
    images mix (keras.layers.MixUp at the given alpha). Both record the alpha."""
    calls, alphas = [], []
    real = partial.ActivationMixUp.__call__

    def counted(self, x, y, key):
        calls.append(key)
        return real(self, x, y, key)

    monkeypatch.setattr(partial.ActivationMixUp, "__call__", counted)
    mixup = keras.layers.MixUp.__init__

    def seen(self, alpha=0.2, **kw):
        alphas.append(alpha)
        mixup(self, alpha=alpha, **kw)

    monkeypatch.setattr(keras.layers.MixUp, "__init__", seen)
    model = models.build_classifier("smallcnn", 4, weights=None, backbone_kwargs={"widths": (8, 16)},
                                    head=HeadConfig((), 0.0))
    cfg = training.TrainConfig(epochs=1, batch_size=32, finetune_epochs=2, finetune_top_layers=4, augment=("flip",),
                               finetune_views=views, finetune_learning_rate=1e-2, finetune_mixup=0.4, patience=5)
    training.train_classifier(model, synthetic, synthetic.split(0.2, 0), cfg, str(tmp_path), verbose=0)
    record = json.load(open(tmp_path / "finetune.json"))
    assert (record["mode"], record["mixup"]) == (mode, 0.4)
    if views:
        assert sorted(set(calls)) == [(e, b) for e in range(2) for b in range(3)] and not alphas  # 77 rows, 32 a batch
    else:
        assert alphas == [0.4] and not calls
    assert np.isfinite(model.predict(synthetic.x_test[:4], verbose=0)).all()


def test_the_flag_reaches_the_row_and_its_record(tmp_path):
    from experiments import compare
    from kerasimpl.comparison_checks import check_resume
    from kerasimpl.run_config import finetuning_record

    config = compare.resolve(compare.build_parser().parse_args(
        ["--backbones", "efficientnetlite2:finetune", "--data", "synthetic", "--finetune-mixup", "0.4",
         "--out", str(tmp_path)]))
    _, row = comparison.row_setup("efficientnetlite2:finetune", config, 0)
    assert row.finetune_mixup == 0.4
    _, row = comparison.row_setup("efficientnetlite2:finetune", OPTIONS, 0)
    assert row.finetune_mixup == Finetuning().mixup == 0.0  # no flag: the registry's (none)
    record = finetuning_record(config)
    assert record["efficientnetlite2:finetune"]["mixup"] == 0.4
    # A folder recorded before the field existed resumed without it (its MixUp was none), not with it.
    before = dataclasses.replace(config, finetune_mixup=None)
    options = {k: v for k, v in before.record().items() if k != "finetune_mixup"}
    then = {k: v for k, v in finetuning_record(before)["efficientnetlite2:finetune"].items() if k != "mixup"}
    (tmp_path / "config.json").write_text(json.dumps({**options, "finetuning": {"efficientnetlite2:finetune": then}}))
    check_resume(before)
    with pytest.raises(ConfigError, match=r"efficientnetlite2:finetune's fine-tuning: .*'mixup': 0.4"):
        check_resume(config)
