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
(`python -m experiments.bench`). `PYTORCH_GRAD_CAM`, `CAPTUM` and
`TORCHCAM` map our method names to the libraries' classes (the one place
they live); `pytorch_grad_cam_runner`, `captum_runner` and
`torchcam_runner` run the library's implementation of one of our methods
on the same Keras model (`runner(method)` picks whichever has it).

    from kerasimpl.saliency import GradCAM
    from kerasimpl.saliency.reference import pytorch_grad_cam_runner
    run = pytorch_grad_cam_runner(GradCAM(model))
    maps = run(images, targets)  # pytorch-grad-cam's (N, H, W) maps, NHWC images in
"""

from __future__ import annotations

import sys
import types

# Our method name -> the reference library's class of the same method.
PYTORCH_GRAD_CAM = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "hirescam": "HiResCAM",
                    "xgradcam": "XGradCAM", "layercam": "LayerCAM", "scorecam": "ScoreCAM", "eigencam": "EigenCAM"}
CAPTUM = {"gradients": "Saliency", "integrated-gradients": "IntegratedGradients", "occlusion": "Occlusion"}
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


def pytorch_grad_cam_runner(method):
    """pytorch-grad-cam's implementation of our CAM `method`, on the same Keras model.

    Returns `run(images, targets)`: NHWC float images in, pytorch-grad-cam's
    maps out ((N, H, W) NumPy: scaled to [0, 1] at the layer's resolution,
    then resized, as the library does). Its batched masked forwards
    (Score-CAM) run `method.batch_size` at a time, as ours do.

    Raises:
        KeyError: pytorch-grad-cam has no such method (see `PYTORCH_GRAD_CAM`).
        ImportError: pytorch-grad-cam is not installed.
    """
    import torch

    cls_name = PYTORCH_GRAD_CAM[method.name]
    pgc = import_pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wrapper = nchw_classifier(method)

    def run(images, targets):
        with getattr(pgc, cls_name)(model=wrapper, target_layers=[wrapper.to_nchw]) as cam:
            if cls_name == "ScoreCAM":
                cam.batch_size = getattr(method, "batch_size", 32)  # the same masked forwards per call
            return cam(input_tensor=torch.tensor(images).permute(0, 3, 1, 2),
                       targets=[ClassifierOutputTarget(int(t)) for t in targets])

    return run


def captum_runner(method):
    """Captum's implementation of our `method` (gradients, integrated gradients, occlusion), same model.

    Returns `run(images, targets)`: NHWC float images in, Captum's
    attributions out as NHWC NumPy: Saliency's absolute input gradients of
    the logit; IntegratedGradients with our baseline, steps, quadrature
    and batch size; Occlusion of the probabilities with our window, stride
    and fill (per pixel: the mean drop over the windows covering it).

    Raises:
        KeyError: Captum has no such method here (see `CAPTUM`).
        ImportError: Captum is not installed.
    """
    import torch
    from captum import attr

    kind, options = CAPTUM[method.name], method.options()
    if kind == "Occlusion":
        explainer = attr.Occlusion(lambda z: method.model(z.permute(0, 2, 3, 1)))
        window = (3, options["patch"], options["patch"])
        kw = dict(sliding_window_shapes=window, strides=(3, options["stride"], options["stride"]),
                  baselines=options["fill"], perturbations_per_eval=options["batch_size"])
    elif kind == "Saliency":
        explainer, kw = attr.Saliency(nchw_logits(method.logits)), dict(abs=True)
    else:
        explainer = attr.IntegratedGradients(nchw_logits(method.logits))
        kw = dict(baselines=options["baseline"], n_steps=options["steps"], method=options["method"],
                  internal_batch_size=options["batch_size"])

    def run(images, targets):
        x = torch.tensor(images).permute(0, 3, 1, 2)
        if kind == "Saliency":
            x = x.requires_grad_(True)
        out = explainer.attribute(x, target=[int(t) for t in targets], **kw)
        return out.detach().cpu().numpy().transpose(0, 2, 3, 1)

    return run


def runner(method):
    """`(label, run(images, targets))` of the pytorch-grad-cam or Captum implementation of `method`.

    Raises:
        KeyError: neither library implements it.
        ImportError: the library that does is not installed.
    """
    if method.name in PYTORCH_GRAD_CAM:
        return f"pytorch-grad-cam {PYTORCH_GRAD_CAM[method.name]}", pytorch_grad_cam_runner(method)
    return f"Captum {CAPTUM[method.name]}", captum_runner(method)


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
