"""The comparison figure: labels inside the frame, axes that do not exaggerate."""

import numpy as np
import pytest

from kerasimpl import plotting


def _result(name, seconds, accuracy, params):
    return {"backbone": name, "train_seconds": seconds, "test_accuracy": accuracy, "params_total": params}


def _labels_inside(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    frame = fig.bbox
    legend = fig.axes[0].get_legend()
    for text in [*fig.axes[0].texts, *(legend.get_texts() if legend else [])]:
        box = text.get_window_extent(renderer)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, \
            (text.get_text(), box, frame)


@pytest.mark.parametrize("results", [
    # The smoke run: 63 s and 67.5 s, the slower one top right (its label ran off the frame).
    [_result("mobilenetv2", 63.0, 0.206, 400_000), _result("smallcnn-with-a-long-name", 67.5, 0.94, 300_000)],
    [_result("a", 10.0, 0.5, 1e6), _result("b", 20_000.0, 0.99, 1.4e8), _result("c", 300.0, 0.0, 3e6)],
])
def test_comparison_labels_stay_inside_the_figure(results):
    _labels_inside(plotting.comparison(results, "a title"))


def test_comparison_numbers_the_points_and_its_legend_names_every_row():
    results = [_result("efficientnetlite0", 73.0, 0.86, 3.7e6),
               _result("efficientnetlite0-linear-probe", 9.6, 0.854, 3.4e6),
               _result("efficientnetlite1", 72.0, 0.85, 4.5e6)]  # close points: the run that overlapped its labels
    ax = plotting.comparison(results).axes[0]
    assert [t.get_text() for t in ax.texts] == ["1", "2", "3"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["1  efficientnetlite0: 86.0%, 73 s, 3.7M params",
                      "2  efficientnetlite0-linear-probe: 85.4%, 10 s, 3.4M params",
                      "3  efficientnetlite1: 85.0%, 72 s, 4.5M params"]
    np.testing.assert_allclose(ax.texts[1].xy, (9.6, 85.4))


def test_comparison_axes_start_at_zero_unless_times_differ_by_orders_of_magnitude():
    near = plotting.comparison([_result("a", 63.0, 0.2, 1e6), _result("b", 67.5, 0.54, 1e6)]).axes[0]
    assert near.get_xscale() == "linear" and near.get_xlim()[0] == 0 and near.get_ylim()[0] == 0
    assert near.get_xlim()[1] >= 67.5 and near.get_ylim()[1] >= 54
    far = plotting.comparison([_result("a", 10.0, 0.2, 1e6), _result("b", 27_000.0, 0.7, 1e6)]).axes[0]
    assert far.get_xscale() == "log" and far.get_xlim()[0] < 10 < 27_000 < far.get_xlim()[1]
    assert "log" in far.get_xlabel()


def test_comparison_reads_seed_averaged_rows():
    row = {"backbone": "a", "train_seconds": {"mean": 5.0, "std": 1.0}, "test_accuracy": {"mean": 0.5, "std": 0.1},
           "params_total": {"mean": 1e6, "std": 0.0}}
    ax = plotting.comparison([row]).axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets()[0], [5.0, 50.0])


def test_comparison_draws_the_seed_spread_and_the_test_sets_interval():
    from kerasimpl.evaluation import wilson_interval

    row = {"backbone": "a", "train_seconds": {"mean": 5.0, "std": 1.0}, "test_accuracy": {"mean": 0.9, "std": 0.02},
           "params_total": {"mean": 1e6, "std": 0.0}, "num_test": {"mean": 500, "std": 0.0}}
    single = {**_result("b", 8.0, 0.8, 1e6), "num_test": 500}
    ax = plotting.comparison([row, single]).axes[0]
    interval = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    spans = sorted(tuple(np.round(seg[:, 1], 6)) for c in interval for seg in c.get_segments())
    expected = sorted(tuple(np.round(100 * np.array(wilson_interval(a, 500)), 6)) for a in (0.9, 0.8))
    seed_bars = [tuple(np.round(seg[:, 1], 6)) for seg in ax.containers[0].lines[2][0].get_segments()]
    assert len(ax.containers) == 1 and seed_bars == [(88.0, 92.0)]  # the single draw has no seed bar
    assert set(expected) <= set(spans)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("1  a: 90.0% ± 2.0, 5 s") and legend[1].startswith("2  b: 80.0%, 8 s")
