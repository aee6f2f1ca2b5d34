"""Saliency section: seconds per image of every registered method, and of the reference libraries' same map.

On torch, where pytorch-grad-cam or Captum implement the same map
(`pip install -e '.[reference]'` and `pip install --no-deps
grad-cam==1.5.7`), theirs runs on the same Keras model in the same process
(`kerasimpl.saliency.reference`), with the ratio; torchcam's too, in its
own columns.

Occlusion's window is the reference experiment's 30/20 at 224 px, scaled
to other input sizes (`saliency.occlusion.scaled_window`, as the CLIs
scale it). With `--quick` the section is shrunk to fit the quick run:
every method at a 64 px input and one image per call (unless
`--saliency-size` / `--saliency-batch` say otherwise) with fewer masks,
noisy copies and steps (`QUICK_OPTIONS`), and the references of the
masked-forward CAMs (`MASKED_FORWARD_CAMS`: Score-CAM, SS-CAM, IS-CAM)
are not timed: they run one forward pass per channel of the layer (and
per noisy copy or step), pytorch-grad-cam's Score-CAM measured 74 s per
image at 224 px.
"""

from __future__ import annotations

from experiments.bench.common import build_classifier, markdown_table, timed

KEY = "saliency"
QUICK_SIZE = 64
# Options of each method in a quick run (each method's defaults otherwise).
QUICK_OPTIONS = {"rise": {"masks": 200}, "smoothgrad": {"samples": 8}, "integrated-gradients": {"steps": 16},
                 "sscam": {"samples": 1}, "iscam": {"steps": 1}}  # a Score-CAM's cost each
MASKED_FORWARD_CAMS = ("scorecam", "sscam", "iscam")
COLUMNS = ["method", "backbone", "image_size", "batch", "seconds_per_image", "reference",
           "reference_seconds_per_image", "ratio", "torchcam", "torchcam_seconds_per_image", "torchcam_ratio"]
FORMATS = {"seconds_per_image": ".3f", "reference_seconds_per_image": ".3f", "ratio": ".2f",
           "torchcam_seconds_per_image": ".3f", "torchcam_ratio": ".2f"}


def run(plan, args):
    if args.quick:
        return bench_saliency(args.saliency_size or QUICK_SIZE, args.saliency_batch or 1, args.saliency_backbone,
                              QUICK_OPTIONS, untimed_references=MASKED_FORWARD_CAMS)
    return bench_saliency(args.saliency_size or 224, args.saliency_batch or 2, args.saliency_backbone)


def bench_saliency(size, batch, backbone="mobilenetv2", options=None, untimed_references=()):
    """Seconds per image of every method (ours, and each reference library's where it has the method).

    A `backbone` classifier (random weights, 10 classes) with a linear head
    (pooled features -> Dense), so CAM (Zhou et al.) applies too; `batch`
    images per call; each method's default options, or those of
    `options[name]` (occlusion's 224-px window scaled to `size`, as the
    CLIs do); one warm-up call each, then one timed call (the slow methods
    take tens of seconds; the ratio is what counts). The references of the
    methods in `untimed_references` are not run.
    """
    import keras
    import numpy as np

    from kerasimpl import models, saliency
    from kerasimpl.saliency.occlusion import scaled_window

    model = build_classifier(backbone, input_shape=(size, size, 3),
                             image_size=size if models.get_spec(backbone).pretrained else None, weights=None,
                             head=_linear_head())
    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    targets = [int(t) for t in np.arange(batch) % 10]
    on_torch = keras.backend.backend() == "torch"
    saliency.GradCAM(model).explain(x, targets)  # warm-up at the timed batch shape (forward and backward)
    rows = []
    window = dict(zip(("patch", "stride"), scaled_window(size)))  # 30/20 at 224 px
    for name in saliency.list_methods():
        opts = {**(window if name == "occlusion" else {}), **(options or {}).get(name, {})}
        method = saliency.get_method(name, model, **opts)
        method.explain(x[:1], targets[:1])  # warm-up
        ours = timed(lambda: method.explain(x, targets)) / batch
        row = {"method": name, "backbone": backbone, "image_size": size, "batch": batch, "options": method.options(),
               "seconds_per_image": ours, "reference": None, "reference_seconds_per_image": None, "ratio": None,
               "torchcam": None, "torchcam_seconds_per_image": None, "torchcam_ratio": None, "note": None}
        if on_torch and name in untimed_references:
            row["note"] = "references not timed with --quick (one forward pass per channel)"
        elif on_torch:
            _time_references(row, method, x, targets)
        rows.append(row)
        _print(row)
    return rows


def _linear_head():
    from kerasimpl.heads import HeadConfig

    return HeadConfig(hidden=(), dropout=0.0)


def _time_references(row, method, x, targets):
    """pytorch-grad-cam's or Captum's, and torchcam's, seconds per image of `method`'s map, where installed."""
    from kerasimpl.saliency import reference

    batch = len(x)
    try:
        label, run = reference.runner(method)
    except (KeyError, ImportError):
        pass
    else:
        run(x[:1], targets[:1])  # warm-up
        theirs = timed(lambda: run(x, targets)) / batch
        row.update(reference=label, reference_seconds_per_image=theirs, ratio=row["seconds_per_image"] / theirs)
    if method.name in reference.TORCHCAM:
        try:
            run = reference.torchcam_runner(method)
        except ImportError:
            return
        run(x[:1], targets[:1])  # warm-up
        theirs = timed(lambda: run(x, targets)) / batch
        row.update(torchcam=f"torchcam {reference.TORCHCAM[method.name]}", torchcam_seconds_per_image=theirs,
                   torchcam_ratio=row["seconds_per_image"] / theirs)


def _print(row):
    print(f"[bench] saliency {row['method']}: {row['seconds_per_image']:.3f} s/image" +
          (f", {row['reference']} {row['reference_seconds_per_image']:.3f} s/image, x{row['ratio']:.2f}"
           if row["reference"] else "") +
          (f", {row['torchcam']} {row['torchcam_seconds_per_image']:.3f} s/image, x{row['torchcam_ratio']:.2f}"
           if row["torchcam"] else "") + (f" ({row['note']})" if row["note"] else ""), flush=True)


def table(rows, info) -> list:
    lines = ["", markdown_table(rows, COLUMNS, FORMATS)]
    skipped = [r["method"] for r in rows if r.get("note")]
    if skipped:
        lines.append(f"{', '.join(skipped)}: references not timed with --quick (one forward pass per channel of "
                     "the layer; pytorch-grad-cam's Score-CAM took 74 s per image at 224 px).")
    return lines
