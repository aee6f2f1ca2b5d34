"""A comparison run's plots/ folder (kerasimpl.gallery): run-level figures and every row's, per seed."""

import os

from kerasimpl import gallery
from kerasimpl.artifacts import write_bytes, write_csv

ROWS = [{"stage": "train", "epoch": e, "loss": 1.0 / (e + 1), "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.4}
        for e in range(3)]


def _result(name, backbone):
    return {"run": name, "backbone": backbone, "test_accuracy": 0.5, "train_seconds": 2.0, "params_total": 1000}


def test_gallery_holds_each_rows_figures_per_seed_and_copies_whole(tmp_path):
    out = str(tmp_path / "run")
    for name in ("a", "a-lastlayer"):
        for seed in ("seed0", "seed1"):
            folder = os.path.join(out, name, seed)
            write_csv(os.path.join(folder, "history.csv"), ROWS)
            for png in gallery.ROW_FIGURES:
                write_bytes(os.path.join(folder, png), f"{name}/{seed}/{png}".encode())
    results = [_result("a", "a"), _result("a-lastlayer", "a")]
    plots = gallery.write_gallery(out, results, ("seed0", "seed1"), "title")
    expected = {"comparison.png", "learning_curves.png"} | {
        f"{n}_{s}_{png}" for n in ("a", "a-lastlayer") for s in ("seed0", "seed1") for png in gallery.ROW_FIGURES}
    assert set(os.listdir(plots)) == expected
    # Each row's figure is copied byte for byte from its own seed folder.
    with open(os.path.join(plots, "a-lastlayer_seed1_confusion_matrix.png"), "rb") as f:
        assert f.read() == b"a-lastlayer/seed1/confusion_matrix.png"
    assert os.path.getsize(os.path.join(plots, "learning_curves.png")) > 10_000  # the overlay, drawn
    target = str(tmp_path / "committed" / "preset")
    gallery.copy_gallery(plots, target)
    assert set(os.listdir(target)) == expected


def test_gallery_of_one_seed_has_no_seed_in_names_and_skips_missing_figures(tmp_path):
    out = str(tmp_path / "run")
    write_csv(os.path.join(out, "b", "history.csv"), ROWS)
    write_bytes(os.path.join(out, "b", "learning_curves.png"), b"png")
    plots = gallery.write_gallery(out, [_result("b", "b")])
    assert set(os.listdir(plots)) == {"comparison.png", "learning_curves.png", "b_learning_curves.png"}
