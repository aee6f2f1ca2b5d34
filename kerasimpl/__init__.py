"""kerasimpl: transfer learning and saliency with Keras 3 on any backend.

Importing kerasimpl never sets the backend, downloads, prints or plots. It
imports Keras, so the backend must be chosen first: set `KERAS_BACKEND=torch`
(or `jax`) in the environment, or `os.environ["KERAS_BACKEND"] = "torch"`
before the first `import keras` / `import kerasimpl`.
"""

__version__ = "0.1.0"


class BackendError(ImportError):
    """Keras' backend could not be loaded (e.g. TensorFlow, Keras' fallback, is absent)."""


def _backend_choice():
    """The backend Keras will load, and where that choice comes from (as Keras decides it)."""
    import json
    import os

    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], "the KERAS_BACKEND environment variable"
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    config = os.path.join(home, "keras.json")
    try:
        with open(config) as f:
            return json.load(f)["backend"], config
    except (OSError, ValueError, KeyError, TypeError):
        return "tensorflow", "Keras' default, as KERAS_BACKEND is not set"


def _import_keras():
    try:
        import keras  # noqa: F401
    except (ImportError, ValueError) as e:  # ValueError: Keras' "Unable to import backend"
        if getattr(e, "name", None) == "keras":
            raise
        backend, source = _backend_choice()
        raise BackendError(
            f"kerasimpl could not import Keras with backend {backend!r} (from {source}): "
            f"{type(e).__name__}: {e}. kerasimpl runs on torch or JAX: set KERAS_BACKEND=torch "
            "(or jax) in the environment, or os.environ['KERAS_BACKEND'] = 'torch' before importing "
            "keras or kerasimpl, and install that backend (see README)."
        ) from e


_import_keras()
