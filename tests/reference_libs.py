"""Skip-or-fail imports of the reference libraries for the saliency tests.

The wrappers themselves live in `kerasimpl.saliency.reference`.
"""

from __future__ import annotations

import importlib
import os

import pytest

from kerasimpl.saliency.reference import (  # noqa: F401
    PYTORCH_GRAD_CAM, TORCHCAM, import_pytorch_grad_cam, import_torchcam, nchw_classifier, nchw_logits, torchcam_runner,
)

REQUIRED = os.environ.get("KERASIMPL_REQUIRE_REFERENCES") == "1"  # .ci/run: missing libraries fail, never skip
HINT = "pip install -e '.[reference]' && pip install --no-deps grad-cam==1.5.7"  # [reference] has torchcam


def require(module):
    """Import `module` or skip (fail where KERASIMPL_REQUIRE_REFERENCES=1)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if REQUIRED:
            raise
        pytest.skip(f"{module} not installed ({e}); {HINT}")


def pytorch_grad_cam():
    try:
        return import_pytorch_grad_cam()
    except ImportError as e:
        if REQUIRED:
            raise
        pytest.skip(f"pytorch_grad_cam not installed ({e}); {HINT}")


def torchcam():
    try:
        return import_torchcam()
    except ImportError as e:
        if REQUIRED:
            raise
        pytest.skip(f"torchcam not installed ({e}); {HINT}")
