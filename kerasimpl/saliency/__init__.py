"""Saliency on any Keras backend: CAMs, input gradients and perturbations.

    from kerasimpl import saliency
    saliency.list_methods()            # ['cam', 'gradcam', 'gradcam++', ..., 'rise']
    method = saliency.get_method("gradcam++", model, layer="conv_1")
    (exp,) = method.explain(image[None], targets=[label])
    exp.map           # the method's own map (occlusion: probability per position)
    exp.importance()  # (H, W) in [0, 1], high = important, for overlays

Families (each class names its paper and equation under `Reference:`):

- class activation maps of one layer (`cam`, `linear_cam`, `smooth_cam`,
  `scorecam`): cam (the linear classifier's weights), gradcam, gradcam++,
  smoothgrad-cam++, hirescam, xgradcam, layercam (gradients at the layer),
  scorecam, sscam, iscam (masked forward passes), eigencam (principal
  component; not class-discriminative);
- input gradients (`attribution`): gradients, smoothgrad,
  integrated-gradients;
- perturbation: occlusion, rise (black box, forward passes only).

Around the methods: `quality_table` (deletion/insertion, average drop,
randomization check per method, with bootstrap intervals over images) and `choose_images` (which test images to
explain: one per class, or the model's right and wrong answers).
"""

from __future__ import annotations

import inspect

from kerasimpl.saliency.attribution import Gradients, InputGradientMethod, IntegratedGradients, SmoothGrad
from kerasimpl.saliency.base import Explanation, NotApplicable, SaliencyMethod, image_rng, resolve_targets
from kerasimpl.saliency.cam import (
    EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, LayerMethod, XGradCAM, score_tensor,
)
from kerasimpl.saliency.linear_cam import CAM
from kerasimpl.saliency.scorecam import ISCAM, SSCAM, ScoreCAM
from kerasimpl.saliency.smooth_cam import SmoothGradCAMPlusPlus
from kerasimpl.saliency.occlusion import Occlusion, occluded_batch, positions
from kerasimpl.saliency.notes import mass_shares
from kerasimpl.saliency.quality import (
    Scorer, average_drop_increase, deletion_insertion, deletion_insertion_curves, randomized_copy, rank_correlation,
)
from kerasimpl.saliency.quality_tables import (
    QUALITY_COLUMNS, RANDOM_BASELINE, beats_baseline, quality_csv, quality_markdown, quality_table, random_baseline,
)
from kerasimpl.saliency.rise import RISE, rise_masks
from kerasimpl.saliency.selection import Selection, choose_images

METHODS = {
    "cam": CAM,
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "smoothgrad-cam++": SmoothGradCAMPlusPlus,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "sscam": SSCAM,
    "iscam": ISCAM,
    "eigencam": EigenCAM,
    "gradients": Gradients,
    "smoothgrad": SmoothGrad,
    "integrated-gradients": IntegratedGradients,
    "occlusion": Occlusion,
    "rise": RISE,
}
# Methods whose map depends on the target class (EigenCAM's does not).
CLASS_DISCRIMINATIVE = tuple(n for n in METHODS if n != "eigencam")


def list_methods() -> list:
    """Registered method names, in the order above."""
    return list(METHODS)


def method_options(name) -> tuple:
    """The option names `get_method(name, ...)` accepts."""
    cls = _lookup(name)
    return tuple(p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model"))


def get_method(name, model, **options):
    """The saliency method `name` on `model`, with `options`.

    Options set to `None` are left at the method's default, so one set of
    command-line values can serve several methods through `method_options`.

    Raises:
        ValueError: an unknown name or option, naming what is accepted.
    """
    cls = _lookup(name)
    accepted = method_options(name)
    options = {k: v for k, v in options.items() if v is not None}
    bad = sorted(set(options) - set(accepted))
    if bad:
        raise ValueError(f"{name} takes no option {bad}. Accepted: {list(accepted)}")
    return cls(model, **options)


def parse_methods(spec) -> list:
    """Names from a comma-separated list, or `all`; validated."""
    names = list_methods() if str(spec).strip() == "all" else [s.strip() for s in str(spec).split(",") if s.strip()]
    for n in names:
        _lookup(n)
    if not names:
        raise ValueError(f"No saliency method given. Accepted: all, or a comma-separated list of {list_methods()}")
    return list(dict.fromkeys(names))


def _lookup(name):
    try:
        return METHODS[str(name).lower()]
    except KeyError:
        raise ValueError(f"Unknown saliency method {name!r}. Accepted: {list_methods()}") from None


__all__ = [
    "CAM", "CLASS_DISCRIMINATIVE", "EigenCAM", "Explanation", "GradCAM", "GradCAMPlusPlus", "Gradients", "HiResCAM",
    "ISCAM", "InputGradientMethod", "IntegratedGradients", "LayerCAM", "LayerMethod", "METHODS", "NotApplicable",
    "Occlusion", "QUALITY_COLUMNS", "RANDOM_BASELINE", "RISE", "SSCAM", "SaliencyMethod", "ScoreCAM", "Scorer", "Selection", "SmoothGrad",
    "SmoothGradCAMPlusPlus", "XGradCAM", "average_drop_increase", "beats_baseline", "choose_images", "deletion_insertion", "deletion_insertion_curves", "get_method",
    "image_rng", "list_methods", "mass_shares", "method_options", "occluded_batch", "parse_methods", "positions",
    "quality_csv", "quality_markdown", "quality_table", "randomized_copy", "random_baseline", "rank_correlation", "resolve_targets",
    "rise_masks", "score_tensor",
]
