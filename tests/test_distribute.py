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
from kerasimpl import artifacts, distributed, features, inference, models, training
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
    feats = features.extract_features(model, data.x_test, batch_size=8, verbose=0)  # shares 16 + 14 rows
    with distributed.local_model(model):
        found[kind] = inference.predict(model, data.x_test, batch_size=16)
    found[kind + "_features"] = feats
    found[kind + "_weights"] = np.concatenate([np.ravel(w) for w in model.get_weights()])
# Precise BatchNormalization statistics of one fresh model: each process runs its share of the batches, the sums
# are added up, so every process holds the single process's statistics.
from kerasimpl import precise_bn
keras.utils.set_random_seed(0)
fresh = models.build_classifier("smallcnn", 4, weights=None, head=HeadConfig((16,), 0.0), freeze_base=False,
                                backbone_kwargs={"widths": (8, 16)})
distributed.broadcast_weights(fresh)
found["population"] = np.concatenate([np.concatenate(pair) for pair in precise_bn.population_statistics(
    fresh, data.x_train, 16, indices=split.train)])  # 72 rows: 4 batches of 16, 2 on each of 2 processes
# A model without BatchNormalization or dropout: data parallelism is exactly the single process's math.
keras.utils.set_random_seed(0)
plain = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
                          keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                          keras.layers.Dense(4)])
training.compile_head(plain, 3e-3)
from kerasimpl.data import ArrayDataset
train = ArrayDataset(data.x_train, data.y_train, 16, shuffle=True, seed=0, indices=split.train,
                     **distributed.loader_options(split_batches=True))
val = ArrayDataset(data.x_train, data.y_train, 16, indices=split.val, **distributed.loader_options(split_batches=False))
training.fit_stage(plain, train, val, os.path.join(out, "plain"), "train", cfg, 3, verbose=0, data_parallel=True)
found["plain_weights"] = np.concatenate([np.ravel(w) for w in plain.get_weights()])
if world.writer:
    found["plain_history"] = np.array([[float(r[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")]
                                       for r in artifacts.read_csv(os.path.join(out, "plain", "history.csv"))])
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
    # No BatchNormalization: one global batch split over the processes is the single process's step, and the
    # logged loss and accuracy (averaged over the processes) are the global batch's.
    np.testing.assert_allclose(m["plain_weights"], s["plain_weights"], atol=2e-5)
    np.testing.assert_allclose(m["plain_history"], s["plain_history"], atol=2e-5)
    np.testing.assert_allclose(m["end_to_end"], s["end_to_end"], atol=end_to_end_atol)
    np.testing.assert_allclose(m["population"], s["population"], rtol=1e-5, atol=1e-6)
    return info


def _two_torch_processes(out, script, *args, **env):
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              "--no-python", sys.executable, "-c", script, *args], env=_env("torch", **env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]


def _two_jax_processes(out, script, *args, **env):
    addresses = f"127.0.0.1:{_free_port()},127.0.0.1:{_free_port()}"
    return [subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=_env("jax", KERAS_DISTRIBUTION_JOB_ADDRESSES=addresses,
                                                 KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                                                 KERAS_DISTRIBUTION_PROCESS_ID=str(i), **env))
            for i in range(2)]


# Each backend in its own processes, whatever the suite's backend: the slow set (CI's torch stage) runs both.
@pytest.mark.slow  # a single process and two more: about 30 s each on 2 cores
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_two_processes_match_one(tmp_path, backend):
    """Two processes on one machine equal one. torch: torchrun, gloo on loopback, DDP for the CNN trained end to
    end (close to one process: BatchNormalization sees each process's 8 rows, not 16; the same weights on both
    ranks). JAX: the documented multi-host route, KERAS_DISTRIBUTION_* on 127.0.0.1 with gloo CPU collectives
    (one global batch: the single process's numbers). Only rank 0 writes files."""
    if backend == "jax":
        pytest.importorskip("jax")
    single = _single(tmp_path, backend)
    out = tmp_path / "two"
    out.mkdir()
    launch = _two_jax_processes if backend == "jax" else _two_torch_processes
    _check(launch(out, SCRIPT, str(out), "1", OMP_NUM_THREADS="1"))
    (r0, info0), (r1, info1) = _load(out, 0), _load(out, 1)
    assert (info0["size"], info0["backend"], info1["rank"]) == (2, backend, 1)
    for key in ("end_to_end_weights", "plain_weights", "frozen_features", "population"):
        np.testing.assert_allclose(r1[key], r0[key], atol=1e-6)  # in step; features gathered on both
    _assert_like_single(single, (r0, info0), end_to_end_atol=1e-4 if backend == "jax" else 0.25)
    assert info1["writes"] == []
    assert {"features_train.npz", "history.csv", "train.weights.h5"} <= {os.path.basename(p) for p in info0["writes"]}


@pytest.mark.slow  # torchrun with two processes: 10 s
def test_a_failing_torch_process_ends_the_job_with_its_message(tmp_path):
    """A rank that raises ends the job (torchrun stops the others) with its error shown, instead of a hang."""
    script = ("from kerasimpl import distributed\nw = distributed.configure(timeout_s=20)\n"
              "if w.rank == 1:\n    raise RuntimeError('rank 1 failed on purpose')\n"
              "distributed.agree(1, 'anything')\n")
    start = time.perf_counter()
    (proc,) = _two_torch_processes(tmp_path, script)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "rank 1 failed on purpose" in err
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


@pytest.mark.slow  # a fresh interpreter runs compare: 6 s
def test_distribute_on_torch_without_torchrun_is_a_clear_error(tmp_path):
    env = {k: v for k, v in _env("torch").items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", "--data", "synthetic", "--distribute",
                           "--out", str(tmp_path), "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "torchrun --standalone --nproc_per_node=N" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_compare_under_torchrun_records_one_result_with_the_world_size(tmp_path):
    """The issue's command, small: two torch processes write one run folder, one result, world_size 2."""
    out = tmp_path / "run"
    (proc,) = _two_torch_processes(tmp_path, "import sys\nfrom experiments import compare\n"
                                   "sys.exit(compare.main(sys.argv[1:]))", "--preset", "smoke", "--data",
                                   "synthetic", "--backbones", "smallcnn", "--epochs", "1", "--distribute",
                                   "--out", str(out), "--quiet")
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    config = json.loads((out / "config.json").read_text())
    assert (config["world_size"], config["distributed_backend"]) == (2, "torch.distributed (gloo)")
    results = json.loads((out / "results.json").read_text())
    assert [r["backbone"] for r in results] == ["smallcnn"] and 0 <= results[0]["test_accuracy"] <= 1
    assert stdout.count("# Backbone comparison") == 1  # rank 0's log only


RESUME_SCRIPT = r"""
import os, sys, numpy as np, keras
from kerasimpl import distributed, models, training
from kerasimpl.data import synthetic_dataset, stratified_split
from kerasimpl.heads import HeadConfig
world = distributed.configure()
data = synthetic_dataset(num_train=96, num_test=30, num_classes=4, seed=0)
split = stratified_split(data.y_train, 0.25, 0)
cfg = training.TrainConfig(epochs=4, batch_size=16, augment=("flip", "translate"), patience=5, learning_rate=3e-3)

class Kill(keras.callbacks.Callback):  # rank 1 dies at the start of epoch 2 (after epoch 1's backup)
    def on_epoch_begin(self, epoch, logs=None):
        if sys.argv[2] == "kill" and epoch == 2 and world.rank == 1:
            os._exit(3)

keras.utils.set_random_seed(0)
model = models.build_classifier("smallcnn", 4, weights=None, head=HeadConfig((16,), 0.0), freeze_base=False,
                                backbone_kwargs={"widths": (8, 16)})
training.train_classifier(model, data, split, cfg, sys.argv[1], verbose=0, extra_callbacks=[Kill()])
np.save(os.path.join(sys.argv[1], f"weights{world.rank}.npy"),
        np.concatenate([np.ravel(w) for w in model.get_weights()]))
"""


@pytest.mark.slow
def test_a_killed_ddp_run_resumes_on_every_rank_and_finishes_as_uninterrupted(tmp_path):
    """Rank 1 killed mid-stage: torchrun ends the job; the rerun restores rank 0's backup on both ranks, at the
    same epoch, and ends with the uninterrupted run's weights and history (no row twice)."""
    def launch(folder, mode):
        (proc,) = _two_torch_processes(folder, RESUME_SCRIPT, str(folder), mode)
        _, err = proc.communicate(timeout=300)
        return proc.returncode, err

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert launch(whole, "run")[0] == 0
    code, _ = launch(resumed, "kill")
    assert code != 0 and (resumed / "backup_train" / "latest").read_text().strip() == "epoch-2-batch-0"
    code, err = launch(resumed, "run")
    assert code == 0, err[-3000:]
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(resumed / f"weights{rank}.npy"), np.load(whole / "weights0.npy"),
                                   atol=1e-6)
    rows = lambda folder: [line.split(",")[:4] for line in (folder / "history.csv").read_text().splitlines()]  # noqa
    assert [r[:2] for r in rows(resumed)] == [["stage", "epoch"]] + [["train", str(e)] for e in range(4)]
    np.testing.assert_allclose(np.array(rows(resumed)[1:], dtype=object)[:, 2:].astype(float),
                               np.array(rows(whole)[1:], dtype=object)[:, 2:].astype(float), atol=1e-6)
    assert not (resumed / "backup_train").exists()


def _resolved(*argv):
    from experiments import compare

    return compare.resolve(compare.build_parser().parse_args(["--data", "synthetic", *argv]))


def test_tune_and_a_batch_that_does_not_split_are_refused_before_anything_runs(tmp_path, monkeypatch):
    from experiments import compare
    from kerasimpl import comparison_run, distributed
    from kerasimpl.run_config import ConfigError

    with pytest.raises(ConfigError, match="tune runs its trials in one process") as refused:
        _resolved("--tune", "2", "--distribute")
    assert refused.value.render(compare.flag).startswith("--tune runs its trials in one process")
    monkeypatch.setattr(distributed, "configure", lambda timeout_s: distributed.World("torch", 0, 3))
    config = _resolved("--batch-size", "64", "--distribute", "--out", str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="batch_size is the global batch.*Received: 64 for 3 processes"):
        comparison_run.run_comparison(config)
    assert not (tmp_path / "r").exists()
    accepted = comparison_run._distribution(_resolved("--batch-size", "63", "--distribute"))  # 3 x 21: no error
    alone = comparison_run._distribution(_resolved("--batch-size", "64"))  # 64 on 1 process, configure() unused
    assert (accepted.size, alone.size, alone.rank) == (3, 1, 0)
