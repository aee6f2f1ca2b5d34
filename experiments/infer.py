"""Classify images with a saved kerasimpl model.

    python -m experiments.infer --model runs/.../mobilenetv2/model.keras photo.jpg folder/
    python -m experiments.infer --model model.keras --json --top-k 5 images/

Images of any size and mode are converted to RGB and resized to the model's
input. Exit status: 0 all classified, 2 some file (or the model) could not be.
"""

from __future__ import annotations

import experiments  # noqa: F401  (sets the default backend before keras loads)

import argparse
import json
import sys

from kerasimpl.precision import PRECISIONS, describe_auto


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a .keras file saved by kerasimpl (or any Keras classifier)")
    p.add_argument("--top-k", type=int, default=3, help="classes to report per image (default 3)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="compute precision of the forward pass (default float32). " + describe_auto())
    p.add_argument("images", nargs="+", help="image files or folders of images (searched recursively, hidden files skipped)")
    return p


def classify(model, paths, top_k=3, batch_size=32, precision="float32") -> list:
    """One dict per path, in order: `{"file", "top": [...]}` or `{"file", "error"}`.

    The model runs on the fast path (`kerasimpl.inference.Forward`: compiled
    on torch at `precision`, a resolved one; Keras elsewhere).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: {batch_size}")
    import numpy as np

    from kerasimpl.inference import Forward

    from kerasimpl.images import ImageError, read_image
    from kerasimpl.models import class_names_of

    names = class_names_of(model)
    size = tuple(model.input_shape[1:3])
    results, good, arrays = [], [], []
    for path in paths:
        try:
            arrays.append(read_image(path, size))
            good.append(len(results))
            results.append({"file": path})
        except ImageError as e:
            results.append({"file": path, "error": str(e)})
    k = max(1, min(top_k, len(names)))
    forward = Forward(model, precision)
    for start in range(0, len(arrays), batch_size):
        probs = forward(np.stack(arrays[start:start + batch_size]))
        for row, i in zip(probs, good[start:start + batch_size]):
            order = np.argsort(-row)[:k]
            results[i]["top"] = [{"index": int(j), "label": names[j], "probability": float(row[j])} for j in order]
    return results


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kerasimpl.artifacts import ArtifactError, load_model
    from kerasimpl.images import list_images

    for flag, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size)):
        if value < 1:
            print(f"error: {flag} must be >= 1. Received: {value}", file=sys.stderr)
            return 2
    from kerasimpl.precision import resolve

    try:
        precision = resolve(args.precision)
        model = load_model(args.model)
    except (ArtifactError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = classify(model, list_images(args.images, recursive=True), args.top_k, args.batch_size, precision)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                print(f"{r['file']}: ERROR {r['error']}")
            else:
                tops = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in r["top"])
                print(f"{r['file']}: {tops}")
    bad = [r for r in results if "error" in r]
    if bad:
        print(f"{len(bad)} of {len(results)} images could not be classified", file=sys.stderr)
    return 2 if bad or not results else 0


if __name__ == "__main__":
    sys.exit(main())
