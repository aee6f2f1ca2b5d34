"""Cross-backend jobs, run in ONE subprocess per other backend (not one per test).

A job is `module:function`, called with its own folder on each backend: it
writes what this backend computes (`*_torch.npy`, `*_jax.npy`, a saved
model) and may read what the other backend wrote before it. The
`other_backend` fixture (tests/conftest.py) runs every job in the test
process, then all of them in one subprocess on the other backend (torch <->
JAX), and hands the tests the folder, where they compare the two sides.

Run as a script (`python tests/cross_backend.py FOLDER`), it runs every job
on KERAS_BACKEND.
"""

import os
import sys

JOBS = (
    "test_alexnet:dump_logits",
    "test_artifacts:dump_round_trip",
    "test_saliency:dump",
    "test_saliency_methods:dump_all",
)


def job_folder(folder, job):
    """The folder of `job` ("module:function") inside the shared one."""
    return os.path.join(str(folder), job.replace(":", "-"))


def run_all(folder):
    """Every job on the active backend, each into its own folder."""
    import importlib

    for job in JOBS:
        module, function = job.split(":")
        os.makedirs(job_folder(folder, job), exist_ok=True)
        getattr(importlib.import_module(module), function)(job_folder(folder, job))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    run_all(sys.argv[1])
