"""Skip-or-fail imports of the reference libraries for the saliency tests.

The wrappers and runners themselves live in `kerasimpl.saliency.reference`.
"""

from __future__ import annotations

from kerasimpl.saliency.reference import (  # noqa: F401
    CAPTUM, PYTORCH_GRAD_CAM, TORCHCAM, captum_runner, import_pytorch_grad_cam, import_torchcam, nchw_classifier,
    nchw_logits, pytorch_grad_cam_runner, torchcam_runner,
)

from optional_libs import require as _require

ENV = "KERASIMPL_REQUIRE_REFERENCES"  # .ci/run: missing libraries fail, never skip
HINT = "pip install -e '.[reference]' && pip install --no-deps grad-cam==1.5.7"  # [reference] has torchcam
QUANTUS_HINT = "pip install quantus==0.6.0"  # the metrics references (tests/test_saliency_quantus.py)


def require(module):
    """Import `module` or skip (fail where KERASIMPL_REQUIRE_REFERENCES=1)."""
    return _require(module, ENV, HINT)


def pytorch_grad_cam():
    """pytorch_grad_cam, imported without torchvision, or skip (fail in CI)."""
    return _require("pytorch_grad_cam", ENV, HINT, load=import_pytorch_grad_cam)


def torchcam():
    """torchcam, imported without torchvision, or skip (fail in CI)."""
    return _require("torchcam", ENV, HINT, load=import_torchcam)


def quantus():
    """quantus (0.6.0: pixel flipping, region perturbation, MPRT), or skip (fail in CI)."""
    return _require("quantus", ENV, QUANTUS_HINT)
