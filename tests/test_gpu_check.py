"""experiments.gpu_check: one line without CUDA; every section's code path on a CPU at toy size."""

import json
import os

import pytest

from experiments import gpu_check


def test_without_cuda_it_says_so_in_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    assert gpu_check.main(["--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpu-check needs a CUDA GPU") and "\n" not in err


@pytest.mark.slow
def test_every_section_runs_and_writes_the_report(tmp_path):
    """Toy sizes on a CPU: the rows, the JSON and the Markdown table a GPU run writes."""
    out = tmp_path / "check"
    argv = ["--allow-cpu", "--out", str(out), "--backbones", "efficientnetlite0", "--batch", "2", "--image-size",
            "32", "--repeats", "2", "--train", "20", "--test", "10"]
    assert gpu_check.main(argv) == 0
    report = json.load(open(out / "gpu_check.json"))
    sections = report["sections"]
    assert list(sections) == ["extraction", "full", "finetune"]
    assert all("error" not in row for s in sections.values() for row in s["rows"]), sections
    extraction = sections["extraction"]["rows"]
    assert [r["precision"] for r in extraction] == ["float32", "bfloat16"]  # float16 only on CUDA
    assert all(r["kerasimpl_img_s"] > 0 and r["path"].startswith(("compiled", "keras")) for r in extraction)
    (full,) = sections["full"]["rows"]
    assert full["images"] == 30 and full["extract_s"] > 0
    assert {(r["backbone"], r["precision"]) for r in sections["finetune"]["rows"]} == {
        (b, p) for b in ("mobilenetv3large", "efficientnetlite0") for p in ("float32", "bfloat16")}
    text = (out / "gpu_check.md").read_text()
    assert text.startswith("GPU: none (CPU)") and "| backbone |" in text and os.path.exists(out / "full" / "run")
