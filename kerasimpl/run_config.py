"""A comparison's options: one frozen, typed `RunConfig`, every default here, checked once when it is made.

`experiments.compare` builds it at the command line (preset, then flags) and
`kerasimpl.comparison_run.run_comparison` takes it; nothing below the
command line sees a flag or a dict of options. What a run decides for itself
(the inference batch, the loader threads, a random checkpoint's path) comes
back as a new `RunConfig` (`dataclasses.replace`), never by mutation.

Errors are `ConfigError`s: their message names fields as `{field}`
placeholders, rendered as the field's name by `str()` and as its flag by the
command line (`ConfigError.render`), so the library speaks of
`finetune_learning_rate` and the CLI of `--finetune-lr`.

`RunConfig.record()` is what `config.json` holds and what resuming a run
folder compares (`comparison_checks.check_resume`).
"""

from __future__ import annotations

import dataclasses
import string

from kerasimpl.backbones import SCHEDULES, get_spec, list_backbones
from kerasimpl.distributed import DEFAULT_TIMEOUT_S
from kerasimpl.precise_bn import DEFAULT_IMAGES as PRECISE_BN_IMAGES
from kerasimpl.rows import parse_row, pretrained_backbones

RANDOM_CHECKPOINT = "random-checkpoint"  # weights value: a random checkpoint (e.g. AlexNet's .pth) made in the run folder
PRECISIONS = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A bad option. `template` names fields as `{field}` (`str.format` syntax: a received value goes in
    through `quote`); `fields` lists them.

    `str(error)` names the fields as they are (`finetune_top_layers`);
    `error.render(name)` with a command line's `name(field) -> "--flag"`.
    """

    def __init__(self, template):
        self.template = template
        try:
            self.fields = tuple(f for _, f, _, _ in string.Formatter().parse(template) if f)
        except ValueError:  # an unquoted brace: the message as written, never a second error
            self.fields = ()
        super().__init__(self.render(lambda field: field))

    def render(self, name) -> str:
        try:
            return self.template.format(**{f: name(f) for f in self.fields})
        except (KeyError, IndexError, ValueError):
            return self.template


def quote(value) -> str:
    """`value` as text for a `ConfigError` template (its braces doubled)."""
    return str(value).replace("{", "{{").replace("}", "}}")


def at_least(field, value, low):
    """`ConfigError` unless `value` is None or >= `low`."""
    if value is not None and value < low:
        raise ConfigError(f"{{{field}}} must be >= {low}. Received: {value}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The options of one comparison (`experiments.compare`), resolved and checked.

    Attributes:
        backbones: the rows, `NAME` or `NAME:VARIANT` (`comparison.ROW_VARIANTS`).
        data: the data source (`kerasimpl.data.load_dataset`): `cifar10`,
            `synthetic`, `tfds:NAME` or a path.
        out: the run folder.
        preset: the preset's name, recorded and used for the plots' folder.
        weights: `"imagenet"`, `None` (random), a weights file, or
            `RANDOM_CHECKPOINT` (a seeded random checkpoint in the backbone's
            checkpoint format, written into the run folder).
        image_size: the size pretrained families see (`None`: each backbone's own).
        alpha: MobileNets' width multiplier (`None`: the builder's).
        epochs, batch_size, learning_rate: the head (or end-to-end) stage;
            `batch_size` is the global batch under `distribute`.
        finetune_epochs: epochs of fine-tuning (0: frozen; `NAME:finetune`
            rows: the backbone's registry default).
        finetune_from, finetune_top_layers, finetune_learning_rate,
            finetune_views, finetune_schedule, finetune_label_smoothing,
            finetune_mixup: override the backbone's registry defaults
            (`backbones.Finetuning`; `None`: keep them). `finetune_from` and
            `finetune_top_layers` exclude each other.
        val_fraction: the stratified validation share of the training pool.
        seed, seeds: rows are trained with seeds `seed .. seed + seeds - 1`.
        augment: augmentations of full-model stages (`augmentation.AUGMENTATIONS`).
        cache_features: frozen rows train their head on cached features.
        precise_bn: images for re-estimating trainable BatchNormalization
            statistics (`kerasimpl.precise_bn`; 0: off).
        hidden, dropout: the dense head.
        keep_top_hidden: keep the ImageNet top's hidden layer (MobileNetV3, AlexNet).
        linear_probe: also fit a linear probe per frozen row.
        workers: `PyDataset` threads (`None`: decided from the data source).
        inference_batch_size: images per extraction / evaluation batch
            (`None`: the device's measured default).
        distribute, distribute_timeout: data parallelism over the run's
            processes (`kerasimpl.distributed`), and torch's collective timeout.
        tune: random-search trials per backbone (0: off).
        saliency, saliency_method: the N-image, every-model saliency figure.
        gradcam_gallery, gallery_occlusion: per model, Grad-CAM of N test
            images, with the occlusion study beside it.
        precision: what ran (`float32`, `bfloat16`, `float16`);
            `precision_requested`: what was asked (may be `auto`).
        data_size, classes, test_fraction: how the data is loaded
            (`kerasimpl.data.load_dataset`).
        weights_note: what stood in for the weights (decided by the run).
    """

    backbones: tuple
    data: str
    out: str
    preset: str = "full"
    weights: str | None = "imagenet"
    image_size: int | None = None
    alpha: float | None = None
    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 1e-3
    finetune_epochs: int = 0
    finetune_from: str | None = None
    finetune_top_layers: int | None = None
    finetune_learning_rate: float | None = None
    finetune_views: int | None = None
    finetune_schedule: str | None = None
    finetune_label_smoothing: float | None = None
    finetune_mixup: float | None = None
    val_fraction: float = 0.2
    seed: int = 0
    seeds: int = 1
    augment: tuple = ("flip", "translate")
    cache_features: bool = True
    precise_bn: int = PRECISE_BN_IMAGES
    hidden: tuple = (256,)
    dropout: float = 0.3
    keep_top_hidden: bool = False
    linear_probe: bool = False
    workers: int | None = None
    inference_batch_size: int | None = None
    distribute: bool = False
    distribute_timeout: int = DEFAULT_TIMEOUT_S
    tune: int = 0
    saliency: int = 0
    saliency_method: str = "gradcam"
    gradcam_gallery: int = 0
    gallery_occlusion: bool = False
    precision: str = "float32"
    precision_requested: str = "float32"
    data_size: int | None = None
    classes: str | None = None
    test_fraction: float = 0.2
    weights_note: str | None = None

    def __post_init__(self):
        for field in ("backbones", "augment", "hidden"):  # lists in, tuples kept: the record is immutable
            object.__setattr__(self, field, tuple(getattr(self, field)))
        object.__setattr__(self, "backbones", tuple(str(b).strip().lower() for b in self.backbones))
        _check(self)

    @classmethod
    def default(cls, field):
        """The default of `field` (the one place defaults live).

        Raises:
            ValueError: `field` is required (`backbones`, `data`, `out`) or not a field.
        """
        default = getattr(cls.__dataclass_fields__.get(field), "default", dataclasses.MISSING)
        if default is dataclasses.MISSING:
            raise ValueError(f"RunConfig.{field} has no default. Fields with one: "
                             f"{', '.join(f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING)}")
        return default

    def record(self) -> dict:
        """The options as JSON-ready values (`config.json`)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @property
    def seed_list(self) -> range:
        return range(self.seed, self.seed + self.seeds)


def finetuning(name, options):
    """Backbone `name`'s fine-tuning defaults (`backbones.Finetuning`) with the overrides of `options` (a
    `RunConfig`: `finetune_top_layers`, `finetune_from`, `finetune_learning_rate`, `finetune_views`,
    `finetune_schedule`, `finetune_label_smoothing`, `finetune_mixup`; `None`:
    the default) applied: a layer count replaces the default block, a block replaces it too.

    Raises:
        ConfigError: both a layer count and a block are given.
    """
    tune = get_spec(name).finetune
    layers, block = options.finetune_top_layers, options.finetune_from
    if layers is not None and block is not None:
        raise ConfigError("{finetune_top_layers} and {finetune_from} both say where fine-tuning starts. "
                          f"Received: {layers} and {quote(repr(block))}. Accepted: one of them")
    if layers is not None:
        tune = dataclasses.replace(tune, unfreeze_from=None, top_layers=int(layers))
    elif block is not None:
        tune = dataclasses.replace(tune, unfreeze_from=str(block))
    for key, field in (("finetune_learning_rate", "learning_rate"), ("finetune_views", "views"),
                       ("finetune_schedule", "schedule"), ("finetune_label_smoothing", "label_smoothing"),
                       ("finetune_mixup", "mixup")):
        if getattr(options, key) is not None:
            tune = dataclasses.replace(tune, **{field: getattr(options, key)})
    return tune


def finetuning_record(options) -> dict:
    """The fine-tuning settings each row of `options` runs with (`finetuning`, without `measured`), by row,
    for the rows that fine-tune: what `config.json` keeps, so that a run folder is resumed only with the
    settings it started with, even where the registry's defaults changed in between."""
    record = {}
    for row in options.backbones:
        name, variant = parse_row(row)
        if variant == "finetune" or options.finetune_epochs:
            tune = dataclasses.asdict(finetuning(name, options))
            tune.pop("measured")
            record[row] = {**tune, "epochs": options.finetune_epochs or tune["epochs"]}
    return record


def _check(c: RunConfig):
    """Fail early, naming the bad field and what is accepted (before any folder is made)."""
    from kerasimpl.augmentation import AUGMENTATIONS, unknown

    if not c.data:
        raise ConfigError("{data} names no data source. Received: " + quote(repr(c.data)))
    if not c.backbones:
        raise ConfigError("{backbones} names no backbone. Received: an empty list")
    rows = [parse_row(b) for b in c.backbones]  # listing the accepted names and variants
    if len(set(rows)) != len(rows):
        raise ConfigError(f"A row appears twice in {{backbones}}. Received: {','.join(c.backbones)}")
    if c.tune and c.distribute:
        raise ConfigError(f"{{tune}} runs its trials in one process: it does not combine with {{distribute}}. "
                          f"Received: tune {c.tune} with distribute")
    for field, low in (("epochs", 1), ("batch_size", 1), ("seeds", 1), ("finetune_epochs", 0), ("saliency", 0),
                       ("finetune_top_layers", 1), ("finetune_views", 0), ("inference_batch_size", 1),
                       ("precise_bn", 0), ("tune", 0), ("gradcam_gallery", 0), ("workers", 1)):
        at_least(field, getattr(c, field), low)
    for field in ("learning_rate", "finetune_learning_rate"):
        value = getattr(c, field)
        if value is not None and not value > 0:
            raise ConfigError(f"{{{field}}} must be > 0. Received: {value}")
    if c.finetune_schedule is not None and c.finetune_schedule not in SCHEDULES:
        raise ConfigError(f"Unknown {{finetune_schedule}}. Received: {quote(repr(c.finetune_schedule))}. "
                          f"Accepted: {', '.join(SCHEDULES)}")
    if c.finetune_label_smoothing is not None and not 0 <= c.finetune_label_smoothing < 1:
        raise ConfigError(f"{{finetune_label_smoothing}} must be in [0, 1). Received: {c.finetune_label_smoothing}")
    if c.finetune_mixup is not None and not 0 <= c.finetune_mixup < float("inf"):
        raise ConfigError(f"{{finetune_mixup}} (MixUp's alpha) must be finite and >= 0, 0 for none. "
                          f"Received: {c.finetune_mixup}")
    for field in ("val_fraction", "test_fraction"):
        if not 0 < getattr(c, field) < 1:
            raise ConfigError(f"{{{field}}} must be between 0 and 1. Received: {getattr(c, field)}")
    if not 0 <= c.dropout < 1:
        raise ConfigError(f"{{dropout}} must be in [0, 1). Received: {c.dropout}")
    bad = unknown(c.augment)
    if bad:
        raise ConfigError(f"Unknown augmentation in {{augment}}: {quote(', '.join(bad))}. Accepted: "
                          f"{', '.join(AUGMENTATIONS)}, randaugment=F (its strength, 0 < F <= 1), or none")
    if c.precision not in PRECISIONS:
        raise ConfigError(f"{{precision}} must be resolved (kerasimpl.precision.resolve). Received: "
                          f"{c.precision!r}. Accepted: {', '.join(PRECISIONS)}")
    for name, variant in rows:  # the fine-tuning options against each row's backbone, before anything runs
        finetuning(name, c)
    pretrained = pretrained_backbones(c.backbones)
    if any(v == "lastlayer" for _, v in rows) and c.weights is None:
        raise ConfigError("NAME:lastlayer keeps pretrained layers: it needs {weights} imagenet or a weights "
                          "file. Received: none")
    if c.saliency:
        from kerasimpl.saliency import method_options

        method_options(c.saliency_method)  # ValueError listing the accepted methods
    if c.gallery_occlusion and not c.gradcam_gallery:
        raise ConfigError("{gallery_occlusion} draws beside the Grad-CAM gallery: it needs {gradcam_gallery} N "
                          f"(N > 0). Received: {{gradcam_gallery}} {c.gradcam_gallery}")
    if c.keep_top_hidden and not any(get_spec(n).top_hidden for n, _ in rows):
        with_top = [n for n in list_backbones() if get_spec(n).top_hidden]
        raise ConfigError(f"{{keep_top_hidden}} applies to backbones whose ImageNet top has a hidden layer "
                          f"({', '.join(with_top)}). Received: {','.join(c.backbones)}")
    if c.weights == RANDOM_CHECKPOINT and (len(pretrained) != 1 or not get_spec(pretrained[0]).checkpoint):
        formats = [n for n in list_backbones() if get_spec(n).checkpoint]
        raise ConfigError(f"{{weights}} {RANDOM_CHECKPOINT} makes a random checkpoint in one backbone's checkpoint "
                          f"format: it fits the rows of one of {', '.join(formats)}. Received it for {pretrained}")
    if c.weights not in (None, "imagenet", RANDOM_CHECKPOINT) and len(pretrained) > 1:
        raise ConfigError(f"A weights file fits one backbone. Received {{weights}} {quote(c.weights)} for {pretrained}; "
                          "run them one at a time, or use imagenet / none")
