"""Fine-tuning the top of a frozen base on cached activations (kerasimpl.partial)."""

import json
import os

import keras
import numpy as np
import pytest

from kerasimpl import models, partial, training
from kerasimpl.artifacts import load_model
from kerasimpl.data import ViewsDataset
from kerasimpl.heads import HeadConfig


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = models.build_classifier("smallcnn", 4, weights=None, backbone_kwargs={"widths": (8, 16)},
                                    head=HeadConfig((), 0.0))
    for layer in models.base_layers(model):  # non-trivial frozen BatchNormalization statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            rng = np.random.default_rng(len(layer.name))
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype("float32"))
    return model


def test_split_is_exact_and_holds_every_trainable_variable():
    model = _model()
    opened = models.unfreeze(model, top_layers=4)  # block2_b conv (+ its frozen BN, ReLU) and on
    bottom, top, cut = partial.split_at_trainable(model)
    assert cut == "block2_pool" and opened == ["block2_b_conv"]
    assert {id(v) for v in top.trainable_weights} == {id(v) for v in model.trainable_weights}
    assert not bottom.trainable_weights
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(top(bottom(x))), keras.ops.convert_to_numpy(model(x)),
                               rtol=1e-6, atol=1e-7)


def test_residual_blocks_are_cut_at_a_block_boundary():
    """EfficientNet-Lite: the cut before block7a's expand conv, not inside a residual block."""
    from kerasimpl.efficientnet_lite import EfficientNetLite

    inp = keras.Input((32, 32, 3))
    net = EfficientNetLite("lite0", include_top=False, input_tensor=inp)
    for layer in net.layers:
        layer.trainable = layer.name.startswith(("block6d_expand_conv", "block6d_dwconv"))
    _, top, cut = partial.split_at_trainable(net)
    assert cut == "block6c_add"  # block6d reads block6c's output twice (expand and the residual)
    assert not partial.can_split(net, ("mixup",))


def test_no_trainable_weights_is_a_clear_error():
    model = _model()
    models.set_base_trainable(model, False)
    model.get_layer(models.HEAD).trainable = False
    with pytest.raises(partial.NoSplit, match="no trainable weights"):
        partial.split_at_trainable(model)


def test_views_dataset_serves_view_e_mod_views():
    y = np.arange(5)
    x = np.concatenate([np.full((5, 1), v) for v in range(3)]) * 10 + np.tile(y, 3)[:, None]
    ds = ViewsDataset(x, y, 3, batch_size=5, shuffle=True, seed=0)
    for epoch in range(4):
        ds.start_epoch(epoch)
        xb, yb = ds[0]
        assert sorted(yb) == list(range(5)) and set(xb[:, 0] // 10) == {epoch % 3}
        np.testing.assert_array_equal(xb[:, 0] % 10, yb)
    with pytest.raises(ValueError, match=r"views \* len\(y\)"):
        ViewsDataset(x[:7], y, 3)


def test_cached_top_training_equals_whole_model_fine_tuning(synthetic, tmp_path):
    """Views=1 and no augmentation: the split stage follows the whole-model
    stage step for step (same batches, same optimizer); weights agree to
    float tolerance, and the checkpoint is the whole classifier."""
    split = synthetic.split(0.2, 0)
    trained = {}
    for name, views in (("split", 1), ("whole", 0)):
        model = _model(1)
        cfg = training.TrainConfig(epochs=1, batch_size=32, finetune_epochs=2, finetune_top_layers=4, augment=(),
                                   finetune_views=views, learning_rate=1e-2, finetune_learning_rate=1e-2, patience=5)
        training.train_classifier(model, synthetic, split, cfg, str(tmp_path / name), verbose=0)
        trained[name] = model
    for a, b in zip(trained["split"].weights, trained["whole"].weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-3,
                                   atol=1e-4)
    info = json.load(open(tmp_path / "split" / "finetune.json"))
    assert info["mode"] == "top on cached activations" and info["cut_after"] == "block2_pool"
    whole = json.load(open(tmp_path / "whole" / "finetune.json"))  # what ran, on either path
    assert whole["mode"] == "whole model" and (whole["schedule"], whole["epochs"]) == (info["schedule"], 2)
    best = load_model(str(tmp_path / "split" / "best_finetune.keras"))
    assert best.input_shape == (None, 32, 32, 3) and best.output_shape == (None, 4)


def test_augmented_views_are_reproducible_and_differ_from_view_zero(synthetic):
    model = _model()
    models.unfreeze(model, top_layers=4)
    bottom, _, _ = partial.split_at_trainable(model)
    idx = np.arange(6)
    a = partial.cut_activations(bottom, synthetic.x_train, idx, ("flip", "translate"), 3, seed=5, batch_size=4)
    b = partial.cut_activations(bottom, synthetic.x_train, idx, ("flip", "translate"), 3, seed=5, batch_size=4)
    assert a.shape == (18, *bottom.output.shape[1:])
    np.testing.assert_array_equal(a, b)
    plain = keras.ops.convert_to_numpy(bottom(synthetic.x_train[idx].astype("float32")))
    np.testing.assert_allclose(a[:6], plain, rtol=1e-4, atol=1e-5)
    assert np.abs(a[6:12] - a[:6]).max() > 1e-3
