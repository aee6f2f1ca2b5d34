"""Grad-CAM (kept as a module for imports; the CAM family lives in `cam`)."""

from kerasimpl.saliency.cam import GradCAM, score_tensor

__all__ = ["GradCAM", "score_tensor"]
