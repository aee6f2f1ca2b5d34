"""The extraction section on other Keras backends: one process per backend (`KERAS_BACKEND` is per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile


def other_backends(backends, args):
    """The extraction rows of `backends` other than this one, each from its own `python -m experiments.bench`."""
    from kerasimpl import runtime

    rows = []
    for name in backends:
        if name == runtime.backend():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "rows.json")
            argv = [sys.executable, "-m", "experiments.bench", "--sections", "extraction", "--backbones",
                    args.backbones, "--image-size", str(args.image_size), "--precision", "float32", "--json", out]
            argv += [f"--{k}={v}" for k, v in (("batch", args.batch), ("repeats", args.repeats)) if v]
            argv += ["--quick"] if args.quick else []
            print(f"[bench] extraction on {name}: {' '.join(argv[1:])}", flush=True)
            proc = subprocess.run(argv, env={**os.environ, "KERAS_BACKEND": name}, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"the {name} extraction run failed:\n{proc.stderr[-2000:]}")
            with open(out) as f:
                rows += json.load(f)["extraction"]
    return rows
