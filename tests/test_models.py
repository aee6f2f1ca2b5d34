import importlib
import warnings

import keras
import numpy as np
import pytest

from kerasimpl import backbones, models, training
from kerasimpl.heads import HeadConfig
from kerasimpl.saliency import layers as saliency_layers
from tiny import TINY_KWARGS, registry

# Keras' own counts for include_top=False, weights=None at 224 px.
KERAS_COUNTS = {"mobilenetv2": 2_257_984, "mobilenetv3large": 2_996_352, "vgg16": 14_714_688}


def tiny(name, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        size = max(32, backbones.get_spec(name).min_size)
        return models.build_classifier(name, 3, image_size=size, weights=None,
                                       backbone_kwargs=TINY_KWARGS.get(name, {}), head=HeadConfig((8,), 0.0), **kw)


@pytest.mark.parametrize("name", registry())
def test_every_backbone_builds_a_flat_probability_model(name, backbone_model):
    model = backbone_model(name)  # built once per session (tests/conftest.py)
    x = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3)).astype("uint8")
    p = np.asarray(model.predict(x, verbose=0))
    assert p.shape == (2, 10)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    layer = saliency_layers.gradcam_layer_name(model, name)
    out = saliency_layers.feature_map(model, layer)
    assert len(out.shape) == 4  # a spatial feature map, reachable in the flat graph
    keras.Model(model.inputs, [out, model.output])  # no "Graph disconnected"
    assert models.class_names_of(model) == [str(i) for i in range(10)]


# Entries built from keras.applications (AlexNet is compared with torchvision in test_torchvision.py).
PRETRAINED = [n for n in backbones.list_backbones() if backbones.get_spec(n).preprocess_module]


@pytest.mark.parametrize("name", registry(PRETRAINED))
def test_backbone_equals_keras_applications_model_on_its_preprocess_input(name):
    """kerasimpl's model on RAW pixels == Keras' own model (pooling="avg", same
    weights) fed with its module's preprocess_input; parameter counts and
    pooled width equal Keras'."""
    spec = backbones.get_spec(name)
    size = max(32, spec.min_size)
    model = models.build_classifier(name, 3, input_shape=(size, size, 3), image_size=size, weights=None,
                                    freeze_base=False, head=HeadConfig((8,), 0.0))
    reference = spec.builder(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
    reference.set_weights(models.backbone_model(model).get_weights())
    ours_count = sum(int(np.prod(w.shape)) for layer in models.base_layers(model) for w in layer.weights)
    assert ours_count == reference.count_params() == KERAS_COUNTS.get(name, ours_count)
    x = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(models.feature_extractor(model)(x))
    module = importlib.import_module(spec.preprocess_module)
    theirs = keras.ops.convert_to_numpy(reference(module.preprocess_input(x.copy())))
    assert ours.shape == (2, spec.feature_dim) and np.abs(theirs).max() > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


@pytest.mark.parametrize("name,width", [("mobilenetv3large", 1280), ("mobilenetv3small", 1024)])
def test_keep_top_hidden_reuses_the_imagenet_hidden_layer(name, width, tmp_path):
    """The reference head: MobileNetV3's pretrained 1x1 conv_2 (+ hard-swish)
    stays, only the last classifier layer is new. Its weights come from the
    with-top file: a Keras with-top model's file loads into it."""
    keras.utils.set_random_seed(1)
    full = backbones.get_spec(name).builder(include_top=True, weights=None, input_shape=(32, 32, 3),
                                            classifier_activation=None)
    path = str(tmp_path / "with_top.weights.h5")
    full.save_weights(path)
    keras.utils.set_random_seed(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = models.build_classifier(name, 3, image_size=32, weights=path, keep_top_hidden=True,
                                        head=HeadConfig((), 0.2))
    assert model.get_layer(models.POOL).output.shape[-1] == width
    assert "conv_2" in [layer.name for layer in models.base_layers(model)]
    assert [type(l).__name__ for l in model.get_layer(models.HEAD).layers] == ["Dropout", "Dense"]
    hidden = keras.Model(full.input, full.get_layer("conv_2").output)  # pre-activation, (N, 1, 1, width)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(keras.ops.hard_swish(hidden(x)))[:, 0, 0]
    got = keras.ops.convert_to_numpy(models.feature_extractor(model)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    layer = saliency_layers.gradcam_layer_name(model, name)
    assert saliency_layers.feature_map(model, layer).shape[-1] != width  # the last conv map, not the 1x1 top
    with pytest.raises(ValueError, match="keep_top_hidden needs.*Accepted: alexnet, mobilenetv3large, mobilenetv3small"):
        models.build_classifier("resnet50", 3, image_size=32, weights=None, keep_top_hidden=True)


def _snapshot(layers_):
    return [keras.ops.convert_to_numpy(w).copy() for layer in layers_ for w in layer.weights]


def test_frozen_base_training_step_changes_only_the_head():
    model = tiny("mobilenetv2")  # has BatchNormalization with moving statistics
    base = models.base_layers(model)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in base)
    before_base, before_head = _snapshot(base), _snapshot([model.get_layer(models.HEAD)])
    training.compile_full(model, 1e-2)
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("uint8")
    model.train_on_batch(x, np.arange(8) % 3)
    for a, b in zip(before_base, _snapshot(base)):
        np.testing.assert_array_equal(a, b)  # bit-identical, moving stats included
    assert any(not np.array_equal(a, b) for a, b in zip(before_head, _snapshot([model.get_layer(models.HEAD)])))


def test_unfreeze_opens_exactly_the_requested_layers_and_no_batchnorm():
    model = tiny("mobilenetv2")
    base = models.base_layers(model)
    opened = models.unfreeze(model, top_layers=10)
    top = base[-10:]
    expected = [l.name for l in top if l.weights and not isinstance(l, keras.layers.BatchNormalization)]
    assert opened == expected and opened
    for layer in base:
        should = layer in top and not isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == should, layer.name
    counts = models.parameter_counts(model)
    head = sum(int(np.prod(w.shape)) for w in model.get_layer(models.HEAD).trainable_weights)
    opened_params = sum(int(np.prod(w.shape)) for l in top if l.name in opened for w in l.trainable_weights)
    assert counts["trainable"] == head + opened_params
    assert models.unfreeze(model, from_layer=base[-3].name) == [
        l.name for l in base[-3:] if l.weights and not isinstance(l, keras.layers.BatchNormalization)]


def test_unfreeze_from_a_block_opens_that_block_and_everything_after_it():
    """`from_block="block_13"` starts at MobileNetV2's block_13_expand (not block_1's, whose prefix it shares)."""
    model = tiny("mobilenetv2")
    base = models.base_layers(model)
    first = next(i for i, l in enumerate(base) if l.name.startswith("block_13_"))
    assert base[first].name == "block_13_expand" and not base[first - 1].name.startswith("block_13")
    opened = models.unfreeze(model, from_block="block_13")
    assert opened == [l.name for l in base[first:] if l.weights and not isinstance(l, keras.layers.BatchNormalization)]
    assert not any(l.trainable for l in base[:first])
    assert models.unfreeze(model, from_block="block_13") == models.unfreeze(model, top_layers=len(base) - first)
    with pytest.raises(ValueError, match=r"from_block='block_99' names no block.*Accepted.*block_16"):
        models.unfreeze(model, from_block="block_99")
    with pytest.raises(ValueError, match="exactly one"):
        models.unfreeze(model, top_layers=3, from_block="block_13")


def test_end_to_end_classifier_trains_batchnorm():
    model = tiny("smallcnn", freeze_base=False)
    bns = [l for l in models.base_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.trainable for l in bns)


def test_local_weights_file_round_trip(tmp_path):
    a = tiny("mobilenetv2")
    path = tmp_path / "mnv2.weights.h5"
    models.backbone_model(a).save_weights(path)
    keras.utils.set_random_seed(123)  # a fresh model starts from other weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        b = models.build_classifier("mobilenetv2", 3, image_size=32, weights=str(path), backbone_kwargs={"alpha": 0.35})
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    fa = models.feature_extractor(a).predict(x, verbose=0)
    fb = models.feature_extractor(b).predict(x, verbose=0)
    assert np.abs(fa).max() > 0
    np.testing.assert_allclose(fa, fb, rtol=1e-4, atol=0)  # features are tiny: compare relatively
    c = tiny("mobilenetv2")
    assert not np.allclose(fa, models.feature_extractor(c).predict(x, verbose=0), rtol=1e-2, atol=0)


def test_random_frozen_base_warns():
    with pytest.warns(UserWarning, match="about chance"):
        models.build_classifier("mobilenetv2", 3, image_size=32, weights=None, backbone_kwargs={"alpha": 0.35})


@pytest.mark.parametrize("kwargs,message", [
    (dict(backbone="resnet9000"), "Accepted: .*mobilenetv2.*vgg16"),
    (dict(backbone="vgg16", backbone_kwargs={"alpha": 0.5}), r"does not accept \['alpha'\]"),
    (dict(backbone="smallcnn", weights="imagenet"), "no ImageNet weights"),
    (dict(backbone="smallcnn", class_names=["a"]), "Expected 3 class names"),
    (dict(backbone="smallcnn", input_shape=(32, 32)), r"input_shape must be \(H, W, 3\)"),
    (dict(backbone="vgg16", image_size=16, weights=None), "at least 32x32"),
])
def test_bad_arguments_say_what_is_accepted(kwargs, message):
    kwargs.setdefault("weights", None)
    with pytest.raises(ValueError, match=message):
        models.build_classifier(num_classes=3, freeze_base=False, **kwargs)


def test_bad_head_and_unfreeze_arguments():
    with pytest.raises(ValueError, match="dropout"):
        HeadConfig(dropout=1.5)
    model = tiny("smallcnn")
    with pytest.raises(ValueError, match="exactly one"):
        models.unfreeze(model)
    with pytest.raises(ValueError, match="top_layers must lie"):
        models.unfreeze(model, top_layers=10_000)
    with pytest.raises(ValueError, match="not a backbone layer"):
        models.unfreeze(model, from_layer="nope")


def test_failed_imagenet_download_says_how_to_pass_a_local_file(monkeypatch, tmp_path):
    def offline(url, target, *a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights
    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", offline)
    with pytest.raises(RuntimeError, match=r"Could not download ImageNet weights for mobilenetv2.*--weights PATH"):
        models.build_classifier("mobilenetv2", 3, image_size=96, weights="imagenet", backbone_kwargs={"alpha": 0.35})


def test_random_init_keras_application_trained_end_to_end_gets_short_run_bn_momentum():
    """A from-scratch Keras application trained end to end gets SHORT_RUN_BN_MOMENTUM in
    every backbone BatchNormalization; a frozen one keeps the architecture's own (0.999).
    Why: test_short_run_bn_momentum_lets_a_from_scratch_run_learn (slow)."""
    kw = dict(weights=None, image_size=32, backbone_kwargs={"alpha": 0.35}, head=HeadConfig((), 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        frozen = models.build_classifier("mobilenetv2", 4, **kw)
        model = models.build_classifier("mobilenetv2", 4, freeze_base=False, **kw)
    bns = lambda m: [l for l in models.base_layers(m) if isinstance(l, keras.layers.BatchNormalization)]
    assert {l.momentum for l in bns(frozen)} == {0.999}  # architecture's own when not trained from scratch
    assert {l.momentum for l in bns(model)} == {models.SHORT_RUN_BN_MOMENTUM}


@pytest.mark.slow
def test_short_run_bn_momentum_lets_a_from_scratch_run_learn():
    """MobileNetV2's BN momentum 0.999 keeps the moving statistics at their
    initial values over a short run, so inference-mode accuracy stays at
    chance (0.25 here, measured, with momentum 0.999); with the short-run
    momentum the same run learns (0.80 measured). Shorter runs (128 images x 8
    epochs, 256 x 5) stay at chance with either momentum (measured)."""
    from kerasimpl.data import synthetic_dataset

    kw = dict(weights=None, image_size=32, backbone_kwargs={"alpha": 0.35}, head=HeadConfig((), 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = models.build_classifier("mobilenetv2", 4, freeze_base=False, **kw)
    data = synthetic_dataset(num_train=256, num_test=128, num_classes=4, image_size=32, seed=0)
    training.compile_full(model, 1e-3)
    model.fit(data.x_train, data.y_train, batch_size=32, epochs=15, verbose=0, shuffle=False)
    accuracy = (model.predict(data.x_test, verbose=0).argmax(1) == data.y_test).mean()
    assert accuracy > 0.6
