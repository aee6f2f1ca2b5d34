"""Full-size benchmark: the real `experiments.compare` run at CIFAR-10 scale.

    python -m experiments.bench_full                          # the reference's 3 backbones, 60,000 images
    python -m experiments.bench_full --backbones mobilenetv3large --json out.json
    python -m experiments.bench_full --sweep                  # extraction img/s per batch size

Builds (once, under --work) an archive in the official CIFAR-10 format with
50,000 training and 10,000 test images resampled from the real subset
(`--subset`; or synthetic images without one), saves random weights for each
backbone as a local weights file, then runs

    python -m experiments.compare --data ARCHIVE --backbones B --weights FILE --epochs E

per backbone in its own process under `/usr/bin/time -v`, and prints one
row per backbone: extraction, head and evaluation seconds (from the run's
results.json), end-to-end wall time and peak resident memory (from time),
and images per second. Accuracy figures of such a run mean nothing (random
weights on resampled images); only the times and memory do.
"""

from __future__ import annotations

import experiments  # noqa: F401  (sets the default backend before keras loads)

import argparse
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
import time

import numpy as np

from experiments.bench.common import build_classifier, extraction_speed, markdown_table, write_log, write_report

REFERENCE_BACKBONES = ("mobilenetv3large", "mobilenetv2", "vgg16")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.bench_full", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default=",".join(REFERENCE_BACKBONES))
    p.add_argument("--subset", default=os.environ.get("KERASIMPL_CIFAR10_SUBSET"),
                   help="official-format archive whose images are resampled (default: $KERASIMPL_CIFAR10_SUBSET; "
                        "synthetic images without one)")
    p.add_argument("--train", type=int, default=50_000, help="training images in the built archive")
    p.add_argument("--test", type=int, default=10_000, help="test images in the built archive")
    p.add_argument("--epochs", type=int, default=3, help="head epochs of each compare run")
    p.add_argument("--work", default="runs/bench-full", help="folder for the archive, weights and runs")
    p.add_argument("--sweep", action="store_true",
                   help="instead: extraction img/s of each backbone at several batch sizes (32 px in, "
                        "resized inside), the compiled path compare uses")
    p.add_argument("--batches", default="8,16,32,64,128", help="batch sizes for --sweep")
    p.add_argument("--compare-args", default="", help="extra arguments for experiments.compare, quoted")
    p.add_argument("--json", help="also write the rows here")
    return p


def build_archive(path, subset, n_train, n_test, seed=0):
    """An official-format CIFAR-10 archive of `n_train` + `n_test` images."""
    from kerasimpl.data import load_dataset, synthetic_dataset

    src = load_dataset(subset) if subset else synthetic_dataset(num_train=2000, num_test=500, num_classes=10)
    rng = np.random.default_rng(seed)
    train = rng.integers(0, len(src.y_train), n_train)
    test = rng.integers(0, len(src.y_test), n_test)
    members = {"batches.meta": {b"label_names": [n.encode() for n in src.class_names]}}
    for i, part in enumerate(np.array_split(train, 5), start=1):
        members[f"data_batch_{i}"] = _batch(src.x_train[part], src.y_train[part], f"training batch {i} of 5")
    members["test_batch"] = _batch(src.x_test[test], src.y_test[test], "testing batch 1 of 1")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part"
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    os.replace(tmp, path)


def _batch(x, y, label):
    data = np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1))  # channel-major rows
    return {b"batch_label": label.encode(), b"labels": [int(v) for v in y], b"data": data}


def save_random_weights(name, path, image_size=224):
    from kerasimpl import models

    model = build_classifier(name, weights=None, image_size=image_size)
    models.backbone_model(model).save_weights(path)


def run_compare(name, archive, weights, out, epochs, extra):
    """One compare run under /usr/bin/time -v (where present): (wall s, peak RSS MB, log)."""
    timer = ["/usr/bin/time", "-v"] if os.path.exists("/usr/bin/time") else []
    cmd = [*timer, sys.executable, "-m", "experiments.compare", "--data", archive,
           "--backbones", name, "--weights", weights, "--epochs", str(epochs), "--out", out, "--plots-dir", "",
           *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        write_log(os.path.join(out, "compare.log"), log)
        own = proc.stdout + proc.stderr.split("\tCommand being timed:")[0]  # without /usr/bin/time's report
        lines = [line.strip() for line in own.splitlines() if line.strip()]
        last = [line for line in lines if "error" in line.lower()][-1:] or lines[-1:] or ["(no output)"]
        raise BenchError(f"compare of {name} failed (exit {proc.returncode}): {last[0]} "
                         f"(full log: {os.path.join(out, 'compare.log')})")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return wall, (int(rss.group(1)) / 1024 if rss else float("nan")), log


def row(name, out, wall, rss, n_images):
    try:
        with open(os.path.join(out, "results.json")) as f:
            (r,) = json.load(f)
    except (OSError, ValueError) as e:
        raise BenchError(f"compare of {name} left no single-row results.json in {out}: {e}") from None
    return {"backbone": name, "images": n_images, "extract_s": r["extract_seconds"], "head_s": r["head_seconds"],
            "eval_s": r["eval_seconds"], "wall_s": wall, "peak_rss_mb": rss,
            "extract_img_per_s": (n_images - r["num_test"]) / max(r["extract_seconds"], 1e-9),
            "saved_model_img_per_s": r["images_per_second"], "eval_path": r.get("eval_path")}


def sweep(names, batches, n=512):
    """Compiled extraction img/s per batch size, 32 px raw images in."""
    x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    rows = []
    for name in names:
        model = build_classifier(name, weights=None)
        for b in batches:
            rows.append({"backbone": name, "batch": b, "img_per_s": extraction_speed(model, x, b)})
            print(f"{name} batch {b}: {rows[-1]['img_per_s']:.1f} img/s", flush=True)
    return rows


class BenchError(Exception):
    """A setting or a run failed; main prints it as one line and exits 2."""


def parse_batches(text) -> list:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise BenchError(f"--batches must be comma-separated integers >= 1. Received: {text!r}") from None
    if not batches or min(batches) < 1:
        raise BenchError(f"--batches must be comma-separated integers >= 1. Received: {text!r}")
    return batches


def parse_backbones(text) -> list:
    from kerasimpl.backbones import list_backbones

    names = [b.strip().lower() for b in text.split(",") if b.strip()]
    unknown = [n for n in names if n not in list_backbones()]
    if not names or unknown:
        raise BenchError(f"unknown backbone {unknown or text!r}. Accepted: {', '.join(list_backbones())}")
    return names


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kerasimpl import runtime

    try:
        names = parse_backbones(args.backbones)
        rows = sweep(names, parse_batches(args.batches)) if args.sweep else full_runs(args, names)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = {"device": runtime.device_description(), "versions": runtime.versions(), "rows": rows,
              "settings": vars(args)}
    if args.json:
        write_report(args.json, report)
    print(f"device: {report['device']}")
    print(table(rows))
    return 0


def full_runs(args, names):
    archive = os.path.join(args.work, f"cifar-10-python-{args.train}-{args.test}.tar.gz")
    if not os.path.exists(archive):
        if args.train < 5 or args.test < 1:
            raise BenchError(f"--train must be >= 5 and --test >= 1. Received: {args.train}, {args.test}")
        print(f"building {archive} ({args.train} + {args.test} images)", flush=True)
        build_archive(archive, args.subset, args.train, args.test)
    rows = []
    for name in names:
        weights = os.path.join(args.work, f"{name}-random.weights.h5")
        if not os.path.exists(weights):
            save_random_weights(name, weights)
        out = os.path.join(args.work, f"run-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        print(f"running compare: {name} -> {out}", flush=True)
        wall, rss, log = run_compare(name, archive, weights, out, args.epochs, args.compare_args.split())
        write_log(os.path.join(out, "compare.log"), log)
        rows.append(row(name, out, wall, rss, args.train + args.test))
        print(table(rows[-1:]), flush=True)
    return rows


def table(rows) -> str:
    return markdown_table(rows)


if __name__ == "__main__":
    sys.exit(main())
