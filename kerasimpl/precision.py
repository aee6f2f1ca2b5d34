"""Numeric precision: which one to run, and how each path applies it.

`--precision` takes `float32` (the default everywhere: results do not
change with the CPU's flags unless asked), `bfloat16`, `float16` or `auto`
(recorded where used as the precision it resolved to):

- Inference-only passes (feature extraction, evaluation, `infer`, the
  forward passes of black-box saliency) run the compiled torch program
  (`kerasimpl.backend.torch.inference`) under `torch.autocast` with that dtype;
  weights stay float32, convolutions and matrix products run in the low
  precision, softmax in float32.
- Training and fine-tuning build the model under Keras' own dtype policy
  (`mixed_bfloat16`, `mixed_float16`: float32 variables, low-precision
  compute; `model.compile` wraps the optimizer in Keras'
  `LossScaleOptimizer` under `mixed_float16`, as Keras does), never a
  hand-written cast. Saved `.keras` files, checkpoints included, are
  float32 models (`artifacts.save_model` writes `float32_copy`), loadable
  and float32-exact on any backend.

`auto` picks `bfloat16` only where the hardware runs it fast: a CPU whose
`/proc/cpuinfo` flags include AMX (`amx_bf16`) or AVX512-BF16
(`avx512_bf16`), or a CUDA GPU of compute capability 8.0 or higher (Ampere
and later); everywhere else `float32`. `float16` is a CUDA choice (CPUs
have no fast float16 arithmetic).
"""

from __future__ import annotations

import contextlib

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
KERAS_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def cpu_flags(path="/proc/cpuinfo") -> set:
    """The CPU feature flags the kernel reports (empty where unreadable)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def accelerator():
    """`("cuda", (major, minor))` when the Keras backend computes on a CUDA GPU, else `("cpu", None)`.

    The backend is Keras' own (`keras.backend.backend()`), wherever it was chosen: the environment or
    `~/.keras/keras.json`; each backend asks its own engine (`kerasimpl.backend`)."""
    from kerasimpl import backend

    return backend.accelerator()


def auto_precision(device="cpu", capability=None, flags=None) -> str:
    """What `auto` means on `device` (injectable, for tests).

    Args:
        device: `"cpu"` or `"cuda"`.
        capability: CUDA compute capability `(major, minor)`.
        flags: CPU flags (default: this machine's `/proc/cpuinfo`).
    """
    if device == "cuda":
        return "bfloat16" if capability is not None and tuple(capability) >= (8, 0) else "float32"
    flags = cpu_flags() if flags is None else set(flags)
    return "bfloat16" if flags & set(FAST_BF16_CPU_FLAGS) else "float32"


def resolve(requested="float32", device=None, capability=None, flags=None) -> str:
    """The concrete precision (`float32`, `bfloat16` or `float16`) for `requested`.

    Raises:
        ValueError: an unknown name, or `float16` without a CUDA GPU.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"Unknown precision. Received: {requested!r}. Accepted: {PRECISIONS}")
    if device is None:
        device, capability = accelerator()
    if requested == "auto":
        return auto_precision(device, capability, flags)
    if requested == "float16" and device != "cuda":
        raise ValueError(f"precision 'float16' needs a CUDA GPU (CPUs have no fast float16 arithmetic); this "
                         f"device is {device!r}. Accepted here: float32, bfloat16, auto")
    return requested


def describe_auto() -> str:
    """One line for `--help`: how `auto` decides, and what it gives here."""
    device, cap = accelerator()
    where = f"cuda, compute capability {cap[0]}.{cap[1]}" if device == "cuda" else "this CPU"
    return (f"auto: bfloat16 on a CPU with AMX or AVX512-BF16 (/proc/cpuinfo flags amx_bf16, avx512_bf16) or a "
            f"CUDA GPU of compute capability >= 8.0, else float32 (here, {where}: {auto_precision(device, cap)}); "
            "float16 needs CUDA")


@contextlib.contextmanager
def keras_policy(precision):
    """Build models inside under Keras' dtype policy for `precision`; restored after.

    Keras keeps the policy as process state; this scopes it to the block.
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(KERAS_POLICY[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def has_low_precision(model) -> bool:
    """Whether any layer of `model` computes under a low-precision policy."""
    layers = list(getattr(model, "layers", []))
    return getattr(model.dtype_policy, "name", "float32") in LOW or any(has_low_precision(l) for l in layers)


def float32_copy(model):
    """`model` with every layer's dtype policy float32 and the same weights.

    A model trained under `mixed_bfloat16` / `mixed_float16` keeps float32
    variables; this copy computes in float32 too, so the saved file gives
    float32 predictions on any backend and device.
    """
    import json

    import keras

    config = _float32_config(json.loads(model.to_json()))
    copy = keras.models.model_from_json(json.dumps(config))
    copy.set_weights(model.get_weights())
    return copy


def _float32_config(node):
    if isinstance(node, dict):
        if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(node.get("config"), dict):
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {k: "float32" if k == "dtype" and v in LOW else _float32_config(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_float32_config(v) for v in node]
    return node


LOW = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")
