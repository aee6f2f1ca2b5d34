"""experiments.compare_runs: several compare run folders -> one table and one figure."""

import csv
import json
import os

import pytest

from experiments import compare_runs
from kerasimpl import crossrun


def make_run(folder, source, classes, models, seeds=1, device="cpu (test)"):
    """A compare run folder as compare writes it; `models`: {label: (test_acc, [(acc, val_acc, loss, val_loss)])}."""
    os.makedirs(folder)
    config = {"data": source, "data_source": source, "class_names": [f"c{i}" for i in range(classes)],
              "backbones": sorted({m.split("-")[0] for m in models}), "preset": "smoke", "seed": 0, "seeds": seeds,
              "classes": None, "num_test": 50, "split": {"num_train": 80, "num_val": 20},
              "device": device, "versions": {"backend": "torch"}}
    results = []
    for label, (acc, epochs) in models.items():
        sub = os.path.join(folder, label) if seeds == 1 else os.path.join(folder, label, "seed0")
        os.makedirs(sub)
        with open(os.path.join(sub, "history.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["stage", "epoch", "accuracy", "val_accuracy", "loss", "val_loss"])
            for i, row in enumerate(epochs):
                w.writerow(["train", i, *row])
        results.append({"backbone": label.split("-")[0], "run": label, "test_accuracy": acc, "test_loss": 1.5,
                        "val_accuracy": epochs[-1][1], "epochs_run": len(epochs), "train_seconds": 3.0,
                        "image_size": 32, "trained": "end-to-end", "weights": None})
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    json.dump(results, open(os.path.join(folder, "results.json"), "w"))
    return str(folder)


CURVE = [(0.3, 0.25, 2.0, 2.1), (0.5, 0.4, 1.5, 1.7)]


def two_runs(tmp_path):
    a = make_run(tmp_path / "cifar", "/d/cifar-10-python.tar.gz", 10,
                 {"smallcnn": (0.61, CURVE), "alexnet": (0.72, CURVE)})
    b = make_run(tmp_path / "tin", "/d/tiny-imagenet-200", 30, {"smallcnn": (0.21, CURVE[:1])},
                 device="NVIDIA H100")
    return a, b


def test_known_numbers_land_in_table_and_figure_has_expected_axes(tmp_path):
    a, b = two_runs(tmp_path)
    out = tmp_path / "across"
    assert compare_runs.main([a, b, "--out", str(out)]) == 0
    rows = json.load(open(out / "across.json"))
    got = {(r["dataset"], r["model"]): r for r in rows}
    assert set(got) == {("cifar-10-python (10 classes)", "smallcnn"), ("cifar-10-python (10 classes)", "alexnet"),
                        ("tiny-imagenet-200 (30 classes)", "smallcnn")}
    tin = got["tiny-imagenet-200 (30 classes)", "smallcnn"]
    assert tin["test_accuracy"] == 0.21 and tin["final_train_accuracy"] == 0.3 and tin["device"] == "NVIDIA H100"
    assert tin["num_classes"] == 30 and tin["preset"] == "smoke" and tin["run"] == os.path.abspath(b)
    assert got["cifar-10-python (10 classes)", "alexnet"]["test_accuracy"] == 0.72
    md = open(out / "across.md").read()
    assert "| tiny-imagenet-200 (30 classes) | smallcnn |" in md and "21.00%" in md and "72.00%" in md
    assert [r["model"] for r in csv.DictReader(open(out / "across.csv"))] == ["smallcnn", "alexnet", "smallcnn"]
    assert os.path.getsize(out / "across.png") > 0
    fig = crossrun.runs_figure(crossrun.read_runs([a, b]))
    assert len(fig.axes) == 2 * 2 + 1  # (accuracy, loss) per model + the test-accuracy bars
    bars = fig.axes[-1]
    heights = sorted(round(p.get_height(), 2) for p in bars.patches if p.get_height() == p.get_height())
    assert heights == [0.21, 0.61, 0.72]
    curves = fig.axes[0].get_lines()  # smallcnn accuracy: train + val of both datasets
    assert len(curves) == 4 and list(curves[0].get_ydata()) == [0.3, 0.5]


def test_seed_folders_and_same_dataset_twice(tmp_path):
    a = make_run(tmp_path / "r1", "/d/cifar-10-python.tar.gz", 10, {"smallcnn": ({"mean": 0.5, "std": 0.1}, CURVE)},
                 seeds=2)
    b = make_run(tmp_path / "r2", "/d/cifar-10-python.tar.gz", 10, {"smallcnn": (0.4, CURVE)})
    runs = crossrun.read_runs([a, b])
    assert [r["dataset"] for r in runs] == ["cifar-10-python (10 classes) [r1]", "cifar-10-python (10 classes) [r2]"]
    assert crossrun.runs_table(runs)[0]["test_accuracy"] == 0.5


@pytest.mark.parametrize("breaks, message", [
    (lambda f: os.remove(os.path.join(f, "results.json")), "not a finished compare run.*results.json"),
    (lambda f: open(os.path.join(f, "config.json"), "w").write("{oops"), "not readable JSON"),
    (lambda f: os.remove(os.path.join(f, "alexnet", "history.csv")), "alexnet/history.csv: missing"),
    (lambda f: json.dump({**json.load(open(os.path.join(f, "config.json"))), "backbones": ["vgg16"]},
                         open(os.path.join(f, "config.json"), "w")), "config.json lists.*different runs"),
])
def test_broken_or_mismatched_runs_are_one_clear_error(tmp_path, capsys, breaks, message):
    import re

    a, b = two_runs(tmp_path)
    breaks(a)
    assert compare_runs.main([a, b, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err) and "Traceback" not in err


def test_missing_folder_and_duplicates(tmp_path, capsys):
    a, _ = two_runs(tmp_path)
    assert compare_runs.main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert compare_runs.main([a, a, "--out", str(tmp_path / "o")]) == 2
    assert "twice" in capsys.readouterr().err
