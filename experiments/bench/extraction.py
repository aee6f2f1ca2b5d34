"""Extraction section: each backbone's frozen base and whole saved model, per precision, against plain Keras.

One row per backbone and precision: the fast path's img/s of the base
(`kerasimpl.inference.Forward`, the one place that chooses it), the whole
saved classifier's at the same batch and precision (and its ratio to the
base), plain Keras' `predict_on_batch`, the native PyTorch twin where it
imports (at the row's precision: bfloat16 under `torch.autocast`), the
pooled features' relative error against float32, and the achieved
multiply-adds/s (published counts x img/s) next to this CPU's float32 peak. Every timing of a backbone runs in one interleaved loop.
"""

from __future__ import annotations

from experiments.bench.common import (
    achieved_macs, build_classifier, cpu_peak_macs, interleaved, markdown_table, native_twin,
)


def native_names() -> dict:
    """The backbones with a native PyTorch twin (features + global pool) and its name: torchvision's
    constructors, and for EfficientNet-Lite the reference implementation its checkpoints were made for
    (`efficientnet-lite-pytorch`, the `reference` extra). The registry's `BackboneSpec.native`."""
    from kerasimpl.backbones import get_spec, list_backbones

    return {n: get_spec(n).native for n in list_backbones() if get_spec(n).native}

BACKBONES = ("vgg16", "mobilenetv2", "mobilenetv3large", "efficientnetb0", "alexnet", "efficientnetlite0")  # default
KEY = "extraction"
COLUMNS = ["backbone", "backend", "precision", "batch", "image_size", "keras_img_per_s", "saved_model_img_per_s",
           "saved_vs_base", "plain_keras_img_per_s", "native_img_per_s", "ratio_vs_native",
           "feature_rel_error_vs_float32", "gmacs_per_s", "fraction_of_fp32_peak"]
FORMATS = {"saved_vs_base": ".2f", "ratio_vs_native": ".2f", "feature_rel_error_vs_float32": ".2g",
           "fraction_of_fp32_peak": ".2%", "gmacs_per_s": ".3g"}


def run(plan, args):
    rows = bench_extraction(plan["names"], plan["batch"], args.image_size, plan["repeats"], plan["precisions"])
    if plan["backends"]:
        from experiments.bench.backends import other_backends

        rows += other_backends(plan["backends"], args)
    return rows


def fast_path(model, precision):
    """kerasimpl's fast program of `model` at `precision` (`inference.Forward`), or None where
    Keras would run, or where the program cannot apply `precision` (JAX's runs at the model's policy)."""
    from kerasimpl.inference import KERAS_PATH, Forward

    forward = Forward(model, precision).build()
    if forward.path == KERAS_PATH or (precision != "float32" and not forward.applies_precision):
        return None
    return forward


def bench_extraction(names, batch, size, repeats, precisions=("float32",)):
    """One row per backbone and precision; every timing of a backbone in one interleaved loop."""
    import numpy as np

    from kerasimpl import models

    rows = []
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    for name in names:
        model = build_classifier(name, input_shape=(size, size, 3), image_size=size, weights=None)
        fe = models.feature_extractor(model)
        base = {p: fast_path(fe, p) for p in precisions}
        whole = {p: fast_path(model, p) for p in precisions}
        done = [p for p in precisions if base[p] is not None and whole[p] is not None]
        fns = [lambda: fe.predict_on_batch(x)]
        for p in done:
            fns += [lambda f=base[p]: f(x), lambda f=whole[p]: f(x)]
        native = native_twin(name)  # a string says why there is none
        native_precisions = [p for p in (done or ["float32"]) if p in ("float32", "bfloat16")] \
            if callable(native) else []
        for p in native_precisions:  # the native twin at the same precision (torch.autocast for bfloat16)
            fns.append(lambda p=p: native(x, p))
        secs = interleaved(fns, repeats)
        native_secs = dict(zip(native_precisions, secs[len(secs) - len(native_precisions):]))
        ref = base["float32"](x) if base.get("float32") is not None else None
        for i, p in enumerate(done or ["float32"]):
            rows.append(_row(name, p, batch, size, secs, i, bool(done), native_secs.get(p),
                             base[p](x) if done and ref is not None else None, ref))
    return rows


def _row(name, p, batch, size, secs, i, compiled, native_seconds, features, ref):
    """One extraction row from the interleaved seconds: [plain, (base, whole) per precision, natives];
    `native_seconds`: the native twin's at precision `p` (None: not run)."""
    import numpy as np

    from kerasimpl import runtime

    peak, _ = cpu_peak_macs()
    plain_ips = batch / secs[0]
    native_ips = batch / native_seconds if native_seconds else None
    ips = batch / secs[1 + 2 * i] if compiled else plain_ips
    saved = batch / secs[2 + 2 * i] if compiled else None
    err = (float(np.linalg.norm(features - ref) / np.linalg.norm(ref))
           if features is not None and np.linalg.norm(ref) > 0 else None)
    macs = achieved_macs(name, size, ips)
    row = {"backbone": name, "backend": runtime.backend(), "precision": p, "batch": batch,
           "image_size": size, "keras_img_per_s": ips, "saved_model_img_per_s": saved,
           "saved_vs_base": saved / ips if saved else None,
           "plain_keras_img_per_s": plain_ips, "compiled": compiled, "native_img_per_s": native_ips,
           "ratio_vs_native": ips / native_ips if native_ips else None,
           "plain_ratio_vs_native": plain_ips / native_ips if native_ips else None,
           "feature_rel_error_vs_float32": err, "gmacs_per_s": macs / 1e9 if macs else None,
           "fraction_of_fp32_peak": macs / peak if macs and peak else None}
    print(f"[bench] extraction {name} {p}: compiled base {ips:.1f} img/s"
          + (f", saved model {saved:.1f} (x{row['saved_vs_base']:.2f})" if saved else "")
          + f", plain Keras {plain_ips:.1f}" + (f", native {native_ips:.1f}" if native_ips else "")
          + (f", feature rel. error {err:.2g}" if err is not None else ""), flush=True)
    return row


def table(rows, info) -> list:
    """The extraction table, the per-backend table when several backends ran, and the peak's source."""
    lines = ["", markdown_table(rows, COLUMNS, FORMATS)]
    if len({r["backend"] for r in rows}) > 1:
        lines += ["", "float32 extraction per backend (fast path: torch's compiled program, JAX's jitted "
                  "program with shifted depthwise sums; plain Keras: predict_on_batch):", "", backend_table(rows)]
    if info.get("fp32_peak_source"):
        lines.append(f"float32 peak: {info['fp32_peak_source']}; multiply-add counts: published, not measured.")
    return lines


def backend_table(rows) -> str:
    """One row per backbone: each backend's fast-path and plain-Keras img/s at float32, and their ratio."""
    names = list(dict.fromkeys(r["backbone"] for r in rows))
    backends = [b for b in ("torch", "jax") if b in {r["backend"] for r in rows}]  # same columns from either side
    out = []
    for name in names:
        row = {"backbone": name}
        for r in rows:
            if r["backbone"] == name and r["precision"] == "float32":
                row[f"{r['backend']}_fast_img_per_s"] = r["keras_img_per_s"]
                row[f"{r['backend']}_plain_keras_img_per_s"] = r["plain_keras_img_per_s"]
        if {"torch", "jax"} <= set(backends) and row.get("torch_fast_img_per_s"):
            row["jax_vs_torch_fast"] = row.get("jax_fast_img_per_s", 0) / row["torch_fast_img_per_s"]
        out.append(row)
    columns = ["backbone"] + [f"{b}_{k}" for b in backends for k in ("fast_img_per_s", "plain_keras_img_per_s")]
    columns += ["jax_vs_torch_fast"] if {"torch", "jax"} <= set(backends) else []
    return markdown_table(out, columns, {"jax_vs_torch_fast": ".2f"})
