"""What the benchmark sections and `experiments.bench_full` share: timing, models, the machine's peak, output.

One implementation of each: the warning-silenced model build, the timed
measurement (median after warm-up, interleaved so ratios survive a noisy
machine; one timed call), markdown tables, and atomic JSON / log files.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings



def macs_224() -> dict:
    """Published multiply-adds per 224x224 image of each backbone that has them (the registry's
    `BackboneSpec.macs_224`; not measured here). Other sizes scale with the pixel count."""
    from kerasimpl.backbones import get_spec, list_backbones

    return {n: get_spec(n).macs_224 for n in list_backbones() if get_spec(n).macs_224}


def build_classifier(name, num_classes=10, **kwargs):
    """`models.build_classifier` with Keras' input-size notes silenced (random weights are on purpose here)."""
    from kerasimpl import models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return models.build_classifier(name, num_classes, **kwargs)


def native_twin(name, device="cpu"):
    """The native PyTorch twin of a backbone as `run(uint8 NHWC batch, precision) -> pooled features`, or a
    string saying why there is none.

    The twin is the registry's `BackboneSpec.native`: a torchvision constructor's `features` (with
    torchvision's ImageNet mean/std), or for EfficientNet-Lite the reference implementation its
    checkpoints were made for (`efficientnet-lite-pytorch`, its `(x - 127) / 128`), then a global average
    pool; random weights, eval mode, channels-last, under `torch.inference_mode`, `bfloat16`/`float16`
    under `torch.autocast`. Like `kerasimpl.inference.Forward` it takes the host's uint8 batch and returns
    the features on the host, so both are timed on the same work. Used by the bench and `gpu_check`.
    """
    import keras

    from kerasimpl.backbones import get_spec

    native = get_spec(name).native
    if native is None:
        return "no native twin in the registry"
    if keras.backend.backend() != "torch":
        return f"the native twin runs beside Keras' torch backend (backend: {keras.backend.backend()})"
    import torch

    try:
        if native.startswith("efficientnet-lite"):
            from efficientnet_lite_pytorch import EfficientNet

            net = EfficientNet.from_name(native)
            features, mean, std = net.extract_features, (127.0,) * 3, (128.0,) * 3
        else:
            import torchvision

            net = getattr(torchvision.models, native)(weights=None)
            features = net.features
            mean = tuple(255 * m for m in (0.485, 0.456, 0.406))
            std = tuple(255 * s for s in (0.229, 0.224, 0.225))
    except Exception as e:  # not installed, or built for another torch
        return f"not available ({type(e).__name__}: {e})"
    net.eval().to(device).to(memory_format=torch.channels_last)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}

    @torch.inference_mode()
    def run(batch, precision="float32"):
        x = torch.from_numpy(batch).to(device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = ((x - mean_t) / std_t).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device, dtype=dtypes.get(precision, torch.bfloat16), enabled=precision in dtypes):
            y = features(x)
        return y.float().mean((2, 3)).cpu().numpy()

    return run


def interleaved(fns, repeats, warmup=1):
    """Median seconds of each callable, timed A, B, A, B ... after warm-up."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def timed(fn):
    """Seconds of one call of `fn`."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def extraction_speed(model, x, batch_size, precision="float32"):
    """Images/s of `training.extract_features` over `x` (after a two-batch warm-up): what compare runs."""
    from kerasimpl import training

    training.extract_features(model, x[: 2 * batch_size], batch_size=batch_size, verbose=0, precision=precision)
    start = time.perf_counter()
    training.extract_features(model, x, batch_size=batch_size, verbose=0, precision=precision)
    return len(x) / (time.perf_counter() - start)


def achieved_macs(name, image_size, img_per_s):
    """Multiply-adds per second from the published count (None for a backbone without one)."""
    from kerasimpl.backbones import get_spec

    macs = get_spec(name).macs(image_size)
    return None if macs is None else macs * img_per_s


def cpu_peak_macs(cpuinfo="/proc/cpuinfo"):
    """The CPU's float32 peak multiply-adds/s: cores x FMA lanes x FMA units x clock, and its source.

    Lanes: 16 with AVX-512, 8 with AVX2/FMA, 4 otherwise (float32 per
    vector); 2 FMA units per core (Zen 2-4, Skylake-SP and later server
    cores: an assumption, stated); clock: the `cpu MHz` the kernel reports
    (not the turbo ceiling). Returns `(peak or None, description)`.
    """
    from kerasimpl.precision import cpu_flags

    flags = cpu_flags(cpuinfo)
    mhz = None
    try:
        with open(cpuinfo) as f:
            mhz = next((float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")), None)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4
    if mhz is None or not cores:
        return None, "unknown (no 'cpu MHz' in /proc/cpuinfo)"
    peak = cores * lanes * 2 * mhz * 1e6
    return peak, (f"{cores} cores x {lanes} float32 lanes ({'avx512f' if lanes == 16 else 'avx2+fma'}) x 2 FMA "
                  f"units (assumed) x {mhz:.0f} MHz (/proc/cpuinfo) = {peak / 1e9:.0f} G multiply-adds/s")


def markdown_table(rows, columns=None, formats=None) -> str:
    """A markdown table of dict rows; floats with one decimal unless `formats[key]` says otherwise."""
    if not rows:
        return ""
    columns = columns or list(rows[0])
    formats = formats or {}

    def cell(key, v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return format(v, formats.get(key, ".1f"))
        return str(v)

    from kerasimpl.reporting import markdown_grid

    return "\n".join(markdown_grid(columns, [[cell(k, r.get(k)) for k in columns] for r in rows]))


def write_report(path, report):
    """JSON, atomically (a crash leaves the old file or none, never half of one)."""
    from kerasimpl.artifacts import write_json

    write_json(path, report)


def write_log(path, text):
    from kerasimpl.artifacts import write_text

    write_text(path, text)
