"""Tiny configurations the suite builds by default (keras-hub style), and the slow set's full widths.

`make test` builds every backbone it can at a tiny width (`TINY_KWARGS`);
entries whose builder takes no width argument and costs seconds per build
(`FULL_WIDTH`) are parametrized with the `slow` mark, so CI (.ci/run's torch
stage) checks them once while `make test` checks their layer types through
the toy graphs of tests/test_torch_inference.py.
"""

import pytest

# AlexNet's conv5 keeps torchvision's 256 channels: the checkpoint key map
# reorders fc6's 256 x 6 x 6 input rows (kerasimpl.checkpoints.torchvision_alexnet).
TINY_ALEXNET = {"widths": (8, 16, 16, 16, 256), "dense": (32, 24)}
TINY_KWARGS = {
    "alexnet": TINY_ALEXNET,
    "mobilenetv2": {"alpha": 0.35},
    "mobilenetv2_tv": {"alpha": 0.35},
    "mobilenetv3large": {"alpha": 0.75},
    "mobilenetv3small": {"alpha": 0.75},
    "smallcnn": {"widths": (8, 16)},
}

# No width argument, and a second or more per build (measured on 2 CPU cores):
# their parametrizations run in the slow set. Cheap full-width entries
# (vgg16, efficientnetlite0, convnexttiny) stay in make test.
FULL_WIDTH = {"convnextbase", "convnextsmall", "densenet121", "efficientnetb0", "efficientnetlite1",
              "efficientnetlite2", "efficientnetv2b0", "efficientnetv2s", "inceptionv3", "resnet50", "resnet50v2",
              "xception"}


def registry(names=None):
    """The backbone registry (or `names`) as pytest parameters, the full-width entries marked slow."""
    from kerasimpl import backbones

    return [pytest.param(n, marks=pytest.mark.slow) if n in FULL_WIDTH else n
            for n in (backbones.list_backbones() if names is None else names)]


def randomize_batchnorm(model, seed=0):
    """Non-trivial BN statistics, so folding them is really exercised."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.1, n).astype("float32"))
