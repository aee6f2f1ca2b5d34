"""Fast forward passes of a model: the compiled torch program where it applies, Keras elsewhere.

Every inference-only pass of a saved classifier (feature extraction,
evaluation, `experiments.infer`, the throughput figure, the forward passes
of occlusion, RISE and Score-CAM) goes through `Forward`: on the torch
backend (without a distribution) the model runs as a compiled native torch
program (`kerasimpl.torch_inference`) at the requested precision; on JAX
(without a distribution) as one jitted program with depthwise convolutions
as shifted sums (`kerasimpl.jax_inference`: XLA:CPU's grouped convolution
is an order of magnitude slower), at the model's dtype policy; for an
unsupported layer, or with `native=False`, it runs as
`model(x, training=False)` in Keras, at the model's own dtype policy.
"""

from __future__ import annotations

import numpy as np

KERAS_PATH = "keras"


class Forward:
    """`f(x) -> float32 np.ndarray`, equal to `model(x, training=False)`.

    Compiled on the first call (so constructing one costs nothing).

    Args:
        model: a Keras model with one input.
        precision: a concrete precision (`float32`, `bfloat16`, `float16`;
            `kerasimpl.precision.resolve` gives one). The Keras fallback
            ignores it and runs at the model's dtype policy.
        native: allow the compiled torch program.

    Attributes:
        path: after the first call, `"compiled torch (<precision>)"`,
            `jax_inference.JAX_PATH` or `"keras"`; `fallback_reason` says
            why Keras ran.
    """

    def __init__(self, model, precision="float32", native=True):
        self.model, self.precision, self.native = model, precision, native
        self.path, self.fallback_reason, self._fn = None, None, None

    def __call__(self, x):
        if self._fn is None:
            self._fn = self._build()
        return self._fn(x)

    def _build(self):
        import keras

        from kerasimpl.runtime import batch_multiple

        if not self.native:
            self.fallback_reason = "native=False"
        elif keras.backend.backend() == "jax" and batch_multiple() == 1:
            from kerasimpl.jax_inference import JAX_PATH, compile_jax

            try:
                program = compile_jax(self.model)
            except NotImplementedError as e:
                self.fallback_reason = str(e)
            else:
                self.path = JAX_PATH
                return program
        elif keras.backend.backend() != "torch":
            self.fallback_reason = f"backend {keras.backend.backend()!r} (the compiled program is torch's)"
        elif batch_multiple() != 1:
            self.fallback_reason = "a distribution is active"
        else:
            from kerasimpl.torch_inference import compile_frozen

            try:
                program = compile_frozen(self.model, precision=self.precision)
            except NotImplementedError as e:
                self.fallback_reason = str(e)
            else:
                self.path = f"compiled torch ({self.precision})"
                return program
        self.path = KERAS_PATH
        return self._keras

    def _keras(self, x):
        from keras import ops

        from kerasimpl.saliency.gradients import no_grad

        if isinstance(x, np.ndarray):  # Keras' compiled predict step (jit on JAX)
            return np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        with no_grad():
            out = self.model(x, training=False)
        return np.asarray(ops.convert_to_numpy(out), dtype=np.float32)


def predict_batches(model, x, batch_size, precision="float32", indices=None, verbose=0, workers=1, what="predict",
                    native=True) -> np.ndarray:
    """`model` on `x[indices]` in batches, in order, as float32 (the fast path where it applies).

    On the Keras path this is `evaluation.predict` (`model.predict`, which
    also handles a distribution's padding).
    """
    fast = Forward(model, precision, native)
    fast._fn = fast._build()
    if fast.path == KERAS_PATH:
        from kerasimpl.evaluation import predict

        return predict(model, x, batch_size, indices=indices, verbose=verbose, workers=workers, what=what)
    from kerasimpl.data import ArrayDataset
    from kerasimpl.features import run_batches

    return run_batches(fast, ArrayDataset(x, None, batch_size, indices=indices), verbose, workers, what)
