"""What a comparison checks before it runs: its options, whether its run folder may be resumed, and
whether a row would take hours on a CPU (`kerasimpl.comparison_run` calls these first)."""

from __future__ import annotations

import json
import os

from kerasimpl import comparison

RANDOM_CHECKPOINT = "random-checkpoint"  # weights value: a random checkpoint (e.g. AlexNet's .pth) made in the run folder
# Options that do not change a finished backbone's figures: a run folder may
# be resumed with other values of these (any other option must match).
RESUME_MAY_DIFFER = ("out", "preset", "backbones", "workers", "distribute", "distribute_timeout",
                     "inference_batch_size", "saliency", "saliency_method")


def validate(config):
    """Fail early, naming the bad option and what is accepted (before any folder is made)."""
    from kerasimpl.backbones import get_spec, list_backbones

    rows = [comparison.parse_row(b) for b in config["backbones"]]  # listing the accepted names and variants
    if config.get("tune") and config["distribute"]:
        raise ValueError("--tune runs its trials in one process: it does not combine with --distribute. Received: "
                         f"--tune {config['tune']} --distribute")
    if not rows:
        raise ValueError("--backbones names no backbone. Received: an empty list")
    if len(set(rows)) != len(rows):
        raise ValueError(f"A row appears twice in --backbones. Received: {config['backbones']}")
    for key, low in (("epochs", 1), ("batch_size", 1), ("seeds", 1), ("finetune_epochs", 0), ("saliency", 0),
                     ("finetune_layers", 1), ("finetune_views", 0)):
        if config.get(key) is not None and config[key] < low:
            raise ValueError(f"--{key.replace('_', '-')} must be >= {low}. Received: {config[key]}")
    if config.get("finetune_lr") is not None and not config["finetune_lr"] > 0:
        raise ValueError(f"--finetune-lr must be > 0. Received: {config['finetune_lr']}")
    for name, variant in rows:  # the fine-tuning options against each row's backbone, before anything runs
        if get_spec(name).pretrained and variant != "scratch":
            comparison.finetuning(name, config)
    if config["inference_batch_size"] is not None and config["inference_batch_size"] < 1:
        raise ValueError(f"--inference-batch-size must be >= 1. Received: {config['inference_batch_size']}")
    for key in ("val_fraction", "test_fraction"):
        if not 0 < config[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be between 0 and 1. Received: {config[key]}")
    pretrained = pretrained_backbones(config)
    if any(v == "lastlayer" for _, v in rows) and config["weights"] is None:
        raise ValueError("NAME:lastlayer keeps pretrained layers: it needs --weights imagenet or a weights file. "
                         "Received: --weights none")
    if config.get("saliency"):  # before any training, not after it
        from kerasimpl.saliency import method_options

        method_options(config.get("saliency_method") or "gradcam")  # ValueError listing the accepted methods
    with_top = [n for n in list_backbones() if get_spec(n).top_hidden]
    if config["keep_top_hidden"] and not any(get_spec(n).top_hidden for n, _ in rows):
        raise ValueError(f"--keep-top-hidden applies to backbones whose ImageNet top has a hidden layer "
                         f"({', '.join(with_top)}). Received: {config['backbones']}")
    if config["weights"] == RANDOM_CHECKPOINT and (len(pretrained) != 1 or not get_spec(pretrained[0]).checkpoint):
        formats = [n for n in list_backbones() if get_spec(n).checkpoint]
        raise ValueError(f"--weights {RANDOM_CHECKPOINT} makes a random checkpoint in one backbone's checkpoint "
                         f"format: it fits the rows of one of {', '.join(formats)}. Received it for {pretrained}")
    if config["weights"] not in (None, "imagenet") and len(pretrained) > 1:
        raise ValueError(f"A weights file fits one backbone. Received --weights {config['weights']} for "
                         f"{pretrained}; run them one at a time, or use --weights imagenet / none")


def pretrained_backbones(config) -> list:
    """The backbones whose rows start from pretrained weights (not NAME:scratch), sorted."""
    from kerasimpl.backbones import get_spec

    rows = [comparison.parse_row(b) for b in config["backbones"]]
    return sorted({n for n, v in rows if get_spec(n).pretrained and v != "scratch"})


def check_resume(config):
    """Refuse to resume `config["out"]` when it was started with other result-changing options.

    Raises:
        ValueError: naming each option that differs, with both values.
    """
    path = os.path.join(config["out"], "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            old = json.load(f)
        if not isinstance(old, dict):
            raise ValueError(f"a JSON object is expected, not {type(old).__name__}")
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"--out {config['out']} holds a config.json that cannot be read ({e}): "
                         "it cannot be resumed; choose another --out") from e
    new = json.loads(json.dumps({k: v for k, v in config.items() if k not in RESUME_MAY_DIFFER}))
    diffs = [f"{k}: {old[k]!r} there, {v!r} now" if k in old else f"{k}: absent there, {v!r} now"
             for k, v in new.items() if k not in old or old[k] != v]
    if diffs:
        raise ValueError(f"--out {config['out']} is a run started with other options, so its finished backbones "
                         f"would not match this configuration ({'; '.join(diffs)}). Use another --out, or "
                         "repeat the original options to resume it")


# Multiply-adds per second a 2-core CPU sustains in feature extraction: VGG16's measured 2.2 img/s at
# 224 px (15.5 G each; docs/benchmarks.md). With a backbone's registry count it estimates any row's time.
CPU_MACS_PER_S = 2.2 * 15.5e9


def slow_warning(config, accelerator, images=60_000) -> str:
    """A warning when a row's extraction of `images` (CIFAR-10's 60,000) would take over an hour on a CPU,
    estimated from its registry multiply-adds (`BackboneSpec.macs`) at its size, with the way to skip it;
    else ''."""
    from kerasimpl.backbones import get_spec

    if accelerator:
        return ""
    slow = {}
    for row in config["backbones"]:
        spec = get_spec(comparison.parse_row(row)[0])
        size = (config["image_size"] if spec.pretrained else None) or spec.input_size
        macs = spec.macs(size)
        if macs and images * macs / CPU_MACS_PER_S > 3600:
            slow[row] = (size, images * macs / CPU_MACS_PER_S / 3600)
    if not slow:
        return ""
    others = ",".join(b for b in config["backbones"] if b not in slow) or "mobilenetv2"
    each = ", ".join(f"{row} at {size} px about {hours:.1f} h" for row, (size, hours) in slow.items())
    return (f"on a CPU these take hours: {each} to extract {images:,} images (from their multiply-adds at the "
            f"2.2 img/s VGG16 ran at on 2 CPU cores, docs/benchmarks.md). To skip them: --backbones {others} "
            f"(make run ARGS=\"--backbones {others}\")")
