"""The comparison's options (`kerasimpl.run_config.RunConfig`): one frozen record, its defaults in one place,
checked when made, with errors that name the library's fields in the library and the flags at the CLI."""

import ast
import dataclasses
import json
import pathlib

import pytest

from experiments import compare
from kerasimpl.comparison_checks import check_resume
from kerasimpl.run_config import ConfigError, RunConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _resolve(*argv):
    return compare.resolve(compare.build_parser().parse_args(list(argv)))


def test_the_command_line_adds_no_default_of_its_own():
    """With no flag, every field the preset does not set is RunConfig's default: the parser holds none."""
    config = _resolve("--data", "synthetic", "--out", "o")
    preset = set(compare.PRESETS["full"]) | {"data", "out", "preset", "backbones"}
    for field in dataclasses.fields(RunConfig):
        if field.name not in preset:
            assert getattr(config, field.name) == field.default, field.name
    assert config.backbones == ("vgg16", "mobilenetv2", "mobilenetv3large") and config.data == "synthetic"
    assert _resolve("--data", "synthetic", "--lr", "0.01", "--augment", "none", "--hidden", "").learning_rate == 0.01
    assert _resolve("--data", "synthetic", "--augment", "none", "--hidden", "").augment == ()
    assert _resolve("--data", "synthetic", "--augment", "flip,randaugment=0.1").augment == ("flip", "randaugment=0.1")
    assert _resolve("--preset", "alexnet-smoke", "--data", "x.tar.gz").learning_rate == 1e-4  # a preset's value


def test_it_is_frozen_and_its_record_round_trips_through_json():
    config = _resolve("--data", "synthetic", "--out", "o", "--hidden", "64,32", "--finetune-lr", "1e-4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    record = json.loads(json.dumps(config.record()))
    assert record["hidden"] == [64, 32] and record["finetune_learning_rate"] == 1e-4
    assert RunConfig(**record) == config  # lists come back as the tuples they were


@pytest.mark.parametrize("fields, library, flags", [
    ({"finetune_top_layers": 0}, "finetune_top_layers must be >= 1. Received: 0",
     "--finetune-layers must be >= 1. Received: 0"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0. Received: 0.0", "--lr must be > 0. Received: 0.0"),
    ({"val_fraction": 1.5}, "val_fraction must be between 0 and 1", "--val-fraction must be between 0 and 1"),
    ({"augment": ("flip", "blur")}, "Unknown augmentation in augment: blur", "Unknown augmentation in --augment: blur"),
    ({"augment": ("randaugment=7",)}, "Unknown augmentation in augment: randaugment=7",
     "Unknown augmentation in --augment: randaugment=7"),
    ({"backbones": ("vgg16", "vgg16")}, "A row appears twice in backbones", "A row appears twice in --backbones"),
    ({"tune": 2, "distribute": True}, "tune runs its trials in one process: it does not combine with distribute",
     "--tune runs its trials in one process: it does not combine with --distribute"),
])
def test_a_bad_option_is_refused_when_made_naming_the_field_or_the_flag(fields, library, flags):
    base = RunConfig(("vgg16",), "synthetic", "o")
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(base, **fields)
    assert str(e.value).startswith(library)
    assert e.value.render(compare.flag).startswith(flags)


def test_an_option_newer_than_a_run_folder_resumes_it_at_its_default_only(tmp_path):
    config = _resolve("--data", "synthetic", "--out", str(tmp_path))
    old = config.record()
    del old["precise_bn"]  # a run folder from before the option existed
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_resume(config)  # the option at its default: the same run
    with pytest.raises(ConfigError, match="precise_bn: absent there, 16 now") as e:  # the field, in the library
        check_resume(dataclasses.replace(config, precise_bn=16))
    assert f"--out {tmp_path} is a run started with other options" in e.value.render(compare.flag)
    assert "(--precise-bn: absent there, 16 now)" in e.value.render(compare.flag)


def _raised_strings(path):
    """The string pieces of every `raise` statement in the module at `path`."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield sub.value


@pytest.mark.parametrize("module", ["run_config", "comparison", "comparison_run", "comparison_checks"])
def test_the_comparison_library_names_fields_not_flags_in_its_errors(module):
    flags = [s for s in _raised_strings(ROOT / "kerasimpl" / f"{module}.py") if "--" in s]
    assert flags == [], f"kerasimpl/{module}.py raises errors that name command-line flags: {flags}"


def test_received_values_with_braces_reach_the_message_unchanged(tmp_path):
    """Paths and values are quoted into the error's template: a brace in them is text, not a field."""
    out = tmp_path / "run{1}"
    out.mkdir()
    (out / "config.json").write_text("[1, 2]")
    config = RunConfig(("vgg16",), "synthetic", str(out))
    with pytest.raises(ConfigError) as e:
        check_resume(config)
    assert e.value.render(compare.flag).startswith(f"--out {out} holds a config.json that cannot be read")
    with pytest.raises(ConfigError, match=r"Received weights w\{x\}\.h5 for"):
        RunConfig(("efficientnetlite0", "efficientnetlite1"), "synthetic", "o", weights="w{x}.h5")
    with pytest.raises(ValueError, match="RunConfig.data has no default"):
        RunConfig.default("data")


def test_a_folder_from_before_run_config_is_read_under_todays_names(tmp_path):
    """config.json files written before RunConfig say lr / finetune_lr / finetune_layers: a resume with the
    same values matches, one with other values is refused naming them; a JSON object that lacks a run's core
    options is not a run's configuration."""
    config = _resolve("--data", "synthetic", "--out", str(tmp_path), "--finetune-lr", "3e-4",
                      "--finetune-layers", "60")
    old = config.record()
    for new, legacy in (("learning_rate", "lr"), ("finetune_learning_rate", "finetune_lr"),
                        ("finetune_top_layers", "finetune_layers")):
        old[legacy] = old.pop(new)
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_resume(config)
    with pytest.raises(ConfigError) as e:
        check_resume(dataclasses.replace(config, finetune_top_layers=None))
    assert "(--finetune-layers: 60 there, None now)" in e.value.render(compare.flag)
    (tmp_path / "config.json").write_text(json.dumps({"data": "synthetic"}))
    with pytest.raises(ConfigError, match="not a run's configuration: it lacks backbones, seed, epochs, batch_size"):
        check_resume(config)


def test_a_random_checkpoint_run_resumes_with_the_file_it_wrote(tmp_path):
    """The run records the checkpoint it wrote (a path in its folder) where the request said random-checkpoint:
    repeating the request resumes; a checkpoint elsewhere is another run."""
    config = _resolve("--preset", "alexnet-smoke", "--data", "x.tar.gz", "--out", str(tmp_path))
    written = config.record()
    written["weights"] = str(tmp_path / "alexnet-random-init.pth")
    (tmp_path / "config.json").write_text(json.dumps(written))
    check_resume(config)
    written["weights"] = str(tmp_path.parent / "alexnet-random-init.pth")
    (tmp_path / "config.json").write_text(json.dumps(written))
    with pytest.raises(ConfigError, match="weights: "):
        check_resume(config)


def test_a_run_from_python_is_the_command_lines_run(compare_run_copy):
    """docs/training.md's Python route: a RunConfig built by hand with the options of the shared compare run
    equals the command line's, and run_comparison resumes that run from it (nothing trained again)."""
    from kerasimpl.comparison_run import run_comparison

    argv, out = compare_run_copy
    config = RunConfig(("smallcnn",), "synthetic", str(out), classes="3", seeds=2, epochs=1, batch_size=32,
                       hidden=(16,), inference_batch_size=16, precision="float32")
    assert config == _resolve(*argv)
    results = (out / "results.json").read_text()
    rows = run_comparison(config, say=lambda line: None, verbose=0)
    assert [r["backbone"] for r in rows] == ["smallcnn"] and (out / "results.json").read_text() == results
