"""kerasimpl.compat: each private Keras API still means what kerasimpl relies on.

A Keras release that renames or changes one of them fails here, by name,
instead of deep inside a run (pyproject pins the tested minor version).
"""

import importlib.util

import keras
import numpy as np
import pytest

from kerasimpl import compat

ON_JAX = keras.backend.backend() == "jax"


def chain():
    inp = keras.Input((3,))
    a = keras.layers.Dense(4, name="a")(inp)
    return keras.Model(inp, keras.layers.Dense(2, name="b")(a), name="chain")


def test_nodes_by_depth_walks_the_graph_outputs_first():
    graph = compat.nodes_by_depth(chain())
    names = {d: [n.operation.name for n in nodes] for d, nodes in graph.items()}
    assert names[0] == ["b"] and names[1] == ["a"] and len(names) == 3  # depth 2: the input layer

    class Sub(keras.Model):
        def call(self, x):
            return x

    assert compat.nodes_by_depth(Sub()) is None  # no graph to walk


def test_sequential_graph_is_its_functional_model():
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    graph = compat.sequential_graph(seq)
    assert isinstance(graph, keras.Model) and [n.operation.name for n in compat.nodes_by_depth(graph)[0]] == ["d"]


def test_producer_is_the_operation_and_node_that_made_a_tensor():
    model = chain()
    op, node = compat.producer(model.outputs[0])
    assert op.name == "b" and node.input_tensors[0] is model.get_layer("a").output
    assert compat.producer(np.zeros(2)) == (None, None)  # not a symbolic tensor


def test_set_initial_epoch_is_where_fit_resumes():
    model = chain()
    model.compile("sgd", "mse")
    x, y = np.zeros((4, 3), "float32"), np.zeros((4, 2), "float32")
    compat.set_initial_epoch(model, 2)
    history = model.fit(x, y, epochs=3, verbose=0)
    assert history.epoch == [2]  # epochs 0 and 1 counted as done


def test_loss_tracker_is_the_loss_fit_reports():
    model = chain()
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    history = model.fit(x, np.ones((8, 2), "float32"), epochs=1, batch_size=8, verbose=0)
    tracker = compat.loss_tracker(model)
    assert float(tracker.result()) == pytest.approx(history.history["loss"][-1], rel=1e-6)
    tracker.update_state(5.0, sample_weight=1)  # what the DDP train step calls
    assert float(tracker.result()) != pytest.approx(history.history["loss"][-1])


def test_backup_and_restore_has_the_hooks_our_callback_overrides(tmp_path):
    callback = keras.callbacks.BackupAndRestore(str(tmp_path))
    for name in compat.BACKUP_HOOKS:
        assert hasattr(callback, name), f"keras.callbacks.BackupAndRestore.{name} is gone"
    assert callable(callback._save_model) and callable(callback._load_model)


@pytest.mark.skipif(not ON_JAX, reason="a JAX variable's state (the JAX backend; CI's JAX stage runs it)")
def test_jax_variable_state_round_trip():
    import jax.numpy as jnp

    v = keras.Variable(np.arange(3.0, dtype="float32"))
    value, layout = compat.jax_variable_state(v)
    compat.set_jax_variable_state(v, jnp.full(3, 7.0), None)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), [7.0, 7.0, 7.0])
    compat.set_jax_variable_state(v, value, layout)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), [0.0, 1.0, 2.0])
