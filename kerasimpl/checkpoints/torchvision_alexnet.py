"""torchvision's AlexNet checkpoints (`alexnet-owt-7be5be79.pth`): key map and download.

Keras layers of `kerasimpl.alexnet` <- torchvision's `features` and
`classifier` modules. The first Linear (`classifier.1`, Keras `fc6`) reads
torch's channels-first flatten of the 256x6x6 map (index c*36 + h*6 + w);
Keras flattens channels-last (h*1536 + w*256 + c), so its 9216 input rows
are reordered.
"""

from __future__ import annotations

import hashlib
import os

from kerasimpl.checkpoints.core import KernelTransform, Source, WeightsUnavailable

URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
FILE_NAME = "alexnet-owt-7be5be79.pth"
HASH_PREFIX = "7be5be79"  # torch.hub's convention: the file name carries its sha256's first hex digits

LAYERS = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
          "conv5": "features.10", "fc6": "classifier.1", "fc7": "classifier.4", "predictions": "classifier.6"}
POOLED = (6, 6, 256)  # the map the first Linear reads


def _fc6_to_keras(array):  # (4096, C*H*W) -> (H*W*C, 4096)
    h, w, c = POOLED
    return array.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)


def _fc6_to_torch(array):
    h, w, c = POOLED
    return array.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)


def download():
    """torchvision's ImageNet AlexNet checkpoint, downloaded once and cached
    like Keras' weights (`~/.keras/models`); its sha256 must start with
    `HASH_PREFIX` (as `torch.hub` checks), else the file is deleted and this raises.

    Raises:
        WeightsUnavailable: no download (offline), or the hash does not match.
    """
    import keras

    try:
        path = keras.utils.get_file(FILE_NAME, URL, cache_subdir="models")
    except Exception as e:
        raise WeightsUnavailable(f"Could not download torchvision's AlexNet weights {FILE_NAME} from {URL} "
                                 f"({type(e).__name__}). Without internet, fetch that file elsewhere and pass its "
                                 "path as weights=PATH (--weights PATH).") from e
    check_hash_prefix(path, HASH_PREFIX)
    return path


def check_hash_prefix(path, prefix):
    """Delete `path` and raise unless its sha256 starts with `prefix`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if not digest.startswith(prefix):
        os.remove(path)
        raise WeightsUnavailable(f"{path}: sha256 {digest} does not start with {prefix} (a corrupt or different "
                                 "file); deleted it, try again")


SOURCE = Source("torchvision-alexnet", LAYERS, locate=lambda: download(),
                kernels={"fc6": KernelTransform(_fc6_to_keras, _fc6_to_torch)},
                description=f"torchvision's AlexNet ({FILE_NAME} format)")
