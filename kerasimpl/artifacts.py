"""Files kerasimpl writes and reads: atomic writes, safe model loading.

Every writer goes through `atomic_path`: the content lands in a temporary
file beside the target and is renamed over it only when complete, so a
crash never leaves a half-written file that later loads as garbage.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
import threading
import zipfile


class ArtifactError(ValueError):
    """A model file is missing, not a Keras archive, or unsafe to load."""


def sha256_of(path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside `path`; rename it to `path` on success.

    Args:
        path: final destination.
        suffix: suffix of the temporary file (default: `path`'s own, which
            some writers such as `model.save` insist on).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = suffix if suffix is not None else _suffix(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    # mkstemp makes the file 0600; give it what open(path, "w") would give.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_UMASK_LOCK = threading.Lock()


def _umask():
    """The process umask (read by setting it and setting it back)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _suffix(path):
    name = os.path.basename(path)
    for multi in (".weights.h5",):
        if name.endswith(multi):
            return multi
    return os.path.splitext(name)[1]


def write_bytes(path, data: bytes):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def copy_file(src, dst):
    """Copy `src` to `dst` atomically (parent folders created)."""
    with open(src, "rb") as f:
        write_bytes(dst, f.read())


def write_text(path, text: str):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_csv(path, rows, fieldnames=None):
    """Write a list of dicts as CSV (columns: `fieldnames` or the union in order)."""
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def save_model(model, path, keep_policy=False):
    """`model.save(path)` through a temporary file, then rename.

    A model built under a mixed policy (`mixed_bfloat16`, `mixed_float16`)
    is saved as its float32 copy (`precision.float32_copy`, same weights),
    so every file a run writes, checkpoints included, reloads and predicts
    in float32 on any backend; `keep_policy=True` saves the policy as is.
    """
    from kerasimpl import distributed, precision

    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"Models are saved as .keras files. Received: {path}")
    with distributed.alone():  # rank 0 saves by itself under any distribution
        if not keep_policy and precision.has_low_precision(model):
            model = precision.float32_copy(model)
        with atomic_path(path) as tmp:
            model.save(tmp)


def save_weights(model, path):
    from kerasimpl import distributed

    with distributed.alone(), atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def save_figure(fig, path, dpi=120):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=os.path.splitext(path)[1][1:] or "png")


def load_model(path, compile=False):
    """Load a `.keras` model with `safe_mode=True`.

    Raises:
        ArtifactError: the file is missing, is not a Keras archive, or carries
            Python code (a `Lambda` with a lambda) that safe mode refuses.
    """
    import keras

    import kerasimpl.layers  # noqa: F401  registers kerasimpl's layers

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ArtifactError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path}: not a Keras archive (.keras files are zip archives; this one is not, or is truncated)")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "config.json" not in names:
                raise ArtifactError(f"{path}: not a Keras archive (no config.json inside)")
            bad = z.testzip()
            if bad is not None:
                raise ArtifactError(f"{path}: corrupt archive member {bad}")
    except zipfile.BadZipFile as e:
        raise ArtifactError(f"{path}: corrupt Keras archive ({e})") from e
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except ValueError as e:
        if "safe_mode" in str(e) or "lambda" in str(e).lower():
            raise ArtifactError(
                f"{path}: refused to load: the model carries Python code (e.g. a Lambda layer) "
                "and kerasimpl loads models only with safe_mode=True. Rebuild it from registered layers."
            ) from e
        raise ArtifactError(f"{path}: could not load the model ({' '.join(str(e).split())})") from e
    except Exception as e:  # a damaged or foreign archive fails anywhere inside Keras' loader
        raise ArtifactError(f"{path}: could not load the model ({type(e).__name__}: {' '.join(str(e).split())})") from e
