"""What a comparison checks before it runs, beyond its options (`kerasimpl.run_config` checks those): whether
its run folder may be resumed, and whether a row would take hours on a CPU (`kerasimpl.comparison_run` calls
these first)."""

from __future__ import annotations

import dataclasses
import json
import os

from kerasimpl import comparison

# Keys of config.json files written before RunConfig (2026-12-05), read under today's names.
LEGACY_KEYS = {"lr": "learning_rate", "finetune_lr": "finetune_learning_rate",
               "finetune_layers": "finetune_top_layers"}
# What any run's config.json holds: a JSON object without them is not a run's configuration.
CORE_KEYS = ("backbones", "data", "seed", "epochs", "batch_size")
# Options that do not change a finished backbone's figures: a run folder may
# be resumed with other values of these (any other option must match).
# `weights_note` is the run's own record of what stood in for the weights.
RESUME_MAY_DIFFER = ("out", "preset", "backbones", "workers", "distribute", "distribute_timeout",
                     "inference_batch_size", "saliency", "saliency_method", "weights_note")


def check_resume(config):
    """Refuse to resume `config.out` (a `RunConfig`) when it was started with other result-changing options.

    An option that the folder's `config.json` lacks (a run from before the option existed) matches when it
    holds its default now; the fine-tuning settings of its rows (`run_config.finetuning_record`, registry
    defaults included) must match those recorded, and a folder that recorded none resumes no fine-tuning row;
    the keys of older files are read under today's names (`LEGACY_KEYS`). A random
    checkpoint (`RANDOM_CHECKPOINT`) matches the file its earlier run wrote in the folder.

    Raises:
        ValueError: naming each option that differs, with both values.
    """
    from kerasimpl.run_config import RANDOM_CHECKPOINT, ConfigError, RunConfig, finetuning_record, quote

    path = os.path.join(config.out, "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            old = json.load(f)
        if not isinstance(old, dict):
            raise ValueError(f"a JSON object is expected, not {type(old).__name__}")
        missing = [k for k in CORE_KEYS if k not in old]
        if missing:
            raise ValueError(f"not a run's configuration: it lacks {', '.join(missing)}")
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(f"{{out}} {quote(config.out)} holds a config.json that cannot be read ({quote(e)}): "
                          "it cannot be resumed; choose another {out}") from e
    old = {LEGACY_KEYS.get(k, k): v for k, v in old.items()}
    if (config.weights == RANDOM_CHECKPOINT and isinstance(old.get("weights"), str)
            and os.path.dirname(os.path.abspath(old["weights"])) == os.path.abspath(config.out)
            and old["weights"].endswith("-random-init.pth")):
        old["weights"] = RANDOM_CHECKPOINT  # the checkpoint that request wrote here
    new = json.loads(json.dumps({k: v for k, v in config.record().items() if k not in RESUME_MAY_DIFFER}))
    defaults = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(RunConfig)
                                      if f.default is not dataclasses.MISSING}))
    diffs = [f"{{{k}}}: {quote(repr(old[k]))} there, {quote(repr(v))} now" if k in old else
             f"{{{k}}}: absent there, {quote(repr(v))} now"
             for k, v in new.items() if (old[k] != v if k in old else v != defaults.get(k))]
    # Each fine-tuning row against what the folder recorded (the registry's defaults may have changed since);
    # a row the folder never ran may be added, as --backbones may differ; a folder that recorded none may
    # have run any of them.
    then, now = old.get("finetuning"), json.loads(json.dumps(finetuning_record(config)))
    diffs += [f"{row}'s fine-tuning: " + ("not recorded there" if then is None else
                                         f"{quote(repr(then[row]))} there") + f", {quote(repr(tune))} now"
              for row, tune in now.items() if then is None or _as_then(then.get(row, tune), tune) != tune]
    if diffs:
        raise ConfigError(f"{{out}} {quote(config.out)} is a run started with other options, so its finished backbones "
                          f"would not match this configuration ({'; '.join(diffs)}). Use another {{out}}, or "
                          "repeat the original options to resume it")


# The fine-tuning fields a folder's record may predate, at the value they had before they existed.
_PREDATED = {"mixup": 0.0}


def _as_then(recorded, now):
    """A folder's fine-tuning record with the fields it predates (`_PREDATED`, absent there) at their old value."""
    return {**{k: v for k, v in _PREDATED.items() if k in now and k not in recorded}, **recorded}


# Multiply-adds per second a 2-core CPU sustains in feature extraction: VGG16's measured 2.2 img/s at
# 224 px (15.5 G each; docs/benchmarks.md). With a backbone's registry count it estimates any row's time.
CPU_MACS_PER_S = 2.2 * 15.5e9


def slow_warning(rows, image_size, accelerator, images=60_000) -> str:
    """A warning when a row's (of `rows`, seen at `image_size` if pretrained, `None`: its own) extraction of `images` (CIFAR-10's 60,000) would take over an hour on a CPU,
    estimated from its registry multiply-adds (`BackboneSpec.macs`) at its size, with the way to skip it;
    else ''."""
    from kerasimpl.backbones import get_spec

    if accelerator:
        return ""
    slow = {}
    for row in rows:
        spec = get_spec(comparison.parse_row(row)[0])
        size = (image_size if spec.pretrained else None) or spec.input_size
        macs = spec.macs(size)
        if macs and images * macs / CPU_MACS_PER_S > 3600:
            slow[row] = (size, images * macs / CPU_MACS_PER_S / 3600)
    if not slow:
        return ""
    others = ",".join(b for b in rows if b not in slow) or "mobilenetv2"
    each = ", ".join(f"{row} at {size} px about {hours:.1f} h" for row, (size, hours) in slow.items())
    return (f"on a CPU these take hours: {each} to extract {images:,} images (from their multiply-adds at the "
            f"2.2 img/s VGG16 ran at on 2 CPU cores, docs/benchmarks.md). To skip them: --backbones {others} "
            f"(make run ARGS=\"--backbones {others}\")")
