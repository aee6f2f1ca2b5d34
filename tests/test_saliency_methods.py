"""The saliency registry: known answers, invariants, backends, and the references.

Known answers use `test_saliency.evidence_model` (class-1 evidence is red
inside the top-left quadrant; the image also has a green distractor).
Reference tests compare with pytorch-grad-cam and Captum on the same Keras
model (torch backend) through the runners of `kerasimpl.saliency.reference`
(imported via `reference_libs`).
"""

import inspect
import os
import sys

import keras
import numpy as np
import pytest

from kerasimpl import saliency
from kerasimpl.layers import LabeledSoftmax

sys.path.insert(0, os.path.dirname(__file__))
from test_saliency import GREEN, RED, SIZE, evidence_gap_model, evidence_image, evidence_model  # noqa: E402

import reference_libs  # noqa: E402

NAMES = ["cam", "gradcam", "gradcam++", "smoothgrad-cam++", "hirescam", "xgradcam", "layercam", "scorecam", "sscam",
         "iscam", "eigencam", "gradients", "smoothgrad", "integrated-gradients", "occlusion", "rise"]
TORCH = keras.backend.backend() == "torch"
needs_torch = pytest.mark.skipif(not TORCH, reason="Captum, pytorch-grad-cam and torchcam are PyTorch libraries: these "
                                 "tests run in the torch suite (KERAS_BACKEND=torch)")


def small_options(name):
    """Settings that suit the 32 px evidence model."""
    opts = {"layer": "act"} if "layer" in saliency.method_options(name) else {}
    return {**opts, **{"occlusion": {"patch": 8, "stride": 4}, "rise": {"masks": 400, "grid": 4},
                       "smoothgrad": {"samples": 8}, "integrated-gradients": {"steps": 16},
                       "sscam": {"samples": 4, "noise": 0.5}, "iscam": {"steps": 4}}.get(name, {})}


def explain(name, model, x, targets, **extra):
    return saliency.get_method(name, model, **{**small_options(name), **extra}).explain(x, targets)


# --- the registry ------------------------------------------------------------------

def test_registry_names_and_errors():
    assert saliency.list_methods() == NAMES
    assert saliency.parse_methods("all") == NAMES
    assert saliency.parse_methods(" gradcam, rise,gradcam ") == ["gradcam", "rise"]
    with pytest.raises(ValueError, match=r"Unknown saliency method 'grad-cam'\. Accepted: \['cam', 'gradcam'"):
        saliency.get_method("grad-cam", evidence_model())
    with pytest.raises(ValueError, match=r"gradcam takes no option \['patch'\]\. Accepted: \['layer'\]"):
        saliency.get_method("gradcam", evidence_model(), layer="act", patch=3)
    method = saliency.get_method("occlusion", evidence_model(), patch=8, stride=None)  # None: the default
    assert (method.patch, method.stride) == (8, 20)
    with pytest.raises(ValueError, match="No layer 'nope'"):
        saliency.get_method("scorecam", evidence_model(), layer="nope")


@pytest.mark.parametrize("name", NAMES)
def test_every_method_names_its_reference_and_rebuilds_with_its_options(name):
    cls = saliency.METHODS[name]
    doc = (cls.__doc__ or "") + (inspect.getmodule(cls).__doc__ or "")
    assert "Reference:" in doc
    build = evidence_gap_model if name == "cam" else evidence_model
    method = saliency.get_method(name, build(), **small_options(name))
    copy = method.rebuild(build())
    assert type(copy) is cls and copy.options() == method.options()
    assert set(method.options()) <= set(saliency.method_options(name))


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_carries_the_precision(name):
    build = evidence_gap_model if name == "cam" else evidence_model
    method = saliency.get_method(name, build(), **small_options(name))
    for precision in ("bfloat16", "float32"):  # the non-default, then the default again
        method.precision = precision
        assert method.rebuild(build()).precision == precision


@pytest.mark.parametrize("name", ["smoothgrad", "smoothgrad-cam++", "sscam"])
@pytest.mark.parametrize("bad,says", [
    ({"samples": 0}, "samples (noisy copies per image) must be an integer >= 1. Received: samples=0"),
    ({"samples": 2.5}, "samples (noisy copies per image) must be an integer >= 1. Received: samples=2.5"),
    ({"samples": True}, "samples (noisy copies per image) must be an integer >= 1. Received: samples=True"),
    ({"noise": -0.1}, "noise must be a finite number >= 0. Received: noise=-0.1"),
    ({"noise": float("nan")}, "noise must be a finite number >= 0. Received: noise=nan"),
    ({"noise": "0.1"}, "noise must be a finite number >= 0. Received: noise='0.1'"),
    ({"seed": 1.5}, "seed must be an integer. Received: seed=1.5"),
])
def test_noisy_copy_methods_validate_samples_and_noise_alike(name, bad, says):
    model = evidence_model()
    with pytest.raises(ValueError) as e:
        saliency.get_method(name, model, **{**small_options(name), **bad})
    assert str(e.value) == says
    method = saliency.get_method(name, model, **{**small_options(name), "samples": np.int64(3), "noise": 0})
    assert (method.samples, method.noise) == (3, 0.0) and type(method.samples) is int


# --- known answers -------------------------------------------------------------------

@pytest.mark.parametrize("name", saliency.CLASS_DISCRIMINATIVE)
def test_class_discriminative_methods_find_the_evidence(name):
    if name == "cam":  # defined only for a linear head after global pooling: the evidence model has none
        with pytest.raises(saliency.NotApplicable, match="Received: Flatten.*Dense.*Use gradcam"):
            saliency.get_method("cam", evidence_model(), layer="act")
    (e,) = explain(name, evidence_gap_model() if name == "cam" else evidence_model(), evidence_image()[None], [1])
    imp = e.importance()
    assert imp.shape == (SIZE, SIZE) and imp.min() >= 0.0 and imp.max() <= 1.0
    assert e.target == 1 and e.score > 0.99
    if name == "rise":  # a Monte Carlo estimate over soft masks: evidence clearly above the distractor
        assert imp[RED].mean() > imp[GREEN].mean() + 0.3
    else:
        assert imp[RED].mean() > 0.3 and imp[GREEN].max() < 0.05


def test_gradient_methods_know_their_values():
    """On the evidence model d logit_1 / d red = 0.2 / 255 on the red square, 0 elsewhere."""
    model, x = evidence_model(), evidence_image()[None]
    (g,) = explain("gradients", model, x, [1])
    expected = np.zeros((SIZE, SIZE), np.float32)
    expected[RED] = 0.2 / 255.0
    np.testing.assert_allclose(g.map, expected, rtol=1e-5, atol=1e-9)
    (s,) = explain("smoothgrad", model, x, [1], noise=0.0)
    np.testing.assert_allclose(s.map, g.map, rtol=1e-6)


# --- invariants ----------------------------------------------------------------------

def gap_model(seed=0, positive=False, smooth=False):
    """conv -> act (the layer) -> global average pool -> dense: d logit / d act is spatially constant."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((16, 16, 3))
    a = keras.layers.Rescaling(1 / 255.0)(inp)
    a = keras.layers.Conv2D(6, 3, padding="same", activation="softplus" if smooth else "relu", name="act")(a)
    dense = keras.layers.Dense(4, name="logits",
                               kernel_initializer=keras.initializers.RandomUniform(0.01, 0.1) if positive
                               else "glorot_uniform")
    logits = dense(keras.layers.GlobalAveragePooling2D()(a))
    return keras.Model(inp, LabeledSoftmax(list("abcd"), name="predictions")(logits))


def images(n=2, size=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_hirescam_and_layercam_equal_gradcam_when_the_gradient_is_spatially_constant():
    model, x = gap_model(positive=True), images()
    grad = [e.map for e in saliency.GradCAM(model, "act").explain(x, [0, 2])]
    hires = [e.map for e in saliency.HiResCAM(model, "act").explain(x, [0, 2])]
    layer = [e.map for e in saliency.LayerCAM(model, "act").explain(x, [0, 2])]
    assert max(m.max() for m in grad) == pytest.approx(1.0)
    np.testing.assert_allclose(hires, grad, atol=1e-5)
    np.testing.assert_allclose(layer, grad, atol=1e-5)  # positive dense weights: ReLU(grad) = grad


def test_integrated_gradients_completeness():
    """Attributions sum to logit(x) - logit(baseline) (Sundararajan et al., section 3)."""
    model, x = gap_model(smooth=True), images(2)
    ig = saliency.IntegratedGradients(model, steps=32, baseline=0.0)
    attr = ig.attributions(x, [1, 3])
    logits = keras.ops.convert_to_numpy(ig.logits(np.concatenate([x, np.zeros_like(x[:1])])))
    for i, t in enumerate([1, 3]):
        expected = logits[i, t] - logits[-1, t]
        assert abs(expected) > 1e-3
        assert attr[i].sum() == pytest.approx(expected, rel=1e-3, abs=1e-5)
    (e,) = ig.explain(x[:1], [1])
    np.testing.assert_allclose(e.map, attr[0].sum(-1), rtol=1e-5, atol=1e-7)
    riemann = saliency.IntegratedGradients(model, steps=64, method="riemann_trapezoid").attributions(x[:1], [1])
    assert riemann.sum() == pytest.approx(attr[0].sum(), rel=1e-2)


def test_smoothgrad_equals_gradients_on_a_linear_model():
    inp = keras.Input((8, 8, 3))
    logits = keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, LabeledSoftmax(list("abc"), name="predictions")(logits))
    x = images(1, 8)
    (g,) = saliency.Gradients(model).explain(x, [2])
    (s,) = saliency.SmoothGrad(model, samples=5, noise=0.3).explain(x, [2])
    np.testing.assert_allclose(s.map, g.map, rtol=1e-5)


def test_rise_masks_keep_p_of_the_image_and_depend_on_the_seed():
    m = saliency.rise_masks(500, (24, 24), grid=4, p=0.25, seed=1)
    assert m.shape == (500, 24, 24) and m.min() >= 0.0 and m.max() <= 1.0
    assert m.mean() == pytest.approx(0.25, abs=0.03)
    np.testing.assert_array_equal(m, saliency.rise_masks(500, (24, 24), grid=4, p=0.25, seed=1))
    assert not np.array_equal(m, saliency.rise_masks(500, (24, 24), grid=4, p=0.25, seed=2))


def test_eigencam_is_the_first_principal_component():
    model, x = gap_model(), images(1)
    method = saliency.EigenCAM(model, "act")
    acts = keras.ops.convert_to_numpy(method.features(x))[0].reshape(-1, 6)
    centred = acts - acts.mean(0)
    proj = keras.ops.convert_to_numpy(saliency.EigenCAM.projection(method.features(x)))[0].ravel()
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(proj), np.abs(centred @ vt[0]), rtol=1e-4, atol=1e-5)
    assert np.dot(proj, acts.sum(1) - acts.sum(1).mean()) >= 0  # the documented sign
    assert np.var(proj) == pytest.approx(s[0] ** 2 / len(acts), rel=1e-4)


def test_average_drop_and_increase_know_their_answers():
    model, x = evidence_model(), evidence_image()
    (cam,) = saliency.GradCAM(model, "act").explain(x[None], [1])
    good = saliency.average_drop_increase(model, x[None], cam.importance()[None], [1])
    bad = saliency.average_drop_increase(model, x[None], (1.0 - cam.importance())[None], [1])
    assert good["average_drop"] < 1.0 < 50.0 < bad["average_drop"]  # showing only the red square keeps it
    ones = saliency.average_drop_increase(model, x[None], np.ones((1, SIZE, SIZE)), [1])
    assert ones["average_drop"] == 0.0 and ones["increase_in_confidence"] == 0.0


# --- torch == JAX --------------------------------------------------------------------

def numpy_weights(model, seed=0):
    """Weights drawn by NumPy: the same model on every backend (Keras' own RNG differs per backend)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def dump_all(folder):
    """Cross-backend job (tests/cross_backend.py): every method's maps on this backend."""
    model, x = numpy_weights(gap_model(seed=3)), images(2)
    for name in NAMES:
        opts = {"layer": "act"} if "layer" in saliency.method_options(name) else {}
        opts.update({"occlusion": {"patch": 4, "stride": 3}, "rise": {"masks": 64, "grid": 4},
                     "smoothgrad": {"samples": 4}, "integrated-gradients": {"steps": 8},
                     "sscam": {"samples": 2, "noise": 0.3}, "iscam": {"steps": 3}}.get(name, {}))
        exps = saliency.get_method(name, model, **opts).explain(x, [1, 2])
        np.save(os.path.join(folder, f"{name}_{keras.backend.backend()}.npy"), np.stack([e.map for e in exps]))


@pytest.mark.slow
def test_every_method_agrees_across_backends(other_backend):
    from cross_backend import job_folder

    folder = job_folder(other_backend[1], "test_saliency_methods:dump_all")
    for name in NAMES:
        a, b = (np.load(os.path.join(folder, f"{name}_{backend}.npy")) for backend in ("torch", "jax"))
        scale = max(np.abs(a).max(), 1e-12)
        np.testing.assert_allclose(a / scale, b / scale, atol=2e-4, err_msg=name)


# --- pytorch-grad-cam and Captum -----------------------------------------------------

# `reference_model`: a fixture (tests/conftest.py), shared with test_saliency_torchcam.py.

PGC = {k: v for k, v in reference_libs.PYTORCH_GRAD_CAM.items() if k != "eigencam"}  # EigenCAM: tested below


@needs_torch
@pytest.mark.parametrize("name", list(PGC))
def test_cam_methods_equal_pytorch_grad_cam(name, reference_model):
    reference_libs.pytorch_grad_cam()  # skip (or fail in CI) without it
    model, targets = reference_model(), [1, 3]
    x = images(2, 32, seed=1)
    ours = saliency.get_method(name, model, layer="feat")
    exps = ours.explain(x, targets)
    theirs = reference_libs.pytorch_grad_cam_runner(ours)(x, targets)
    for e, t in zip(exps, theirs):
        assert e.map.max() == pytest.approx(1.0)
        # pytorch-grad-cam scales to [0, 1] before its cv2 resize, we after ours: equal once both are scaled.
        t = (t - t.min()) / (t.max() - t.min())
        np.testing.assert_allclose(e.map, t, atol=2e-5)


@needs_torch
def test_eigencam_projection_equals_pytorch_grad_cam_up_to_sign(reference_model):
    reference_libs.pytorch_grad_cam()
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model, x = reference_model(), images(2, 32, seed=1)
    method = saliency.EigenCAM(model, "feat")
    acts = method.features(x)
    ours = keras.ops.convert_to_numpy(saliency.EigenCAM.projection(acts))
    theirs = get_2d_projection(keras.ops.convert_to_numpy(acts).transpose(0, 3, 1, 2))
    for a, b in zip(ours, theirs):
        sign = np.sign(np.sum(a * b))
        np.testing.assert_allclose(a, sign * b, rtol=1e-3, atol=1e-4 * np.abs(b).max())


@needs_torch
def test_gradients_and_integrated_gradients_equal_captum(reference_model):
    reference_libs.require("captum.attr")
    model, targets = reference_model(), [1, 3]
    x = images(2, 32, seed=1)
    gradients, ig = saliency.Gradients(model), saliency.IntegratedGradients(model, steps=20)

    theirs = reference_libs.captum_runner(gradients)(x, targets).max(-1)  # Saliency: |d logit / dx|
    ours = np.stack([e.map for e in gradients.explain(x, targets)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * np.abs(theirs).max())

    theirs = reference_libs.captum_runner(ig)(x, targets)  # baseline 0, 20 Gauss-Legendre points
    np.testing.assert_allclose(ig.attributions(x, targets), theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


@needs_torch
@pytest.mark.parametrize("size,patch,stride", [(32, 8, 4), (32, 4, 4)])
def test_occlusion_equals_captum_where_the_windows_tile_the_image(size, patch, stride, reference_model):
    """Captum's `Occlusion` reports, per pixel, the mean drop in the target
    output over the windows covering it; ours records the probability per
    window. Where the windows tile the image the two agree exactly."""
    reference_libs.require("captum.attr")
    model, x, target = reference_model(), images(1, size, seed=2), 2
    occlusion = saliency.Occlusion(model, patch=patch, stride=stride)
    (e,) = occlusion.explain(x, [target])
    theirs = reference_libs.captum_runner(occlusion)(x, [target])[0, ..., 0]  # (H, W), the same for every channel
    drop = e.score - e.map  # per window
    cover = np.zeros((size, size))
    expected = np.zeros((size, size))
    for i in range(e.map.shape[0]):
        for j in range(e.map.shape[1]):
            window = (slice(i * stride, i * stride + patch), slice(j * stride, j * stride + patch))
            expected[window] += drop[i, j]
            cover[window] += 1
    assert cover.min() >= 1  # the windows tile the image: every pixel covered
    np.testing.assert_allclose(theirs, expected / np.maximum(cover, 1), atol=3e-7)


# --- the CLI and the ImageNet-top offline path ----------------------------------------

def test_saliency_cli_all_methods_quality_table(tmp_path, capsys):
    from PIL import Image

    from experiments import saliency as cli
    from kerasimpl.artifacts import save_model

    save_model(evidence_model(), str(tmp_path / "m.keras"))
    Image.fromarray(evidence_image().astype(np.uint8)).save(tmp_path / "img.png")
    out = tmp_path / "out"
    code = cli.main(["--model", str(tmp_path / "m.keras"), "--image", str(tmp_path / "img.png"), "--method", "all",
                     "--patch", "8", "--stride", "4", "--masks", "200", "--samples", "4", "--steps", "8",
                     "--quality", "--out", str(out)])
    assert code == 0
    import json

    report = json.load(open(out / "saliency.json"))
    applicable = [n for n in NAMES if n != "cam"]  # `all` leaves out cam on a model without a linear head, saying so
    assert list(report["methods"]) == applicable
    assert list(report["quality"]) == applicable + [saliency.RANDOM_BASELINE]  # the random maps last
    captured = capsys.readouterr()
    assert "cam left out" in captured.err
    for name in applicable:
        m = np.load(out / f"{name}.npy")
        assert m.shape == ((7, 7) if name == "occlusion" else (SIZE, SIZE))
    q = report["quality"]
    assert q["gradcam"]["deletion_auc"] < q["gradcam"]["insertion_auc"]
    assert q["gradcam"]["average_drop"] < 5.0  # the red square alone keeps the class
    md = (out / "quality.md").read_text()
    assert md.count("\n") == 3 + len(applicable) and "average drop" in md and "| integrated-gradients |" in md
    assert "gradcam" in saliency.beats_baseline(q)  # the red square is what the model reads
    assert (out / "quality.csv").read_text().splitlines()[0].startswith("method,deletion_auc,insertion_auc")
    assert "| gradcam++ |" in captured.out
    assert cli.main(["--model", str(tmp_path / "m.keras"), "--image", str(tmp_path / "img.png"), "--method",
                     "gradcam,camm", "--out", str(out)]) == 2
    assert "Unknown saliency method 'camm'. Accepted: ['cam', 'gradcam'" in capsys.readouterr().err
    assert cli.main(["--model", str(tmp_path / "m.keras"), "--image", str(tmp_path / "img.png"), "--method",
                     "cam", "--out", str(out)]) == 2  # asked for by name: an error naming the alternative
    assert "cam needs the feature map" in capsys.readouterr().err


def test_choose_images_mixes_correct_and_misclassified_reproducibly():
    from experiments.saliency import choose_images

    labels = np.arange(40) % 4
    probs = np.eye(4)[labels]
    probs[:6] = np.eye(4)[(labels[:6] + 1) % 4]  # 6 misclassified
    a = choose_images(probs, labels, 8, seed=3)
    assert len(a) == 8 and np.sum(a < 6) == 4  # half wrong
    np.testing.assert_array_equal(a, choose_images(probs, labels, 8, seed=3))
    assert np.sum(choose_images(probs, labels, 20, seed=0) < 6) == 6  # all the wrong ones there are, then right
    assert len(choose_images(probs, labels, 100)) == 40


def test_saliency_cli_explains_a_data_set(tmp_path, subset_path):
    """--data: N real CIFAR-10 test images through a saved model, half right and
    half wrong, captioned, a note per image, a gallery and the table."""
    import json

    from experiments import saliency as cli
    from kerasimpl import models
    from kerasimpl.artifacts import save_model
    from kerasimpl.data import load_dataset

    model = models.build_classifier("smallcnn", 10, weights=None, class_names=[f"c{i}" for i in range(10)],
                                    backbone_kwargs={"widths": (8, 16)})
    save_model(model, str(tmp_path / "m.keras"))
    out = tmp_path / "out"
    code = cli.main(["--model", str(tmp_path / "m.keras"), "--data", subset_path, "--num-images", "6",
                     "--method", "gradcam,integrated-gradients,occlusion", "--steps", "8", "--quality",
                     "--out", str(out)])
    assert code == 0
    report = json.load(open(out / "saliency.json"))
    images = report["images"]
    assert len(images) == 6 and set(report["quality"]) == {"gradcam", "integrated-gradients", "occlusion",
                                                           saliency.RANDOM_BASELINE}
    assert [i["correct"] for i in images] == [True] * 3 + [False] * 3 and report["note"] is None
    test = load_dataset(subset_path)
    probs = keras.ops.convert_to_numpy(model(np.stack([test.x_test[i["index"]] for i in images]).astype("float32")))
    for entry, p in zip(images, probs):
        true = f"c{int(test.y_test[entry['index']])}"
        assert entry["label"] == true and entry["predicted"] == f"c{p.argmax()}" == entry["caption"].split("pred: ")[1][:2]
        assert f"true: {true}" in entry["caption"] and f"({p.max():.2f})" in entry["caption"]
        assert ("2nd: c%d" % np.argsort(-p)[1] in entry["caption"]) == (not entry["correct"])
        note = (out / entry["note"]).read_text()
        assert ("WRONG" in note) != entry["correct"] and f"second choice: c{np.argsort(-p)[1]}" in note
        assert "| gradcam (smallcnn_out) |" in note and "central box share" in note
    z = np.load(out / "maps.npz")
    assert z["images"].shape == (6, 32, 32, 3) and z["gradcam"].shape == (6, 32, 32)
    assert z["occlusion"].shape == (6, 10, 10)  # patch 4, stride 3 at 32 px
    m, noted = saliency.mass_shares(z["gradcam"][0]), images[0]["mass"]["gradcam (smallcnn_out)"]
    assert noted.pop("peak") == m.pop("peak") and noted == pytest.approx(m)  # the note's numbers are the map's
    assert (out / "gallery.png").stat().st_size > 10_000
    again = tmp_path / "again"
    assert cli.main(["--model", str(tmp_path / "m.keras"), "--data", subset_path, "--num-images", "6",
                     "--method", "gradcam", "--out", str(again)]) == 0
    assert [i["index"] for i in json.load(open(again / "saliency.json"))["images"]] == [i["index"] for i in images]


def test_shortfall_says_when_the_test_set_lacks_wrong_or_right_images():
    from experiments.saliency import choose_images
    from kerasimpl.saliency.notes import caption, shortfall

    labels = np.arange(40) % 4
    probs = np.eye(4)[labels] * 0.7 + 0.075
    probs[:2] = np.eye(4)[(labels[:2] + 1) % 4] * 0.7 + 0.075  # 2 misclassified of 40
    chosen = choose_images(probs, labels, 8)
    assert np.sum(probs[chosen].argmax(1) != labels[chosen]) == 2
    assert shortfall(probs, labels, chosen, 8) == ("asked for 8 images, half misclassified, but the 40 test images "
                                                   "predicted have only 2 misclassified: showing 2 misclassified "
                                                   "and 6 correct")
    assert shortfall(probs, labels, choose_images(probs, labels, 4), 4) == ""
    names = ["cat", "dog", "frog", "ship"]
    assert caption(7, names, 0, np.array([0.1, 0.6, 0.25, 0.05])) == \
        "#7 WRONG  true: cat (0.10)\npred: dog (0.60)\n2nd: frog (0.25)"
    assert caption(3, names, 2, np.array([0.1, 0.2, 0.65, 0.05])) == "#3 RIGHT  true: frog\npred: frog (0.65)"


def test_mass_shares_know_their_answers():
    m = np.zeros((32, 32))
    m[8:24, 8:24] = 1.0  # exactly the central box
    s = saliency.mass_shares(m)
    assert s["central_share"] == 1.0 and s["central_area"] == 0.25 and s["border_share"] == 0.0
    assert s["border_area"] == pytest.approx(1 - 24 * 24 / 1024) and s["peak"] == [8.5 / 32, 8.5 / 32]
    ring = np.ones((32, 32))
    ring[4:28, 4:28] = 0.0  # exactly the border ring
    r = saliency.mass_shares(ring)
    assert r["border_share"] == 1.0 and r["central_share"] == 0.0
    flat = saliency.mass_shares(np.ones((32, 32)))
    assert flat["central_share"] == pytest.approx(flat["central_area"])
    from kerasimpl.saliency.notes import reading

    assert reading(s).startswith("concentrated") and reading(r).startswith("mostly on the border")
    assert reading(flat) == "spread over the image"
    with pytest.raises(ValueError, match="non-negative"):
        saliency.mass_shares(-m)


def test_imagenet_classifier_from_a_local_with_top_file_and_class_index(tmp_path):
    """The offline path of the reference experiment: Keras' with-top file format, made locally."""
    import json

    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from kerasimpl import models

    keras.utils.set_random_seed(0)
    ref = keras.applications.MobileNetV2(weights=None, include_top=True, input_shape=(96, 96, 3),
                                         classifier_activation=None)
    path = tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"  # the name Keras downloads
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    index = {str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}
    (tmp_path / "imagenet_class_index.json").write_text(json.dumps(index))
    model = models.build_imagenet_classifier("mobilenetv2", weights=str(path), image_size=96,
                                             class_index=str(tmp_path / "imagenet_class_index.json"))
    assert models.class_names_of(model)[7] == "class_7"
    x = images(2, 96)
    expected = keras.ops.softmax(ref(keras.applications.mobilenet_v2.preprocess_input(x.copy())))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(expected),
                               rtol=1e-4, atol=1e-6)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="Not an ImageNet class index"):
        models.build_imagenet_classifier("mobilenetv2", weights=None, image_size=96,
                                         class_index=str(tmp_path / "bad.json"))


def test_offline_imagenet_error_names_the_with_top_file(monkeypatch):
    from keras.src.utils import file_utils

    from kerasimpl import models

    def offline(fname=None, origin=None, *a, **k):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(RuntimeError, match="needs mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5 from "
                                           "https://storage.googleapis.com/.*Without internet"):
        models.build_imagenet_classifier("mobilenetv2")  # the reference experiment: 224 px, with top
    with pytest.raises(RuntimeError, match=r"needs mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1\.0_96_no_top"):
        models.build_classifier("mobilenetv2", 10, image_size=96)


@needs_torch
def test_pytorch_grad_cam_hooked_directly_on_nhwc_is_wrong(reference_model):
    """Why the NCHW wrapper exists: hooking the Keras layer itself gives a wrong map, silently."""
    import torch

    pgc = reference_libs.pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = reference_model(), images(1, 32, seed=1)

    class NCHWInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, z):
            return self.model(z.permute(0, 2, 3, 1))

    with pgc.GradCAM(model=NCHWInput(), target_layers=[model.get_layer("feat")]) as cam:
        direct = cam(input_tensor=torch.tensor(x).permute(0, 3, 1, 2), targets=[ClassifierOutputTarget(1)])[0]
    (ours,) = saliency.GradCAM(model, "feat").explain(x, [1])
    direct = (direct - direct.min()) / (direct.max() - direct.min())
    assert direct.shape == ours.map.shape and np.abs(direct - ours.map).max() > 0.5


def test_pytorch_grad_cam_import_leaves_no_torchvision_stub_behind():
    """The stub that lets pytorch-grad-cam import without torchvision must not
    make `import torchvision` succeed for everyone else afterwards."""
    import importlib.util
    import sys

    from reference_libs import pytorch_grad_cam

    pytorch_grad_cam()
    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision" not in sys.modules
        with pytest.raises(ImportError):
            import torchvision  # noqa: F401
    else:  # a real torchvision is installed: it must be the real one
        import torchvision

        assert hasattr(torchvision, "models")
