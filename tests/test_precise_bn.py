"""Precise BatchNormalization statistics (kerasimpl.precise_bn): known answers computed in NumPy, the model left
untouched, frozen layers skipped, and the statistics that validation and the final model carry in training."""

import os

import keras
import numpy as np
import pytest

from kerasimpl import precise_bn, training
from kerasimpl.data import ArrayDataset

EPS = 1e-3  # Keras' BatchNormalization epsilon


def _two_bn_model(dropout=0.0):
    """x -> BN -> Dense -> (Dropout) -> BN, with non-trivial BN parameters."""
    inp = keras.Input((4,))
    h = keras.layers.BatchNormalization(name="bn1")(inp)
    h = keras.layers.Dense(3, name="dense")(h)
    if dropout:
        h = keras.layers.Dropout(dropout, name="drop")(h)
    out = keras.layers.BatchNormalization(name="bn2")(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(1)
    for name in ("bn1", "bn2"):
        layer = model.get_layer(name)
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(size=beta.shape),
                           rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])
    return model


def _reference(model, x, batch):
    """NumPy: each batch normalised by its own statistics (training mode), then the population of every
    BN layer's input over all the rows of all the whole batches."""
    g1, b1, _, _ = model.get_layer("bn1").get_weights()
    kernel, bias = model.get_layer("dense").get_weights()
    inputs1, inputs2 = [], []
    for start in range(0, len(x) - batch + 1, batch):
        xb = x[start:start + batch].astype(np.float64)
        h = (xb - xb.mean(0)) / np.sqrt(xb.var(0) + EPS) * g1 + b1
        inputs1.append(xb)
        inputs2.append(h @ kernel + bias)
    return [(np.concatenate(a).mean(0), np.concatenate(a).var(0)) for a in (inputs1, inputs2)]


def _values(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.variables]


def test_population_statistics_are_the_populations_of_the_training_mode_inputs():
    """Known answer: BatchNormalization with batch statistics, dropout off (the reference has none)."""
    model = _two_bn_model(dropout=0.5)
    x = np.random.default_rng(0).normal(3.0, 2.0, (44, 4)).astype("float32")  # 5 whole batches of 8, 4 rows left
    before = _values(model)
    got = precise_bn.population_statistics(model, x, 8)
    want = _reference(model, x, 8)
    assert len(got) == 2
    for (mean, var), (want_mean, want_var) in zip(got, want):
        np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(var, want_var, rtol=1e-5, atol=1e-5)
    # E[x^2] - E[x]^2 over every row, not the mean of the batches' variances (smaller by the batch means' spread)
    mean_of_batch_vars = np.mean([x[s:s + 8].var(0) for s in range(0, 40, 8)], axis=0)
    assert (got[0][1] > mean_of_batch_vars + 1e-4).all()
    # Nothing assigned: every variable, moving statistics and momentum included, as before.
    for a, b in zip(before, _values(model)):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer("bn1").momentum == 0.99


def test_the_training_random_stream_is_untouched():
    """Dropout in training mode draws from the backend's generator (torch: the global one); the statistics
    pass takes no draw from it, so training goes on as it would have without the pass."""
    x = np.random.default_rng(4).normal(size=(16, 4)).astype("float32")
    out = []
    for with_pass in (False, True):
        keras.utils.set_random_seed(5)  # torch: the global generator; JAX: the layer's own generator, made next
        model = _two_bn_model(dropout=0.5)
        if with_pass:
            precise_bn.population_statistics(model, x, 8)
        out.append(keras.ops.convert_to_numpy(model(x, training=True)))
    again = keras.ops.convert_to_numpy(model(x, training=True))
    assert not np.allclose(again, out[1])  # the stream is random: a draw taken would show
    np.testing.assert_array_equal(out[1], out[0])


def test_indices_choose_the_rows_and_one_short_batch_is_used_when_it_is_all_there_is():
    model = _two_bn_model()
    x = np.random.default_rng(2).normal(size=(30, 4)).astype("float32")
    rows = np.arange(0, 30, 2)  # 15 rows: one batch of 8 (the partial 7 dropped)
    mean, var = precise_bn.population_statistics(model, x, 8, indices=rows)[0]
    np.testing.assert_allclose(mean, x[rows[:8]].mean(0), atol=1e-5)
    np.testing.assert_allclose(var, x[rows[:8]].var(0), atol=1e-5)
    mean, _ = precise_bn.population_statistics(model, x, 16, indices=rows)[0]  # fewer rows than a batch: all
    np.testing.assert_allclose(mean, x[rows].mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="Received: 0 images"):
        precise_bn.population_statistics(model, x, 8, indices=[])


def test_set_population_statistics_assigns_them_and_skips_frozen_layers():
    model = _two_bn_model(dropout=0.5)
    model.get_layer("bn2").trainable = False
    frozen = [w.copy() for w in model.get_layer("bn2").get_weights()]
    x = np.random.default_rng(3).normal(1.0, 3.0, (32, 4)).astype("float32")
    assert precise_bn.set_population_statistics(model, x, 8) == 1
    mean, var = model.get_layer("bn1").get_weights()[2:]
    np.testing.assert_allclose(mean, x.mean(0), atol=1e-5)
    np.testing.assert_allclose(var, x.var(0), rtol=1e-5)
    for a, b in zip(frozen, model.get_layer("bn2").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_sample_is_seeded_sorted_and_whole_when_small():
    idx = np.arange(100, 200)
    a, b = precise_bn.sample(idx, 10, seed=0), precise_bn.sample(idx, 10, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(set(a)) == 10 and set(a) <= set(idx) and (np.diff(a) > 0).all()
    assert not np.array_equal(a, precise_bn.sample(idx, 10, seed=1))
    np.testing.assert_array_equal(precise_bn.sample(idx, 500, seed=0), idx)


def test_validation_and_the_final_model_carry_the_population_statistics(tmp_path):
    """In `fit`: the last epoch's val_loss is the trained model's own evaluation (the statistics it validated with
    are the ones it keeps), and they are the population statistics of its final weights."""
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (64, 4)).astype("float32")
    y = (x[:, 0] > 2).astype("int32")
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = keras.layers.Dense(8, activation="relu")(keras.layers.BatchNormalization(name="bn")(inp))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h))
    training.compile_full(model, 1e-2)
    rows = np.arange(48)
    history = model.fit(ArrayDataset(x, y, 16, indices=rows, shuffle=True),
                        validation_data=ArrayDataset(x, y, 16, indices=np.arange(48, 64)), epochs=3, verbose=0,
                        callbacks=[precise_bn.PreciseBatchNorm(x, rows, 16)])
    mean, var = model.get_layer("bn").get_weights()[2:]
    np.testing.assert_allclose(mean, x[rows].mean(0), atol=1e-5)
    np.testing.assert_allclose(var, x[rows].var(0), rtol=1e-5)
    val_loss = model.evaluate(x[48:], y[48:], batch_size=16, verbose=0)[0]
    np.testing.assert_allclose(history.history["val_loss"][-1], val_loss, rtol=1e-5)


def test_a_from_scratch_stage_ends_with_precise_statistics_and_zero_keeps_the_moving_averages(synthetic, tmp_path):
    from kerasimpl import models
    from kerasimpl.data import stratified_split
    from kerasimpl.heads import HeadConfig

    split = stratified_split(synthetic.y_train, 0.25, 0)
    found = {}
    for images in (64, 0):
        keras.utils.set_random_seed(0)
        model = models.build_classifier("smallcnn", 4, weights=None, head=HeadConfig((8,), 0.0), freeze_base=False,
                                        backbone_kwargs={"widths": (4, 8)})
        cfg = training.TrainConfig(epochs=2, batch_size=16, augment=(), learning_rate=3e-3, precise_bn=images)
        training.train_classifier(model, synthetic, split, cfg, os.path.join(tmp_path, str(images)), verbose=0)
        stats = precise_bn.population_statistics(model, synthetic.x_train, 16,
                                                 indices=precise_bn.sample(split.train, 64, 0))
        moving = [layer.get_weights()[2:] for layer in precise_bn.reestimated_batchnorms(model)]
        found[images] = max(float(np.max(np.abs(m - s))) for (m, _), (s, _) in zip(moving, stats))
    assert found[64] < 1e-4 < found[0]


def test_train_config_rejects_a_negative_count():
    with pytest.raises(ValueError, match="precise_bn must be >= 0.*Received: -1"):
        training.TrainConfig(precise_bn=-1)
