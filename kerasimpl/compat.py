"""Every private Keras API kerasimpl touches, in one place (Keras 3.15).

Keras has no public route for these; each is named here, with what it is
for, and `tests/test_compat.py` checks each against the installed Keras (a
release that renames or drops one fails there, not deep inside a run).
pyproject.toml pins the tested minor version for the same reason.

- `nodes_by_depth(model)`: a functional model's graph, level by level
  (`Functional._nodes_by_depth`): the compiled torch program walks it.
- `sequential_graph(model)`: the functional graph a built Sequential keeps
  (`Sequential._functional`), for the same walk.
- `producer(tensor)`: the operation and node that made a symbolic tensor
  (`KerasTensor._keras_history`, `Operation._inbound_nodes`): CAM's linear
  head check walks back from the output.
- `set_initial_epoch(model, epoch)`: where the next `fit` resumes
  (`Model._initial_epoch`, what `BackupAndRestore` itself sets).
- `loss_tracker(model)`: the mean-loss metric a custom train step updates
  (`Trainer._loss_tracker`).
- `BACKUP_HOOKS`: the `BackupAndRestore` methods and attributes our backup
  callback overrides or reads (`_save_model`, `_load_model`,
  `_current_epoch`, `_last_batch_seen`).
- `jax_variable_state(v)` / `set_jax_variable_state(v, value, layout)`: a
  JAX variable's array and layout (`Variable._value`, `_layout`), swapped
  for a process-local copy around inference under a multi-process
  distribution.
"""

from __future__ import annotations

# The BackupAndRestore internals kerasimpl.callbacks builds on: methods it overrides, attributes it reads.
BACKUP_HOOKS = ("_save_model", "_load_model", "_current_epoch", "_last_batch_seen")


def nodes_by_depth(model) -> dict | None:
    """`{depth: [node, ...]}` of a functional model (depth 0: the outputs' nodes); None for a
    model without a graph (a subclassed one)."""
    return getattr(model, "_nodes_by_depth", None)


def sequential_graph(model):
    """The functional model a built `keras.Sequential` keeps inside (`Sequential._functional`), or None."""
    return getattr(model, "_functional", None)


def producer(tensor):
    """`(operation, node)` that produced a symbolic (Keras) tensor, or `(None, None)` for an input
    that nothing produced."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, None
    op = history.operation
    return op, op._inbound_nodes[history.node_index]


def set_initial_epoch(model, epoch):
    """Make the next `model.fit` start at `epoch` (as `BackupAndRestore` does on a restore)."""
    model._initial_epoch = int(epoch)


def loss_tracker(model):
    """The model's mean-loss tracker (`model.metrics[0]` reports it as `loss`)."""
    return model._loss_tracker


def jax_variable_state(variable) -> tuple:
    """`(array, layout)` of a JAX-backend Keras variable."""
    return variable._value, variable._layout


def set_jax_variable_state(variable, value, layout):
    """Put `value` (a JAX array) and `layout` into a JAX-backend Keras variable, bypassing assign's checks."""
    variable._value, variable._layout = value, layout
