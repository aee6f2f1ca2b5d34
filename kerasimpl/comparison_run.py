"""A whole comparison: every row trained and evaluated side by side, then the tables and figures.

`run_comparison(config)` is what `python -m experiments.compare` runs: it
validates the resolved options, refuses to resume a run folder started with
other result-changing options, decides distribution (`_distribution`, the
one place: with `--distribute` every process runs the comparison and rank 0
alone writes, `kerasimpl.distributed`), loads the data, trains and evaluates each row (each seed, the
linear probe and `--tune`'s best where asked: `kerasimpl.comparison`) and
writes `config.json`, the tables, the plot gallery and, where asked, the
saliency figure of every model and each model's Grad-CAM gallery
(`kerasimpl.saliency.report`). Rows are labelled and foldered by one rule
(`comparison.row_label`, `comparison.row_folder`).

`config` is a mapping of the options (`experiments.compare.resolve` builds
it: `backbones`, `data`, `weights`, `seed`, `seeds`, `out`, ...). Progress
lines go to `say` (default: the `kerasimpl` logger); the library prints
nothing itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings

from kerasimpl import comparison, distributed, runtime
from kerasimpl.artifacts import write_json

_logger = logging.getLogger("kerasimpl")

RANDOM_CHECKPOINT = "random-checkpoint"  # weights value: a random checkpoint (e.g. AlexNet's .pth) made in the run folder
# Options that do not change a finished backbone's figures: a run folder may
# be resumed with other values of these (any other option must match).
RESUME_MAY_DIFFER = ("out", "preset", "backbones", "workers", "distribute", "distribute_timeout",
                     "inference_batch_size", "saliency", "saliency_method")


def run_comparison(config, plots_dir="", verbose="auto", say=_logger.info, on_slow=None) -> list:
    """Run the comparison `config`; write everything under `config["out"]`; return the rows' results.

    With `config["distribute"]` every process of the run calls this
    (`kerasimpl.distributed`): all train and evaluate; rank 0 alone writes
    and says anything (the others run silent, their `kerasimpl` logger at
    WARNING) and returns the results, the others return `[]`.

    Args:
        config: the resolved options (completed in place with what the run
            decided: the inference batch, the loader threads, the random
            checkpoint's path).
        plots_dir: also copy the figures to `plots_dir/<preset>/` (`""`: no).
        verbose: Keras-style progress of training and extraction.
        say: receives each progress line.
        on_slow: receives the warning that VGG16 would take hours on a CPU
            (default `warnings.warn`), before anything is trained.

    Raises:
        ValueError: a bad option, or a run folder started with other options.
    """
    validate(config)
    check_resume(config)
    world = _distribution(config)
    if world.writer:
        return _run(config, world, plots_dir, verbose, say, on_slow)
    with _warnings_only(_logger):  # one log, rank 0's: the others say nothing and log warnings and errors only
        return _run(config, world, plots_dir, 0, _silent, _silent)


def _silent(message):
    """What a process other than rank 0 says: nothing."""


@contextlib.contextmanager
def _warnings_only(logger):
    """`logger` (the `kerasimpl` logger: stage and progress lines) at WARNING for the block."""
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _run(config, world, plots_dir, verbose, say, on_slow):
    message = slow_warning(config, runtime.has_accelerator())  # after distribution: multi-host JAX initializes first
    if message:
        (on_slow or (lambda m: warnings.warn(m, stacklevel=4)))(message)
    out = config["out"]
    os.makedirs(out, exist_ok=True)
    if config["inference_batch_size"] is None:  # record the batch used, not "default"
        config["inference_batch_size"] = runtime.inference_batch_size()
    if config["weights"] == RANDOM_CHECKPOINT:
        from kerasimpl.backbones import get_spec, write_random_checkpoint
        from kerasimpl.checkpoints import get_source

        name = _pretrained_backbones(config)[0]  # validate: exactly one, with a checkpoint format
        folder = out if world.writer else tempfile.mkdtemp(prefix="kerasimpl-rank-")  # the same seeded file
        config["weights"] = write_random_checkpoint(name, os.path.join(folder, f"{name}-random-init.pth"),
                                                    config["seed"])
        source = get_source(get_spec(name).checkpoint)
        config["weights_note"] = (f"random weights (seeded) saved as a {source.description or source.name} "
                                  f"checkpoint stand in for its ImageNet file (offline)")
        say(f"{config['weights_note']}: {config['weights']}")
    data = load_data(config, say)
    split = data.split(config["val_fraction"], config["seed"])
    if world.writer:
        _write_config(config, world, data, split)
    results = []
    for row in config["backbones"]:
        for kind in row_kinds(row, config):
            seeds = range(config["seed"], config["seed"] + config["seeds"])
            runs = [run_row(row, seed, config, data, split, verbose, kind, say=say) for seed in seeds]
            if world.writer:  # the other processes trained and evaluated with it; rank 0 records
                results.append(runs[0] if len(runs) == 1 else comparison.seed_average(runs))
        if config.get("tune"):
            results.append(tuned_row(row, config, data, split, verbose, say))
    distributed.finish()  # from here rank 0 alone
    if not world.writer:
        return []
    write_outputs(config, results, data, plots_dir, say)
    if config.get("saliency"):
        saliency_figure(config, results, data, plots_dir, say)
    if config.get("gradcam_gallery"):
        gradcam_galleries(config, results, data, plots_dir, say)
    return results


def _write_config(config, world, data, split):
    """`config.json`: the options, what was decided, the processes (`World.describe`) and the data."""
    from kerasimpl.data.provenance import test_split_record

    write_json(os.path.join(config["out"], "config.json"), {
        **config, "split": split.summary(), "versions": runtime.versions(), "device": runtime.device_description(),
        **world.describe(),
        "data_source": data.source, "num_train_total": int(len(data.y_train)), "num_test": int(len(data.y_test)),
        "class_names": list(data.class_names), "data_notes": list(data.notes),
        "skipped_files": [{"file": p, "reason": r} for p, r in data.skipped],
        # which images are the test set, for experiments.saliency to reuse and check
        "test_split": test_split_record(data, config["data"], config["seed"], config["test_fraction"],
                                        config.get("data_size")),
    })


def _distribution(config) -> distributed.World:
    """The processes of the run (`kerasimpl.distributed.configure` with `--distribute`, else this one alone).

    The one place a comparison decides distribution.

    Raises:
        ValueError: `--batch-size` (the global batch) does not split evenly over the processes.
    """
    world = (distributed.configure(config.get("distribute_timeout", distributed.DEFAULT_TIMEOUT_S))
             if config["distribute"] else distributed.world())
    if config["batch_size"] % world.size:
        raise ValueError(f"--batch-size is the global batch, split evenly over the processes. Received: "
                         f"--batch-size {config['batch_size']} for {world.size} processes")
    return world


def validate(config):
    """Fail early, naming the bad option and what is accepted (before any folder is made)."""
    from kerasimpl.backbones import get_spec, list_backbones

    rows = [comparison.parse_row(b) for b in config["backbones"]]  # listing the accepted names and variants
    if config.get("tune") and config["distribute"]:
        raise ValueError("--tune runs its trials in one process: it does not combine with --distribute. Received: "
                         f"--tune {config['tune']} --distribute")
    if not rows:
        raise ValueError("--backbones names no backbone. Received: an empty list")
    if len(set(rows)) != len(rows):
        raise ValueError(f"A row appears twice in --backbones. Received: {config['backbones']}")
    for key, low in (("epochs", 1), ("batch_size", 1), ("seeds", 1), ("finetune_epochs", 0), ("saliency", 0),
                     ("finetune_layers", 1), ("finetune_views", 0)):
        if config.get(key) is not None and config[key] < low:
            raise ValueError(f"--{key.replace('_', '-')} must be >= {low}. Received: {config[key]}")
    if config.get("finetune_lr") is not None and not config["finetune_lr"] > 0:
        raise ValueError(f"--finetune-lr must be > 0. Received: {config['finetune_lr']}")
    for name, variant in rows:  # the fine-tuning options against each row's backbone, before anything runs
        if get_spec(name).pretrained and variant != "scratch":
            comparison.finetuning(name, config)
    if config["inference_batch_size"] is not None and config["inference_batch_size"] < 1:
        raise ValueError(f"--inference-batch-size must be >= 1. Received: {config['inference_batch_size']}")
    for key in ("val_fraction", "test_fraction"):
        if not 0 < config[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be between 0 and 1. Received: {config[key]}")
    pretrained = _pretrained_backbones(config)
    if any(v == "lastlayer" for _, v in rows) and config["weights"] is None:
        raise ValueError("NAME:lastlayer keeps pretrained layers: it needs --weights imagenet or a weights file. "
                         "Received: --weights none")
    if config.get("saliency"):  # before any training, not after it
        from kerasimpl.saliency import method_options

        method_options(config.get("saliency_method") or "gradcam")  # ValueError listing the accepted methods
    with_top = [n for n in list_backbones() if get_spec(n).top_hidden]
    if config["keep_top_hidden"] and not any(get_spec(n).top_hidden for n, _ in rows):
        raise ValueError(f"--keep-top-hidden applies to backbones whose ImageNet top has a hidden layer "
                         f"({', '.join(with_top)}). Received: {config['backbones']}")
    if config["weights"] == RANDOM_CHECKPOINT and (len(pretrained) != 1 or not get_spec(pretrained[0]).checkpoint):
        formats = [n for n in list_backbones() if get_spec(n).checkpoint]
        raise ValueError(f"--weights {RANDOM_CHECKPOINT} makes a random checkpoint in one backbone's checkpoint "
                         f"format: it fits the rows of one of {', '.join(formats)}. Received it for {pretrained}")
    if config["weights"] not in (None, "imagenet") and len(pretrained) > 1:
        raise ValueError(f"A weights file fits one backbone. Received --weights {config['weights']} for "
                         f"{pretrained}; run them one at a time, or use --weights imagenet / none")


def _pretrained_backbones(config) -> list:
    """The backbones whose rows start from pretrained weights (not NAME:scratch), sorted."""
    from kerasimpl.backbones import get_spec

    rows = [comparison.parse_row(b) for b in config["backbones"]]
    return sorted({n for n, v in rows if get_spec(n).pretrained and v != "scratch"})


def check_resume(config):
    """Refuse to resume `config["out"]` when it was started with other result-changing options.

    Raises:
        ValueError: naming each option that differs, with both values.
    """
    path = os.path.join(config["out"], "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            old = json.load(f)
        if not isinstance(old, dict):
            raise ValueError(f"a JSON object is expected, not {type(old).__name__}")
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"--out {config['out']} holds a config.json that cannot be read ({e}): "
                         "it cannot be resumed; choose another --out") from e
    new = json.loads(json.dumps({k: v for k, v in config.items() if k not in RESUME_MAY_DIFFER}))
    diffs = [f"{k}: {old[k]!r} there, {v!r} now" if k in old else f"{k}: absent there, {v!r} now"
             for k, v in new.items() if k not in old or old[k] != v]
    if diffs:
        raise ValueError(f"--out {config['out']} is a run started with other options, so its finished backbones "
                         f"would not match this configuration ({'; '.join(diffs)}). Use another --out, or "
                         "repeat the original options to resume it")


# Multiply-adds per second a 2-core CPU sustains in feature extraction: VGG16's measured 2.2 img/s at
# 224 px (15.5 G each; docs/benchmarks.md). With a backbone's registry count it estimates any row's time.
CPU_MACS_PER_S = 2.2 * 15.5e9


def slow_warning(config, accelerator, images=60_000) -> str:
    """A warning when a row's extraction of `images` (CIFAR-10's 60,000) would take over an hour on a CPU,
    estimated from its registry multiply-adds (`BackboneSpec.macs`) at its size, with the way to skip it;
    else ''."""
    from kerasimpl.backbones import get_spec

    if accelerator:
        return ""
    slow = {}
    for row in config["backbones"]:
        spec = get_spec(comparison.parse_row(row)[0])
        size = (config["image_size"] if spec.pretrained else None) or spec.input_size
        macs = spec.macs(size)
        if macs and images * macs / CPU_MACS_PER_S > 3600:
            slow[row] = (size, images * macs / CPU_MACS_PER_S / 3600)
    if not slow:
        return ""
    others = ",".join(b for b in config["backbones"] if b not in slow) or "mobilenetv2"
    each = ", ".join(f"{row} at {size} px about {hours:.1f} h" for row, (size, hours) in slow.items())
    return (f"on a CPU these take hours: {each} to extract {images:,} images (from their multiply-adds at the "
            f"2.2 img/s VGG16 ran at on 2 CPU cores, docs/benchmarks.md). To skip them: --backbones {others} "
            f"(make run ARGS=\"--backbones {others}\")")


def load_data(config, say=_logger.info):
    """The dataset, with what was skipped or decided about it said aloud (`config["workers"]` completed)."""
    from kerasimpl.data import FILE_KINDS, load_dataset, source_kind

    folder = source_kind(config["data"]) in FILE_KINDS
    if config["workers"] is None:
        config["workers"] = (os.cpu_count() or 1) if folder else 1
    say(f"loading data: {config['data']}")
    data = load_dataset(config["data"], image_size=config.get("data_size"), test_fraction=config["test_fraction"],
                        seed=config["seed"], workers=config["workers"], classes=config.get("classes"))
    say(f"{len(data.y_train)} train+val and {len(data.y_test)} test images of "
        f"{data.image_shape[0]}x{data.image_shape[1]} px, {data.num_classes} classes: "
        f"{', '.join(data.class_names[:10])}{' ...' if data.num_classes > 10 else ''}")
    for note in data.notes:
        say(f"data: {note}")
    for path, reason in data.skipped:
        say(f"skipped {path}: {reason}")
    return data


def row_kinds(row, config) -> tuple:
    """Row kinds for row `row`: the MLP head, and a linear probe if asked and
    the row's plan caches a frozen base's features (`RunPlan.can_probe`)."""
    from kerasimpl.plan import plan_for

    if not config["linear_probe"] or comparison.parse_row(row)[1] == "finetune":  # its base's probe is NAME's
        return ("mlp",)
    return ("mlp", "linear-probe") if plan_for(*comparison.row_setup(row, config, config["seed"])).can_probe \
        else ("mlp",)


def run_row(row, seed, config, data, split, verbose, kind="mlp", label=None, say=_logger.info) -> dict | None:
    """Train and evaluate row `row` (`NAME` or `NAME:VARIANT`) with `seed` (head `kind`); return its result
    (None on a process other than rank 0)."""
    from kerasimpl.plan import plan_for

    run, train_config = comparison.row_setup(row, config, seed, kind)
    plan = plan_for(run, train_config)
    label = label or comparison.row_label(row, kind)
    folder = comparison.row_folder(config["out"], label, config["seeds"], seed)
    how = f"{plan.description}: {', '.join(plan.stages)}"
    say(f"{label} (seed {seed}, {run.weights or 'random'} weights, {how}) -> {folder}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras' input-size notes for non-224 MobileNets
        features = os.path.join(config["out"], comparison.features_label(row))  # per image: one for every seed
        result = comparison.run_backbone(run, data, split, train_config, folder, verbose=verbose,
                                         features_folder=features, plan=plan)
    if result is None:  # --distribute: a process other than rank 0
        return None
    result["run"] = label
    say(f"{label}: test accuracy {result['test_accuracy']:.2%}, train {result['train_seconds']:.0f} s")
    return result


def tuned_row(row, config, data, split, verbose, say=_logger.info) -> dict:
    """--tune: the search (`kerasimpl.tuning`), then the best configuration trained as row `<row>-tuned`."""
    from kerasimpl import tuning

    base = comparison.row_label(row)
    say(f"{base}: hyperparameter search, {config['tune']} trials on validation accuracy")
    run, train_config = comparison.row_setup(row, config, config["seed"])
    chosen = tuning.tune(run, data, split, train_config, config["out"], config["tune"], verbose=verbose,
                         features_folder=os.path.join(config["out"], base))
    _, best = tuning.apply(chosen, run, train_config)
    overrides = {"lr": best.learning_rate, "dropout": chosen["dropout"], "hidden": [int(chosen["head_width"])],
                 "finetune_layers": None if best.finetune_from else best.finetune_top_layers,
                 "finetune_from": best.finetune_from, "finetune_epochs": best.finetune_epochs, "seeds": 1}
    result = run_row(row, config["seed"], {**config, **overrides}, data, split, verbose, label=f"{base}-tuned",
                     say=say)
    result.update(trained=f"{result['trained']} (tuned: best of {config['tune']} trials on validation)", tuned=chosen)
    return result


def write_outputs(config, results, data, plots_dir="", say=_logger.info):
    """Tables, the comparison figure, and the plot gallery."""
    from kerasimpl import gallery, reporting

    out = config["out"]
    reporting.write_tables(out, results, note=_note(config, data))
    seeds = [""] if config["seeds"] == 1 else [f"seed{s}" for s in range(config["seed"],
                                                                          config["seed"] + config["seeds"])]
    plots = gallery.write_gallery(out, results, seeds, f"{config['preset']} preset on "
                                  f"{os.path.basename(str(data.source))}: accuracy vs training time")
    if plots_dir:
        gallery.copy_gallery(plots, os.path.join(plots_dir, config["preset"]))
    with open(os.path.join(out, "results.md")) as f:
        say("results:\n" + f.read())
    say(f"wrote {out}")


def _model_paths(config, results) -> dict:
    """`{label: saved model}` of each result (the first seed's with `--seeds N`)."""
    labels = [r.get("run", r["backbone"]) for r in results]
    return {label: os.path.join(comparison.row_folder(config["out"], label, config["seeds"], config["seed"]),
                                "model.keras") for label in labels}


def saliency_figure(config, results, data, plots_dir="", say=_logger.info):
    """The same N test images explained by every compared model, side by side."""
    from kerasimpl.artifacts import copy_file
    from kerasimpl.saliency.report import models_figure

    figure = os.path.join(config["out"], "plots", "saliency_backbones.png")
    models_figure(_model_paths(config, results), data, int(config["saliency"]),
                  config.get("saliency_method") or "gradcam", figure,
                  os.path.join(config["out"], "saliency_backbones.json"), seed=config["seed"],
                  precision=config.get("precision", "float32"), say=say)
    if plots_dir:
        copy_file(figure, os.path.join(plots_dir, config["preset"], "saliency_backbones.png"))
    say(f"wrote {figure}")


def gradcam_galleries(config, results, data, plots_dir="", say=_logger.info):
    """Per model: Grad-CAM of N test images, half misclassified (the "right-wrong" rule of
    `kerasimpl.saliency.choose_images`), in `<row folder>/gradcam/` and `plots/<row>_gradcam_gallery.png`.
    With `config["gallery_occlusion"]`: the reference experiment's occlusion study beside it (a black
    square, 30 px with stride 20 at 224 px, scaled to the model's input) and both maps explain the TRUE
    class, as that study recorded the true class's probability."""
    from kerasimpl.artifacts import copy_file, load_model
    from kerasimpl.saliency import GradCAM, Occlusion
    from kerasimpl.saliency.occlusion import scaled_window
    from kerasimpl.saliency.report import explain_test_images

    occlusion = bool(config.get("gallery_occlusion"))
    for label, path in _model_paths(config, results).items():
        target = os.path.join(os.path.dirname(path), "gradcam")
        model = load_model(path)
        methods = [GradCAM(model)]
        if occlusion:
            patch, stride = scaled_window(model.input_shape[1])
            methods.append(Occlusion(model, patch=patch, stride=stride, fill=0.0))
        explain_test_images(model, data, methods, int(config["gradcam_gallery"]), target, seed=config["seed"],
                            model_path=path, explain="true" if occlusion else "predicted", say=say)
        gallery = os.path.join(config["out"], "plots", f"{label}_gradcam_gallery.png")
        copy_file(os.path.join(target, "gallery.png"), gallery)
        if plots_dir:
            copy_file(gallery, os.path.join(plots_dir, config["preset"], os.path.basename(gallery)))


def _note(config, data):
    parts = [f"data: {data.source} ({len(data.y_train)} train+val, {len(data.y_test)} test images)"]
    if data.source != "cifar10" and len(data.y_test) != 10000:
        parts.append("NOT the full CIFAR-10 test set: figures are for this data only")
    if config["weights"] is None:
        parts.append("random initial weights (no ImageNet): backbones trained end to end")
    if config.get("weights_note"):
        parts.append(config["weights_note"])
    return "; ".join(parts) + "."
