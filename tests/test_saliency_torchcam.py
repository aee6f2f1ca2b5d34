"""torchcam as a reference, and the methods torchcam has: known answers and invariants.

torchcam 0.5.0 runs on the same Keras model through the NCHW wrapper
(`kerasimpl.saliency.reference.torchcam_runner`). Its maps come at the
layer's resolution, unnormalised; `at_input` applies what our base class
applies (ReLU, bilinear resize with half-pixel centres, min-max scaling),
so equal maps agree to float rounding. Where torchcam's definition differs
from ours, the test makes the one difference explicit: our method with
torchcam's choice swapped in equals torchcam to float rounding, and the
shipped method differs by a stated amount.
"""

import os
import sys

import keras
import numpy as np
import pytest
from keras import ops

from kerasimpl import saliency
from kerasimpl.layers import LabeledSoftmax
from kerasimpl.saliency.cam import interpolation_matrix

sys.path.insert(0, os.path.dirname(__file__))
from test_saliency import GREEN, RED, SIZE, evidence_gap_model, evidence_image  # noqa: E402
from test_saliency_methods import gap_model, images, needs_torch  # noqa: E402

import reference_libs  # noqa: E402

ATOL = 2e-6  # float32 rounding of two evaluation orders of the same map, measured <= 6e-7


def at_input(m, size):
    """A torchcam map as ours: ReLU, bilinear resize (half-pixel), min-max to [0, 1]."""
    m = np.maximum(np.asarray(m, np.float64), 0.0)
    m = interpolation_matrix(m.shape[0], size).astype(np.float64) @ m @ interpolation_matrix(m.shape[1], size).T
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def largest_difference(method, x, targets, run=None):
    run = run or reference_libs.torchcam_runner(method)
    theirs = run(x, targets)
    return max(np.abs(e.map - at_input(t, x.shape[1])).max() for e, t in zip(method.explain(x, targets), theirs))


class TorchcamMasks:
    """torchcam's Score-CAM masks: min-max per channel at the layer's
    resolution, then bilinear upsampling with half-pixel centres (ours, as
    the Score-CAM authors' code and pytorch-grad-cam: upsample with corners
    aligned, then min-max)."""

    def masks(self, act):
        a = ops.convert_to_numpy(act).astype(np.float64)
        a = a - a.min(axis=(0, 1), keepdims=True)
        a = a / (a.max(axis=(0, 1), keepdims=True) + 1e-8)
        rh, rw = (interpolation_matrix(n, s) for n, s in zip(a.shape[:2], self.input_size))
        return ops.convert_to_tensor(np.einsum("Hh,hwk,Ww->kHW", rh, a, rw).astype("float32"))


# --- torchcam: the same maps -----------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("name", ["cam", "gradcam", "xgradcam", "layercam"])
def test_cam_methods_equal_torchcam(name, reference_model, linear_head_model):
    reference_libs.torchcam()
    model = linear_head_model() if name == "cam" else reference_model()
    method = saliency.get_method(name, model, layer="feat")
    assert largest_difference(method, images(2, 32, seed=1), [1, 3]) < ATOL


@needs_torch
@pytest.mark.parametrize("name,options", [("scorecam", {}), ("sscam", {"samples": 2, "noise": 0.0}),
                                          ("iscam", {"steps": 1})])
def test_score_cams_equal_torchcam_up_to_its_mask_upsampling(name, options, reference_model):
    """Ours upsample (corners aligned) then scale; torchcam scales then upsamples
    (half-pixel): maps within 3e-3 (measured 1.3e-3). With torchcam's masks
    swapped in, equal to float rounding. SS-CAM at zero noise and IS-CAM with
    one step are Score-CAM here (torchcam: noise 1e-12, its std must be > 0)."""
    reference_libs.torchcam()
    model, x, targets = reference_model(), images(2, 32, seed=1), [1, 3]
    method = saliency.get_method(name, model, layer="feat", **options)
    run = reference_libs.torchcam_runner(method)
    if name == "sscam":
        run.extractor._distrib = _Draws([np.zeros((2, 16, 32, 32), np.float32)] * 4)  # 2 samples, 2 runs
    shipped = largest_difference(method, x, targets, run)
    assert 1e-4 < shipped < 3e-3
    swapped = type("Swapped", (TorchcamMasks, type(method)), {})(model, "feat", **options)
    assert largest_difference(swapped, x, targets, run) < ATOL


class _Draws:
    """Stands for torchcam's noise distribution: returns the given arrays in turn."""

    def __init__(self, arrays):
        self.arrays = iter(arrays)

    def sample(self, size):
        import torch

        a = next(self.arrays)
        assert tuple(size) == a.shape
        return torch.as_tensor(a)


@needs_torch
def test_sscam_equals_torchcam_with_the_same_noise(reference_model):
    """SS-CAM's sampling seeded alike: torchcam's noise replaced by ours, draw for draw."""
    reference_libs.torchcam()
    model, x, targets = reference_model(), images(2, 32, seed=1), [1, 3]
    method = type("Swapped", (TorchcamMasks, saliency.SSCAM), {})(model, "feat", samples=3, noise=0.5, seed=4)
    method.name = "sscam"
    run = reference_libs.torchcam_runner(method)
    draws = [list(method.noise_draws(xi, (16, 32, 32))) for xi in x]  # per image, in our order
    run.extractor._distrib = _Draws([np.stack([d[s] for d in draws]) for s in range(3)])  # torchcam: per sample
    assert largest_difference(method, x, targets, run) < ATOL


@needs_torch
def test_iscam_differs_from_torchcam_only_by_its_mask_scales(reference_model):
    """torchcam scales the n-th mask by (1 + ... + n)/N (up to (N + 1)/2); ours by n/N."""
    reference_libs.torchcam()
    model, x, targets = reference_model(), images(2, 32, seed=1), [1, 3]
    ours = saliency.ISCAM(model, "feat", steps=4)
    assert largest_difference(ours, x, targets) > 1e-3

    class Running(TorchcamMasks, saliency.ISCAM):
        name = "iscam"

        def coefficients(self):
            return np.cumsum(np.arange(1, self.steps + 1)) / self.steps

    np.testing.assert_allclose(Running(model, "feat", steps=4).coefficients(), [0.25, 0.75, 1.5, 2.5])
    assert largest_difference(Running(model, "feat", steps=4), x, targets) < ATOL


@needs_torch
def test_gradcam_plus_plus_torchcam_never_applies_its_denominator(reference_model):
    """torchcam 0.5.0 `GradCAMpp._get_weights`: `alpha[idx][mask].div_(...)`
    divides a copy (boolean-mask indexing copies), so alpha stays g^2.
    Ours (the authors' closed form, pytorch-grad-cam's) with the denominator
    forced to 1 equals torchcam; ours as shipped differs visibly."""
    import torch

    reference_libs.torchcam()
    a = torch.ones(4)
    a[a > 0].div_(2.0)
    assert torch.equal(a, torch.ones(4))  # the mechanism
    model, x, targets = reference_model(), images(2, 32, seed=1), [1, 3]
    assert largest_difference(saliency.GradCAMPlusPlus(model, "feat"), x, targets) > 0.05  # measured 0.13

    class NoDenominator(saliency.GradCAMPlusPlus):
        @staticmethod
        def denominator(g2, g3, total):
            return ops.ones_like(g2)

    assert largest_difference(NoDenominator(model, "feat"), x, targets) < ATOL


@needs_torch
def test_smoothgrad_cam_plus_plus_equals_torchcam_where_their_choices_agree(linear_head_model):
    """A deterministic special case. torchcam's SmoothGradCAMpp (i) sums
    g^3 * A over the map in alpha's denominator where Grad-CAM++ has
    g^3 * sum(A), (ii) takes ReLU of the last noisy copy's gradient, not the
    mean, and (iii) weights the last noisy copy's activations. On a linear
    head after global pooling the gradient is constant over the map and over
    the copies, so (i) and (ii) agree; noise -> 0 makes (iii) agree. Left:
    alpha's eps, ours 1e-6 (pytorch-grad-cam's), torchcam's 1e-8, which
    matters where 2 g^2 is near 1e-6 (here g ~ 3e-3: maps 0.1 apart)."""
    reference_libs.torchcam()
    model, x, targets = linear_head_model(), images(2, 32, seed=1), [1, 3]

    class TorchcamEps(saliency.SmoothGradCAMPlusPlus):
        name = "smoothgrad-cam++"

        @staticmethod
        def denominator(g2, g3, total):
            return 2.0 * g2 + total * g3 + 1e-8

    for method, low, high in ((TorchcamEps(model, "feat", samples=3, noise=0.0), 0.0, ATOL),
                              (saliency.SmoothGradCAMPlusPlus(model, "feat", samples=3, noise=0.0), 0.05, 0.2)):
        run = reference_libs.torchcam_runner(method)
        run.extractor._distrib = _Draws([np.zeros((2, 3, 32, 32), np.float32)] * 3)
        assert low <= largest_difference(method, x, targets, run) < high


# --- the methods torchcam has: known answers and invariants ------------------------------

def test_cam_known_answer_is_the_red_detector():
    """On the GAP evidence model CAM_1 = 100 x the red detector's map: 1 on the red square, 0 elsewhere."""
    (e,) = saliency.CAM(evidence_gap_model(), "act").explain(evidence_image()[None], [1])
    expected = np.zeros((SIZE, SIZE), np.float32)
    expected[RED] = 1.0
    np.testing.assert_allclose(e.map, expected, atol=1e-6)
    assert e.score == pytest.approx(1 / (1 + np.exp(-100 * 64 / 1024)), rel=1e-5)


def test_cam_equals_gradcam_on_a_linear_head_and_refuses_others():
    model, x = gap_model(), images(2)
    cam = [e.map for e in saliency.CAM(model, "act").explain(x, [0, 2])]
    grad = [e.map for e in saliency.GradCAM(model, "act").explain(x, [0, 2])]
    np.testing.assert_allclose(cam, grad, atol=1e-5)  # Grad-CAM's weights are CAM's / (h w)
    with pytest.raises(saliency.NotApplicable, match=r"Received: GlobalAveragePooling2D\(pool\) -> Dropout\(dropout_0\) -> Dense\(dense_0\)"):
        from kerasimpl import models

        saliency.CAM(models.build_classifier("smallcnn", 3, weights=None, image_size=32))
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, name="feat")(inp)
    logits = keras.layers.Dense(2, activation="relu", name="logits")(keras.layers.GlobalAveragePooling2D()(a))
    bad = keras.Model(inp, LabeledSoftmax(["a", "b"], name="predictions")(logits))
    with pytest.raises(ValueError, match="one linear Dense layer.*Use gradcam"):
        saliency.CAM(bad, "feat")


def test_sscam_without_noise_and_iscam_with_one_step_are_scorecam():
    model, x = gap_model(seed=2), images(2)
    score = [e.map for e in saliency.ScoreCAM(model, "act").explain(x, [1, 3])]
    ss = [e.map for e in saliency.SSCAM(model, "act", samples=3, noise=0.0).explain(x, [1, 3])]
    one = [e.map for e in saliency.ISCAM(model, "act", steps=1).explain(x, [1, 3])]
    np.testing.assert_allclose(ss, score, atol=1e-6)
    np.testing.assert_allclose(one, score, atol=1e-6)
    noisy = [e.map for e in saliency.SSCAM(model, "act", samples=3, noise=1.0).explain(x, [1, 3])]
    assert np.abs(np.array(noisy) - score).max() > 1e-3


def test_smoothgrad_cam_plus_plus_without_noise_is_gradcam_plus_plus(reference_model):
    model, x = reference_model(), images(2, 32, seed=1)
    pp = [e.map for e in saliency.GradCAMPlusPlus(model, "feat").explain(x, [1, 3])]
    smooth = [e.map for e in saliency.SmoothGradCAMPlusPlus(model, "feat", noise=0.0).explain(x, [1, 3])]
    np.testing.assert_allclose(smooth, pp, atol=1e-6)
    noisy = [e.map for e in saliency.SmoothGradCAMPlusPlus(model, "feat", noise=0.3).explain(x, [1, 3])]
    assert np.abs(np.array(noisy) - pp).max() > 1e-3


@pytest.mark.parametrize("name", ["smoothgrad-cam++", "sscam", "smoothgrad"])
def test_noise_is_the_images_own_not_its_batch_position(name, reference_model):
    model, x = reference_model(), images(3, 32, seed=1)
    layer = {} if name == "smoothgrad" else {"layer": "feat"}
    method = saliency.get_method(name, model, samples=2, **layer, **({"noise": 0.5} if name == "sscam" else {}))
    together = [e.map for e in method.explain(x, [1, 3, 0])]
    scale = np.abs(together[1]).max()  # smoothgrad's maps are raw gradients (about 1e-6 here)
    alone = method.explain(x[1:2], [3])[0].map / scale
    reversed_ = [e.map for e in method.explain(x[::-1], [0, 3, 1])]
    np.testing.assert_allclose(alone, together[1] / scale, atol=1e-5)
    np.testing.assert_allclose(np.array(reversed_[::-1]) / scale, np.array(together) / scale, atol=1e-5)
    other_seed = saliency.get_method(name, model, samples=2, seed=1, **layer).explain(x[1:2], [3])[0].map / scale
    assert np.abs(other_seed - alone).max() > 1e-3  # measured >= 8e-3


@pytest.mark.parametrize("name", ["smoothgrad-cam++", "sscam", "iscam"])
def test_new_methods_find_the_evidence_and_leave_the_distractor(name):
    from test_saliency import evidence_model

    opts = {"sscam": {"samples": 4, "noise": 0.5}, "iscam": {"steps": 4}}.get(name, {})
    (e,) = saliency.get_method(name, evidence_model(), layer="act", **opts).explain(evidence_image()[None], [1])
    assert e.map[RED].mean() > 0.3 and e.map[GREEN].max() < 0.05


# --- torchcam's faithfulness metrics -----------------------------------------------------

class FixedMaps:
    """A torchcam CAM extractor that returns given input-size maps: torchcam's
    metrics then score exactly the maps our `--quality` scores."""

    def __init__(self, model, maps):
        import torch

        self.model, self.maps = model, torch.as_tensor(np.asarray(maps, np.float32))

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        import contextlib

        return contextlib.nullcontext()


def metric_inputs(reference_model):
    """Four images, targets and maps: two top-1 with Grad-CAM maps, two
    least-likely classes with random maps (dimming the image moves the
    random model towards uniform: their probability rises)."""
    model, x = reference_model(), images(4, 32, seed=1)
    probs = keras.ops.convert_to_numpy(model(x))
    targets = [int(probs[0].argmax()), int(probs[1].argmax()), int(probs[2].argmin()), int(probs[3].argmin())]
    maps = np.stack([e.importance() for e in saliency.GradCAM(model, "feat").explain(x, targets)])
    maps[2:] = np.random.default_rng(0).uniform(0, 1, maps[2:].shape).astype(np.float32)
    return model, x, maps, targets


@needs_torch
def test_average_drop_and_increase_equal_torchcams_classification_metric(reference_model):
    """Same definition (Chattopadhyay et al. 5.1.1); ours in percent, torchcam's as fractions."""
    import functools

    import torch

    tc = reference_libs.torchcam()
    model, x, maps, targets = metric_inputs(reference_model)
    ours = saliency.average_drop_increase(model, x, maps, targets)
    wrapper = reference_libs.nchw_classifier(saliency.GradCAM(model, "feat"))
    metric = tc.metrics.ClassificationMetric(FixedMaps(wrapper, maps), functools.partial(torch.softmax, dim=-1))
    metric.update(torch.as_tensor(x).permute(0, 3, 1, 2), class_idx=targets)
    theirs = metric.summary()
    assert ours["average_drop"] > 1.0 and ours["increase_in_confidence"] == 50.0  # not trivial zeros
    assert ours["average_drop"] == pytest.approx(100 * theirs["avg_drop"], rel=1e-5)
    assert ours["increase_in_confidence"] == pytest.approx(100 * theirs["conf_increase"])


@needs_torch
@pytest.mark.parametrize("steps", [16, 32, 20])
def test_deletion_insertion_equal_torchcams_where_steps_divide_the_pixels(steps, reference_model):
    """torchcam removes ceil(HW / steps) pixels per step (the last step shorter)
    and integrates over the fractions actually removed; ours removes
    round(k HW / steps). Where steps divides HW (32 x 32: 16, 32) the curves
    are the same points: equal areas. At 20 steps (52 pixels a step, last 36)
    the areas differ (measured 4e-5 on this flat random model; the gap is
    the curves' change over the misaligned points); stated in README."""
    import functools

    import torch

    tc = reference_libs.torchcam()
    model, x, maps, targets = metric_inputs(reference_model)
    curves = [saliency.deletion_insertion(model, xi, m, t, steps=steps) for xi, m, t in zip(x, maps, targets)]
    ours = {k: np.mean([c[k] for c in curves]) for k in ("deletion_auc", "insertion_auc")}
    wrapper = reference_libs.nchw_classifier(saliency.GradCAM(model, "feat"))
    metric = tc.metrics.DeletionInsertionMetric(FixedMaps(wrapper, maps), functools.partial(torch.softmax, dim=-1),
                                                steps=steps)
    metric.update(torch.as_tensor(x).permute(0, 3, 1, 2), class_idx=targets)
    theirs = metric.summary()
    gap = max(abs(ours[k] - theirs[k]) for k in ours)
    if (32 * 32) % steps == 0:
        assert gap < 1e-6
    else:
        assert 1e-6 < gap < 2e-2
