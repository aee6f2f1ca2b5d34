"""Callbacks: resume-safe CSV history, atomic best checkpoint, timer, epoch sync.

Keras' own `CSVLogger` appends a row per epoch; after a kill between its
write and `BackupAndRestore`'s, a resumed run writes that epoch again.
`CSVHistory` keys rows by (stage, epoch) and rewrites the file atomically,
so a resumed run never duplicates or loses a row.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time

import keras
import numpy as np

from kerasimpl.artifacts import read_csv, save_model, write_csv, write_json, write_text


class CSVHistory(keras.callbacks.Callback):
    """Log `stage, epoch, <metrics>` to a CSV shared by all training stages.

    Args:
        path: the CSV file.
        stage: name of this training stage (`head`, `finetune`, ...).
    """

    def __init__(self, path, stage):
        super().__init__()
        self.path, self.stage = os.fspath(path), stage
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:  # First epoch of this run: drop rows it will redo.
            old = read_csv(self.path) if os.path.exists(self.path) else []
            self.rows = [r for r in old if r.get("stage") != self.stage or int(r["epoch"]) < epoch]

    def on_epoch_end(self, epoch, logs=None):
        row = {"stage": self.stage, "epoch": epoch}
        row.update({k: _scalar(v) for k, v in (logs or {}).items()})
        self.rows.append(row)
        write_csv(self.path, self.rows)


def _scalar(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model as `.keras` whenever `monitor` improves (atomically).

    Args:
        path: `.keras` destination; `None` keeps the best score only (a
            process that does not write, under data parallelism).
        monitor: metric to watch, e.g. `val_accuracy`.
        mode: `max` or `min`.
        saved_model: the model to save, when `fit` trains a part of it
            (fine-tuning on cached activations trains the top; the file is
            the whole classifier). Default: the model being fitted.
    """

    def __init__(self, path, monitor="val_accuracy", mode="max", saved_model=None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'. Received: mode={mode!r}")
        self.path, self.monitor, self.mode = None if path is None else os.fspath(path), monitor, mode
        self.saved_model = saved_model
        self.best = -math.inf if mode == "max" else math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        losses = [logs[k] for k in ("loss", "val_loss") if k in logs]
        if value is None or not all(math.isfinite(float(v)) for v in [value, *losses]):
            return  # never save a model whose loss went NaN
        better = value > self.best if self.mode == "max" else value < self.best
        if better:
            self.best = float(value)
            if self.path is not None:
                save_model(self.saved_model or self.model, self.path)


class Timer(keras.callbacks.Callback):
    """Add `epoch_seconds` to the logs and keep the total in `seconds`."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        dt = time.perf_counter() - self._start
        self.seconds += dt
        if logs is not None:
            logs["epoch_seconds"] = dt


class EpochSync(keras.callbacks.Callback):
    """Tell an `ArrayDataset` which epoch is starting (exact shuffles on resume)."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.start_epoch(epoch)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup survives a kill at any instant, and
    that also carries the state of the callbacks it `track`s.

    Keras writes `latest.weights.h5` in place, so a SIGKILL during the write
    leaves a file that cannot be loaded, and the weights and the epoch
    counter can disagree. Here each backup is a complete folder
    `epoch-<n>-batch-<m>/` (weights, then metadata), and only afterwards a
    one-line pointer `latest` is replaced atomically; a resumed run loads the
    folder the pointer names, which is always whole.

    Keras' backup holds weights, optimizer and epoch only, so a resumed run
    would restart `EarlyStopping`'s patience (and forget its best weights),
    `ReduceLROnPlateau`'s wait and cooldown, and `BestCheckpoint`'s best
    value, and could stop at another epoch, or overwrite the best checkpoint
    with a worse model. Their state goes into the same folder.

    Args:
        backup_dir: folder of the backups.
        track: callbacks whose state to keep: `EarlyStopping`,
            `ReduceLROnPlateau`, `BestCheckpoint`. Put them before this
            callback in the list, so their `on_train_begin` reset runs first.
        save: `False`: restore from the backups, never write them (a
            process that does not write, under data parallelism).
        **kwargs: passed to `keras.callbacks.BackupAndRestore`.
    """

    def __init__(self, backup_dir, track=(), save=True, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.track, self.save = list(track), save
        for cb in self.track:
            _state_attributes(cb)  # fail now on a callback we cannot carry

    def _pointer(self):
        return os.path.join(self.backup_dir, "latest")

    def _save_model(self):
        if not self.save:
            return
        slot = os.path.join(self.backup_dir, f"epoch-{self._current_epoch}-batch-{self._last_batch_seen}")
        os.makedirs(slot, exist_ok=True)
        from kerasimpl import distributed

        with distributed.alone():  # rank 0 saves by itself under any distribution
            self.model.save_weights(os.path.join(slot, "model.weights.h5"), overwrite=True)
        states = []
        for i, cb in enumerate(self.track):
            states.append({"kind": type(cb).__name__,
                           **{a: _plain(getattr(cb, a, None)) for a in _state_attributes(cb)}})
            best_weights = getattr(cb, "best_weights", None)
            if best_weights is not None:  # the slot is published only below, whole
                np.savez(os.path.join(slot, f"callback-{i}-best-weights.npz"), *best_weights)
        write_json(os.path.join(slot, "training_metadata.json"),
                   {"epoch": self._current_epoch, "batch": self._last_batch_seen, "callbacks": states})
        previous = self._latest_slot()
        write_text(self._pointer(), os.path.basename(slot))
        if previous and previous != slot:
            shutil.rmtree(previous, ignore_errors=True)

    def _latest_slot(self):
        if not os.path.exists(self._pointer()):
            return None
        with open(self._pointer()) as f:
            return os.path.join(self.backup_dir, f.read().strip())

    def _load_model(self):
        slot = self._latest_slot()
        if slot is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(slot, "model.weights.h5"))
        with open(os.path.join(slot, "training_metadata.json")) as f:
            meta = json.load(f)
        from kerasimpl import compat

        compat.set_initial_epoch(self.model, meta["epoch"])
        states = meta.get("callbacks", [])
        slot_of = {}  # callback kind -> its state's position in the backup
        for i, state in enumerate(states):
            slot_of.setdefault(state.get("kind"), i)
        if None in slot_of:  # a backup from before states named their callback: by position, same count only
            pairs = list(enumerate(self.track)) if len(states) == len(self.track) else []
        else:  # each tracked callback takes the state of its kind (another schedule may track fewer)
            pairs = [(slot_of[type(cb).__name__], cb) for cb in self.track if type(cb).__name__ in slot_of]
        for i, cb in pairs:
            for name, value in states[i].items():
                if name != "kind":
                    setattr(cb, name, value)
            path = os.path.join(slot, f"callback-{i}-best-weights.npz")
            if os.path.exists(path):
                with np.load(path) as z:
                    cb.best_weights = [z[f"arr_{j}"] for j in range(len(z.files))]


def _state_attributes(callback):
    """The attributes that make up `callback`'s state across epochs."""
    for kind, names in (
        (keras.callbacks.EarlyStopping, ("wait", "best", "best_epoch", "stopped_epoch")),
        (keras.callbacks.ReduceLROnPlateau, ("wait", "best", "cooldown_counter")),
        (BestCheckpoint, ("best",)),
    ):
        if isinstance(callback, kind):
            return names
    raise ValueError(
        "AtomicBackupAndRestore can carry the state of EarlyStopping, ReduceLROnPlateau and "
        f"BestCheckpoint. Received: {type(callback).__name__}"
    )


def _plain(value):
    """A JSON-able copy of a callback attribute (numbers, inf, None)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return float(value)


class CosineDecay(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every step: cosine decay from
    `initial` to 0 over `epochs` epochs (`keras.optimizers.schedules.CosineDecay`
    with alpha 0, set by a callback so that a resumed stage, whose epoch and batch
    numbers Keras replays, gets the same rates). Epochs of unknown length decay
    per epoch."""

    def __init__(self, initial, epochs):
        super().__init__()
        self.initial, self.epochs, self.epoch = float(initial), int(epochs), 0

    def rate(self, epoch, batch=0, steps=None):
        """The learning rate of step `batch` of epoch `epoch` (`steps` per epoch; `None`: per epoch)."""
        t = (epoch + (batch / steps if steps else 0.0)) / max(self.epochs, 1)
        return self.initial * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        # Through `self.model` on every batch: on JAX that property syncs the trainer's state first, and the
        # loop re-reads the assigned rate before the step (a cached optimizer would set a stale copy).
        self.model.optimizer.learning_rate = self.rate(self.epoch, batch, self.params.get("steps"))

    def on_epoch_end(self, epoch, logs=None):  # the epoch's last rate in its logs, as ReduceLROnPlateau's
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """`TerminateOnNaN` that also records that it fired (`self.fired`)."""

    fired = False

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.fired = True
        super().on_batch_end(batch, logs)


def standard_callbacks(folder, stage, dataset=None, patience=3, checkpoint=True, saved_model=None, writes=True,
                       lr_schedule=None):
    """The callbacks every kerasimpl training stage uses.

    `lr_schedule`: a callback that sets the learning rate itself (`CosineDecay`);
    it replaces the `ReduceLROnPlateau` the stage has otherwise.

    `writes=False` (a process other than rank 0 under data parallelism):
    the same decisions (early stopping, learning rate, the best score, the
    backup restored on resume), no file written. `folder=None`: the same
    decisions in memory, nothing written and nothing restored.

    Returns:
        `(callbacks, timer, nan_guard)`: the list for `fit`, plus the timer
        and NaN guard to read afterwards.
    """
    writes = writes and folder is not None
    timer, nan_guard = Timer(), NaNGuard()
    early_stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                               restore_best_weights=True)
    if lr_schedule is None:
        reduce_lr = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                      patience=max(1, patience // 2), verbose=0)
        tracked, cbs = [reduce_lr, early_stop], [timer, nan_guard, reduce_lr, early_stop]
    else:
        tracked, cbs = [early_stop], [timer, nan_guard, lr_schedule, early_stop]
    if checkpoint:
        best = BestCheckpoint(os.path.join(folder, f"best_{stage}.keras") if writes else None, saved_model=saved_model)
        cbs.append(best)
        tracked.append(best)
    if writes:
        cbs.append(CSVHistory(os.path.join(folder, "history.csv"), stage))
    if folder is not None:  # last: it restores the tracked callbacks' state after their own reset
        cbs.append(AtomicBackupAndRestore(os.path.join(folder, f"backup_{stage}"), track=tracked, save=writes,
                                          delete_checkpoint=writes))
    if hasattr(dataset, "start_epoch"):
        cbs.insert(0, EpochSync(dataset))
    return cbs, timer, nan_guard
