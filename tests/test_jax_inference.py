"""The JAX fast path: depthwise convolutions as shifted sums equal Keras' own; the jitted model equals Keras."""

import keras
import numpy as np
import pytest

ON_JAX = keras.backend.backend() == "jax"
pytestmark = pytest.mark.skipif(not ON_JAX, reason="the JAX fast path (the torch backend has its compiled program)")


@pytest.mark.parametrize("size", [7, 8, 15])
@pytest.mark.parametrize("k, stride, padding", [(3, 1, "same"), (3, 2, "same"), (5, 1, "same"), (5, 2, "same"),
                                                (3, 2, "valid"), (5, 1, "valid"), (1, 1, "valid"), (3, (1, 2), "same")])
def test_shifted_depthwise_equals_keras(size, k, stride, padding):
    from kerasimpl.backend.jax.inference import depthwise_conv_shifted

    rng = np.random.default_rng(size * 10 + k)
    x = rng.normal(size=(2, size, size + 1, 6)).astype("float32")
    w = rng.normal(size=(k, k, 6, 1)).astype("float32")
    ref = np.asarray(keras.ops.depthwise_conv(x, w, strides=stride, padding=padding))
    got = np.asarray(depthwise_conv_shifted(x, w, strides=stride, padding=padding))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(dilation_rate=2), dict(data_format="channels_first")])
def test_shifted_depthwise_passes_other_cases_to_keras(kw):
    """Dilation, channels-first and depth multipliers > 1 run as Keras' own (same result)."""
    from kerasimpl.backend.jax.inference import depthwise_conv_shifted

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 9, 9, 4)).astype("float32")
    if kw.get("data_format") == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    w = rng.normal(size=(3, 3, 4, 1)).astype("float32")
    ref = np.asarray(keras.ops.depthwise_conv(x, w, padding="same", **kw))
    np.testing.assert_allclose(np.asarray(depthwise_conv_shifted(x, w, padding="same", **kw)), ref, rtol=1e-6)
    w2 = rng.normal(size=(3, 3, 4, 2)).astype("float32")  # depth multiplier 2
    x2 = rng.normal(size=(1, 9, 9, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(depthwise_conv_shifted(x2, w2, padding="same")),
                               np.asarray(keras.ops.depthwise_conv(x2, w2, padding="same")), rtol=1e-6)


def _nested_depthwise_model():
    """A classifier whose depthwise convolutions sit in a nested functional base (as keras.applications')."""
    inp = keras.Input((12, 12, 3))
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = keras.layers.SeparableConv2D(3, 3, padding="same", activation="relu")(x)  # Xception's layer
    x = keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=2)(x)  # not covered: Keras' own
    base = keras.Model(inp, x, name="base")
    outer = keras.Input((12, 12, 3))
    return keras.Model(outer, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(base(outer))))


def _grouped_convolutions(model, x):
    """Grouped (depthwise) convolutions in the jitted forward pass of `model`."""
    import jax

    jaxpr = jax.make_jaxpr(lambda t, n, a: model.stateless_call(t, n, a)[0])(
        [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables], x)
    return str(jaxpr).count("feature_group_count=3")


def test_the_program_computes_covered_depthwise_convolutions_as_shifted_sums_in_nested_bases():
    """keras.models.clone_model (public API) rebuilds the graph with the covered depthwise and separable layers
    computed as shifted sums: the jitted program holds exactly one grouped convolution (the dilated one, Keras'
    own), it equals Keras, and the model itself is untouched and shares its variables with the program."""
    from kerasimpl.backend.jax.inference import JAX_PATH, compile_jax, shifted_graph

    model = _nested_depthwise_model()
    x = np.random.default_rng(1).normal(size=(2, 12, 12, 3)).astype("float32")
    expected = np.asarray(model.predict_on_batch(x))
    np.testing.assert_allclose(compile_jax(model)(x), expected, rtol=1e-5, atol=1e-6)
    graph = shifted_graph(model)
    assert {id(v) for v in graph.variables} == {id(v) for v in model.variables}
    assert (_grouped_convolutions(model, x), _grouped_convolutions(graph, x)) == (4, 1)
    np.testing.assert_allclose(np.asarray(model.predict_on_batch(x)), expected, rtol=1e-6)
    assert "shifted sums" in JAX_PATH


def test_the_shifted_graph_is_made_once_per_model_and_never_compiled():
    """A compiled model (as during training) is cloned once, through an uncompiled functional view: no
    optimizer state is built for the program, and a second compile_jax reuses the graph."""
    from kerasimpl.backend.jax.inference import shifted_graph

    model = _nested_depthwise_model()
    model.compile(optimizer="adam", loss="mse")
    graph = shifted_graph(model)
    assert graph is not model and not graph.compiled and shifted_graph(model) is graph
    # A Sequential takes no call_function: its functional view does, so it is covered too.
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.DepthwiseConv2D(3)])
    x = np.random.default_rng(3).normal(size=(1, 8, 8, 3)).astype("float32")
    assert (_grouped_convolutions(plain, x), _grouped_convolutions(shifted_graph(plain), x)) == (1, 0)


def test_the_shifted_graph_keeps_a_mixed_precision_policy():
    """Under mixed_bfloat16 the shifted layers compute in bfloat16 like Keras' own (variables stay float32)."""
    from kerasimpl.backend.jax.inference import compile_jax

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = _nested_depthwise_model()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    x = np.random.default_rng(2).normal(size=(2, 12, 12, 3)).astype("float32")
    expected = np.asarray(model.predict_on_batch(x), dtype=np.float32)
    got = compile_jax(model)(x)
    assert all(v.dtype == "float32" for v in model.variables)
    np.testing.assert_allclose(got, expected, rtol=0.05, atol=0.05)  # bfloat16 arithmetic, both ways


def test_compile_jax_refuses_several_inputs():
    from kerasimpl.backend.jax.inference import compile_jax

    a, b = keras.Input((2,)), keras.Input((2,))
    with pytest.raises(NotImplementedError, match="one input. Received 2 inputs"):
        compile_jax(keras.Model([a, b], keras.layers.Add()([a, b])))


def test_program_follows_the_weights_and_survives_keras_predict():
    """Keras' predict step donates the variables' buffers: the program reads the current ones every call."""
    from kerasimpl.backend.jax.inference import compile_jax

    inp = keras.Input((4,))
    dense = keras.layers.Dense(2)
    model = keras.Model(inp, dense(inp))
    x = np.ones((3, 4), "float32")
    run = compile_jax(model)
    first = run(x)
    model.predict_on_batch(x)  # replaces the variables' buffers
    np.testing.assert_allclose(run(x), first, rtol=1e-6)
    dense.kernel.assign(np.zeros((4, 2), "float32"))
    np.testing.assert_allclose(run(x), np.broadcast_to(np.asarray(dense.bias), (3, 2)), atol=1e-7)
