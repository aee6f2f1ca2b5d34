"""Importing kerasimpl with a backend that cannot load says what to set (in a fresh interpreter)."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_in_fresh_python(tmp_path, backend):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)  # no keras.json: Keras falls back to TensorFlow
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if backend:
        env["KERAS_BACKEND"] = backend
    return subprocess.run([sys.executable, "-c", "from kerasimpl import saliency"], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("backend", [None, "nope"])
def test_import_without_a_loadable_backend_says_what_to_set(tmp_path, backend):
    if backend is None and importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here, so Keras' fallback backend loads")
    proc = _import_in_fresh_python(tmp_path, backend)
    assert proc.returncode != 0  # the library did not pick a backend for the user
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("kerasimpl.BackendError:"), proc.stderr[-2000:]
    assert "KERAS_BACKEND=torch" in last and "jax" in last
    assert repr(backend or "tensorflow") in last
    if backend:
        assert "KERAS_BACKEND environment variable" in last
