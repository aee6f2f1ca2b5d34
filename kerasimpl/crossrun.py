"""Several `experiments.compare` runs (e.g. CIFAR-10 and TinyImageNet30) as one table and one figure.

A compare run folder holds `config.json` (resolved options, data source,
class names, device, versions), `results.json` (one row per model) and,
per row, `<run>/history.csv` (`<run>/seed<N>/history.csv` with `--seeds`).
`read_run` checks those and `runs_table` / `runs_figure` put every (model,
dataset) pair side by side, each row traced to its run's configuration
and device.
"""

from __future__ import annotations

import json
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kerasimpl.artifacts import read_csv


class RunFolderError(ValueError):
    """A folder that is not a finished compare run, or whose files disagree."""


# (key, column title, format) of the cross-run table.
COLUMNS = (
    ("dataset", "dataset", "{}"), ("model", "model", "{}"), ("trained", "trained", "{}"),
    ("weights", "weights", "{}"), ("image_size", "px", "{}"), ("num_classes", "classes", "{}"),
    ("num_train", "train", "{}"), ("num_val", "val", "{}"), ("num_test", "test", "{}"),
    ("test_accuracy", "test acc", "{:.2%}"), ("test_loss", "test loss", "{:.3f}"),
    ("val_accuracy", "val acc", "{:.2%}"), ("final_train_accuracy", "train acc (last)", "{:.2%}"),
    ("epochs_run", "epochs", "{}"), ("train_seconds", "train s", "{:.1f}"),
    ("preset", "preset", "{}"), ("device", "device", "{}"), ("backend", "backend", "{}"), ("run", "run folder", "{}"),
)


def _load_json(path, what):
    if not os.path.isfile(path):
        raise RunFolderError(f"{os.path.dirname(path)}: not a finished compare run (no {what}; compare writes "
                             "config.json first and results.json when every model is done)")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path}: not readable JSON ({e})") from e


def _mean(v):
    return float(v["mean"]) if isinstance(v, dict) else (None if v is None else float(v))


def read_run(folder) -> dict:
    """A compare run: `{"folder", "config", "dataset", "models": [...]}`, each
    model with its result numbers and `history` (the `history.csv` rows).

    Raises:
        RunFolderError: a missing folder or file, unreadable JSON, a result
            row whose model config.json does not list, or a missing history.
    """
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise RunFolderError(f"{folder}: no such run folder")
    config = _load_json(os.path.join(folder, "config.json"), "config.json")
    results = _load_json(os.path.join(folder, "results.json"), "results.json")
    if not isinstance(results, list) or not all(isinstance(r, dict) and "backbone" in r for r in results):
        raise RunFolderError(f"{folder}/results.json: expected a list of result rows with a 'backbone' each")
    # compare rows may be NAME:VARIANT (alexnet:scratch); a result's "backbone" is the NAME
    listed = [str(b).partition(":")[0] for b in config.get("backbones", [])]
    models = []
    for r in results:
        if r["backbone"] not in listed:
            raise RunFolderError(f"{folder}: results.json has {r['backbone']!r} but config.json lists {listed}; "
                                 "the files come from different runs")
        label = r.get("run", r["backbone"])
        sub = label if config.get("seeds", 1) == 1 else os.path.join(label, f"seed{config.get('seed', 0)}")
        history = os.path.join(folder, sub, "history.csv")
        if not os.path.isfile(history):
            raise RunFolderError(f"{history}: missing; results.json lists {label!r}, so its history should be here")
        models.append({**r, "model": label, "history": read_csv(history)})
    return {"folder": folder, "config": config, "dataset": dataset_label(config), "models": models}


def dataset_label(config) -> str:
    """`<source name> (<k> classes)`, e.g. `tiny-imagenet-200 (30 classes)`."""
    source = str(config.get("data_source") or config.get("data") or "?").rstrip("/")
    name = os.path.basename(source) or source
    for ext in (".tar.gz", ".zip", ".tgz"):
        name = name[: -len(ext)] if name.endswith(ext) else name
    return f"{name} ({len(config.get('class_names', []))} classes)"


def read_runs(folders) -> list:
    """`read_run` of each folder; same-named datasets get their folder name appended."""
    if len(set(os.path.abspath(f) for f in folders)) != len(folders):
        raise RunFolderError(f"the same run folder is given twice. Received: {list(folders)}")
    runs = [read_run(f) for f in folders]
    labels = [r["dataset"] for r in runs]
    for r in runs:
        if labels.count(r["dataset"]) > 1:
            r["dataset"] += f" [{os.path.basename(r['folder'])}]"
    return runs


def runs_table(runs) -> list:
    """One row per (run, model): its numbers and where they came from."""
    rows = []
    for run in runs:
        c = run["config"]
        split = c.get("split", {})
        for m in run["models"]:
            last = m["history"][-1] if m["history"] else {}
            rows.append({
                "dataset": run["dataset"], "model": m["model"], "trained": m.get("trained"),
                "weights": m.get("weights"), "image_size": m.get("image_size"),
                "num_classes": len(c.get("class_names", [])), "num_train": split.get("num_train"),
                "num_val": split.get("num_val"), "num_test": c.get("num_test"),
                "test_accuracy": _mean(m.get("test_accuracy")), "test_loss": _mean(m.get("test_loss")),
                "val_accuracy": _mean(m.get("val_accuracy")),
                "final_train_accuracy": float(last["accuracy"]) if last.get("accuracy") else None,
                "epochs_run": _mean(m.get("epochs_run")), "train_seconds": _mean(m.get("train_seconds")),
                "preset": c.get("preset"), "device": c.get("device"),
                "backend": c.get("versions", {}).get("backend"), "data_source": c.get("data_source"),
                "classes": c.get("classes"), "data_size": c.get("data_size"), "seed": c.get("seed"),
                "seeds": c.get("seeds", 1), "run": run["folder"],
            })
    return rows


def markdown(rows, title="Across runs") -> str:
    """The table as Markdown."""
    def cell(v, fmt):
        return "-" if v is None else fmt.format(int(v) if fmt == "{}" and isinstance(v, float) and v.is_integer()
                                                else v)
    from kerasimpl.reporting import markdown_grid

    lines = [f"# {title}", ""] + markdown_grid([t for _, t, _ in COLUMNS],
                                               [[cell(r.get(k), f) for k, _, f in COLUMNS] for r in rows])
    return "\n".join(lines) + "\n"


def runs_figure(runs, title="") -> Figure:
    """One figure: per model a column with accuracy (top) and loss (middle)
    curves, train solid and validation dashed, one colour per dataset; below,
    test accuracy per model, datasets side by side. `2 * models + 1` axes."""
    models = list(dict.fromkeys(m["model"] for run in runs for m in run["models"]))
    colours = {run["dataset"]: f"C{i}" for i, run in enumerate(runs)}
    fig = Figure(figsize=(4.5 * len(models) + 1, 10), layout="constrained")
    grid = fig.add_gridspec(3, len(models))
    for j, model in enumerate(models):
        for i, metric in enumerate(("accuracy", "loss")):
            ax = fig.add_subplot(grid[i, j])
            for run in runs:
                for m in (m for m in run["models"] if m["model"] == model):
                    step = np.arange(1, len(m["history"]) + 1)
                    for key, ls, part in ((metric, "-o", "train"), (f"val_{metric}", "--s", "val")):
                        vals = [float(h[key]) if h.get(key) not in (None, "") else np.nan for h in m["history"]]
                        ax.plot(step, vals, ls, ms=3, color=colours[run["dataset"]], label=f"{run['dataset']} {part}")
            ax.set(title=f"{model}: {metric}", xlabel="epoch (all stages in sequence)", ylabel=metric)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[2, :])
    width = 0.8 / len(runs)
    for k, run in enumerate(runs):
        acc = {m["model"]: _mean(m.get("test_accuracy")) for m in run["models"]}
        xs = np.arange(len(models)) + (k - (len(runs) - 1) / 2) * width
        heights = [acc.get(model, np.nan) for model in models]
        bars = ax.bar(xs, heights, width, color=colours[run["dataset"]], label=run["dataset"])
        ax.bar_label(bars, labels=["" if np.isnan(h) else f"{h:.1%}" for h in heights], fontsize=8)
    ax.set_xticks(np.arange(len(models)), models)
    ax.set(ylabel="test accuracy", title="test accuracy, datasets side by side", ylim=(0, 1.05))
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig
