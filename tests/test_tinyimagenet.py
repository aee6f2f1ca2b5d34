"""Tiny ImageNet (zip and folder), --classes N / FILE, and the course's TinyImageNet30 folder layout."""

import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from kerasimpl.data import DatasetError, ImageFiles, load_dataset
from kerasimpl.data.tinyimagenet import extract_zip

# Deliberately not in sorted order, as in the official wnids.txt.
WNIDS = ("n03444034", "n01443537", "n09999999", "n02124075")
WORDS = {"n01443537": "goldfish, Carassius auratus", "n02124075": "Egyptian cat",
         "n03444034": "go-kart", "n09999999": "zzz, other name", "n00000001": "not in wnids"}


def _jpeg(path, value, size=16):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = np.full((size, size, 3), value, np.uint8)
    x[: size // 2, :, 0] = 255 - value
    Image.fromarray(x).save(path, quality=95)


def make_tiny(root, train=5, val=3, bad=False):
    """The official tiny-imagenet-200 layout, 16x16 JPEGs; returns the dataset folder."""
    root = os.path.join(root, "tiny-imagenet-200")
    os.makedirs(root)
    with open(os.path.join(root, "wnids.txt"), "w") as f:
        f.write("\n".join(WNIDS) + "\n")
    with open(os.path.join(root, "words.txt"), "w") as f:
        f.writelines(f"{w}\t{t}\n" for w, t in WORDS.items())
    lines = []
    for c, w in enumerate(WNIDS):
        for i in range(train):
            _jpeg(os.path.join(root, "train", w, "images", f"{w}_{i}.JPEG"), 20 * c + i)
        with open(os.path.join(root, "train", w, f"{w}_boxes.txt"), "w") as f:
            f.write("boxes\n")
        for i in range(val):
            name = f"val_{c * val + i}.JPEG"
            _jpeg(os.path.join(root, "val", "images", name), 20 * c + i)
            lines.append(f"{name}\t{w}\t0\t0\t15\t15\n")
    with open(os.path.join(root, "val", "val_annotations.txt"), "w") as f:
        f.writelines(lines)
    for i in range(4):  # unlabelled; must not be used
        _jpeg(os.path.join(root, "test", "images", f"test_{i}.JPEG"), 7)
    if bad:
        open(os.path.join(root, "train", WNIDS[0], "images", "broken.JPEG"), "wb").write(b"not a jpeg")
        os.remove(os.path.join(root, "val", "images", "val_1.JPEG"))  # annotated, file gone
    return root


def make_folder(root, per_class=5, classes=("a", "b")):
    """PATH/<class>/NNN.png, a different grey level per class."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            os.makedirs(os.path.join(root, name), exist_ok=True)
            Image.fromarray(np.full((12, 12, 3), 40 * c + i, np.uint8)).save(os.path.join(root, name, f"{i:03d}.png"))
    return str(root)


def zip_folder(folder, path):
    with zipfile.ZipFile(path, "w") as z:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                full = os.path.join(dirpath, f)
                z.write(full, os.path.relpath(full, os.path.dirname(folder)))
    return str(path)


def test_folder_names_counts_and_test_is_labelled_val(tmp_path):
    root = make_tiny(tmp_path, bad=True)
    data = load_dataset(root)
    assert data.class_names == ("goldfish", "Egyptian cat", "go-kart", "zzz")  # sorted wnids, first name
    assert isinstance(data.x_train, ImageFiles) and data.image_shape == (16, 16, 3)
    assert np.bincount(data.y_train).tolist() == [5, 5, 5, 5]
    assert np.bincount(data.y_test).tolist() == [3, 3, 2, 3]  # val_1 (class n03444034, sorted 3rd) is missing
    assert not any("/test/" in p for p in data.x_train.paths + data.x_test.paths)
    assert all("/val/images/" in p for p in data.x_test.paths)
    # The label of each val image is its annotation's class.
    first = sorted(WNIDS).index("n03444034")
    assert data.y_test[data.x_test.paths.index(os.path.join(root, "val", "images", "val_0.JPEG"))] == first
    assert [(os.path.basename(p), r) for p, r in data.skipped][1] == ("val_1.JPEG",
                                                                       "listed in val_annotations.txt but missing")
    assert [os.path.basename(p) for p, _ in data.skipped] == ["broken.JPEG", "val_1.JPEG"]
    assert any("unlabelled" in n for n in data.notes)
    split = data.split(0.2, seed=1)  # train/ split into train and validation, stratified
    assert np.bincount(data.y_train[split.val]).tolist() == [1, 1, 1, 1]
    # Pixels come from the files: the first training image of class 0 has value 20*index(class 0 wnid).
    c0 = WNIDS.index(sorted(WNIDS)[0])
    assert data.x_train[0][12, 3, 1] in range(20 * c0 - 3, 20 * c0 + 4)


def test_zip_equals_extracted_and_extracts_once(tmp_path):
    root = make_tiny(tmp_path / "src")
    archive = zip_folder(root, tmp_path / "tiny-imagenet-200.zip")
    a, b = load_dataset(root), load_dataset(archive)
    assert a.class_names == b.class_names
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(a.x_train[:], b.x_train[:])
    np.testing.assert_array_equal(a.x_test[:], b.x_test[:])
    extracted = archive + ".extracted"
    assert os.path.isdir(os.path.join(extracted, "tiny-imagenet-200", "train"))
    assert not os.path.exists(os.path.join(extracted, "tiny-imagenet-200", "test"))  # unlabelled: not extracted
    marker = os.path.getmtime(os.path.join(extracted, ".complete"))
    assert extract_zip(archive) == os.path.join(extracted, "tiny-imagenet-200")
    assert os.path.getmtime(os.path.join(extracted, ".complete")) == marker  # reused, not redone


def test_zip_refuses_paths_outside(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "n01443537\n")
        z.writestr("tiny-imagenet-200/train/../../../escape.txt", "x")
    with pytest.raises(DatasetError, match="refusing member"):
        load_dataset(str(path))
    assert not (tmp_path.parent / "escape.txt").exists()


def test_classes_n_and_file(tmp_path):
    root = make_tiny(tmp_path)
    two = load_dataset(root, classes=2)
    assert two.class_names == ("goldfish", "Egyptian cat")
    assert sorted(set(two.y_train.tolist())) == [0, 1] and len(two.y_test) == 6
    listing = tmp_path / "keep.txt"
    listing.write_text("# mine\nn03444034\n\nzzz\n")  # a wnid and a name; dataset order kept
    picked = load_dataset(root, classes=str(listing))
    assert picked.class_names == ("go-kart", "zzz")
    assert np.bincount(picked.y_train).tolist() == [5, 5]
    assert any("keep.txt" in n for n in picked.notes)


@pytest.mark.parametrize("classes, match", [(1, r"N in \[2, 4\]"), (9, r"N in \[2, 4\]"),
                                            ("nowhere.txt", "no such file")])
def test_classes_errors(tmp_path, classes, match):
    root = make_tiny(tmp_path)
    with pytest.raises(DatasetError, match=match):
        load_dataset(root, classes=classes)


def test_classes_file_unknown_names_lists_accepted(tmp_path):
    root = make_tiny(tmp_path)
    listing = tmp_path / "keep.txt"
    listing.write_text("goldfish\nunicorn\n")
    with pytest.raises(DatasetError, match=r"unknown class.*'unicorn'.*Accepted.*n01443537"):
        load_dataset(root, classes=str(listing))


def test_missing_annotations_is_a_clear_error(tmp_path):
    root = make_tiny(tmp_path)
    os.remove(os.path.join(root, "val", "val_annotations.txt"))
    with pytest.raises(DatasetError, match="val_annotations.txt: missing"):
        load_dataset(root)


def test_classes_on_image_folder_and_cifar(tmp_path, synthetic):
    root = make_folder(tmp_path / "photos", per_class=5, classes=("ant", "bee", "cat"))
    data = load_dataset(root, classes=2)
    assert data.class_names == ("ant", "bee") and len(data.y_train) + len(data.y_test) == 10
    from kerasimpl.data import subset_classes

    sub = subset_classes(synthetic, 3)
    keep = synthetic.y_train < 3
    np.testing.assert_array_equal(sub.x_train, synthetic.x_train[keep])
    np.testing.assert_array_equal(sub.y_train, synthetic.y_train[keep])
    assert sub.class_names == synthetic.class_names[:3]


def test_cifar_subset_classes(subset_path, tmp_path):
    listing = tmp_path / "k.txt"
    listing.write_text("cat\ndog\n")
    data = load_dataset(subset_path, classes=str(listing))
    assert data.class_names == ("cat", "dog")
    full = load_dataset(subset_path)
    assert len(data.y_test) == int(np.isin(full.y_test, [3, 5]).sum())


def test_course_tinyimagenet30_layout(tmp_path):
    """One folder per class, class.txt naming them, an unlabelled test_set folder."""
    root = make_folder(tmp_path / "ti30", per_class=5, classes=("n1", "n2", "n3"))
    (tmp_path / "ti30" / "class.txt").write_text("n1\tbaboon\nn2 banana split\n")
    os.makedirs(tmp_path / "ti30" / "test_set")
    for i in range(4):
        shutil.copy(os.path.join(root, "n1", "000.png"), tmp_path / "ti30" / "test_set" / f"{i}.png")
    data = load_dataset(root, seed=0)
    assert data.class_names == ("baboon", "banana split", "n3")  # n3: not named, keeps its folder name
    assert len(data.y_train) + len(data.y_test) == 15  # the 4 unlabelled images are not used
    assert not any("test_set" in p for p in data.x_train.paths + data.x_test.paths)
    assert any("test_set" in n and "4 unlabelled" in n for n in data.notes)
    listing = tmp_path / "keep.txt"
    listing.write_text("baboon\nn3\n")
    assert load_dataset(root, classes=str(listing)).class_names == ("baboon", "n3")


def test_unlabelled_test_folder_beside_train(tmp_path):
    make_folder(tmp_path / "d" / "train", per_class=5, classes=("a", "b"))
    os.makedirs(tmp_path / "d" / "test")
    shutil.copy(tmp_path / "d" / "train" / "a" / "000.png", tmp_path / "d" / "test" / "x.png")
    data = load_dataset(str(tmp_path / "d"))
    assert data.class_names == ("a", "b") and len(data.y_test) == 2  # held out of train/, 20% of 5 per class
    assert any("unlabelled" in n for n in data.notes)


def test_class_txt_that_matches_nothing_is_an_error(tmp_path):
    root = make_folder(tmp_path / "p", per_class=3, classes=("a", "b"))
    (tmp_path / "p" / "class.txt").write_text("zebra stripes\n")
    with pytest.raises(DatasetError, match="cannot match line 'zebra stripes'"):
        load_dataset(root)


def test_compare_on_tiny_imagenet_zip_with_classes(tmp_path, capsys):
    import json

    from experiments import compare

    archive = zip_folder(make_tiny(tmp_path / "src", train=6, val=2), tmp_path / "tiny-imagenet-200.zip")
    out = str(tmp_path / "run")
    argv = ["--data", archive, "--classes", "3", "--data-size", "32", "--backbones", "smallcnn", "--epochs", "1",
            "--batch-size", "8", "--hidden", "8", "--quiet", "--plots-dir", "", "--out", out]
    assert compare.main(argv) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["classes"] == "3" and config["class_names"] == ["goldfish", "Egyptian cat", "go-kart"]
    assert config["num_test"] == 6 and config["split"]["num_train"] + config["split"]["num_val"] == 18
    assert any("unlabelled" in n for n in config["data_notes"])
    assert compare.main([*argv[:3], "9", *argv[4:-1], str(tmp_path / "bad")]) == 2
    assert "error: " in capsys.readouterr().err


def test_compare_decodes_image_files_with_every_cpu_and_arrays_with_one(tmp_path):
    from kerasimpl.comparison_run import with_workers
    from kerasimpl.run_config import RunConfig

    every = os.cpu_count() or 1
    expected = {"synthetic": 1, make_folder(tmp_path / "folder"): every, make_tiny(tmp_path / "tiny"): every}
    for data, workers in expected.items():
        assert with_workers(RunConfig(("smallcnn",), data, "unused")).workers == workers, data
    assert with_workers(RunConfig(("smallcnn",), "synthetic", "unused", workers=3)).workers == 3  # a given count
