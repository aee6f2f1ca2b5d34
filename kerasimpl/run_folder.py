"""What a run writes, in one place: a training's stages and a comparison row's results.

Library functions return results; the two folders below are the run
layer's objects that persist them, and nothing else in the training and
comparison code opens a file for writing.

- `StageFolder` is what `training.train_classifier` writes through: each
  finished stage's weights and seconds (so a rerun skips it), a stage's
  record (the linear probe's chosen strength, how fine-tuning split the
  model), and the callbacks that log the history, keep the best checkpoint
  and back a stage up mid-way. `StageFolder(None)` keeps it all in memory
  and writes nothing.
- `RowFolder` is a comparison row's: the saved model, its figures and
  `result.json`, the file whose presence means the row is finished.

Under data parallelism only the writing process (rank 0,
`distributed.is_writer`) writes; the others read the same folder and make
the same decisions.
"""

from __future__ import annotations

import json
import os

from kerasimpl import distributed
from kerasimpl.artifacts import read_csv, save_figure, save_model, save_weights, write_csv, write_json
from kerasimpl.callbacks import standard_callbacks

STAGE_TIMES = "stages.json"
HISTORY = "history.csv"
RESULT = "result.json"
MODEL = "model.keras"


class StageFolder:
    """Where one staged training keeps what a rerun needs.

    Files (under `path`): `<stage>.weights.h5` and `stages.json` (seconds
    per finished stage), `<name>.json` per record, `history.csv` (one row
    per stage and epoch), `best_<stage>.keras`, `backup_<stage>/`.

    Args:
        path: the folder; `None`: nothing is written and nothing resumes.
        writes: whether this process writes (default: it is the writing
            process of the run, `distributed.is_writer()`).
    """

    def __init__(self, path=None, writes=None):
        self.path = None if path is None else os.fspath(path)
        self.writes = self.path is not None and (distributed.is_writer() if writes is None else writes)
        self.seconds = {}
        self._records = {}
        if self.path is not None:  # the folder itself is made by the first write
            times = os.path.join(self.path, STAGE_TIMES)
            if os.path.exists(times):
                with open(times) as f:
                    self.seconds = json.load(f)

    @classmethod
    def of(cls, folder) -> "StageFolder":
        """`folder` itself if it is a `StageFolder`, else `StageFolder(folder)` (a path or `None`)."""
        return folder if isinstance(folder, StageFolder) else cls(folder)

    def file(self, name) -> str | None:
        """The path of `name` in the folder (`None` without a folder)."""
        return None if self.path is None else os.path.join(self.path, name)

    def finished(self, stage) -> bool:
        """Whether `stage` finished in an earlier run into this folder (weights and seconds both there)."""
        return self.path is not None and stage in self.seconds and os.path.exists(self.file(f"{stage}.weights.h5"))

    def restore(self, stage, model):
        """Load the weights `stage` finished with into `model`."""
        model.load_weights(self.file(f"{stage}.weights.h5"))

    def finish(self, stage, model, seconds):
        """`stage` is done after `seconds`: keep its weights and time so a rerun skips it."""
        self.seconds[stage] = seconds
        if self.writes:
            save_weights(model, self.file(f"{stage}.weights.h5"))
            write_json(self.file(STAGE_TIMES), self.seconds)

    def callbacks(self, stage, dataset=None, patience=3, saved_model=None, lr_schedule=None):
        """`callbacks.standard_callbacks` writing into this folder: `(callbacks, timer, nan_guard)`."""
        return standard_callbacks(self.path, stage, dataset=dataset, patience=patience, saved_model=saved_model,
                                  writes=self.writes, lr_schedule=lr_schedule)

    def record(self, name, value):
        """Keep a stage's record (a JSON object) as `<name>.json`."""
        self._records[name] = value
        if self.writes:
            write_json(self.file(f"{name}.json"), value)

    def read_record(self, name):
        """A record kept by this run or an earlier one into the folder; `None` if there is none."""
        if name not in self._records and self.path is not None and os.path.exists(self.file(f"{name}.json")):
            with open(self.file(f"{name}.json")) as f:
                self._records[name] = json.load(f)
        return self._records.get(name)

    def add_history(self, rows):
        """Append rows (dicts with `stage` and `epoch`) to the history a callback-less stage made."""
        if self.writes:
            path = self.file(HISTORY)
            keep = read_csv(path) if os.path.exists(path) else []
            stages = {r["stage"] for r in rows}
            write_csv(path, [r for r in keep if r.get("stage") not in stages] + list(rows))

    def history(self) -> list:
        """The history's rows (`[]` without a folder or before any epoch)."""
        path = self.file(HISTORY)
        return read_csv(path) if path is not None and os.path.exists(path) else []


class RowFolder:
    """A comparison row's folder: `model.keras`, `result.json`, its figures, and its `StageFolder`.

    `result.json` is written last: its presence means the row finished and a
    resumed run reads it instead of training again (`finished_result`).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.writes = distributed.is_writer()  # as `comparison.measure` decides who measures
        self._stages = None

    @property
    def stages(self) -> StageFolder:
        """The row's training stages (read when first asked: after `finished_result`, nothing is read)."""
        if self._stages is None:
            self._stages = StageFolder(self.path, writes=self.writes)
        return self._stages

    @property
    def model_path(self) -> str:
        return os.path.join(self.path, MODEL)

    def finished_result(self):
        """The result of a row that finished earlier (all processes agree), else `None` (`read_result`)."""
        path = os.path.join(self.path, RESULT)
        if not distributed.agree(os.path.exists(path), f"whether {path} exists"):
            return None
        return read_result(path)

    def keep_model(self, model):
        """The trained model as a float32 `.keras` file (whatever the training policy)."""
        if self.writes:
            save_model(model, self.model_path)

    def finish(self, result, figures=()):
        """Write the row's figures (`(file name, matplotlib figure)` pairs) and then `result.json`."""
        if not self.writes:
            return
        for name, figure in figures:
            save_figure(figure, os.path.join(self.path, name))
        write_json(os.path.join(self.path, RESULT), result)


def read_result(path) -> dict:
    """A finished row's `result.json`, read back.

    Raises:
        ValueError: the file cannot be read or is not a kerasimpl result (names the file and says to
            delete it to train the row again).
    """
    try:
        with open(path) as f:
            result = json.load(f)
        if not isinstance(result, dict) or not {"backbone", "test_accuracy", "train_seconds"} <= set(result):
            raise ValueError("not a kerasimpl result (an object with backbone, test_accuracy, ...)")
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{path}: a finished backbone's result cannot be read ({type(e).__name__}: "
                         f"{' '.join(str(e).split())}). Delete that file to train the backbone again") from e
    return result
