"""CIFAR-10 from the official python archive: downloaded, or from a local path.

Reference: Krizhevsky, "Learning Multiple Layers of Features from Tiny
Images", 2009; https://www.cs.toronto.edu/~kriz/cifar.html
"""

from __future__ import annotations

import os
import pickle
import tarfile
import zlib

import numpy as np

from kerasimpl.artifacts import sha256_of
from kerasimpl.data.base import DatasetError, ImageClassificationData

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# sha256 of the official archive (the same value keras.datasets.cifar10 pins).
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"

# The only globals an official CIFAR pickle refers to. Anything else (a
# foreign or malicious pickle) is refused before it can run code.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return super().find_class(module, name)


def download_cifar10(cache_dir=None) -> str:
    """Fetch the official archive into the Keras cache and return its path.

    The archive is verified against its sha256. A cached or downloaded file
    that fails the check is deleted, never used.
    """
    import keras

    # Resolve the folder as Keras does (KERAS_HOME, else ~/.keras) and pass it
    # explicitly, so the file checked here is the one get_file uses.
    cache_dir = cache_dir or os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    cached = os.path.join(cache_dir, "datasets", ARCHIVE_NAME)
    if os.path.exists(cached) and sha256_of(cached) != CIFAR10_SHA256:
        os.remove(cached)
    try:
        return keras.utils.get_file(
            fname=ARCHIVE_NAME,
            origin=CIFAR10_URL,
            file_hash=CIFAR10_SHA256,
            hash_algorithm="sha256",
            cache_dir=cache_dir,
            cache_subdir="datasets",
        )
    except ValueError as e:  # Hash mismatch: Keras leaves the bad file in place.
        if os.path.exists(cached):
            os.remove(cached)
        raise DatasetError(f"{CIFAR10_URL}: the download failed its sha256 check and was removed ({e})") from e
    except Exception as e:  # URL errors, no network.
        raise DatasetError(
            f"Could not download CIFAR-10 from {CIFAR10_URL} ({e}). Without internet, "
            f"download {ARCHIVE_NAME} elsewhere and pass its path (or the extracted "
            f"{FOLDER}/ folder) instead of 'cifar10'."
        ) from e


def load_cifar10(path=None, cache_dir=None) -> ImageClassificationData:
    """Load CIFAR-10 as uint8 NHWC arrays.

    Args:
        path: `None` to download the official archive (verified by sha256),
            or a local path to `cifar-10-python.tar.gz` (or any archive of the
            same layout) or to its extracted `cifar-10-batches-py/` folder.
        cache_dir: Keras cache folder for the download (default `~/.keras`).

    Returns:
        `ImageClassificationData` with the official train and test sets.

    Raises:
        DatasetError: naming the file and what was wrong with it.
    """
    if path is None:
        path = download_cifar10(cache_dir)
    path = os.fspath(path)
    if os.path.isdir(path):
        reader = _FolderReader(path)
    elif os.path.isfile(path):
        reader = _ArchiveReader(path)
    else:
        raise DatasetError(
            f"{path}: no such file or folder. Expected {ARCHIVE_NAME} or its extracted {FOLDER}/ folder."
        )
    with reader:
        meta = reader.load(META_FILE)
        names = _class_names(meta, reader.name(META_FILE))
        parts = [_decode_batch(reader.load(f), reader.name(f), len(names)) for f in TRAIN_FILES]
        x_test, y_test = _decode_batch(reader.load(TEST_FILE), reader.name(TEST_FILE), len(names))
    return ImageClassificationData(
        x_train=np.concatenate([p[0] for p in parts]),
        y_train=np.concatenate([p[1] for p in parts]),
        x_test=x_test,
        y_test=y_test,
        class_names=names,
        source=path,
    )


def _class_names(meta, where):
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{where}: expected a dict with b'label_names'; got {type(meta).__name__}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _decode_batch(batch, where, num_classes):
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(f"{where}: expected a dict with b'data' and b'labels'; got {keys}")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(
            f"{where}: b'data' must be uint8 of shape (N, 3072) (32x32x3, channel-major); "
            f"got dtype={getattr(data, 'dtype', None)}, shape={getattr(data, 'shape', None)}"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: {len(data)} images but labels of shape {labels.shape}, dtype {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"{where}: labels must lie in [0, {num_classes}); found {labels.min()}..{labels.max()}"
        )
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), labels.astype(np.int64)


def _unpickle(fileobj, where):
    try:
        return _CifarUnpickler(fileobj, encoding="bytes").load()
    except (tarfile.TarError, OSError, zlib.error) as e:  # the archive around it is damaged
        raise DatasetError(f"{where}: truncated or corrupt archive ({type(e).__name__}: {_one_line(e)})") from e
    except Exception as e:  # a damaged pickle fails in any of the (allowed) constructors it calls
        raise DatasetError(f"{where}: not a readable CIFAR pickle (truncated or foreign file: "
                           f"{type(e).__name__}: {_one_line(e)})") from e


class _FolderReader:
    def __init__(self, root):
        self.root = root
        # Accept both the extracted folder and its parent.
        if os.path.isdir(os.path.join(root, FOLDER)):
            self.root = os.path.join(root, FOLDER)

    def name(self, member):
        return os.path.join(self.root, member)

    def load(self, member):
        path = self.name(member)
        if not os.path.isfile(path):
            raise DatasetError(f"{path}: missing batch file (expected {META_FILE}, {', '.join(TRAIN_FILES)}, {TEST_FILE})")
        with open(path, "rb") as f:
            return _unpickle(f, path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _ArchiveReader:
    def __init__(self, path):
        self.path = path
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {m.name.split("/")[-1]: m for m in self.tar.getmembers() if m.isfile()}
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DatasetError(f"{path}: not a readable tar archive ({_one_line(e)})") from e

    def name(self, member):
        return f"{self.path}:{FOLDER}/{member}"

    def load(self, member):
        if member not in self.members:
            raise DatasetError(f"{self.name(member)}: missing batch file in archive")
        try:
            f = self.tar.extractfile(self.members[member])
            return _unpickle(f, self.name(member))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DatasetError(f"{self.name(member)}: truncated or corrupt archive ({_one_line(e)})") from e

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.tar.close()
        return False


def _one_line(e):
    return " ".join(str(e).split())
