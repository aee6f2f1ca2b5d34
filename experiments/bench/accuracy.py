"""Accuracy section: does extracting at a lower precision change what the head learns?

The same head (same seed) is trained on float32 and on each other
precision's features of the real CIFAR-10 subset (`--subset`), and both
test accuracies are reported.
"""

from __future__ import annotations

import time

from experiments.bench.common import build_classifier, markdown_table

KEY = "accuracy"


def run(plan, args):
    return bench_accuracy(plan["subset"], args.accuracy_backbone, args.accuracy_size, plan["precisions"],
                          epochs=plan["epochs"], weights=args.accuracy_weights)


def bench_accuracy(subset, backbone, size, precisions, epochs, seed=0, weights=None):
    """Test accuracy of the same head (same seed) on features extracted at each precision.

    The real CIFAR-10 subset (5,170 train, 500 test images); the base is
    frozen (`weights`: a local file, or random weights: frozen random
    features still carry information, enough to show whether bfloat16
    changes what the head learns).
    """
    import keras
    import numpy as np

    from kerasimpl import training
    from kerasimpl.data import load_dataset
    from kerasimpl.heads import HeadConfig, build_head

    data = load_dataset(subset)
    model = build_classifier(backbone, data.num_classes, image_size=size, weights=weights)
    rows, ref = [], None
    for p in precisions:
        start = time.perf_counter()
        kw = dict(batch_size=16, verbose=0, precision=p)
        f_train = training.extract_features(model, data.x_train, **kw)
        f_test = training.extract_features(model, data.x_test, **kw)
        seconds = time.perf_counter() - start
        keras.utils.set_random_seed(seed)
        head = build_head(f_train.shape[1], data.num_classes, HeadConfig((256,), 0.3))
        training.compile_head(head, 1e-3)
        head.fit(f_train, data.y_train, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
        acc = float((np.asarray(head.predict(f_test, verbose=0)).argmax(1) == data.y_test).mean())
        ref = ref if ref is not None else (acc if p == "float32" else None)
        rows.append({"backbone": backbone, "precision": p, "image_size": size, "weights": weights or "random",
                     "train_images": int(len(data.y_train)), "test_images": int(len(data.y_test)),
                     "extract_seconds": seconds, "test_accuracy": acc,
                     "points_vs_float32": 100 * (acc - ref) if ref is not None else None})
        print(f"[bench] accuracy {backbone} {p}: {acc:.1%} on the subset's test images", flush=True)
    return rows


def table(rows, info) -> list:
    return ["", markdown_table(rows, [
        "backbone", "precision", "image_size", "weights", "train_images", "test_images", "extract_seconds",
        "test_accuracy", "points_vs_float32"], {"test_accuracy": ".1%", "points_vs_float32": "+.1f"})]
