"""Train, evaluate and record backbones side by side (what `experiments.compare` runs).

Each backbone gets a folder with `model.keras`, `history.csv`, its plots and
`result.json`, written through `kerasimpl.run_folder.RowFolder` (`measure`
and `figures` return what `run_backbone` has it keep); a finished backbone
is not trained again when a run resumes.
"""

from __future__ import annotations

import dataclasses
import os
import time

import keras
import numpy as np

from kerasimpl import distributed, evaluation, features, inference, models, plotting, precision, training
from kerasimpl.backbones import accepts, get_spec
from kerasimpl.heads import HeadConfig
from kerasimpl.plan import CACHED_EVAL, plan_for, row_config
from kerasimpl.rows import ROW_VARIANTS, parse_row  # noqa: F401 (ROW_VARIANTS: part of this API)
from kerasimpl.run_config import finetuning
from kerasimpl.run_folder import RowFolder


@dataclasses.dataclass(frozen=True)
class BackboneRun:
    """One backbone's set-up in a comparison.

    Attributes:
        backbone: registered name.
        weights: `"imagenet"`, `None` or a path.
        image_size: size the backbone sees (`None`: the spec's default).
        backbone_kwargs: builder arguments, e.g. `{"alpha": 0.35}`.
        head: head configuration.
        keep_top_hidden: keep the ImageNet top's hidden layer (MobileNetV3, AlexNet).
        train_top_hidden: with `keep_top_hidden` on a frozen base, train the
            kept top's layers too (AlexNet's fc6, fc7; the `lastlayer` row).
    """

    backbone: str
    weights: object = "imagenet"
    image_size: object = None
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)
    head: HeadConfig = HeadConfig()
    keep_top_hidden: bool = False
    train_top_hidden: bool = False

    @property
    def end_to_end(self) -> bool:
        """Random-weight or from-scratch bases are trained whole, not frozen."""
        return self.weights is None or not get_spec(self.backbone).pretrained


def row_run(name, variant, weights, image_size, head, backbone_kwargs=None, keep_top_hidden=False):
    """The `BackboneRun` of one compare row (`variant` from `ROW_VARIANTS` or `None`).

    `head` is the configured head of ordinary rows; `scratch` on a backbone
    with a top hidden layer and `lastlayer` replace only the last layer
    (`HeadConfig((), 0.0)`: torchvision's `classifier[6]` has no dropout before it).
    """
    spec = get_spec(name)
    own_top = variant == "lastlayer" or (variant == "scratch" and spec.top_hidden is not None)
    return BackboneRun(
        name, None if variant == "scratch" or not spec.pretrained else weights, image_size,
        dict(backbone_kwargs or {}), HeadConfig((), 0.0) if own_top else head,
        keep_top_hidden=own_top or bool(keep_top_hidden and spec.top_hidden and variant is None),
        train_top_hidden=variant == "lastlayer",
    )


def row_label(row, kind="mlp") -> str:
    """A compare row's label (its column in the tables, its folder): `NAME` or `NAME-VARIANT`,
    with `-linear-probe` for the probe of `kind="linear-probe"`."""
    name, variant = parse_row(row)
    base = f"{name}-{variant}" if variant else name
    return f"{base}-linear-probe" if kind == "linear-probe" else base


def features_label(row) -> str:
    """The row whose folder holds `row`'s feature caches: NAME:frozen and NAME:finetune start from
    NAME's frozen base, so the three share NAME's; every other row keeps its own. The caches are per
    image (`kerasimpl.features`), so every seed of a row reads the same files, at `out/<label>/`."""
    name, variant = parse_row(row)
    return name if variant in ("frozen", "finetune") else row_label(row)


def row_folder(out, label, seeds=1, seed=0) -> str:
    """Where row `label` keeps its model, history and figures under the run folder `out`:
    `out/<label>`, or `out/<label>/seed<S>` when the run repeats `seeds` > 1 seeds."""
    return os.path.join(out, label) if seeds == 1 else os.path.join(out, label, f"seed{seed}")


def row_setup(row, options, seed, kind="mlp"):
    """The `BackboneRun` and `TrainConfig` of compare row `row` (`NAME` or `NAME:VARIANT`).

    Args:
        options: the comparison's `kerasimpl.run_config.RunConfig`.
        seed: the run's seed.
        kind: `"mlp"` (the configured head) or `"linear-probe"` (one Dense
            layer fitted by `kerasimpl.probe`).

    The fine-tuning fields are the backbone's registry defaults
    (`backbones.Finetuning`) with `options`' overrides (`finetuning`). Options
    that do not apply to the row's kind are dropped (`plan.row_config`: no
    fine-tuning for end-to-end rows and probes).
    """
    name, variant = parse_row(row)
    spec = get_spec(name)
    probe = kind == "linear-probe"
    run = row_run(
        name, variant, options.weights, options.image_size if spec.pretrained else None,
        HeadConfig((), 0.0) if probe else HeadConfig(tuple(options.hidden), options.dropout),
        {"alpha": options.alpha} if options.alpha and accepts(name, "alpha") else {},
        keep_top_hidden=options.keep_top_hidden,
    )
    tune = finetuning(name, options)
    epochs = options.finetune_epochs or (tune.epochs if variant == "finetune" and not probe else 0)
    config = training.TrainConfig(
        epochs=options.epochs, batch_size=options.batch_size, learning_rate=options.learning_rate,
        finetune_epochs=epochs, finetune_top_layers=tune.top_layers,
        finetune_from=tune.unfreeze_from, finetune_learning_rate=tune.learning_rate, finetune_views=tune.views,
        finetune_schedule=tune.schedule, finetune_label_smoothing=tune.label_smoothing,
        finetune_mixup=tune.mixup,
        cache_features=options.cache_features, augment=tuple(options.augment), seed=seed,
        workers=options.workers or 1, head_kind=kind, inference_batch_size=options.inference_batch_size,
        precision=options.precision, precise_bn=options.precise_bn)
    return run, row_config(run, config)


def build_model(run, data, plan):
    """The classifier of `run` for `data`, frozen and trainable as `plan` says."""
    return models.build_classifier(
        run.backbone, data.num_classes, input_shape=data.image_shape, image_size=run.image_size,
        weights=run.weights, head=run.head, freeze_base=plan.frozen_base, class_names=data.class_names,
        backbone_kwargs=run.backbone_kwargs, keep_top_hidden=run.keep_top_hidden, train_top_hidden=plan.train_top,
    )


def run_backbone(run, data, split, config, folder, eval_batch=None, verbose="auto", features_folder=None,
                 plan=None) -> dict:
    """Train and evaluate one backbone; keep its artifacts in its folder; return its result.

    The run's `RunPlan` (`plan`, default `kerasimpl.plan.plan_for(run,
    config)`) is built first, so a contradictory set-up fails before
    anything is built; the model build, training, evaluation and the
    result's `trained`, seconds and `plan` fields all read it. `eval_batch`
    (default `config.extract_batch`, the measured default for the device)
    is the batch of evaluation and of the throughput figure.

    `folder` (a path or a `kerasimpl.run_folder.RowFolder`) receives what
    the run keeps: the stages, `model.keras`, the figures and `result.json`,
    all written through the `RowFolder`. If `result.json` exists the backbone
    finished earlier: it is returned unchanged. `features_folder` holds the
    feature caches (default `folder`; a linear probe shares its MLP run's).

    Across processes (`kerasimpl.distributed`) every process trains and
    evaluates; only rank 0 saves, measures the throughput and writes, and the
    others return None.
    """
    row = folder if isinstance(folder, RowFolder) else RowFolder(folder)
    finished = row.finished_result()
    if finished is not None:
        return finished
    the_plan = plan or plan_for(run, config)
    keras.utils.set_random_seed(config.seed)  # the initial weights too (else the first row's differ run to run)
    with precision.keras_policy(config.precision):  # Keras' mixed policy for training; float32 is a no-op
        model = build_model(run, data, the_plan)
    seconds = training.train_classifier(model, data, split, config, row.stages, verbose=verbose,
                                        features_folder=features_folder, plan=the_plan)
    with distributed.local_model(model):  # JAX across processes: each process's own copy from here on
        row.keep_model(model)  # before measuring: the result reports the file's size
        result = measure(model, run, data, split, config, seconds, the_plan, eval_batch, verbose,
                         features_folder or row.path, probe=row.stages.read_record("probe"))
    if result is None:
        return None
    history = row.stages.history()
    result["model_mb"] = evaluation.file_size_mb(row.model_path)
    result["epochs_run"] = len(history)
    row.finish(result, figures(result, history, data.class_names))
    return result


def measure(model, run, data, split, config, seconds, plan, eval_batch=None, verbose="auto", features_folder=None,
            probe=None):
    """A trained model's result: accuracy, loss, per-class figures, seconds, size and speed (None off rank 0).

    Nothing is written but the feature caches in `features_folder` (`None`:
    none). `seconds` are `train_classifier`'s; `probe` is the linear probe's
    record (its chosen L2), for the `trained` column. The caller adds what
    its files say (`model_mb`, `epochs_run`).
    """
    eval_batch = eval_batch or config.extract_batch
    start = time.perf_counter()
    test_probs, val_probs, eval_path = evaluate(model, run, data, split, config, features_folder, eval_batch,
                                                verbose, plan=plan)
    if not distributed.is_writer():
        return None
    test = evaluation.classification_metrics(test_probs, data.y_test, data.class_names)
    val = evaluation.classification_metrics(val_probs, data.y_train[split.val])
    eval_seconds = time.perf_counter() - start
    params = models.parameter_counts(model)
    speed, speed_path = evaluation.throughput(model, data.image_shape, eval_batch, precision=config.precision,
                                              with_path=True)
    return {
        "backbone": run.backbone,
        "weights": run.weights if run.weights is None or isinstance(run.weights, str) else str(run.weights),
        "image_size": run.image_size or get_spec(run.backbone).input_size,
        "trained": trained_label(plan, probe),
        "plan": plan.to_dict(),
        "seed": config.seed,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "top5_accuracy": test["top5_accuracy"],
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        **plan.result_seconds(seconds),
        "eval_seconds": eval_seconds,
        "eval_path": eval_path,
        "params_total": params["total"],
        "params_trainable": params["trainable"],
        "images_per_second": speed,
        "throughput_batch": eval_batch,
        "throughput_path": f"saved model: {speed_path}, raw uint8 images in, probabilities out",
        "precision": config.precision,
        "num_test": int(len(data.y_test)),
        "per_class": test["per_class"],
        "confusion_matrix": test["confusion_matrix"],
    }


def evaluate(model, run, data, split, config, features_folder, eval_batch=None, verbose="auto", plan=None):
    """Test and validation probabilities, and which path computed them.

    Every path runs the backbone once per image to pooled features and the
    head on those (equal to the full model's predictions to float
    tolerance, tested). The path is the plan's `eval_path` (`plan`: default
    `plan_for(run, config)`): `CACHED_EVAL` (a frozen base with cached
    features, nothing fine-tuned): the test features are cached beside the
    training pool's (validation's rows are read from it); `FRESH_EVAL` (fine-tuned,
    top trained, end to end, or not cached): computed fresh. Either way they
    come from `features.extract_features`: on torch the compiled native
    program at `config.precision`, else `model.predict`.
    """
    plan = plan or plan_for(run, config)
    if plan.eval_path == CACHED_EVAL:
        test = features.split_features(model, data, np.arange(len(data.y_test)), "test", features_folder, config,
                                       verbose)
        val = features.split_features(model, data, split.val, "val", features_folder, config, verbose)
    else:
        kw = dict(batch_size=eval_batch or config.extract_batch, verbose=verbose, workers=config.workers,
                  precision=config.precision)
        test = features.extract_features(model, data.x_test, None, what="evaluate test", **kw)
        val = features.extract_features(model, data.x_train, split.val, what="evaluate val", **kw)
    return head_probabilities(model, test), head_probabilities(model, val), plan.eval_path


def head_probabilities(model, features, batch_size=1024):
    """Class probabilities of a kerasimpl classifier from its pooled features."""
    logits = inference.predict(model.get_layer(models.HEAD), features, batch_size)
    return keras.ops.convert_to_numpy(model.get_layer(models.PREDICTIONS)(logits)).astype(np.float32)


def trained_label(plan, probe=None) -> str:
    """The `trained` column: the plan's description; a linear probe's adds the
    L2 strength it chose (`probe`: the probe stage's record, `{"l2": ...}`)."""
    if not plan.probe:
        return plan.description
    if not probe:
        raise ValueError(f"A linear probe's result needs the probe stage's record (its L2). Received: {probe!r}")
    return f"{plan.description} (L2 {probe['l2']:g})"


def figures(result, history, class_names) -> list:
    """One backbone's learning curves and test confusion matrix: `(file name, figure)` pairs."""
    name = result["backbone"]
    return [
        ("learning_curves.png", plotting.learning_curves(history, f"{name}: learning curves")),
        ("confusion_matrix.png", plotting.confusion_matrix(
            result["confusion_matrix"], class_names, f"{name}: test confusion (acc {result['test_accuracy']:.1%})")),
    ]


def seed_average(results) -> dict:
    """Mean ± std of one backbone's results over seeds (numbers only)."""
    from kerasimpl.reporting import aggregate_seeds

    keep = {k: v for k, v in results[0].items() if k not in ("per_class", "confusion_matrix")}
    runs = [{k: r[k] for k in keep} for r in results]
    out = aggregate_seeds(runs)
    out["confusion_matrix"] = np.sum([r["confusion_matrix"] for r in results], axis=0).tolist()
    return out
