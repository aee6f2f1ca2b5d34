"""Saliency: occlusion sensitivity and Grad-CAM on any Keras backend.

    from kerasimpl.saliency import GradCAM, Occlusion
    (exp,) = Occlusion(model, patch=30, stride=20).explain(image[None], targets=[label])
    exp.map           # (10, 10) target probability per mask position (224/30/20)
    exp.importance()  # (224, 224) in [0, 1], high = important, for overlays
"""

from kerasimpl.saliency.base import Explanation, SaliencyMethod, resolve_targets
from kerasimpl.saliency.gradcam import GradCAM
from kerasimpl.saliency.occlusion import Occlusion, occluded_batch, positions
from kerasimpl.saliency.quality import deletion_insertion, randomized_copy, rank_correlation

METHODS = {"occlusion": Occlusion, "gradcam": GradCAM}

__all__ = [
    "Explanation", "GradCAM", "METHODS", "Occlusion", "SaliencyMethod", "deletion_insertion",
    "occluded_batch", "positions", "randomized_copy", "rank_correlation", "resolve_targets",
]
