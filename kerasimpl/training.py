"""Staged fitting: the stages of one run, written through the caller's `StageFolder`.

A run's stages come from its `RunPlan` (`kerasimpl.plan`): with a frozen
base and cached features, stage 1 fits the head on pooled features computed
ONCE per split (`kerasimpl.features`); without augmentation this gives the
same model as re-running the frozen base every epoch (`cache_features=False`,
the reference experiment's way), in a fraction of the time. The training
configuration and compiling are `kerasimpl.train_config`; augmentation is
`kerasimpl.augmentation`. Nothing here opens a file: a finished stage, a
stage's record and the epoch logs go to the `kerasimpl.run_folder.StageFolder`
the caller passes (a path makes one; `None` trains in memory).
"""

from __future__ import annotations

import time

import keras

from kerasimpl import distributed, models, precise_bn, runtime
# Re-exported: these lived here before the splits (`from kerasimpl.training import augmenter, TrainConfig` works).
from kerasimpl.augmentation import AUGMENTATIONS, MIXING, Augmenter, augmenter  # noqa: F401
from kerasimpl.data import ArrayDataset
from kerasimpl.features import (  # noqa: F401
    cached_features, extract_features, pool_features, split_features, weights_fingerprint,
)
from kerasimpl.run_folder import StageFolder
from kerasimpl.train_config import HEAD_KINDS, TrainConfig, compile_full, compile_head  # noqa: F401


def fit_stage(model, train, val, folder, stage, config, epochs, verbose="auto", extra_callbacks=(), saved_model=None,
              data_parallel=False, lr_schedule=None):
    """`model.fit` with the standard callbacks; returns the training seconds.

    `folder`: a `StageFolder`, a path or `None` (nothing written). `saved_model`: what the best checkpoint
    saves when `model` is a part of it (the top of a split model); default `model`. `data_parallel`: across
    torch processes, train through DDP (`kerasimpl.distributed.data_parallel`;
    `train` then serves this process's slice of each batch). `lr_schedule`: a
    callback setting the learning rate (`callbacks.CosineDecay`) instead of
    `ReduceLROnPlateau`. Only the
    writing process (rank 0) writes the history, checkpoints and backups.

    Raises:
        FloatingPointError: the loss became NaN (training stopped there).
    """
    store = StageFolder.of(folder)
    cbs, timer, nan_guard = store.callbacks(stage, dataset=train, patience=config.patience, saved_model=saved_model,
                                            lr_schedule=lr_schedule)
    # shuffle=False: ArrayDataset shuffles itself, by (seed, epoch); Keras would
    # also permute the batch order from the global RNG, which a resume cannot replay.
    with distributed.data_parallel(model, data_parallel) as in_step:
        model.fit(train, validation_data=val, epochs=epochs, callbacks=in_step + cbs + list(extra_callbacks),
                  verbose=verbose, shuffle=False)
    if nan_guard.fired:
        best = store.file(f"best_{stage}.keras")
        raise FloatingPointError(f"{stage}: loss became NaN; training stopped. " + (
            f"The best model so far is in {best} (if any epoch finished)." if best else "Nothing was saved."))
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
    `folder` (a `kerasimpl.run_folder.StageFolder`, or a path that makes one)
    keeps each finished stage (`<stage>.weights.h5`): a rerun into the same
    folder loads it and skips the stage, and `BackupAndRestore` resumes a
    stage that was killed mid-way; a stage's record (`probe`, `finetune`)
    goes there too. `folder=None` trains in memory and writes nothing.
    `extra_callbacks` run after the standard ones. `features_folder`
    (default `folder`'s path) holds the feature caches, so runs of one base
    (an MLP head and a linear probe) share them.

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
        self.verbose, self.extra_callbacks = verbose, extra_callbacks
        self.store = StageFolder.of(folder)
        self.features_folder = features_folder or self.store.path
        self.seconds = self.store.seconds

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
        if distributed.agree(self.store.finished(name), f"whether stage {name} is done"):
            self.store.restore(name, self.model)  # finished in an earlier, interrupted run
            return
        run()
        self.store.finish(name, self.model, self.seconds[name])

    def fit(self, model, train, val, stage, epochs, saved_model=None, data_parallel=False, own_callbacks=()):
        schedule = None
        if stage == "finetune" and self.config.finetune_schedule == "cosine":
            from kerasimpl.callbacks import CosineDecay

            schedule = CosineDecay(self.config.finetune_learning_rate, epochs)
        self.seconds[stage] = fit_stage(model, train, val, self.store, stage, self.config, epochs, self.verbose,
                                        [*own_callbacks, *self.extra_callbacks], saved_model, data_parallel,
                                        lr_schedule=schedule)

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
        self.store.record("probe", {"l2": fit.l2, "grid": list(fit.table)})
        self.store.add_history([{"stage": "probe", "epoch": i, **row} for i, row in enumerate(fit.table)])

    def finetune(self):
        """The top of the base and the head: on cached activations where the model splits, else whole."""
        from kerasimpl import partial

        cfg = self.config
        # Across processes the whole model trains (DDP): the cached activations are not sharded (yet).
        if cfg.finetune_views < 1 or distributed.world().size > 1 or not partial.can_split(self.model, cfg.augment):
            self.full_model("finetune", cfg.finetune_epochs, cfg.finetune_learning_rate)
            self.store.record("finetune", {"mode": "whole model", **self.finetune_settings()})
            return
        self.top_on_activations()

    def finetune_settings(self):
        cfg = self.config
        return {"from": cfg.finetune_from, "top_layers": None if cfg.finetune_from else cfg.finetune_top_layers,
                "learning_rate": cfg.finetune_learning_rate, "epochs": cfg.finetune_epochs,
                "schedule": cfg.finetune_schedule, "label_smoothing": cfg.finetune_label_smoothing,
                "mixup": cfg.finetune_mixup}

    def top_on_activations(self):
        """Fine-tuning as `kerasimpl.partial` splits it: the frozen bottom once per view, the top trained."""
        from kerasimpl import partial
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
        mix = cfg.finetune_mixup  # MixUp of activations: one-hot labels, train and val alike
        classes = data.num_classes if mix else None
        compile_full(top, cfg.finetune_learning_rate, one_hot=bool(mix), label_smoothing=cfg.finetune_label_smoothing)
        m = runtime.batch_multiple()
        train = ViewsDataset(train_acts, data.y_train[split.train], views, batch_size=cfg.batch_size, shuffle=True,
                             seed=cfg.seed, multiple_of=m, num_classes=classes,
                             augment=partial.ActivationMixUp(mix, cfg.seed) if mix else None)
        val = ArrayDataset(val_acts, data.y_train[split.val], cfg.batch_size, multiple_of=m, num_classes=classes)
        self.fit(top, train, val, "finetune", cfg.finetune_epochs, saved_model=self.model)
        self.seconds["finetune"] += extract_seconds
        self.store.record("finetune", {
            "mode": "top on cached activations", "cut_after": cut, "views": views, **self.finetune_settings(),
            "activation_shape": list(train_acts.shape[1:]), "extract_seconds": extract_seconds,
            "trainable_layers": [layer.name for layer in top.layers if layer.trainable_weights]})

    def full_model(self, stage, epochs, learning_rate):
        cfg, data, split = self.config, self.data, self.split
        names, alpha = tuple(cfg.augment), 0.2  # keras.layers.MixUp's alpha, unless fine-tuning's mixup sets it
        if stage == "finetune" and cfg.finetune_mixup:
            names, alpha = names + (() if "mixup" in names else ("mixup",)), cfg.finetune_mixup
        mixing = any(a in MIXING for a in names)
        smoothing = cfg.finetune_label_smoothing if stage == "finetune" else 0.0
        compile_full(self.model, learning_rate, one_hot=mixing, label_smoothing=smoothing)
        kw = {"workers": cfg.workers} if cfg.workers > 1 else {}
        classes = len(data.class_names) if mixing else None  # one-hot labels, train and val alike
        # Across torch processes: each loads its slice of every global batch (DDP); validation is whole everywhere.
        train = ArrayDataset(data.x_train, data.y_train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                             augment=augmenter(names, distributed.rank_seed(cfg.seed), mixup_alpha=alpha),
                             indices=split.train,
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
