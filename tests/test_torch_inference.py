"""The compiled native-torch extractor equals Keras on every backbone."""

import warnings

import keras
import numpy as np
import pytest

from kerasimpl import backbones, models, training
from kerasimpl.torch_inference import compile_frozen

TINY = {"mobilenetv2": {"alpha": 0.35}, "mobilenetv3large": {"alpha": 0.75}, "smallcnn": {"widths": (8, 16)}}
ON_TORCH = keras.backend.backend() == "torch"


def randomize_batchnorm(model, seed=0):
    """Non-trivial BN statistics, so folding them is really exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.1, n).astype("float32"))


# Families compile_frozen does not cover (their layers are named in the error);
# extract_features falls back to model.predict for them (tested below).
NOT_COMPILED = {"convnexttiny", "convnextsmall", "convnextbase"}


def extractor(name, input_size=40, image_size=None):
    image_size = image_size or max(64, backbones.get_spec(name).min_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = models.build_classifier(name, 10, input_shape=(input_size, input_size, 3), image_size=image_size,
                                        weights=None, backbone_kwargs=TINY.get(name, {}))
    randomize_batchnorm(model)
    return model


@pytest.mark.parametrize("name", backbones.list_backbones())
def test_compiled_extractor_equals_keras(name):
    model = extractor(name)
    fe = models.feature_extractor(model)
    if not ON_TORCH:
        with pytest.raises(NotImplementedError, match="torch backend"):
            compile_frozen(fe)
        return
    x = np.random.default_rng(1).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    ref = np.asarray(fe.predict_on_batch(x))
    if name in NOT_COMPILED:
        with pytest.raises(NotImplementedError, match="is not supported by compile_frozen"):
            compile_frozen(fe)
        got = training.extract_features(model, x, batch_size=2, verbose=0)  # falls back to predict
    else:
        got = compile_frozen(fe)(x)
    assert got.shape == ref.shape and np.abs(ref).max() > 1e-6
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_extract_features_native_path_equals_predict():
    model = extractor("smallcnn")
    x = np.random.default_rng(2).integers(0, 256, (10, 40, 40, 3), dtype=np.uint8)
    idx = np.array([7, 1, 3, 9, 0])
    fast = training.extract_features(model, x, idx, batch_size=2, verbose=0, native=True)
    slow = training.extract_features(model, x, idx, batch_size=2, verbose=0, native=False)
    assert fast.shape == (5, model.get_layer(models.POOL).output.shape[-1])
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-5)


def test_unsupported_layer_is_named():
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Conv2DTranspose(2, 3, name="upconv")(inp))
    with pytest.raises(NotImplementedError, match="upconv" if ON_TORCH else "torch backend"):
        compile_frozen(model)


@pytest.mark.parametrize("size", [63, 64, 100])
def test_compiled_alexnet_features_through_avgpool_and_flatten_equal_keras(size):
    """AlexNet's frozen features (ZeroPadding2D, biased convs, valid max-pools),
    its adaptive 6x6 pool and the channels-last flatten feeding fc6."""
    from kerasimpl.alexnet import AlexNet

    keras.utils.set_random_seed(0)
    net = AlexNet(weights=None, input_shape=(size, size, 3))
    for layer in net.layers:
        if getattr(layer, "use_bias", False):
            layer.bias.assign(np.random.default_rng(1).normal(0, 0.1, layer.bias.shape).astype("float32"))
    sub = keras.Model(net.input, net.get_layer("flatten").output)
    if not ON_TORCH:
        with pytest.raises(NotImplementedError, match="torch backend"):
            compile_frozen(sub)
        return
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype("float32")
    ref = np.asarray(sub.predict_on_batch(x))
    got = compile_frozen(sub)(x)
    assert got.shape == ref.shape == (2, 9216) and np.abs(ref).max() > 1e-6
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
