"""Train each backbone on CIFAR-10 and compare them side by side.

    python -m experiments.compare                      # the real experiment (needs internet once)
    python -m experiments.compare --preset smoke --data PATH/cifar-10-python.tar.gz
    python -m experiments.compare --data ~/photos --data-size 160 --backbones efficientnetv2b0,resnet50

--data also takes a folder of your own images: PATH/<class>/*.jpg, or
PATH/train/<class>/ with optional PATH/val/<class>/ and PATH/test/<class>/
(class names = folder names; unreadable files are skipped and listed).

Writes to --out (default runs/compare-<time>/): config.json, results.json,
results.md, results.csv, <backbone>/{model.keras,history.csv,*.png}, and
plots/comparison.png; the plots are also copied under --plots-dir/<preset>/.
"""

from __future__ import annotations

import experiments  # noqa: F401  (sets the default backend before keras loads)

import argparse
import os
import sys
import time
import warnings

PRESETS = {
    # The real experiment: full CIFAR-10, ImageNet weights, 224 px, frozen bases.
    "full": dict(data="cifar10", weights="imagenet", image_size=224, epochs=15,
                 backbones="vgg16,mobilenetv2,mobilenetv3large", batch_size=64, alpha=None),
    # Offline, 2 CPU cores, < 10 min: the from-scratch CNN plus a small
    # random-weight MobileNetV2, both trained end to end at 32 px.
    "smoke": dict(data="synthetic", weights="none", image_size=32, epochs=8,
                  backbones="smallcnn,mobilenetv2", batch_size=64, alpha=0.35),
}


def build_parser():
    from kerasimpl.backbones import list_backbones

    p = argparse.ArgumentParser(
        prog="python -m experiments.compare", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="full",
                   help="defaults for the options below (default: full)")
    p.add_argument("--backbones", help=f"comma-separated, from: {', '.join(list_backbones())}")
    p.add_argument("--data", help="cifar10 (download), synthetic, tfds:NAME, a path to "
                   "cifar-10-python.tar.gz / cifar-10-batches-py/, or a folder of images (see above)")
    p.add_argument("--data-size", type=int,
                   help="image folders and tfds:NAME: resize images to this square size when loading (needed "
                        "when their sizes differ, e.g. --data ~/photos --data-size 160)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="image folders without test/: share of each class held out as the test set (default 0.2)")
    p.add_argument("--weights", help="imagenet, none, or a path to a local weights file (single backbone)")
    p.add_argument("--image-size", type=int, help="size the backbones see (images are resized inside the model)")
    p.add_argument("--alpha", type=float, help="width multiplier for MobileNets")
    p.add_argument("--epochs", type=int, help="epochs of the head (or end-to-end) stage")
    p.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning the top of the base")
    p.add_argument("--finetune-layers", type=int, default=20, help="backbone layers unfrozen for fine-tuning")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--inference-batch-size", type=int,
                   help="images per batch of feature extraction and evaluation, independent of --batch-size "
                        "(default: measured for the device: 16 on CPU, 128 on a GPU; see "
                        "python -m experiments.bench_full --sweep)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="repeat with seeds seed..seed+N-1; report mean ± std")
    p.add_argument("--augment", default="flip,translate",
                   help="augmentations of full-model stages (fine-tuning, end-to-end): any of "
                        "flip,translate,randaugment,mixup,cutmix, or 'none' (default: flip,translate)")
    p.add_argument("--no-cache-features", action="store_true",
                   help="re-run the frozen base every epoch (the seed's way) instead of caching features")
    p.add_argument("--hidden", default="256", help="hidden widths of the dense head, e.g. 512,256 or '' for none")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--keep-top-hidden", action="store_true",
                   help="MobileNetV3: keep the ImageNet top's pretrained hidden layer (1280 units, Large) and "
                        "replace only the last classifier layer; the reference run is --hidden '' --dropout 0.2")
    p.add_argument("--linear-probe", action="store_true",
                   help="also fit a linear probe (L2 softmax regression on the cached features, strength chosen "
                        "on validation) for each frozen backbone: its own row, 'linear probe'")
    p.add_argument("--workers", type=int,
                   help="threads loading (and decoding) batches ahead (default: 1; image folders: the CPU count)")
    p.add_argument("--distribute", action="store_true",
                   help="data-parallel over all local devices (KERAS_BACKEND=jax; multi-host via "
                        "KERAS_DISTRIBUTION_* variables, see README 'Scaling out')")
    p.add_argument("--saliency", type=int, default=0, metavar="N",
                   help="after training: explain the same N test images with every compared model, one figure "
                        "(rows: images, columns: backbones), plots/saliency_backbones.png (default 0: none)")
    p.add_argument("--saliency-method", default="gradcam",
                   help="the method of --saliency, from kerasimpl.saliency.list_methods() (default gradcam)")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="compute precision (default auto): extraction/evaluation run the compiled program under "
                        "autocast, training under Keras' mixed_bfloat16 / mixed_float16 policy; saved models are "
                        "float32. " + _describe_auto())
    p.add_argument("--out", help="run folder (default runs/compare-<preset>-<time>); an existing one resumes")
    p.add_argument("--plots-dir", default="plots", help="also copy the plots to DIR/<preset>/ ('' to skip)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _describe_auto():
    from kerasimpl.precision import describe_auto

    return describe_auto()


def resolve(args):
    """Fill unset options from the preset; return the resolved dict."""
    from kerasimpl import precision

    cfg = dict(PRESETS[args.preset])
    for key in ("backbones", "data", "weights", "image_size", "alpha", "epochs", "batch_size"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    cfg.update({k: getattr(args, k) for k in (
        "finetune_epochs", "finetune_layers", "lr", "val_fraction", "seed", "seeds", "augment",
        "hidden", "dropout", "workers", "preset", "distribute", "data_size", "test_fraction", "keep_top_hidden",
        "linear_probe", "inference_batch_size", "saliency", "saliency_method")})
    cfg["cache_features"] = not args.no_cache_features
    cfg["precision_requested"] = args.precision
    cfg["precision"] = precision.resolve(args.precision)  # what ran: float32, bfloat16 or float16
    cfg["backbones"] = [b.strip().lower() for b in cfg["backbones"].split(",") if b.strip()]
    cfg["weights"] = None if str(cfg["weights"]).lower() == "none" else cfg["weights"]
    cfg["augment"] = [] if cfg["augment"] in ("", "none") else [a.strip() for a in cfg["augment"].split(",")]
    cfg["hidden"] = [int(h) for h in str(cfg["hidden"]).split(",") if h.strip()]
    cfg["out"] = args.out or os.path.join("runs", f"compare-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    return cfg


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kerasimpl.artifacts import ArtifactError
    from kerasimpl.data import DatasetError

    if not args.quiet:
        experiments.log_to_stdout()  # kerasimpl's stage and progress lines (kerasimpl.progress)
    try:
        return run(resolve(args), plots_dir=args.plots_dir, verbose=0 if args.quiet else ("auto" if sys.stdout.isatty() else 2))
    except (DatasetError, ArtifactError, ValueError, RuntimeError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(cfg, plots_dir="plots", verbose="auto") -> int:
    """Run the resolved comparison `cfg`; write everything under `cfg["out"]`."""
    from kerasimpl import comparison, runtime
    from kerasimpl.artifacts import write_json

    _validate(cfg)
    devices = [str(d) for d in runtime.configure_distribution()] if cfg["distribute"] else None
    out = cfg["out"]
    os.makedirs(out, exist_ok=True)
    data = _load_data(cfg)
    split = data.split(cfg["val_fraction"], cfg["seed"])
    write_json(os.path.join(out, "config.json"), {
        **cfg, "split": split.summary(), "versions": runtime.versions(), "device": runtime.device_description(),
        "distributed_devices": devices,
        "data_source": data.source, "num_train_total": int(len(data.y_train)), "num_test": int(len(data.y_test)),
        "class_names": list(data.class_names), "data_notes": list(data.notes),
        "skipped_files": [{"file": p, "reason": r} for p, r in data.skipped],
    })
    results = []
    for name in cfg["backbones"]:
        for kind in _kinds(name, cfg):
            seeds = range(cfg["seed"], cfg["seed"] + cfg["seeds"])
            runs = [_run_one(name, seed, cfg, data, split, verbose, kind) for seed in seeds]
            results.append(runs[0] if len(runs) == 1 else comparison.seed_average(runs))
    _write_outputs(cfg, results, data, plots_dir)
    if cfg.get("saliency"):
        _saliency_figure(cfg, results, data, plots_dir)
    return 0


def _saliency_figure(cfg, results, data, plots_dir):
    """The same N test images explained by every compared model, side by side."""
    import numpy as np

    from kerasimpl import plotting
    from kerasimpl.artifacts import copy_file, load_model, save_figure, write_json
    from kerasimpl.saliency import get_method

    n, method = int(cfg["saliency"]), cfg.get("saliency_method") or "gradcam"
    # One image per class where it can (seeded): the same images for every model.
    rng = np.random.default_rng(cfg["seed"])
    order = rng.permutation(len(data.y_test))
    chosen, seen = [], set()
    for i in order:
        if int(data.y_test[i]) not in seen or len(seen) == data.num_classes:
            chosen.append(int(i))
            seen.add(int(data.y_test[i]))
        if len(chosen) == n:
            break
    images = np.stack([np.asarray(data.x_test[i]) for i in chosen]).astype("float32")
    names = list(data.class_names)
    columns, captions, report = {}, {}, {"method": method, "images": chosen, "models": {}}
    for r in results:
        label = r.get("run", r["backbone"])
        path = os.path.join(cfg["out"], label if cfg["seeds"] == 1 else os.path.join(label, f"seed{cfg['seed']}"),
                            "model.keras")
        if not os.path.exists(path):
            continue
        explainer = get_method(method, load_model(path))
        explainer.precision = cfg.get("precision", "float32")  # its black-box forward passes
        exps = explainer.explain(images)  # targets: each model's top-1 prediction
        preds = [e.target for e in exps]
        layer = getattr(explainer, "layer", None)
        columns[label] = [e.importance() for e in exps]
        captions[label] = [f"{'ok' if e.target == t else 'WRONG'}: {names[e.target]} ({e.score:.2f})"
                           for e, t in zip(exps, data.y_test[chosen])]
        report["models"][label] = {"predictions": [names[p] for p in preds], "layer": layer}
        print(f"[compare] saliency: {label} explained", flush=True)
    rows = [f"#{i} true: {names[int(data.y_test[i])]}" for i in chosen]
    gallery = os.path.join(cfg["out"], "plots", "saliency_backbones.png")
    save_figure(plotting.saliency_gallery(images, rows, columns, f"{method} of each model's prediction on the same "
                                          f"{len(chosen)} test images", cell_titles=captions), gallery)
    write_json(os.path.join(cfg["out"], "saliency_backbones.json"), report)
    if plots_dir:
        copy_file(gallery, os.path.join(plots_dir, cfg["preset"], "saliency_backbones.png"))
    print(f"[compare] wrote {gallery}", flush=True)


def _load_data(cfg):
    """The dataset, with what was skipped or decided about it said aloud."""
    from kerasimpl.data import is_image_folder, load_dataset

    folder = cfg["data"] not in ("cifar10", "synthetic") and is_image_folder(cfg["data"])
    if cfg["workers"] is None:
        cfg["workers"] = (os.cpu_count() or 1) if folder else 1
    print(f"[compare] loading data: {cfg['data']}", flush=True)
    data = load_dataset(cfg["data"], image_size=cfg.get("data_size"), test_fraction=cfg["test_fraction"],
                        seed=cfg["seed"], workers=cfg["workers"])
    print(f"[compare] {len(data.y_train)} train+val and {len(data.y_test)} test images of "
          f"{data.image_shape[0]}x{data.image_shape[1]} px, {data.num_classes} classes: "
          f"{', '.join(data.class_names[:10])}{' ...' if data.num_classes > 10 else ''}", flush=True)
    for note in data.notes:
        print(f"[compare] data: {note}", flush=True)
    for path, reason in data.skipped:
        print(f"[compare] skipped {path}: {reason}", flush=True)
    return data


def _kinds(name, cfg):
    """Row kinds for backbone `name`: the MLP head, and a linear probe if asked
    (frozen pretrained bases only)."""
    from kerasimpl.backbones import get_spec

    frozen = cfg["weights"] is not None and get_spec(name).pretrained and cfg["cache_features"]
    return ("mlp", "linear-probe") if cfg["linear_probe"] and frozen else ("mlp",)


def _validate(cfg):
    from kerasimpl.backbones import get_spec

    for b in cfg["backbones"]:
        get_spec(b)  # fail early, listing the accepted names
    pretrained = [b for b in cfg["backbones"] if get_spec(b).pretrained]
    if cfg["keep_top_hidden"] and not any(get_spec(b).top_hidden for b in cfg["backbones"]):
        raise ValueError(f"--keep-top-hidden applies to backbones whose ImageNet top has a hidden layer "
                         f"(mobilenetv3large, mobilenetv3small). Received: {cfg['backbones']}")
    if cfg["weights"] not in (None, "imagenet") and len(pretrained) > 1:
        raise ValueError(f"A weights file fits one backbone. Received --weights {cfg['weights']} for {pretrained}; "
                         "run them one at a time, or use --weights imagenet / none")


def _run_one(name, seed, cfg, data, split, verbose, kind="mlp"):
    """Train and evaluate backbone `name` with `seed` (head `kind`); return its result."""
    from kerasimpl import comparison
    from kerasimpl.backbones import get_spec
    from kerasimpl.heads import HeadConfig
    from kerasimpl.training import TrainConfig

    spec = get_spec(name)
    probe = kind == "linear-probe"
    run = comparison.BackboneRun(
        name, cfg["weights"] if spec.pretrained else None, cfg["image_size"] if spec.pretrained else None,
        {"alpha": cfg["alpha"]} if cfg["alpha"] and name.startswith("mobilenet") else {},
        HeadConfig(hidden=(), dropout=0.0) if probe else HeadConfig(hidden=tuple(cfg["hidden"]),
                                                                     dropout=cfg["dropout"]),
        keep_top_hidden=bool(cfg["keep_top_hidden"] and spec.top_hidden),
    )
    config = TrainConfig(epochs=cfg["epochs"], batch_size=cfg["batch_size"], learning_rate=cfg["lr"],
                         finetune_epochs=0 if run.end_to_end or probe else cfg["finetune_epochs"],
                         finetune_top_layers=cfg["finetune_layers"], cache_features=cfg["cache_features"],
                         augment=tuple(cfg["augment"]), seed=seed, workers=cfg["workers"], head_kind=kind,
                         inference_batch_size=cfg.get("inference_batch_size"),
                         precision=cfg.get("precision", "float32"))
    label = f"{name}-linear-probe" if probe else name
    sub = (lambda n: n) if cfg["seeds"] == 1 else (lambda n: os.path.join(n, f"seed{seed}"))
    folder = os.path.join(cfg["out"], sub(label))
    print(f"[compare] {label} (seed {seed}, {run.weights or 'random'} weights, "
          f"{'end to end' if run.end_to_end else 'frozen base'}) -> {folder}", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras' input-size notes for non-224 MobileNets
        result = comparison.run_backbone(run, data, split, config, folder, verbose=verbose,
                                         features_folder=os.path.join(cfg["out"], sub(name)))
    result["run"] = label
    print(f"[compare] {label}: test accuracy {result['test_accuracy']:.2%}, train {result['train_seconds']:.0f} s",
          flush=True)
    return result


def _write_outputs(cfg, results, data, plots_dir):
    """Tables, the comparison figure, and the plot gallery."""
    from kerasimpl import plotting, reporting
    from kerasimpl.artifacts import copy_file, save_figure

    out = cfg["out"]
    reporting.write_tables(out, results, note=_note(cfg, data))
    gallery = os.path.join(out, "plots")
    save_figure(plotting.comparison(results, f"{cfg['preset']} preset on {os.path.basename(str(data.source))}: "
                                             "accuracy vs training time"),
                os.path.join(gallery, "comparison.png"))
    for name in dict.fromkeys(r.get("run", r["backbone"]) for r in results):
        for png in ("learning_curves.png", "confusion_matrix.png"):
            src = os.path.join(out, name, png)
            if os.path.exists(src):
                copy_file(src, os.path.join(gallery, f"{name}_{png}"))
    if plots_dir:
        for png in os.listdir(gallery):
            copy_file(os.path.join(gallery, png), os.path.join(plots_dir, cfg["preset"], png))
    print(open(os.path.join(out, "results.md")).read())
    print(f"[compare] wrote {out}")


def _note(cfg, data):
    parts = [f"data: {data.source} ({len(data.y_train)} train+val, {len(data.y_test)} test images)"]
    if data.source != "cifar10" and len(data.y_test) != 10000:
        parts.append("NOT the full CIFAR-10 test set: figures are for this data only")
    if cfg["weights"] is None:
        parts.append("random initial weights (no ImageNet): backbones trained end to end")
    return "; ".join(parts) + "."


if __name__ == "__main__":
    sys.exit(main())
