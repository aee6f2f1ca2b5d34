"""Training: cached-feature head training, end-to-end and fine-tuning stages.

Stage 1 with a frozen base computes the pooled features ONCE per split and
fits the head on them; without augmentation this gives the same model as
re-running the frozen base every epoch (`cache_features=False`, the seed's
way), in a fraction of the time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time

import keras
import numpy as np

from kerasimpl import models
from kerasimpl.artifacts import atomic_path, save_weights, write_json
from kerasimpl.callbacks import standard_callbacks
from kerasimpl.data import ArrayDataset
from kerasimpl.evaluation import predict
from kerasimpl.progress import Progress
from kerasimpl.runtime import batch_multiple

AUGMENTATIONS = ("flip", "translate", "randaugment", "mixup", "cutmix")
MIXING = ("mixup", "cutmix")  # mix pairs of images and their labels: need one-hot labels
HEAD_KINDS = ("mlp", "linear-probe")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train one classifier.

    Attributes:
        epochs: epochs of stage 1 (head on a frozen base, or end to end).
        batch_size: images (or feature rows) per training step.
        inference_batch_size: images per batch of feature extraction and
            evaluation, independent of training; `None`: the measured
            default for the device (`runtime.inference_batch_size`).
        learning_rate: Adam learning rate of stage 1.
        finetune_epochs: epochs of stage 2 (0 skips it).
        finetune_learning_rate: learning rate of stage 2.
        finetune_top_layers: backbone layers unfrozen in stage 2.
        cache_features: stage 1 on cached pooled features (frozen base only).
        augment: augmentations for full-model stages, from `AUGMENTATIONS`.
            `mixup`/`cutmix` switch those stages to one-hot labels and
            categorical cross-entropy; the head stage on cached features
            is never augmented.
        patience: early-stopping patience (epochs).
        seed: seed of initialisation, shuffles and augmentation.
        workers: `PyDataset` workers (threads loading, and decoding image
            files, ahead), also used by feature extraction.
        head_kind: `"mlp"`: the head is trained with Adam (stage `head`);
            `"linear-probe"`: the head (one Dense layer) is L2-regularised
            softmax regression fitted on the cached features with the
            strength chosen on validation (stage `probe`,
            `kerasimpl.probe`; frozen base and cached features only).
        precision: `float32`, `bfloat16` or `float16` (resolved, see
            `kerasimpl.precision`): feature extraction runs the compiled
            program under autocast at it; the model is built and trained
            under the matching Keras dtype policy by the caller
            (`comparison.run_backbone`).
    """

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    finetune_epochs: int = 0
    finetune_learning_rate: float = 1e-5
    finetune_top_layers: int = 20
    cache_features: bool = True
    augment: tuple = ("flip", "translate")
    patience: int = 3
    seed: int = 0
    workers: int = 1
    head_kind: str = "mlp"
    inference_batch_size: int | None = None
    precision: str = "float32"

    @property
    def extract_batch(self) -> int:
        """Images per batch of inference-only passes on this device."""
        from kerasimpl.runtime import inference_batch_size

        return inference_batch_size(self.inference_batch_size)

    def __post_init__(self):
        if self.head_kind not in HEAD_KINDS:
            raise ValueError(f"Unknown head_kind. Received: {self.head_kind!r}. Accepted: {HEAD_KINDS}")
        bad = [a for a in self.augment if a not in AUGMENTATIONS]
        if bad:
            raise ValueError(f"Unknown augmentation {bad}. Accepted: {AUGMENTATIONS}")
        if self.precision not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"precision must be resolved (kerasimpl.precision.resolve). Received: "
                             f"{self.precision!r}. Accepted: float32, bfloat16, float16")
        if self.inference_batch_size is not None and self.inference_batch_size < 1:
            raise ValueError(f"inference_batch_size must be >= 1 or None. Received: {self.inference_batch_size}")
        if self.epochs < 0 or self.finetune_epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs, finetune_epochs must be >= 0 and batch_size >= 1. Received: {self}")


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
    (keras>=3.9). With `mixup` or `cutmix` the labels must come one-hot
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
        self.rand_augment = (keras.layers.RandAugment(value_range=(0, 255), seed=self.seed)
                             if "randaugment" in self.names else None)
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


def compile_full(model, learning_rate, one_hot=False):
    """Adam + cross-entropy on the model's probabilities; `one_hot` for
    one-hot or mixed (MixUp/CutMix) labels, else integer labels."""
    if one_hot:
        loss, accuracy = keras.losses.CategoricalCrossentropy(), keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss, accuracy = keras.losses.SparseCategoricalCrossentropy(), keras.metrics.SparseCategoricalAccuracy(
            name="accuracy")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[accuracy])


def compile_head(head, learning_rate):
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def extract_features(model, x, indices=None, batch_size=64, verbose="auto", native=True, workers=1, what="extract",
                     precision="float32"):
    """Pooled backbone features of `x[indices]` as float32 (N, D), in order.

    On the torch backend (without a distribution) the frozen feature
    extractor runs as a compiled native torch program with BatchNorm folded
    into the convolutions (`kerasimpl.inference`), equal to
    `model.predict` to float tolerance and 1.2-3.4x faster on CPU (docs/benchmarks.md), under autocast at
    `precision` (`kerasimpl.precision`); `native=False`
    or an unsupported layer falls back to `model.predict`. With `workers > 1`
    that many threads load batches ahead (image files decode meanwhile).
    Progress is reported as stage `what` (`kerasimpl.progress`).
    """
    from kerasimpl.inference import predict_batches

    return predict_batches(models.feature_extractor(model), x, batch_size, precision, indices=indices,
                           verbose=verbose, workers=workers, what=what, native=native)


TRIM_EVERY = 64  # batches between returns of freed memory to the OS (`runtime.release_freed_memory`)


def _run_batches(fn, dataset, verbose, workers=1, what="extract"):
    from kerasimpl.runtime import release_freed_memory

    progress = Progress(dataset.num_samples, what, verbose)
    out, done = [], 0
    for i, (batch,) in enumerate(prefetch(dataset, workers)):
        out.append(np.asarray(fn(batch), dtype=np.float32))
        done += len(batch)
        progress.update(done)
        if i % TRIM_EVERY == TRIM_EVERY - 1:
            release_freed_memory()  # else glibc may keep every batch's freed buffers: RSS grows with N
    progress.close()
    return np.concatenate(out)


def prefetch(dataset, workers=1):
    """`dataset[0], dataset[1], ...` in order, `workers` threads loading ahead."""
    if workers <= 1:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    import collections
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque(pool.submit(dataset.__getitem__, i) for i in range(min(2 * workers, len(dataset))))
        nxt = len(pending)
        while pending:
            batch = pending.popleft().result()
            if nxt < len(dataset):
                pending.append(pool.submit(dataset.__getitem__, nxt))
                nxt += 1
            yield batch


def weights_fingerprint(layers_) -> str:
    """sha256 over the weights of `layers_` (identifies a frozen base)."""
    h = hashlib.sha256()
    for layer in layers_:
        for w in layer.weights:
            h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
    return h.hexdigest()


def cached_features(model, x, indices, path, key, batch_size=64, verbose="auto", workers=1, what="extract",
                    precision="float32"):
    """Features from `path` if its key matches `key`, else extracted and saved.

    The cache is written atomically after extraction completes, so an
    interrupted extraction leaves no file a later run could trust.
    """
    if os.path.exists(path):
        with np.load(path) as z:
            if str(z["key"]) == key and len(z["features"]) == len(indices):
                return z["features"]
    feats = extract_features(model, x, indices, batch_size, verbose, workers=workers, what=what, precision=precision)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, features=feats, key=np.asarray(key))
    return feats


def split_features(model, data, x, indices, part, folder, config, verbose="auto", split=None):
    """Pooled features of `x[indices]`, cached in `folder/features_<part>.npz`.

    The cache key holds the frozen base's weights, the data's fingerprint,
    the split and the part, so a changed model, file list or split is
    extracted again.
    """
    key = json.dumps({"base": weights_fingerprint(models.base_layers(model)), "source": data.source,
                      "data": data.fingerprint, "split": split.summary() if split is not None else None,
                      "part": part, "precision": config.precision})
    path = os.path.join(folder, f"features_{part}.npz")
    return cached_features(model, x, indices, path, key, config.extract_batch, verbose, workers=config.workers,
                           what=f"extract {part}", precision=config.precision)


def fit_stage(model, train, val, folder, stage, config, epochs, verbose="auto", extra_callbacks=()):
    """`model.fit` with the standard callbacks; returns the training seconds.

    Raises:
        FloatingPointError: the loss became NaN (training stopped there).
    """
    cbs, timer, nan_guard = standard_callbacks(folder, stage, dataset=train, patience=config.patience)
    # shuffle=False: ArrayDataset shuffles itself, by (seed, epoch); Keras would
    # also permute the batch order from the global RNG, which a resume cannot replay.
    model.fit(train, validation_data=val, epochs=epochs, callbacks=cbs + list(extra_callbacks), verbose=verbose,
              shuffle=False)
    if nan_guard.fired:
        raise FloatingPointError(
            f"{stage}: loss became NaN; training stopped. The best model so far is in "
            f"{os.path.join(folder, f'best_{stage}.keras')} (if any epoch finished)."
        )
    return timer.seconds


def train_classifier(model, data, split, config, folder, verbose="auto", extra_callbacks=(),
                     features_folder=None) -> dict:
    """Train `model` on `data[split]` in stages; return seconds per stage.

    Stage 1 trains the head on cached features when the base is frozen and
    `config.cache_features`, else the whole model with what is trainable.
    Stage 2 (if `config.finetune_epochs`) unfreezes the top of the base.
    A finished stage saves `<stage>.weights.h5`; a rerun in the same folder
    loads it and skips the stage, and `BackupAndRestore` resumes a stage
    that was killed mid-way. `extra_callbacks` run after the standard ones.
    `features_folder` (default `folder`) holds the feature caches, so runs
    of one base (an MLP head and a linear probe) share them.

    Returns:
        Seconds per stage: `extract`, `head`, `probe`, `frozen`, `train`, `finetune`.
    """
    keras.utils.set_random_seed(config.seed)
    return _StagedRun(model, data, split, config, folder, verbose, extra_callbacks, features_folder).run()


class _StagedRun:
    def __init__(self, model, data, split, config, folder, verbose, extra_callbacks, features_folder=None):
        self.model, self.data, self.split, self.config = model, data, split, config
        self.folder, self.verbose, self.extra_callbacks = folder, verbose, extra_callbacks
        self.features_folder = features_folder or folder
        os.makedirs(folder, exist_ok=True)
        self.times_path = os.path.join(folder, "stages.json")
        self.seconds = {}
        if os.path.exists(self.times_path):
            with open(self.times_path) as f:
                self.seconds = json.load(f)

    def run(self):
        cfg = self.config
        frozen = not any(layer.trainable for layer in models.base_layers(self.model) if layer.weights)
        if cfg.head_kind == "linear-probe":
            if not (frozen and cfg.cache_features):
                raise ValueError("A linear probe fits a frozen base's cached features. Received a trainable base "
                                 f"or cache_features={cfg.cache_features}")
            self.stage("probe", self.probe_on_features)
        elif frozen and cfg.cache_features:
            self.stage("head", self.head_on_features)
        else:
            stage = "frozen" if frozen else "train"
            self.stage(stage, lambda: self.full_model(stage, cfg.epochs, cfg.learning_rate))
        if cfg.finetune_epochs:
            models.unfreeze(self.model, top_layers=cfg.finetune_top_layers)
            self.stage("finetune", lambda: self.full_model("finetune", cfg.finetune_epochs, cfg.finetune_learning_rate))
        return self.seconds

    def stage(self, name, run):
        done = os.path.join(self.folder, f"{name}.weights.h5")
        if os.path.exists(done) and name in self.seconds:
            self.model.load_weights(done)  # finished in an earlier, interrupted run
            return
        run()
        save_weights(self.model, done)
        write_json(self.times_path, self.seconds)

    def fit(self, model, train, val, stage, epochs):
        self.seconds[stage] = fit_stage(model, train, val, self.folder, stage, self.config, epochs,
                                        self.verbose, self.extra_callbacks)

    def features(self):
        """Cached pooled features of the train and validation rows."""
        cfg, data, split = self.config, self.data, self.split
        start = time.perf_counter()
        feats = {name: split_features(self.model, data, data.x_train, idx, name, self.features_folder, cfg,
                                      self.verbose, split)
                 for name, idx in (("train", split.train), ("val", split.val))}
        self.seconds["extract"] = time.perf_counter() - start
        return feats

    def head_on_features(self):
        cfg, data, split = self.config, self.data, self.split
        feats = self.features()
        head = self.model.get_layer(models.HEAD)
        compile_head(head, cfg.learning_rate)
        m = batch_multiple()
        train = ArrayDataset(feats["train"], data.y_train[split.train], cfg.batch_size, shuffle=True, seed=cfg.seed,
                             multiple_of=m)
        val = ArrayDataset(feats["val"], data.y_train[split.val], cfg.batch_size, multiple_of=m)
        self.fit(head, train, val, "head", cfg.epochs)

    def probe_on_features(self):
        from kerasimpl.artifacts import write_csv
        from kerasimpl.probe import fit_linear_probe

        data, split = self.data, self.split
        feats = self.features()
        dense = [layer for layer in self.model.get_layer(models.HEAD).layers if layer.weights]
        if len(dense) != 1:
            raise ValueError(f"A linear probe needs a head of one Dense layer (HeadConfig(hidden=())). "
                             f"Received a head with {len(dense)} weighted layers")
        start = time.perf_counter()
        fit = fit_linear_probe(feats["train"], data.y_train[split.train], feats["val"], data.y_train[split.val],
                               data.num_classes)
        dense[0].set_weights([fit.kernel, fit.bias])
        self.seconds["probe"] = time.perf_counter() - start
        write_json(os.path.join(self.folder, "probe.json"), {"l2": fit.l2, "grid": list(fit.table)})
        write_csv(os.path.join(self.folder, "history.csv"),
                  [{"stage": "probe", "epoch": i, **row} for i, row in enumerate(fit.table)])

    def full_model(self, stage, epochs, learning_rate):
        cfg, data, split = self.config, self.data, self.split
        mixing = any(a in MIXING for a in cfg.augment)
        compile_full(self.model, learning_rate, one_hot=mixing)
        kw = {"workers": cfg.workers} if cfg.workers > 1 else {}
        m = batch_multiple()
        classes = len(data.class_names) if mixing else None  # one-hot labels, train and val alike
        train = ArrayDataset(data.x_train, data.y_train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                             augment=augmenter(cfg.augment, cfg.seed), indices=split.train, multiple_of=m,
                             num_classes=classes, **kw)
        val = ArrayDataset(data.x_train, data.y_train, cfg.batch_size, indices=split.val, multiple_of=m,
                           num_classes=classes)
        self.fit(self.model, train, val, stage, epochs)
