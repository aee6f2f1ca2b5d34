"""Hyperparameter search on validation accuracy, with KerasTuner's search space and oracle.

`search` tries `trials` configurations of learning rate, dropout, head
width and fine-tuning depth for one backbone and returns them ranked by
VALIDATION accuracy; the test images are never read (the caller trains
the chosen configuration afterwards, as its own result).

KerasTuner's own run loop (`Tuner.search` -> `model.fit`) is not used: it
would bypass the staged training this toolkit relies on (cached features
for a frozen base, a separate fine-tuning stage, resumable checkpoints,
augmentation in the loader). What is used is KerasTuner's
`HyperParameters` (the space) and its `RandomSearchOracle` (which trial
next, seeded; the record of each trial's score), driven by our own
`training.train_classifier`. KerasTuner is optional (the `tune` extra)
and imported only here, when a search runs; it needs neither TensorFlow
nor a particular Keras backend.

Reference: Bergstra & Bengio, "Random Search for Hyper-Parameter
Optimization", JMLR 13, 2012; O'Malley et al., KerasTuner,
https://github.com/keras-team/keras-tuner (2019).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import numpy as np

from kerasimpl import evaluation, inference, training
from kerasimpl.artifacts import read_csv, write_csv, write_json, write_text
from kerasimpl.heads import HeadConfig
from kerasimpl.plan import plan_for


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What `search` varies.

    Attributes:
        learning_rate: (low, high), sampled log-uniformly.
        dropout: (low, high, step) of the head's dropout.
        widths: hidden widths of the one-layer head to choose from.
        depths: backbone layers unfrozen for fine-tuning (0: no fine-tuning
            stage); searched only where the base is frozen (pretrained).
        finetune_epochs: epochs of fine-tuning when a trial's depth > 0.
    """

    learning_rate: tuple = (1e-4, 1e-2)
    dropout: tuple = (0.0, 0.5, 0.1)
    widths: tuple = (64, 128, 256, 512)
    depths: tuple = (0, 10, 20, 40)
    finetune_epochs: int = 2

    def hyperparameters(self, frozen_base):
        """The space as KerasTuner `HyperParameters`."""
        kt = _keras_tuner()
        hp = kt.HyperParameters()
        hp.Float("learning_rate", *self.learning_rate, sampling="log")
        hp.Float("dropout", self.dropout[0], self.dropout[1], step=self.dropout[2])
        hp.Choice("head_width", [int(w) for w in self.widths])
        if frozen_base:
            hp.Choice("finetune_layers", [int(d) for d in self.depths])
        return hp


def _keras_tuner():
    try:
        import keras_tuner
    except ImportError as e:  # also six, which keras-tuner 1.4.8 imports without declaring it
        raise RuntimeError(f"--tune needs KerasTuner: pip install 'kerasimpl[tune]' (keras-tuner and six). "
                           f"Import failed: {e}") from e
    return keras_tuner


def apply(values, run, config, space=SearchSpace()):
    """`(run, config)` with a trial's hyperparameter `values` applied."""
    run = dataclasses.replace(run, head=HeadConfig(hidden=(int(values["head_width"]),),
                                                   dropout=float(values["dropout"])))
    config = dataclasses.replace(config, learning_rate=float(values["learning_rate"]))
    if "finetune_layers" in values:  # frozen base: depth 0 = no fine-tuning stage
        depth = int(values["finetune_layers"])
        searched = {"finetune_top_layers": depth, "finetune_from": None} if depth else {}  # a count replaces the block
        config = dataclasses.replace(config, **searched,
                                     finetune_epochs=max(config.finetune_epochs, space.finetune_epochs) if depth else 0)
    return run, config


def search(run, data, split, config, folder, trials, space=SearchSpace(), verbose=0, features_folder=None):
    """Random search of `space` for `run` on validation accuracy.

    Args:
        run: a `comparison.BackboneRun` (its head is replaced per trial).
        data, split: the dataset and its train/validation split; only
            `data.x_train` / `data.y_train` rows are read.
        config: the base `training.TrainConfig` (epochs, batch size, seed ...).
        folder: trials train under `folder/trial_<id>/`; the trials table is
            written by `write_trials`.
        trials: number of configurations tried.
        features_folder: where a frozen base's feature caches live (shared
            by all trials: the base is the same).

    Returns:
        A list of trial dicts (`trial`, the hyperparameters, `val_accuracy`,
        `val_loss`, `seconds`), best validation accuracy first (ties: lower
        validation loss first).
    """
    if int(trials) < 1:
        raise ValueError(f"trials must be >= 1. Received: {trials}")
    kt = _keras_tuner()
    oracle = kt.oracles.RandomSearchOracle(
        objective=kt.Objective("val_accuracy", direction="max"), max_trials=int(trials), seed=config.seed,
        hyperparameters=space.hyperparameters(frozen_base=plan_for(run, config).frozen_base))
    oracle.verbose = 0  # its progress display prints; ours is the trials table and the logger
    oracle._set_project_dir(folder, "oracle")  # the oracle's own state files (private API, stable since 1.1)
    done = []
    for _ in range(int(trials)):
        trial = oracle.create_trial(tuner_id="kerasimpl")
        if trial.status != "RUNNING":  # the space is exhausted
            break
        values = dict(trial.hyperparameters.values)
        start = time.perf_counter()
        trial_folder = os.path.join(folder, f"trial_{trial.trial_id}")
        shutil.rmtree(trial_folder, ignore_errors=True)  # never resume a stale trial's checkpoints
        scores = _train_and_validate(*apply(values, run, config, space), data, split, trial_folder, verbose,
                                     features_folder)
        seconds = time.perf_counter() - start
        oracle.update_trial(trial.trial_id, {"val_accuracy": scores["accuracy"]})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        done.append({"trial": trial.trial_id, **values, "val_accuracy": scores["accuracy"],
                     "val_loss": scores["loss"], "seconds": seconds})
    return sorted(done, key=lambda t: (-t["val_accuracy"], t["val_loss"]))  # ties: lower validation loss


def _train_and_validate(run, config, data, split, folder, verbose, features_folder):
    from kerasimpl.comparison import build_model

    plan = plan_for(run, config)
    model = build_model(run, data, plan)
    training.train_classifier(model, data, split, config, folder, verbose=verbose,
                              features_folder=features_folder or folder, plan=plan)
    probs = inference.predict(model, data.x_train, batch_size=config.extract_batch, indices=split.val,
                              workers=config.workers)
    return evaluation.classification_metrics(probs, np.asarray(data.y_train)[split.val])


def tune(run, data, split, config, out, trials, space=SearchSpace(), verbose=0, features_folder=None) -> dict:
    """`search` for `run.backbone` under `out/tuning/<backbone>/`, recorded; returns the chosen trial.

    Writes `out/tuning/<backbone>/trials.{csv,md}`, merges the trials into
    the run folder's `out/tuning.{csv,md}` (every backbone's), and saves the
    choice as `out/tuning/<backbone>/chosen.json`: when that exists (a
    resumed run) it is returned and nothing is searched again.
    """
    folder = os.path.join(out, "tuning", run.backbone)
    chosen_file = os.path.join(folder, "chosen.json")
    if os.path.exists(chosen_file):
        with open(chosen_file) as f:
            return json.load(f)
    done = search(run, data, split, config, folder, trials, space, verbose, features_folder)
    write_trials(os.path.join(folder, "trials"), run.backbone, done)
    write_trials(os.path.join(out, "tuning"), run.backbone, done)
    write_json(chosen_file, done[0])
    return done[0]


def write_trials(path_stem, backbone, trials):
    """The trials of one search, ranked, as `<stem>.csv` and `<stem>.md`;
    rows of other backbones already in `<stem>.csv` are kept."""
    rows = [{"backbone": backbone, "rank": i + 1, **t} for i, t in enumerate(trials)]
    if os.path.exists(path_stem + ".csv"):
        rows = [r for r in read_csv(path_stem + ".csv") if r["backbone"] != backbone] + rows
    write_csv(path_stem + ".csv", rows)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    from kerasimpl.reporting import markdown_grid

    lines = ["# Hyperparameter search (random, KerasTuner oracle), ranked by validation accuracy per backbone", ""]
    lines += markdown_grid(keys, [[_fmt(r.get(k)) for k in keys] for r in rows])
    write_text(path_stem + ".md", "\n".join(lines) + "\n")
    return rows


def _fmt(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-" if value in (None, "") else str(value)
    return f"{number:.4g}"
