"""JAX data parallelism on simulated CPU devices equals the single-device run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r"""
import json, sys, numpy as np, keras
from kerasimpl import inference, models, runtime, training
from kerasimpl.data import synthetic_dataset, stratified_split
from kerasimpl.heads import HeadConfig
out, distribute = sys.argv[1], sys.argv[2] == "1"
devices = runtime.configure_distribution() if distribute else []
data = synthetic_dataset(num_train=120, num_test=30, num_classes=4, seed=0)
split = stratified_split(data.y_train, 0.25, 0)
keras.utils.set_random_seed(0)
model = models.build_classifier("smallcnn", 4, weights=None, head=HeadConfig((16,), 0.0),
                                backbone_kwargs={"widths": (8, 16)})
cfg = training.TrainConfig(epochs=2, batch_size=16, augment=(), patience=5, learning_rate=3e-3)
training.train_classifier(model, data, split, cfg, out, verbose=0)
probs = inference.predict(model, data.x_test, batch_size=16)  # 30 = 16 + 14: padded last batch
np.save(out + "/probs.npy", probs)
json.dump({"devices": len(devices), "multiple": runtime.batch_multiple()}, open(out + "/info.json", "w"))
"""


def _run(tmp_path, name, distribute):
    pytest.importorskip("jax")
    out = str(tmp_path / name)
    os.makedirs(out)
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, out, "1" if distribute else "0"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(os.path.join(out, "probs.npy")), json.load(open(os.path.join(out, "info.json")))


@pytest.mark.slow
def test_data_parallel_on_two_simulated_devices_equals_single_device(tmp_path):
    single, info1 = _run(tmp_path, "single", False)
    multi, info2 = _run(tmp_path, "multi", True)
    assert info1 == {"devices": 0, "multiple": 1} and info2 == {"devices": 2, "multiple": 2}
    assert single.shape == multi.shape == (30, 4)
    np.testing.assert_allclose(single, multi, atol=1e-4)


def test_distribute_on_torch_is_a_clear_error(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", "--data", "synthetic", "--distribute",
                           "--out", str(tmp_path), "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "KERAS_BACKEND=jax" in proc.stderr and "torchrun" in proc.stderr and "Traceback" not in proc.stderr
