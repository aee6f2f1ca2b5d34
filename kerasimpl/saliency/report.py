"""Saliency reports on a data set's test images, written to a folder.

- `explain_test_images`: one model, N test images (half right, half
  wrong: the "right-wrong" rule of `choose_images`), every given method:
  `gallery.png`, `maps.npz`, a note per image and `saliency.json` (what
  `experiments.saliency --data` writes, and compare's Grad-CAM galleries).
- `models_figure`: the same N test images (one per class) explained by
  several saved models side by side (compare's `--saliency` figure).

Progress lines go to `say` (default: the `kerasimpl` logger); the library
prints nothing itself.
"""

from __future__ import annotations

import io
import logging
import os
import time

import numpy as np

_logger = logging.getLogger("kerasimpl")


def explain_methods(methods, images, targets, say=_logger.info, chunk=32, verbose=0) -> dict:
    """`{method name: (explanations, seconds)}` of each method on `images`, `chunk` images at a time
    (a backward pass's memory grows with the batch); progress per method (`kerasimpl.progress`)."""
    from kerasimpl.progress import Progress
    from kerasimpl.saliency.quality import explain_in_chunks

    out = {}
    for method in methods:
        start = time.perf_counter()
        progress = Progress(len(images), f"explain: {method.name}", verbose if len(images) > chunk else 0)
        exps = explain_in_chunks(method, images, targets, chunk, progress)
        progress.close()
        out[method.name] = (exps, time.perf_counter() - start)
        say(f"{method.name}: {out[method.name][1]:.2f} s for {len(images)} image(s)")
    return out


def quality_of(model, images, methods, results, fill, verbose=0):
    """`quality_table` of `explain_methods`' results (their seconds included), with the random-map baseline row."""
    from kerasimpl.saliency.quality_tables import quality_table

    return quality_table(model, images, methods, {k: v[0] for k, v in results.items()}, fill=fill,
                         seconds={k: v[1] for k, v in results.items()}, baseline=True, verbose=verbose)


def write_quality(folder, table) -> str:
    """`quality.md`, `quality.csv` (one row per method, with intervals), `quality_differences.csv` (every
    pairwise difference) and `quality_per_image.csv` (the values behind the means) in `folder`; returns
    the Markdown."""
    from kerasimpl.artifacts import write_text
    from kerasimpl.saliency.quality_tables import differences_csv, per_image_csv, quality_csv, quality_markdown

    md = quality_markdown(table)
    write_text(os.path.join(folder, "quality.md"), md)
    write_text(os.path.join(folder, "quality.csv"), quality_csv(table))
    write_text(os.path.join(folder, "quality_differences.csv"), differences_csv(table))
    write_text(os.path.join(folder, "quality_per_image.csv"), per_image_csv(table))
    return md


def explain_test_images(model, data, methods, num_images, out, seed=0, model_path=None, note="", quality_fill=None,
                        explain="predicted", say=_logger.info, verbose=0) -> dict:
    """Explain `num_images` test images of `data` with each method; write the report into `out`.

    Args:
        model: the classifier the methods explain (raw images in).
        data: its data set (`kerasimpl.data`), the test split that trained it.
        methods: saliency methods on `model` (each explains the class `explain` names).
        num_images: images to explain: half correct, half misclassified
            where the test set has them (a note says when it has not).
        out: folder of `gallery.png`, `maps.npz`, `notes/` and `saliency.json`.
        seed: the seed of the image choice.
        model_path: the model's file, named in the report and the title.
        note: a note on the data (e.g. about the test split), in the report.
        quality_fill: with a value, the faithfulness table too
            (`quality.md` / `quality.csv`; masked pixels get this value).
        explain: the class each map explains: `"predicted"` (the model's
            answer) or `"true"` (the label, as the reference experiment's
            occlusion study records the true class's probability).
        verbose: progress of the explanations and of the quality passes.

    Returns:
        The report written as `saliency.json`.
    """
    from kerasimpl import models, plotting
    from kerasimpl.artifacts import save_figure, write_bytes, write_json, write_text
    from kerasimpl.saliency import choose_images, mass_shares  # through the package: one rule, patchable
    from kerasimpl.saliency.notes import caption, image_note, method_title
    from kerasimpl.saliency.selection import candidates

    if explain not in ("predicted", "true"):
        raise ValueError(f"explain must be 'predicted' or 'true'. Received: explain={explain!r}")
    names = models.class_names_of(model)
    pool, probs = candidates(model, data.x_test, data.y_test, num_images, seed)
    picked = choose_images(data.y_test[pool], num_images, "right-wrong", seed, predictions=probs)
    short = picked.note
    chosen, p = pool[picked.indices], probs[picked.indices]  # correct rows, then wrong
    images = np.stack([np.asarray(data.x_test[int(i)]) for i in chosen]).astype("float32")
    labels, preds = data.y_test[chosen].astype(int), p.argmax(1)
    say(f"{len(chosen)} test images of {data.source}: {int((labels == preds).sum())} correct, "
        f"{int((labels != preds).sum())} misclassified, explaining the {explain} class")
    if short:
        say(f"note: {short}")
    results = explain_methods(methods, images, [int(t) for t in (preds if explain == "predicted" else labels)], say,
                              verbose=verbose)
    rows = [caption(int(i), names, int(t), pp) for i, t, pp in zip(chosen, labels, p)]
    columns = {method_title(m): [e.importance() for e in results[m.name][0]] for m in methods}
    shown = os.path.join(*os.path.normpath(str(model_path)).split(os.sep)[-2:]) if model_path else model.name
    title = (f"{shown} on {os.path.basename(str(data.source))}: saliency "
             f"of the {explain} class" + (f"\n({short})" if short else ""))
    shown_rows = gallery_rows(labels == preds)
    if len(shown_rows) < len(chosen):
        title += f"\n(the first {len(shown_rows)} of {len(chosen)} images; every map is in maps.npz)"
    save_figure(plotting.saliency_gallery(images[shown_rows], [rows[i] for i in shown_rows],
                                          {k: [v[i] for i in shown_rows] for k, v in columns.items()}, title),
                os.path.join(out, "gallery.png"))
    buf = io.BytesIO()
    np.savez(buf, images=images.astype(np.uint8), indices=chosen, labels=labels, predictions=preds,
             **{m.name: np.stack([e.map for e in results[m.name][0]]) for m in methods})
    write_bytes(os.path.join(out, "maps.npz"), buf.getvalue())
    entries = []
    for k, (i, t, pp, row) in enumerate(zip(chosen, labels, p, rows)):
        mass = {method_title(m): mass_shares(columns[method_title(m)][k]) for m in methods}
        second = int(np.argsort(-pp)[1])
        entries.append({"index": int(i), "label": names[t], "predicted": names[int(pp.argmax())],
                        "probability": float(pp.max()), "correct": bool(pp.argmax() == t),
                        "second": names[second], "second_probability": float(pp[second]),
                        "caption": row, "mass": mass, "note": f"notes/{k:02d}_test{int(i)}.md",
                        "file": data.x_test.paths[int(i)] if hasattr(data.x_test, "paths") else None})
        write_text(os.path.join(out, entries[-1]["note"]), image_note(entries[-1], data.source))
    report = {"data": str(data.source), "model": model_path, "images": entries, "explained_class": explain,
              "note": " ".join(filter(None, [note, short])) or None,
              "methods": {m.name: {"options": m.options(), "seconds_per_image": results[m.name][1] / len(chosen)}
                          for m in methods}, "precision": methods[0].precision if methods else None}
    if quality_fill is not None:
        from kerasimpl.saliency.quality_tables import without_per_image

        table = quality_of(model, images, methods, results, quality_fill, verbose)
        write_quality(out, table)  # the per-image values go to quality_per_image.csv, not the JSON
        report["quality"] = without_per_image(table)
    write_json(os.path.join(out, "saliency.json"), report)
    return report


GALLERY_ROWS = 16  # images drawn in gallery.png (a study of hundreds keeps every map in maps.npz)


def gallery_rows(correct, limit=GALLERY_ROWS) -> list:
    """Indices of the images the gallery draws: all of them up to `limit`, else the first
    `limit // 2` correct and misclassified ones (more of one kind where the other runs short)."""
    correct = np.asarray(correct, bool)
    if len(correct) <= limit:
        return list(range(len(correct)))
    right, wrong = np.flatnonzero(correct), np.flatnonzero(~correct)
    k = max(limit // 2, limit - len(wrong))
    return sorted(right[:k].tolist() + wrong[:limit - min(k, len(right))].tolist())


def models_figure(model_paths, data, num_images, method, out_png, out_json, seed=0, precision="float32",
                  say=_logger.info) -> dict:
    """The same test images explained by every model, side by side (rows: images; columns: models).

    Args:
        model_paths: `{label: path of a saved model}`, in column order;
            missing files are left out.
        data: the data set the models were trained on.
        num_images: images, one per class first (seeded): the same for every
            model, so no model's predictions decide them.
        method: a registered method name; each model's top-1 prediction is
            explained (occlusion's 224-px window scaled to each model's input).
        out_png, out_json: the figure and its record (images, each model's
            predictions, layer, map shape and options).
        seed: the seed of the image choice.
        precision: of the method's black-box forward passes.

    Returns:
        The record written to `out_json`.
    """
    from kerasimpl import plotting
    from kerasimpl.artifacts import load_model, save_figure, write_json
    from kerasimpl.saliency import choose_images, get_method  # through the package: one rule, patchable
    from kerasimpl.saliency.occlusion import scaled_window

    chosen = [int(i) for i in choose_images(data.y_test, num_images, mode="per-class", seed=seed).indices]
    images = np.stack([np.asarray(data.x_test[i]) for i in chosen]).astype("float32")
    names = list(data.class_names)
    columns, captions, report = {}, {}, {"method": method, "images": chosen, "models": {}}
    for label, path in model_paths.items():
        if not os.path.exists(path):
            continue
        model = load_model(path)
        # occlusion's 30/20 window is for 224 px: scaled to the model's input (at 32 px: 4/3, not one 1x1 cell)
        options = dict(zip(("patch", "stride"), scaled_window(int(model.input_shape[1])))) \
            if method == "occlusion" else {}
        explainer = get_method(method, model, **options)
        explainer.precision = precision  # its black-box forward passes
        exps = explainer.explain(images)  # targets: each model's top-1 prediction
        columns[label] = [e.importance() for e in exps]
        captions[label] = [f"{'ok' if e.target == t else 'WRONG'}: {names[e.target]} ({e.score:.2f})"
                           for e, t in zip(exps, data.y_test[chosen])]
        report["models"][label] = {"predictions": [names[e.target] for e in exps],
                                   "layer": getattr(explainer, "layer", None),
                                   "map_shape": list(exps[0].map.shape), "options": explainer.options()}
        say(f"saliency: {label} explained")
    rows = [f"#{i} true: {names[int(data.y_test[i])]}" for i in chosen]
    save_figure(plotting.saliency_gallery(images, rows, columns, f"{method} of each model's prediction on the same "
                                          f"{len(chosen)} test images", cell_titles=captions), out_png)
    write_json(out_json, report)
    return report
