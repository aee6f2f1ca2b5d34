import json
import os
import warnings

import keras
import numpy as np
import pytest

from kerasimpl import models, training
from kerasimpl.artifacts import read_csv
from kerasimpl.callbacks import standard_callbacks
from kerasimpl.data import ArrayDataset, stratified_split
from kerasimpl.heads import HeadConfig
from kerasimpl.run_folder import StageFolder


def frozen_smallcnn(data, seed=0):
    keras.utils.set_random_seed(seed)
    return models.build_classifier("smallcnn", data.num_classes, weights=None, head=HeadConfig((16,), 0.0),
                                   backbone_kwargs={"widths": (8, 16)})


def cfg(**kw):
    base = dict(epochs=3, batch_size=32, augment=(), patience=10, learning_rate=3e-3)
    base.update(kw)
    return training.TrainConfig(**base)


def test_cached_head_equals_reference_style_head(synthetic, tmp_path):
    split = stratified_split(synthetic.y_train, 0.25, 0)
    a, b = frozen_smallcnn(synthetic), frozen_smallcnn(synthetic)
    b.set_weights(a.get_weights())
    x = synthetic.x_test
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0))
    # Same weights: the full model equals softmax(head(cached features)).
    feats = training.extract_features(a, x, verbose=0)
    logits = a.get_layer(models.HEAD).predict(feats, verbose=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), a.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    sa = training.train_classifier(a, synthetic, split, cfg(cache_features=True), tmp_path / "cached", verbose=0)
    sb = training.train_classifier(b, synthetic, split, cfg(cache_features=False), tmp_path / "seed", verbose=0)
    assert set(sa) == {"extract", "head"} and set(sb) == {"frozen"}
    pa, pb = a.predict(x, verbose=0), b.predict(x, verbose=0)
    assert not np.allclose(pa, frozen_smallcnn(synthetic).predict(x, verbose=0), atol=1e-3)  # it trained
    np.testing.assert_allclose(pa, pb, atol=2e-4)
    ha, hb = read_csv(tmp_path / "cached" / "history.csv"), read_csv(tmp_path / "seed" / "history.csv")
    assert len(ha) == len(hb) == 3
    for ra, rb in zip(ha, hb):
        assert float(ra["val_loss"]) == pytest.approx(float(rb["val_loss"]), abs=1e-4)


class Kill(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt(f"killed after epoch {epoch}")


@pytest.mark.parametrize("cache", [True, False])
def test_killed_run_resumes_with_same_epochs_and_no_duplicate_rows(synthetic, tmp_path, cache):
    split = stratified_split(synthetic.y_train, 0.25, 0)
    # The full-model path augments (numpy flip/translate and Keras' MixUp):
    # a resumed epoch must see the augmentation the uninterrupted one saw.
    config = cfg(epochs=4, cache_features=cache, augment=() if cache else ("flip", "translate", "mixup"))
    ref = frozen_smallcnn(synthetic)
    training.train_classifier(ref, synthetic, split, config, tmp_path / "ref", verbose=0)
    model = frozen_smallcnn(synthetic)
    with pytest.raises(KeyboardInterrupt):
        training.train_classifier(model, synthetic, split, config, tmp_path / "run", verbose=0,
                                  extra_callbacks=[Kill(1)])
    assert len(read_csv(tmp_path / "run" / "history.csv")) == 2
    model = frozen_smallcnn(synthetic)  # a new process would start from scratch
    training.train_classifier(model, synthetic, split, config, tmp_path / "run", verbose=0)
    rows, ref_rows = read_csv(tmp_path / "run" / "history.csv"), read_csv(tmp_path / "ref" / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3] == [int(r["epoch"]) for r in ref_rows]
    # Epoch 2 ran after the restore: same weights, optimizer state and shuffle as uninterrupted.
    for key in ("loss", "val_loss"):
        assert float(rows[2][key]) == pytest.approx(float(ref_rows[2][key]), rel=1e-4)
    assert not os.path.exists(tmp_path / "run" / f"backup_{'head' if cache else 'frozen'}")


def test_finished_stage_is_not_trained_again(synthetic, tmp_path):
    split = stratified_split(synthetic.y_train, 0.25, 0)
    model = frozen_smallcnn(synthetic)
    first = training.train_classifier(model, synthetic, split, cfg(epochs=2), tmp_path, verbose=0)
    x = synthetic.x_test
    again_model = frozen_smallcnn(synthetic, seed=5)
    again = training.train_classifier(again_model, synthetic, split, cfg(epochs=2), tmp_path, verbose=0)
    assert again == first  # read back, not re-measured
    np.testing.assert_allclose(again_model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert len(read_csv(tmp_path / "history.csv")) == 2


def test_features_are_cached_per_image_and_shared_by_every_split(synthetic, tmp_path, monkeypatch):
    """One extraction of the training pool serves any split (another seed's, another fraction's): the rows
    each split selects equal a fresh extraction of exactly those rows."""
    from kerasimpl import features

    model = frozen_smallcnn(synthetic)
    config = training.TrainConfig(inference_batch_size=16)
    calls = []
    real = features.extract_features
    monkeypatch.setattr(features, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    for fraction, seed in ((0.2, 0), (0.25, 3)):
        split = stratified_split(synthetic.y_train, fraction, seed)
        for part, rows in (("train", split.train), ("val", split.val)):
            got = features.split_features(model, synthetic, rows, part, str(tmp_path), config, verbose=0)
            np.testing.assert_allclose(got, real(model, synthetic.x_train, rows, 16, verbose=0), rtol=1e-5,
                                       atol=1e-6)
    assert len(calls) == 1  # the first request extracted the whole pool; every other one read it
    assert sorted(os.listdir(tmp_path)) == ["features_train.npz"]
    with pytest.raises(ValueError, match="Unknown part.*Accepted: train, val, test"):
        features.split_features(model, synthetic, rows, "holdout", str(tmp_path), config)


def test_partial_feature_cache_is_never_trusted(synthetic, tmp_path):
    model = frozen_smallcnn(synthetic)
    idx = np.arange(40)
    path = tmp_path / "features_train.npz"
    path.write_bytes(b"half-written")  # what a crash could have left without atomic writes
    with pytest.raises(Exception):
        np.load(path)
    # A stale cache with another key is recomputed, and the file is replaced whole.
    path.unlink()
    first = training.cached_features(model, synthetic.x_train, idx, path, "key-a", verbose=0)
    np.savez(path, features=np.zeros_like(first), key=np.asarray("key-b"))
    again = training.cached_features(model, synthetic.x_train, idx, path, "key-a", verbose=0)
    np.testing.assert_allclose(again, first)
    with np.load(path) as z:
        assert str(z["key"]) == "key-a"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []


class Poisoned(keras.utils.PyDataset):
    """Good batches until `poison` is set, then NaN inputs."""

    poison = False

    def __len__(self):
        return 2

    def __getitem__(self, i):
        x = np.ones((4, 3), "float32") * (np.nan if self.poison else 1.0)
        return x, np.array([0, 1, 0, 1])


class PoisonAfterFirstEpoch(keras.callbacks.Callback):
    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch, logs=None):
        self.dataset.poison = True


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    training.compile_head(model, 1e-2)
    val = ArrayDataset(np.ones((4, 3), "float32"), np.array([0, 1, 0, 1]), 4)
    with pytest.raises(FloatingPointError, match="NaN"):
        data = Poisoned()
        training.fit_stage(model, data, val, str(tmp_path), "head", cfg(), epochs=5, verbose=0,
                           extra_callbacks=[PoisonAfterFirstEpoch(data)])
    best = tmp_path / "best_head.keras"
    assert best.exists()
    restored = keras.saving.load_model(best)
    assert np.isfinite(np.concatenate([w.ravel() for w in restored.get_weights()])).all()
    rows = read_csv(tmp_path / "history.csv")  # the NaN epoch is recorded, then training stopped
    assert [r["loss"] for r in rows][1:] == ["nan"] and np.isfinite(float(rows[0]["loss"]))


def test_augmenter_flip_and_translate_keep_content():
    x = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    flip = training.augmenter(("flip",), seed=0)
    out, _ = flip(x, None)
    for a, b in zip(out, x):
        assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
    shift = training.augmenter(("translate",), seed=0, pad=2)
    out, y = shift(x, np.array([3, 4]))
    assert out.shape == x.shape and out.dtype == np.uint8 and y.tolist() == [3, 4]
    # Each output is an 8x8 window of the reflect-padded input.
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for o, p in zip(out, padded):
        assert any(np.array_equal(o, p[i:i + 8, j:j + 8]) for i in range(5) for j in range(5))
    with pytest.raises(ValueError, match="Unknown augmentation"):
        training.TrainConfig(augment=("mixup!",))


def _constant_batch(n=8, size=32):
    """Image i is filled with the value 20 * i and has label i."""
    x = (20 * np.arange(n, dtype=np.uint8))[:, None, None, None] * np.ones((1, size, size, 3), np.uint8)
    return x, np.eye(n, dtype=np.float32)


def test_mixup_labels_are_the_pixel_mix():
    x, y = _constant_batch()
    values = 20.0 * np.arange(8)
    out, mixed = training.augmenter(("mixup",), seed=1)(x, y)
    assert out.dtype == np.float32 and mixed.shape == (8, 8)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(mixed >= 0) and np.all((mixed > 1e-6).sum(axis=1) <= 2)
    # Each mixed image is the label-weighted mix of the source images.
    np.testing.assert_allclose(out[:, 0, 0, 0], mixed @ values, rtol=1e-4, atol=1e-3)
    assert np.all(out == out[:, :1, :1, :1])  # still constant: a blend, not a patch
    assert not np.allclose(mixed, y)  # something was mixed


def test_cutmix_labels_follow_the_pasted_area():
    x, y = _constant_batch()
    out, mixed = training.augmenter(("cutmix",), seed=3)(x, y)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-5)
    pasted = 0
    for i in range(8):
        own = np.mean(out[i] == 20 * i)
        others = set(np.unique(out[i])) - {20.0 * i}
        assert len(others) <= 1  # one partner image's patch, nothing else
        if others:
            pasted += 1
            partner = int(others.pop()) // 20
            # Keras weighs labels by the float box area; pixels count whole
            # rows/columns: within (2 * 32 + 1) / 32**2 of each other.
            assert mixed[i, i] == pytest.approx(own, abs=65 / 1024)
            assert mixed[i, partner] == pytest.approx(1 - own, abs=65 / 1024)
        else:
            assert mixed[i, i] == pytest.approx(1.0, abs=65 / 1024)
    assert pasted > 0


def test_mixing_needs_one_hot_labels_and_the_loader_serves_them(synthetic):
    with pytest.raises(ValueError, match=r"one-hot labels.*num_classes.*Received labels of shape \(8,\)"):
        training.augmenter(("mixup",))(np.zeros((8, 4, 4, 3), np.uint8), np.arange(8))
    ds = ArrayDataset(synthetic.x_train, synthetic.y_train, batch_size=16, num_classes=synthetic.num_classes)
    xb, yb = ds[1]
    assert yb.dtype == np.float32 and yb.shape == (16, synthetic.num_classes)
    np.testing.assert_array_equal(yb.argmax(1), synthetic.y_train[16:32])
    np.testing.assert_array_equal(yb.sum(1), 1.0)


@pytest.mark.slow
def test_end_to_end_training_with_mixup_and_cutmix_learns(tmp_path):
    from kerasimpl.data import synthetic_dataset

    # 600 training images: a from-scratch CNN's BatchNorm statistics need
    # ~100 steps before inference-mode predictions mean anything.
    data = synthetic_dataset(num_train=800, num_test=80, num_classes=4, image_size=32, seed=0)
    split = stratified_split(data.y_train, 0.25, 0)
    keras.utils.set_random_seed(0)
    model = models.build_classifier("smallcnn", data.num_classes, weights=None, freeze_base=False,
                                    head=HeadConfig((16,), 0.0), backbone_kwargs={"widths": (8, 16)})
    seconds = training.train_classifier(
        model, data, split, cfg(epochs=6, augment=("flip", "mixup", "cutmix")), tmp_path, verbose=0)
    assert set(seconds) == {"train"}
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)
    rows = read_csv(tmp_path / "history.csv")
    assert len(rows) == 6 and all(np.isfinite(float(r["loss"])) and np.isfinite(float(r["val_loss"])) for r in rows)
    # Mixed labels keep the loss above 0, but it must fall (measured 1.0-1.15
    # -> 0.35-0.41 over seeds 0-2 on torch and jax) and the model must beat
    # chance (0.25) by far (measured 0.75-1.0).
    assert float(rows[-1]["loss"]) < 0.6 * float(rows[0]["loss"])
    accuracy = np.mean(model.predict(data.x_test, verbose=0).argmax(1) == data.y_test)
    assert accuracy >= 0.5


@pytest.mark.parametrize("names", [("flip", "translate"), ("randaugment",), ("mixup", "cutmix")])
def test_augmentation_is_a_function_of_seed_and_batch_key(names):
    """What a resumed run and threaded loaders rely on: the same (epoch,
    batch) key gives the same batch whatever was drawn before."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
    y = np.eye(6, dtype=np.float32)
    a = training.augmenter(names, seed=5)
    first = a(x, y, key=(2, 7))
    a(x, y, key=(0, 0)), a(x, y), a(x, y, key=(3, 1))  # other draws in between
    again = a(x, y, key=(2, 7))
    fresh = training.augmenter(names, seed=5)(x, y, key=(2, 7))  # e.g. a new process after a kill
    for got in (again, fresh):
        np.testing.assert_array_equal(got[0], first[0])
        np.testing.assert_array_equal(got[1], first[1])
    other = a(x, y, key=(2, 8))
    assert not np.array_equal(other[0], first[0])


def test_resume_keeps_early_stopping_lr_schedule_and_best_checkpoint_state(synthetic, tmp_path):
    """Killed after epoch 1 with patience 2: the resumed run must stop at the
    epoch, follow the learning-rate schedule and restore the best weights of
    the uninterrupted one (a restarted patience would run two epochs more)."""
    split = stratified_split(synthetic.y_train, 0.25, 0)
    config = cfg(epochs=12, patience=2, cache_features=True)
    ref = frozen_smallcnn(synthetic)
    training.train_classifier(ref, synthetic, split, config, tmp_path / "ref", verbose=0)
    ref_rows = read_csv(tmp_path / "ref" / "history.csv")
    assert 3 <= len(ref_rows) < 12, "early stopping should fire after the kill, within the 12 epochs"
    model = frozen_smallcnn(synthetic)
    with pytest.raises(KeyboardInterrupt):
        training.train_classifier(model, synthetic, split, config, tmp_path / "run", verbose=0,
                                  extra_callbacks=[Kill(1)])
    model = frozen_smallcnn(synthetic)
    training.train_classifier(model, synthetic, split, config, tmp_path / "run", verbose=0)
    rows = read_csv(tmp_path / "run" / "history.csv")
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref_rows]
    for r, q in zip(rows, ref_rows):
        assert float(r["learning_rate"]) == pytest.approx(float(q["learning_rate"]))
        assert float(r["val_loss"]) == pytest.approx(float(q["val_loss"]), rel=1e-4)
    # Early stopping restored the same best weights.
    np.testing.assert_allclose(model.predict(synthetic.x_test, verbose=0), ref.predict(synthetic.x_test, verbose=0),
                               atol=1e-5)


def test_backup_carries_callback_state_exactly(tmp_path):
    from kerasimpl.callbacks import AtomicBackupAndRestore, BestCheckpoint

    def fresh():
        es = keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)
        lr = keras.callbacks.ReduceLROnPlateau(patience=3)
        return es, lr, BestCheckpoint(tmp_path / "best.keras")

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    es, lr, best = fresh()
    es.wait, es.best, es.best_epoch, es.best_weights = 2, 0.75, 3, [w * 2 for w in model.get_weights()]
    lr.wait, lr.best, lr.cooldown_counter = 1, float("inf"), 1
    best.best = 0.75
    backup = AtomicBackupAndRestore(tmp_path / "backup", track=[lr, es, best])
    backup.set_model(model)
    backup.on_epoch_end(4)  # backs up epoch 5's start

    es2, lr2, best2 = fresh()
    for cb in (es2, lr2):
        cb.set_model(model)
        cb.on_train_begin()
    restore = AtomicBackupAndRestore(tmp_path / "backup", track=[lr2, es2, best2])
    restore.set_model(model)
    restore.on_train_begin()
    assert model._initial_epoch == 5
    assert (es2.wait, es2.best, es2.best_epoch) == (2, 0.75, 3)
    assert (lr2.wait, lr2.best, lr2.cooldown_counter) == (1, float("inf"), 1)
    assert best2.best == 0.75
    for a, b in zip(es2.best_weights, es.best_weights):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"can carry the state of EarlyStopping.*Received: CSVLogger"):
        AtomicBackupAndRestore(tmp_path / "b2", track=[keras.callbacks.CSVLogger(str(tmp_path / "x.csv"))])


@pytest.mark.parametrize("head_kind", ["mlp", "linear-probe"])
def test_training_without_a_folder_writes_nothing_and_trains_the_same(synthetic, tmp_path, monkeypatch, head_kind):
    """`folder=None`: the stages run in memory (no file anywhere, the probe's record kept) and give the
    weights a run into a folder gives."""
    split = stratified_split(synthetic.y_train, 0.25, 0)
    head = HeadConfig((16,), 0.0) if head_kind == "mlp" else HeadConfig((), 0.0)

    def model():
        keras.utils.set_random_seed(0)
        return models.build_classifier("smallcnn", synthetic.num_classes, weights=None, head=head,
                                       backbone_kwargs={"widths": (8, 16)})

    config = cfg(epochs=2, head_kind=head_kind)
    in_folder = model()
    training.train_classifier(in_folder, synthetic, split, config, tmp_path / "run", verbose=0)
    memory = model()
    store = StageFolder(None)
    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)
    seconds = training.train_classifier(memory, synthetic, split, config, store, verbose=0)
    assert set(seconds) == ({"extract", "head"} if head_kind == "mlp" else {"extract", "probe"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "run"] and not any(empty.iterdir())
    x = synthetic.x_test
    np.testing.assert_allclose(memory.predict(x, verbose=0), in_folder.predict(x, verbose=0), atol=1e-5)
    if head_kind == "linear-probe":  # the record the folder got, kept in memory
        with open(tmp_path / "run" / "probe.json") as f:
            assert store.read_record("probe") == json.load(f)


def test_stage_folder_resumes_what_it_kept_and_a_reader_writes_nothing(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    store = StageFolder(tmp_path / "a", writes=True)
    store.finish("head", model, 1.5)
    store.record("probe", {"l2": 0.1})
    again = StageFolder(tmp_path / "a")
    assert again.finished("head") and not again.finished("finetune") and again.seconds == {"head": 1.5}
    assert again.read_record("probe") == {"l2": 0.1} and again.read_record("finetune") is None
    reader = StageFolder(tmp_path / "b", writes=False)  # a process other than rank 0
    reader.finish("head", model, 2.0)
    reader.record("probe", {"l2": 1.0})
    reader.add_history([{"stage": "probe", "epoch": 0}])
    assert not (tmp_path / "b").exists() and not reader.finished("head")
    assert reader.read_record("probe") == {"l2": 1.0}


def test_randaugment_strength_is_an_option_and_a_weaker_one_changes_images_less(synthetic):
    from kerasimpl.augmentation import RANDAUGMENT_FACTOR, augmenter, randaugment_factor, unknown

    assert randaugment_factor(("flip", "randaugment")) == RANDAUGMENT_FACTOR == 0.5  # Keras' own default
    assert randaugment_factor(("randaugment=0.1",)) == 0.1 and randaugment_factor(("flip",)) is None
    assert unknown(("randaugment=0.1", "flip")) == []
    assert unknown(("randaugment=0", "randaugment=2", "randaugment=x", "flip=0.1", "rotate")) == [
        "randaugment=0", "randaugment=2", "randaugment=x", "flip=0.1", "rotate"]
    with pytest.raises(ValueError, match="randaugment=F"):
        augmenter(("randaugment=1.5",))
    with pytest.raises(ValueError, match="randaugment=F"):
        training.TrainConfig(augment=("randaugment=-1",))
    x, y = synthetic.x_train[:32], synthetic.y_train[:32]
    change = {}
    for name in ("randaugment=0.05", "randaugment"):
        a = augmenter((name,), seed=0)
        changes = [np.abs(a(x, y, key=(0, b))[0].astype(np.float32) - x).mean() for b in range(4)]
        change[name] = float(np.mean(changes))
    assert 0 < change["randaugment=0.05"] < change["randaugment"]
