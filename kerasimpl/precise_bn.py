"""Precise BatchNormalization statistics: population averages instead of moving averages.

While training, BatchNormalization normalises with each batch's statistics and
keeps an exponential moving average of them (Keras: momentum 0.99, about the
last 100 batches) for inference. In a short run from scratch the weights
change faster than that average follows, so validation and test run with
statistics of weights that no longer exist: accuracy swings by points from
epoch to epoch and seed to seed, and `ReduceLROnPlateau` and early stopping,
which watch validation, react to that noise.

"Precise BN" re-estimates them from the current weights instead: a forward
pass over a fixed sample of training images, the BatchNormalization layers
normalising with batch statistics as in training and every other layer in
inference mode (dropout off, as evaluation runs it), averaging the batches'
statistics into the population's. We take the
population's variance (mean of the batch variances plus the variance of the
batch means, i.e. E[x^2] - E[x]^2 over every position of every image), where
`torch.optim.swa_utils.update_bn` and detectron2's `update_bn_stats` average
the batch variances and so leave out the spread of the batch means; and,
unlike them, we keep dropout off (a BatchNormalization after a dropout then
sees the variances evaluation will) and take no random draw from the
generators training uses. The sample is unaugmented, as validation and test
images are.

Reference: Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021), Sec. 3
("Precise BatchNorm"); detectron2's `PreciseBN` hook.
"""

from __future__ import annotations

import contextlib
import functools

import keras
import numpy as np

from kerasimpl import distributed
from kerasimpl.layers import trainable_batchnorms

DEFAULT_IMAGES = 2048  # Wu & Johnson: a few thousand samples make the estimate precise


def reestimated_batchnorms(model) -> list:
    """The BatchNormalization layers whose statistics precise BN re-estimates:
    `kerasimpl.layers.trainable_batchnorms` without batch renormalization (its statistics follow another rule)."""
    return [layer for layer in trainable_batchnorms(model) if not layer.renorm]


def sample(indices, images, seed) -> np.ndarray:
    """`images` rows of `indices` (all of them if fewer), drawn with `seed`, in index order."""
    indices = np.asarray(indices)
    if images >= len(indices):
        return indices
    return np.sort(np.random.default_rng([int(seed), 0x9BC]).choice(indices, images, replace=False))


def population_statistics(model, x, batch_size, indices=None, layers=None) -> list:
    """Population mean and variance of the inputs of `layers` (default:
    `reestimated_batchnorms(model)`) over the images `x[indices]` (default: all of
    `x`), the BatchNormalization layers normalising with batch statistics
    and every other layer in inference mode.

    `x` may be an array or anything indexed by an integer array (image files
    decoded batch by batch). The rows are cut into batches of `batch_size` (a last partial batch is dropped
    when there is a whole one: a batch of a few rows normalises unlike
    training's). Across processes (`kerasimpl.distributed`) each process runs
    every `size`-th batch and the sums are added up, so every process gets
    the single process's statistics. The model's variables are not changed.

    Returns:
        `[(mean, variance), ...]`, float32 arrays, one pair per layer.

    Raises:
        ValueError: `x` is empty, or `batch_size` < 1.
    """
    layers = reestimated_batchnorms(model) if layers is None else list(layers)
    rows = np.arange(len(x)) if indices is None else np.asarray(indices)
    if batch_size < 1 or len(rows) == 0:
        raise ValueError(f"Precise BatchNormalization needs images and batch_size >= 1. Received: {len(rows)} images, "
                         f"batch_size={batch_size}")
    if not layers:
        return []
    starts = list(range(0, max(len(rows) - batch_size, 0) + 1, batch_size))
    w = distributed.world()
    moments = _batch_moments(model, layers)
    width = sum(int(np.prod(layer.moving_mean.shape)) for layer in layers)
    sums = np.zeros((3, width), np.float64)  # rows, rows * mean, rows * (variance + mean^2)
    with distributed.local_model(model):
        # stop_gradient: a forward pass only (torch would otherwise record it for backward)
        trainable = [keras.ops.stop_gradient(v.value) for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        for start in starts[w.rank::w.size]:
            batch = np.asarray(x[rows[start:start + batch_size]], dtype="float32")
            mean, variance = moments(trainable, non_trainable, batch)
            sums += len(batch) * np.stack([np.ones_like(mean), mean, variance + mean ** 2])
    sums = distributed.sum_over_processes(sums)
    mean = sums[1] / sums[0]
    variance = np.maximum(sums[2] / sums[0] - mean ** 2, 0.0)
    cuts = np.cumsum([int(np.prod(layer.moving_mean.shape)) for layer in layers])[:-1]
    return [(m.astype("float32"), v.astype("float32"))
            for m, v in zip(np.split(mean, cuts), np.split(variance, cuts))]


def _batch_moments(model, layers):
    """A function `(trainable, non_trainable, batch) -> (means, variances)`, float64 vectors of every layer's
    batch statistics, concatenated. The model runs in inference mode except `layers`, which normalise with
    their batch's statistics (`_batch_mode`); their new moving statistics, read off `stateless_call` with
    momentum 0, are the batch's. Nothing is assigned."""
    position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    picks = [(position[id(layer.moving_mean)], position[id(layer.moving_variance)]) for layer in layers]

    def moments(trainable, non_trainable, batch):
        with _batch_mode(layers):
            _, new = model.stateless_call(trainable, non_trainable, batch, training=False)
        cat = lambda k: np.concatenate([np.ravel(keras.ops.convert_to_numpy(new[p[k]])) for p in picks])  # noqa
        return cat(0).astype(np.float64), cat(1).astype(np.float64)

    return moments


@contextlib.contextmanager
def _batch_mode(layers):
    """Within the block `layers` normalise with batch statistics whatever `training` they are called with,
    and move their moving statistics all the way to the batch's (momentum 0).

    The rest of the model stays in inference mode: dropout and stochastic depth off, as evaluation runs
    them (a BatchNormalization after a dropout would otherwise see inflated variances), and no random
    draw taken from the generators training uses.
    """
    saved = [(layer, layer.momentum) for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
            layer.call = functools.partial(_call_in_training_mode, type(layer).call, layer)
        yield
    finally:
        for layer, momentum in saved:
            layer.momentum = momentum
            layer.__dict__.pop("call", None)


def _call_in_training_mode(call, layer, *args, training=None, **kwargs):
    return call(layer, *args, training=True, **kwargs)


def set_population_statistics(model, x, batch_size, indices=None) -> int:
    """Replace the moving statistics of `model`'s trainable BatchNormalization layers by their
    population statistics over `x[indices]` (`population_statistics`); return how many layers changed."""
    layers = reestimated_batchnorms(model)
    stats = population_statistics(model, x, batch_size, indices, layers)
    for layer, (mean, variance) in zip(layers, stats):
        layer.moving_mean.assign(mean.reshape(layer.moving_mean.shape))
        layer.moving_variance.assign(variance.reshape(layer.moving_variance.shape))
    return len(layers)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Sets the population statistics (`set_population_statistics`) before every validation of `fit`,
    and at the end of training if no validation followed the last step.

    So validation, the best checkpoint, early stopping's restored weights and
    the final model all carry statistics of their own weights. A no-op for
    a model without trainable BatchNormalization.

    Args:
        x: the images (raw, as the model takes them), an array or image files.
        indices: the rows of `x` to use: a fixed sample of the training
            split (`sample`).
        batch_size: images per batch, the training batch.
    """

    def __init__(self, x, indices, batch_size):
        super().__init__()
        self.x, self.indices, self.batch_size = x, np.asarray(indices), int(batch_size)
        self._stale = False

    def on_train_batch_end(self, batch, logs=None):
        self._stale = True

    def on_test_begin(self, logs=None):
        self._update()

    def on_train_end(self, logs=None):
        if self._stale:
            self._update()

    def _update(self):
        set_population_statistics(self.model, self.x, self.batch_size, self.indices)
        self._stale = False
