"""Training section: seconds per end-to-end training step of compare rows at several image sizes."""

from __future__ import annotations

import time

from experiments.bench.common import markdown_table

KEY = "training"


def run(plan, args):
    return bench_training([r.strip() for r in args.train_rows.split(",") if r.strip()], plan["train_sizes"],
                          plan["train_steps"])


def bench_training(rows, sizes, steps, batch=64, epoch_images=40_000):
    """Seconds per end-to-end training step of each row at each image size (the real `fit` loop).

    `rows` are compare rows (e.g. `alexnet:scratch`, the whole AlexNet from
    random weights). Loaders ship 32x32 uint8 batches with compare's default
    augmentation (flip, translate) and the model resizes inside, as in a
    compare run. After a 2-step warm-up `fit` (compilation), `steps` steps are
    timed; the epoch time is that rate over `epoch_images` images (CIFAR-10's
    80% training split: 40,000), an extrapolation stated as such. Peak RSS
    is the process's maximum so far (sizes run in ascending order).
    """
    import resource

    import numpy as np

    from kerasimpl import comparison, models, runtime, training
    from kerasimpl.data import ArrayDataset
    from kerasimpl.heads import HeadConfig

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * (steps + 2), 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, len(x))
    out = []
    for row in rows:
        name, variant = comparison.parse_row(row)
        for size in sorted(sizes):
            run_ = comparison.row_run(name, variant or "scratch", None, size, HeadConfig((256,), 0.3))
            model = models.build_classifier(run_.backbone, 10, input_shape=(32, 32, 3), image_size=size,
                                            weights=None, head=run_.head, freeze_base=False,
                                            keep_top_hidden=run_.keep_top_hidden)
            training.compile_full(model, 1e-4)
            ds = ArrayDataset(x, y, batch, shuffle=True, augment=training.augmenter(("flip", "translate")))
            model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
            start = time.perf_counter()
            model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
            step = (time.perf_counter() - start) / steps
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            out.append({"row": row, "backend": runtime.backend(), "image_size": size, "batch": batch,
                        "timed_steps": steps, "seconds_per_step": step, "train_img_per_s": batch / step,
                        "epoch_images": epoch_images, "epoch_seconds_extrapolated": step * -(-epoch_images // batch),
                        "peak_rss_mb_so_far": rss})
            print(f"[bench] training {row} {size}px: {step:.2f} s/step of {batch}, {batch / step:.1f} img/s, "
                  f"epoch of {epoch_images} ~ {out[-1]['epoch_seconds_extrapolated'] / 60:.1f} min, "
                  f"peak RSS {rss:.0f} MB", flush=True)
    return out


def table(rows, info) -> list:
    return ["", markdown_table(rows, [
        "row", "backend", "image_size", "batch", "timed_steps", "seconds_per_step", "train_img_per_s",
        "epoch_seconds_extrapolated", "peak_rss_mb_so_far"],
        {"seconds_per_step": ".3f", "train_img_per_s": ".1f", "epoch_seconds_extrapolated": ".0f",
         "peak_rss_mb_so_far": ".0f"}),
        "epoch seconds: the timed steps' rate over the epoch's images (an extrapolation, not a timed epoch)."]
