"""Training-time augmentation of uint8 image batches (numpy flip/crop, Keras core's RandAugment/MixUp/CutMix)."""

from __future__ import annotations

import threading

import keras
import numpy as np

AUGMENTATIONS = ("flip", "translate", "randaugment", "mixup", "cutmix")
MIXING = ("mixup", "cutmix")  # mix pairs of images and their labels: need one-hot labels
RANDAUGMENT_FACTOR = 0.5  # Keras' own default; harsh on 32 px images (see `Augmenter`)


def unknown(names) -> list:
    """The names of `names` that are not augmentations: each must be one of `AUGMENTATIONS`, or
    `randaugment=F` with a strength 0 < F <= 1."""
    bad = []
    for name in names:
        kind, _, value = str(name).partition("=")
        if kind not in AUGMENTATIONS or (value and (kind != "randaugment" or not _strength_ok(value))):
            bad.append(name)
    return bad


def _strength_ok(value) -> bool:
    try:
        return 0.0 < float(value) <= 1.0
    except ValueError:
        return False


def randaugment_factor(names):
    """The RandAugment strength `names` asks for (`randaugment`: Keras' default 0.5; `randaugment=F`: F),
    or `None` without RandAugment."""
    for name in names:
        kind, _, value = str(name).partition("=")
        if kind == "randaugment":
            return float(value) if value else RANDAUGMENT_FACTOR
    return None


def augmenter(names, seed=0, pad=4, mixup_alpha=0.2, cutmix_factor=1.0):
    """An `Augmenter` for `names` (from `AUGMENTATIONS`), or `None` if empty."""
    return Augmenter(names, seed, pad, mixup_alpha, cutmix_factor) if names else None


class Augmenter:
    """Augments one uint8 batch: `augmenter(x, y, key=None) -> (x, y)`.

    `flip` (horizontal, p=0.5) and `translate` (random crop of the image
    padded by `pad` pixels with reflection, i.e. shifts of up to +-`pad`)
    run in numpy: on a CPU loader they cost ~1 ms a batch where the Keras
    layers `RandomFlip`/`RandomTranslation` cost ~100 ms (measured on torch,
    2 cores). `randaugment`, `mixup` and `cutmix` are Keras core's
    `RandAugment`, `MixUp(alpha=mixup_alpha)` and `CutMix(factor=cutmix_factor)`
    (keras>=3.9). RandAugment's one `factor` sets every operation's
    strength: Keras' default 0.5 (`randaugment`) means rotations up to
    ±180°, shifts up to half the image and strong solarization, which
    leaves many 32 px CIFAR-10 images unrecognisable; `randaugment=0.1`
    (rotations up to ±36°, shifts up to 10%) keeps them recognisable.
    With `mixup` or `cutmix` the labels must come one-hot
    (`ArrayDataset(num_classes=...)`) and leave mixed, and images leave as
    float32 in [0, 255]; with both, each batch gets one of the two (p=0.5,
    as timm does). Otherwise labels pass through unchanged.

    `key` (`ArrayDataset` passes `(epoch, batch_index)`) makes a batch's
    augmentation a function of `(seed, key)` alone, the Keras layers'
    seed generators included: a resumed run replays exactly what the
    uninterrupted run drew, and loader threads cannot change it. Without a
    key the draws continue one stateful stream.
    """

    takes_key = True

    def __init__(self, names, seed=0, pad=4, mixup_alpha=0.2, cutmix_factor=1.0):
        self.names, self.seed, self.pad = tuple(names), int(seed), int(pad)
        self._rng = np.random.default_rng(self.seed)
        self._lock = threading.Lock()  # Keras layers' seed state is shared by loader threads
        bad = unknown(self.names)
        if bad:
            raise ValueError(f"Unknown augmentation {bad}. Accepted: {', '.join(AUGMENTATIONS)}, and randaugment=F "
                             f"(0 < F <= 1)")
        factor = randaugment_factor(self.names)
        self.rand_augment = (keras.layers.RandAugment(value_range=(0, 255), factor=factor, seed=self.seed)
                             if factor is not None else None)
        self.mixers = []
        if "mixup" in self.names:
            self.mixers.append(keras.layers.MixUp(alpha=mixup_alpha, seed=self.seed))
        if "cutmix" in self.names:
            self.mixers.append(keras.layers.CutMix(factor=cutmix_factor, seed=self.seed))

    def __call__(self, x, y, key=None):
        rng = self._rng if key is None else np.random.default_rng([self.seed, *(int(k) for k in key)])
        x = np.asarray(x)
        if "flip" in self.names:
            flip = rng.random(len(x)) < 0.5
            x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
        if "translate" in self.names:
            x = _random_crop(x, self.pad, rng)
        if self.rand_augment is not None:
            with self._lock:
                self._reseed(self.rand_augment, rng, key)
                x = keras.ops.convert_to_numpy(self.rand_augment(x, training=True))
        if self.mixers:
            y = np.asarray(y)
            if y.ndim != 2:
                raise ValueError(
                    f"mixup/cutmix need one-hot labels of shape (batch, classes); serve them with "
                    f"ArrayDataset(num_classes=...). Received labels of shape {y.shape}"
                )
            mixer = self.mixers[0] if len(self.mixers) == 1 else self.mixers[int(rng.random() < 0.5)]
            with self._lock:
                self._reseed(mixer, rng, key)
                out = mixer({"images": x.astype(np.float32), "labels": y.astype(np.float32)}, training=True)
            x = keras.ops.convert_to_numpy(out["images"])
            y = keras.ops.convert_to_numpy(out["labels"]).astype(np.float32)
        return x, y

    def __getstate__(self):  # picklable for use_multiprocessing loaders
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @staticmethod
    def _reseed(layer, rng, key):
        """Set every seed-generator state of `layer` from `rng` (keyed calls only).

        A preprocessing layer's only variables are its (and its sub-layers')
        `SeedGenerator` states, `[seed, counter]`."""
        if key is None:
            return
        for variable in layer.variables:
            seed = int(rng.integers(1, 2**31 - 1))
            variable.assign(np.asarray([seed, 0], dtype=keras.backend.standardize_dtype(variable.dtype)))


def _random_crop(x, pad, rng):
    n, h, w = x.shape[:3]
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)[None]  # (n, h)
    cols = dx[:, None] + np.arange(w)[None]  # (n, w)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
