"""Explain one image: occlusion sensitivity and Grad-CAM, maps and overlay.

    python -m experiments.saliency --backbone mobilenetv2 --weights imagenet --image cat.jpg --out out/
    python -m experiments.saliency --model runs/.../smallcnn/model.keras --image frog.png --label 6 --out out/

Writes OUT/occlusion.npy (target probability per mask position),
OUT/gradcam.npy (input height x width, in [0, 1]), OUT/overlay.png and
OUT/saliency.json (target, probabilities, settings, optional quality).
Occlusion defaults (30 px patch, stride 20) are for a 224 px input; for
smaller model inputs they scale with it (32 px: patch 4, stride 3).
"""

from __future__ import annotations

import experiments  # noqa: F401  (sets the default backend before keras loads)

import argparse
import os
import sys


def build_parser():
    from kerasimpl.backbones import list_backbones

    p = argparse.ArgumentParser(prog="python -m experiments.saliency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a .keras classifier saved by kerasimpl")
    src.add_argument("--backbone", help=f"an ImageNet classifier: {', '.join(list_backbones())}")
    p.add_argument("--weights", default="imagenet", help="with --backbone: imagenet, none, or a weights file path")
    p.add_argument("--image", required=True, help="any image file (converted to RGB, resized to the model input)")
    p.add_argument("--label", type=int, help="class index to explain (default: the top-1 prediction)")
    p.add_argument("--method", choices=("occlusion", "gradcam", "both"), default="both")
    p.add_argument("--layer", help="Grad-CAM layer (default: the last convolutional feature map)")
    p.add_argument("--patch", type=int, help="occlusion square side in input pixels (default 30 at 224 px)")
    p.add_argument("--stride", type=int, help="occlusion stride (default 20 at 224 px)")
    p.add_argument("--fill", type=float, default=0.0, help="value of masked pixels (0 = black)")
    p.add_argument("--batch-size", type=int, default=100, help="masked copies per forward pass")
    p.add_argument("--quality", action="store_true",
                   help="also deletion/insertion areas and the model-randomization check")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kerasimpl.artifacts import ArtifactError
    from kerasimpl.images import ImageError

    try:
        return run(args)
    except (ArtifactError, ImageError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def load(args):
    from kerasimpl import models
    from kerasimpl.artifacts import load_model

    if args.model:
        return load_model(args.model), None
    weights = None if str(args.weights).lower() == "none" else args.weights
    return models.build_imagenet_classifier(args.backbone, weights=weights), args.backbone


def run(args) -> int:
    import numpy as np

    from kerasimpl import models, plotting
    from kerasimpl.artifacts import save_figure, write_bytes, write_json
    from kerasimpl.images import read_image
    from kerasimpl.saliency import GradCAM, Occlusion

    model, backbone = load(args)
    h, w = (int(d) for d in model.input_shape[1:3])
    image = read_image(args.image, (h, w)).astype("float32")
    probs = np.asarray(model.predict(image[None], verbose=0))[0]
    names = models.class_names_of(model)
    target = int(probs.argmax()) if args.label is None else args.label
    if not 0 <= target < len(names):
        raise ValueError(f"--label must lie in [0, {len(names)}). Received: {args.label}")
    print("top classes:", ", ".join(f"{names[i]} ({i}) {probs[i]:.1%}" for i in np.argsort(-probs)[:5]))
    print(f"explaining: {names[target]} ({target}), p={probs[target]:.3f}")
    patch = args.patch or max(1, round(30 * h / 224))
    stride = args.stride or max(1, round(20 * h / 224))
    report = {"image": args.image, "target": target, "label": names[target], "probability": float(probs[target]),
              "input_size": [h, w], "top5": [int(i) for i in np.argsort(-probs)[:5]]}
    methods, exps, maps = [], [], {}
    if args.method in ("occlusion", "both"):
        methods.append(Occlusion(model, patch, stride, args.fill, args.batch_size))
        (occ,) = methods[-1].explain(image[None], [target])
        _save_npy(os.path.join(args.out, "occlusion.npy"), occ.map, write_bytes)
        report["occlusion"] = {"patch": patch, "stride": stride, "fill": args.fill, "grid": list(occ.map.shape),
                               "min_probability": float(occ.map.min())}
        exps.append(occ)
        maps[f"occlusion ({patch}px, stride {stride})"] = occ.importance()
    if args.method in ("gradcam", "both"):
        cam_method = GradCAM(model, args.layer or models.gradcam_layer_name(model, backbone))
        methods.append(cam_method)
        (cam,) = cam_method.explain(image[None], [target])
        _save_npy(os.path.join(args.out, "gradcam.npy"), cam.map, write_bytes)
        report["gradcam"] = {"layer": cam_method.layer}
        exps.append(cam)
        maps[f"Grad-CAM ({cam_method.layer})"] = cam.map
    if args.quality:
        report["quality"] = quality(model, image, methods, exps, args.fill)
    title = f"{names[target]} ({target}): p = {probs[target]:.3f}"
    save_figure(plotting.saliency_overlay(display_image(args.image, h, w), maps, title),
                os.path.join(args.out, "overlay.png"))
    write_json(os.path.join(args.out, "saliency.json"), report)
    print(f"wrote {args.out}")
    return 0


def quality(model, image, methods, explanations, fill):
    """Deletion/insertion areas, and the rank correlation between each map and
    the same method's map on a weight-randomized copy (should be low)."""
    from kerasimpl.saliency import deletion_insertion, randomized_copy, rank_correlation

    random_model = randomized_copy(model, seed=0)
    out = {}
    for method, e in zip(methods, explanations):
        curves = deletion_insertion(model, image, e.importance(), e.target, fill=fill)
        (r,) = method.rebuild(random_model).explain(image[None], [e.target])
        out[e.method] = {"deletion_auc": curves["deletion_auc"], "insertion_auc": curves["insertion_auc"],
                         "randomized_model_rank_correlation": rank_correlation(e.importance(), r.importance())}
    return out


def display_image(path, h, w):
    """The image at least 224 px high for display (maps are stretched over it)."""
    from kerasimpl.images import read_image

    scale = max(1, 224 // max(h, 1))
    return read_image(path, (h * scale, w * scale))


def _save_npy(path, array, write_bytes):
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array, np.float32))
    write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
