"""Our faithfulness and randomization metrics against Quantus 0.6.0.

Quantus (Hedstroem et al., JMLR 2023) is the field's reference toolkit for
evaluating explanations. It runs here on the same small Keras model (torch
backend), through `kerasimpl.saliency.reference.nchw_classifier` (NCHW in,
logits out), on the same images and maps. Each test states where Quantus'
definition differs from ours, with line references into Quantus 0.6.0's
source (`quantus/...`), and asserts that our value equals Quantus' after
exactly that documented transformation. The probabilities agree to float32
rounding (measured <= 2e-7); `ATOL` leaves a margin, far below the
differences the definitions make (>= 1e-3 here).

What corresponds:

- our deletion curve: `PixelFlipping` (its curve lacks our fraction-0
  point, its area is over step indices, its features are channel values);
- our deletion and insertion curves: `RegionPerturbation` "morf" and "lerf"
  (maps constant on its patches). Quantus has no insertion metric as such
  (no metric reveals pixels on a blank image); LeRF removal is insertion
  read backwards;
- our randomization check (`quality_table`'s
  `randomized_model_rank_correlation`): the last step of `MPRT`'s cascade,
  once the cascade randomizes what `randomized_copy` does. Quantus itself
  finds nothing to randomize in a Keras model.

The model: `conftest.reference_model`'s architecture at 24 x 24 (H W = 576
is divisible by 3: see `test_quantus_flips_channel_values_not_pixels`)
with its logits scaled by 10, so the curves move (0.55 -> 0.2) instead of
staying near 1/5.
"""

import os
import sys
import warnings

import keras
import numpy as np
import pytest

from kerasimpl import saliency
from kerasimpl.layers import LabeledSoftmax

sys.path.insert(0, os.path.dirname(__file__))
import reference_libs  # noqa: E402

SIZE = 24
ATOL = 1e-6  # float32 probabilities of the same images in other batches: measured <= 2e-7

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="Quantus' PyTorch interface takes a torch.nn.Module: these tests run in the "
                                       "torch suite (KERAS_BACKEND=torch)")


def small_model():
    """Rescale -> strided 3x3 conv -> 3x3 conv `feat` -> 3x3 conv -> GAP -> Dense x 10 -> softmax (seeded)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Rescaling(1 / 255.0)(inp)
    a = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(a)
    a = keras.layers.Conv2D(16, 3, activation="relu", name="feat")(a)
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(a)
    dense = keras.layers.Dense(5, name="logits")
    logits = dense(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inp, LabeledSoftmax([str(i) for i in range(5)], name="predictions")(logits))
    kernel, bias = dense.get_weights()
    dense.set_weights([10 * kernel, bias])
    return model


@pytest.fixture(scope="module")
def case():
    """Model, four images (values in [32, 255): Quantus' "black" is not 0),
    targets (top-1 for two, least likely for two) and maps: Grad-CAM for
    the top-1 images; seeded uniform maps for the others, whose Grad-CAM
    maps are all zero here (no positive evidence), which would leave the
    removal order to how each library breaks ties."""
    model = small_model()
    x = np.random.default_rng(1).uniform(32, 255, (4, SIZE, SIZE, 3)).astype("float32")
    probs = keras.ops.convert_to_numpy(model(x))
    targets = np.array([probs[0].argmax(), probs[1].argmax(), probs[2].argmin(), probs[3].argmin()])
    maps = np.stack([e.importance() for e in saliency.GradCAM(model, "feat").explain(x, targets)])
    maps[2:] = np.random.default_rng(0).uniform(0, 1, maps[2:].shape).astype(np.float32)
    return model, x, targets, maps


def nchw(x):
    return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))


def logits_module(model):
    """The Keras model as Quantus gets it: a torch module, NCHW in, logits out."""
    return reference_libs.nchw_classifier(saliency.GradCAM(model, "feat"))


def our_curves(model, x, maps, targets, steps, fill=0.0):
    return [saliency.deletion_insertion(model, xi, m, t, steps=steps, fill=f)
            for xi, m, t, f in zip(x, maps, targets, np.broadcast_to(fill, len(x)))]


@pytest.fixture
def quantus(monkeypatch):
    """Quantus, with `np.trapz` restored where NumPy removed it.

    `quantus.helpers.utils.calculate_auc` (utils.py:1032, what
    `PixelFlipping(return_auc_per_sample=True)` calls, pixel_flipping.py:356)
    is `np.trapz(values, dx=dx)`; the NumPy here (2.4) has no `np.trapz`
    (deprecated in 2.0 for `np.trapezoid`, the same function, then removed),
    so Quantus 0.6.0 (whose own tests pin numpy<2) raises AttributeError
    there. The alias is set for the test only, where it is missing.
    """
    q = reference_libs.quantus()
    if not hasattr(np, "trapz"):
        with pytest.raises(AttributeError, match="trapz"):
            q.helpers.utils.calculate_auc(np.ones(3))
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    return q


# --- PixelFlipping: our deletion curve ------------------------------------------------------------

@pytest.mark.parametrize("steps", [9, 18])
def test_deletion_curve_equals_quantus_pixel_flipping(steps, case, quantus):
    """Quantus `PixelFlipping` (Bach et al. 2015) is our deletion curve, up to three definitions:

    (i) features are channel values, not pixels: the (N, 1, H, W) map is
    broadcast over the C channels (pixel_flipping.py:318-319) and
    `features_in_step` values are flipped per step (:334-344), so one of our
    steps of H W / steps pixels is features_in_step = C H W / steps (here
    3 * 576 / steps); tie-free maps keep a pixel's C values together in
    Quantus' unstable `np.argsort(-a)` (:327);
    (ii) the curve starts after the first step (the prediction follows each
    flip, :334-353): Quantus' curve = ours[1:], without the fraction-0 point;
    (iii) the area is `np.trapz(curve, dx=1)` over step indices
    (utils.py:1032), ours the trapezoid over fractions in [0, 1]:
    steps * ours_auc = quantus_auc + (ours[0] + ours[1]) / 2.
    The same probabilities: Quantus' `softmax=True` default (:162) appends
    `torch.nn.Softmax(dim=-1)` to the logits module (pytorch_model.py:171-176,
    no Softmax module in it), our model ends in the same softmax. Fill:
    `perturb_baseline=0.0` is the value 0 (utils.py:99-100), our `fill=0.0`.
    """
    model, x, targets, maps = case
    assert all(np.unique(m).size == m.size for m in maps)  # no ties: one removal order in both
    ours = our_curves(model, x, maps, targets, steps)
    deletion = np.array([c["deletion"] for c in ours])
    assert (deletion[:2, 0] - deletion[:2, -1]).min() > 0.3  # the curves move: top-1 0.55 -> 0.2
    metric = dict(features_in_step=3 * SIZE * SIZE // steps, perturb_baseline=0.0, disable_warnings=True)
    inputs = dict(model=logits_module(model), x_batch=nchw(x), y_batch=targets, a_batch=maps[:, None],
                  channel_first=True)
    flipping = quantus.PixelFlipping(**metric)
    curves = np.array(flipping(**inputs))
    assert curves.shape == (4, steps)
    np.testing.assert_allclose(curves, deletion[:, 1:], rtol=0, atol=ATOL)
    areas = np.array(quantus.PixelFlipping(return_auc_per_sample=True, **metric)(**inputs))
    ours_auc = np.array([c["deletion_auc"] for c in ours])
    np.testing.assert_allclose(areas, steps * ours_auc - (deletion[:, 0] + deletion[:, 1]) / 2, rtol=0,
                               atol=steps * ATOL)
    assert flipping.get_auc_score == pytest.approx(areas.mean(), abs=1e-6)  # its mean over the images (:283-285)
    assert np.abs(areas / steps - ours_auc).max() > 0.01  # without (ii) and (iii) they would differ


def test_quantus_flips_channel_values_not_pixels(case, quantus):
    """`features_in_step` counts channel values (pixel_flipping.py:318-330)
    but is checked against H W only (:277-280, asserts.py:31:
    `prod(x.shape[2:]) % features_in_step == 0`). Read as pixels
    (H W / steps = 64 for 9 steps) Quantus takes 3 x 9 steps of 64 values;
    every third point (64 k whole pixels) is ours. Our steps align with
    Quantus' only where C H W / steps divides H W: at 24 x 24 steps = 3 d
    with d dividing 576 (9, 18, 36...), not 16 (108 values a step) nor 20;
    at 32 x 32 only 3 x 2^k (3, 6, 12, 24, 48...)."""
    model, x, targets, maps = case
    deletion = np.array([c["deletion"] for c in our_curves(model, x, maps, targets, 9)])
    inputs = dict(model=logits_module(model), x_batch=nchw(x), y_batch=targets, a_batch=maps[:, None],
                  channel_first=True)
    curves = np.array(quantus.PixelFlipping(features_in_step=SIZE * SIZE // 9, perturb_baseline=0.0,
                                            disable_warnings=True)(**inputs))
    assert curves.shape == (4, 27)
    np.testing.assert_allclose(curves[:, 2::3], deletion[:, 1:], rtol=0, atol=ATOL)
    with pytest.raises(AssertionError, match="features_in_step"):
        quantus.PixelFlipping(features_in_step=3 * SIZE * SIZE // 16, disable_warnings=True)(**inputs)


def test_quantus_black_baseline_is_each_images_minimum(case, quantus):
    """`perturb_baseline="black"` (PixelFlipping's default) is not 0: it is
    each image's minimum value (utils.py:169, `arr.min` over all but the
    batch axis, recomputed per step on the flipped image: the same value).
    Ours with `fill` = the image's minimum equals it; ours with fill 0
    differs visibly on images in [32, 255)."""
    model, x, targets, maps = case
    curves = np.array(quantus.PixelFlipping(features_in_step=3 * SIZE * SIZE // 9, disable_warnings=True)(
        model=logits_module(model), x_batch=nchw(x), y_batch=targets, a_batch=maps[:, None], channel_first=True))
    lows = x.reshape(len(x), -1).min(axis=1)
    assert lows.min() > 32
    at_min = np.array([c["deletion"] for c in our_curves(model, x, maps, targets, 9, fill=lows)])
    np.testing.assert_allclose(curves, at_min[:, 1:], rtol=0, atol=ATOL)
    at_zero = np.array([c["deletion"] for c in our_curves(model, x, maps, targets, 9)])
    assert np.abs(curves - at_zero[:, 1:]).max() > 1e-3


# --- RegionPerturbation: our deletion and insertion curves -------------------------------------------

def test_region_perturbation_morf_and_lerf_are_our_deletion_and_insertion(case, quantus):
    """Quantus `RegionPerturbation` (Samek et al. 2017) removes patch x patch
    regions (all channels) ordered by their summed attribution
    (region_perturbation.py:354; most relevant first "morf" :368, least
    relevant first "lerf" :372) and records the drop y(x) - y(x perturbed)
    after each region (:410; defaults patch 8, 100 regions, "black",
    :71-79). On
    maps constant on its 6 x 6 patches (16 distinct values; our stable
    order then removes one patch per step of 36 pixels, steps = 16):
    morf[j] = ours.deletion[0] - ours.deletion[j + 1]; LeRF after j + 1
    patches leaves the 16 - j - 1 most important ones on the fill, which is
    our insertion at that step: lerf[j] = ours.deletion[0] -
    ours.insertion[16 - j - 1]. Quantus has no insertion metric besides
    this. Baseline 0.0 as ours (its default "black" is the image minimum)."""
    model, x, targets, _ = case
    patch, blocks = 6, (SIZE // 6) ** 2
    rng = np.random.default_rng(2)
    low = np.stack([rng.permutation(blocks).reshape(SIZE // patch, -1) for _ in x]).astype(np.float32) / blocks
    maps = np.kron(low, np.ones((patch, patch), np.float32))
    ours = our_curves(model, x, maps, targets, blocks)
    deletion, insertion = (np.array([c[k] for c in ours]) for k in ("deletion", "insertion"))
    inputs = dict(model=logits_module(model), x_batch=nchw(x), y_batch=targets, a_batch=maps[:, None],
                  channel_first=True)
    drops = {order: np.array(quantus.RegionPerturbation(
        patch_size=patch, order=order, regions_evaluation=blocks, perturb_baseline=0.0, disable_warnings=True)(
        **inputs)) for order in ("morf", "lerf")}
    np.testing.assert_allclose(drops["morf"], deletion[:, :1] - deletion[:, 1:], rtol=0, atol=2 * ATOL)
    np.testing.assert_allclose(drops["lerf"], deletion[:, :1] - insertion[:, -2::-1], rtol=0, atol=2 * ATOL)
    assert np.abs(drops["morf"] - drops["lerf"]).max() > 0.05  # two different curves


# --- MPRT: our randomization check -------------------------------------------------------------------

def randomized_like_ours(model, seed=0):
    """The Keras classifier as a torch module (NCHW in, probabilities out)
    whose one module with `reset_parameters`, `all_weights`, sets every
    Keras weight to `randomized_copy(model, seed)`'s: Quantus' cascade then
    has one step, our randomized model (on Quantus' deep copy of the module)."""
    import torch

    class AllWeights(torch.nn.Module):
        def __init__(self, weights):
            super().__init__()
            self.values = weights

        def reset_parameters(self):
            self.owner.keras.set_weights(self.values)

    class RandomizedLikeOurs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.keras = model
            self.all_weights = AllWeights(saliency.randomized_copy(model, seed).get_weights())
            object.__setattr__(self.all_weights, "owner", self)  # not a submodule; deepcopy maps it to the copy

        def forward(self, x):
            return self.keras(x.permute(0, 2, 3, 1))

    return RandomizedLikeOurs().eval()


def gradcam_nchw(seen):
    """Quantus' `explain_func`: our Grad-CAM maps ((N, 1, H, W), in [0, 1]) of
    the Keras model in the module it gets; `seen` collects those modules."""

    def explain(model, inputs, targets, **kwargs):
        seen.append(model)
        exps = saliency.GradCAM(model.keras, "feat").explain(np.asarray(inputs).transpose(0, 2, 3, 1),
                                                            [int(t) for t in targets])
        return np.stack([e.importance() for e in exps])[:, None]

    return explain


def test_quantus_mprt_finds_nothing_to_randomize_in_a_keras_model(case, quantus):
    """Quantus randomizes the torch modules that have `reset_parameters`
    (pytorch_model.py:322, 331; torch's Conv2d, Linear, BatchNorm...). Keras
    layers on the torch backend are modules without it: the cascade is
    empty and MPRT returns no scores at all, not an error."""
    model, x, targets, maps = case
    wrapped, seen = logits_module(model), []
    assert not [n for n, m in wrapped.named_modules() if hasattr(m, "reset_parameters")]
    scores = quantus.MPRT(disable_warnings=True)(model=wrapped, x_batch=nchw(x), y_batch=targets,
                                                 a_batch=maps[:, None], explain_func=gradcam_nchw(seen),
                                                 channel_first=True)
    assert scores == {} and seen == []  # not one explanation asked for


def test_randomization_check_equals_quantus_mprt_on_our_randomized_copy(case, quantus):
    """Quantus `MPRT` (Adebayo et al. 2018) with our randomized model as its
    cascade's one (so last) step gives our rank correlations.

    The same: the similarity, Spearman's rank correlation, ties averaged
    (`scipy.stats.spearmanr`, similarity_func.py:42; MPRT's default,
    mprt.py:163), of the map on the trained model and the map of the same
    explain_func on the randomized model, for the same targets. MPRT's
    defaults `abs=True`, `normalise=True` (mprt.py:85-86: |a| / max|a| over
    the whole batch, normalise_func.py:37-50) do not change ranks of our
    maps (in [0, 1], max 1). Our `quality_table` value is the mean over
    images of exactly these correlations.

    Differs: (1) what is randomized. Quantus calls torch's
    `reset_parameters()` module by module (Conv2d / Linear: kaiming-uniform
    weights and biases in +-1/sqrt(fan_in), whatever the trained scale;
    BatchNorm: weight 1, bias 0, running mean 0 and variance 1), cascading
    from the output ("top_down", mprt.py:79; or "bottom_up", "independent"),
    after `torch.manual_seed(seed + 1)`, seed 42, the same seed before every
    layer (pytorch_model.py:319-332), and scores each step plus "original"
    (the last step is what `return_last_correlation=True` returns,
    mprt.py:427).
    Ours redraws every weight tensor at once, each Gaussian with its own
    standard deviation (0.05 where that is 0), moving variances
    |N| + 1e-3, from `np.random.default_rng(seed)`: one model, Quantus'
    last cascade step. (2) a constant map (here: Grad-CAM of the least
    likely classes is all zero) has no rank correlation: both give NaN;
    `quality_table` leaves such images out of its mean and counts them
    (`<metric>_undefined`), where Quantus' mean is NaN.
    """
    model, x, targets, _ = case
    trained, seen = model.get_weights(), []
    module = randomized_like_ours(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's correlation of a constant map: 0 / 0
        scores = quantus.MPRT(disable_warnings=True)(model=module, x_batch=nchw(x), y_batch=targets,
                                                     explain_func=gradcam_nchw(seen), channel_first=True)
    assert list(scores) == ["original", "all_weights"]
    randomized = seen[-1].keras  # the module MPRT explained last: its deep copy, randomized
    assert seen[-1] is not module
    for ours_w, theirs_w, trained_w, now in zip(saliency.randomized_copy(model, 0).get_weights(),
                                                randomized.get_weights(), trained, model.get_weights()):
        np.testing.assert_array_equal(theirs_w, ours_w)
        assert not np.array_equal(theirs_w, trained_w)
        np.testing.assert_array_equal(now, trained_w)  # Quantus randomized its copy, not our model

    method = saliency.GradCAM(model, "feat")
    exps = method.explain(x, targets)
    maps = [e.importance() for e in exps]
    random_maps = [e.importance() for e in method.rebuild(saliency.randomized_copy(model, 0)).explain(x, targets)]
    ours = np.array([saliency.rank_correlation(a, b) for a, b in zip(maps, random_maps)])
    last = np.array(scores["all_weights"], float)
    constant = np.array([np.ptp(a) == 0 or np.ptp(b) == 0 for a, b in zip(maps, random_maps)])
    assert constant.tolist() == [False, False, True, True]
    np.testing.assert_allclose(last[~constant], ours[~constant], rtol=0, atol=1e-12)
    assert np.abs(ours[~constant]).max() > 5e-3  # not trivially 0 (measured 0.010, -0.017)
    assert np.isnan(last[constant]).all() and np.isnan(ours[constant]).all()
    np.testing.assert_allclose(scores["original"][:2], 1.0)
    table = saliency.quality_table(model, x, [method], {method.name: exps})
    row = table[method.name]
    assert row["randomized_model_rank_correlation"] == pytest.approx(np.nanmean(last), abs=1e-12)
    assert row["randomized_model_rank_correlation_undefined"] == 2


def test_rank_correlation_equals_quantus_spearman_with_ties(quantus):
    """Maps with many ties (8 levels on 24 x 24): our ranks average ties as
    scipy's `spearmanr` (Quantus' `correlation_spearman`) does."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 8, (5, SIZE, SIZE)).astype(np.float32)
    b = np.where(rng.random(a.shape) < 0.5, a, rng.integers(0, 8, a.shape)).astype(np.float32)
    theirs = quantus.functions.similarity_func.correlation_spearman(a.reshape(5, -1), b.reshape(5, -1), batched=True)
    ours = [saliency.rank_correlation(p, q) for p, q in zip(a, b)]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert min(ours) > 0.3
