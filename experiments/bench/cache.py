"""Cache section: a frozen base's head trained on cached pooled features against re-running the base every epoch.

The second is the reference experiment's way (the frozen base runs on
every image of every epoch); the first is what `compare` does by default.
"""

from __future__ import annotations

import time

from experiments.bench.common import build_classifier

KEY = "cache_speedup"


def run(plan, args):
    return bench_cache(plan["epochs"], 64 if args.quick else 128)


def bench_cache(epochs, size, num_train=256):
    import tempfile

    from kerasimpl import training
    from kerasimpl.data import stratified_split, synthetic_dataset
    from kerasimpl.heads import HeadConfig

    data = synthetic_dataset(num_train=num_train, num_test=16, num_classes=10, image_size=32, seed=0)
    split = stratified_split(data.y_train, 0.2, 0)
    secs = {}
    for cache in (False, True):
        model = build_classifier("mobilenetv2", image_size=size, weights=None, head=HeadConfig((64,), 0.0))
        cfg = training.TrainConfig(epochs=epochs, batch_size=32, augment=(), patience=epochs + 1, cache_features=cache)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            training.train_classifier(model, data, split, cfg, folder, verbose=0)
            secs[cache] = time.perf_counter() - start
    row = {"backbone": "mobilenetv2", "image_size": size, "epochs": epochs, "num_train": int(len(split.train)),
           "reference_style_seconds": secs[False], "cached_seconds": secs[True], "speedup": secs[False] / secs[True]}
    print(f"[bench] cache: reference-style (base every epoch) {secs[False]:.1f} s, cached {secs[True]:.1f} s, "
          f"x{row['speedup']:.1f}", flush=True)
    return row


def table(c, info) -> list:
    return ["", f"cache speed-up ({c['epochs']} epochs, {c['num_train']} images, {c['image_size']} px): "
            f"{c['reference_style_seconds']:.1f} s (base every epoch, as the reference experiment) / "
            f"{c['cached_seconds']:.1f} s = x{c['speedup']:.2f}"]
