"""Fine-tuning's learning-rate schedule and label smoothing (`Finetuning.schedule`, `.label_smoothing`):
known values, what a real `fit` sets step by step, resumption, and the options from the registry to the stage."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest

from kerasimpl import comparison, models, training
from kerasimpl.backbones import Finetuning, get_spec
from kerasimpl.callbacks import CosineDecay, standard_callbacks
from kerasimpl.heads import HeadConfig
from kerasimpl.run_config import ConfigError, RunConfig
from kerasimpl.train_config import SmoothedSparseCrossentropy, compile_full

OPTIONS = RunConfig(("efficientnetlite0",), "synthetic", "unused", hidden=(8,), dropout=0.0, epochs=1,
                    batch_size=8, augment=("flip",), workers=1)


def test_smoothed_sparse_crossentropy_is_the_smoothed_target_by_hand():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=6).astype("float32")
    labels = np.array([0, 1, 2, 3, 4, 2])
    s = 0.2
    target = np.full((6, 5), s / 5) + (1 - s) * np.eye(5)[labels]  # (1 - s) one-hot + s / classes
    by_hand = float(np.mean(-(target * np.log(probs)).sum(1)))
    loss = SmoothedSparseCrossentropy(s)
    assert float(keras.ops.convert_to_numpy(loss(labels, probs))) == pytest.approx(by_hand, rel=1e-5)
    # Keras' own smoothing of one-hot labels, and no smoothing = Keras' sparse cross-entropy.
    keras_smoothed = keras.losses.CategoricalCrossentropy(label_smoothing=s)(np.eye(5)[labels], probs)
    assert float(keras.ops.convert_to_numpy(keras_smoothed)) == pytest.approx(by_hand, rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    assert float(keras.ops.convert_to_numpy(SmoothedSparseCrossentropy(0.0)(labels, probs))) == pytest.approx(
        float(keras.ops.convert_to_numpy(plain)), rel=1e-5)
    again = keras.losses.deserialize(keras.losses.serialize(loss))  # a saved compile config reloads
    assert isinstance(again, SmoothedSparseCrossentropy) and again.label_smoothing == s


def test_cosine_rates_known_values():
    cos = CosineDecay(1e-3, epochs=4)
    assert cos.rate(0) == pytest.approx(1e-3)
    assert cos.rate(2) == pytest.approx(0.5e-3)  # half way
    assert cos.rate(1, batch=5, steps=10) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 1.5 / 4)))
    assert cos.rate(4) == pytest.approx(0.0, abs=1e-12) and cos.rate(9) == pytest.approx(0.0, abs=1e-12)
    steps = [cos.rate(e, b, 10) for e in range(4) for b in range(10)]
    assert all(a > b for a, b in zip(steps, steps[1:]))  # strictly decreasing, step by step


class _Rates(keras.callbacks.Callback):
    """The learning rate each step ran at (read after the schedule set it)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def _fit(epochs, initial_epoch=0, schedule=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="softmax")])
    compile_full(model, 1e-2, label_smoothing=0.1)
    rates = _Rates()
    x, y = np.random.default_rng(0).normal(size=(40, 3)).astype("float32"), np.arange(40) % 4
    callbacks, _, _ = standard_callbacks(None, "finetune", lr_schedule=schedule or CosineDecay(1e-2, 3))
    model.fit(x, y, batch_size=10, epochs=epochs, initial_epoch=initial_epoch, validation_data=(x, y),
              callbacks=[*callbacks, rates], verbose=0, shuffle=False)
    return rates.seen, callbacks


def test_fit_runs_each_step_at_the_cosine_rate_and_a_resumed_epoch_at_the_same_rates():
    seen, callbacks = _fit(3)
    cos = CosineDecay(1e-2, 3)
    np.testing.assert_allclose(seen, [cos.rate(e, b, 4) for e in range(3) for b in range(4)], rtol=1e-6)
    assert not any(isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in callbacks)  # nothing else sets it
    resumed, _ = _fit(3, initial_epoch=2)  # epoch 2 alone, as after a crash in epoch 2
    np.testing.assert_allclose(resumed, seen[8:], rtol=1e-6)
    plateau, _, _ = standard_callbacks(None, "finetune")
    assert any(isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in plateau)  # the default schedule's


def test_the_options_reach_the_stage_from_the_registry_and_flags_override_them(synthetic, tmp_path):
    lite2 = get_spec("efficientnetlite2").finetune
    _, row = comparison.row_setup("efficientnetlite2:finetune", OPTIONS, 0)
    assert (row.finetune_schedule, row.finetune_label_smoothing) == (lite2.schedule, lite2.label_smoothing)
    over = dataclasses.replace(OPTIONS, finetune_schedule="plateau", finetune_label_smoothing=0.0)
    _, row = comparison.row_setup("efficientnetlite2:finetune", over, 0)
    assert (row.finetune_schedule, row.finetune_label_smoothing) == ("plateau", 0.0)
    over = dataclasses.replace(OPTIONS, finetune_schedule="cosine", finetune_label_smoothing=0.2)
    _, row = comparison.row_setup("vgg16:finetune", over, 0)
    assert (row.finetune_schedule, row.finetune_label_smoothing) == ("cosine", 0.2)

    # The stage trains with them: its record says so and the history's learning rate decays to ~0.
    keras.utils.set_random_seed(0)
    model = models.build_classifier("smallcnn", 4, weights=None, backbone_kwargs={"widths": (8, 16)},
                                    head=HeadConfig((), 0.0))
    cfg = training.TrainConfig(epochs=1, batch_size=32, finetune_epochs=3, finetune_top_layers=4, augment=("flip",),
                               finetune_views=2, finetune_learning_rate=1e-2, finetune_schedule="cosine",
                               finetune_label_smoothing=0.1, patience=5)
    training.train_classifier(model, synthetic, synthetic.split(0.2, 0), cfg, str(tmp_path), verbose=0)
    record = json.load(open(tmp_path / "finetune.json"))
    assert (record["schedule"], record["label_smoothing"]) == ("cosine", 0.1)
    rates = [float(r["learning_rate"]) for r in training.StageFolder(str(tmp_path)).history()
             if r["stage"] == "finetune"]
    steps = 3  # 77 training rows, batches of 32
    cos = CosineDecay(1e-2, 3)
    np.testing.assert_allclose(rates, [cos.rate(e, steps - 1, steps) for e in range(3)], rtol=1e-5)


@pytest.mark.parametrize("fields, message", [
    ({"finetune_schedule": "step"}, "Unknown finetune_schedule. Received: 'step'. Accepted: plateau, cosine"),
    ({"finetune_label_smoothing": 1.0}, r"finetune_label_smoothing must be in \[0, 1\). Received: 1.0"),
])
def test_bad_options_are_refused_naming_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(OPTIONS, **fields)
    with pytest.raises(ValueError, match="schedule in"):
        Finetuning(schedule="step")
    with pytest.raises(ValueError, match="0 <= label_smoothing < 1"):
        Finetuning(label_smoothing=-0.1)
    with pytest.raises(ValueError, match="Unknown finetune_schedule. Received: 'step'"):
        training.TrainConfig(finetune_schedule="step")
    with pytest.raises(ValueError, match=r"finetune_label_smoothing must be in \[0, 1\). Received: 1.0"):
        training.TrainConfig(finetune_label_smoothing=1.0)


def test_compare_takes_the_flags_and_refuses_a_bad_one(capsys):
    from experiments import compare

    parser = compare.build_parser()
    config = compare.resolve(parser.parse_args(["--backbones", "efficientnetlite0", "--data", "synthetic",
                                                "--finetune-schedule", "cosine", "--finetune-label-smoothing", "0.1"]))
    assert (config.finetune_schedule, config.finetune_label_smoothing) == ("cosine", 0.1)
    with pytest.raises(SystemExit):
        parser.parse_args(["--finetune-schedule", "linear"])
    err = capsys.readouterr().err
    assert "--finetune-schedule: invalid choice: 'linear'" in err and "plateau" in err and "cosine" in err


def test_a_backup_restores_each_callback_by_kind_across_schedules(tmp_path):
    """A fine-tuning stage killed under one schedule and resumed under the other (its tracked callbacks differ:
    the cosine stage has no ReduceLROnPlateau) keeps early stopping's and the best checkpoint's state."""
    from kerasimpl.callbacks import AtomicBackupAndRestore, BestCheckpoint

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    es, lr, best = (keras.callbacks.EarlyStopping(patience=5), keras.callbacks.ReduceLROnPlateau(patience=3),
                    BestCheckpoint(None))
    es.wait, es.best, es.best_epoch, lr.wait, best.best = 2, 0.75, 3, 1, 0.75
    backup = AtomicBackupAndRestore(tmp_path / "backup", track=[lr, es, best])  # the plateau stage's set
    backup.set_model(model)
    backup.on_epoch_end(4)
    es2, best2 = keras.callbacks.EarlyStopping(patience=5), BestCheckpoint(None)
    es2.set_model(model)
    es2.on_train_begin()
    restore = AtomicBackupAndRestore(tmp_path / "backup", track=[es2, best2])  # the cosine stage's set
    restore.set_model(model)
    restore.on_train_begin()
    assert (es2.wait, es2.best, es2.best_epoch, best2.best) == (2, 0.75, 3, 0.75)


def test_a_run_folder_resumes_only_with_the_fine_tuning_it_started_with(tmp_path):
    """The registry's defaults may change between a run's start and its resume (Lite2's did): config.json
    keeps each fine-tuning row's resolved settings and a resume compares them."""
    from experiments import compare
    from kerasimpl.comparison_checks import check_resume
    from kerasimpl.run_config import finetuning_record

    config = dataclasses.replace(OPTIONS, backbones=("efficientnetlite2:finetune", "vgg16"), out=str(tmp_path))
    record = finetuning_record(config)
    assert list(record) == ["efficientnetlite2:finetune"]  # the frozen row has none
    assert record["efficientnetlite2:finetune"]["schedule"] == get_spec("efficientnetlite2").finetune.schedule
    saved = {**config.record(), "finetuning": record}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_resume(config)  # the same settings: resumed
    check_resume(dataclasses.replace(config, backbones=(*config.backbones, "efficientnetlite0:finetune")))  # a new row
    then = {**record["efficientnetlite2:finetune"], "views": 2, "schedule": "plateau", "label_smoothing": 0.0}
    (tmp_path / "config.json").write_text(json.dumps({**saved, "finetuning": {"efficientnetlite2:finetune": then}}))
    with pytest.raises(ConfigError, match="efficientnetlite2:finetune's fine-tuning: .*'plateau'.* there") as e:
        check_resume(config)
    assert e.value.render(compare.flag).startswith(f"--out {tmp_path} is a run started with other options")
    del saved["finetuning"]  # a folder from before the record
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="fine-tuning: not recorded there"):
        check_resume(config)
