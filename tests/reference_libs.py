"""Captum and pytorch-grad-cam on Keras models (torch backend), for reference tests.

Both assume NCHW tensors and `torch.nn.Module`s; Keras layers on the torch
backend are modules, but their tensors are NHWC, so pytorch-grad-cam's
channel axis (1) would be a spatial axis of ours. `NCHWClassifier` wraps a
Keras classifier as a module that takes NCHW images and exposes, as the
module `to_nchw`, the explained layer's activations in NCHW: hooking that
gives pytorch-grad-cam what it expects, on exactly our model.

pytorch-grad-cam imports torchvision at module level for helpers these
tests never call (image transforms, box IoU); PyPI's torchvision does not
import beside the CPU torch 2.13.0 that CI installs, so `pytorch_grad_cam()`
puts a stub `torchvision` in `sys.modules` when the real one is missing.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import pytest

REQUIRED = os.environ.get("KERASIMPL_REQUIRE_REFERENCES") == "1"  # .ci/run: missing libraries fail, never skip


def require(module):
    """Import `module` or skip (fail where KERASIMPL_REQUIRE_REFERENCES=1)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if REQUIRED:
            raise
        pytest.skip(f"{module} not installed ({e}); pip install -e '.[reference]' && pip install --no-deps grad-cam")


def pytorch_grad_cam():
    try:
        import torchvision  # noqa: F401
    except Exception:
        stub = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")
        functional = types.ModuleType("torchvision.transforms.functional")
        for name in ("Compose", "Normalize", "ToTensor"):
            setattr(transforms, name, object)
        functional.resize = None
        transforms.functional = functional
        stub.transforms, stub.ops = transforms, types.ModuleType("torchvision.ops")
        for mod in (stub, transforms, functional, stub.ops):
            sys.modules[mod.__name__] = mod
    return require("pytorch_grad_cam")


def nchw_classifier(method):
    """A torch module: NCHW images in, target logits out; `.to_nchw` is the layer.

    `method` is a kerasimpl `LayerMethod` (its `features` and `rest`
    sub-models split the Keras model at the explained layer).
    """
    import torch

    class ToNCHW(torch.nn.Module):
        def forward(self, a):
            return a.permute(0, 3, 1, 2)

    class NCHWClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # Keras models are torch modules on the torch backend: registered
            # here, their weights are this module's parameters.
            self.features, self.rest, self.to_nchw = method.features, method.rest, ToNCHW()

        def forward(self, x):
            a = self.to_nchw(self.features(x.permute(0, 2, 3, 1)))
            return self.rest(a.permute(0, 2, 3, 1))

    return NCHWClassifier().eval()


def nchw_logits(logits_model):
    """A function of NCHW images returning the Keras model's logits (Captum)."""

    def forward(x):
        return logits_model(x.permute(0, 2, 3, 1))

    return forward
