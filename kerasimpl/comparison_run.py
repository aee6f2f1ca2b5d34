"""A whole comparison: every row trained and evaluated side by side, then the tables and figures.

`run_comparison(config)` is what `python -m experiments.compare` runs: it
validates the resolved options, refuses to resume a run folder started with
other result-changing options, decides distribution (`_distribution`, the
one place: with `--distribute` every process runs the comparison and rank 0
alone writes, `kerasimpl.distributed`), loads the data, trains and evaluates each row (each seed, the
linear probe and `--tune`'s best where asked: `kerasimpl.comparison`) and
has `config.json`, the tables, the plot gallery and, where asked, the
saliency figure of every model and each model's Grad-CAM gallery written
(`kerasimpl.comparison_outputs`). Rows are labelled and foldered by one rule
(`comparison.row_label`, `comparison.row_folder`).

`config` is a `kerasimpl.run_config.RunConfig` (`experiments.compare.resolve`
builds it from the command line); what the run decides (the inference batch,
the loader threads, a random checkpoint) makes a new one. Progress
lines go to `say` (default: the `kerasimpl` logger); the library prints
nothing itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import warnings

from kerasimpl import comparison, comparison_outputs, distributed, runtime
from kerasimpl.comparison_checks import check_resume, slow_warning
from kerasimpl.rows import pretrained_backbones
from kerasimpl.run_config import RANDOM_CHECKPOINT

_logger = logging.getLogger("kerasimpl")



def run_comparison(config, plots_dir="", verbose="auto", say=_logger.info, on_slow=None) -> list:
    """Run the comparison `config` (a `RunConfig`); write everything under `config.out`; return the rows'
    results.

    With `config.distribute` every process of the run calls this
    (`kerasimpl.distributed`): all train and evaluate; rank 0 alone writes
    and says anything (the others run silent, their `kerasimpl` logger at
    WARNING) and returns the results, the others return `[]`.

    Args:
        config: the options, checked when made (`RunConfig`); what the run
            decides (the inference batch, the loader threads, the random
            checkpoint's path) is recorded in `config.json`.
        plots_dir: also copy the figures to `plots_dir/<preset>/` (`""`: no).
        verbose: Keras-style progress of training and extraction.
        say: receives each progress line.
        on_slow: receives the warning that a row would take hours on a CPU
            (default `warnings.warn`), before anything is trained.

    Raises:
        ConfigError: a run folder started with other options, or a global
            batch that does not split over the processes.
    """
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
    message = slow_warning(config.backbones, config.image_size, runtime.has_accelerator())  # after distribution:
    if message:  # multi-host JAX initializes first
        (on_slow or (lambda m: warnings.warn(m, stacklevel=4)))(message)
    os.makedirs(config.out, exist_ok=True)
    if config.inference_batch_size is None:  # record the batch used, not "default"
        config = dataclasses.replace(config, inference_batch_size=runtime.inference_batch_size())
    if config.weights == RANDOM_CHECKPOINT:
        config = _random_checkpoint(config, world, say)
    config = with_workers(config)
    data = load_data(config, say)
    split = data.split(config.val_fraction, config.seed)
    if world.writer:
        comparison_outputs.write_config(config, world, data, split)
    results = []
    for row in config.backbones:
        for kind in row_kinds(row, config):
            runs = [run_row(row, seed, config, data, split, verbose, kind, say=say) for seed in config.seed_list]
            if world.writer:  # the other processes trained and evaluated with it; rank 0 records
                results.append(runs[0] if len(runs) == 1 else comparison.seed_average(runs))
        if config.tune:
            results.append(tuned_row(row, config, data, split, verbose, say))
    distributed.finish()  # from here rank 0 alone
    if not world.writer:
        return []
    comparison_outputs.write_outputs(config, results, data, plots_dir, say)
    if config.saliency:
        comparison_outputs.saliency_figure(config, results, data, plots_dir, say)
    if config.gradcam_gallery:
        comparison_outputs.gradcam_galleries(config, results, data, plots_dir, say)
    return results


def _random_checkpoint(config, world, say):
    """`config` with its weights a seeded random checkpoint in the one pretrained backbone's format, written
    into the run folder (each process of a run writes the same file to a folder of its own)."""
    from kerasimpl.backbones import get_spec, write_random_checkpoint
    from kerasimpl.checkpoints import get_source

    name = pretrained_backbones(config.backbones)[0]  # RunConfig checked: exactly one, with a checkpoint format
    folder = config.out if world.writer else tempfile.mkdtemp(prefix="kerasimpl-rank-")  # the same seeded file
    path = write_random_checkpoint(name, os.path.join(folder, f"{name}-random-init.pth"), config.seed)
    source = get_source(get_spec(name).checkpoint)
    note = (f"random weights (seeded) saved as a {source.description or source.name} checkpoint stand in for "
            f"its ImageNet file (offline)")
    say(f"{note}: {path}")
    return dataclasses.replace(config, weights=path, weights_note=note)


def _distribution(config) -> distributed.World:
    """The processes of the run (`kerasimpl.distributed.configure` with `--distribute`, else this one alone).

    The one place a comparison decides distribution.

    Raises:
        ConfigError: `batch_size` (the global batch) does not split evenly over the processes.
    """
    from kerasimpl.run_config import ConfigError

    world = distributed.configure(config.distribute_timeout) if config.distribute else distributed.world()
    if config.batch_size % world.size:
        raise ConfigError(f"{{batch_size}} is the global batch, split evenly over the processes. Received: "
                          f"{config.batch_size} for {world.size} processes")
    return world


def with_workers(config):
    """`config` with its loader threads decided where unset: the CPU count for sources of image files
    (decoding is the work), else 1."""
    from kerasimpl.data import FILE_KINDS, source_kind

    if config.workers is not None:
        return config
    folder = source_kind(config.data) in FILE_KINDS
    return dataclasses.replace(config, workers=(os.cpu_count() or 1) if folder else 1)


def load_data(config, say=_logger.info):
    """The dataset of `config`, with what was skipped or decided about it said aloud."""
    from kerasimpl.data import load_dataset

    say(f"loading data: {config.data}")
    data = load_dataset(config.data, image_size=config.data_size, test_fraction=config.test_fraction,
                        seed=config.seed, workers=config.workers or 1, classes=config.classes)
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

    if not config.linear_probe or comparison.parse_row(row)[1] == "finetune":  # its base's probe is NAME's
        return ("mlp",)
    return ("mlp", "linear-probe") if plan_for(*comparison.row_setup(row, config, config.seed)).can_probe \
        else ("mlp",)


def run_row(row, seed, config, data, split, verbose, kind="mlp", label=None, say=_logger.info) -> dict | None:
    """Train and evaluate row `row` (`NAME` or `NAME:VARIANT`) with `seed` (head `kind`); return its result
    (None on a process other than rank 0)."""
    from kerasimpl.plan import plan_for

    run, train_config = comparison.row_setup(row, config, seed, kind)
    plan = plan_for(run, train_config)
    label = label or comparison.row_label(row, kind)
    folder = comparison.row_folder(config.out, label, config.seeds, seed)
    how = f"{plan.description}: {', '.join(plan.stages)}"
    say(f"{label} (seed {seed}, {run.weights or 'random'} weights, {how}) -> {folder}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras' input-size notes for non-224 MobileNets
        features = os.path.join(config.out, comparison.features_label(row))  # per image: one for every seed
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
    say(f"{base}: hyperparameter search, {config.tune} trials on validation accuracy")
    run, train_config = comparison.row_setup(row, config, config.seed)
    chosen = tuning.tune(run, data, split, train_config, config.out, config.tune, verbose=verbose,
                         features_folder=os.path.join(config.out, base))
    _, best = tuning.apply(chosen, run, train_config)
    tuned = dataclasses.replace(
        config, learning_rate=best.learning_rate, dropout=chosen["dropout"], hidden=(int(chosen["head_width"]),),
        finetune_top_layers=None if best.finetune_from else best.finetune_top_layers,
        finetune_from=best.finetune_from, finetune_epochs=best.finetune_epochs, seeds=1)
    result = run_row(row, config.seed, tuned, data, split, verbose, label=f"{base}-tuned", say=say)
    result.update(trained=f"{result['trained']} (tuned: best of {config.tune} trials on validation)", tuned=chosen)
    return result
