"""Captum and pytorch-grad-cam on Keras models (torch backend only).

Both libraries assume NCHW tensors and `torch.nn.Module`s. Keras layers on
the torch backend are modules, but their tensors are NHWC, so
pytorch-grad-cam's channel axis (1) would be a spatial axis of ours, and
its hooks on a Keras layer would average over the wrong axes.
`nchw_classifier` wraps a Keras classifier as a module that takes NCHW
images and exposes, as the module `to_nchw`, the explained layer's
activations in NCHW: hooking that gives pytorch-grad-cam what it expects,
on exactly the Keras model. kerasimpl uses these to test its methods
against the references and to time them side by side
(`python -m experiments.bench`).

    from kerasimpl.saliency import GradCAM
    from kerasimpl.saliency.reference import nchw_classifier, import_pytorch_grad_cam
    pgc = import_pytorch_grad_cam()
    wrapper = nchw_classifier(GradCAM(model))
    cam = pgc.GradCAM(model=wrapper, target_layers=[wrapper.to_nchw])
"""

from __future__ import annotations

import sys
import types


def import_pytorch_grad_cam():
    """`pytorch_grad_cam`, importable beside a torch without torchvision.

    pytorch-grad-cam imports torchvision at module level for helpers that
    the CAM classes never call (image transforms, box IoU); PyPI's
    torchvision does not import beside the CPU torch 2.13.0 this project
    pins, so a stub `torchvision` goes into `sys.modules` when the real one
    is missing (calling those helpers then fails).
    """
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
    import pytorch_grad_cam

    return pytorch_grad_cam


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
            if torch.is_grad_enabled() and not x.requires_grad:
                # A frozen Keras base has no trainable weights: without this the
                # activations carry no graph and pytorch-grad-cam gets no gradients.
                x = x.detach().requires_grad_(True)
            a = self.to_nchw(self.features(x.permute(0, 2, 3, 1)))
            return self.rest(a.permute(0, 2, 3, 1))

    return NCHWClassifier().eval()


def nchw_logits(logits_model):
    """A function of NCHW images returning the Keras model's logits (Captum)."""

    def forward(x):
        return logits_model(x.permute(0, 2, 3, 1))

    return forward
