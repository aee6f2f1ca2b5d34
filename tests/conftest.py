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


@pytest.fixture(scope="session")
def subset_path():
    """Path of the real CIFAR-10 subset archive (set by .ci/run)."""
    path = os.environ.get(SUBSET_ENV)
    if not path or not os.path.exists(path):
        if os.environ.get("KERASIMPL_REQUIRE_SUBSET"):
            pytest.fail(f"{SUBSET_ENV}={path!r} does not exist, and KERASIMPL_REQUIRE_SUBSET is set (CI)")
        pytest.skip(f"real CIFAR-10 subset not found: set {SUBSET_ENV} to cifar-10-python-subset.tar.gz")
    return path


@pytest.fixture(scope="session")
def subset(subset_path):
    from kerasimpl.data import load_dataset

    return load_dataset(subset_path)


@pytest.fixture(scope="session")
def synthetic():
    from kerasimpl.data import synthetic_dataset

    return synthetic_dataset(num_train=200, num_test=60, num_classes=4, image_size=32, seed=0)


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
