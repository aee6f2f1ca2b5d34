"""Benchmarks: frozen-base extraction vs native PyTorch, feature caching, saliency.

    python -m experiments.bench --quick            # < 3 min on 2 CPU cores
    python -m experiments.bench --json bench.json  # full settings
    python -m experiments.bench --sections saliency --saliency-size 160

Sections (`--sections`): extraction, cache, occlusion, saliency. The
saliency section times every registered method's seconds per image on one
model and batch, and, on torch where pytorch-grad-cam or Captum implement
the same map (`pip install -e '.[reference]'` and `pip install --no-deps
grad-cam==1.5.7`), theirs on the same Keras model in the same process
(`kerasimpl.saliency.reference`), with the ratio.

Every figure is a median over repeats after warm-up; Keras and native
PyTorch are timed in the same process, interleaved (A, B, A, B ...), so
their ratio holds on a noisy shared machine even when absolute img/s does
not. Random weights throughout (speed does not depend on their values).
"""

from __future__ import annotations

import experiments  # noqa: F401  (sets the default backend before keras loads)

import argparse
import json
import statistics
import sys
import time
import warnings

BACKBONES = ("vgg16", "mobilenetv2", "mobilenetv3large", "efficientnetb0")
# torchvision constructors of the same architectures (features + global pool).
NATIVE = {"vgg16": "vgg16", "mobilenetv2": "mobilenet_v2", "mobilenetv3large": "mobilenet_v3_large",
          "efficientnetb0": "efficientnet_b0"}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small batch, few repeats (< 3 min on 2 CPU cores)")
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--batch", type=int, help="extraction batch (default 32; quick 8)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, help="timed repeats per measurement (default 5; quick 3)")
    p.add_argument("--epochs", type=int, help="head epochs for the cache speed-up (default 10; quick 4)")
    p.add_argument("--sections", default="extraction,cache,occlusion,saliency",
                   help="comma-separated: extraction, cache, occlusion, saliency (default: all)")
    p.add_argument("--saliency-backbone", default="mobilenetv2", help="classifier of the saliency section")
    p.add_argument("--saliency-size", type=int, default=224, help="input size of the saliency section's model")
    p.add_argument("--saliency-batch", type=int, default=2, help="images per explain() call in the saliency section")
    p.add_argument("--json", help="also write the results here")
    return p


def median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def native_extractor(name):
    """The torchvision twin of a backbone, or None when torchvision is missing."""
    import keras

    if keras.backend.backend() != "torch":
        return None
    try:
        import torch
        import torchvision
    except Exception:  # not installed, or built for another torch
        return None
    net = getattr(torchvision.models, NATIVE[name])(weights=None).eval()
    model = torch.nn.Sequential(net.features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return model.to(memory_format=torch.channels_last)


def bench_extraction(names, batch, size, repeats):
    import numpy as np

    from kerasimpl import models, runtime

    rows = []
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = models.build_classifier(name, 10, input_shape=(size, size, 3), image_size=size, weights=None)
        fe = models.feature_extractor(model)
        fast = _compiled(fe)
        fns = [lambda: fe.predict_on_batch(x), (lambda: fast(x)) if fast else (lambda: None)]
        native = native_extractor(name)
        if native is not None:
            import torch

            xt = torch.from_numpy(x).permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)

            def run_native():
                with torch.inference_mode():
                    native(xt)

            fns.append(run_native)
        secs = interleaved(fns, repeats)
        plain_ips = batch / secs[0]
        keras_ips = batch / secs[1] if fast else plain_ips  # what kerasimpl's extraction runs
        native_ips = batch / secs[2] if native is not None else None
        rows.append({"backbone": name, "backend": runtime.backend(), "batch": batch, "image_size": size,
                     "keras_img_per_s": keras_ips, "plain_keras_img_per_s": plain_ips,
                     "compiled": bool(fast), "native_img_per_s": native_ips,
                     "ratio_vs_native": keras_ips / native_ips if native_ips else None,
                     "plain_ratio_vs_native": plain_ips / native_ips if native_ips else None})
        print(f"[bench] extraction {name}: kerasimpl {keras_ips:.1f} img/s, plain Keras {plain_ips:.1f}"
              + (f", native {native_ips:.1f}, ratio {keras_ips / native_ips:.2f}" if native_ips else ""),
              flush=True)
    return rows


def _compiled(extractor):
    """kerasimpl's native-torch extraction program, or None (other backend)."""
    from kerasimpl.torch_inference import compile_frozen

    try:
        return compile_frozen(extractor)
    except NotImplementedError:
        return None


def bench_cache(epochs, size, num_train=256):
    import tempfile

    from kerasimpl import models, training
    from kerasimpl.data import stratified_split, synthetic_dataset
    from kerasimpl.heads import HeadConfig

    data = synthetic_dataset(num_train=num_train, num_test=16, num_classes=10, image_size=32, seed=0)
    split = stratified_split(data.y_train, 0.2, 0)
    secs = {}
    for cache in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = models.build_classifier("mobilenetv2", 10, image_size=size, weights=None, head=HeadConfig((64,), 0.0))
        cfg = training.TrainConfig(epochs=epochs, batch_size=32, augment=(), patience=epochs + 1, cache_features=cache)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            training.train_classifier(model, data, split, cfg, folder, verbose=0)
            secs[cache] = time.perf_counter() - start
    row = {"backbone": "mobilenetv2", "image_size": size, "epochs": epochs, "num_train": int(len(split.train)),
           "seed_style_seconds": secs[False], "cached_seconds": secs[True], "speedup": secs[False] / secs[True]}
    print(f"[bench] cache: seed-style {secs[False]:.1f} s, cached {secs[True]:.1f} s, x{row['speedup']:.1f}", flush=True)
    return row


def bench_occlusion(size, repeats):
    import numpy as np

    from kerasimpl import models
    from kerasimpl.saliency import Occlusion

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = models.build_classifier("mobilenetv2", 10, input_shape=(size, size, 3), image_size=size, weights=None)
    occ = Occlusion(model, patch=30, stride=20, batch_size=100)
    n = occ.grid_shape[0] * occ.grid_shape[1]
    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3)).astype("float32")
    batch = np.repeat(image, n, axis=0)
    t_map, t_fwd = interleaved([lambda: occ.explain(image, [0]), lambda: model.predict_on_batch(batch)], repeats)
    row = {"model": "mobilenetv2", "image_size": size, "masked_copies": n, "seconds_per_map": t_map,
           "seconds_forward_batch": t_fwd, "ratio": t_map / t_fwd}
    print(f"[bench] occlusion: {t_map:.2f} s per map vs {t_fwd:.2f} s forward of {n}: x{row['ratio']:.2f}", flush=True)
    return row


def bench_saliency(size, batch, quick=False, backbone="mobilenetv2"):
    """Seconds per image of every method (ours, and the reference's where one exists).

    A `backbone` classifier (random weights, 10 classes), `batch` images per
    call, default options of each method; one warm-up call each, then one
    timed call (the slow methods take tens of seconds; the ratio is what
    counts). References run on the same Keras model through the NCHW wrappers.
    """
    import keras
    import numpy as np

    from kerasimpl import models, saliency

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = models.build_classifier(backbone, 10, input_shape=(size, size, 3),
                                        image_size=size if models.get_spec(backbone).pretrained else None, weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    targets = [int(t) for t in np.arange(batch) % 10]
    refs = _reference_methods() if keras.backend.backend() == "torch" else {}
    saliency.GradCAM(model).explain(x, targets)  # warm-up at the timed batch shape (forward and backward)
    rows = []
    for name in saliency.list_methods():
        opts = {"masks": 200, "samples": 8, "steps": 16} if quick else {}
        method = saliency.get_method(name, model, **{k: v for k, v in opts.items()
                                                       if k in saliency.method_options(name)})
        method.explain(x[:1], targets[:1])  # warm-up
        ours = _timed(lambda: method.explain(x, targets)) / batch
        row = {"method": name, "backbone": backbone, "image_size": size, "batch": batch, "options": method.options(),
               "seconds_per_image": ours, "reference": None, "reference_seconds_per_image": None, "ratio": None}
        if name in refs:
            label, run = refs[name]
            run(method, x[:1], targets[:1])  # warm-up
            theirs = _timed(lambda: run(method, x, targets)) / batch
            row.update(reference=label, reference_seconds_per_image=theirs, ratio=ours / theirs)
        rows.append(row)
        print(f"[bench] saliency {name}: {ours:.3f} s/image" +
              (f", {row['reference']} {row['reference_seconds_per_image']:.3f} s/image, x{row['ratio']:.2f}"
               if row["reference"] else ""), flush=True)
    return rows


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _reference_methods():
    """name -> (label, run(method, x, targets)) for the installed reference libraries."""
    import torch

    from kerasimpl.saliency import reference

    out = {}
    try:
        pgc = reference.import_pytorch_grad_cam()
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        classes = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "hirescam": "HiResCAM",
                   "xgradcam": "XGradCAM", "layercam": "LayerCAM", "scorecam": "ScoreCAM", "eigencam": "EigenCAM"}

        def pgc_run(cls_name):
            def run(method, x, targets):
                wrapper = reference.nchw_classifier(method)
                with getattr(pgc, cls_name)(model=wrapper, target_layers=[wrapper.to_nchw]) as cam:
                    if cls_name == "ScoreCAM":
                        cam.batch_size = getattr(method, "batch_size", 32)  # the same masked forwards per call
                    return cam(input_tensor=torch.tensor(x).permute(0, 3, 1, 2),
                               targets=[ClassifierOutputTarget(t) for t in targets])
            return run

        out.update({n: ("pytorch-grad-cam " + c, pgc_run(c)) for n, c in classes.items()})
    except ImportError:
        pass
    try:
        from captum import attr

        def captum_run(kind):
            def run(method, x, targets):
                xt = torch.tensor(x).permute(0, 3, 1, 2)
                if kind == "Occlusion":
                    o = method.options()

                    def forward(z):
                        return method.model(z.permute(0, 2, 3, 1))

                    return attr.Occlusion(forward).attribute(
                        xt, sliding_window_shapes=(3, o["patch"], o["patch"]), strides=(3, o["stride"], o["stride"]),
                        target=targets, baselines=o["fill"], perturbations_per_eval=o["batch_size"])
                forward = reference.nchw_logits(method.logits)
                if kind == "Saliency":
                    return attr.Saliency(forward).attribute(xt.requires_grad_(True), target=targets, abs=True)
                o = method.options()
                return attr.IntegratedGradients(forward).attribute(
                    xt, baselines=o["baseline"], target=targets, n_steps=o["steps"], method=o["method"],
                    internal_batch_size=o["batch_size"])
            return run

        out.update({"gradients": ("Captum Saliency", captum_run("Saliency")),
                    "integrated-gradients": ("Captum IntegratedGradients", captum_run("IntegratedGradients")),
                    "occlusion": ("Captum Occlusion", captum_run("Occlusion"))})
    except ImportError:
        pass
    return out


def bench_mixed_precision(size, batch, repeats):
    """GPU only: extraction img/s with and without mixed precision."""
    import keras
    import numpy as np

    from kerasimpl import models

    rows = []
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    for policy in ("float32", "mixed_bfloat16", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fe = models.feature_extractor(models.build_classifier("mobilenetv2", 10, input_shape=(size, size, 3),
                                                                  image_size=size, weights=None))
        secs = median_time(lambda: fe.predict_on_batch(x), repeats)
        rows.append({"policy": policy, "backbone": "mobilenetv2", "batch": batch, "img_per_s": batch / secs})
    keras.config.set_dtype_policy("float32")
    return rows


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kerasimpl import runtime

    batch = args.batch or (8 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 5)
    epochs = args.epochs or (4 if args.quick else 10)
    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    unknown = [n for n in names if n not in NATIVE]
    if unknown:
        print(f"error: unknown backbone {unknown}. Accepted: {', '.join(BACKBONES)}", file=sys.stderr)
        return 2
    info = {"versions": runtime.versions(), "device": runtime.device_description(), "threads": _threads(),
            "quick": args.quick, "repeats": repeats}
    print(f"[bench] {info['device']}; {info['versions']}", flush=True)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    bad = sections - {"extraction", "cache", "occlusion", "saliency"}
    if bad:
        print(f"error: unknown section {sorted(bad)}. Accepted: extraction, cache, occlusion, saliency", file=sys.stderr)
        return 2
    results = {"info": info}
    if "extraction" in sections:
        results["extraction"] = bench_extraction(names, batch, args.image_size, repeats)
    if "cache" in sections:
        results["cache_speedup"] = bench_cache(epochs, 64 if args.quick else 128)
    if "occlusion" in sections:
        results["occlusion"] = bench_occlusion(args.image_size, max(2, repeats - 1))
    if "saliency" in sections:
        results["saliency"] = bench_saliency(args.saliency_size, args.saliency_batch, quick=args.quick,
                                             backbone=args.saliency_backbone)
    if _on_gpu():
        results["mixed_precision"] = bench_mixed_precision(args.image_size, 64, repeats)
    print(table(results))
    if args.json:
        from kerasimpl.artifacts import write_json

        write_json(args.json, results)
    return 0


def table(results) -> str:
    lines = []
    if "extraction" in results:
        lines += _extraction_table(results)
    if "cache_speedup" in results:
        c = results["cache_speedup"]
        lines += ["", f"cache speed-up ({c['epochs']} epochs, {c['num_train']} images, {c['image_size']} px): "
                  f"{c['seed_style_seconds']:.1f} s / {c['cached_seconds']:.1f} s = x{c['speedup']:.2f}"]
    if "occlusion" in results:
        o = results["occlusion"]
        lines += ["", f"occlusion ({o['masked_copies']} masked copies, {o['image_size']} px): "
                  f"{o['seconds_per_map']:.2f} s per map, {o['seconds_forward_batch']:.2f} s per batched forward: "
                  f"x{o['ratio']:.2f}"]
    if "saliency" in results:
        lines += ["", "| method | model | px | batch | s / image | reference | reference s / image | ours / reference |",
                  "| --- " * 8 + "|"]
        for r in results["saliency"]:
            ref = (f"{r['reference']} | {r['reference_seconds_per_image']:.3f} | {r['ratio']:.2f}"
                   if r["reference"] else "- | - | -")
            lines.append(f"| {r['method']} | {r['backbone']} | {r['image_size']} | {r['batch']} | {r['seconds_per_image']:.3f} | {ref} |")
    for m in results.get("mixed_precision", []):
        lines.append(f"mixed precision {m['policy']}: {m['img_per_s']:.0f} img/s")
    return "\n".join(lines)


def _extraction_table(results) -> list:
    lines = ["| backbone | backend | batch | px | kerasimpl img/s | plain Keras img/s | native img/s "
             "| kerasimpl / native | plain / native |", "| --- " * 9 + "|"]
    for r in results["extraction"]:
        def fmt(v, spec):
            return format(v, spec) if v else "-"

        lines.append(f"| {r['backbone']} | {r['backend']} | {r['batch']} | {r['image_size']} | "
                     f"{r['keras_img_per_s']:.1f} | {r['plain_keras_img_per_s']:.1f} | "
                     f"{fmt(r['native_img_per_s'], '.1f')} | {fmt(r['ratio_vs_native'], '.2f')} | "
                     f"{fmt(r['plain_ratio_vs_native'], '.2f')} |")
    return lines


def _threads():
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


def _on_gpu():
    from kerasimpl import runtime

    return runtime.has_accelerator()


if __name__ == "__main__":
    sys.exit(main())
