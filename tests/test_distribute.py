"""Data parallelism (kerasimpl.distributed) equals the single process: torch processes under torchrun
(gloo on loopback), JAX processes joined by KERAS_DISTRIBUTION_* (gloo CPU collectives), and JAX
simulated devices in one process."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

# One script for every set-up: a frozen random base (features extracted, sharded across processes, and a head
# fitted on them) and the same CNN trained end to end (DDP on torch), on tiny synthetic data.
SCRIPT = r"""
import json, os, sys, numpy as np, keras
from kerasimpl import artifacts, distributed, evaluation, features, models, training
from kerasimpl.data import synthetic_dataset, stratified_split
from kerasimpl.heads import HeadConfig
out, distribute = sys.argv[1], sys.argv[2] == "1"
world = distributed.configure() if distribute else distributed.world()
writes = []  # files this process writes through kerasimpl.artifacts (rank 0 only)
original = artifacts.atomic_path
for module in (artifacts, features):  # every kerasimpl writer goes through atomic_path
    module.atomic_path = lambda path, *a, **k: (writes.append(os.fspath(path)), original(path, *a, **k))[1]
data = synthetic_dataset(num_train=96, num_test=30, num_classes=4, seed=0)
split = stratified_split(data.y_train, 0.25, 0)
cfg = training.TrainConfig(epochs=2, batch_size=16, augment=(), patience=5, learning_rate=3e-3)
found = {}
for kind in ("frozen", "end_to_end"):
    keras.utils.set_random_seed(0)
    model = models.build_classifier("smallcnn", 4, weights=None, head=HeadConfig((16,), 0.0),
                                    freeze_base=kind == "frozen", backbone_kwargs={"widths": (8, 16)})
    training.train_classifier(model, data, split, cfg, os.path.join(out, kind), verbose=0)
    feats = features.extract_features(model, data.x_test, batch_size=8, verbose=0)  # 30 rows: shares 15 + 15
    with distributed.local_model(model):
        found[kind] = evaluation.predict_proba(model, data.x_test, batch_size=16)
    found[kind + "_features"] = feats
    found[kind + "_weights"] = np.concatenate([np.ravel(w) for w in model.get_weights()])
np.savez(os.path.join(out, f"rank{world.rank}.npz"), **found)
json.dump({"rank": world.rank, "size": world.size, "backend": world.backend, "writes": writes},
          open(os.path.join(out, f"rank{world.rank}.json"), "w"))
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(backend, **extra):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path, **extra}


def _check(procs):
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (err or out)[-4000:]


def _load(folder, rank=0):
    with np.load(os.path.join(folder, f"rank{rank}.npz")) as z:
        arrays = dict(z)
    with open(os.path.join(folder, f"rank{rank}.json")) as f:
        return arrays, json.load(f)


def _single(tmp_path, backend, **env):
    out = tmp_path / "single"
    out.mkdir()
    _check([subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), "0"], env=_env(backend, **env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)])
    return _load(out)


def _assert_like_single(single, multi, end_to_end_atol):
    (s, _), (m, info) = single, multi
    # Frozen base: the same features and the same head, hence the same test predictions and accuracy.
    np.testing.assert_allclose(m["frozen_features"], s["frozen_features"], atol=1e-5)
    np.testing.assert_allclose(m["frozen"], s["frozen"], atol=1e-4)
    assert (m["frozen"].argmax(1) == s["frozen"].argmax(1)).all()
    np.testing.assert_allclose(m["end_to_end"], s["end_to_end"], atol=end_to_end_atol)
    return info


def test_torch_two_processes_match_one(tmp_path):
    """torchrun, 2 CPU processes (gloo): the frozen path gives the same features and predictions as one process;
    the DDP-trained CNN holds the same weights on both ranks, close to the single process's (BatchNormalization
    sees each process's 8 rows instead of 16); only rank 0 writes files."""
    single = _single(tmp_path, "torch")
    out = tmp_path / "two"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--no-python",
           sys.executable, "-c", SCRIPT, str(out), "1"]
    _check([subprocess.Popen(cmd, env=_env("torch", OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)])
    (r0, info0), (r1, info1) = _load(out, 0), _load(out, 1)
    assert (info0["size"], info0["backend"], info1["rank"]) == (2, "torch", 1)
    np.testing.assert_array_equal(r0["end_to_end_weights"], r1["end_to_end_weights"])  # DDP kept them in step
    np.testing.assert_array_equal(r0["frozen_features"], r1["frozen_features"])  # gathered: all rows on each
    _assert_like_single(single, (r0, info0), end_to_end_atol=0.25)
    assert info1["writes"] == []
    assert {"features_train.npz", "history.csv", "train.weights.h5"} <= {os.path.basename(p) for p in info0["writes"]}
    assert np.abs(r0["end_to_end_weights"] - single[0]["end_to_end_weights"]).max() < 0.2


def test_jax_two_processes_match_one(tmp_path):
    """JAX's documented multi-host route on one machine: two processes on 127.0.0.1 joined through
    KERAS_DISTRIBUTION_* (CPU collectives: gloo) give the single process's features and predictions."""
    pytest.importorskip("jax")
    single = _single(tmp_path, "jax")
    out = tmp_path / "two"
    out.mkdir()
    addresses = f"127.0.0.1:{_free_port()},127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), "1"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=_env("jax", KERAS_DISTRIBUTION_JOB_ADDRESSES=addresses,
                                       KERAS_DISTRIBUTION_NUM_PROCESSES="2", KERAS_DISTRIBUTION_PROCESS_ID=str(i)))
             for i in range(2)]
    _check(procs)
    (r0, info0), (r1, info1) = _load(out, 0), _load(out, 1)
    assert (info0["size"], info0["backend"], info1["rank"]) == (2, "jax", 1)
    info = _assert_like_single(single, (r0, info0), end_to_end_atol=1e-4)  # one global batch: the same math
    np.testing.assert_allclose(r1["end_to_end"], r0["end_to_end"], atol=1e-6)
    assert info1["writes"] == [] and "history.csv" in {os.path.basename(p) for p in info["writes"]}


def test_a_failing_torch_process_ends_the_job_with_its_message(tmp_path):
    """A rank that raises ends the job (torchrun stops the others) with its error shown, instead of a hang."""
    script = ("import sys, time\nfrom kerasimpl import distributed\nw = distributed.configure(timeout_s=20)\n"
              "if w.rank == 1:\n    raise RuntimeError('rank 1 failed on purpose')\n"
              "distributed.agree(1, 'anything')\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "--no-python", sys.executable, "-c", script], env=_env("torch"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "rank 1 failed on purpose" in proc.stderr
    assert time.perf_counter() - start < 60


@pytest.mark.slow
def test_data_parallel_on_two_simulated_devices_equals_single_device(tmp_path):
    """JAX on one host, two (simulated) devices in one process: the same results as one device."""
    pytest.importorskip("jax")
    single = _single(tmp_path, "jax")
    out = tmp_path / "two"
    out.mkdir()
    _check([subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=_env("jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"))])
    multi = _load(out)
    assert (multi[1]["size"], multi[1]["backend"]) == (1, "jax")
    _assert_like_single(single, multi, end_to_end_atol=1e-4)


def test_distribute_on_torch_without_torchrun_is_a_clear_error(tmp_path):
    env = {k: v for k, v in _env("torch").items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", "--data", "synthetic", "--distribute",
                           "--out", str(tmp_path), "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "torchrun --standalone --nproc_per_node=N" in proc.stderr and "Traceback" not in proc.stderr
