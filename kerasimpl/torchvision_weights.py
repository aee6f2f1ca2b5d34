"""torchvision's AlexNet checkpoints <-> Keras weights.

A torchvision checkpoint is a pickled `state_dict` (name -> tensor). Reading
one goes through `torch.load(weights_only=True)`: a checkpoint is data, and a
pickle that asks to run code is refused. Converting to Keras:

- convolution kernels (out, in, kh, kw) -> (kh, kw, in, out);
- Linear weights (out, in) -> Dense kernels (in, out);
- the first Linear reads torch's channels-first flatten of the 256x6x6 map
  (index c*36 + h*6 + w); Keras flattens channels-last (h*1536 + w*256 + c),
  so its 9216 input rows are reordered.

`alexnet_state_dict` / `save_alexnet_checkpoint` do the inverse, so a Keras
AlexNet can be written as a file torchvision's `alexnet().load_state_dict`
reads (and the offline preset can make a stand-in "pretrained" file).
"""

from __future__ import annotations

import hashlib
import os
import pickle

import keras
import numpy as np

URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
FILE_NAME = "alexnet-owt-7be5be79.pth"
HASH_PREFIX = "7be5be79"  # torch.hub's convention: the file name carries its sha256's first hex digits

# Keras layer -> torchvision module prefix.
LAYERS = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
          "conv5": "features.10", "fc6": "classifier.1", "fc7": "classifier.4", "predictions": "classifier.6"}
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
POOLED = (6, 6, 256)  # the map the first Linear reads


def download_alexnet_weights() -> str:
    """torchvision's ImageNet AlexNet checkpoint, downloaded once and cached
    like Keras' weights (`~/.keras/models`); its sha256 must start with
    `HASH_PREFIX` (as `torch.hub` checks), else the file is deleted and this raises.

    Raises:
        RuntimeError: no download (offline), or the hash does not match.
    """
    from keras.src.utils import file_utils  # looked up at call time: build_backbone records downloads

    try:
        path = file_utils.get_file(FILE_NAME, URL, cache_subdir="models")
    except Exception as e:
        raise RuntimeError(f"Could not download torchvision's AlexNet weights {FILE_NAME} from {URL} "
                           f"({type(e).__name__}). Without internet, fetch that file elsewhere and pass its path "
                           f"as weights=PATH (--weights PATH).") from e
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
        raise RuntimeError(f"{path}: sha256 {digest} does not start with {prefix} (a corrupt or different file); "
                           "deleted it, try again")


def read_state_dict(path) -> dict:
    """name -> float32 numpy array from a torch checkpoint, loaded as data only.

    Raises:
        ValueError: not a readable checkpoint, or a pickle that would run code.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"Refused to load {path}: it is not plain tensor data (torch.load(weights_only=True) "
                         f"rejected it: {str(e).splitlines()[0]}). A checkpoint must hold tensors only; "
                         "a pickle that runs code is never loaded") from e
    except (OSError, RuntimeError, EOFError) as e:
        raise ValueError(f"Not a torch checkpoint. Received: {path} ({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"Expected a state_dict (name -> tensor) in {path}. Received: {type(state).__name__}")
    return {k: v.detach().float().numpy() for k, v in state.items()}


def to_keras(name, tensor_name, array):
    """One torchvision array in the layout of Keras layer `name`."""
    if tensor_name.endswith(".bias"):
        return array
    if name in CONV_LAYERS:
        return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if name == "fc6":  # (4096, C*H*W) -> (H*W*C, 4096)
        h, w, c = POOLED
        return array.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
    return array.T


def to_torch(name, tensor_name, array):
    """The inverse of `to_keras`."""
    if tensor_name.endswith(".bias"):
        return array
    if name in CONV_LAYERS:
        return array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    if name == "fc6":
        h, w, c = POOLED
        return array.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)
    return array.T


def load_alexnet_weights(model, weights):
    """Load `weights` (`"imagenet"`, a torchvision `.pth`, or a Keras
    `.weights.h5`) into a Keras AlexNet, top or no top.

    Raises:
        ValueError: the checkpoint lacks a tensor the model needs, or a shape
            differs (the message names the expected keys and shapes).
    """
    path = download_alexnet_weights() if weights == "imagenet" else weights
    if not os.path.exists(path):
        raise ValueError(f"AlexNet weights file not found. Received: weights={weights!r}. Accepted: None, "
                         f"'imagenet', or the path of torchvision's {FILE_NAME} (or a Keras .weights.h5)")
    if str(path).endswith(".h5"):
        model.load_weights(path)
        return
    state = read_state_dict(path)
    present = [n for n in LAYERS if _has_layer(model, n)]
    expected = {f"{LAYERS[n]}.{p}": _torch_shape(model, n, p) for n in present for p in ("weight", "bias")}
    missing = sorted(k for k in expected if k not in state)
    wrong = sorted(f"{k}: {tuple(state[k].shape)}, expected {expected[k]}" for k in expected
                   if k in state and tuple(state[k].shape) != expected[k])
    if missing or wrong:
        raise ValueError(f"{path} does not fit torchvision's AlexNet as built here. Missing: {missing or 'none'}; "
                         f"wrong shapes: {wrong or 'none'}. Expected: "
                         + ", ".join(f"{k} {v}" for k, v in expected.items()))
    for n in present:
        prefix = LAYERS[n]
        model.get_layer(n).set_weights([to_keras(n, f"{prefix}.{p}", state[f"{prefix}.{p}"])
                                        for p in ("weight", "bias")])


def alexnet_state_dict(model) -> dict:
    """torchvision-format state dict (name -> torch tensor) of a Keras
    AlexNet with its top (what `torchvision.models.alexnet().load_state_dict` reads)."""
    import torch

    missing = [n for n in LAYERS if not _has_layer(model, n)]
    if missing:
        raise ValueError(f"Expected a Keras AlexNet with its top (layers {list(LAYERS)}). Missing: {missing}")
    state = {}
    for n, prefix in LAYERS.items():
        kernel, bias = (keras.ops.convert_to_numpy(w).astype(np.float32) for w in model.get_layer(n).weights)
        state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(to_torch(n, ".weight", kernel)))
        state[f"{prefix}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    return state


def save_alexnet_checkpoint(model, path):
    """Write `alexnet_state_dict(model)` with `torch.save` (atomically)."""
    import torch

    from kerasimpl.artifacts import atomic_path

    state = alexnet_state_dict(model)
    with atomic_path(path, suffix=".pth") as tmp:
        torch.save(state, tmp)
    return path


def _has_layer(model, name):
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


def _torch_shape(model, name, part):
    """The shape torchvision stores for Keras layer `name`'s `part`."""
    kernel, bias = model.get_layer(name).weights
    if part == "bias":
        return tuple(bias.shape)
    shape = tuple(kernel.shape)
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else (shape[1], shape[0])


def write_random_alexnet_checkpoint(path, seed=0):
    """A randomly initialised AlexNet (Keras' initialisers, `seed`) saved in
    torchvision's format: the offline stand-in for `alexnet-owt-7be5be79.pth`
    (same keys and shapes, no ImageNet knowledge). An existing file is kept,
    so a resumed run uses the same weights."""
    if os.path.exists(path):
        return path
    from kerasimpl.alexnet import AlexNet

    keras.utils.set_random_seed(int(seed))
    model = AlexNet(weights=None, input_shape=(63, 63, 3))  # the weights do not depend on the input size
    return save_alexnet_checkpoint(model, path)
