"""Figures: learning curves, confusion matrices, comparison, saliency overlays.

Built on `matplotlib.figure.Figure` (no pyplot): no window, no global state,
safe in any thread. Every function returns the figure; `save_figure` in
`kerasimpl.artifacts` writes it atomically.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def learning_curves(rows, title="") -> Figure:
    """Loss and accuracy per epoch, train vs validation, stages in sequence.

    Args:
        rows: `history.csv` rows (dicts with `stage`, `epoch`, `loss`,
            `accuracy`, `val_loss`, `val_accuracy`).
    """
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    step = np.arange(1, len(rows) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            vals = [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]
            ax.plot(step, vals, style, ms=3, label="validation" if key.startswith("val") else "train")
        stages = [r["stage"] for r in rows]
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                ax.axvline(i + 0.5, color="grey", lw=0.8, ls=":")
                ax.text(i + 0.6, ax.get_ylim()[1], stages[i], va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def learning_curves_overlay(histories, title="") -> Figure:
    """Every model's curves on one figure: accuracy and loss per epoch, one
    colour per model, train solid and validation dashed (stages in sequence).

    Args:
        histories: `{label: history.csv rows}`, in legend order.
    """
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for i, (label, rows) in enumerate(histories.items()):
            step = np.arange(1, len(rows) + 1)
            for key, style, part in ((metric, "-o", "train"), (f"val_{metric}", "--s", "validation")):
                vals = [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]
                ax.plot(step, vals, style, ms=3, color=f"C{i % 10}", label=f"{label} {part}")
        ax.set(xlabel="epoch (all stages in sequence)", ylabel=metric, title=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def confusion_matrix(matrix, class_names, title="") -> Figure:
    """Row-normalised confusion matrix with counts in the cells."""
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig = Figure(figsize=(0.6 * k + 3, 0.6 * k + 2))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    ax.set_title(title)
    return fig


def comparison(results, title="") -> Figure:
    """Test accuracy against training time; marker area ~ parameter count.

    Both axes start at zero, so a 7% difference in time looks like 7%; when
    the times span more than 30x the time axis is logarithmic instead. Each
    point carries its row's number; the legend beside the axes names the rows
    (run, parameters, accuracy, seconds), so close points never hide each
    other's labels. Two vertical bars say which differences are real: a thin
    light one, the test set's own 95% interval (Wilson, where a row gives
    `num_test`), and a dark capped one, ± one standard deviation over
    training seeds (seed-averaged rows); the legend quotes the std.
    """
    from kerasimpl.evaluation import wilson_interval

    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    params = np.array([_mean(r["params_total"]) for r in results], dtype=float)
    sizes = 60 + 600 * params / max(params.max(), 1)
    xs = np.array([_mean(r["train_seconds"]) for r in results], dtype=float)
    ys = np.array([100 * _mean(r["test_accuracy"]) for r in results], dtype=float)
    positive = xs[xs > 0]
    log = positive.size > 1 and positive.max() / positive.min() > 30
    if log:
        ax.set_xscale("log")
        ax.set_xlim(positive.min() / 2, positive.max() * 2)
    else:
        ax.set_xlim(0, max(xs.max(), 1e-9) * 1.1)
    ax.set_ylim(0, min(100.0, max(ys.max(), 1.0) * 1.1) if ys.max() < 95 else 100.0)
    colors = matplotlib.colormaps["tab10" if len(results) <= 10 else "tab20"].colors
    for i, (r, x, y, s) in enumerate(zip(results, xs, ys, sizes)):
        color = colors[i % len(colors)]
        std = r["test_accuracy"].get("std") if isinstance(r["test_accuracy"], dict) else None
        spread = f" ± {100 * std:.1f}" if std else ""
        label = (f"{i + 1}  {r.get('run', r['backbone'])}: {y:.1f}%{spread}, {x:.0f} s, "
                 f"{_mean(r['params_total']) / 1e6:.1f}M params")
        ax.scatter(x, y, s=s, alpha=0.55, color=color, edgecolors="black", linewidths=0.5, label=label)
        n = r.get("num_test")
        if n:
            low, high = wilson_interval(min(max(y / 100, 0.0), 1.0), int(_mean(n)))
            ax.vlines(x, 100 * low, 100 * high, color="0.45", alpha=0.7, linewidth=2.5, zorder=2)
        if std:
            ax.errorbar(x, y, yerr=100 * std, fmt="none", ecolor="black", elinewidth=1.0, capsize=3, zorder=3)
        ax.annotate(str(i + 1), (x, y), xytext=(-10, 8), textcoords="offset points", ha="center", va="center",
                    fontsize=8, fontweight="bold", zorder=4)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False, markerscale=0.5,
              title="row: test acc (± std over seeds), train s, size\n"
                    "bars: black ± std over seeds, grey the test set's 95% interval",
              title_fontsize=8)
    ax.set_xlabel("training time (s)" + (", log scale" if log else ""))
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10, wrap=True)
    return fig


def _mean(v):
    return v["mean"] if isinstance(v, dict) else v


def saliency_overlay(image, maps, title="") -> Figure:
    """The image, then each map (name -> 2-D array) over it, with colour bars.

    Maps of another size than the image are stretched over it (nearest).
    """
    image = np.asarray(image)
    fig = Figure(figsize=(4 * (1 + len(maps)), 4))
    axes = np.atleast_1d(fig.subplots(1, 1 + len(maps)))
    axes[0].imshow(image.astype(np.uint8) if image.dtype != np.uint8 else image)
    axes[0].set_title("input")
    h, w = image.shape[:2]
    for ax, (name, m) in zip(axes[1:], maps.items()):
        ax.imshow(image.astype(np.uint8), alpha=1.0)
        im = ax.imshow(np.asarray(m), cmap="jet", alpha=0.5, extent=(0, w, h, 0), interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(name)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    return fig


def saliency_gallery(images, row_titles, columns, title="", cell_titles=None) -> Figure:
    """A grid: one row per image, the image first, then one column per map set.

    Args:
        images: (N, H, W, 3) images (any size; maps are stretched over them).
        row_titles: N labels, e.g. "true: cat / pred: dog (0.61)".
        columns: column title -> N importance maps in [0, 1] (methods, or
            backbones), drawn over the image with one shared colour bar.
    """
    images = [np.asarray(im) for im in images]
    n, k = len(images), len(columns)
    lines = max([1] + [str(t).count("\n") + 1 for t in row_titles])  # caption lines above each row
    # Constrained layout places every caption between its row and the one above (no overlap) and the
    # title right over the first row.
    fig = Figure(figsize=(2.2 * (1 + k) + 0.9, (2.2 + 0.16 * lines) * n + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(n, 1 + k, squeeze=False))
    im = None
    for i, image in enumerate(images):
        shown = image.astype(np.uint8) if image.dtype != np.uint8 else image
        h, w = shown.shape[:2]
        axes[i, 0].imshow(shown, interpolation="nearest")
        axes[i, 0].set_title(row_titles[i], fontsize=7)
        for j, (name, maps) in enumerate(columns.items(), start=1):
            axes[i, j].imshow(shown, interpolation="nearest")
            im = axes[i, j].imshow(np.asarray(maps[i]), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0,
                                   extent=(0, w, h, 0), interpolation="bilinear")
            caption = (cell_titles or {}).get(name)
            label = (f"{name}\n" if i == 0 else "") + (caption[i] if caption else "")
            if label:
                axes[i, j].set_title(label, fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=min(1.0, 3.0 / n), label="importance (per map, 0-1)")
    fig.suptitle(title, fontsize=10)
    return fig
