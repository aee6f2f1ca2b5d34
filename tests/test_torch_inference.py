"""The compiled native-torch extractor equals Keras on every backbone."""

import warnings

import keras
import numpy as np
import pytest

from kerasimpl import backbones, models, training
from kerasimpl.backend.torch.inference import compile_frozen
from tiny import TINY_ALEXNET, TINY_KWARGS, randomize_batchnorm, registry

ON_JAX = keras.backend.backend() == "jax"
ON_TORCH = keras.backend.backend() == "torch"


# Families compile_frozen does not cover (their layers are named in the error);
# extract_features falls back to model.predict for them (tested below).
NOT_COMPILED = {"convnexttiny", "convnextsmall", "convnextbase"}


def extractor(name, input_size=40, image_size=None):
    image_size = image_size or max(64, backbones.get_spec(name).min_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = models.build_classifier(name, 10, input_shape=(input_size, input_size, 3), image_size=image_size,
                                        weights=None, backbone_kwargs=TINY_KWARGS.get(name, {}))
    randomize_batchnorm(model)
    return model


@pytest.mark.parametrize("name", registry())
def test_compiled_extractor_equals_keras(name, backbone_model):
    model = backbone_model(name)
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


def test_extract_features_native_path_equals_predict(backbone_model):
    model = backbone_model("smallcnn")
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


@pytest.mark.skipif(not ON_TORCH, reason="the compiled program is torch's")
def test_relu6_in_place_and_not_and_every_preprocessing_mode_equal_keras():
    """ReLU(max_value=6) (MobileNetV2, EfficientNet-Lite) after a convolution (the in-place clamp) and
    after an Add (not in place); each `Preprocess` mode through the layer's own arithmetic."""
    from kerasimpl.layers import MODES, Preprocess

    for mode in MODES:
        inp = keras.Input((6, 6, 3))
        x = Preprocess(mode)(inp)
        big = keras.initializers.RandomNormal(stddev=1.0, seed=0)  # outputs well past 6 in every mode
        conv = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=big)(x)
        bn = keras.layers.BatchNormalization()(conv)
        relu6 = keras.layers.ReLU(max_value=6.0)(bn)
        added = keras.layers.Add()([relu6, keras.layers.Conv2D(4, 1)(x)])
        model = keras.Model(inp, [relu6, keras.layers.ReLU(max_value=6.0)(added)])
        randomize_batchnorm(model)
        x_in = np.random.default_rng(0).uniform(0, 255, (2, 6, 6, 3)).astype("float32")
        refs = model.predict_on_batch(x_in)
        assert all(0 < (np.asarray(r) == 6.0).mean() < 1 for r in refs), mode  # the clamp is exercised
        for got, ref in zip(compile_frozen(model)(x_in), refs):
            np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not ON_TORCH, reason="the compiled program is torch's")
def test_a_layer_class_converts_once_registered_and_subclasses_do_not_inherit(monkeypatch):
    from kerasimpl.backend.torch import inference as torch_inference

    class Double(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    class Relu6(keras.layers.ReLU):  # a subclass may compute something else: not converted as its parent
        pass

    inp = keras.Input((3,))
    model = keras.Model(inp, Double(name="double")(inp))
    with pytest.raises(NotImplementedError, match="'double' of type Double"):
        compile_frozen(model)
    monkeypatch.setitem(torch_inference.CONVERTERS, Double, lambda layer, torch, rank: lambda x: 2 * x)
    np.testing.assert_array_equal(compile_frozen(model)(np.ones((1, 3), "float32")), [[2, 2, 2]])
    with pytest.raises(NotImplementedError, match="of type Relu6"):
        compile_frozen(keras.Model(inp, Relu6(6.0)(inp)))


def toy_graph(seed=0):
    """Every layer type compile_frozen converts, in the arrangements the
    registry's families use them (EfficientNet's Rescaling, Normalization and
    squeeze-excite, MobileNetV3's hard-swish as raw `keras.ops` nodes,
    Xception's separable convolutions, ResNetV2/DenseNet's BatchNorm after an
    Add, Inception's 'same' average pool, odd sizes for asymmetric 'same'
    padding), on a 20 px image: what `make test` compiles in place of the
    full-width backbones (the slow set compiles those). Random weights,
    non-trivial BatchNorm statistics; outputs: probabilities, a second
    softmax, a spatial map."""
    from kerasimpl.layers import MODES, AdaptiveAveragePooling2D, LabeledSoftmax, Preprocess

    L = keras.layers
    keras.utils.set_random_seed(seed)
    inp = keras.Input((20, 20, 3))
    x = L.Resizing(23, 23)(inp)  # odd: 'same' convolutions below pad unevenly
    norm = L.Normalization(mean=[100.0, 110.0, 120.0], variance=[900.0, 1600.0, 2500.0])
    x = L.Concatenate()([Preprocess(m)(x) for m in MODES] + [norm(L.Rescaling(0.5, offset=-10.0)(x))])
    x = L.SpatialDropout2D(0.3)(L.GaussianDropout(0.2)(L.GaussianNoise(0.5)(L.ZeroPadding2D(((1, 0), (0, 1)))(x))))
    x = L.Activation("swish")(L.BatchNormalization()(L.Conv2D(12, 3, strides=2, padding="same", use_bias=False)(x)))
    y = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, strides=2, padding="same")(x)))
    s = L.Reshape((1, 1, 12))(L.GlobalAveragePooling2D()(y))  # squeeze-excite
    s = L.Conv2D(12, 1, activation="sigmoid")(L.Conv2D(3, 1, activation="swish")(s))
    y = L.Multiply()([y, s])
    h = L.Multiply()([y, L.ReLU(6.0)(y + 3.0) * (1.0 / 6.0)])  # hard-swish as keras.ops nodes
    h = (h - 0.5) / 2.0
    z = L.BatchNormalization()(L.SeparableConv2D(12, 3, padding="same", activation="relu")(h))  # not foldable
    z = L.BatchNormalization()(L.Add()([z, y]))  # after an Add: not foldable either
    acts = [L.Activation(a)(z) for a in ("relu", "relu6", "sigmoid", "silu", "hard_sigmoid", "hard_swish", "tanh",
                                         "gelu", "linear")]
    p = L.Identity()(L.Concatenate()(acts))
    p = L.Concatenate()([L.MaxPooling2D(3, 2, padding="same")(L.AveragePooling2D(3, 1, padding="same")(p)),
                         L.MaxPooling2D(2)(p), L.AveragePooling2D(2)(p)])
    flat = L.Flatten()(AdaptiveAveragePooling2D((2, 2))(L.ReLU()(p)))
    logits = L.Dense(10)(L.Dense(16, activation="relu")(L.Dropout(0.5)(flat)))
    probs = LabeledSoftmax([str(i) for i in range(10)])(logits)
    other = L.Softmax()(L.Dense(4)(L.Reshape((p.shape[-1],))(L.GlobalAveragePooling2D(keepdims=True)(p))))
    model = keras.Model(inp, [probs, other, p])
    for w in model.weights:  # biases and BN statistics too
        if "variance" in w.path:
            w.assign(np.random.default_rng(seed).uniform(0.5, 2.0, w.shape).astype("float32"))
        elif "kernel" not in w.path:
            w.assign(np.random.default_rng(seed).normal(0, 0.2, w.shape).astype("float32"))
    return model


# The layer types (and raw keras.ops node types) compile_frozen converts.
CONVERTED = {"Activation", "AdaptiveAveragePooling2D", "Add", "AveragePooling2D", "BatchNormalization",
             "Concatenate", "Conv2D", "Dense", "DepthwiseConv2D", "Dropout", "Flatten", "GaussianDropout",
             "GaussianNoise", "GlobalAveragePooling2D", "Identity", "LabeledSoftmax", "MaxPooling2D", "Multiply",
             "Normalization", "Preprocess", "ReLU", "Rescaling", "Reshape", "Resizing", "SeparableConv2D", "Softmax",
             "SpatialDropout2D", "Subtract", "TrueDivide", "ZeroPadding2D"}


def test_the_toy_graph_holds_every_converted_layer_type():
    from kerasimpl.backend.torch.layers import CONVERTERS

    kinds = {type(node.operation).__name__ for nodes in toy_graph()._nodes_by_depth.values() for node in nodes}
    assert CONVERTED <= kinds, sorted(CONVERTED - kinds)
    table = {cls.__name__ for cls in CONVERTERS} - {"InputLayer"}
    assert table <= CONVERTED, f"converter table entries missing from the toy graph: {sorted(table - CONVERTED)}"


def test_compiled_toy_graph_equals_keras():
    """The toy graph through compile_frozen (torch) or compile_jax (JAX) equals Keras."""
    model = toy_graph()
    x = np.random.default_rng(6).integers(0, 256, (3, 20, 20, 3)).astype("float32")
    refs = [np.asarray(r) for r in model.predict_on_batch(x)]
    if ON_TORCH:
        got = compile_frozen(model)(x)
    elif ON_JAX:
        from kerasimpl.backend.jax.inference import compile_jax

        got = [compile_jax(keras.Model(model.input, out))(x) for out in model.outputs]
    else:
        pytest.skip("no fast path on this backend")
    for g, r in zip(got, refs):
        assert g.shape == r.shape and np.abs(r).max() > 1e-3 and np.ptp(r) > 1e-3
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * np.abs(r).max())


@pytest.mark.parametrize("size", [63, 64, 100])
def test_compiled_alexnet_features_through_avgpool_and_flatten_equal_keras(size):
    """AlexNet's frozen features (ZeroPadding2D, biased convs, valid max-pools),
    its adaptive 6x6 pool and the channels-last flatten feeding fc6."""
    from kerasimpl.alexnet import AlexNet

    keras.utils.set_random_seed(0)
    net = AlexNet(weights=None, input_shape=(size, size, 3), **TINY_ALEXNET)
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
def logits_model(model):
    """Raw images -> the head's logits: the nested head model and everything before it."""
    return keras.Model(model.input, model.get_layer(models.HEAD).output)


@pytest.mark.parametrize("name", registry())
def test_compiled_whole_classifier_equals_keras(name, backbone_model):
    """The saved classifier, head included (nested Sequential, Dropout, Dense, LabeledSoftmax)."""
    from kerasimpl.inference import Forward

    model = backbone_model(name)
    x = np.random.default_rng(3).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    ref_probs = np.asarray(model.predict_on_batch(x))
    ref_logits = np.asarray(logits_model(model).predict_on_batch(x))
    fast = Forward(model)
    probs = fast(x)
    expect_compiled = ON_TORCH and name not in NOT_COMPILED
    from kerasimpl.backend.jax.inference import JAX_PATH

    expect_path = "compiled torch (float32)" if expect_compiled else JAX_PATH if ON_JAX else "keras"
    assert fast.path == expect_path, fast.fallback_reason
    if fast.path == JAX_PATH:
        # The shifted depthwise sums round differently from XLA's convolution; the random BatchNorm
        # statistics amplify that through the deepest nets (logits up to ~300, measured 5e-5 of the
        # scale on EfficientNetV2-S): compared on the logits, relative to their scale.
        from kerasimpl.backend.jax.inference import compile_jax

        logits = compile_jax(logits_model(model))(x)
        np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=2e-4 * np.abs(ref_logits).max())
        np.testing.assert_allclose(probs, ref_probs, rtol=0, atol=3e-3)
    else:
        np.testing.assert_allclose(probs, ref_probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    if expect_compiled:
        logits = compile_frozen(logits_model(model))(x)
        assert np.abs(ref_logits).max() > 1e-4
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5 * np.abs(ref_logits).max())


@pytest.mark.skipif(not ON_TORCH, reason="the compiled program is torch's")
def test_head_layers_known_answers():
    """Dense (with activation), Dropout as identity, Flatten in Keras' NHWC order, softmax in float32."""
    from kerasimpl.layers import LabeledSoftmax

    inp = keras.Input((2, 2, 3))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dropout(0.9)(x)
    head = keras.Sequential([keras.Input((12,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)])
    out = LabeledSoftmax(["a", "b", "c"])(head(x))
    model = keras.Model(inp, [x, out])
    w = np.arange(12 * 4, dtype="float32").reshape(12, 4) / 100 - 0.2
    head.layers[0].set_weights([w, np.array([0.1, -5.0, 0.0, 0.2], "float32")])
    head.layers[1].set_weights([np.eye(4, 3, dtype="float32"), np.zeros(3, "float32")])
    x_in = np.arange(2 * 2 * 2 * 3, dtype="float32").reshape(2, 2, 2, 3)
    flat, probs = compile_frozen(model)(x_in)
    np.testing.assert_array_equal(flat, x_in.reshape(2, -1))  # NHWC flattening order, dropout off
    hidden = np.maximum(x_in.reshape(2, -1) @ w + [0.1, -5.0, 0.0, 0.2], 0)[:, :3]
    expect = np.exp(hidden - hidden.max(1, keepdims=True))
    np.testing.assert_allclose(probs, expect / expect.sum(1, keepdims=True), rtol=1e-5)


@pytest.mark.skipif(not ON_TORCH, reason="the compiled program is torch's")
@pytest.mark.parametrize("name", ["smallcnn", "mobilenetv2"])
def test_bfloat16_program_is_close_to_float32(name, backbone_model):
    """Autocast bfloat16: features within bfloat16's error (8 mantissa bits), and not bit-equal (it ran in bf16)."""
    model = backbone_model(name)
    fe = models.feature_extractor(model)
    x = np.random.default_rng(4).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    ref = compile_frozen(fe)(x)
    low = compile_frozen(fe, precision="bfloat16")(x)
    assert low.dtype == np.float32 and low.shape == ref.shape
    rel = np.linalg.norm(low - ref) / np.linalg.norm(ref)
    assert 0 < rel < 0.05, rel


@pytest.mark.skipif(not ON_TORCH, reason="the compiled program is torch's")
def test_float16_on_cpu_is_refused_with_the_reason(backbone_model):
    with pytest.raises(ValueError, match="float16 runs on CUDA only"):
        compile_frozen(models.feature_extractor(backbone_model("smallcnn")), precision="float16", device="cpu")


def test_fast_saliency_forwards_equal_keras():
    """Occlusion, RISE and Score-CAM maps are the same through the fast path and through Keras."""
    from kerasimpl import saliency
    from kerasimpl.inference import Forward
    from kerasimpl.saliency.cam import score_tensor

    model = extractor("smallcnn", input_size=32)
    x = np.random.default_rng(5).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    for method in (saliency.Occlusion(model, patch=8, stride=8), saliency.RISE(model, masks=16),
                   saliency.ScoreCAM(model)):
        fast = method.explain(x, [1])[0]
        method._fast = Forward(model, native=False)  # the Keras path for the same method
        method._fast_scores = Forward(keras.Model(model.input, score_tensor(model)), native=False) \
            if hasattr(method, "rest") else None
        slow = method.explain(x, [1])[0]
        np.testing.assert_allclose(fast.map, slow.map, rtol=1e-4, atol=1e-6)
        assert np.ptp(fast.map) > 0


def _program_tensors(program):
    """Every tensor a compiled program holds: conv weights, closures' constants, nested programs'."""
    import types

    import torch

    found, seen = [], set()

    def visit(obj, depth):
        if id(obj) in seen or depth > 6 or isinstance(obj, (types.ModuleType, type, str, int, float)):
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            found.append(obj)
            return
        if isinstance(obj, (list, tuple)):
            children = list(obj)
        elif isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, types.MethodType):
            children = [obj.__self__]
        elif isinstance(obj, types.FunctionType):
            children = [c.cell_contents for c in obj.__closure__ or ()]
        elif type(obj).__module__ in ("kerasimpl.backend.torch.inference", "kerasimpl.backend.torch.layers"):
            children = [v for k, v in vars(obj).items() if k not in ("layer", "torch")]
        else:
            return
        for child in children:
            visit(child, depth + 1)

    visit(program, 0)
    return found


@pytest.mark.skipif(not ON_TORCH, reason="the compiled program is torch's")
@pytest.mark.parametrize("name", ["toy", "mobilenetv3large", *registry(["efficientnetb0"])])
def test_every_program_tensor_lives_on_the_programs_device(name, backbone_model):
    """Built for torch's 'meta' device (shapes, no data: runs on any CPU), every weight, folded BN
    constant, preprocessing constant and head weight lands there: what moves the program to a GPU."""
    model = toy_graph() if name == "toy" else backbone_model(name)
    program = compile_frozen(model, device="meta")
    tensors = _program_tensors(program)
    assert program.device.type == "meta" and len(tensors) > 20
    assert {t.device.type for t in tensors} == {"meta"}
    conv_weights = [t for t in tensors if t.dim() == 4 and t.shape[-1] > 1]
    assert conv_weights and all(t.is_contiguous(memory_format=__import__("torch").channels_last) for t in conv_weights)


@pytest.mark.parametrize("precision_, device, capability, expected", [
    ("bfloat16", "cuda", (8, 0), "bfloat16"),
    ("bfloat16", "cuda", (8, 9), "bfloat16"),
    ("bfloat16", "cuda", (7, 5), "float16"),  # no native bf16 before Ampere: the tensor cores' fp16
    ("float16", "cuda", (7, 0), "float16"),
    ("float32", "cuda", (9, 0), "float32"),
    ("bfloat16", "cpu", None, "bfloat16"),
    ("float32", "cpu", None, "float32"),
])
def test_autocast_dtype_per_device(precision_, device, capability, expected):
    from kerasimpl.backend.torch.inference import autocast_precision

    assert autocast_precision(precision_, device, capability) == expected


def test_a_symmetric_zero_padding_before_a_valid_conv_pads_inside_the_conv():
    """torch-style `padding=1` graphs (torchvision's MobileNetV2, AlexNet): the ZeroPadding2D step becomes
    a pass-through and the conv pads (dilated too); an asymmetric pad, one whose output another layer
    reads or the model returns, and one before a 'same' conv stay."""
    if not ON_TORCH:
        pytest.skip("the compiled torch program")
    from kerasimpl.backend.torch.layers import Conv

    L = keras.layers
    keras.utils.set_random_seed(3)
    inp = keras.Input((9, 9, 4))
    a = L.DepthwiseConv2D(3, 2, padding="valid", name="dw")(L.ZeroPadding2D(1, name="sym")(inp))
    b = L.Conv2D(5, 3, 2, padding="valid", name="asym_conv")(L.ZeroPadding2D(((0, 1), (0, 1)), name="asym")(inp))
    shared = L.ZeroPadding2D(2, name="shared")(inp)
    c = L.Conv2D(5, 5, padding="valid", name="c1")(shared)
    d = L.Conv2D(5, 3, 2, padding="valid", name="c2")(L.MaxPooling2D(3, 1, name="pool")(shared))
    e = L.Conv2D(3, 3, padding="valid", dilation_rate=2, name="dilated")(L.ZeroPadding2D(2, name="dil_pad")(inp))
    f = L.Conv2D(3, 3, padding="same", name="same_conv")(L.ZeroPadding2D(1, name="before_same")(inp))
    returned = L.ZeroPadding2D(1, name="returned")(inp)
    g = L.Conv2D(3, 3, padding="valid", name="reads_returned")(returned)
    model = keras.Model(inp, [a, b, c, d, e, f, returned, g])
    program = compile_frozen(model)
    steps = {s["layer"].name: s for s in program.steps}
    folded = lambda name: steps[name]["fn"].__name__ == "_pass_through"  # noqa: E731
    assert steps["dw"]["fn"].explicit_pad == (1, 1) and folded("sym")
    assert steps["dilated"]["fn"].explicit_pad == (2, 2) and folded("dil_pad")
    assert steps["asym_conv"]["fn"].explicit_pad == (0, 0) and not folded("asym")
    assert isinstance(steps["c1"]["fn"], Conv) and steps["c1"]["fn"].explicit_pad == (0, 0) and not folded("shared")
    assert steps["same_conv"]["fn"].explicit_pad == (0, 0) and not folded("before_same")
    assert steps["reads_returned"]["fn"].explicit_pad == (0, 0) and not folded("returned")
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 4)).astype("float32")
    for g, r in zip(program(x), model.predict_on_batch(x)):
        np.testing.assert_allclose(g, np.asarray(r), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "relu6", "sigmoid", "swish", "hard_swish", "tanh"])
def test_a_convolutions_own_activation_runs_in_place_and_equals_keras(activation):
    """VGG16-style Conv2D(activation=...): applied in place on the convolution's fresh output (no second
    feature map allocated, as torchvision's ReLU(inplace=True)); the values are Keras'."""
    if not ON_TORCH:
        pytest.skip("the compiled torch program")
    import torch

    keras.utils.set_random_seed(4)
    inp = keras.Input((9, 9, 3))
    model = keras.Model(inp, keras.layers.Conv2D(4, 3, padding="same", activation=activation, name="c")(inp))
    program = compile_frozen(model)
    (step,) = program.steps
    x = torch.randn(2, 4, 5, 5)
    assert step["fn"].activation(x) is x  # the same tensor, overwritten
    images = np.random.default_rng(1).normal(size=(2, 9, 9, 3)).astype("float32")
    np.testing.assert_allclose(program(images), model.predict_on_batch(images), rtol=1e-5, atol=1e-5)


def test_same_padding_known_answers_and_keras_agreement():
    """Keras' 'same': ceil(size / stride) outputs, the odd pixel after. 224 px, 3x3, stride 2: (0, 1) (why
    torchvision's MobileNetV2 needs an explicit symmetric pad); odd sizes and dilation pad evenly."""
    from kerasimpl.layers import same_padding

    assert same_padding(224, 3, 2) == (0, 1) and same_padding(225, 3, 2) == (1, 1)
    assert same_padding(7, 3, 1) == (1, 1) and same_padding(8, 5, 1, dilation=2) == (4, 4)
    assert same_padding(10, 1, 2) == (0, 0) and same_padding(5, 4, 1) == (1, 2)
    for size, k, s in ((9, 3, 2), (10, 5, 3), (6, 2, 1)):
        x = np.random.default_rng(size).normal(size=(1, size, size, 1)).astype("float32")
        conv = keras.layers.Conv2D(1, k, s, padding="same", use_bias=False, kernel_initializer="ones")
        before, after = same_padding(size, k, s)
        padded = np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))
        valid = keras.layers.Conv2D(1, k, s, padding="valid", use_bias=False, kernel_initializer="ones")
        np.testing.assert_allclose(keras.ops.convert_to_numpy(conv(x)), keras.ops.convert_to_numpy(valid(padded)),
                                   rtol=1e-5, atol=1e-5)
