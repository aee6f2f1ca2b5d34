"""AlexNet's experiment rows in `compare`: NAME:VARIANT rows, what each trains, the offline preset."""

import csv
import json
import os
import re
import warnings

import keras
import numpy as np
import pytest

from experiments import compare
from kerasimpl import checkpoints, comparison, models, training
from kerasimpl.heads import HeadConfig
from kerasimpl.saliency import layers as saliency_layers
from tiny import TINY_ALEXNET


@pytest.mark.parametrize("text,message", [
    ("alexnet:finetuned", "Unknown row variant .*Accepted: scratch, lastlayer, frozen, finetune"),
    ("smallcnn:finetune", "has no pretrained weights. Accepted for it: smallcnn:scratch"),
    ("smallcnn:lastlayer", "has no pretrained weights. Accepted for it: smallcnn:scratch"),
    ("vgg16:lastlayer", "Accepted: alexnet:lastlayer"),
    ("alexnett:scratch", "Unknown backbone.*Accepted: alexnet"),
])
def test_bad_rows_say_what_is_accepted(text, message):
    with pytest.raises(ValueError, match=message):
        comparison.parse_row(text)


def test_rows_map_to_the_experiment_set_ups():
    head = HeadConfig((256,), 0.3)
    assert comparison.parse_row(" AlexNet:LastLayer ") == ("alexnet", "lastlayer")
    scratch = comparison.row_run("alexnet", "scratch", "w.pth", 64, head)
    assert (scratch.weights, scratch.end_to_end, scratch.keep_top_hidden, scratch.head) == (
        None, True, True, HeadConfig((), 0.0))  # the whole torchvision AlexNet, N-wide last layer
    last = comparison.row_run("alexnet", "lastlayer", "w.pth", 64, head)
    assert (last.weights, last.end_to_end, last.keep_top_hidden, last.train_top_hidden, last.head) == (
        "w.pth", False, True, True, HeadConfig((), 0.0))
    plain = comparison.row_run("alexnet", None, "w.pth", 64, head)
    assert (plain.keep_top_hidden, plain.train_top_hidden, plain.head) == (False, False, head)
    assert comparison.row_run("vgg16", "scratch", "imagenet", 64, head).head == head  # no top hidden: own head


def _weights(layers_):
    return [keras.ops.convert_to_numpy(w).copy() for layer in layers_ for w in layer.weights]


def test_lastlayer_trains_fc6_fc7_and_the_new_layer_never_the_features(tmp_path):
    from kerasimpl.alexnet import AlexNet

    keras.utils.set_random_seed(0)
    path = checkpoints.save_state_dict(AlexNet(input_shape=(63, 63, 3), **TINY_ALEXNET),
                                       checkpoints.get_source("torchvision-alexnet"), str(tmp_path / "a.pth"))
    model = models.build_classifier("alexnet", 4, input_shape=(32, 32, 3), image_size=63, weights=path,
                                    keep_top_hidden=True, train_top_hidden=True, head=HeadConfig((), 0.0),
                                    backbone_kwargs=TINY_ALEXNET)
    convs = [model.get_layer(f"conv{i}") for i in range(1, 6)]
    top = [model.get_layer("fc6"), model.get_layer("fc7"), model.get_layer(models.HEAD)]
    assert not any(layer.trainable for layer in convs) and all(layer.trainable for layer in top)
    counts = models.parameter_counts(model)
    d6, d7 = TINY_ALEXNET["dense"]
    assert counts["trainable"] == 9216 * d6 + d6 + d6 * d7 + d7 + d7 * 4 + 4
    before_convs, before_top = _weights(convs), _weights(top)
    training.compile_full(model, 1e-3)
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("uint8")
    model.train_on_batch(x, np.arange(8) % 4)
    for a, b in zip(before_convs, _weights(convs)):
        np.testing.assert_array_equal(a, b)
    assert all(not np.array_equal(a, b) for a, b in zip(before_top, _weights(top)))
    with pytest.raises(ValueError, match="train_top_hidden needs keep_top_hidden=True.*Accepted: alexnet"):
        models.build_classifier("alexnet", 4, image_size=63, weights=path, train_top_hidden=True)


@pytest.mark.parametrize("argv,message", [
    (["--backbones", "alexnet:lastlayer", "--weights", "none"], "NAME:lastlayer keeps pretrained layers"),
    (["--backbones", "alexnet:scratch,alexnet:scratch"], "A row appears twice"),
    (["--backbones", "vgg16", "--weights", "random-checkpoint"], "fits the rows of one of alexnet, efficientnetlite0"),
    (["--backbones", "alexnet:lastlayr"], "Unknown row variant"),
])
def test_bad_rows_on_the_command_line_are_one_clear_line(tmp_path, capsys, argv, message):
    code = compare.main(["--data", "synthetic", "--out", str(tmp_path / "r"), "--quiet", "--plots-dir", "", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err)


def test_alexnet_smoke_preset_needs_data(capsys):
    assert compare.main(["--preset", "alexnet-smoke", "--quiet"]) == 2
    assert "pass --data PATH" in capsys.readouterr().err


@pytest.mark.slow
def test_alexnet_smoke_preset_pieces_at_tiny_scale(tmp_path):
    """The preset on synthetic data, 63 px, one epoch: both rows in one table, the
    random torchvision-format checkpoint in the run folder feeding the lastlayer
    row, a Grad-CAM gallery per row."""
    out, plots = str(tmp_path / "run"), str(tmp_path / "plots")
    argv = ["--preset", "alexnet-smoke", "--data", "synthetic", "--epochs", "1", "--image-size", "63",
            "--gradcam-gallery", "2", "--lr", "1e-4", "--out", out, "--quiet", "--plots-dir", plots]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert compare.main(argv) == 0
    results = json.load(open(os.path.join(out, "results.json")))
    assert [r["run"] for r in results] == ["alexnet-scratch", "alexnet-lastlayer"]
    scratch, last = results
    assert scratch["trained"].startswith("end-to-end") and scratch["weights"] is None
    assert last["trained"].startswith("frozen features + pretrained top trained")
    checkpoint = os.path.join(out, "alexnet-random-init.pth")
    assert last["weights"] == checkpoint and os.path.exists(checkpoint)
    assert {k: tuple(v.shape) for k, v in checkpoints.read_state_dict(checkpoint).items()}[
        "classifier.1.weight"] == (4096, 9216)
    # torchvision's alexnet(num_classes=10): 61,100,840 - 4096 * 990 - 990 parameters, all trained
    assert scratch["params_trainable"] == scratch["params_total"] == 57_044_810
    assert last["params_trainable"] == 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10
    rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
    assert len(rows) == 2
    config = json.load(open(os.path.join(out, "config.json")))
    assert "torchvision's AlexNet (alexnet-owt-7be5be79.pth format) checkpoint stand in" in config["weights_note"]
    assert "checkpoint stand in for its ImageNet file" in open(os.path.join(out, "results.md")).read()
    for label in ("alexnet-scratch", "alexnet-lastlayer"):
        report = json.load(open(os.path.join(out, label, "gradcam", "saliency.json")))
        assert len(report["images"]) == 2 and report["methods"]["gradcam"]["options"]["layer"] == "conv5_relu"
        assert os.path.getsize(os.path.join(plots, "alexnet-smoke", f"{label}_gradcam_gallery.png")) > 5_000
    # Both models' curves on one figure, and the run reads back as one run of the cross-run comparison.
    assert os.path.getsize(os.path.join(out, "plots", "learning_curves.png")) > 10_000
    from kerasimpl import crossrun

    run = crossrun.read_run(out)
    assert [m["model"] for m in run["models"]] == ["alexnet-scratch", "alexnet-lastlayer"]


def test_saved_alexnet_with_its_top_gets_conv5_relu_for_gradcam_without_naming_the_backbone(tmp_path):
    from kerasimpl.artifacts import load_model, save_model

    model = models.build_classifier("alexnet", 3, input_shape=(32, 32, 3), image_size=63, weights=None,
                                    freeze_base=False, keep_top_hidden=True, head=HeadConfig((), 0.0),
                                    backbone_kwargs=TINY_ALEXNET)
    save_model(model, str(tmp_path / "m.keras"))
    loaded = load_model(str(tmp_path / "m.keras"))
    assert saliency_layers.gradcam_layer_name(loaded) == "conv5_relu"  # not fc7_relu, a flat vector
    assert len(saliency_layers.feature_map(loaded, saliency_layers.gradcam_layer_name(loaded)).shape) == 4

