"""One reader and one port step for checkpoints of other frameworks.

A checkpoint is a pickled PyTorch `state_dict` (name -> tensor), read with
`torch.load(weights_only=True)` only: a checkpoint is data, and a pickle
that asks to run code is refused. A `Source` says declaratively which
checkpoint prefix feeds which Keras layer; `port` moves every tensor into
its Keras variable in Keras' layout, after checking the whole checkpoint:
the error names the missing, the unexpected and the mis-shaped keys at once.

Layouts, by Keras layer class (torch -> Keras):

| Keras layer | variables | checkpoint keys (suffixes) | kernel transform |
| --- | --- | --- | --- |
| `Conv2D` | kernel, bias | `weight`, `bias` | OIHW -> HWIO |
| `DepthwiseConv2D` | kernel, bias | `weight`, `bias` | (C, 1, kh, kw) -> (kh, kw, C, 1) |
| `Dense` | kernel, bias | `weight`, `bias` | (out, in) -> (in, out) |
| `BatchNormalization` | gamma, beta, moving mean, moving variance | `weight`, `bias`, `running_mean`, `running_var` | none |

A source may override one layer's kernel transform (AlexNet's first
Linear reads torch's channels-first flatten).

Reference: keras-hub `src/utils/timm/convert_*.py` (a key map per
checkpoint family, chosen by a loader; builders never import converters).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Callable, Mapping, Optional

import keras
import numpy as np

from kerasimpl.backend.torch.layout import torch_dense_kernel, torch_kernel  # noqa: F401  (public here too)
from kerasimpl.builders import is_keras_weights

IGNORED_SUFFIXES = ("num_batches_tracked",)  # torch's BatchNorm step counter: no Keras twin


@dataclasses.dataclass(frozen=True)
class KernelTransform:
    """A kernel's layout change, torch -> Keras, and back."""

    to_keras: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Source:
    """A checkpoint family: its declarative key map, and where its ImageNet file lives.

    Attributes:
        name: registry key (`kerasimpl.checkpoints.SOURCES`).
        layers: Keras layer name -> checkpoint prefix, for the whole model
            with its top (a model without the top uses the part it has).
        locate: returns the local path of the `"imagenet"` checkpoint
            (downloads or reads a package; raises `WeightsUnavailable`).
        kernels: Keras layer name -> `KernelTransform` overriding the
            layer class's default.
        description: what the checkpoint is, for error messages.
    """

    name: str
    layers: Mapping[str, str]
    locate: Callable[[], str]
    kernels: Mapping[str, KernelTransform] = dataclasses.field(default_factory=dict)
    description: str = ""


class WeightsUnavailable(RuntimeError):
    """The requested pretrained file cannot be had here (offline, or a package missing); says how to fix it."""


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the model: names missing, unexpected and mis-shaped keys."""


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


_CONV = KernelTransform(lambda a: a.transpose(2, 3, 1, 0), torch_kernel)
_DEPTHWISE = KernelTransform(lambda a: a.transpose(2, 3, 0, 1), lambda a: torch_kernel(a, depthwise=True))
_DENSE = KernelTransform(torch_dense_kernel, torch_dense_kernel)
_IDENTITY = KernelTransform(lambda a: a, lambda a: a)


@dataclasses.dataclass(frozen=True)
class Port:
    """One Keras variable and the checkpoint tensor that fills it."""

    layer: str
    index: int
    key: str
    transform: KernelTransform


def ports(model, source) -> list:
    """Every `Port` of `model` under `source`'s key map (layers the model lacks are skipped)."""
    out = []
    for name, prefix in source.layers.items():
        try:
            layer = model.get_layer(name)
        except ValueError:
            continue
        out.extend(_layer_ports(layer, prefix, source.kernels.get(name)))
    return out


def _layer_ports(layer, prefix, kernel_transform: Optional[KernelTransform]):
    L = keras.layers
    if isinstance(layer, L.BatchNormalization):
        suffixes = [s for s, on in (("weight", layer.scale), ("bias", layer.center)) if on]
        suffixes += ["running_mean", "running_var"]
        return [Port(layer.name, i, f"{prefix}.{s}", _IDENTITY) for i, s in enumerate(suffixes)]
    if isinstance(layer, L.DepthwiseConv2D):
        kernel = _DEPTHWISE
    elif isinstance(layer, L.Conv2D):
        kernel = _CONV
    elif isinstance(layer, L.Dense):
        kernel = _DENSE
    else:
        raise TypeError(f"No checkpoint layout for {type(layer).__name__} ({layer.name}). Accepted: BatchNormalization, "
                        "Conv2D, DepthwiseConv2D, Dense")
    result = [Port(layer.name, 0, f"{prefix}.weight", kernel_transform or kernel)]
    if len(layer.weights) > 1:
        result.append(Port(layer.name, 1, f"{prefix}.bias", _IDENTITY))
    return result


def port(model, state, source, path="checkpoint"):
    """Fill `model`'s variables from `state` (name -> array) under `source`'s key map.

    Checks everything before writing anything: keys the model needs and the
    checkpoint lacks (missing), keys of the checkpoint no mapped layer uses
    (unexpected; a top the model does not have is not unexpected), and
    tensors whose shape is not the model's (mis-shaped, in torch's layout).

    Raises:
        CheckpointMismatch: with all three lists.
    """
    plan = ports(model, source)
    variables = {(p.layer, p.index): model.get_layer(p.layer).weights[p.index] for p in plan}
    expected = {p.key: _torch_shape(p, variables[(p.layer, p.index)]) for p in plan}
    missing = sorted(k for k in expected if k not in state)
    misshaped = sorted(f"{k} {tuple(state[k].shape)} (expected {expected[k]})" for k in expected
                       if k in state and tuple(state[k].shape) != expected[k])
    absent = {prefix for name, prefix in source.layers.items() if not _has_layer(model, name)}  # e.g. the top
    unexpected = sorted(k for k in state if k not in expected and not k.endswith(IGNORED_SUFFIXES)
                        and k.rsplit(".", 1)[0] not in absent)
    if missing or unexpected or misshaped:
        raise CheckpointMismatch(
            f"{path} does not fit {model.name} as {source.description or source.name}. "
            f"Missing ({len(missing)}): {_short(missing)}; unexpected ({len(unexpected)}): {_short(unexpected)}; "
            f"mis-shaped ({len(misshaped)}): {_short(misshaped)}")
    for p in plan:
        variables[(p.layer, p.index)].assign(p.transform.to_keras(state[p.key]))


def export_state_dict(model, source) -> dict:
    """The inverse of `port`: `model`'s weights as a torch state dict (name -> torch tensor)."""
    import torch

    state = {}
    for p in ports(model, source):
        value = keras.ops.convert_to_numpy(model.get_layer(p.layer).weights[p.index]).astype(np.float32)
        state[p.key] = torch.from_numpy(np.ascontiguousarray(p.transform.to_torch(value)))
    return state


def save_state_dict(model, source, path):
    """Write `export_state_dict(model, source)` with `torch.save`, atomically."""
    import torch

    from kerasimpl.artifacts import atomic_path

    state = export_state_dict(model, source)
    with atomic_path(path, suffix=".pth") as tmp:
        torch.save(state, tmp)
    return path


def load_weights(model, source, weights):
    """Load `weights` into `model`: `"imagenet"` (`source.locate()`), a torch
    checkpoint path (`.pth`, `.pt`, `.bin`), or a Keras `.weights.h5` saved
    from the same architecture.

    Raises:
        ValueError: no such file, an unreadable/unsafe file, or a mismatch.
        WeightsUnavailable: `"imagenet"` cannot be had here (says how to fix it).
    """
    path = source.locate() if weights == "imagenet" else os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(f"Weights file not found. Received: weights={weights!r}. Accepted: None, 'imagenet', or the "
                         f"path of a {source.description or source.name} checkpoint (or a Keras .weights.h5)")
    if is_keras_weights(path):
        model.load_weights(path)
        return
    port(model, read_state_dict(path), source, path)


def _torch_shape(p, variable):
    shape = tuple(variable.shape)
    return tuple(p.transform.to_torch(np.empty(shape, np.float32)).shape) if len(shape) > 1 else shape


def _has_layer(model, name):
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


def _short(items, limit=8):
    if not items:
        return "none"
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
