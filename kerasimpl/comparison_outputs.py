"""What a finished comparison writes into its run folder: `config.json`, the tables, the figures.

`kerasimpl.comparison_run` calls these on the writing process (rank 0)
once the rows are trained: `write_config` when the data is loaded,
`write_outputs` (the Markdown / CSV / JSON tables and the plot gallery),
and where asked `saliency_figure` (every model on the same test images)
and `gradcam_galleries` (each model's right-and-wrong Grad-CAM gallery).
A row's own files are `kerasimpl.run_folder.RowFolder`'s.
"""

from __future__ import annotations

import logging
import os

from kerasimpl import comparison, runtime
from kerasimpl.artifacts import write_json
from kerasimpl.run_config import finetuning_record
from kerasimpl.run_folder import RowFolder

_logger = logging.getLogger("kerasimpl")


def write_config(config, world, data, split):
    """`config.json`: the options, what was decided, the processes (`World.describe`) and the data."""
    from kerasimpl.data.provenance import test_split_record

    write_json(os.path.join(config.out, "config.json"), {
        **config.record(), "finetuning": finetuning_record(config), "split": split.summary(),
        "versions": runtime.versions(), "device": runtime.device_description(),
        **world.describe(),
        "data_source": data.source, "num_train_total": int(len(data.y_train)), "num_test": int(len(data.y_test)),
        "class_names": list(data.class_names), "data_notes": list(data.notes),
        "skipped_files": [{"file": p, "reason": r} for p, r in data.skipped],
        # which images are the test set, for experiments.saliency to reuse and check
        "test_split": test_split_record(data, config.data, config.seed, config.test_fraction, config.data_size),
    })


def write_outputs(config, results, data, plots_dir="", say=_logger.info):
    """Tables, the comparison figure, and the plot gallery."""
    from kerasimpl import gallery, reporting

    out = config.out
    reporting.write_tables(out, results, note=_note(config, data))
    seeds = [""] if config.seeds == 1 else [f"seed{s}" for s in config.seed_list]
    plots = gallery.write_gallery(out, results, seeds, f"{config.preset} preset on "
                                  f"{os.path.basename(str(data.source))}: accuracy vs training time")
    if plots_dir:
        gallery.copy_gallery(plots, os.path.join(plots_dir, config.preset))
    with open(os.path.join(out, "results.md")) as f:
        say("results:\n" + f.read())
    say(f"wrote {out}")


def _model_paths(config, results) -> dict:
    """`{label: saved model}` of each result (the first seed's with `--seeds N`)."""
    labels = [r.get("run", r["backbone"]) for r in results]
    return {label: RowFolder(comparison.row_folder(config.out, label, config.seeds, config.seed)).model_path
            for label in labels}


def saliency_figure(config, results, data, plots_dir="", say=_logger.info):
    """The same N test images explained by every compared model, side by side."""
    from kerasimpl.artifacts import copy_file
    from kerasimpl.saliency.report import models_figure

    figure = os.path.join(config.out, "plots", "saliency_backbones.png")
    models_figure(_model_paths(config, results), data, config.saliency, config.saliency_method, figure,
                  os.path.join(config.out, "saliency_backbones.json"), seed=config.seed,
                  precision=config.precision, say=say)
    if plots_dir:
        copy_file(figure, os.path.join(plots_dir, config.preset, "saliency_backbones.png"))
    say(f"wrote {figure}")


def gradcam_galleries(config, results, data, plots_dir="", say=_logger.info):
    """Per model: Grad-CAM of N test images, half misclassified (the "right-wrong" rule of
    `kerasimpl.saliency.choose_images`), in `<row folder>/gradcam/` and `plots/<row>_gradcam_gallery.png`.
    With `config.gallery_occlusion`: the reference experiment's occlusion study beside it (a black
    square, 30 px with stride 20 at 224 px, scaled to the model's input) and both maps explain the TRUE
    class, as that study recorded the true class's probability."""
    from kerasimpl.artifacts import copy_file, load_model
    from kerasimpl.saliency import GradCAM, Occlusion
    from kerasimpl.saliency.occlusion import scaled_window
    from kerasimpl.saliency.report import explain_test_images

    occlusion = config.gallery_occlusion
    for label, path in _model_paths(config, results).items():
        target = os.path.join(os.path.dirname(path), "gradcam")
        model = load_model(path)
        methods = [GradCAM(model)]
        if occlusion:
            patch, stride = scaled_window(model.input_shape[1])
            methods.append(Occlusion(model, patch=patch, stride=stride, fill=0.0))
        explain_test_images(model, data, methods, config.gradcam_gallery, target, seed=config.seed,
                            model_path=path, explain="true" if occlusion else "predicted", say=say)
        gallery = os.path.join(config.out, "plots", f"{label}_gradcam_gallery.png")
        copy_file(os.path.join(target, "gallery.png"), gallery)
        if plots_dir:
            copy_file(gallery, os.path.join(plots_dir, config.preset, os.path.basename(gallery)))


def _note(config, data):
    """The tables' note: where the data came from and what the figures are not."""
    parts = [f"data: {data.source} ({len(data.y_train)} train+val, {len(data.y_test)} test images)"]
    if data.source != "cifar10" and len(data.y_test) != 10000:
        parts.append("NOT the full CIFAR-10 test set: figures are for this data only")
    if config.weights is None:
        parts.append("random initial weights (no ImageNet): backbones trained end to end")
    if config.weights_note:
        parts.append(config.weights_note)
    return "; ".join(parts) + "."
