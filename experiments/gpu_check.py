"""GPU check: the figures a lent CUDA GPU should give, in one command, in minutes.

    make gpu-check                      # = python -m experiments.gpu_check --out runs/gpu-check
    python -m experiments.gpu_check --sections extraction,finetune

On a CUDA machine (torch backend), in under 5 minutes:

- **extraction**: pooled-feature img/s of MobileNetV2, MobileNetV3-Large,
  VGG16 and EfficientNet-Lite0 at batch 128 (224 px uint8 images from host
  memory, features back to host), through kerasimpl's compiled path
  (`kerasimpl.inference.Forward`, what `compare` extracts with) and through
  the native PyTorch implementation of the same network (torchvision's
  models; for Lite0 the reference `efficientnet-lite-pytorch`), channels-last,
  in float32, bfloat16 and float16 autocast; each figure a median over timed
  batches after warm-up, the two implementations interleaved.
- **full**: one full-size frozen MobileNetV3-Large `compare` run (50,000 +
  10,000 images resampled from the real CIFAR-10 subset, 224 px inside the
  model, random local weights: the times and memory mean something, the
  accuracy does not) with its stage seconds.
- **finetune**: seconds per fine-tuning step (batch 64, the top 20 layers of
  the base unfrozen, BatchNormalization frozen, Keras `train_on_batch`) of
  MobileNetV3-Large and EfficientNet-Lite0, float32 and mixed bfloat16.

Everything lands in `--out` as `gpu_check.json` and `gpu_check.md` (a
Markdown table with the GPU named), with `torch.cuda.max_memory_allocated`
per section. On a machine without CUDA it says so in one line and exits 2.
Random weights throughout: speed does not depend on their values.
"""

from __future__ import annotations

import experiments  # noqa: F401  (sets the default backend before keras loads)

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

BACKBONES = ("mobilenetv2", "mobilenetv3large", "vgg16", "efficientnetlite0")
PRECISIONS = ("float32", "bfloat16", "float16")
SECTIONS = ("extraction", "full", "finetune")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu-check", help="folder for gpu_check.json / .md and the full run")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    p.add_argument("--backbones", default=",".join(BACKBONES), help="extraction rows")
    p.add_argument("--batch", type=int, default=128, help="extraction batch (default 128)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=10, help="timed batches per figure (default 10)")
    p.add_argument("--subset", default=os.environ.get("KERASIMPL_CIFAR10_SUBSET"),
                   help="the real CIFAR-10 subset the full-size archive resamples (default $KERASIMPL_CIFAR10_SUBSET)")
    p.add_argument("--train", type=int, default=50_000, help="training images of the full-size run")
    p.add_argument("--test", type=int, default=10_000, help="test images of the full-size run")
    p.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)  # tests: the code paths on a CPU
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu-check needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
              f"(torch {torch.__version__}); run it where a GPU is lent", file=sys.stderr)
        return 2
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        print(f"error: unknown section {bad or args.sections!r}. Accepted: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    from kerasimpl import runtime

    torch.backends.cudnn.benchmark = True  # both implementations: the fastest convolution algorithms
    os.makedirs(args.out, exist_ok=True)
    report = {"device": runtime.device_description(), "gpu": _gpu_name(torch), "versions": runtime.versions(),
              "settings": {k: v for k, v in vars(args).items() if k != "allow_cpu"}, "sections": {}}
    runs = {"extraction": lambda: extraction(args), "full": lambda: full_run(args), "finetune": lambda: finetune(args)}
    for name in sections:
        start = time.perf_counter()
        _reset_peak(torch)
        try:
            rows = runs[name]()
        except Exception as e:  # one broken section must not cost the others' figures on a lent GPU
            rows = [{"error": f"{type(e).__name__}: {e}"}]
        report["sections"][name] = {"rows": rows, "seconds": time.perf_counter() - start,
                                    "max_memory_allocated_mb": _peak_mb(torch)}
        print(f"[gpu-check] {name}: {report['sections'][name]['seconds']:.1f} s, peak "
              f"{report['sections'][name]['max_memory_allocated_mb']:.0f} MB", flush=True)
        _write(args.out, report)
    print(markdown(report))
    return 0


def _gpu_name(torch):
    if not torch.cuda.is_available():
        return "none (CPU)"
    p = torch.cuda.get_device_properties(0)
    return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}"


def _reset_peak(torch):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(torch):
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_seconds(fns, x, repeats, warmup=3):
    """Median seconds of each `fn(x)`, the callables interleaved (A, B, A, B ...: `bench.common.interleaved`),
    each call waited for on the GPU."""
    from experiments.bench.common import interleaved

    def synced(fn):
        return lambda: (fn(x), _sync())

    return interleaved([synced(fn) for fn in fns], repeats, warmup=warmup)


# --- extraction ----------------------------------------------------------------------------------

def extraction(args):
    """One row per backbone and precision: kerasimpl's compiled img/s, the native one, their ratio."""
    from experiments.bench.common import native_twin
    from kerasimpl import models
    from kerasimpl.backbones import get_spec
    from kerasimpl.heads import HeadConfig
    from kerasimpl.inference import Forward

    size = args.image_size
    x = np.random.default_rng(0).integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
    rows = []
    for name in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        with warnings.catch_warnings():  # random frozen weights: right for a speed figure
            warnings.simplefilter("ignore", UserWarning)
            model = models.build_classifier(name, 10, input_shape=(size, size, 3), image_size=size, weights=None,
                                            head=HeadConfig((), 0.0))
        extractor = models.feature_extractor(model)
        native = native_twin(name, "cuda" if _on_cuda() else "cpu")
        for precision in PRECISIONS:
            if precision == "float16" and not _on_cuda():
                continue
            ours = Forward(extractor, precision)
            fns = [ours] if isinstance(native, str) else [ours, lambda b, p=precision: native(b, p)]
            seconds = _median_seconds(fns, x, args.repeats)
            row = {"backbone": name, "precision": precision, "batch": args.batch, "path": ours.path,
                   "kerasimpl_img_s": args.batch / seconds[0]}
            if isinstance(native, str):
                row["native"] = native
            else:
                row.update(native=get_spec(name).native, native_img_s=args.batch / seconds[1],
                           ratio=seconds[1] / seconds[0])
            rows.append(row)
            print(f"[gpu-check] extraction {name} {precision}: {row['kerasimpl_img_s']:.0f} img/s "
                  f"(native {row.get('native_img_s', float('nan')):.0f})", flush=True)
    return rows


def _on_cuda():
    import torch

    return torch.cuda.is_available()


# --- full-size frozen run ------------------------------------------------------------------------

def full_run(args):
    """`compare` on 50,000 + 10,000 resampled images, MobileNetV3-Large frozen, 3 head epochs."""
    from experiments import bench_full, compare

    work = os.path.join(args.out, "full")
    archive = os.path.join(work, f"cifar-10-python-{args.train}-{args.test}.tar.gz")
    start = time.perf_counter()
    if not os.path.exists(archive):
        bench_full.build_archive(archive, args.subset, args.train, args.test)
    archive_s = time.perf_counter() - start
    weights = os.path.join(work, "mobilenetv3large-random.weights.h5")
    if not os.path.exists(weights):
        bench_full.save_random_weights("mobilenetv3large", weights, image_size=args.image_size)
    out = os.path.join(work, "run")
    start = time.perf_counter()
    code = compare.main(["--data", archive, "--backbones", "mobilenetv3large", "--weights", weights, "--epochs", "3",
                         "--image-size", str(args.image_size), "--out", out, "--plots-dir", "", "--quiet"])
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"compare exited {code}")
    with open(os.path.join(out, "results.json")) as f:
        (r,) = json.load(f)
    images = args.train + args.test
    return [{"backbone": "mobilenetv3large", "images": images, "build_archive_s": archive_s,
             "extract_s": r["extract_seconds"], "head_s": r["head_seconds"], "eval_s": r["eval_seconds"],
             "compare_wall_s": wall, "extract_img_s": (images - r["num_test"]) / max(r["extract_seconds"], 1e-9),
             "test_accuracy_meaningless": r["test_accuracy"], "eval_path": r.get("eval_path")}]


# --- fine-tuning step ----------------------------------------------------------------------------

def finetune(args, names=("mobilenetv3large", "efficientnetlite0")):
    """Seconds per `train_on_batch` with the top 20 base layers trainable, float32 and mixed bfloat16."""
    import keras

    from kerasimpl import models, precision, training
    from kerasimpl.heads import HeadConfig

    size, batch = args.image_size, min(64, args.batch)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8).astype("float32")
    y = rng.integers(0, 10, batch)
    rows = []
    for name in names:
        for p in ("float32", "bfloat16"):
            with precision.keras_policy(p), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                model = models.build_classifier(name, 10, input_shape=(size, size, 3), image_size=size,
                                                weights=None, head=HeadConfig((256,), 0.3))
            models.unfreeze(model, top_layers=20)
            training.compile_full(model, 1e-5)
            (seconds,) = _median_seconds([lambda b: model.train_on_batch(b, y)], x, max(1, args.repeats // 2))
            rows.append({"backbone": name, "precision": p, "batch": batch, "trainable_layers": 20,
                         "step_s": seconds, "img_s": batch / seconds,
                         "trainable_params": models.parameter_counts(model)["trainable"]})
            print(f"[gpu-check] finetune {name} {p}: {seconds * 1000:.0f} ms/step", flush=True)
            del model
            keras.backend.clear_session()
    return rows


# --- report --------------------------------------------------------------------------------------

def _write(folder, report):
    from kerasimpl.artifacts import write_json

    write_json(os.path.join(folder, "gpu_check.json"), report)
    with open(os.path.join(folder, "gpu_check.md"), "w") as f:
        f.write(markdown(report) + "\n")


def markdown(report) -> str:
    lines = [f"GPU: {report['gpu']}; {report['device']}", ""]
    for name, section in report["sections"].items():
        lines.append(f"**{name}** ({section['seconds']:.1f} s, torch.cuda.max_memory_allocated "
                     f"{section['max_memory_allocated_mb']:.0f} MB)")
        lines.append("")
        lines.append(_table(section["rows"]))
        lines.append("")
    return "\n".join(lines)


def _table(rows) -> str:
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    from kerasimpl.reporting import markdown_grid

    return "\n".join(markdown_grid(columns, [[cell(r.get(c, "")) for c in columns] for r in rows]))


if __name__ == "__main__":
    sys.exit(main())
