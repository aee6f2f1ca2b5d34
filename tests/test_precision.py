"""--precision: how `auto` decides, Keras' mixed policies for training, float32 saved models."""

import glob
import json
import os
import warnings

import keras
import numpy as np
import pytest

from kerasimpl import models, precision, training
from kerasimpl.artifacts import load_model, save_model
from kerasimpl.heads import HeadConfig

ON_TORCH = keras.backend.backend() == "torch"


@pytest.mark.parametrize("device, capability, flags, expected", [
    ("cpu", None, {"avx2", "fma", "amx_bf16", "amx_tile"}, "bfloat16"),  # Sapphire Rapids
    ("cpu", None, {"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),  # Cooper Lake, Zen 4
    ("cpu", None, {"avx2", "fma", "f16c"}, "float32"),  # AVX2 only: bf16 is emulated, slower
    ("cpu", None, {"avx512f", "avx512bw"}, "float32"),  # AVX-512 without BF16
    ("cpu", None, set(), "float32"),  # flags unreadable
    ("cuda", (8, 0), set(), "bfloat16"),  # A100
    ("cuda", (9, 0), set(), "bfloat16"),  # H100
    ("cuda", (7, 5), {"amx_bf16"}, "float32"),  # T4: the GPU decides, not the host CPU
    ("cuda", None, set(), "float32"),
])
def test_auto_known_answers(device, capability, flags, expected):
    assert precision.resolve("auto", device=device, capability=capability, flags=flags) == expected


def test_explicit_choices_and_errors():
    assert precision.resolve("bfloat16", device="cpu", flags=set()) == "bfloat16"  # asked for: honoured
    assert precision.resolve("float16", device="cuda", capability=(7, 5)) == "float16"
    with pytest.raises(ValueError, match="float16' needs a CUDA GPU.*'cpu'"):
        precision.resolve("float16", device="cpu")
    with pytest.raises(ValueError, match="Received: 'fp8'.*Accepted"):
        precision.resolve("fp8", device="cpu")


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16 avx512_bf16\n\nprocessor\t: 1\n")
    assert precision.cpu_flags(str(info)) == {"fpu", "avx2", "amx_bf16", "avx512_bf16"}
    assert precision.cpu_flags(str(tmp_path / "missing")) == set()
    assert precision.auto_precision("cpu", flags=precision.cpu_flags(str(info))) == "bfloat16"


def test_keras_policy_is_scoped_and_restored():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError):
        with precision.keras_policy("bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == before


def tiny(policy_precision="float32"):
    with precision.keras_policy(policy_precision), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return models.build_classifier("smallcnn", 4, input_shape=(16, 16, 3), weights=None,
                                       backbone_kwargs={"widths": (4, 8)}, head=HeadConfig((8,), 0.1),
                                       freeze_base=False)


def test_mixed_float16_compiles_with_keras_loss_scaling():
    """Keras wraps the optimizer in its LossScaleOptimizer under mixed_float16 (not under bfloat16)."""
    for p, scaled in (("float16", True), ("bfloat16", False), ("float32", False)):
        model = tiny(p)
        training.compile_full(model, 1e-3)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == scaled, p
        assert model.output.dtype == "float32"  # LabeledSoftmax computes the probabilities in float32


def test_trained_under_mixed_bfloat16_saves_a_float32_model(tmp_path):
    """Train under mixed_bfloat16, save the float32 copy, reload under float32: same weights, float32 maths."""
    model = tiny("bfloat16")
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 16, 16, 3)).astype("uint8")
    y = rng.integers(0, 4, 32)
    training.compile_full(model, 1e-2)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    copy = precision.float32_copy(model)
    assert all(layer.compute_dtype == "float32" for layer in copy.layers)
    path = str(tmp_path / "model.keras")
    save_model(copy, path)
    loaded = load_model(path)
    assert all(layer.compute_dtype == "float32" for layer in loaded.layers)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with precision.keras_policy("float32"):
        reference = tiny("float32")
    reference.set_weights(model.get_weights())
    got = np.asarray(loaded.predict_on_batch(x))
    np.testing.assert_allclose(got, np.asarray(reference.predict_on_batch(x)), rtol=1e-5, atol=1e-7)
    mixed = np.asarray(model.predict_on_batch(x)).astype(np.float32)
    assert 0 < np.abs(got - mixed).max() < 0.05  # the mixed model really computed in bfloat16, and close
    # save_model writes the float32 copy itself (checkpoints go through it): the same float32 file.
    save_model(model, str(tmp_path / "direct.keras"))
    direct = load_model(str(tmp_path / "direct.keras"))
    assert {layer.compute_dtype for layer in direct.layers} == {"float32"}
    np.testing.assert_array_equal(np.asarray(direct.predict_on_batch(x)), got)
    # keep_policy=True keeps the mixed policy in the file, still loadable.
    save_model(model, str(tmp_path / "mixed.keras"), keep_policy=True)
    again = load_model(str(tmp_path / "mixed.keras"))
    assert "bfloat16" in {layer.compute_dtype for layer in again.layers}
    np.testing.assert_allclose(np.asarray(again.predict_on_batch(x)).astype(np.float32), got, atol=0.05)


def test_precision_defaults_to_float32_whatever_the_cpu():
    """Reduced precision is opt-in: the CLIs' default and resolve()'s default are float32 on any CPU flags."""
    from experiments import compare, infer, saliency

    assert precision.resolve(device="cpu", flags={"avx512_bf16", "amx_bf16"}) == "float32"
    for module in (infer, saliency):
        assert module.build_parser().get_default("precision") == "float32", module.__name__
    # compare's defaults are RunConfig's: a run without --precision asks for and runs float32
    config = compare.resolve(compare.build_parser().parse_args(["--data", "synthetic"]))
    assert (config.precision_requested, config.precision) == ("float32", "float32")


def test_features_cache_key_holds_the_precision(tmp_path, synthetic):
    model = tiny()
    split = synthetic.split(0.2, 0)
    idx = split.val[:8]
    for p in ("float32", "bfloat16"):
        cfg = training.TrainConfig(precision=p, inference_batch_size=4)
        training.split_features(model, synthetic, idx, "val", str(tmp_path), cfg, 0)
        with np.load(os.path.join(tmp_path, "features_train.npz")) as z:  # validation rows: the training pool's file
            assert json.loads(str(z["key"]))["precision"] == p


def test_train_config_needs_a_resolved_precision():
    with pytest.raises(ValueError, match="precision must be resolved.*'auto'"):
        training.TrainConfig(precision="auto")


def test_compare_records_and_uses_the_precision(tmp_path):
    """--precision bfloat16: config.json and results.json say so; the saved model is float32."""
    from experiments import compare

    out = str(tmp_path / "run")
    argv = ["--data", "synthetic", "--classes", "2", "--backbones", "smallcnn", "--epochs", "1", "--batch-size", "32",
            "--inference-batch-size", "8", "--quiet", "--plots-dir", "", "--hidden", "8", "--precision", "bfloat16",
            "--out", out]
    assert compare.main(argv) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert (config["precision_requested"], config["precision"]) == ("bfloat16", "bfloat16")
    (result,) = json.load(open(os.path.join(out, "results.json")))
    assert result["precision"] == "bfloat16"
    expect = "compiled torch (bfloat16)" if ON_TORCH else "compiled jax"
    assert expect in result["throughput_path"]
    files = sorted(glob.glob(os.path.join(out, "**", "*.keras"), recursive=True))
    assert os.path.join(out, "smallcnn", "model.keras") in files and any("best_" in f for f in files), files
    for f in files:  # the model and every checkpoint reload as float32
        assert {layer.compute_dtype for layer in load_model(f).layers} == {"float32"}, f


def test_compare_float16_on_cpu_is_one_clear_line(tmp_path, capsys):
    from experiments import compare

    if precision.accelerator()[0] == "cuda":
        pytest.skip("a CUDA GPU runs float16")
    code = compare.main(["--data", "synthetic", "--backbones", "smallcnn", "--precision", "float16",
                         "--out", str(tmp_path / "r"), "--quiet", "--plots-dir", ""])
    assert code == 2 and "error: precision 'float16' needs a CUDA GPU" in capsys.readouterr().err


def test_infer_precision_flag(tmp_path, capsys):
    """infer --precision bfloat16 gives float32's probabilities to bfloat16 tolerance; float16 on a CPU is refused."""
    from PIL import Image

    from experiments import infer

    model = tiny()
    path = str(tmp_path / "m.keras")
    save_model(model, path)
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    runs = {}
    for p in ("float32", "bfloat16"):
        assert infer.main(["--model", path, "--json", "--top-k", "4", "--precision", p, str(tmp_path)]) == 0
        runs[p] = {r["file"]: {t["index"]: t["probability"] for t in r["top"]}
                   for r in json.loads(capsys.readouterr().out)}
    assert len(runs["float32"]) == 3 and runs["float32"].keys() == runs["bfloat16"].keys()
    for f, probs in runs["float32"].items():
        for k, v in probs.items():
            assert runs["bfloat16"][f][k] == pytest.approx(v, abs=0.02)
    if precision.accelerator()[0] != "cuda":
        assert infer.main(["--model", path, "--precision", "float16", str(tmp_path)]) == 2
        assert "error: precision 'float16' needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("backend,environment", [("jax", "torch"), ("jax", None)])
def test_the_accelerator_is_asked_of_kerass_own_backend_not_the_environment(monkeypatch, backend, environment):
    """A backend chosen in ~/.keras/keras.json leaves KERAS_BACKEND unset (or another value): the device
    is still the one Keras computes on (here a fake JAX GPU, compute capability 9.0)."""
    import sys
    import types

    gpu = types.SimpleNamespace(platform="gpu", compute_capability="9.0")
    monkeypatch.setitem(sys.modules, "jax", types.SimpleNamespace(devices=lambda: [gpu]))
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    if environment is None:
        monkeypatch.delenv("KERAS_BACKEND", raising=False)
    else:
        monkeypatch.setenv("KERAS_BACKEND", environment)
    assert precision.accelerator() == ("cuda", (9, 0))
