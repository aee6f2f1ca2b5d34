"""The two cost figures behind the saliency defaults (docs/benchmarks.md, docs/saliency.md), for a saved model.

    KERAS_BACKEND=torch python docs/saliency_costs.py throughput <model.keras> [float32|bfloat16]
    KERAS_BACKEND=torch python docs/saliency_costs.py gradient-memory <model.keras> BATCH

throughput: images/s of `Forward` (the fast path the quality metrics and occlusion use) at batches
of 16, 32, 64 and 100, each for 8 s after a warm-up, on seeded random 32x32 raw images (speed does
not depend on them): why occlusion and `Scorer` use the device's inference batch (16 on a CPU).
gradient-memory: the process's peak RSS after the `gradients` method explains 32 images BATCH at a
time: why the input-gradient methods default to the device's inference batch. Run each in a fresh
process (peak RSS is per process).
"""
import resource
import sys
import time

import numpy as np

from kerasimpl.artifacts import load_model


def throughput(path, precision="float32"):
    from kerasimpl.inference import Forward

    f = Forward(load_model(path), precision).build()
    side = f.model.input_shape[1]
    x = np.random.default_rng(0).uniform(0, 255, (128, side, side, 3)).astype("float32")
    print(f.path)
    for batch in (16, 32, 64, 100):
        f(x[:batch])
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 8:
            f(x[:batch])
            n += batch
        print(f"{precision} batch {batch}: {n / (time.perf_counter() - start):.1f} img/s", flush=True)


def gradient_memory(path, batch):
    from kerasimpl import saliency

    model = load_model(path)
    side = model.input_shape[1]
    x = np.random.default_rng(0).uniform(0, 255, (32, side, side, 3)).astype("float32")
    saliency.get_method("gradients", model, batch_size=int(batch)).explain(x, [0] * 32)
    print(f"batch {batch}: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    {"throughput": throughput, "gradient-memory": gradient_memory}[what](*args)
