import json
import os
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from experiments import infer
from kerasimpl import models
from kerasimpl.artifacts import ArtifactError, atomic_path, load_model, save_model, write_json
from kerasimpl.heads import HeadConfig
from kerasimpl.images import ImageError, read_image

NAMES = ["cat", "dog", "ship"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    keras.utils.set_random_seed(1)
    model = models.build_classifier("smallcnn", 3, weights=None, freeze_base=False, class_names=NAMES,
                                    head=HeadConfig((8,), 0.0), backbone_kwargs={"widths": (8, 16)})
    path = tmp_path_factory.mktemp("model") / "model.keras"
    save_model(model, path)
    return model, str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "a_rgb.png")
    Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8), "L").save(d / "b_gray.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), "RGBA").save(d / "c_rgba.png")
    Image.fromarray(rng.integers(0, 65536, (33, 31), dtype=np.uint16)).save(d / "d_16bit.png")
    Image.fromarray(rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)).save(d / "e_large.jpg", quality=90)
    raw = (d / "a_rgb.png").read_bytes()
    (d / "f_truncated.png").write_bytes(raw[: len(raw) // 2])
    (d / "g_text.png").write_text("this is not an image\n")
    (d / "h_bytes.jpg").write_bytes(os.urandom(300))
    return d


def test_read_image_converts_any_mode(images):
    for name in ("a_rgb.png", "b_gray.png", "c_rgba.png", "d_16bit.png", "e_large.jpg"):
        x = read_image(images / name, size=(32, 32))
        assert x.shape == (32, 32, 3) and x.dtype == np.uint8, name
    gray = read_image(images / "b_gray.png")
    assert gray.shape == (50, 70, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    sixteen = read_image(images / "d_16bit.png")
    assert sixteen.min() == 0 and sixteen.max() == 255  # scaled to its own range, not clipped
    rgb = read_image(images / "a_rgb.png")
    np.testing.assert_array_equal(rgb, np.asarray(Image.open(images / "a_rgb.png")))
    for bad in ("f_truncated.png", "g_text.png", "h_bytes.jpg", "missing.png"):
        with pytest.raises(ImageError, match=bad):
            read_image(images / bad)


def test_infer_serves_good_files_reports_bad_ones(saved, images, capsys):
    model, path = saved
    files = sorted(str(p) for p in images.iterdir())
    code = infer.main(["--model", path, "--json", "--top-k", "2", *files])
    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert [r["file"] for r in out] == files  # given order
    good = {r["file"]: r for r in out if "top" in r}
    bad = {r["file"] for r in out if "error" in r}
    assert {os.path.basename(f) for f in bad} == {"f_truncated.png", "g_text.png", "h_bytes.jpg"}
    assert len(good) == 5
    x = read_image(images / "a_rgb.png", (32, 32))[None]
    expected = np.asarray(model.predict(x, verbose=0))[0]
    top = good[str(images / "a_rgb.png")]["top"]
    assert [t["index"] for t in top] == list(np.argsort(-expected)[:2])
    assert [t["label"] for t in top] == [NAMES[i] for i in np.argsort(-expected)[:2]]
    assert top[0]["probability"] == pytest.approx(float(expected.max()), rel=1e-5)


def test_infer_folder_all_good_exits_zero(saved, images, tmp_path, capsys):
    folder = tmp_path / "good"
    folder.mkdir()
    for name in ("a_rgb.png", "b_gray.png"):
        (folder / name).write_bytes((images / name).read_bytes())
    assert infer.main(["--model", saved[1], str(folder)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(folder / "a_rgb.png"))
    assert any(n in lines[0] for n in NAMES)


def _lambda_model(path):
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    keras.Model(inp, out).save(path)


@pytest.mark.parametrize("make,message", [
    (_lambda_model, "carries Python code"),
    (lambda p: open(p, "w").write("not a model"), "not a Keras archive"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("x.txt", "hi"), "no config.json"),
])
def test_unsafe_or_foreign_model_files_are_refused(tmp_path, capsys, make, message):
    path = str(tmp_path / "m.keras")
    make(path)
    with pytest.raises(ArtifactError, match=message):
        load_model(path)
    assert infer.main(["--model", path, "whatever.png"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_truncated_model_file_is_refused(saved, tmp_path):
    raw = open(saved[1], "rb").read()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match="cut.keras"):
        load_model(cut)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_permissions_open_would_give(saved, tmp_path, umask):
    """Files written atomically (JSON, models, figures) get 0666 & ~umask, as
    a plain open(path, "w") does, not mkstemp's 0600."""
    from matplotlib.figure import Figure

    from kerasimpl.artifacts import save_figure

    old = os.umask(umask)
    try:
        write_json(tmp_path / "r.json", {"v": 1})
        save_model(saved[0], tmp_path / "m.keras")
        save_figure(Figure(figsize=(1, 1)), tmp_path / "f.png")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert os.stat(tmp_path / "plain.txt").st_mode & 0o777 == expected
    for name in ("r.json", "m.keras", "f.png"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == expected, name


def test_atomic_write_leaves_old_file_on_crash(saved, tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write('{"v": 2, "trunc')
            raise RuntimeError("crash mid-write")
    assert json.load(open(target)) == {"v": 1}
    assert os.listdir(tmp_path) == ["results.json"]

    class Exploding(keras.Model):
        def save(self, *a, **k):
            open(a[0], "wb").write(b"PK half")
            raise MemoryError("out of memory while saving")

    model_path = tmp_path / "model.keras"
    save_model(saved[0], model_path)
    before = model_path.read_bytes()
    with pytest.raises(MemoryError):
        save_model(Exploding(), model_path)
    assert model_path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "results.json"]


def dump_round_trip(folder):
    """Cross-backend job (tests/cross_backend.py): save a model on this backend with its
    probabilities; load each model another backend saved here and record what it gives."""
    here = keras.backend.backend()
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    keras.utils.set_random_seed(3)
    model = models.build_classifier("mobilenetv2", 3, image_size=32, weights=None, freeze_base=False,
                                    class_names=["a", "b", "c"], head=HeadConfig((8,), 0.0),
                                    backbone_kwargs={"alpha": 0.35})
    save_model(model, os.path.join(folder, f"{here}.keras"))
    np.save(os.path.join(folder, f"{here}.keras.{here}.npy"), np.asarray(model.predict(x, verbose=0)))
    for name in os.listdir(folder):
        if name.endswith(".keras") and name != f"{here}.keras":
            loaded = load_model(os.path.join(folder, name))
            np.save(os.path.join(folder, f"{name}.{here}.npy"), np.asarray(loaded.predict(x, verbose=0)))
            write_json(os.path.join(folder, f"{name}.{here}.json"), models.class_names_of(loaded))


@pytest.mark.slow
def test_keras_file_moves_between_backends(other_backend):
    """A .keras file saved on either backend loads on the other: same probabilities, same class names."""
    from cross_backend import job_folder

    other, folder = other_backend[0], job_folder(other_backend[1], "test_artifacts:dump_round_trip")
    here = keras.backend.backend()
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    theirs = load_model(os.path.join(folder, f"{other}.keras"))  # this backend loads the other's file now
    assert models.class_names_of(theirs) == ["a", "b", "c"]
    np.save(os.path.join(folder, f"{other}.keras.{here}.npy"), np.asarray(theirs.predict(x, verbose=0)))
    for saved, read in ((here, other), (other, here)):
        a, b = (np.load(os.path.join(folder, f"{saved}.keras.{on}.npy")) for on in (saved, read))
        assert a.shape == (4, 3)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"saved on {saved}, read on {read}")
    assert json.load(open(os.path.join(folder, f"{here}.keras.{other}.json"))) == ["a", "b", "c"]
