"""Comparison tables: one row per backbone, as Markdown, CSV and JSON."""

from __future__ import annotations

import os

import numpy as np

from kerasimpl.artifacts import write_csv, write_json, write_text

# (key in a result, column title, format) for the side-by-side table.
COLUMNS = (
    ("backbone", "backbone", "{}"),
    ("weights", "weights", "{}"),
    ("trained", "trained", "{}"),
    ("image_size", "px", "{}"),
    ("test_accuracy", "test acc", "{:.2%}"),
    ("test_accuracy_ci95", "test 95% CI", "{:.1%}"),
    ("test_loss", "test loss", "{:.3f}"),
    ("top5_accuracy", "top-5", "{:.2%}"),
    ("val_accuracy", "val acc", "{:.2%}"),
    ("train_seconds", "train s", "{:.1f}"),
    ("extract_seconds", "extract s", "{:.1f}"),
    ("params_total", "params", "{:,}"),
    ("params_trainable", "trainable", "{:,}"),
    ("model_mb", "size MB", "{:.1f}"),
    ("images_per_second", "img/s", "{:.0f}"),
)


def _cell(value, fmt):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, dict):  # mean +- std over seeds
        return f"{fmt.format(value['mean'])} ± {fmt.format(value['std'])}"
    if isinstance(value, (list, tuple)):  # an interval
        return "-".join(fmt.format(v) for v in value)
    return fmt.format(value)


def _value(v):
    return v["mean"] if isinstance(v, dict) else v


def with_interval(result) -> dict:
    """`result` with `test_accuracy_ci95`: the Wilson 95% interval of its (mean) test accuracy over its
    `num_test` images (`kerasimpl.evaluation.wilson_interval`), where both are known."""
    from kerasimpl.evaluation import wilson_interval

    accuracy, n = _value(result.get("test_accuracy")), _value(result.get("num_test"))
    if accuracy is None or not n:
        return dict(result)
    return {**result, "test_accuracy_ci95": list(wilson_interval(float(accuracy), int(n)))}


def markdown_grid(heads, rows) -> list:
    """The lines of a Markdown table: the header, the separator, one line per row (cells as strings).
    Every Markdown table kerasimpl and its experiments write goes through this."""
    return (["| " + " | ".join(heads) + " |", "| " + " | ".join("---" for _ in heads) + " |"]
            + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_table(results, title=None, note=None) -> str:
    """A Markdown table of `results` (a list of dicts, one per backbone)."""
    cols = [c for c in COLUMNS if any(c[0] in r for r in results)]
    lines = [f"# {title}", ""] if title else []
    if note:
        lines += [note, ""]
    lines += markdown_grid([c[1] for c in cols], [[_cell(r.get(k), f) for k, _, f in cols] for r in results])
    return "\n".join(lines) + "\n"


def flat_row(result) -> dict:
    """A result without nested lists, for CSV (per-class scores dropped)."""
    row = {}
    for k, v in result.items():
        if isinstance(v, dict) and set(v) == {"mean", "std"}:
            row[k], row[f"{k}_std"] = v["mean"], v["std"]
        elif k.endswith("_ci95") and isinstance(v, (list, tuple)) and len(v) == 2:
            row[f"{k}_low"], row[f"{k}_high"] = v
        elif not isinstance(v, (list, dict)):
            row[k] = v
    return row


def write_tables(folder, results, title="Backbone comparison", note=None):
    """Write `results.json`, `results.csv` and `results.md` into `folder` (each row with its test
    accuracy's 95% interval, `with_interval`)."""
    results = [with_interval(r) for r in results]
    write_json(os.path.join(folder, "results.json"), results)
    write_csv(os.path.join(folder, "results.csv"), [flat_row(r) for r in results])
    write_text(os.path.join(folder, "results.md"), markdown_table(results, title, note))


# What a row's model is, not what a run measured: one value when every seed agrees ("32", not "32.0 ± 0.0").
MODEL_FIELDS = ("image_size", "params_total", "params_trainable", "model_mb", "num_test")


def aggregate_seeds(runs) -> dict:
    """Mean and standard deviation of every numeric field over seed runs (`MODEL_FIELDS` that every run
    shares stay one number)."""
    out = dict(runs[0])
    for k, v in runs[0].items():
        if k in MODEL_FIELDS and all(r[k] == v for r in runs):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed":
            vals = np.array([r[k] for r in runs], dtype=float)
            out[k] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
    out["seeds"] = [r.get("seed") for r in runs]
    return out
