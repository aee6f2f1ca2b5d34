import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from kerasimpl.data import (
    ArrayDataset, DatasetError, load_cifar10, load_dataset, source_kind, stratified_split, synthetic_dataset,
)
from kerasimpl.data import cifar10 as cifar

# Facts of the real subset (see shared/data/cifar10-subset/README.md); the
# pixel checksums were computed independently with plain pickle + reshape.
SUBSET_TRAIN_PER_CLASS = [521, 534, 497, 505, 540, 484, 515, 524, 537, 513]
SUBSET_TEST_PER_CLASS = [57, 41, 51, 49, 40, 48, 54, 47, 57, 56]
SUBSET_TRAIN_SHA = "90684720355e2042069f6224d81c3347302606439c2b373a9f7fc07cdd3c2c4d"
SUBSET_TEST_SHA = "8f2427926825821b6e0de483aa537ca1419ff2a5b82cc5e436d5dfc50e85cc7a"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_real_subset_facts(subset):
    assert subset.x_train.shape == (5170, 32, 32, 3) and subset.x_train.dtype == np.uint8
    assert subset.x_test.shape == (500, 32, 32, 3)
    assert subset.class_names == CLASSES
    assert np.bincount(subset.y_train).tolist() == SUBSET_TRAIN_PER_CLASS
    assert np.bincount(subset.y_test).tolist() == SUBSET_TEST_PER_CLASS
    assert hashlib.sha256(subset.x_train.tobytes()).hexdigest() == SUBSET_TRAIN_SHA
    assert hashlib.sha256(subset.x_test.tobytes()).hexdigest() == SUBSET_TEST_SHA


def test_extracted_folder_equals_archive(subset, subset_path, tmp_path):
    with tarfile.open(subset_path) as t:
        t.extractall(tmp_path, filter="data")
    for root in (tmp_path, tmp_path / cifar.FOLDER):
        folder = load_dataset(str(root))
        np.testing.assert_array_equal(folder.x_train, subset.x_train)
        np.testing.assert_array_equal(folder.y_test, subset.y_test)


def test_source_kind_names_each_kind_of_data_argument(tmp_path, subset_path):
    import zipfile

    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "batches").mkdir()
    (tmp_path / "batches" / "batches.meta").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "tiny.zip", "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "n01443537\n")
    kinds = {"cifar10": "cifar10", "synthetic": "synthetic", "tfds:mnist": "tfds", subset_path: "cifar10-path",
             tmp_path / "batches": "cifar10-path", tmp_path / "images": "folder", tmp_path / "tiny.zip": "tinyimagenet",
             tmp_path / "absent": "unknown"}
    assert {source: source_kind(source) for source in kinds} == kinds


def test_only_an_image_folder_without_test_draws_its_test_set(tmp_path, subset_path):
    from kerasimpl.data.provenance import drawn_test_set

    (tmp_path / "split" / "test" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "batches").mkdir()
    (tmp_path / "batches" / "batches.meta").write_bytes(b"")  # CIFAR-10's extracted folder: its test batch
    assert drawn_test_set(tmp_path / "images")
    assert not any(drawn_test_set(s) for s in (tmp_path / "split", tmp_path / "batches", subset_path, "synthetic"))


def test_split_is_stratified_disjoint_and_seeded(subset):
    y = subset.y_train
    s = stratified_split(y, 0.2, seed=7)
    assert len(np.intersect1d(s.train, s.val)) == 0
    assert len(s.train) + len(s.val) == len(y)
    counts = np.bincount(y)
    # Each class keeps 20% of its images in validation, within one image.
    assert np.all(np.abs(np.bincount(y[s.val], minlength=10) - 0.2 * counts) <= 1)
    again = stratified_split(y, 0.2, seed=7)
    np.testing.assert_array_equal(again.val, s.val)
    other = stratified_split(y, 0.2, seed=8)
    assert not np.array_equal(other.val, s.val)
    assert s.summary() == {"seed": 7, "val_fraction": 0.2, "num_train": len(s.train), "num_val": len(s.val)}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(np.zeros(10, int), fraction)


def test_loader_shuffles_per_epoch_reproducibly():
    x = np.arange(20).reshape(20, 1)
    ds = ArrayDataset(x, np.arange(20), batch_size=8, shuffle=True, seed=3)
    assert len(ds) == 3

    def epoch(d):
        d.on_epoch_begin()
        return np.concatenate([d[i][1] for i in range(len(d))])

    e0, e1 = epoch(ds), epoch(ds)
    assert sorted(e0) == list(range(20)) and sorted(e1) == list(range(20))
    assert not np.array_equal(e0, e1)
    fresh = ArrayDataset(x, np.arange(20), batch_size=8, shuffle=True, seed=3)
    fresh.start_epoch(1)  # a resumed run sees epoch 1's order
    np.testing.assert_array_equal(epoch(fresh), e1)
    np.testing.assert_array_equal(epoch(fresh), epoch(ds))  # and counts on from there
    xb, yb = ds[0]
    np.testing.assert_array_equal(xb[:, 0], yb)  # rows stay paired
    with pytest.raises(IndexError):
        ds[3]


def test_loader_serves_uint8_subset_without_copy(synthetic):
    idx = np.array([5, 1, 9])
    ds = ArrayDataset(synthetic.x_train, synthetic.y_train, batch_size=2, indices=idx)
    xb, yb = ds[0]
    assert xb.dtype == np.uint8 and xb.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(yb, synthetic.y_train[[5, 1]])
    assert ds.num_samples == 3


def test_synthetic_is_deterministic_and_valid():
    a, b = synthetic_dataset(seed=1), synthetic_dataset(seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.dtype == np.uint8 and a.num_classes == 10
    assert not np.array_equal(a.x_train, synthetic_dataset(seed=2).x_train)


# --- hostile files -----------------------------------------------------------

def _write_archive(path, members):
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def _batch(n=4, labels=None, data=None):
    data = np.zeros((n, 3072), np.uint8) if data is None else data
    return pickle.dumps({b"data": data, b"labels": list(range(n)) if labels is None else labels})


def _members(**override):
    meta = pickle.dumps({b"label_names": [c.encode() for c in CLASSES]})
    m = {cifar.META_FILE: meta, cifar.TEST_FILE: _batch()}
    m.update({f: _batch() for f in cifar.TRAIN_FILES})
    m.update(override)
    return {k: v for k, v in m.items() if v is not None}


def test_minimal_valid_archive_loads(tmp_path):
    _write_archive(tmp_path / "ok.tar.gz", _members())
    d = load_cifar10(tmp_path / "ok.tar.gz")
    assert d.x_train.shape == (20, 32, 32, 3) and d.y_test.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("member,content,message", [
    ("data_batch_3", None, "missing batch file"),
    ("data_batch_2", _batch(labels=[0, 1, 2, 10]), r"labels must lie in \[0, 10\)"),
    ("data_batch_1", _batch(data=np.zeros((4, 100), np.uint8)), r"shape \(N, 3072\)"),
    ("test_batch", _batch(labels=[0, 1]), "labels of shape"),
    ("data_batch_4", _batch()[:50], "truncated or foreign"),
    ("data_batch_5", pickle.dumps(["not", "a", "dict"]), "expected a dict"),
])
def test_bad_batches_name_the_file(tmp_path, member, content, message):
    _write_archive(tmp_path / "bad.tar.gz", _members(**{member: content}))
    with pytest.raises(DatasetError, match=message) as e:
        load_cifar10(tmp_path / "bad.tar.gz")
    assert member in str(e.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_foreign_pickle_is_refused_not_run(tmp_path):
    _write_archive(tmp_path / "evil.tar.gz", _members(data_batch_1=pickle.dumps({b"data": _Evil()})))
    with pytest.raises(DatasetError, match="refusing global"):
        load_cifar10(tmp_path / "evil.tar.gz")


def test_truncated_archive_and_missing_path(tmp_path, subset_path):
    raw = open(subset_path, "rb").read()
    (tmp_path / "cut.tar.gz").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DatasetError, match="cut.tar.gz"):
        load_cifar10(tmp_path / "cut.tar.gz")
    with pytest.raises(DatasetError, match="no such file"):
        load_cifar10(tmp_path / "nowhere.tar.gz")
    with pytest.raises(DatasetError, match="Accepted: 'cifar10'"):
        load_dataset("cifar100")


def test_bad_cached_download_is_removed_never_used(tmp_path, monkeypatch):
    cached = tmp_path / "datasets" / cifar.ARCHIVE_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"not the real archive")
    attempts = []

    def offline(url, target, *a, **k):
        attempts.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", offline)
    with pytest.raises(DatasetError, match="Could not download CIFAR-10"):
        cifar.download_cifar10(cache_dir=str(tmp_path))
    assert attempts == [cifar.CIFAR10_URL]
    assert not cached.exists()


def test_corrupt_download_is_removed(tmp_path, monkeypatch):
    def corrupt(url, target, *a, **k):
        with open(target, "wb") as f:
            f.write(b"truncated")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", corrupt)
    with pytest.raises(DatasetError, match="sha256"):
        cifar.download_cifar10(cache_dir=str(tmp_path))
    assert not (tmp_path / "datasets" / cifar.ARCHIVE_NAME).exists()


def test_same_source_is_the_same_file_however_spelled(tmp_path, monkeypatch):
    """A run recorded with `--data ../x.tar.gz` is the same source as `/abs/x.tar.gz`, a symlink to it, or
    `./x.tar.gz` from another folder; another file, or a name, is not."""
    from kerasimpl.data.provenance import _realpath, same_source

    archive = tmp_path / "data" / "x.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"x")
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    record = {"data": "../data/x.tar.gz", "source": "../data/x.tar.gz", "source_realpath": _realpath("../data/x.tar.gz")}
    assert same_source(record, "../data/x.tar.gz") and same_source(record, str(archive))
    (tmp_path / "link.tar.gz").symlink_to(archive)
    assert same_source(record, str(tmp_path / "link.tar.gz"))
    monkeypatch.chdir(tmp_path / "data")
    assert same_source(record, "x.tar.gz")  # recorded realpath, not the spelling
    older = {"data": "../data/x.tar.gz", "source": "../data/x.tar.gz"}  # before source_realpath: resolved from here
    assert same_source(older, str(archive))  # from data/, ../data/x.tar.gz is this file too
    monkeypatch.chdir(tmp_path)
    assert not same_source(older, str(archive))  # from here it names a file that is not there
    assert same_source(record, str(archive))
    other = tmp_path / "data" / "y.tar.gz"
    other.write_bytes(b"y")
    assert not same_source(record, str(other)) and not same_source(record, "cifar10")
    assert same_source({"data": "cifar10", "source": "cifar10"}, "cifar10")
