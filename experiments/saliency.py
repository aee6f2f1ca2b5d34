"""Explain a classifier's decisions: one image, or N test images of a data set.

    # one image, the reference experiment (ImageNet classifier with its top):
    python -m experiments.saliency --backbone mobilenetv2 --weights imagenet --image cat.jpg --out out/
    # offline: the with-top weights file (and the class index) as local files:
    python -m experiments.saliency --backbone mobilenetv2 \\
        --weights mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5 \\
        --class-index imagenet_class_index.json --image cat.jpg --out out/
    # a trained kerasimpl model, every method, with the faithfulness table:
    python -m experiments.saliency --model runs/.../model.keras --image frog.png --method all --quality --out out/
    # N test images of a data set (both correct and misclassified), a gallery:
    python -m experiments.saliency --model runs/.../model.keras --data cifar10 --num-images 8 --method all --out out/

Methods (`--method`, comma-separated, or `all`): cam, gradcam, gradcam++,
smoothgrad-cam++, hirescam, xgradcam, layercam, scorecam, sscam, iscam,
eigencam (class activation maps of one layer, `--layer`), gradients,
smoothgrad, integrated-gradients (input gradients), occlusion, rise
(perturbation). Default: occlusion,gradcam. `all` leaves out, with a note,
a method the model does not admit (cam needs a linear head after global
pooling); named explicitly, such a method is an error.

One image writes OUT/<method>.npy (the method's own map: occlusion = target
probability per mask position; the others input-size), OUT/overlay.png and
OUT/saliency.json. With --data: OUT/gallery.png (rows: images with true and
predicted labels; columns: methods), OUT/maps.npz and OUT/saliency.json.
--quality adds, per method, the deletion/insertion areas, average drop and
increase in confidence, and the rank correlation with the same method on a
weight-randomized model (should be low), each a mean over the images with
its 95% bootstrap interval, beside a random-map baseline row; with several
images, each method's paired difference from the random maps and from every
other method, with its interval (* where it excludes 0). Printed, and
written as OUT/quality.md, OUT/quality.csv, OUT/quality_differences.csv and
OUT/quality_per_image.csv. Its forward passes run on the fast path,
32 perturbed images at a time, at --precision.

Occlusion defaults (30 px patch, stride 20) are for a 224 px input: 10
positions per axis, the last 14 rows and columns never masked (Captum adds
an 11th edge position). For smaller model inputs they scale with it (32 px:
patch 4, stride 3).
"""

from __future__ import annotations

import experiments  # sets the default backend before keras loads (and routes kerasimpl's log lines, below)

import argparse
import os
import sys

DEFAULT_METHODS = "occlusion,gradcam"


def build_parser():
    from kerasimpl.backbones import list_backbones
    from kerasimpl.saliency import list_methods

    p = argparse.ArgumentParser(prog="python -m experiments.saliency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a .keras classifier saved by kerasimpl")
    src.add_argument("--backbone", help=f"an ImageNet classifier: {', '.join(list_backbones())}")
    p.add_argument("--weights", default="imagenet",
                   help="with --backbone: imagenet, none, or the local path of Keras' WITH-TOP weights file "
                        "(the error without internet names it; alexnet: torchvision's alexnet-owt-7be5be79.pth)")
    p.add_argument("--class-index", help="with --backbone: a local imagenet_class_index.json (Keras' format)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="any image file (converted to RGB, resized to the model input)")
    what.add_argument("--data", help="with --model: a data source as in experiments.compare (cifar10, a "
                                     "cifar-10-python.tar.gz, a folder of images, ...): explain its test images")
    p.add_argument("--num-images", type=int, default=8, help="with --data: images to explain (default 8)")
    p.add_argument("--data-size", type=int, help="with --data: image folders' load size (as in compare)")
    p.add_argument("--classes", help="with --data: the class subset the model was trained on (as in compare)")
    p.add_argument("--label", type=int, help="with --image: class index to explain (default: the top-1 prediction)")
    p.add_argument("--method", default=DEFAULT_METHODS,
                   help=f"comma-separated, or 'all': {', '.join(list_methods())} (default: {DEFAULT_METHODS})")
    p.add_argument("--layer", help="CAM methods' layer (default: the last convolutional feature map)")
    p.add_argument("--patch", type=int, help="occlusion square side in input pixels (default 30 at 224 px)")
    p.add_argument("--stride", type=int, help="occlusion stride (default 20 at 224 px)")
    p.add_argument("--fill", type=float, default=0.0, help="value of masked pixels, occlusion and rise (0 = black)")
    p.add_argument("--samples", type=int, help="noisy copies: smoothgrad (default 25), smoothgrad-cam++ (4), "
                                                "sscam (35)")
    p.add_argument("--steps", type=int, help="integrated-gradients: quadrature points (default 50); iscam: mask "
                                              "scales (default 10)")
    p.add_argument("--masks", type=int, help="rise: random masks (default 1000)")
    p.add_argument("--batch-size", type=int, help="images per forward/backward pass (default: each method's own)")
    p.add_argument("--seed", type=int, default=0, help="image choice with --data; smoothgrad noise; rise masks")
    p.add_argument("--quality", action="store_true",
                   help="also the faithfulness table (deletion/insertion, average drop/increase, randomization)")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "float16", "auto"),
                   help="precision of the black-box methods' forward passes (occlusion, RISE, Score-CAM: the "
                        "compiled torch program under autocast; gradient methods run float32); default float32. auto: bfloat16 "
                        "on a CPU with AMX/AVX512-BF16 or CUDA compute capability >= 8.0, else float32")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kerasimpl.artifacts import ArtifactError
    from kerasimpl.data import DatasetError
    from kerasimpl.images import ImageError

    try:
        if args.data is not None and args.model is None:
            raise ValueError("--data needs --model (a classifier trained on that data). Received: --backbone")
        return run_data(args) if args.data is not None else run(args)
    except (ArtifactError, DatasetError, ImageError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def load(args):
    from kerasimpl import models
    from kerasimpl.artifacts import load_model

    if args.model:
        return load_model(args.model), None
    weights = None if str(args.weights).lower() == "none" else args.weights
    return models.build_imagenet_classifier(args.backbone, weights=weights, class_index=args.class_index), args.backbone


def make_methods(args, model, backbone=None):
    """The methods `--method` names, with the options each accepts."""
    from kerasimpl.saliency import NotApplicable, get_method, method_options, parse_methods
    from kerasimpl.saliency.layers import gradcam_layer_name
    from kerasimpl.saliency.occlusion import scaled_window

    names = parse_methods(args.method.replace("both", DEFAULT_METHODS))
    h = int(model.input_shape[1])
    shared = {"layer": args.layer or (gradcam_layer_name(model, backbone) if backbone else None),
              "patch": args.patch or scaled_window(h)[0], "stride": args.stride or scaled_window(h)[1],
              "fill": args.fill, "samples": args.samples, "steps": args.steps, "masks": args.masks,
              "batch_size": args.batch_size, "seed": args.seed}
    methods = []
    for n in names:
        try:
            methods.append(get_method(n, model, **{k: v for k, v in shared.items() if k in method_options(n)}))
        except NotApplicable as e:
            if args.method.strip() != "all":
                raise
            print(f"[saliency] {n} left out: {e}", file=sys.stderr, flush=True)
    from kerasimpl.precision import resolve

    for m in methods:
        m.precision = resolve(args.precision)
    return methods


def say(message):
    print(f"[saliency] {message}", flush=True)


def explain_all(methods, images, targets):
    """{method name: (explanations, seconds)} for a batch of images (`saliency.report.explain_methods`)."""
    from kerasimpl.saliency.report import explain_methods

    return explain_methods(methods, images, targets, say)


def run(args) -> int:
    import numpy as np

    from kerasimpl import models, plotting
    from kerasimpl.artifacts import save_figure, write_json
    from kerasimpl.images import read_image
    from kerasimpl.saliency.notes import method_title

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
    methods = make_methods(args, model, backbone)
    results = explain_all(methods, image[None], [target])
    report = {"image": args.image, "target": target, "label": names[target], "probability": float(probs[target]),
              "input_size": [h, w], "top5": [int(i) for i in np.argsort(-probs)[:5]], "methods": {},
              "precision": methods[0].precision if methods else None}
    maps = {}
    for method in methods:
        (e,), seconds = results[method.name]
        save_npy(os.path.join(args.out, f"{method.name}.npy"), e.map)
        report["methods"][method.name] = {"options": method.options(), "map_shape": list(e.map.shape),
                                          "seconds": seconds}
        maps[method_title(method)] = e.importance()
    if "occlusion" in results:
        occ = results["occlusion"][0][0]
        report["occlusion"] = {**report["methods"]["occlusion"]["options"], "grid": list(occ.map.shape),
                               "min_probability": float(occ.map.min())}
    if "gradcam" in results:
        report["gradcam"] = {"layer": report["methods"]["gradcam"]["options"]["layer"]}
    if args.quality:
        from kerasimpl.saliency.quality_tables import without_per_image

        table = quality(model, image[None], methods, results, args.fill)
        write_quality(args.out, table)
        report["quality"] = without_per_image(table)
    title = f"{names[target]} ({target}): p = {probs[target]:.3f}"
    save_figure(plotting.saliency_overlay(display_image(args.image, h, w), maps, title),
                os.path.join(args.out, "overlay.png"))
    write_json(os.path.join(args.out, "saliency.json"), report)
    print(f"wrote {args.out}")
    return 0


def choose_images(probs, labels, n, seed=0):
    """Sorted indices of `kerasimpl.saliency.choose_images` in "right-wrong"
    mode (kept for callers of this experiment's earlier helper)."""
    import numpy as np

    from kerasimpl.saliency import choose_images as choose

    return np.sort(choose(labels, n, mode="right-wrong", seed=seed, predictions=probs).indices)


def load_test_data(args):
    """`(data, note)`: the data set with the test split that trained the model.

    The split recorded beside or above the model (a compare run's
    config.json) is reused when --data names the same source: its seed and
    test fraction, not --seed (which then only picks images), and a test
    set that no longer matches is an error. Without a record, an image
    folder without test/ is split with --seed, and the note says so.
    """
    from kerasimpl.data import load_dataset
    from kerasimpl.data.provenance import check_record, drawn_test_set, find_record, same_source

    record, where = find_record(args.model)
    if record is not None and same_source(record, args.data):
        print(f"[saliency] test split: as when the model was trained ({where}: seed {record['seed']}, test "
              f"fraction {record['test_fraction']}, {record['num_test']} test images)", flush=True)
        data = load_dataset(args.data, image_size=args.data_size or record.get("image_size"),
                            seed=record["seed"], test_fraction=record["test_fraction"], classes=args.classes)
        check_record(record, data, where)
        return data, ""
    data = load_dataset(args.data, image_size=args.data_size, seed=args.seed, classes=args.classes)
    note = ""
    if record is not None:
        note = f"the model was trained on {record['source']}, not {data.source}."
    elif drawn_test_set(args.data):
        note = (f"no record of the split that trained this model (no config.json with test_split beside or above "
                f"it): the test set is {data.source}'s held-out split rebuilt with seed {args.seed} and test "
                "fraction 0.2; if the model was trained with others, some 'test' images were training images.")
    if note:
        print(f"[saliency] note: {note}", flush=True)
    return data, note


def run_data(args) -> int:
    from kerasimpl.saliency.quality_tables import quality_markdown
    from kerasimpl.saliency.report import explain_test_images

    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1. Received: {args.num_images}")
    model, _ = load(args)
    data, split_note = load_test_data(args)
    if tuple(data.image_shape) != tuple(model.input_shape[1:]):
        raise ValueError(f"The model takes {tuple(model.input_shape[1:])} images; {args.data} has "
                         f"{tuple(data.image_shape)} (use --data-size to match)")
    experiments.log_to_stdout()  # kerasimpl's progress lines (kerasimpl.progress)
    report = explain_test_images(model, data, make_methods(args, model), args.num_images, args.out, seed=args.seed,
                                 model_path=args.model, note=split_note,
                                 quality_fill=args.fill if args.quality else None, say=say,
                                 verbose="auto" if sys.stdout.isatty() else 2)
    if args.quality:
        print(quality_markdown(report["quality"]).rstrip("\n"))
    print(f"wrote {args.out}")
    return 0


def quality(model, images, methods, results, fill):
    """`kerasimpl.saliency.quality_table` of `explain_all`'s results."""
    from kerasimpl.saliency.report import quality_of

    return quality_of(model, images, methods, results, fill)


def write_quality(folder, table):
    """quality.md and quality.csv, one row per method; the Markdown is printed."""
    from kerasimpl.saliency.report import write_quality as write

    print(write(folder, table).rstrip("\n"))


def display_image(path, h, w):
    """The image at least 224 px high for display (maps are stretched over it)."""
    from kerasimpl.images import read_image

    scale = max(1, 224 // max(h, 1))
    return read_image(path, (h * scale, w * scale))


def save_npy(path, array):
    import io

    import numpy as np

    from kerasimpl.artifacts import write_bytes

    buf = io.BytesIO()
    np.save(buf, np.asarray(array, np.float32))
    write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
