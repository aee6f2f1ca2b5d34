"""Largest |ours - reference| per method on the real networks: the maps of
tests/test_saliency_real_networks.py (our Keras model vs pytorch-grad-cam,
torchcam and Captum on the reference PyTorch model), printed as Markdown rows.

    KERAS_BACKEND=torch python docs/saliency_vs_references.py [efficientnetlite0|mobilenetv2_tv]
    # from the repository root; extras reference, pretrained (make setup installs both)
"""
import os
import sys

sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import test_saliency_real_networks as T  # noqa: E402
from kerasimpl import saliency  # noqa: E402
from test_saliency_torchcam import at_input  # noqa: E402

network = sys.argv[1] if len(sys.argv) > 1 else "efficientnetlite0"
layer, rows = T.LAYER[network], []
x, targets = T._targets(network, 224)
for lib, name in [("pytorch-grad-cam", "gradcam"), ("pytorch-grad-cam", "gradcam++"), ("pytorch-grad-cam", "layercam"),
                  ("torchcam", "gradcam"), ("torchcam", "layercam"), ("torchcam", "gradcam++")]:
    ours = saliency.get_method(name, T._ours(network, 224), layer=layer).explain(x, targets)
    theirs = (T._pgc_maps if lib == "pytorch-grad-cam" else T._torchcam_maps)(network, name, x, targets)
    rows.append((lib, name, max(float(np.abs(e.map - t).max()) for e, t in zip(ours, theirs))))
captum_attr = T.reference_libs.require("captum.attr")
theirs = captum_attr.LayerGradCam(T._reference(network), T._hooked(network)).attribute(
    torch.from_numpy(x).permute(0, 3, 1, 2), target=targets, relu_attributions=True).detach().numpy()[:, 0]
ours = saliency.get_method("gradcam", T._ours(network, 224), layer=layer).explain(x, targets)
rows.append(("captum LayerGradCam", "gradcam",
             max(float(np.abs(e.map - at_input(t, 224)).max()) for e, t in zip(ours, theirs))))
x64, t64 = T._targets(network, 64)
ours = saliency.get_method("scorecam", T._ours(network, 64), layer=layer).explain(x64[:1], t64[:1])
rows.append(("pytorch-grad-cam", "scorecam (64 px, 1 image)", max(
    float(np.abs(e.map - t).max()) for e, t in zip(ours, T._pgc_maps(network, "scorecam", x64[:1], t64[:1])))))
print(f"{network}:")
for r in rows:
    print(f"| {r[1]} | {r[0]} | {r[2]:.1e} |")
