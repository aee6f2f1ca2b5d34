"""What one run does, decided once: its stages, frozen or not, cached features, evaluation path.

A `RunPlan` is built ONCE from the resolved configuration (`plan_for(run,
config)`: a `comparison.BackboneRun` and a `training.TrainConfig`) and read
by everything after: the model build and training (`training.train_classifier`),
evaluation (`comparison.evaluate`), the result's `trained` column and
seconds (`comparison.run_backbone`) and the `compare` CLI. A contradictory
configuration (a linear probe on a trainable base, ...) is an error here,
before anything is built.

The kinds of run (`stages`):

| set-up | stages | evaluation |
| --- | --- | --- |
| frozen pretrained base, MLP head on cached features | `extract, head` | cached features + head |
| the same, then the top of the base fine-tuned | `extract, head, finetune` | fresh features + head |
| linear probe on the cached features | `extract, probe` | cached features + head |
| frozen base re-run every epoch (`cache_features=False`) | `frozen` (`, finetune`) | fresh |
| frozen features, the kept ImageNet top trained (AlexNet `lastlayer`) | `train` (`, finetune`) | fresh |
| random or from-scratch base, end to end | `train` | fresh |
"""

from __future__ import annotations

import dataclasses

# Every stage name a plan may hold (also the `stage` column of history.csv).
STAGES = ("extract", "head", "probe", "frozen", "train", "finetune")
CACHED_EVAL = "cached pooled features + head"
FRESH_EVAL = "pooled features (fresh) + head"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The stages of one run and what follows from them.

    Attributes:
        stages: stage names in order, from `STAGES`: `("extract", "head")`,
            `("extract", "head", "finetune")`, `("extract", "probe")`,
            `("frozen",)`, `("frozen", "finetune")`, `("train",)`,
            `("train", "finetune")`. `extract` is the pooled-feature
            extraction the `head`/`probe` stage fits on (its seconds are
            measured apart; it saves no weights of its own).
        frozen_base: the backbone is built frozen (except a kept top that
            `train_top` trains); `False`: trained end to end.
        train_top: the kept ImageNet top's layers are trained on the frozen
            features (`BackboneRun.train_top_hidden`, AlexNet's `lastlayer`).
        cache_features: the first stage fits on cached pooled features.
        eval_path: how test/validation probabilities are computed:
            `CACHED_EVAL` (cached pooled features + head: nothing changed the
            base after extraction) or `FRESH_EVAL`.
        description: what was trained, in words (the `trained` column).
    """

    stages: tuple
    frozen_base: bool
    train_top: bool
    cache_features: bool
    eval_path: str
    description: str

    def __post_init__(self):
        bad = [s for s in self.stages if s not in STAGES]
        if not self.stages or bad:
            raise ValueError(f"A plan's stages come from {STAGES}. Received: {self.stages}")

    @property
    def fit_stages(self) -> tuple:
        """The stages that train and save weights (all but `extract`)."""
        return tuple(s for s in self.stages if s != "extract")

    @property
    def finetune(self) -> bool:
        return "finetune" in self.stages

    @property
    def probe(self) -> bool:
        return "probe" in self.stages

    @property
    def can_probe(self) -> bool:
        """A linear probe of the same base fits this run's cached frozen features."""
        return self.frozen_base and not self.train_top and self.cache_features

    def result_seconds(self, seconds) -> dict:
        """Seconds per stage (what `train_classifier` returns) as a result's keys.

        `head_seconds` is the first fitting stage's on a frozen base (`head`,
        `probe` or `frozen`), `train_stage_seconds` the `train` stage's.
        """
        first = self.fit_stages[0]
        get = lambda name: float(seconds.get(name, 0.0)) if name in self.stages else 0.0  # noqa: E731
        return {
            "train_seconds": float(sum(seconds.get(s, 0.0) for s in self.stages)),
            "extract_seconds": get("extract"),
            "head_seconds": get(first) if first in ("head", "probe", "frozen") else 0.0,
            "train_stage_seconds": get("train"),
            "finetune_seconds": get("finetune"),
        }

    def to_dict(self) -> dict:
        """JSON-ready, for `result.json`."""
        return {**dataclasses.asdict(self), "stages": list(self.stages)}


def plan_for(run, config) -> RunPlan:
    """The plan of `run` (a `comparison.BackboneRun`) trained with `config` (a `training.TrainConfig`).

    Raises:
        ValueError: a contradictory set-up, naming what was received and what
            is accepted: a linear probe on a trainable base, without cached
            features or followed by fine-tuning; a trained top without a kept
            top, or on a base trained end to end anyway.
    """
    if run.train_top_hidden and not run.keep_top_hidden:
        raise ValueError(f"train_top_hidden trains the kept ImageNet top: it needs keep_top_hidden=True. Received: "
                         f"{run.backbone}, keep_top_hidden={run.keep_top_hidden}")
    if run.train_top_hidden and run.end_to_end:
        raise ValueError(f"train_top_hidden trains the kept top on a FROZEN pretrained base. Received: {run.backbone} "
                         f"with weights={run.weights!r}, which is trained end to end. Accepted: pretrained weights "
                         "(imagenet or a file), or train_top_hidden=False")
    return _plan(frozen_base=not run.end_to_end, train_top=run.train_top_hidden, config=config,
                 keep_top_hidden=run.keep_top_hidden, what=f"{run.backbone} (weights={run.weights!r})")


def plan_from_model(model, config) -> RunPlan:
    """The plan `training.train_classifier` follows when given a model alone.

    Read from the backbone's trainability: no weighted base layer trainable
    is a frozen base; some (not all) is a frozen base with its top trained;
    all is end to end. The description cannot tell a kept ImageNet top
    apart, so it never names one.
    """
    from kerasimpl import models

    weighted = [layer for layer in models.base_layers(model) if layer.weights]
    trainable = [layer for layer in weighted if layer.trainable]
    frozen = len(trainable) < len(weighted) or not weighted
    return _plan(frozen_base=frozen, train_top=frozen and bool(trainable), config=config, keep_top_hidden=False,
                 what=f"model {model.name} ({len(trainable)} of {len(weighted)} weighted base layers trainable)")


def _plan(frozen_base, train_top, config, keep_top_hidden, what) -> RunPlan:
    finetune = ("finetune",) if config.finetune_epochs else ()
    cached = frozen_base and not train_top and config.cache_features
    if config.head_kind == "linear-probe":
        if not cached:
            raise ValueError(f"A linear probe fits a frozen base's cached features. Received: {what}, "
                             f"train_top={train_top}, cache_features={config.cache_features}. Accepted: a frozen "
                             "pretrained base (no trained top) with cache_features=True")
        if finetune:
            raise ValueError(f"A linear probe measures the frozen features; fine-tuning after it would change them. "
                             f"Received: finetune_epochs={config.finetune_epochs}. Accepted: finetune_epochs=0")
        return RunPlan(("extract", "probe"), True, False, True, CACHED_EVAL, "linear probe")
    suffix = " + fine-tune" if finetune else ""
    if not frozen_base:
        own = " (own ImageNet-style classifier)" if keep_top_hidden else ""
        return RunPlan(("train", *finetune), False, False, False, FRESH_EVAL, "end-to-end" + own + suffix)
    if train_top:
        return RunPlan(("train", *finetune), True, True, False, FRESH_EVAL,
                       "frozen features + pretrained top trained, last layer new" + suffix)
    kind = "frozen base" + (" + kept top hidden" if keep_top_hidden else "") + suffix
    if cached:
        return RunPlan(("extract", "head", *finetune), True, False, True, FRESH_EVAL if finetune else CACHED_EVAL,
                       kind)
    return RunPlan(("frozen", *finetune), True, False, False, FRESH_EVAL, kind)


def row_config(run, config):
    """`config` with the options that do not apply to `run`'s kind of row dropped.

    The `compare` CLI's options apply to every row; fine-tuning (the top of
    a frozen pretrained base) does not apply to a base trained end to end
    or to a linear probe, so those rows get `finetune_epochs=0`.
    """
    if run.end_to_end or config.head_kind == "linear-probe":
        return dataclasses.replace(config, finetune_epochs=0)
    return config
