"""Shared fixtures. The backend defaults to torch (KERAS_BACKEND overrides)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "torch")

if os.environ["KERAS_BACKEND"] == "jax" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # Many tests build the same architecture again (resume, seeds, round
    # trips, subprocesses): a session-wide XLA compilation cache, set before
    # jax is imported, spares the repeated compiles (measured: the compare
    # tests' share of the jax suite fell by a quarter). Set the variable
    # yourself to keep a cache across runs.
    _cache = tempfile.mkdtemp(prefix="kerasimpl-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SUBSET_ENV = "KERASIMPL_CIFAR10_SUBSET"
# Where the workplace keeps it, beside the clone (the place .ci/run looks too).
SUBSET_BESIDE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared",
                             "data", "cifar10-subset", "cifar-10-python-subset.tar.gz")


@pytest.fixture(scope="session")
def subset_path():
    """Path of the real CIFAR-10 subset archive: $KERASIMPL_CIFAR10_SUBSET, else ../shared/... beside the clone."""
    path = os.environ.get(SUBSET_ENV) or SUBSET_BESIDE
    if not os.path.exists(path):
        if os.environ.get("KERASIMPL_REQUIRE_SUBSET"):
            pytest.fail(f"{SUBSET_ENV}={path!r} does not exist, and KERASIMPL_REQUIRE_SUBSET is set (CI)")
        pytest.skip(f"real CIFAR-10 subset not found at {path}: set {SUBSET_ENV} to cifar-10-python-subset.tar.gz")
    return path


@pytest.fixture(scope="session")
def subset(subset_path):
    from kerasimpl.data import load_dataset

    return load_dataset(subset_path)


@pytest.fixture(scope="session")
def synthetic():
    from kerasimpl.data import synthetic_dataset

    return synthetic_dataset(num_train=96, num_test=32, num_classes=4, image_size=32, seed=0)


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)


# --- saliency reference models (test_saliency_methods.py, test_saliency_torchcam.py) --------

def _reference_stem():
    """Input (32 x 32 raw pixels) -> rescale -> strided 3x3 conv -> 3x3 conv `feat`:
    a non-trivial path to the explained layer. Seeded: the same weights each call."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    a = keras.layers.Rescaling(1 / 255.0)(inp)
    a = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(a)
    return inp, keras.layers.Conv2D(16, 3, activation="relu", name="feat")(a)


def _classifier(inp, logits):
    import keras

    from kerasimpl.layers import LabeledSoftmax

    return keras.Model(inp, LabeledSoftmax([str(i) for i in range(5)], name="predictions")(logits))


def _reference_model():
    import keras

    inp, a = _reference_stem()
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(a)
    return _classifier(inp, keras.layers.Dense(5, name="logits")(keras.layers.GlobalAveragePooling2D()(a)))


def _linear_head_model():
    import keras

    inp, a = _reference_stem()
    a = keras.layers.Dropout(0.3)(keras.layers.GlobalAveragePooling2D()(a))
    return _classifier(inp, keras.layers.Dense(5, name="logits")(a))


@pytest.fixture
def reference_model():
    """Builds (call it) a small random CNN, 5 classes, with a non-trivial
    (strided, 3x3) path to the explained layer `feat`, then one more conv,
    global average pooling and a Dense: what the pytorch-grad-cam, Captum and
    torchcam comparisons explain."""
    return _reference_model


@pytest.fixture
def linear_head_model():
    """Builds (call it) reference_model's path to `feat`, then global average
    pooling, dropout and one Dense: the linear head CAM needs."""
    return _linear_head_model


# --- one model per backbone (test_models.py, test_torch_inference.py) ----------------------

@pytest.fixture(scope="session")
def backbone_model():
    """Returns (call it with a registry name) that backbone's classifier, built
    once per session and shared: tiny widths where the builder takes them
    (tests/tiny.py), 40 px raw input resized to max(64, min_size), 10 classes,
    random weights (seed 0) with non-trivial BatchNorm statistics. Read it, do
    not train or re-weight it."""
    import warnings

    import keras

    from kerasimpl import backbones, models
    from tiny import TINY_KWARGS, randomize_batchnorm

    built = {}

    def get(name):
        if name not in built:
            keras.utils.set_random_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                built[name] = models.build_classifier(
                    name, 10, input_shape=(40, 40, 3), image_size=max(64, backbones.get_spec(name).min_size),
                    weights=None, backbone_kwargs=TINY_KWARGS.get(name, {}))
            randomize_batchnorm(built[name])
            keras.utils.set_random_seed(0)  # the calling test's draws do not depend on the cache
        return built[name]

    return get


# --- the other backend, one subprocess for every cross-backend test ------------------------

@pytest.fixture(scope="session")
def other_backend(tmp_path_factory):
    """(name, folder): every job of tests/cross_backend.py run here, then in ONE
    subprocess on the other backend (torch <-> JAX); `cross_backend.job_folder(
    folder, job)` holds both sides' outputs. One interpreter start for all
    the cross-backend tests instead of one or two per test."""
    import subprocess
    import sys

    import keras

    import cross_backend

    here = keras.backend.backend()
    other = "jax" if here == "torch" else "torch"
    if other == "jax":
        pytest.importorskip("jax")
    folder = tmp_path_factory.mktemp("cross-backend")
    cross_backend.run_all(folder)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join([root, os.path.dirname(os.path.abspath(__file__))] +
                           [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, cross_backend.__file__, str(folder)], capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": other, "PYTHONPATH": path}, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"the cross-backend jobs failed on {other}:\n{proc.stderr[-3000:]}")
    return other, folder


# --- one tiny compare run, shared (test_compare.py, test_cli_errors.py) ----------------------

# smallcnn on 3 of the synthetic classes (155 train+val, 39 test images), 2 seeds, 1 epoch, float32.
COMPARE_ARGV = ("--data", "synthetic", "--classes", "3", "--backbones", "smallcnn", "--seeds", "2", "--epochs", "1",
                "--batch-size", "32", "--hidden", "16", "--inference-batch-size", "16", "--precision", "float32",
                "--quiet")


@pytest.fixture(scope="session")
def compare_run(tmp_path_factory):
    """One finished tiny compare run (`COMPARE_ARGV`), made once per session from
    an empty working folder: (argv, out, cwd). Read it; a test that resumes or
    changes a run works on `compare_run_copy`."""
    from experiments import compare

    base = tmp_path_factory.mktemp("compare-run")
    out, cwd = base / "run", base / "cwd"
    cwd.mkdir()
    argv = [*COMPARE_ARGV, "--out", str(out)]
    before = os.getcwd()
    os.chdir(cwd)
    try:
        assert compare.main(argv) == 0
    finally:
        os.chdir(before)
    return argv, out, cwd


@pytest.fixture
def compare_run_copy(compare_run, tmp_path):
    """A private copy of the shared compare run (shutil.copytree): (argv naming the copy, its folder)."""
    argv, out, _ = compare_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return [*argv[:-1], str(copy)], copy
