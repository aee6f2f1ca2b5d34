"""Image folders as a data source: layouts, bad files, streaming, end to end."""

import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from kerasimpl.data import ArrayDataset, DatasetError, ImageFiles, load_dataset
from kerasimpl.images import read_image

CLASSES = ("cat", "dog", "frog")


def class_image(label, rng, size=(40, 48)):
    """A learnable picture: a bright square whose place and colour give the class."""
    h, w = size
    x = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    colour = np.array([(255, 60, 60), (60, 255, 60), (60, 60, 255)][label % 3], np.uint8)
    r = (label * 11) % (h - 12)
    x[r:r + 12, 4 + label * 8:16 + label * 8] = colour
    return x


def make_folder(root, per_class=6, size=(40, 48), fmt="png", classes=CLASSES, seed=0):
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            Image.fromarray(class_image(label, rng, size)).save(os.path.join(root, name, f"{i:03d}.{fmt}"))
    return str(root)


def write_bad_files(folder):
    """Every kind of unreadable file, plus files that must be ignored."""
    good = os.path.join(folder, "000.png")
    data = open(good, "rb").read()
    open(os.path.join(folder, "empty.jpg"), "wb").close()
    open(os.path.join(folder, "truncated.png"), "wb").write(data[: len(data) // 2])
    open(os.path.join(folder, "text.jpg"), "w").write("not an image")
    jpeg = os.path.join(folder, "full.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, quality=95)
    blob = open(jpeg, "rb").read()
    os.remove(jpeg)
    open(os.path.join(folder, "truncated.jpg"), "wb").write(blob[: len(blob) // 3])
    # Ignored: hidden files, a hidden folder, non-image extensions.
    open(os.path.join(folder, ".DS_Store"), "wb").write(b"\0\1")
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(os.path.join(folder, ".hidden.png"))
    os.makedirs(os.path.join(folder, ".thumbs"), exist_ok=True)
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(os.path.join(folder, ".thumbs", "t.png"))
    open(os.path.join(folder, "notes.txt"), "w").write("hello")
    return {"empty.jpg", "truncated.png", "text.jpg", "truncated.jpg"}


def test_flat_folder_classes_sorted_and_test_held_out_stratified(tmp_path):
    root = make_folder(tmp_path / "photos", per_class=10, classes=("zebra", "ant", "moth"))
    data = load_dataset(root, seed=3)
    assert data.class_names == ("ant", "moth", "zebra")
    assert isinstance(data.x_train, ImageFiles) and data.image_shape == (40, 48, 3)
    assert len(data.y_train) + len(data.y_test) == 30
    assert np.bincount(data.y_test).tolist() == [2, 2, 2]  # 20% of each class
    assert not set(data.x_train.paths) & set(data.x_test.paths)
    assert any("held out as the test set" in n for n in data.notes)
    for i in (0, 5):  # a row is the file's own pixels, with its folder's label
        path = data.x_train.paths[i]
        np.testing.assert_array_equal(data.x_train[i], np.asarray(Image.open(path).convert("RGB")))
        assert data.class_names[data.y_train[i]] == os.path.basename(os.path.dirname(path))
    again = load_dataset(root, seed=3)
    assert again.x_test.paths == data.x_test.paths  # seeded
    assert load_dataset(root, seed=4).x_test.paths != data.x_test.paths


def test_split_folders_with_val_and_test_and_nested_subfolders(tmp_path):
    root = tmp_path / "ds"
    make_folder(root / "train", per_class=5)
    make_folder(root / "val", per_class=2, seed=1)
    make_folder(root / "test", per_class=3, seed=2)
    nested = root / "train" / "dog" / "more" / "deeper"
    nested.mkdir(parents=True)
    Image.fromarray(class_image(1, np.random.default_rng(9))).save(nested / "x.png")
    data = load_dataset(str(root))
    assert data.class_names == CLASSES
    assert len(data.y_test) == 9 and np.bincount(data.y_test).tolist() == [3, 3, 3]
    assert any(p.endswith(os.path.join("more", "deeper", "x.png")) for p in data.x_train.paths)
    split = data.split(0.2, 0)
    assert split.given and len(split.val) == 6 and len(split.train) == 16
    assert all("/val/" in data.x_train.paths[i] for i in split.val)
    assert not any("/val/" in data.x_train.paths[i] for i in split.train)
    assert split.summary()["validation"] == "given by the data source"
    # Without val/: a seeded stratified split of train/, as for CIFAR-10.
    os.rename(root / "val", tmp_path / "elsewhere")
    data = load_dataset(str(root))
    split = data.split(0.2, 0)
    assert not split.given and np.bincount(data.y_train[split.val]).tolist() == [1, 1, 1]


@pytest.mark.parametrize("case,message", [
    ("class_missing_in_test", r"class folders differ from train/'s. Missing: \['frog'\]"),
    ("empty_class", r"no readable images in class folder\(s\) \['dog'\]"),
    ("only_test", r"no train/"),
    ("one_class", "at least 2"),
    ("no_classes", "no class folders"),
    ("mixed_sizes", r"images differ in size .*--data-size N"),
])
def test_bad_layouts_give_clear_errors(tmp_path, case, message):
    root = tmp_path / "ds"
    if case == "class_missing_in_test":
        make_folder(root / "train")
        make_folder(root / "test", classes=CLASSES[:2])
    elif case == "empty_class":
        make_folder(root)
        for f in os.listdir(root / "dog"):
            os.remove(root / "dog" / f)
        open(root / "dog" / "readme.txt", "w").write("x")
    elif case == "only_test":
        make_folder(root / "test")
    elif case == "one_class":
        make_folder(root, classes=("cat",))
    elif case == "no_classes":
        root.mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "loose.png")
    else:
        make_folder(root)
        Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / "cat" / "small.png")
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(root))


def test_unreadable_files_are_skipped_and_named_hidden_and_other_files_ignored(tmp_path):
    root = make_folder(tmp_path / "ds", per_class=5)
    bad = write_bad_files(os.path.join(root, "cat"))
    data = load_dataset(root, test_fraction=0.2)
    assert {os.path.basename(p) for p, _ in data.skipped} == bad
    assert all(os.path.isabs(p) or os.path.exists(p) for p, _ in data.skipped)
    reasons = dict((os.path.basename(p), r) for p, r in data.skipped)
    assert "empty" in reasons["empty.jpg"] and "truncated" in reasons["truncated.jpg"].lower()
    paths = data.x_train.paths + data.x_test.paths
    assert len(paths) == 15  # 5 good images per class, nothing else
    assert not any(os.path.basename(p).startswith(".") or "/.thumbs/" in p for p in paths)
    assert any("skipped 4 unreadable" in n for n in data.notes)


def test_image_modes_match_the_inference_reader(tmp_path):
    """Grayscale, palette, CMYK, RGBA and 16-bit files convert exactly as
    experiments.infer converts them (one code path), at the requested size."""
    root = make_folder(tmp_path / "ds", per_class=2)
    rng = np.random.default_rng(0)
    rgb = class_image(0, rng)
    Image.fromarray(rgb).convert("L").save(os.path.join(root, "cat", "gray.png"))
    Image.fromarray(rgb).convert("P").save(os.path.join(root, "cat", "palette.png"))
    Image.fromarray(rgb).convert("CMYK").save(os.path.join(root, "cat", "cmyk.jpg"))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(os.path.join(root, "cat", "rgba.png"))
    Image.fromarray((rng.integers(0, 65535, (40, 48))).astype(np.uint16)).save(os.path.join(root, "cat", "deep.png"))
    Image.fromarray(rgb).save(os.path.join(root, "cat", "big.jpg"))
    data = load_dataset(root, image_size=24, test_fraction=0.34)
    assert data.image_shape == (24, 24, 3) and not data.skipped
    files = data.x_train
    for i, path in enumerate(files.paths):
        np.testing.assert_array_equal(files[i], read_image(path, (24, 24)))
    batch = files[np.arange(len(files))[::-1]]
    assert batch.dtype == np.uint8 and batch.shape == (len(files), 24, 24, 3)
    np.testing.assert_array_equal(batch[-1], files[0])


def test_loader_over_files_equals_loader_over_the_same_pixels_in_memory(tmp_path):
    root = make_folder(tmp_path / "ds", per_class=8)
    data = load_dataset(root)
    memory = data.x_train[np.arange(len(data.y_train))]
    a = ArrayDataset(data.x_train, data.y_train, 5, shuffle=True, seed=1, workers=2)
    b = ArrayDataset(memory, data.y_train, 5, shuffle=True, seed=1)
    for ds in (a, b):
        ds.on_epoch_begin()
    for i in range(len(a)):
        (xa, ya), (xb, yb) = a[i], b[i]
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_fingerprint_follows_the_files(tmp_path):
    root = make_folder(tmp_path / "ds", per_class=4)
    first = load_dataset(root).fingerprint
    assert load_dataset(root).fingerprint == first
    target = os.path.join(root, "dog", "001.png")
    Image.fromarray(class_image(2, np.random.default_rng(5))).save(target)
    os.utime(target, ns=(1, 1))
    assert load_dataset(root).fingerprint != first


@pytest.mark.slow
def test_compare_infer_and_saliency_on_an_image_folder(tmp_path, capsys):
    """compare trains a frozen pretrained base (local weights file) with an MLP
    head and a linear probe on a folder with a bad file; the feature cache is
    shared and keyed by the file list; the saved model classifies the
    folder's test images with its class names (infer) and explains one
    (saliency)."""
    from experiments import compare, infer
    from experiments import saliency as saliency_cli
    from kerasimpl import evaluation, inference, models
    from kerasimpl.artifacts import load_model

    root = tmp_path / "ds"
    make_folder(root / "train", per_class=12)
    make_folder(root / "test", per_class=4, seed=1)
    write_bad_files(str(root / "train" / "frog"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        donor = models.build_classifier("mobilenetv2", 3, weights=None, image_size=32,
                                        backbone_kwargs={"alpha": 0.35})
    weights = str(tmp_path / "mnv2.weights.h5")
    models.backbone_model(donor).save_weights(weights)
    out = str(tmp_path / "run")
    argv = ["--data", str(root), "--data-size", "32", "--backbones", "mobilenetv2", "--weights", weights,
            "--image-size", "32", "--alpha", "0.35", "--epochs", "3", "--batch-size", "8", "--hidden", "8",
            "--linear-probe", "--workers", "2", "--quiet", "--plots-dir", "", "--out", out]
    assert compare.main(argv) == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed and "truncated.jpg" in printed
    config = json.load(open(os.path.join(out, "config.json")))
    assert len(config["skipped_files"]) == 4 and config["class_names"] == list(CLASSES)
    results = json.load(open(os.path.join(out, "results.json")))
    assert [r["run"] for r in results] == ["mobilenetv2", "mobilenetv2-linear-probe"]
    assert results[0]["trained"] == "frozen base" and results[1]["trained"].startswith("linear probe (L2 ")
    assert os.path.exists(os.path.join(out, "mobilenetv2", "features_train.npz"))
    assert not os.path.exists(os.path.join(out, "mobilenetv2-linear-probe", "features_train.npz"))  # shared
    data = load_dataset(str(root), image_size=32)
    for r in results:  # reported accuracy == the saved model on the folder's test images
        model = load_model(os.path.join(out, r["run"], "model.keras"))
        assert models.class_names_of(model) == list(CLASSES)
        probs = inference.predict(model, data.x_test)
        assert evaluation.classification_metrics(probs, data.y_test)["accuracy"] == pytest.approx(r["test_accuracy"])
    # Inference on the test folder (recursive: class sub-folders), labels are names.
    model_path = os.path.join(out, "mobilenetv2", "model.keras")
    assert infer.main(["--model", model_path, "--json", "--top-k", "1", str(root / "test")]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 12 and all(r["top"][0]["label"] in CLASSES for r in listed)
    # Saliency on one of the folder's images.
    image = data.x_test.paths[0]
    assert saliency_cli.main(["--model", model_path, "--image", image, "--out", str(tmp_path / "sal")]) == 0
    assert os.path.getsize(tmp_path / "sal" / "overlay.png") > 0
