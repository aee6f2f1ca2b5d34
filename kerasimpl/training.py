"""Staged fitting: the training configuration, compiling, and the stages of one run.

A run's stages come from its `RunPlan` (`kerasimpl.plan`): with a frozen
base and cached features, stage 1 fits the head on pooled features computed
ONCE per split (`kerasimpl.features`); without augmentation this gives the
same model as re-running the frozen base every epoch (`cache_features=False`,
the reference experiment's way), in a fraction of the time. Augmentation lives in
`kerasimpl.augmentation`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import keras

from kerasimpl import distributed, models, precise_bn, runtime
from kerasimpl.backbones import Finetuning
from kerasimpl.precise_bn import DEFAULT_IMAGES as PRECISE_BN_IMAGES
from kerasimpl.artifacts import save_weights, write_json
# Re-exported: these lived here before the split (`from kerasimpl.training import augmenter` keeps working).
from kerasimpl.augmentation import AUGMENTATIONS, MIXING, Augmenter, augmenter  # noqa: F401
from kerasimpl.callbacks import standard_callbacks
from kerasimpl.data import ArrayDataset
from kerasimpl.features import (  # noqa: F401
    cached_features, extract_features, pool_features, split_features, weights_fingerprint,
)

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
        finetune_top_layers: backbone layers unfrozen in stage 2 (when
            `finetune_from` is `None`).
        finetune_from: the block from which stage 2 unfreezes the backbone
            (`models.unfreeze(from_block=...)`); `None`: the last
            `finetune_top_layers` layers. The defaults of these four fields
            are the generic `backbones.Finetuning()`; a comparison row takes
            its backbone's (`comparison.row_setup`).
        finetune_views: with a frozen bottom (`kerasimpl.partial`), stage 2
            trains the top on cached activations of this many copies of
            each training image (view 0 unaugmented, the others augmented
            by `augment`); epoch e uses view `e mod finetune_views`.
            `0`: always fine-tune the whole model (the frozen bottom runs
            in every step).
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
        precise_bn: training images (a fixed sample of the split, unaugmented)
            over which the statistics of trainable BatchNormalization layers
            are re-estimated before every validation and at the end of a
            stage that updates them (`kerasimpl.precise_bn`); `0` keeps
            Keras' moving averages. Frozen BatchNormalization (frozen bases,
            fine-tuning) is never touched.
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
    finetune_learning_rate: float = Finetuning.learning_rate
    finetune_top_layers: int = Finetuning.top_layers
    finetune_views: int = Finetuning.views
    finetune_from: str | None = Finetuning.unfreeze_from
    cache_features: bool = True
    augment: tuple = ("flip", "translate")
    patience: int = 3
    seed: int = 0
    workers: int = 1
    head_kind: str = "mlp"
    inference_batch_size: int | None = None
    precision: str = "float32"
    precise_bn: int = PRECISE_BN_IMAGES

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
        if self.precise_bn < 0:
            raise ValueError(f"precise_bn must be >= 0 (images; 0: off). Received: {self.precise_bn}")
        if self.epochs < 0 or self.finetune_epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs, finetune_epochs must be >= 0 and batch_size >= 1. Received: {self}")


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


def fit_stage(model, train, val, folder, stage, config, epochs, verbose="auto", extra_callbacks=(), saved_model=None,
              data_parallel=False):
    """`model.fit` with the standard callbacks; returns the training seconds.

    `saved_model`: what the best checkpoint saves when `model` is a part of
    it (the top of a split model); default `model`. `data_parallel`: across
    torch processes, train through DDP (`kerasimpl.distributed.data_parallel`;
    `train` then serves this process's slice of each batch). Only the
    writing process (rank 0) writes the history, checkpoints and backups.

    Raises:
        FloatingPointError: the loss became NaN (training stopped there).
    """
    cbs, timer, nan_guard = standard_callbacks(folder, stage, dataset=train, patience=config.patience,
                                               saved_model=saved_model, writes=distributed.is_writer())
    # shuffle=False: ArrayDataset shuffles itself, by (seed, epoch); Keras would
    # also permute the batch order from the global RNG, which a resume cannot replay.
    with distributed.data_parallel(model, data_parallel) as in_step:
        model.fit(train, validation_data=val, epochs=epochs, callbacks=in_step + cbs + list(extra_callbacks),
                  verbose=verbose, shuffle=False)
    if nan_guard.fired:
        raise FloatingPointError(
            f"{stage}: loss became NaN; training stopped. The best model so far is in "
            f"{os.path.join(folder, f'best_{stage}.keras')} (if any epoch finished)."
        )
    return timer.seconds


def train_classifier(model, data, split, config, folder, verbose="auto", extra_callbacks=(),
                     features_folder=None, plan=None) -> dict:
    """Train `model` on `data[split]` in the stages of its plan; return seconds per stage.

    `plan` (a `kerasimpl.plan.RunPlan`, from `plan_for(run, config)`) names
    the stages; without it they are read from the model and `config`
    (`plan_from_model`): the head on cached features when the base is frozen
    and `config.cache_features` (a linear probe with
    `head_kind="linear-probe"`), else the whole model with what is
    trainable (`frozen` or `train`); then `finetune` (if
    `config.finetune_epochs`) unfreezes the top of the base.
    A finished stage saves `<stage>.weights.h5`; a rerun in the same folder
    loads it and skips the stage, and `BackupAndRestore` resumes a stage
    that was killed mid-way. `extra_callbacks` run after the standard ones.
    `features_folder` (default `folder`) holds the feature caches, so runs
    of one base (an MLP head and a linear probe) share them.

    Returns:
        Seconds per stage, one key per name in `plan.stages`: `extract`,
        `head`, `probe`, `frozen`, `train`, `finetune`.

    Raises:
        ValueError: a contradictory set-up (see `plan_for`), or a `plan`
            the model and `config` do not match.
    """
    from kerasimpl.plan import plan_from_model

    derived = plan_from_model(model, config)
    if plan is not None and (plan.stages, plan.frozen_base, plan.train_top) != (
            derived.stages, derived.frozen_base, derived.train_top):
        raise ValueError(f"The plan does not match the model and config. Received a plan with stages {plan.stages} "
                         f"(frozen_base={plan.frozen_base}, train_top={plan.train_top}); the model and config give "
                         f"{derived.stages} (frozen_base={derived.frozen_base}, train_top={derived.train_top}). "
                         "Build the model from the plan (comparison.build_model)")
    keras.utils.set_random_seed(config.seed)
    distributed.broadcast_weights(model)  # across processes: all start from rank 0's weights
    return _StagedRun(model, data, split, config, folder, verbose, extra_callbacks, features_folder).run(
        plan or derived)


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

    def run(self, plan):
        cfg = self.config
        fits = {
            "head": self.head_on_features,
            "probe": self.probe_on_features,
            "frozen": lambda: self.full_model("frozen", cfg.epochs, cfg.learning_rate),
            "train": lambda: self.full_model("train", cfg.epochs, cfg.learning_rate),
            "finetune": self.finetune,
        }
        for name in plan.fit_stages:  # `extract` runs inside `head` / `probe`, which fit on its features
            if name == "finetune":  # also when the stage is read back: the model's trainability is the run's
                models.unfreeze(self.model, **({"from_block": cfg.finetune_from} if cfg.finetune_from else
                                               {"top_layers": cfg.finetune_top_layers}))
            self.stage(name, fits[name])
        return {name: self.seconds[name] for name in plan.stages}

    def stage(self, name, run):
        done = os.path.join(self.folder, f"{name}.weights.h5")
        if distributed.agree(os.path.exists(done) and name in self.seconds, f"whether stage {name} is done"):
            self.model.load_weights(done)  # finished in an earlier, interrupted run
            return
        run()
        if distributed.is_writer():
            save_weights(self.model, done)
            write_json(self.times_path, self.seconds)

    def fit(self, model, train, val, stage, epochs, saved_model=None, data_parallel=False, own_callbacks=()):
        self.seconds[stage] = fit_stage(model, train, val, self.folder, stage, self.config, epochs, self.verbose,
                                        [*own_callbacks, *self.extra_callbacks], saved_model, data_parallel)

    def features(self):
        """Cached pooled features of the train and validation rows."""
        cfg, data, split = self.config, self.data, self.split
        start = time.perf_counter()
        pool = pool_features(self.model, data, "train", self.features_folder, cfg, self.verbose)  # read once
        feats = {"train": pool[split.train], "val": pool[split.val]}
        self.seconds["extract"] = time.perf_counter() - start
        return feats

    def head_on_features(self):
        cfg, data, split = self.config, self.data, self.split
        feats = self.features()
        head = self.model.get_layer(models.HEAD)
        compile_head(head, cfg.learning_rate)
        # Replicated on torch: every process fits the (cheap) head on all the gathered features, identically.
        feed = distributed.loader_options(split_batches=False)
        train = ArrayDataset(feats["train"], data.y_train[split.train], cfg.batch_size, shuffle=True, seed=cfg.seed,
                             **feed)
        val = ArrayDataset(feats["val"], data.y_train[split.val], cfg.batch_size, **feed)
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
        if not distributed.is_writer():
            return
        write_json(os.path.join(self.folder, "probe.json"), {"l2": fit.l2, "grid": list(fit.table)})
        write_csv(os.path.join(self.folder, "history.csv"),
                  [{"stage": "probe", "epoch": i, **row} for i, row in enumerate(fit.table)])

    def finetune(self):
        """The top of the base and the head: on cached activations where the model splits, else whole."""
        from kerasimpl import partial

        cfg = self.config
        # Across processes the whole model trains (DDP): the cached activations are not sharded (yet).
        if cfg.finetune_views < 1 or distributed.world().size > 1 or not partial.can_split(self.model, cfg.augment):
            return self.full_model("finetune", cfg.finetune_epochs, cfg.finetune_learning_rate)
        self.top_on_activations()

    def top_on_activations(self):
        """Fine-tuning as `kerasimpl.partial` splits it: the frozen bottom once per view, the top trained."""
        from kerasimpl import partial
        from kerasimpl.artifacts import write_json
        from kerasimpl.data import ViewsDataset

        cfg, data, split = self.config, self.data, self.split
        bottom, top, cut = partial.split_at_trainable(self.model)
        views = cfg.finetune_views if cfg.augment else 1
        start = time.perf_counter()
        common = dict(batch_size=cfg.extract_batch, precision=cfg.precision, verbose=self.verbose)
        train_acts = partial.cut_activations(bottom, data.x_train, split.train, cfg.augment, views, cfg.seed,
                                             what="extract cut train", **common)
        val_acts = partial.cut_activations(bottom, data.x_train, split.val, what="extract cut val", **common)
        extract_seconds = time.perf_counter() - start
        compile_full(top, cfg.finetune_learning_rate)
        m = runtime.batch_multiple()
        train = ViewsDataset(train_acts, data.y_train[split.train], views, batch_size=cfg.batch_size, shuffle=True,
                             seed=cfg.seed, multiple_of=m)
        val = ArrayDataset(val_acts, data.y_train[split.val], cfg.batch_size, multiple_of=m)
        self.fit(top, train, val, "finetune", cfg.finetune_epochs, saved_model=self.model)
        self.seconds["finetune"] += extract_seconds
        write_json(os.path.join(self.folder, "finetune.json"), {
            "mode": "top on cached activations", "cut_after": cut, "views": views,
            "activation_shape": list(train_acts.shape[1:]), "extract_seconds": extract_seconds,
            "trainable_layers": [layer.name for layer in top.layers if layer.trainable_weights]})

    def full_model(self, stage, epochs, learning_rate):
        cfg, data, split = self.config, self.data, self.split
        mixing = any(a in MIXING for a in cfg.augment)
        compile_full(self.model, learning_rate, one_hot=mixing)
        kw = {"workers": cfg.workers} if cfg.workers > 1 else {}
        classes = len(data.class_names) if mixing else None  # one-hot labels, train and val alike
        # Across torch processes: each loads its slice of every global batch (DDP); validation is whole everywhere.
        train = ArrayDataset(data.x_train, data.y_train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                             augment=augmenter(cfg.augment, distributed.rank_seed(cfg.seed)), indices=split.train,
                             num_classes=classes, **distributed.loader_options(split_batches=True), **kw)
        val = ArrayDataset(data.x_train, data.y_train, cfg.batch_size, indices=split.val, num_classes=classes,
                           **distributed.loader_options(split_batches=False))
        self.fit(self.model, train, val, stage, epochs, data_parallel=True, own_callbacks=self.precise_statistics())

    def precise_statistics(self):
        """`[PreciseBatchNorm]` when this stage trains BatchNormalization statistics and `precise_bn` > 0."""
        cfg = self.config
        if not cfg.precise_bn or not precise_bn.reestimated_batchnorms(self.model):
            return []
        rows = precise_bn.sample(self.split.train, cfg.precise_bn, cfg.seed)
        return [precise_bn.PreciseBatchNorm(self.data.x_train, rows, cfg.batch_size)]
