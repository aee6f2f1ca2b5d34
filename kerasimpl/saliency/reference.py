"""Captum, pytorch-grad-cam and torchcam on Keras models (torch backend only).

The libraries assume NCHW tensors and `torch.nn.Module`s. Keras layers on
the torch backend are modules, but their tensors are NHWC, so
pytorch-grad-cam's channel axis (1) would be a spatial axis of ours, and
its hooks on a Keras layer would average over the wrong axes.
`nchw_classifier` wraps a Keras classifier as a module that takes NCHW
images and exposes, as the module `to_nchw`, the explained layer's
activations in NCHW: hooking that gives pytorch-grad-cam what it expects,
on exactly the Keras model. kerasimpl uses these to test its methods
against the references and to time them side by side
(`python -m experiments.bench`). `PYTORCH_GRAD_CAM` and `TORCHCAM` map
our method names to the libraries' classes (the one place they live);
`torchcam_runner` runs torchcam's extractor for one of our methods.

    from kerasimpl.saliency import GradCAM
    from kerasimpl.saliency.reference import nchw_classifier, import_pytorch_grad_cam
    pgc = import_pytorch_grad_cam()
    wrapper = nchw_classifier(GradCAM(model))
    cam = pgc.GradCAM(model=wrapper, target_layers=[wrapper.to_nchw])
"""

from __future__ import annotations

import sys
import types

# Our method name -> the reference library's class of the same method.
PYTORCH_GRAD_CAM = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "hirescam": "HiResCAM",
                    "xgradcam": "XGradCAM", "layercam": "LayerCAM", "scorecam": "ScoreCAM", "eigencam": "EigenCAM"}
TORCHCAM = {"cam": "CAM", "gradcam": "GradCAM", "gradcam++": "GradCAMpp", "smoothgrad-cam++": "SmoothGradCAMpp",
            "xgradcam": "XGradCAM", "layercam": "LayerCAM", "scorecam": "ScoreCAM", "sscam": "SSCAM", "iscam": "ISCAM"}
# torchcam classes whose extractor needs the forward pass recorded for autograd.
_TORCHCAM_GRADIENTS = ("GradCAM", "GradCAMpp", "SmoothGradCAMpp", "XGradCAM", "LayerCAM")


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
        stubs = (stub, transforms, functional, stub.ops)
        for mod in stubs:
            sys.modules[mod.__name__] = mod
        try:
            import pytorch_grad_cam
        finally:  # only pytorch_grad_cam holds the stub: a later `import torchvision` still fails as it should
            for mod in stubs:
                if sys.modules.get(mod.__name__) is mod:
                    del sys.modules[mod.__name__]
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


def import_torchcam():
    """`torchcam` (its `methods` and `metrics` modules imported)."""
    import torchcam
    import torchcam.methods  # noqa: F401
    import torchcam.metrics  # noqa: F401

    return torchcam


def torchcam_options(method) -> dict:
    """Our method's settings under torchcam's names (what both have).

    Smooth Grad-CAM++'s noise is not passed: ours is a fraction of each
    image's range, torchcam's `std` an absolute value in input units.
    """
    o = method.options()
    out = {"batch_size": o["batch_size"]} if method.name in ("scorecam", "sscam", "iscam") else {}
    if method.name == "sscam":
        out.update(num_samples=o["samples"], std=o["noise"] or 1e-12)  # torchcam's Normal needs std > 0
    elif method.name == "iscam":
        out.update(num_samples=o["steps"])
    elif method.name == "smoothgrad-cam++":
        out.update(num_samples=o["samples"])
    return out


def torchcam_runner(method):
    """torchcam's extractor for our `method` on the same Keras model.

    Returns `run(images, targets)`: NHWC float images in, torchcam's maps
    out as (N, h, w) NumPy at the layer's resolution, unnormalised (apply
    ReLU, resize and min-max scaling to compare with `Explanation.map`);
    `run.extractor` is the torchcam object (e.g. to seed its noise).

    Raises:
        KeyError: torchcam has no such method (see `TORCHCAM`).
    """
    import torch

    tc = import_torchcam()
    cls_name = TORCHCAM[method.name]
    wrapper = nchw_classifier(method)
    extra = {}
    if cls_name == "CAM":  # torchcam reads the classifier's weights from a torch Linear module
        kernel = method.dense.get_weights()[0]
        wrapper.fc = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            wrapper.fc.weight.copy_(torch.as_tensor(kernel.T))
        extra["fc_layer"] = "fc"
    h, w = method.input_size
    extractor = getattr(tc.methods, cls_name)(wrapper, target_layer="to_nchw", input_shape=(3, h, w),
                                              **torchcam_options(method), **extra)
    grads = cls_name in _TORCHCAM_GRADIENTS

    def run(images, targets):
        x = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2)
        with torch.set_grad_enabled(grads):
            scores = wrapper(x)
        maps = extractor(class_idx=[int(t) for t in targets], scores=scores, normalized=False)[0]
        return maps.detach().cpu().numpy()

    run.extractor = extractor
    return run
