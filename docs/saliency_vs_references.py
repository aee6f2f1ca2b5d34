"""Largest |ours - reference| per method on the real EfficientNet-Lite0: the maps
of tests/test_saliency_real_lite0.py (our Keras model vs pytorch-grad-cam,
torchcam and Captum on the reference PyTorch model), printed as Markdown rows.

    KERAS_BACKEND=torch python docs/saliency_vs_references.py   # from the repository root; extras reference, pretrained
"""
import os, sys, json
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
import numpy as np
import test_saliency_real_lite0 as T
from kerasimpl import saliency
from test_saliency_torchcam import at_input

rows = []
x, targets = T._targets(224)
for lib, name in [("pytorch-grad-cam", "gradcam"), ("pytorch-grad-cam", "gradcam++"), ("pytorch-grad-cam", "layercam"),
                  ("torchcam", "gradcam"), ("torchcam", "layercam"), ("torchcam", "gradcam++")]:
    ours = saliency.get_method(name, T._ours(224), layer="top_activation").explain(x, targets)
    theirs = (T._pgc_maps if lib == "pytorch-grad-cam" else T._torchcam_maps)(name, x, targets)
    rows.append((lib, name, max(float(np.abs(e.map - t).max()) for e, t in zip(ours, theirs))))
import torch
captum_attr = T.reference_libs.require("captum.attr")
ref = T._reference()
theirs = captum_attr.LayerGradCam(ref, ref.head_act).attribute(torch.from_numpy(x).permute(0, 3, 1, 2), target=targets,
                                                               relu_attributions=True).detach().numpy()[:, 0]
ours = saliency.get_method("gradcam", T._ours(224), layer="top_activation").explain(x, targets)
rows.append(("captum LayerGradCam", "gradcam", max(float(np.abs(e.map - at_input(t, 224)).max()) for e, t in zip(ours, theirs))))
x64, t64 = T._targets(64)
ours = saliency.get_method("scorecam", T._ours(64), layer="top_activation").explain(x64[:1], t64[:1])
rows.append(("pytorch-grad-cam", "scorecam (64 px, 1 image)", max(float(np.abs(e.map - t).max()) for e, t in zip(ours, T._pgc_maps("scorecam", x64[:1], t64[:1])))))
for r in rows:
    print(f"| {r[1]} | {r[0]} | {r[2]:.1e} |")
