"""The batched quality engine (`kerasimpl.saliency.quality`), its bootstrap
intervals (`kerasimpl.saliency.intervals`) and tables (`quality_tables`).

Known answers: the batched curves equal the curves built image by image
from the model itself; the bootstrap of constant or shifted values has the
interval it must; the table's means, intervals and differences agree with
its own per-image values.
"""

import numpy as np
import pytest
from keras import ops

from kerasimpl import saliency
from kerasimpl.saliency import intervals, quality
from kerasimpl.saliency.quality_tables import differences_csv, per_image_csv, quality_csv, quality_markdown
from kerasimpl.saliency.report import gallery_rows


def direct_curves(model, image, importance, target, steps, fill):
    """Deletion and insertion built one perturbed image at a time, scored by `model(x)` itself."""
    h, w = image.shape[:2]
    order = np.argsort(-importance.ravel(), kind="stable")
    dele, ins = [], []
    for k in range(steps + 1):
        removed = np.zeros(h * w, bool)
        removed[order[:round(k / steps * h * w)]] = True
        removed = removed.reshape(h, w, 1)
        for curve, x in ((dele, np.where(removed, fill, image)), (ins, np.where(removed, image, fill))):
            curve.append(float(ops.convert_to_numpy(model(x[None].astype("float32")))[0, target]))
    return np.array(dele), np.array(ins)


@pytest.fixture(scope="module")
def setting():
    from conftest import _reference_model

    model = _reference_model()
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    maps = rng.random((5, 32, 32)).astype("float32")
    maps[0] = np.round(maps[0] * 4) / 4  # ties: the stable order decides
    return model, x, maps, [0, 1, 2, 3, 4]


@pytest.mark.parametrize("batch_size,steps,fill", [(3, 7, 0.0), (64, 20, 127.0), (1, 1, 0.0)])
def test_batched_curves_equal_the_curves_built_image_by_image(setting, batch_size, steps, fill):
    """Perturbed images of several images and steps share batches (3 does not divide 2 x 6 x 5);
    the result is what each image's own curve, scored by the model directly, gives."""
    model, x, maps, targets = setting
    got = saliency.deletion_insertion_curves(model, x, maps, targets, steps=steps, fill=fill, batch_size=batch_size)
    area = getattr(np, "trapezoid", None) or np.trapz
    for i in range(len(x)):
        dele, ins = direct_curves(model, x[i], maps[i], targets[i], steps, fill)
        np.testing.assert_allclose(got["deletion"][i], dele, atol=2e-6)
        np.testing.assert_allclose(got["insertion"][i], ins, atol=2e-6)
        assert got["deletion_auc"][i] == pytest.approx(area(dele, np.linspace(0, 1, steps + 1)), abs=2e-6)
        one = saliency.deletion_insertion(model, x[i], maps[i], targets[i], steps=steps, fill=fill)
        assert one["insertion_auc"] == pytest.approx(got["insertion_auc"][i], abs=2e-6)


class CountingForward:
    """A stand-in for `Forward`: records every batch size; probabilities = per-image means, known."""

    def __init__(self):
        self.sizes = []

    def __call__(self, batch):
        self.sizes.append(len(batch))
        m = batch.reshape(len(batch), -1).mean(1)
        return np.stack([m, 1 - m], 1)


def test_scorer_runs_batches_of_at_most_batch_size_and_reads_items_lazily(setting):
    model = setting[0]
    scorer = quality.Scorer(model, batch_size=4)
    scorer.forward = CountingForward()
    produced = []

    def items():
        for i in range(10):
            produced.append(i)
            assert len(produced) - 4 * len(scorer.forward.sizes) <= 4  # never more than one batch held
            yield np.full((2, 2, 1), i / 10, np.float32), i % 2

    got = scorer.target_probabilities(items())
    assert scorer.forward.sizes == [4, 4, 2]
    np.testing.assert_allclose(got, [i / 10 if i % 2 == 0 else 1 - i / 10 for i in range(10)], atol=1e-7)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1. Received: batch_size=0"):
        quality.Scorer(model, batch_size=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1. Received: steps=0"):
        saliency.deletion_insertion_curves(model, setting[1][:1], setting[2][:1], [0], steps=0)


def test_curve_ends_are_the_image_and_the_blank_for_every_map(setting):
    """Fraction 0 of deletion and 1 of insertion: the image's own probability; the other ends: the
    all-fill image's. Whatever the map, those points are the same (they are computed once)."""
    model, x, maps, targets = setting
    a = saliency.deletion_insertion_curves(model, x, maps, targets, steps=4)
    b = saliency.deletion_insertion_curves(model, x, 1 - maps, targets, steps=4)
    probs = ops.convert_to_numpy(model(x))
    blank = ops.convert_to_numpy(model(np.zeros((1, 32, 32, 3), "float32")))[0]
    for c in (a, b):
        np.testing.assert_allclose(c["deletion"][:, 0], probs[np.arange(5), targets], atol=2e-6)
        np.testing.assert_allclose(c["insertion"][:, -1], probs[np.arange(5), targets], atol=2e-6)
        np.testing.assert_allclose(c["deletion"][:, -1], blank[targets], atol=2e-6)
        np.testing.assert_allclose(c["insertion"][:, 0], blank[targets], atol=2e-6)


# --- intervals ---------------------------------------------------------------------------------

def test_bootstrap_interval_known_answers():
    idx = intervals.bootstrap_indices(12, 500, seed=1)
    assert idx.shape == (500, 12) and idx.min() >= 0 and idx.max() == 11
    assert intervals.interval(np.full(12, 0.25), idx) == [0.25, 0.25]  # no spread, no width
    v = np.arange(12, dtype=float)
    lo, hi = intervals.interval(v, idx)
    assert lo < v.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * v.std() / np.sqrt(12), rel=0.25)
    with pytest.raises(ValueError, match="Received: n=0"):
        intervals.bootstrap_indices(0)


def test_summarize_pairs_the_images_and_marks_significance():
    """Two rows whose values vary a lot across images but differ by a constant: each row's own
    interval is wide, their paired difference's is that constant exactly, and significant."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 40)
    table = intervals.summarize({"a": {"m": base}, "b": {"m": base + 0.01}, "c": {"m": base[::-1]}}, n_boot=400)
    assert table["a"]["m"] == pytest.approx(base.mean())
    assert table["a"]["m_ci95"][1] - table["a"]["m_ci95"][0] > 0.1
    d = table["a"]["differences"]["b"]["m"]
    assert d["difference"] == pytest.approx(-0.01) and d["ci95"] == pytest.approx([-0.01, -0.01])
    assert d["significant"] is True and table["b"]["differences"]["a"]["m"]["difference"] == pytest.approx(0.01)
    assert table["a"]["differences"]["c"]["m"]["significant"] is False  # same values, shuffled: nothing to tell
    gaps = base.copy()
    gaps[:4] = np.nan  # undefined values (constant maps' rank correlations): left out, counted
    row = intervals.summarize({"a": {"m": gaps}}, n_boot=200)["a"]
    assert row["m"] == pytest.approx(base[4:].mean()) and row["m_undefined"] == 4
    assert row["m_ci95"][0] < row["m"] < row["m_ci95"][1]
    few = intervals.summarize({"a": {"m": base[:5]}, "b": {"m": base[:5] + 1}})
    assert few["a"]["differences"]["b"]["m"]["significant"] is None  # below MIN_IMAGES: not claimed
    with pytest.raises(ValueError, match="same images. Received value counts: \\[3, 4\\]"):
        intervals.summarize({"a": {"m": np.ones(3)}, "b": {"m": np.ones(4)}})


def test_quality_table_rows_agree_with_their_per_image_values(setting):
    model, x, maps, targets = setting
    x = np.concatenate([x, x[:, ::-1]])  # 10 images: significance is marked
    methods = [saliency.GradCAM(model, "feat"), saliency.LayerCAM(model, "feat")]
    exps = {m.name: m.explain(x, targets * 2) for m in methods}
    table = saliency.quality_table(model, x, methods, exps, baseline=True, steps=5, batch_size=7, n_boot=300)
    assert list(table) == ["gradcam", "layercam", saliency.RANDOM_BASELINE]
    for name, row in table.items():
        for k, values in row["per_image"].items():
            undefined = int(np.isnan(values).sum())  # rank correlations of constant maps (all-zero CAMs)
            assert len(values) == 10 and row[k] == pytest.approx(np.nanmean(values))
            assert row.get(f"{k}_undefined", 0) == undefined and (undefined == 0 or k.startswith("randomized"))
            assert row[f"{k}_ci95"][0] <= row[k] <= row[f"{k}_ci95"][1]
        for other, diffs in row["differences"].items():
            for k, d in diffs.items():
                paired = np.subtract(row["per_image"][k], table[other]["per_image"][k])
                assert d["difference"] == pytest.approx(np.nanmean(paired))
    # average drop and increase, image by image, from the model itself
    gc = [e.importance() for e in exps["gradcam"]]
    ref = saliency.average_drop_increase(model, x, np.stack(gc), targets * 2)
    assert table["gradcam"]["average_drop"] == pytest.approx(ref["average_drop"], abs=1e-4)
    md, csv = quality_markdown(table), quality_csv(table)
    assert "**Difference from the random maps** (method minus random; better than random: deletion and average " \
        "drop negative" in md and "| layercam |" in md
    head = csv.splitlines()[0].split(",")
    assert {"deletion_auc_low", "deletion_auc_high", "deletion_auc_vs_baseline", "deletion_auc_vs_baseline_low",
            "deletion_auc_vs_baseline_significant"} <= set(head)
    row = dict(zip(head, csv.splitlines()[1].split(",")))
    d = table["gradcam"]["differences"][saliency.RANDOM_BASELINE]["deletion_auc"]
    assert float(row["deletion_auc_vs_baseline_low"]) == d["ci95"][0] and row["deletion_auc_vs_baseline_significant"] \
        == str(d["significant"])
    assert len(differences_csv(table).splitlines()) == 1 + 2 * 5 + 2 * 4 + 2 * 4  # each pair, each shared metric
    assert len(per_image_csv(table).splitlines()) == 1 + 3 * 10


def test_gallery_rows_keep_right_and_wrong_images():
    assert gallery_rows([True, False, True]) == [0, 1, 2]
    correct = np.array([True] * 30 + [False] * 20)
    rows = gallery_rows(correct, limit=16)
    assert rows == list(range(8)) + list(range(30, 38))
    few_wrong = np.array([True] * 30 + [False] * 3)
    assert gallery_rows(few_wrong, limit=16) == list(range(13)) + [30, 31, 32]
