"""Known-answer saliency tests on a model whose evidence lives in one region."""

import os

import keras
import numpy as np
import pytest

from kerasimpl.layers import LabeledSoftmax
from kerasimpl.saliency import (
    GradCAM, Occlusion, deletion_insertion, occluded_batch, positions, randomized_copy, rank_correlation,
)

SIZE = 32
REGION = (slice(0, 16), slice(0, 16))  # class-1 evidence is read only here
RED = (slice(4, 12), slice(4, 12))  # the red square the image puts inside it
GREEN = (slice(20, 28), slice(20, 28))  # a distractor outside it


def evidence_model():
    """conv (red, green detectors) -> relu -> dense reading red inside REGION only."""
    inp = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")(inp)
    a = keras.layers.ReLU(name="act")(a)
    logits = keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(a))
    model = keras.Model(inp, LabeledSoftmax(["other", "red-in-region"], name="predictions")(logits))
    conv = np.zeros((1, 1, 3, 2), "float32")
    conv[0, 0, 0, 0] = conv[0, 0, 1, 1] = 1.0 / 255.0
    dense = np.zeros((SIZE, SIZE, 2, 2), "float32")
    dense[REGION + (0, 1)] = 0.2
    model.get_layer("conv").set_weights([conv])
    model.get_layer("logits").set_weights([dense.reshape(-1, 2), np.array([3.0, 0.0], "float32")])
    return model


def evidence_gap_model():
    """The same detectors, then global average pooling and a linear layer
    (the head CAM needs): the class-1 logit is 100 x the red share."""
    inp = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")(inp)
    a = keras.layers.ReLU(name="act")(a)
    logits = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D(name="pool")(a))
    model = keras.Model(inp, LabeledSoftmax(["other", "red"], name="predictions")(logits))
    conv = np.zeros((1, 1, 3, 2), "float32")
    conv[0, 0, 0, 0] = conv[0, 0, 1, 1] = 1.0 / 255.0
    model.get_layer("conv").set_weights([conv])
    model.get_layer("logits").set_weights([np.array([[0.0, 100.0], [0.0, 0.0]], "float32"), np.zeros(2, "float32")])
    return model


def evidence_image():
    x = np.zeros((SIZE, SIZE, 3), "float32")
    x[RED + (0,)] = 255.0
    x[GREEN + (1,)] = 255.0
    return x


def maps():
    model, x = evidence_model(), evidence_image()[None]
    (occ,) = Occlusion(model, patch=8, stride=4).explain(x, [1])
    (cam,) = GradCAM(model, layer="act").explain(x, [1])
    return occ, cam


def test_occlusion_minimum_and_gradcam_mass_land_on_the_evidence():
    occ, cam = maps()
    assert occ.score > 0.99 and occ.map.shape == (7, 7)
    i, j = np.unravel_index(np.argmin(occ.map), occ.map.shape)
    assert (i * 4, j * 4) == (4, 4)  # the mask that covers the red square exactly
    assert occ.map.min() < 0.1 < 0.99 < occ.map.max()
    assert np.all(occ.map[5:, 5:] > 0.99)  # masking the green distractor changes nothing
    assert cam.map.shape == (SIZE, SIZE) and cam.map.min() == 0.0 and cam.map.max() == pytest.approx(1.0)
    inside = cam.map[RED].sum() / cam.map.sum()
    assert inside > 0.8 and cam.map[GREEN].max() < 0.05
    imp = occ.importance()
    assert imp.shape == (SIZE, SIZE) and imp[8, 8] == 1.0  # low probability -> high importance


def dump(folder):
    """Cross-backend job (tests/cross_backend.py): this backend's occlusion and Grad-CAM maps."""
    occ, cam = maps()
    np.save(os.path.join(folder, f"occ_{keras.backend.backend()}.npy"), occ.map)
    np.save(os.path.join(folder, f"cam_{keras.backend.backend()}.npy"), cam.map)


@pytest.mark.slow
def test_maps_agree_across_backends(other_backend):
    from cross_backend import job_folder

    folder = job_folder(other_backend[1], "test_saliency:dump")
    for kind in ("occ", "cam"):
        a, b = np.load(os.path.join(folder, f"{kind}_torch.npy")), np.load(os.path.join(folder, f"{kind}_jax.npy"))
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("size,patch,stride", [(224, 30, 20), (32, 4, 3), (32, 8, 4), (50, 50, 7), (31, 1, 1)])
def test_grid_shape_is_floor_formula(size, patch, stride):
    n = (size - patch) // stride + 1
    assert len(positions(size, patch, stride)) == n
    assert positions(size, patch, stride)[-1] + patch <= size
    if size == 224:
        assert n == 10 and positions(size, patch, stride)[-1] + patch == 210  # last 14 px never masked


def test_masked_batch_equals_reference_loop():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (20, 24, 3)).astype("float32")
    corners = np.array([(0, 0), (5, 7), (12, 16), (3, 0)])
    got = keras.ops.convert_to_numpy(occluded_batch(image, corners, patch=8, fill=-1.0))
    for k, (r, c) in enumerate(corners):
        ref = image.copy()
        ref[r:r + 8, c:c + 8] = -1.0
        np.testing.assert_array_equal(got[k], ref)


def test_bad_occlusion_arguments():
    model = evidence_model()
    with pytest.raises(ValueError, match=r"patch must lie in \[1, 32\]"):
        Occlusion(model, patch=40, stride=4)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        Occlusion(model, patch=8, stride=0)
    with pytest.raises(ValueError, match="No layer 'nope'"):
        GradCAM(model, layer="nope")
    with pytest.raises(ValueError, match="4-D"):
        GradCAM(model, layer="logits")
    with pytest.raises(ValueError, match="targets must be"):
        Occlusion(model, patch=8, stride=4).explain(evidence_image()[None], [5])


def test_quality_measures_rank_a_good_map_above_a_bad_one():
    model, x = evidence_model(), evidence_image()
    _, cam = maps()
    good = deletion_insertion(model, x, cam.importance(), 1, steps=16)
    bad = deletion_insertion(model, x, 1.0 - cam.importance(), 1, steps=16)
    assert good["deletion"][0] == pytest.approx(cam.score, rel=1e-5)
    assert good["deletion_auc"] < bad["deletion_auc"]
    assert good["insertion_auc"] > bad["insertion_auc"]
    random_model = randomized_copy(model, seed=0)
    (rcam,) = GradCAM(random_model, layer="act").explain(x[None], [1])
    assert not np.allclose(cam.map, rcam.map, atol=0.05)  # the randomization check can fail a method


def test_rank_correlation_known_answers():
    a = np.arange(12.0).reshape(3, 4)
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, a**3) == pytest.approx(1.0)  # monotone: ranks only
    ties = np.array([0.0, 0, 0, 1])
    # Ranks 1, 1, 1, 3 (ties averaged) against 0..3: Pearson of the ranks.
    assert rank_correlation(ties, np.arange(4.0)) == pytest.approx(np.corrcoef([1, 1, 1, 3], [0, 1, 2, 3])[0, 1])
    assert np.isnan(rank_correlation(np.zeros(4), np.arange(4.0)))  # a constant map: undefined, not a pass


# --- the CLI -------------------------------------------------------------------

def test_saliency_cli_reproduces_known_answer(tmp_path, capsys):
    from PIL import Image

    from experiments import saliency as cli
    from kerasimpl.artifacts import save_model

    model_path = str(tmp_path / "evidence.keras")
    save_model(evidence_model(), model_path)
    Image.fromarray(evidence_image().astype(np.uint8)).save(tmp_path / "img.png")
    out = tmp_path / "out"
    code = cli.main(["--model", model_path, "--image", str(tmp_path / "img.png"), "--patch", "8", "--stride", "4",
                     "--out", str(out), "--quality"])
    assert code == 0
    assert "red-in-region (1)" in capsys.readouterr().out
    occ, cam = np.load(out / "occlusion.npy"), np.load(out / "gradcam.npy")
    assert occ.shape == (7, 7) and np.unravel_index(np.argmin(occ), occ.shape) == (1, 1)
    assert cam.shape == (SIZE, SIZE) and 0.0 <= cam.min() and cam.max() <= 1.0
    assert cam[RED].sum() / cam.sum() > 0.8
    assert (out / "overlay.png").stat().st_size > 0
    import json
    report = json.load(open(out / "saliency.json"))
    assert report["target"] == 1 and report["gradcam"]["layer"] == "act"
    q = report["quality"]["gradcam"]
    assert 0.0 <= q["deletion_auc"] < q["insertion_auc"] <= 1.0


def test_saliency_cli_imagenet_backbone_offline_and_bad_image(tmp_path, capsys):
    from PIL import Image

    from experiments import saliency as cli

    Image.fromarray(np.zeros((10, 300), np.uint16)).save(tmp_path / "wide16.png")  # odd size and mode
    code = cli.main(["--backbone", "mobilenetv3large", "--weights", "none", "--image", str(tmp_path / "wide16.png"),
                     "--method", "gradcam", "--out", str(tmp_path / "o")])
    assert code == 0
    cam = np.load(tmp_path / "o" / "gradcam.npy")
    assert cam.shape == (224, 224)
    assert not (tmp_path / "o" / "occlusion.npy").exists()
    (tmp_path / "bad.png").write_text("not an image")
    capsys.readouterr()
    assert cli.main(["--backbone", "mobilenetv2", "--weights", "none", "--image", str(tmp_path / "bad.png"),
                     "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "not a readable image" in err and "Traceback" not in err
    assert cli.main(["--backbone", "smallcnn", "--image", str(tmp_path / "wide16.png"), "--out", str(tmp_path)]) == 2


def test_saliency_reuses_the_test_split_that_trained_the_model(tmp_path, capsys):
    """A folder without test/: compare records its split (seed 3, 25%); saliency
    with another --seed explains images of that test set, and refuses when the
    folder changed; a model without the record gets a note."""
    import json
    import shutil

    from test_folder import make_folder

    from experiments import compare
    from experiments import saliency as cli
    from kerasimpl.data import load_dataset

    folder = make_folder(tmp_path / "ds", per_class=8, size=(32, 32))
    run = tmp_path / "run"
    assert compare.main(["--data", folder, "--data-size", "32", "--backbones", "smallcnn", "--weights", "none",
                         "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--hidden", "8", "--seed", "3",
                         "--test-fraction", "0.25", "--quiet", "--plots-dir", "", "--out", str(run)]) == 0
    record = json.load(open(run / "config.json"))["test_split"]
    assert record["drawn"] and record["seed"] == 3 and record["test_fraction"] == 0.25 and record["num_test"] == 6
    trained = load_dataset(folder, image_size=32, seed=3, test_fraction=0.25)
    other = load_dataset(folder, image_size=32, seed=99)
    assert set(other.x_test.paths) - set(trained.x_test.paths)  # --seed 99 alone would pick other "test" images
    model = str(run / "smallcnn" / "model.keras")
    argv = ["--model", model, "--data", folder, "--num-images", "4", "--method", "gradcam", "--seed", "99"]
    assert cli.main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert "test split: as when the model was trained" in capsys.readouterr().out
    files = [i["file"] for i in json.load(open(tmp_path / "a" / "saliency.json"))["images"]]
    assert len(files) == 4 and set(files) <= set(trained.x_test.paths)

    os.remove(os.path.join(folder, "frog", "000.png"))  # the data changed since training
    assert cli.main(argv + ["--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "error: The test images of" in err and "drawn with seed 3 and test fraction 0.25" in err
    assert "test_sha256: recorded" in err

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(model, alone / "model.keras")  # the model without its run folder
    assert cli.main(["--model", str(alone / "model.keras"), "--data", folder, "--num-images", "2", "--method",
                     "gradcam", "--out", str(tmp_path / "c")]) == 0
    note = json.load(open(tmp_path / "c" / "saliency.json"))["note"]
    assert note.startswith("no record of the split that trained this model") and "seed 0" in note


def test_occlusion_window_scales_with_the_input_size():
    """The reference experiment's 30/20 window at 224 px keeps 10 positions per axis at other sizes."""
    from kerasimpl.saliency.occlusion import positions, scaled_window

    assert scaled_window(224) == (30, 20) and scaled_window(32) == (4, 3) and scaled_window(64) == (9, 6)
    for size in (32, 64, 224):
        patch, stride = scaled_window(size)
        assert len(positions(size, patch, stride)) == 10
