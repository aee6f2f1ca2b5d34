"""Skip-or-fail imports of the reference libraries for the saliency tests.

The wrappers themselves live in `kerasimpl.saliency.reference`.
"""

from __future__ import annotations

import importlib
import os

import pytest

from kerasimpl.saliency.reference import import_pytorch_grad_cam, nchw_classifier, nchw_logits  # noqa: F401

REQUIRED = os.environ.get("KERASIMPL_REQUIRE_REFERENCES") == "1"  # .ci/run: missing libraries fail, never skip
HINT = "pip install -e '.[reference]' && pip install --no-deps grad-cam==1.5.7"


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
