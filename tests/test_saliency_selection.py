"""Which images the saliency experiments explain (`kerasimpl.saliency.selection`),
and the quality table as a library function (`kerasimpl.saliency.quality_table`)."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

from kerasimpl import saliency
from kerasimpl.saliency import choose_images

sys.path.insert(0, os.path.dirname(__file__))
from test_saliency import evidence_image, evidence_model  # noqa: E402


# --- per-class -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_per_class_takes_the_first_image_of_each_class_in_the_seeded_walk(seed):
    """labels 0,0,0,1: the walk takes its first image, then the class-1 image,
    then (every class covered) the images after it, then the ones it skipped."""
    labels = np.array([0, 0, 0, 1])
    walk = [int(i) for i in np.random.default_rng(seed).permutation(4)]
    k = walk.index(3)
    expected = walk if k <= 1 else [walk[0], 3] + walk[k + 1:] + walk[1:k]
    sel = choose_images(labels, 4, mode="per-class", seed=seed)
    assert sel.indices.tolist() == expected
    assert sel.counts == {0: 3, 1: 1} and sel.note == "" and sel.mode == "per-class" and sel.requested == 4
    two = choose_images(labels, 2, mode="per-class", seed=seed)
    assert sorted(labels[two.indices].tolist()) == [0, 1] and two.indices.tolist() == expected[:2]


def test_per_class_covers_every_class_before_repeating():
    labels = np.repeat(np.arange(5), [1, 7, 3, 10, 2])  # unbalanced; every class present
    for seed in range(20):
        sel = choose_images(labels, 12, mode="per-class", seed=seed)
        assert sorted(labels[sel.indices[:5]].tolist()) == [0, 1, 2, 3, 4]  # one of each first
        assert len(set(sel.indices.tolist())) == 12 and sum(sel.counts.values()) == 12
    a = choose_images(labels, 12, mode="per-class", seed=3).indices
    np.testing.assert_array_equal(a, choose_images(labels, 12, mode="per-class", seed=3).indices)
    assert any(not np.array_equal(a, choose_images(labels, 12, mode="per-class", seed=s).indices) for s in range(4, 8))
    # A class with no image does not stall the walk: the images that are there fill in.
    sel = choose_images(np.array([2, 2, 2, 7]), 3, mode="per-class", seed=0)
    assert len(sel.indices) == 3 and 3 in sel.indices.tolist() and sel.note == ""


def test_per_class_says_when_there_are_fewer_images_than_asked():
    sel = choose_images(np.array([0, 1, 1]), 5, mode="per-class", seed=0)
    assert sorted(sel.indices.tolist()) == [0, 1, 2]
    assert sel.note == "asked for 5 images, but there are only 3"


# --- right-wrong -----------------------------------------------------------------------------

def _six_wrong():
    labels = np.arange(40) % 4
    predicted = labels.copy()
    predicted[:6] = (labels[:6] + 1) % 4  # images 0..5 misclassified
    return labels, predicted


def test_right_wrong_known_answer_and_display_order():
    labels, predicted = _six_wrong()
    sel = choose_images(labels, 8, mode="right-wrong", seed=3, predictions=predicted)
    rng = np.random.default_rng(3)  # the rule: a seeded permutation of each kind, misclassified first
    wrong, right = rng.permutation(np.arange(6)), rng.permutation(np.arange(6, 40))
    assert sel.indices.tolist() == sorted(right[:4].tolist()) + sorted(wrong[:4].tolist())  # correct rows first
    assert sel.counts == {"misclassified": 4, "correct": 4} and sel.note == ""
    probs = np.eye(4)[predicted]  # probabilities work as predictions too (their argmax)
    np.testing.assert_array_equal(choose_images(labels, 8, "right-wrong", 3, predictions=probs).indices, sel.indices)


def test_right_wrong_fills_with_the_other_kind_and_says_so():
    labels, predicted = _six_wrong()
    sel = choose_images(labels, 20, mode="right-wrong", seed=0, predictions=predicted)
    assert sel.counts == {"misclassified": 6, "correct": 14} and len(sel.indices) == 20
    assert sorted(sel.indices[-6:].tolist()) == list(range(6))  # every misclassified image there is
    assert sel.note == ("asked for 20 images, half misclassified, but the 40 test images predicted have only "
                        "6 misclassified: showing 6 misclassified and 14 correct")
    almost_all_wrong = (labels + 1) % 4
    almost_all_wrong[7] = labels[7]  # one correct image
    sel = choose_images(labels, 6, mode="right-wrong", seed=0, predictions=almost_all_wrong)
    assert sel.counts == {"misclassified": 5, "correct": 1} and sel.indices[0] == 7
    assert "only 1 correct: showing 5 misclassified and 1 correct" in sel.note
    sel = choose_images(labels, 100, mode="right-wrong", seed=0, predictions=predicted)
    assert sorted(sel.indices.tolist()) == list(range(40)) and "showing 6 misclassified and 34 correct" in sel.note


def test_choice_errors_say_what_was_received_and_what_is_accepted():
    labels, predicted = _six_wrong()
    with pytest.raises(ValueError, match=r"Unknown image choice mode 'random'\. Accepted: \['per-class', 'right-wrong'\]"):
        choose_images(labels, 4, mode="random")
    with pytest.raises(ValueError, match=r"n must be >= 1 \(images to choose\)\. Received: n=0"):
        choose_images(labels, 0)
    with pytest.raises(ValueError, match="needs the model's predictions. Received: predictions=None"):
        choose_images(labels, 4, mode="right-wrong")
    with pytest.raises(ValueError, match=r"one class per label \(40\)\. Received: \(39,\)"):
        choose_images(labels, 4, mode="right-wrong", predictions=predicted[:39])


# --- both experiments choose through it ---------------------------------------------------------

class Spy:
    """Stands in for `choose_images`: records each call, returns the real choice."""

    def __init__(self):
        self.calls = []

    def __call__(self, labels, n, mode="per-class", seed=0, predictions=None):
        self.calls.append({"n": n, "mode": mode, "seed": seed, "predictions": predictions is not None})
        self.result = choose_images(labels, n, mode, seed, predictions)
        return self.result


@pytest.fixture
def tiny_model(tmp_path):
    from kerasimpl import models
    from kerasimpl.artifacts import save_model

    model = models.build_classifier("smallcnn", 10, weights=None, class_names=[f"class_{i}" for i in range(10)],
                                    backbone_kwargs={"widths": (4,)})
    path = tmp_path / "smallcnn" / "model.keras"
    save_model(model, str(path))
    return str(path)


def test_saliency_data_chooses_right_and_wrong_images_through_the_library(tmp_path, tiny_model, monkeypatch):
    from experiments import saliency as cli

    spy = Spy()
    monkeypatch.setattr(saliency, "choose_images", spy)
    out = tmp_path / "out"
    assert cli.main(["--model", tiny_model, "--data", "synthetic", "--num-images", "4", "--method", "gradcam",
                     "--seed", "5", "--out", str(out)]) == 0
    assert spy.calls == [{"n": 4, "mode": "right-wrong", "seed": 5, "predictions": True}]
    # synthetic's 128 test images are all candidates, so the positions are the test indices
    shown = [i["index"] for i in json.load(open(out / "saliency.json"))["images"]]
    assert shown == spy.result.indices.tolist()


def test_candidates_predict_at_the_inference_batch_with_the_same_answers(tiny_model, monkeypatch):
    """The candidates' predictions run at the device's inference batch (not Keras' 128, which
    peaked at 10.5 GB for EfficientNet-Lite0 at 224 px) and equal Keras' own."""
    from kerasimpl import inference, runtime
    from kerasimpl.artifacts import load_model
    from kerasimpl.data import synthetic_dataset
    from kerasimpl.saliency.selection import candidates

    model = load_model(tiny_model)
    data = synthetic_dataset(num_train=8, num_test=40, num_classes=10, image_size=32, seed=0)
    batches, real = [], inference.predict_batches
    monkeypatch.setattr(inference, "predict_batches", lambda m, x, b, **kw: batches.append(b) or real(m, x, b, **kw))
    pool, probs = candidates(model, data.x_test, data.y_test, 4, seed=1)
    assert batches and set(batches) == {runtime.inference_batch_size()}
    np.testing.assert_allclose(probs, model.predict(data.x_test[pool], verbose=0), rtol=1e-5, atol=1e-6)
    candidates(model, data.x_test, data.y_test, 4, seed=1, batch_size=7)
    assert batches[-1] == 7


def test_candidates_fall_back_to_every_image_predicting_only_the_rest(tiny_model, monkeypatch):
    """A sample of 500 without a wrong answer: all of x becomes the pool, in index
    order, and only the 20 images outside the sample are predicted again."""
    from kerasimpl import inference
    from kerasimpl.artifacts import load_model
    from kerasimpl.data import synthetic_dataset
    from kerasimpl.saliency.selection import candidates

    model = load_model(tiny_model)
    x = synthetic_dataset(num_train=8, num_test=520, num_classes=10, image_size=32, seed=0).x_test
    expected = np.asarray(model.predict(x, verbose=0))
    labels = expected.argmax(1)  # every answer right: the sample has no wrong one to show
    rows, real = [], inference.predict_batches
    monkeypatch.setattr(inference, "predict_batches",
                        lambda m, x, b, indices=None, **kw: rows.append(len(indices)) or real(m, x, b, indices=indices,
                                                                                              **kw))
    pool, probs = candidates(model, x, labels, 4, seed=3)
    assert rows == [500, 20]
    np.testing.assert_array_equal(pool, np.arange(520))
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


def test_compare_saliency_figure_chooses_one_image_per_class_through_the_library(tmp_path, tiny_model, monkeypatch):
    from kerasimpl import comparison_outputs
    from kerasimpl.data import load_dataset

    spy = Spy()
    monkeypatch.setattr(saliency, "choose_images", spy)
    data = load_dataset("synthetic")
    from kerasimpl.run_config import RunConfig

    cfg = RunConfig(("smallcnn",), "synthetic", str(tmp_path), preset="smoke", saliency=3, seed=2)
    comparison_outputs.saliency_figure(cfg, [{"backbone": "smallcnn"}], data)
    assert spy.calls == [{"n": 3, "mode": "per-class", "seed": 2, "predictions": False}]
    report = json.load(open(tmp_path / "saliency_backbones.json"))
    assert report["images"] == spy.result.indices.tolist() and list(report["models"]) == ["smallcnn"]
    assert len(set(data.y_test[report["images"]].tolist())) == 3  # three classes


# --- the quality table as a library function ------------------------------------------------------

def test_quality_table_is_the_quality_measures_averaged_per_method():
    model, x = evidence_model(), np.stack([evidence_image(), evidence_image()[:, ::-1]])
    methods = [saliency.GradCAM(model, layer="act"), saliency.Occlusion(model, patch=8, stride=4)]
    explanations = {m.name: m.explain(x, [1, 1]) for m in methods}
    table = saliency.quality_table(model, x, methods, explanations, seconds={"gradcam": 1.0, "occlusion": 3.0})
    assert list(table) == ["gradcam", "occlusion"]
    for m in methods:
        exps = explanations[m.name]
        curves = [saliency.deletion_insertion(model, xi, e.importance(), 1) for xi, e in zip(x, exps)]
        drop = saliency.average_drop_increase(model, x, np.stack([e.importance() for e in exps]), [1, 1])
        row = table[m.name]
        assert row["deletion_auc"] == pytest.approx(np.mean([c["deletion_auc"] for c in curves]))
        assert row["insertion_auc"] == pytest.approx(np.mean([c["insertion_auc"] for c in curves]))
        assert row["average_drop"] == pytest.approx(drop["average_drop"])
        assert -1.0 <= row["randomized_model_rank_correlation"] <= 1.0
    assert table["gradcam"]["deletion_auc"] < table["gradcam"]["insertion_auc"]
    assert table["gradcam"]["average_drop"] < 5.0  # the red square alone keeps the class
    assert (table["gradcam"]["seconds_per_image"], table["occlusion"]["seconds_per_image"]) == (0.5, 1.5)
    md, csv = saliency.quality_markdown(table), saliency.quality_csv(table)
    lines = md.splitlines()
    assert "| s / image |" in lines[0] and lines[2].startswith("| gradcam | ") and lines[4] == ""
    lo, hi = table["gradcam"]["deletion_auc_ci95"]
    assert lo <= table["gradcam"]["deletion_auc"] <= hi and f"[{lo:.3f}, {hi:.3f}]" in lines[2]
    assert "2 images; [a, b]: 95% percentile-bootstrap" in md and "not marked below 10 images" in md
    assert "**Pairwise deletion AUC differences** (row minus column):" in md and "| method | occlusion |" in md
    assert csv.splitlines()[0].startswith("method,deletion_auc,insertion_auc,average_drop,increase_in_confidence,"
                                          "randomized_model_rank_correlation,seconds_per_image,deletion_auc_low,"
                                          "deletion_auc_high,")
    untimed = saliency.quality_table(model, x, methods[:1], explanations)
    assert "seconds_per_image" not in untimed["gradcam"] and "s / image" not in saliency.quality_markdown(untimed)
    keep = ("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence",
            "randomized_model_rank_correlation")
    assert {k: untimed["gradcam"][k] for k in keep} == pytest.approx({k: table["gradcam"][k] for k in keep})


@pytest.mark.parametrize("seed", [0, 1])
def test_quality_table_randomization_check_uses_the_randomized_model(seed):
    """The rank correlation is the trained model's map against the same method's
    (same options) on `randomized_copy(model, seed)`."""
    model, x = evidence_model(), evidence_image()[None]
    gradcam = saliency.GradCAM(model, layer="act")
    table = saliency.quality_table(model, x, [gradcam], {"gradcam": gradcam.explain(x, [1])}, seed=seed)
    (random_map,) = saliency.GradCAM(saliency.randomized_copy(model, seed=seed), layer="act").explain(x, [1])
    expected = saliency.rank_correlation(gradcam.explain(x, [1])[0].importance(), random_map.importance())
    row = table["gradcam"]
    assert row["randomized_model_rank_correlation"] == pytest.approx(expected, nan_ok=True)
    # seed 1's randomized Grad-CAM is all zero (constant): no correlation, left out and counted
    assert row.get("randomized_model_rank_correlation_undefined", 0) == int(np.isnan(expected)) == seed


def test_random_baseline_row_and_which_methods_beat_it():
    """The evidence model reads the red square: Grad-CAM's deletion falls faster and its
    insertion rises faster than random maps'; a map pointing away from the evidence does not."""
    from test_saliency import evidence_image, evidence_model

    model = evidence_model()
    x = np.stack([evidence_image()]).astype("float32")
    gradcam = saliency.get_method("gradcam", model, layer="act")
    exps = gradcam.explain(x, [1])
    inverted = [dataclasses.replace(e, map=-e.map) for e in exps]

    class Inverted(type(gradcam)):
        name = "inverted"

    inv = Inverted(model, "act")
    table = saliency.quality_table(model, x, [gradcam, inv], {"gradcam": exps, "inverted": inverted}, baseline=True)
    assert list(table)[-1] == saliency.RANDOM_BASELINE
    assert "randomized_model_rank_correlation" not in table[saliency.RANDOM_BASELINE]
    assert saliency.beats_baseline(table) == ["gradcam"]
    assert "| random map (baseline) |" in saliency.quality_markdown(table) and "n/a" in saliency.quality_markdown(table)
    with pytest.raises(ValueError, match="no 'random map \\(baseline\\)' row"):
        saliency.beats_baseline({"gradcam": table["gradcam"]})


def test_a_report_explains_the_true_class_when_asked(tmp_path):
    """explain="true" (the reference's occlusion study: the true class's probability): each map is the
    label's, which differs from the prediction's on the misclassified images; anything else is refused."""
    import types

    import keras

    from kerasimpl import models
    from kerasimpl.saliency import GradCAM, Occlusion
    from kerasimpl.saliency.report import explain_test_images

    keras.utils.set_random_seed(0)
    model = models.build_classifier("smallcnn", 3, input_shape=(16, 16, 3), image_size=16, weights=None,
                                    freeze_base=False, backbone_kwargs={"widths": (8, 16)})
    rng = np.random.default_rng(0)
    data = types.SimpleNamespace(x_test=rng.integers(0, 256, (40, 16, 16, 3)).astype(np.uint8),
                                 y_test=rng.integers(0, 3, 40), source="synthetic")
    methods = [GradCAM(model), Occlusion(model, patch=4, stride=4)]
    report = explain_test_images(model, data, methods, 4, str(tmp_path), explain="true")
    saved = np.load(tmp_path / "maps.npz")
    labels, predictions = saved["labels"], saved["predictions"]
    assert report["explained_class"] == "true" and (labels != predictions).any()
    for method in methods:
        truth = np.stack([e.map for e in method.explain(saved["images"].astype("float32"), [int(t) for t in labels])])
        np.testing.assert_allclose(saved[method.name], truth, atol=1e-6)
    wrong = labels != predictions
    asked = np.stack([e.map for e in methods[1].explain(saved["images"][wrong].astype("float32"),
                                                        [int(t) for t in predictions[wrong]])])
    assert np.abs(saved["occlusion"][wrong] - asked).max() > 1e-4  # the label's map, not the prediction's
    with pytest.raises(ValueError, match="explain must be 'predicted' or 'true'. Received: explain='label'"):
        explain_test_images(model, data, methods, 4, str(tmp_path / "x"), explain="label")
