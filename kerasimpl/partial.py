"""Fine-tuning the top of a frozen base on cached activations.

When only the top of the base is trainable (and every BatchNormalization
frozen, so the frozen part is a fixed function of its input), the model
splits at one tensor: the frozen *bottom* runs once per training image and
augmented view, on the fast inference path (`kerasimpl.inference`), and
only the trainable *top* runs with gradients, epoch after epoch. On a CPU
this is what makes fine-tuning affordable: a training step of
EfficientNet-Lite0's stages 5-7 (from 14x14 maps on, the top 60 layers)
costs less than a forward pass of the whole network in Keras, and the
bottom's 70% of the arithmetic runs once per view instead of every epoch.

Augmentation becomes a pool of `views` fixed augmented copies of each
training image (view 0 unaugmented, view v drawn with key `(v, batch)` from
the run's seed); epoch e trains on view `e mod views`. Label-mixing
augmentations of images (MixUp, CutMix) change labels per batch and are not
cached: `split_at_trainable` callers fall back to the whole model for them.
MixUp can mix the cached activations instead (`ActivationMixUp`: manifold
mixup at the cut), new pairs every epoch at no extraction cost.

The split is exact: `top(bottom(x))` is the model's own function, with the
same layer objects (the top's variables ARE the model's).
"""

from __future__ import annotations

import keras
import numpy as np

from kerasimpl.augmentation import MIXING, augmenter


class NoSplit(ValueError):
    """The model has no single tensor before its first trainable layer (says why)."""


def split_at_trainable(model):
    """`(bottom, top, cut_layer)`: the model cut at the last single tensor before its first trainable weight.

    `bottom` maps the model's input to the cut tensor; `top` maps the cut
    tensor to the model's output and holds every trainable variable.

    Raises:
        NoSplit: nothing is trainable, or no tensor separates the frozen part.
    """
    layers = model.layers
    trainable = [i for i, layer in enumerate(layers) if layer.trainable_weights]
    if not trainable:
        raise NoSplit(f"{model.name} has no trainable weights: nothing to fine-tune")
    trainable_ids = {id(v) for v in model.trainable_weights}
    for j in range(trainable[0] - 1, 0, -1):  # walk back from the first trainable layer
        cut = layers[j].output
        if not isinstance(cut, keras.KerasTensor):
            continue
        try:
            top = keras.Model(cut, model.outputs[0], name=f"{model.name}_top")
        except ValueError:  # "Graph disconnected": a later layer also reads an earlier tensor
            continue
        if {id(v) for v in top.trainable_weights} == trainable_ids:
            bottom = keras.Model(model.inputs[0], cut, name=f"{model.name}_bottom")
            return bottom, top, layers[j].name
    raise NoSplit(f"{model.name}: no single tensor separates the frozen layers from the first trainable one "
                  f"({layers[trainable[0]].name})")


def can_split(model, augment) -> bool:
    """Whether fine-tuning `model` with `augment` can run on cached activations."""
    if any(a in MIXING for a in augment):
        return False
    try:
        split_at_trainable(model)
    except NoSplit:
        return False
    return True


def cut_activations(bottom, x, indices, augment=(), views=1, seed=0, batch_size=64, precision="float32",
                    verbose=0, what="extract cut"):
    """The bottom's output for `views` copies of `x[indices]`, view-major: row `v * N + i`.

    View 0 is `x[indices]` as is; view v >= 1 is augmented by
    `augmentation.augmenter(augment, seed)` with key `(v, batch)`, so the
    pool is a function of the seed alone. The bottom runs on the fast path
    (`inference.Forward`: compiled torch, jitted JAX, else Keras) at
    `precision`; batches are augmented and extracted one at a time, so no
    augmented copy of the images is kept.
    """
    from kerasimpl.inference import Forward
    from kerasimpl.progress import Progress

    indices = np.asarray(indices)
    forward, aug = Forward(bottom, precision), augmenter(augment, seed)
    out = np.empty((views * len(indices), *bottom.output.shape[1:]), dtype=np.float32)
    progress = Progress(len(out), what, verbose)
    for v in range(views):
        for b, start in enumerate(range(0, len(indices), batch_size)):
            xb = np.asarray(x[indices[start:start + batch_size]])
            if v and aug is not None:
                xb, _ = aug(xb, None, key=(v, b))
            row = v * len(indices) + start
            out[row:row + len(xb)] = forward(np.asarray(xb))
            progress.update(row + len(xb))
    progress.close()
    return out


_MIX_STREAM = 0x6D6978  # "mix": ActivationMixUp's draws apart from `cut_activations`' (seed, view, batch)


class ActivationMixUp:
    """MixUp of cached activations: `mix(x, y, key) -> (x, y)` for an `ArrayDataset`'s `augment`.

    Each row `i` of a batch becomes `lam_i * x_i + (1 - lam_i) * x_p(i)`, its
    one-hot label likewise, with `lam_i ~ Beta(alpha, alpha)` and `p` a
    permutation of the batch: MixUp (Zhang et al., 2018) applied at the cut
    rather than to images, i.e. manifold mixup at one fixed layer (Verma et
    al., 2019). Per-row weights, as `keras.layers.MixUp` draws them. The
    frozen bottom is a fixed function, so mixing its outputs is what mixing
    the top's inputs means; the views stay cached and each epoch pairs them
    anew. `key` (`(epoch, batch)`, which `ArrayDataset` passes) makes every
    draw a function of `(seed, key)` alone, so a resumed run replays it.

    Args:
        alpha: Beta's both parameters, > 0 (small: weights near 0 or 1).
        seed: the run's seed.
    """

    takes_key = True

    def __init__(self, alpha, seed=0):
        if not alpha > 0:
            raise ValueError(f"ActivationMixUp needs alpha > 0. Received: alpha={alpha}")
        self.alpha, self.seed = float(alpha), int(seed)

    def __call__(self, x, y, key):
        y = np.asarray(y)
        if y.ndim != 2:
            raise ValueError(f"ActivationMixUp mixes one-hot labels of shape (batch, classes); serve them with "
                             f"ArrayDataset(num_classes=...). Received labels of shape {y.shape}")
        rng = np.random.default_rng([self.seed, _MIX_STREAM, *(int(k) for k in key)])  # not a view's stream
        lam = rng.beta(self.alpha, self.alpha, size=len(y)).astype(np.float32)
        perm = rng.permutation(len(y))
        x = np.asarray(x, dtype=np.float32)
        mix_x = lam.reshape(-1, *[1] * (x.ndim - 1))
        return mix_x * x + (1 - mix_x) * x[perm], lam[:, None] * y + (1 - lam[:, None]) * y[perm]
