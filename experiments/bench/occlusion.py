"""Occlusion section: one occlusion map against one batched forward pass of its masked copies.

Occlusion is forward passes only, so its map should cost about one forward
of all its masked copies (100 at 224 px with the 30/20 window).
"""

from __future__ import annotations

from experiments.bench.common import build_classifier, interleaved

KEY = "occlusion"


def run(plan, args):
    return bench_occlusion(args.image_size, max(2, plan["repeats"] - 1))


def bench_occlusion(size, repeats):
    import numpy as np

    from kerasimpl.inference import Forward
    from kerasimpl.saliency import Occlusion

    model = build_classifier("mobilenetv2", input_shape=(size, size, 3), image_size=size, weights=None)
    occ = Occlusion(model, patch=30, stride=20, batch_size=100)
    n = occ.grid_shape[0] * occ.grid_shape[1]
    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3)).astype("float32")
    batch = np.repeat(image, n, axis=0)
    forward = Forward(model)  # the fast path occlusion itself runs
    t_map, t_fwd = interleaved([lambda: occ.explain(image, [0]), lambda: forward(batch)], repeats)
    row = {"model": "mobilenetv2", "image_size": size, "masked_copies": n, "seconds_per_map": t_map,
           "seconds_forward_batch": t_fwd, "ratio": t_map / t_fwd}
    print(f"[bench] occlusion: {t_map:.2f} s per map vs {t_fwd:.2f} s forward of {n}: x{row['ratio']:.2f}", flush=True)
    return row


def table(o, info) -> list:
    return ["", f"occlusion ({o['masked_copies']} masked copies, {o['image_size']} px): "
            f"{o['seconds_per_map']:.2f} s per map, {o['seconds_forward_batch']:.2f} s per batched forward: "
            f"x{o['ratio']:.2f}"]
