"""Benchmarks: frozen-base extraction vs native PyTorch, feature caching, saliency.

    python -m experiments.bench --quick            # < 10 min on 2 CPU cores (68 s measured, idle machine)
    python -m experiments.bench --json bench.json  # full settings
    python -m experiments.bench --sections saliency --saliency-size 160

Sections (`--sections`): extraction, cache, occlusion, saliency, accuracy,
training (seconds per end-to-end training step of `--train-rows` at
`--train-sizes`, e.g. AlexNet from scratch at 64/96/224 px, with the epoch
time extrapolated and peak memory).
Extraction has one row per backbone and precision (`--precision`): the
compiled base's img/s, the whole saved classifier's img/s at the same
batch and precision (and its ratio to the base), the pooled features'
relative error against float32, and the achieved multiply-adds/s
(published counts x img/s) next to this CPU's float32 peak. The accuracy
section trains the same head (same seed) on float32 and on bfloat16
features of the real CIFAR-10 subset (`--subset`) and reports both test
accuracies. The
saliency section times every registered method's seconds per image on one
model and batch, and, on torch where pytorch-grad-cam or Captum implement
the same map (`pip install -e '.[reference]'` and `pip install --no-deps
grad-cam==1.5.7`), theirs on the same Keras model in the same process
(`kerasimpl.saliency.reference`), with the ratio.

Each section is one module of this package (`experiments/bench/<section>.py`:
`run(plan, args)` and `table(result, info)`); `--backends` runs the
extraction section again in one process per backend (`backends.py`). Every
section prints its wall time when it ends, and the JSON records them
(`info.section_seconds`).

Every figure is a median over repeats after warm-up; Keras and native
PyTorch are timed in the same process, interleaved (A, B, A, B ...), so
their ratio holds on a noisy shared machine even when absolute img/s does
not. Random weights throughout (speed does not depend on their values).
"""

from __future__ import annotations

import experiments  # noqa: F401  (sets the default backend before keras loads)

import argparse
import os
import sys
import time

from experiments.bench import accuracy, cache, extraction, occlusion, saliency, training
from experiments.bench.common import cpu_peak_macs, macs_224, write_report

# Section name -> its module, in the order they run and print.
SECTIONS = {"extraction": extraction, "accuracy": accuracy, "training": training, "cache": cache,
            "occlusion": occlusion, "saliency": saliency}
DEFAULT_SECTIONS = ("extraction", "cache", "occlusion", "saliency")
QUICK = ("small batch, few repeats, float32 only, saliency at 64 px without the masked-forward references: "
         "< 10 min on 2 CPU cores (measured 2026-11-27 on 2 AMD EPYC cores: 68 s wall with nothing else running, "
         "about 7 min shared with other jobs; each section prints its wall time)")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=QUICK)
    p.add_argument("--backbones", default=",".join(extraction.BACKBONES))
    p.add_argument("--batch", type=int, help="extraction batch (default 32; quick 8)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, help="timed repeats per measurement (default 5; quick 3)")
    p.add_argument("--epochs", type=int, help="head epochs for the cache speed-up (default 10; quick 4)")
    p.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                   help=f"comma-separated: {', '.join(SECTIONS)} (default: all but accuracy, which needs "
                        "--subset, and training)")
    p.add_argument("--precision",
                   help="precisions of the extraction and accuracy sections: comma-separated from float32, "
                        "bfloat16, float16 (CUDA only), or auto (what --precision auto picks here), or all "
                        "(float32 and bfloat16, plus float16 on CUDA; default; quick: float32). auto: bfloat16 "
                        "on a CPU with AMX/AVX512-BF16 or CUDA compute capability >= 8.0, else float32")
    p.add_argument("--subset", help="the real CIFAR-10 subset archive of the accuracy section "
                   "(default: $KERASIMPL_CIFAR10_SUBSET)")
    p.add_argument("--accuracy-backbone", default="mobilenetv2", help="frozen base of the accuracy section")
    p.add_argument("--accuracy-size", type=int, default=96, help="image size of the accuracy section (default 96)")
    p.add_argument("--accuracy-weights", help="a local weights file of --accuracy-backbone (e.g. Keras' ImageNet "
                   "file); default: random weights, whose frozen features may carry too little to tell precisions "
                   "apart (a chance-level float32 row says so)")
    p.add_argument("--saliency-backbone", default="mobilenetv2", help="classifier of the saliency section")
    p.add_argument("--saliency-size", type=int,
                   help=f"input size of the saliency section's model (default 224; quick {saliency.QUICK_SIZE})")
    p.add_argument("--saliency-batch", type=int,
                   help="images per explain() call in the saliency section (default 2; quick 1)")
    p.add_argument("--train-rows", default="alexnet:scratch",
                   help="training section: compare rows trained end to end (default alexnet:scratch)")
    p.add_argument("--train-sizes", default="64,96,224", help="training section: image sizes (default 64,96,224)")
    p.add_argument("--train-steps", type=int, help="training section: timed steps of 64 images (default 20; quick 5)")
    p.add_argument("--backends", help="extraction section: also run it on these Keras backends, each in its own "
                   "process, and print one table side by side (e.g. torch,jax; default: this backend only)")
    p.add_argument("--json", help="also write the results here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = _plan(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = _info(args, plan)
    print(f"[bench] {info['device']}; {info['versions']}; float32 peak: {info['fp32_peak_source']}", flush=True)
    results = {"info": info}
    for name, section in SECTIONS.items():
        if name in plan["sections"]:
            start = time.perf_counter()
            results[section.KEY] = section.run(plan, args)
            info["section_seconds"][name] = seconds = time.perf_counter() - start
            print(f"[bench] section {name}: {seconds:.1f} s wall", flush=True)
    print(table(results))
    if args.json:
        write_report(args.json, results)
    return 0


def _info(args, plan) -> dict:
    """What ran where: versions, device, threads, the settings, this CPU's float32 peak."""
    from kerasimpl import runtime

    peak, peak_source = cpu_peak_macs()
    return {"versions": runtime.versions(), "device": runtime.device_description(), "threads": _threads(),
            "quick": args.quick, "repeats": plan["repeats"], "precisions": plan["precisions"],
            "fp32_peak_gmacs_per_s": peak / 1e9 if peak else None, "fp32_peak_source": peak_source,
            "macs_per_224px_image": macs_224(), "macs_source": "published counts (docs/benchmarks.md), not measured",
            "section_seconds": {}}


def table(results) -> str:
    """Every section's table, in section order, after a line of section wall times."""
    info = results.get("info", {})
    lines = []
    if info.get("section_seconds"):
        lines += ["", "section wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in info["section_seconds"].items())
                  + f" (total {sum(info['section_seconds'].values()):.0f} s)"]
    for section in SECTIONS.values():
        if section.KEY in results:
            lines += section.table(results[section.KEY], info)
    return "\n".join(lines)


def _plan(args) -> dict:
    """Validated settings; ValueError names the bad value and what is accepted."""
    from kerasimpl.backbones import list_backbones

    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    accepted = extraction.native_names()  # the backbones with a native twin to time against
    unknown = [n for n in names if n not in accepted]
    if unknown:
        raise ValueError(f"unknown backbone {unknown}. Accepted: {', '.join(accepted)}")
    for flag in ("saliency_backbone", "accuracy_backbone"):
        if getattr(args, flag) not in list_backbones():
            raise ValueError(f"unknown --{flag.replace('_', '-')} {getattr(args, flag)!r}. Accepted: "
                             f"{', '.join(list_backbones())}")
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    bad = sections - set(SECTIONS)
    if bad:
        raise ValueError(f"unknown section {sorted(bad)}. Accepted: {', '.join(SECTIONS)}")
    subset = args.subset or os.environ.get("KERASIMPL_CIFAR10_SUBSET")
    if "accuracy" in sections and not (subset and os.path.exists(subset)):
        raise ValueError(f"the accuracy section needs the real CIFAR-10 subset: --subset PATH or "
                         f"$KERASIMPL_CIFAR10_SUBSET. Received: {subset!r}")
    if "training" in sections:
        from kerasimpl.comparison import parse_row

        for row in args.train_rows.split(","):
            if row.strip():
                parse_row(row)  # ValueError listing the accepted names and variants
    for flag in ("batch", "repeats", "epochs", "train_steps", "image_size", "saliency_size", "saliency_batch",
                 "accuracy_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1. Received: {value}")
    return {"names": names, "sections": sections, "subset": subset,
            "precisions": _precisions(args.precision or ("float32" if args.quick else "all")),
            "batch": args.batch or (8 if args.quick else 32), "repeats": args.repeats or (3 if args.quick else 5),
            "epochs": args.epochs or (4 if args.quick else 10), "train_sizes": _sizes(args.train_sizes),
            "train_steps": args.train_steps or (5 if args.quick else 20), "backends": _backends(args.backends)}


def _backends(text) -> list:
    names = [b.strip() for b in (text or "").split(",") if b.strip()]
    bad = [b for b in names if b not in ("torch", "jax")]
    if bad:
        raise ValueError(f"unknown --backends {bad}. Accepted: torch, jax")
    return names


def _sizes(text) -> list:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--train-sizes must be comma-separated sizes >= 1. Received: {text!r}")
    return sizes


def _precisions(text) -> list:
    from kerasimpl import precision

    device, capability = precision.accelerator()
    if text == "all":
        return ["float32", "bfloat16"] + (["float16"] if device == "cuda" else [])
    out = [precision.resolve(p.strip(), device, capability) for p in text.split(",") if p.strip()]
    if not out:
        raise ValueError(f"--precision names no precision. Received: {text!r}")
    return ["float32"] + [p for p in dict.fromkeys(out) if p != "float32"]  # float32: the error reference


def _threads():
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None
