"""Benchmarks: frozen-base extraction vs native PyTorch, feature caching, saliency.

    python -m experiments.bench --quick            # < 3 min on 2 CPU cores
    python -m experiments.bench --json bench.json  # full settings
    python -m experiments.bench --sections saliency --saliency-size 160

Sections (`--sections`): extraction, cache, occlusion, saliency, accuracy,
training (seconds per end-to-end training step of `--train-rows` at
`--train-sizes`, e.g. AlexNet from scratch at 64/96/224 px, with the epoch
time extrapolated and peak memory).
Extraction has one row per backbone and precision (`--precision`): the
compiled base's img/s, the whole saved classifier's img/s at the same
batch and precision (and its ratio to the base), the pooled features'
relative error against float32, and the achieved multiply-adds/s
(published counts x img/s) next to this CPU's float32 peak. The accuracy
section trains the same head (same seed) on float32 and on bfloat16
features of the real CIFAR-10 subset (`--subset`) and reports both test
accuracies. The
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
import sys
import time

from experiments.benchmarking import (MACS_224, achieved_macs, build_classifier, cpu_peak_macs, interleaved,
                                      markdown_table, write_report)

BACKBONES = ("vgg16", "mobilenetv2", "mobilenetv3large", "efficientnetb0", "alexnet")
# torchvision constructors of the same architectures (features + global pool).
NATIVE = {"vgg16": "vgg16", "mobilenetv2": "mobilenet_v2", "mobilenetv3large": "mobilenet_v3_large",
          "efficientnetb0": "efficientnet_b0", "alexnet": "alexnet"}


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
                   help="comma-separated: extraction, cache, occlusion, saliency, accuracy, training (default: all "
                        "but accuracy, which needs --subset, and training)")
    p.add_argument("--precision", default="all",
                   help="precisions of the extraction and accuracy sections: comma-separated from float32, "
                        "bfloat16, float16 (CUDA only), or auto (what --precision auto picks here), or all "
                        "(float32 and bfloat16, plus float16 on CUDA; default). auto: bfloat16 on a CPU with "
                        "AMX/AVX512-BF16 or CUDA compute capability >= 8.0, else float32")
    p.add_argument("--subset", help="the real CIFAR-10 subset archive of the accuracy section "
                   "(default: $KERASIMPL_CIFAR10_SUBSET)")
    p.add_argument("--accuracy-backbone", default="mobilenetv2", help="frozen base of the accuracy section")
    p.add_argument("--accuracy-size", type=int, default=96, help="image size of the accuracy section (default 96)")
    p.add_argument("--accuracy-weights", help="a local weights file of --accuracy-backbone (e.g. Keras' ImageNet "
                   "file); default: random weights, whose frozen features may carry too little to tell precisions "
                   "apart (a chance-level float32 row says so)")
    p.add_argument("--saliency-backbone", default="mobilenetv2", help="classifier of the saliency section")
    p.add_argument("--saliency-size", type=int, default=224, help="input size of the saliency section's model")
    p.add_argument("--saliency-batch", type=int, default=2, help="images per explain() call in the saliency section")
    p.add_argument("--train-rows", default="alexnet:scratch",
                   help="training section: compare rows trained end to end (default alexnet:scratch)")
    p.add_argument("--train-sizes", default="64,96,224", help="training section: image sizes (default 64,96,224)")
    p.add_argument("--train-steps", type=int, help="training section: timed steps of 64 images (default 20; quick 5)")
    p.add_argument("--backends", help="extraction section: also run it on these Keras backends, each in its own "
                   "process, and print one table side by side (e.g. torch,jax; default: this backend only)")
    p.add_argument("--json", help="also write the results here")
    return p


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


def bench_extraction(names, batch, size, repeats, precisions=("float32",)):
    """One row per backbone and precision; every timing of a backbone in one interleaved loop."""
    import numpy as np

    from kerasimpl import models, runtime

    rows = []
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    peak, _ = cpu_peak_macs()
    for name in names:
        model = build_classifier(name, input_shape=(size, size, 3), image_size=size, weights=None)
        fe = models.feature_extractor(model)
        base = {p: _compiled(fe, p) for p in precisions}
        whole = {p: _compiled(model, p) for p in precisions}
        done = [p for p in precisions if base[p] is not None and whole[p] is not None]
        fns = [lambda: fe.predict_on_batch(x)]
        for p in done:
            fns += [lambda f=base[p]: f(x), lambda f=whole[p]: f(x)]
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
        native_ips = batch / secs[-1] if native is not None else None
        ref = base["float32"](x) if base.get("float32") is not None else None
        for i, p in enumerate(done or ["float32"]):
            compiled = bool(done)
            ips = batch / secs[1 + 2 * i] if compiled else plain_ips
            saved = batch / secs[2 + 2 * i] if compiled else None
            err = (float(np.linalg.norm(base[p](x) - ref) / np.linalg.norm(ref))
                   if compiled and ref is not None and np.linalg.norm(ref) > 0 else None)
            macs = achieved_macs(name, size, ips)
            rows.append({"backbone": name, "backend": runtime.backend(), "precision": p, "batch": batch,
                         "image_size": size, "keras_img_per_s": ips, "saved_model_img_per_s": saved,
                         "saved_vs_base": saved / ips if saved else None,
                         "plain_keras_img_per_s": plain_ips, "compiled": compiled, "native_img_per_s": native_ips,
                         "ratio_vs_native": ips / native_ips if native_ips else None,
                         "plain_ratio_vs_native": plain_ips / native_ips if native_ips else None,
                         "feature_rel_error_vs_float32": err, "gmacs_per_s": macs / 1e9 if macs else None,
                         "fraction_of_fp32_peak": macs / peak if macs and peak else None})
            r = rows[-1]
            print(f"[bench] extraction {name} {p}: compiled base {ips:.1f} img/s"
                  + (f", saved model {saved:.1f} (x{r['saved_vs_base']:.2f})" if saved else "")
                  + f", plain Keras {plain_ips:.1f}" + (f", native {native_ips:.1f}" if native_ips else "")
                  + (f", feature rel. error {err:.2g}" if err is not None else ""), flush=True)
    return rows


def _compiled(model, precision="float32"):
    """kerasimpl's fast program of `model` at `precision`, or None (unsupported).

    On torch the compiled native program (`torch_inference.compile_frozen`);
    on JAX the jitted program with shifted depthwise sums
    (`jax_inference.compile_jax`, float32 only).
    """
    import keras

    if keras.backend.backend() == "jax":
        from kerasimpl.jax_inference import compile_jax

        return compile_jax(model) if precision == "float32" else None
    from kerasimpl.torch_inference import compile_frozen

    try:
        return compile_frozen(model, precision=precision)
    except (NotImplementedError, ValueError):
        return None


def other_backends(backends, args):
    """The extraction rows of `backends` other than this one, each from its own process (`KERAS_BACKEND`)."""
    import json
    import os
    import subprocess
    import tempfile

    from kerasimpl import runtime

    rows = []
    for name in backends:
        if name == runtime.backend():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "rows.json")
            argv = [sys.executable, "-m", "experiments.bench", "--sections", "extraction", "--backbones",
                    args.backbones, "--image-size", str(args.image_size), "--precision", "float32", "--json", out]
            argv += [f"--{k}={v}" for k, v in (("batch", args.batch), ("repeats", args.repeats)) if v]
            argv += ["--quick"] if args.quick else []
            print(f"[bench] extraction on {name}: {' '.join(argv[1:])}", flush=True)
            proc = subprocess.run(argv, env={**os.environ, "KERAS_BACKEND": name}, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"the {name} extraction run failed:\n{proc.stderr[-2000:]}")
            with open(out) as f:
                rows += json.load(f)["extraction"]
    return rows


def backend_table(rows) -> str:
    """One row per backbone: each backend's fast-path and plain-Keras img/s at float32, and their ratio."""
    names = list(dict.fromkeys(r["backbone"] for r in rows))
    backends = [b for b in ("torch", "jax") if b in {r["backend"] for r in rows}]  # same columns from either side
    table = []
    for name in names:
        row = {"backbone": name}
        for r in rows:
            if r["backbone"] == name and r["precision"] == "float32":
                row[f"{r['backend']}_fast_img_per_s"] = r["keras_img_per_s"]
                row[f"{r['backend']}_plain_keras_img_per_s"] = r["plain_keras_img_per_s"]
        if {"torch", "jax"} <= set(backends) and row.get("torch_fast_img_per_s"):
            row["jax_vs_torch_fast"] = row.get("jax_fast_img_per_s", 0) / row["torch_fast_img_per_s"]
        table.append(row)
    columns = ["backbone"] + [f"{b}_{k}" for b in backends for k in ("fast_img_per_s", "plain_keras_img_per_s")]
    columns += ["jax_vs_torch_fast"] if {"torch", "jax"} <= set(backends) else []
    return markdown_table(table, columns, {"jax_vs_torch_fast": ".2f"})


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
           "seed_style_seconds": secs[False], "cached_seconds": secs[True], "speedup": secs[False] / secs[True]}
    print(f"[bench] cache: seed-style {secs[False]:.1f} s, cached {secs[True]:.1f} s, x{row['speedup']:.1f}", flush=True)
    return row


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
            run = comparison.row_run(name, variant or "scratch", None, size, HeadConfig((256,), 0.3))
            model = models.build_classifier(run.backbone, 10, input_shape=(32, 32, 3), image_size=size, weights=None,
                                            head=run.head, freeze_base=False, keep_top_hidden=run.keep_top_hidden)
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


def bench_saliency(size, batch, quick=False, backbone="mobilenetv2"):
    """Seconds per image of every method (ours, and each reference library's where it has the method).

    A `backbone` classifier (random weights, 10 classes) with a linear head
    (pooled features -> Dense), so CAM (Zhou et al.) applies too; `batch`
    images per call, default options of each method; one warm-up call each,
    then one timed call (the slow methods take tens of seconds; the ratio is
    what counts). References (pytorch-grad-cam or Captum in `reference`,
    torchcam in `torchcam`) run on the same Keras model through the NCHW
    wrappers of `kerasimpl.saliency.reference`.
    """
    import keras
    import numpy as np

    from kerasimpl import models, saliency
    from kerasimpl.heads import HeadConfig

    model = build_classifier(backbone, input_shape=(size, size, 3),
                             image_size=size if models.get_spec(backbone).pretrained else None, weights=None,
                             head=HeadConfig(hidden=(), dropout=0.0))
    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    targets = [int(t) for t in np.arange(batch) % 10]
    on_torch = keras.backend.backend() == "torch"
    refs = _reference_methods() if on_torch else {}
    saliency.GradCAM(model).explain(x, targets)  # warm-up at the timed batch shape (forward and backward)
    rows = []
    for name in saliency.list_methods():
        opts = {"masks": 200, "samples": 8, "steps": 16} if quick else {}
        method = saliency.get_method(name, model, **{k: v for k, v in opts.items()
                                                       if k in saliency.method_options(name)})
        method.explain(x[:1], targets[:1])  # warm-up
        ours = _timed(lambda: method.explain(x, targets)) / batch
        row = {"method": name, "backbone": backbone, "image_size": size, "batch": batch, "options": method.options(),
               "seconds_per_image": ours, "reference": None, "reference_seconds_per_image": None, "ratio": None,
               "torchcam": None, "torchcam_seconds_per_image": None, "torchcam_ratio": None}
        if name in refs:
            label, run = refs[name]
            run(method, x[:1], targets[:1])  # warm-up
            theirs = _timed(lambda: run(method, x, targets)) / batch
            row.update(reference=label, reference_seconds_per_image=theirs, ratio=ours / theirs)
        tc = _torchcam_run(method) if on_torch else None
        if tc is not None:
            tc(x[:1], targets[:1])  # warm-up
            theirs = _timed(lambda: tc(x, targets)) / batch
            row.update(torchcam=f"torchcam {reference_name(name)}", torchcam_seconds_per_image=theirs,
                       torchcam_ratio=ours / theirs)
        rows.append(row)
        print(f"[bench] saliency {name}: {ours:.3f} s/image" +
              (f", {row['reference']} {row['reference_seconds_per_image']:.3f} s/image, x{row['ratio']:.2f}"
               if row["reference"] else "") +
              (f", {row['torchcam']} {row['torchcam_seconds_per_image']:.3f} s/image, x{row['torchcam_ratio']:.2f}"
               if row["torchcam"] else ""), flush=True)
    return rows


def reference_name(method_name):
    from kerasimpl.saliency.reference import TORCHCAM

    return TORCHCAM[method_name]


def _torchcam_run(method):
    """torchcam's run(x, targets) for `method`, or None (not installed, or torchcam has no such method)."""
    from kerasimpl.saliency import reference

    if method.name not in reference.TORCHCAM:
        return None
    try:
        return reference.torchcam_runner(method)
    except ImportError:
        return None


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

        classes = reference.PYTORCH_GRAD_CAM

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


SECTIONS = ("extraction", "cache", "occlusion", "saliency", "accuracy", "training")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = _plan(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from kerasimpl import runtime

    peak, peak_source = cpu_peak_macs()
    info = {"versions": runtime.versions(), "device": runtime.device_description(), "threads": _threads(),
            "quick": args.quick, "repeats": plan["repeats"], "precisions": plan["precisions"],
            "fp32_peak_gmacs_per_s": peak / 1e9 if peak else None, "fp32_peak_source": peak_source,
            "macs_per_224px_image": MACS_224, "macs_source": "published counts (docs/benchmarks.md), not measured"}
    print(f"[bench] {info['device']}; {info['versions']}; float32 peak: {peak_source}", flush=True)
    sections = plan["sections"]
    results = {"info": info}
    if "extraction" in sections:
        results["extraction"] = bench_extraction(plan["names"], plan["batch"], args.image_size, plan["repeats"],
                                                 plan["precisions"])
        if plan["backends"]:
            results["extraction"] += other_backends(plan["backends"], args)
    if "accuracy" in sections:
        results["accuracy"] = bench_accuracy(plan["subset"], args.accuracy_backbone, args.accuracy_size,
                                             plan["precisions"], epochs=plan["epochs"], weights=args.accuracy_weights)
    if "training" in sections:
        results["training"] = bench_training([r.strip() for r in args.train_rows.split(",") if r.strip()],
                                             plan["train_sizes"], plan["train_steps"])
    if "cache" in sections:
        results["cache_speedup"] = bench_cache(plan["epochs"], 64 if args.quick else 128)
    if "occlusion" in sections:
        results["occlusion"] = bench_occlusion(args.image_size, max(2, plan["repeats"] - 1))
    if "saliency" in sections:
        results["saliency"] = bench_saliency(args.saliency_size, args.saliency_batch, quick=args.quick,
                                             backbone=args.saliency_backbone)
    print(table(results))
    if args.json:
        write_report(args.json, results)
    return 0


def _plan(args) -> dict:
    """Validated settings; ValueError names the bad value and what is accepted."""
    import os

    from kerasimpl.backbones import list_backbones

    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    unknown = [n for n in names if n not in NATIVE]
    if unknown:
        raise ValueError(f"unknown backbone {unknown}. Accepted: {', '.join(BACKBONES)}")
    if args.saliency_backbone not in list_backbones():
        raise ValueError(f"unknown --saliency-backbone {args.saliency_backbone!r}. Accepted: "
                         f"{', '.join(list_backbones())}")
    if args.accuracy_backbone not in list_backbones():
        raise ValueError(f"unknown --accuracy-backbone {args.accuracy_backbone!r}. Accepted: "
                         f"{', '.join(list_backbones())}")
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    bad = sections - set(SECTIONS)
    if bad:
        raise ValueError(f"unknown section {sorted(bad)}. Accepted: {', '.join(SECTIONS)}")
    subset = args.subset or os.environ.get("KERASIMPL_CIFAR10_SUBSET")
    if "accuracy" in sections and not (subset and os.path.exists(subset)):
        raise ValueError(f"the accuracy section needs the real CIFAR-10 subset: --subset PATH or "
                         f"$KERASIMPL_CIFAR10_SUBSET. Received: {subset!r}")
    if "training" in sections:
        from kerasimpl.comparison import parse_row

        for row in args.train_rows.split(","):
            if row.strip():
                parse_row(row)  # ValueError listing the accepted names and variants
    for flag in ("batch", "repeats", "epochs", "train_steps", "image_size", "saliency_size", "saliency_batch", "accuracy_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1. Received: {value}")
    return {"names": names, "sections": sections, "subset": subset, "precisions": _precisions(args.precision),
            "batch": args.batch or (8 if args.quick else 32), "repeats": args.repeats or (3 if args.quick else 5),
            "epochs": args.epochs or (4 if args.quick else 10), "train_sizes": _sizes(args.train_sizes),
            "train_steps": args.train_steps or (5 if args.quick else 20), "backends": _backends(args.backends)}


def _backends(text) -> list:
    names = [b.strip() for b in (text or "").split(",") if b.strip()]
    bad = [b for b in names if b not in ("torch", "jax")]
    if bad:
        raise ValueError(f"unknown --backends {bad}. Accepted: torch, jax")
    return names


def _sizes(text) -> list:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--train-sizes must be comma-separated sizes >= 1. Received: {text!r}")
    return sizes


def _precisions(text) -> list:
    from kerasimpl import precision

    device, capability = precision.accelerator()
    if text == "all":
        return ["float32", "bfloat16"] + (["float16"] if device == "cuda" else [])
    out = [precision.resolve(p.strip(), device, capability) for p in text.split(",") if p.strip()]
    if not out:
        raise ValueError(f"--precision names no precision. Received: {text!r}")
    return ["float32"] + [p for p in dict.fromkeys(out) if p != "float32"]  # float32: the error reference


def table(results) -> str:
    lines = []
    if "extraction" in results:
        info = results.get("info", {})
        lines += ["", markdown_table(results["extraction"], [
            "backbone", "backend", "precision", "batch", "image_size", "keras_img_per_s", "saved_model_img_per_s",
            "saved_vs_base", "plain_keras_img_per_s", "native_img_per_s", "ratio_vs_native",
            "feature_rel_error_vs_float32", "gmacs_per_s", "fraction_of_fp32_peak"],
            {"saved_vs_base": ".2f", "ratio_vs_native": ".2f", "feature_rel_error_vs_float32": ".2g",
             "fraction_of_fp32_peak": ".2%", "gmacs_per_s": ".3g"})]
        if len({r["backend"] for r in results["extraction"]}) > 1:
            lines += ["", "float32 extraction per backend (fast path: torch's compiled program, JAX's jitted "
                      "program with shifted depthwise sums; plain Keras: predict_on_batch):", "",
                      backend_table(results["extraction"])]
        if info.get("fp32_peak_source"):
            lines.append(f"float32 peak: {info['fp32_peak_source']}; multiply-add counts: published, not measured.")
    if "accuracy" in results:
        lines += ["", markdown_table(results["accuracy"], [
            "backbone", "precision", "image_size", "weights", "train_images", "test_images", "extract_seconds",
            "test_accuracy", "points_vs_float32"], {"test_accuracy": ".1%", "points_vs_float32": "+.1f"})]
    if "training" in results:
        lines += ["", markdown_table(results["training"], [
            "row", "backend", "image_size", "batch", "timed_steps", "seconds_per_step", "train_img_per_s",
            "epoch_seconds_extrapolated", "peak_rss_mb_so_far"],
            {"seconds_per_step": ".3f", "train_img_per_s": ".1f", "epoch_seconds_extrapolated": ".0f",
             "peak_rss_mb_so_far": ".0f"}),
            "epoch seconds: the timed steps' rate over the epoch's images (an extrapolation, not a timed epoch)."]
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
        lines += ["", markdown_table(results["saliency"], [
            "method", "backbone", "image_size", "batch", "seconds_per_image", "reference",
            "reference_seconds_per_image", "ratio", "torchcam", "torchcam_seconds_per_image", "torchcam_ratio"],
            {"seconds_per_image": ".3f", "reference_seconds_per_image": ".3f", "ratio": ".2f",
             "torchcam_seconds_per_image": ".3f", "torchcam_ratio": ".2f"})]
    return "\n".join(lines)


def _threads():
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
