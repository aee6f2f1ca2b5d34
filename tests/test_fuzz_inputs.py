"""Hostile input: every file the toolkit reads, damaged at random (Hypothesis).

Each reader must end in its own one-line error (or succeed, or skip and list
the file): never another exception, never a hang, never a half-written
output. The counts below are what README states ("Hostile input"): each
`@FUZZ` test tries `FUZZ_EXAMPLES` cases (derandomized, so the same cases
every run), plus the hand-made cases named in each test.
"""

import io
import json
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerasimpl.artifacts import ArtifactError, load_model
from kerasimpl.data import DatasetError
from kerasimpl.data.cifar10 import load_cifar10
from kerasimpl.data.folder import load_image_folder
from kerasimpl.images import ImageError, probe_image, read_image
from kerasimpl.models import imagenet_class_names
from kerasimpl.run_folder import read_result

FUZZ_EXAMPLES = 30
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=20_000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def damaged(base: bytes):
    """Truncations, overwritten bytes, and unrelated bytes of `base`."""
    n = len(base)
    return st.one_of(
        st.integers(0, n - 1).map(lambda k: base[:k]),
        st.tuples(st.integers(0, n - 1), st.binary(min_size=1, max_size=16)).map(
            lambda t: base[:t[0]] + t[1] + base[t[0] + len(t[1]):]),
        st.binary(max_size=512),
    )


def one_line(e):
    text = str(e)
    assert text and "\n" not in text, text
    return text


# ---- CIFAR-10: archives and batches -------------------------------------------------------

def _batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(i) for i in rng.integers(0, 10, n)]}


CIFAR_FILES = {"batches.meta": {b"label_names": [f"c{i}".encode() for i in range(10)]},
               **{f"data_batch_{i}": _batch(2, i) for i in range(1, 6)}, "test_batch": _batch(2, 9)}


def _archive(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, obj in files.items():
            data = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE = _archive(CIFAR_FILES)


def _load_cifar_or_error(path):
    try:
        data = load_cifar10(path)
    except DatasetError as e:
        return one_line(e)
    assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (32, 32, 3)
    assert len(data.x_train) == len(data.y_train) and data.y_train.max() < data.num_classes
    return None


def test_the_undamaged_cifar_files_load(tmp_path):
    (tmp_path / "c.tar.gz").write_bytes(ARCHIVE)
    assert _load_cifar_or_error(str(tmp_path / "c.tar.gz")) is None


@FUZZ
@given(blob=damaged(ARCHIVE))
def test_damaged_cifar_archive(tmp_path, blob):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(blob)
    _load_cifar_or_error(str(path))


_PICKLED = pickle.dumps(CIFAR_FILES["data_batch_1"], protocol=2)
_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=8)
                       | st.text(max_size=8), lambda c: st.lists(c, max_size=3)
                       | st.dictionaries(st.binary(max_size=6) | st.integers(), c, max_size=3), max_leaves=8)
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=8)
_arrays = st.builds(lambda shape, dtype: np.zeros(shape, dtype),
                    st.lists(st.integers(0, 4), max_size=3).map(tuple), st.sampled_from(["uint8", "float32", "int64"]))


@FUZZ
@given(blob=st.one_of(damaged(_PICKLED),
                      st.builds(lambda d, l: pickle.dumps({b"data": d, b"labels": l}, protocol=2), _arrays, _values),
                      _values.map(lambda v: pickle.dumps(v, protocol=2))))
def test_damaged_cifar_batch_in_a_folder(tmp_path, blob):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    for name, obj in CIFAR_FILES.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    (folder / "data_batch_3").write_bytes(blob)
    _load_cifar_or_error(str(folder))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, obj in CIFAR_FILES.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    (folder / "test_batch").write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    assert "refusing global os.system" in _load_cifar_or_error(str(folder))
    assert not (tmp_path / "pwned").exists()


# ---- image files --------------------------------------------------------------------------

def _image_bytes(fmt):
    from PIL import Image

    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


IMAGES = {ext: _image_bytes(fmt) for ext, fmt in
          ((".png", "PNG"), (".jpg", "JPEG"), (".gif", "GIF"), (".bmp", "BMP"), (".tif", "TIFF"), (".webp", "WEBP"))}


def _read_or_error(path):
    try:
        a = read_image(path, (8, 8))
        h, w = probe_image(path)
    except ImageError as e:
        return one_line(e)
    assert a.shape == (8, 8, 3) and a.dtype == np.uint8 and h > 0 and w > 0
    return None


@FUZZ
@given(ext=st.sampled_from(sorted(IMAGES)), data=st.data())
def test_damaged_image_file(tmp_path, ext, data):
    blob = data.draw(damaged(IMAGES[ext]))
    path = tmp_path / f"x{ext}"
    path.write_bytes(blob)
    _read_or_error(str(path))


def _png_header_only(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    idat = zlib.compress(b"\0" * (3 * width + 1) * 4)  # a few rows: kilobytes claiming gigabytes
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("side", [10_000, 15_000, 100_000])  # 100 Mpx and 225 Mpx (Pillow only warned), 10 Gpx
def test_decompression_bomb_png_is_refused_before_decoding(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))
    assert "decompression bomb" in _read_or_error(str(path))


@pytest.mark.parametrize("make", ["empty", "folder", "text", "dangling", "loop", "fifo"])
def test_what_is_not_an_image_file(tmp_path, make):
    path = tmp_path / "x.png"
    if make == "empty":
        path.write_bytes(b"")
    elif make == "folder":
        path.mkdir()
    elif make == "text":
        path.write_text("hello")
    elif make == "dangling":
        path.symlink_to(tmp_path / "missing.png")
    elif make == "loop":
        (tmp_path / "y.png").symlink_to(path)
        path.symlink_to(tmp_path / "y.png")
    else:
        os.mkfifo(path)  # reading it would block forever
    assert _read_or_error(str(path))


# ---- image folders -------------------------------------------------------------------------

def test_image_folder_with_hostile_files_skips_and_lists_them(tmp_path, monkeypatch):
    import PIL.Image

    good = IMAGES[".png"]
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.png").write_bytes(good)
    bad = {"cat/trunc.png": good[:40], "cat/empty.jpg": b"", "dog/text.gif": b"GIF89a nope",
           "dog/bomb.png": _png_header_only(12_000, 12_000)}
    for name, blob in bad.items():
        (tmp_path / name).write_bytes(blob)
    (tmp_path / "cat" / "loop").symlink_to(tmp_path / "cat")  # a folder loop: not followed
    (tmp_path / "dog" / "a.png").symlink_to(tmp_path / "dog" / "b.png")
    (tmp_path / "dog" / "b.png").symlink_to(tmp_path / "dog" / "a.png")  # a file loop
    os.mkfifo(tmp_path / "dog" / "pipe.png")
    locked = str(tmp_path / "cat" / "locked.png")
    (tmp_path / "cat" / "locked.png").write_bytes(good)
    opener = PIL.Image.open

    def open_(fp, *args, **kwargs):  # tests run as root, where chmod 000 blocks nothing
        if os.fspath(fp) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return opener(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", open_)
    data = load_image_folder(tmp_path, test_fraction=0.34, workers=2)
    skipped = {os.path.relpath(p, tmp_path): reason for p, reason in data.skipped}
    assert set(skipped) == {*bad, "dog/a.png", "dog/b.png", "dog/pipe.png", "cat/locked.png"}
    assert all(reason and "\n" not in reason for reason in skipped.values())
    assert "Permission denied" in skipped["cat/locked.png"]
    assert len(data.y_train) + len(data.y_test) == 6


# ---- model, weights and class-index files ----------------------------------------------------

@pytest.fixture(scope="module")
def saved_files(tmp_path_factory):
    from kerasimpl import models

    folder = tmp_path_factory.mktemp("saved")
    model = models.build_classifier("smallcnn", 3, input_shape=(8, 8, 3), weights=None, class_names=["a", "b", "c"],
                                    backbone_kwargs={"widths": (4,)})
    model.save(folder / "m.keras")
    models.backbone_model(model).save_weights(folder / "b.weights.h5")
    return (folder / "m.keras").read_bytes(), (folder / "b.weights.h5").read_bytes()


@FUZZ
@given(data=st.data())
def test_damaged_keras_file(tmp_path, saved_files, data):
    path = tmp_path / "m.keras"
    path.write_bytes(data.draw(damaged(saved_files[0])))
    try:
        model = load_model(path)
    except ArtifactError as e:
        one_line(e)
    else:
        assert model.output_shape == (None, 3)


_configs = st.one_of(_json.map(json.dumps), st.binary(max_size=64).map(repr),
                     st.dictionaries(st.sampled_from(["class_name", "config", "module", "registered_name"]),
                                     _json, max_size=4).map(json.dumps))


@FUZZ
@given(config=_configs)
def test_keras_archive_with_a_foreign_config(tmp_path, config):
    import zipfile

    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", config)
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
    with pytest.raises(ArtifactError) as e:
        load_model(path)
    one_line(e.value)


@FUZZ
@given(data=st.data())
def test_damaged_weights_file(tmp_path, saved_files, data):
    import keras

    from kerasimpl.backbones import build_backbone

    path = tmp_path / "b.weights.h5"
    path.write_bytes(data.draw(damaged(saved_files[1])))
    try:
        build_backbone("smallcnn", keras.Input((8, 8, 3)), weights=str(path), widths=(4,))
    except ValueError as e:
        one_line(e)


# JSON files the toolkit reads: undamaged contents, reader, what its error says, what a success returns.
JSON_FILES = {
    "imagenet_class_index.json": (json.dumps({str(i): ["n0", f"c{i}"] for i in range(1000)}).encode(),
                                  imagenet_class_names, "Not an ImageNet class index",
                                  lambda names: len(names) == 1000 and all(isinstance(n, str) for n in names)),
    # a resumed run's finished backbone
    "result.json": (json.dumps({"backbone": "smallcnn", "test_accuracy": 0.5, "train_seconds": 1.0}).encode(),
                    read_result, "cannot be read",
                    lambda result: {"backbone", "test_accuracy", "train_seconds"} <= set(result)),
}


@FUZZ
@pytest.mark.parametrize("name", sorted(JSON_FILES))
@given(data=st.data())
def test_damaged_json_file(tmp_path, name, data):
    valid, read, says, ok = JSON_FILES[name]
    blob = data.draw(st.one_of(_json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64), damaged(valid)))
    path = tmp_path / name
    path.write_bytes(blob)
    try:
        result = read(str(path))
    except ValueError as e:
        assert says in one_line(e)
    else:
        assert ok(result)
    assert path.read_bytes() == blob  # never rewritten


def test_deeply_nested_class_index_is_an_error(tmp_path):
    path = tmp_path / "imagenet_class_index.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="Not an ImageNet class index"):
        imagenet_class_names(str(path))


# ---- a run being resumed: config.json (its result.json: test_damaged_json_file) ----------------

@FUZZ
@given(blob=st.one_of(_json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)))
def test_damaged_config_of_a_run_being_resumed(tmp_path, blob):
    from experiments.compare import build_parser, resolve
    from kerasimpl.comparison_checks import check_resume

    (tmp_path / "config.json").write_bytes(blob)
    cfg = resolve(build_parser().parse_args(["--data", "synthetic", "--out", str(tmp_path)]))
    with pytest.raises(ValueError) as e:  # never resumes: a JSON value is not this run's configuration
        check_resume(cfg)
    one_line(e.value)
    assert (tmp_path / "config.json").read_bytes() == blob
