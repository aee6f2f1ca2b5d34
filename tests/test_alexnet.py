"""AlexNet: the adaptive pool, torchvision checkpoint conversion, safety of loading.

The equality with torchvision itself is in test_torchvision.py (needs torchvision).
"""

import dataclasses
import hashlib
import os
import warnings

import keras
import numpy as np
import pytest
import torch

from kerasimpl import backbones, checkpoints, models
from kerasimpl.alexnet import AlexNet
from kerasimpl.heads import HeadConfig
from kerasimpl.checkpoints import torchvision_alexnet
from kerasimpl.layers import AdaptiveAveragePooling2D
from kerasimpl.saliency import layers as saliency_layers
from tiny import TINY_ALEXNET

SOURCE = checkpoints.get_source("torchvision-alexnet")

# torchvision.models.alexnet().state_dict(): keys and shapes (its published architecture).
TORCHVISION_SHAPES = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}


def adaptive_pool_reference(x, out):
    """Loop form of torch's AdaptiveAvgPool2d on (N, H, W, C)."""
    n, h, w, c = x.shape
    y = np.zeros((n, out[0], out[1], c), np.float64)
    for i in range(out[0]):
        h0, h1 = int(np.floor(i * h / out[0])), int(np.ceil((i + 1) * h / out[0]))
        for j in range(out[1]):
            w0, w1 = int(np.floor(j * w / out[1])), int(np.ceil((j + 1) * w / out[1]))
            y[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return y


@pytest.mark.parametrize("h,w", [(1, 1), (2, 3), (5, 5), (6, 6), (7, 13), (13, 13), (12, 12), (27, 9)])
def test_adaptive_pool_equals_torch_bins(h, w):
    x = np.random.default_rng(h * 31 + w).normal(size=(2, h, w, 4)).astype("float32")
    got = keras.ops.convert_to_numpy(AdaptiveAveragePooling2D((6, 6))(x))
    np.testing.assert_allclose(got, adaptive_pool_reference(x, (6, 6)), rtol=1e-5, atol=1e-6)
    assert AdaptiveAveragePooling2D((6, 6)).compute_output_shape((None, h, w, 4)) == (None, 6, 6, 4)


def test_adaptive_pool_serializes_and_validates():
    layer = AdaptiveAveragePooling2D((3, 2), name="p")
    clone = AdaptiveAveragePooling2D.from_config(layer.get_config())
    assert clone.output_size == (3, 2)
    with pytest.raises(ValueError, match=r"output_size must be .*Received: \(0, 6\)"):
        AdaptiveAveragePooling2D((0, 6))


def test_alexnet_has_torchvision_parameter_count_keys_and_shapes_and_accepts_63_px_not_62():
    model = AlexNet(weights=None, input_shape=(63, 63, 3))
    assert model.count_params() == 61_100_840  # torchvision's AlexNet
    state = checkpoints.export_state_dict(model, SOURCE)  # what a checkpoint file of it holds
    assert {k: tuple(v.shape) for k, v in state.items()} == TORCHVISION_SHAPES
    assert model.get_layer("pool5").output.shape[1:3] == (1, 1)  # the smallest map
    assert model.get_layer("avgpool").output.shape[1:] == (6, 6, 256)
    with pytest.raises(ValueError, match=r"H, W >= 63. Received: \(62, 62, 3\)"):
        AlexNet(weights=None, input_shape=(62, 62, 3))


def test_width_arguments_shrink_every_layer_and_are_validated():
    """The tiny AlexNet the other tests build: torchvision's layers and names, narrower."""
    (c1, c2, c3, c4, c5), (d6, d7) = TINY_ALEXNET["widths"], TINY_ALEXNET["dense"]
    model = AlexNet(weights=None, input_shape=(63, 63, 3), classes=10, **TINY_ALEXNET)
    convs = (3 * 121 + 1) * c1 + (c1 * 25 + 1) * c2 + (c2 * 9 + 1) * c3 + (c3 * 9 + 1) * c4 + (c4 * 9 + 1) * c5
    assert model.count_params() == convs + (c5 * 36 + 1) * d6 + (d6 + 1) * d7 + (d7 + 1) * 10
    assert [model.get_layer(f"conv{i}").filters for i in range(1, 6)] == [c1, c2, c3, c4, c5]
    assert [model.get_layer(n).units for n in ("fc6", "fc7", "predictions")] == [d6, d7, 10]
    with pytest.raises(ValueError, match=r"widths must be 5 integers >= 1 .*Received: widths=\(8, 16\)"):
        AlexNet(widths=(8, 16))
    with pytest.raises(ValueError, match=r"dense must be 2 integers >= 1 .*Received: dense=\(0, 4\)"):
        AlexNet(dense=(0, 4))


def test_fc6_reorder_maps_torch_flatten_to_keras_flatten():
    """W @ map.flatten() in torch's (C, H, W) order equals the converted
    kernel applied to Keras' (H, W, C) flatten of the same map."""
    rng = np.random.default_rng(0)
    w_torch = rng.normal(size=(5, 9216)).astype("float32")
    fmap = rng.normal(size=(256, 6, 6)).astype("float32")  # (C, H, W)
    expected = w_torch @ fmap.reshape(-1)
    fc6 = SOURCE.kernels["fc6"]
    kernel = fc6.to_keras(w_torch)
    assert kernel.shape == (9216, 5)
    np.testing.assert_allclose(fmap.transpose(1, 2, 0).reshape(-1) @ kernel, expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(fc6.to_torch(kernel), w_torch)


def _alexnet_from(weights, size=64, include_top=True):
    """The tiny AlexNet with `weights` ported through the factory (builders load no checkpoints)."""
    return backbones.build_backbone("alexnet", keras.Input((size, size, 3)), weights=weights, include_top=include_top,
                                    **({"classifier_activation": None} if include_top else {}), **TINY_ALEXNET)


def _save(model, path):
    return checkpoints.save_state_dict(model, SOURCE, path)


def _random_alexnet(seed, size=64):
    """The tiny AlexNet (tests/tiny.py), random weights and biases."""
    keras.utils.set_random_seed(seed)
    model = AlexNet(weights=None, input_shape=(size, size, 3), classifier_activation=None, **TINY_ALEXNET)
    for w in model.weights:  # biases too: the conversion must carry them
        w.assign(np.random.default_rng(seed).normal(0, 0.05, w.shape).astype("float32"))
    return model


def test_checkpoint_round_trip_has_torchvision_keys_and_loads_back(tmp_path):
    a = _random_alexnet(1)
    path = _save(a, str(tmp_path / "alexnet.pth"))
    state = torch.load(path, weights_only=True)
    assert state.keys() == TORCHVISION_SHAPES.keys()  # the full widths' shapes: the parameter-count test
    assert tuple(state["features.0.weight"].shape) == (TINY_ALEXNET["widths"][0], 3, 11, 11)  # OIHW
    assert tuple(state["classifier.1.weight"].shape) == (TINY_ALEXNET["dense"][0], 9216)  # (out, in)
    b = _alexnet_from(path, 96)  # any size: same weights
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(wa), keras.ops.convert_to_numpy(wb))
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    c = _alexnet_from(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(c(x)), keras.ops.convert_to_numpy(a(x)), rtol=1e-5,
                               atol=1e-6)
    no_top = _alexnet_from(path, include_top=False)  # convolutions only
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(no_top.get_layer("conv5").kernel),
                                  keras.ops.convert_to_numpy(a.get_layer("conv5").kernel))


def _torch_alexnet(widths, dense, classes=1000):
    """torchvision's AlexNet module layout (its `features` / `classifier` indices) in plain torch."""
    nn = torch.nn
    c1, c2, c3, c4, c5 = widths
    features = nn.Sequential(
        nn.Conv2d(3, c1, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2), nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    classifier = nn.Sequential(nn.Dropout(), nn.Linear(c5 * 36, dense[0]), nn.ReLU(), nn.Dropout(),
                               nn.Linear(*dense), nn.ReLU(), nn.Linear(dense[1], classes))
    return nn.ModuleDict({"features": features, "avgpool": nn.AdaptiveAvgPool2d(6), "classifier": classifier})


def test_a_torch_modules_state_dict_ports_to_the_same_logits(tmp_path):
    """The key map and layouts against torch itself, no torchvision needed: a state dict named by torch's
    own module indices (fc6's channels-first flatten included) gives the module's logits."""
    torch.manual_seed(0)
    net = _torch_alexnet(**TINY_ALEXNET).eval()
    path = str(tmp_path / "torch_alexnet.pth")
    torch.save(net.state_dict(), path)
    x = np.random.default_rng(0).normal(size=(2, 67, 67, 3)).astype("float32")
    with torch.no_grad():
        features = net["avgpool"](net["features"](torch.from_numpy(x.transpose(0, 3, 1, 2).copy())))
        expected = net["classifier"](features.flatten(1)).numpy()
    ours = keras.ops.convert_to_numpy(_alexnet_from(path, 67)(x))
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_a_wrong_class_count_is_named_with_torchvisions_shapes(tmp_path):
    """The generic checks (tests/test_checkpoints.py) with torchvision's keys: a 10-class file for a 1000-class top."""
    state = checkpoints.export_state_dict(_random_alexnet(2), SOURCE)
    del state["features.3.bias"]
    state["classifier.6.weight"] = torch.zeros(10, 24)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"Missing \(1\): features.3.bias; unexpected \(0\): none; mis-shaped "
                                         r"\(1\): classifier.6.weight \(10, 24\) \(expected \(1000, 24\)\)"):
        _alexnet_from(str(path))


def test_imagenet_download_checks_the_hash_prefix(monkeypatch, tmp_path):
    hosted = torchvision_alexnet.HOSTED
    path = str(tmp_path / hosted.file_name)
    _save(_random_alexnet(3), path)
    requested = []

    def fake_get_file(fname, origin, **kw):
        requested.append((fname, origin, kw.get("cache_subdir")))
        return path

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    named = dataclasses.replace(hosted, file_name=f"alexnet-owt-{digest[:8]}.pth")
    monkeypatch.setattr(torchvision_alexnet, "HOSTED", named)
    model = _alexnet_from("imagenet")
    assert requested == [(named.file_name, f"https://download.pytorch.org/models/{named.file_name}", "models")]
    assert model.get_layer("predictions").units == 1000
    wrong = "00000000" if digest[:8] != "00000000" else "11111111"
    monkeypatch.setattr(torchvision_alexnet, "HOSTED", dataclasses.replace(hosted, file_name=f"alexnet-owt-{wrong}.pth"))
    with pytest.raises(RuntimeError, match="does not start with .*deleted it"):
        _alexnet_from("imagenet")
    assert not os.path.exists(path)  # as torch.hub: a mismatching file does not stay in the cache


def test_offline_imagenet_names_the_file_and_url(monkeypatch, tmp_path):
    def offline(url, target, *a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", offline)
    with pytest.raises(RuntimeError, match=r"alexnet-owt-7be5be79.pth from https://download.pytorch.org/models/"
                                           r"alexnet-owt-7be5be79.pth.*weights=PATH"):
        models.build_classifier("alexnet", 3, image_size=64, weights="imagenet", backbone_kwargs=TINY_ALEXNET)


def test_keep_top_hidden_ends_at_fc7_relu_with_the_checkpoint_weights(tmp_path):
    full = _random_alexnet(4)
    path = _save(full, str(tmp_path / "a.pth"))
    keras.utils.set_random_seed(9)
    model = models.build_classifier("alexnet", 3, input_shape=(32, 32, 3), image_size=64, weights=path,
                                    keep_top_hidden=True, head=HeadConfig((), 0.0), backbone_kwargs=TINY_ALEXNET)
    assert model.get_layer(models.POOL).output.shape[-1] == TINY_ALEXNET["dense"][1]  # fc7's units
    assert [type(l).__name__ for l in model.get_layer(models.HEAD).layers] == ["Dense"]
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    pre = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("preprocess").output)(x))
    expected = keras.ops.convert_to_numpy(keras.Model(full.input, full.get_layer("fc7_relu").output)(pre))
    got = keras.ops.convert_to_numpy(models.feature_extractor(model)(x))
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert saliency_layers.gradcam_layer_name(model, "alexnet") == "conv5_relu"
    assert saliency_layers.feature_map(model, "conv5_relu").shape[1:] == (3, 3, 256)  # 64 px in
    # Without the backbone's name, from the graph alone (the model's name says nothing): the last spatial map
    # before `pool` that no pooling layer made, not pool5 or avgpool.
    renamed = keras.Model(model.inputs, model.outputs, name="my_model")
    assert saliency_layers.gradcam_layer_name(renamed) == "conv5_relu"


@pytest.mark.slow
def test_saliency_cli_explains_an_imagenet_prediction_from_the_checkpoint(tmp_path):
    from PIL import Image

    from experiments import saliency

    path = backbones.write_random_checkpoint("alexnet", str(tmp_path / "alexnet.pth"), seed=5)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # offline ImageNet class names
        assert saliency.main(["--backbone", "alexnet", "--weights", path, "--image", str(image), "--method",
                              "gradcam", "--out", str(out)]) == 0
        model = models.build_imagenet_classifier("alexnet", weights=path)
    import json

    report = json.load(open(out / "saliency.json"))
    assert report["gradcam"]["layer"] == "conv5_relu" and report["input_size"] == [224, 224]
    assert np.load(out / "gradcam.npy").shape == (224, 224)
    from kerasimpl.images import read_image

    probs = np.asarray(model.predict(read_image(str(image), (224, 224))[None].astype("float32"), verbose=0))[0]
    assert report["target"] == int(probs.argmax()) and probs.shape == (1000,)


def dump_logits(folder):
    """Cross-backend job (tests/cross_backend.py): the first backend writes a random tiny AlexNet
    checkpoint and the images; each backend saves the logits that checkpoint gives it."""
    path = os.path.join(folder, "a.pth")
    if not os.path.exists(path):
        _save(_random_alexnet(6), path)
        np.save(os.path.join(folder, "x.npy"), np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32"))
    logits = _alexnet_from(path).predict(np.load(os.path.join(folder, "x.npy")), verbose=0)
    np.save(os.path.join(folder, f"{keras.backend.backend()}.npy"), np.asarray(logits))


@pytest.mark.slow
def test_the_same_checkpoint_gives_the_same_logits_on_torch_and_jax(other_backend):
    from cross_backend import job_folder

    folder = job_folder(other_backend[1], "test_alexnet:dump_logits")
    outs = {b: np.load(os.path.join(folder, f"{b}.npy")) for b in ("torch", "jax")}
    assert outs["torch"].shape == (2, 1000) and np.abs(outs["torch"]).max() > 0
    np.testing.assert_allclose(outs["jax"], outs["torch"], rtol=1e-4, atol=1e-5 * np.abs(outs["torch"]).max())
