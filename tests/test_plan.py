"""One plan per run (`kerasimpl.plan`): built once from the configuration, read by training, evaluation,
reporting and the CLI."""

import dataclasses
import json
import os
import warnings

import keras
import numpy as np
import pytest

from experiments import compare
from kerasimpl import comparison, comparison_run, models
from kerasimpl.artifacts import read_csv
from kerasimpl.heads import HeadConfig
from kerasimpl.plan import CACHED_EVAL, FRESH_EVAL, RunPlan, plan_for, plan_from_model
from kerasimpl.training import TrainConfig, train_classifier

FRAME = "frozen features + pretrained top trained, last layer new"


def _cfg(*argv):
    """The CLI's resolved options (no data is loaded)."""
    return compare.resolve(compare.build_parser().parse_args(["--data", "synthetic", "--workers", "1", *argv]))


# (row, CLI options, head kind) -> (stages, eval path, description, compare's kinds with --linear-probe)
TABLE = [
    ("mobilenetv2", [], "mlp", ("extract", "head"), CACHED_EVAL, "frozen base", ("mlp", "linear-probe")),
    ("mobilenetv2", ["--finetune-epochs", "2"], "mlp", ("extract", "head", "finetune"), FRESH_EVAL,
     "frozen base + fine-tune", ("mlp", "linear-probe")),
    # The CLI's --finetune-epochs does not apply to a probe row (row_config drops it).
    ("mobilenetv2", ["--finetune-epochs", "2"], "linear-probe", ("extract", "probe"), CACHED_EVAL, "linear probe",
     ("mlp", "linear-probe")),
    ("mobilenetv2", ["--no-cache-features"], "mlp", ("frozen",), FRESH_EVAL, "frozen base", ("mlp",)),
    ("mobilenetv2", ["--no-cache-features", "--finetune-epochs", "1"], "mlp", ("frozen", "finetune"), FRESH_EVAL,
     "frozen base + fine-tune", ("mlp",)),
    ("mobilenetv3large", ["--keep-top-hidden"], "mlp", ("extract", "head"), CACHED_EVAL,
     "frozen base + kept top hidden", ("mlp", "linear-probe")),
    ("alexnet:frozen", [], "mlp", ("extract", "head"), CACHED_EVAL, "frozen base", ("mlp", "linear-probe")),
    ("alexnet:lastlayer", [], "mlp", ("train",), FRESH_EVAL, FRAME, ("mlp",)),
    ("alexnet:lastlayer", ["--finetune-epochs", "1"], "mlp", ("train", "finetune"), FRESH_EVAL,
     FRAME + " + fine-tune", ("mlp",)),
    ("alexnet:scratch", [], "mlp", ("train",), FRESH_EVAL, "end-to-end (own ImageNet-style classifier)", ("mlp",)),
    # End to end: the CLI's --finetune-epochs does not apply either.
    ("smallcnn", ["--finetune-epochs", "3"], "mlp", ("train",), FRESH_EVAL, "end-to-end", ("mlp",)),
    ("vgg16", ["--weights", "none"], "mlp", ("train",), FRESH_EVAL, "end-to-end", ("mlp",)),
]


@pytest.mark.parametrize("row,argv,kind,stages,eval_path,description,kinds", TABLE)
def test_every_kind_of_row_has_its_plan(row, argv, kind, stages, eval_path, description, kinds):
    cfg = _cfg(*argv)
    plan = plan_for(*comparison.row_setup(row, cfg, 0, kind))
    assert (plan.stages, plan.eval_path, plan.description) == (stages, eval_path, description)
    assert plan.frozen_base == (not description.startswith("end-to-end"))
    assert plan.train_top == description.startswith("frozen features + pretrained top")
    assert plan.cache_features == (stages[0] == "extract")
    # The CLI offers a linear probe exactly where the plan caches a frozen base's features.
    assert comparison_run.row_kinds(row, dataclasses.replace(cfg, linear_probe=True)) == kinds
    assert comparison_run.row_kinds(row, cfg) == ("mlp",)
    assert json.loads(json.dumps(plan.to_dict()))["stages"] == list(stages)


@pytest.mark.parametrize("run,config,message", [
    (comparison.BackboneRun("smallcnn", None), TrainConfig(head_kind="linear-probe"),
     r"linear probe fits a frozen base's cached features. Received: smallcnn .*Accepted: a frozen"),
    (comparison.BackboneRun("mobilenetv2"), TrainConfig(head_kind="linear-probe", cache_features=False),
     r"Received: mobilenetv2 .*cache_features=False"),
    (comparison.BackboneRun("mobilenetv2"), TrainConfig(head_kind="linear-probe", finetune_epochs=2),
     r"Received: finetune_epochs=2. Accepted: finetune_epochs=0"),
    (comparison.BackboneRun("alexnet", "a.pth", keep_top_hidden=True, train_top_hidden=True),
     TrainConfig(head_kind="linear-probe"), r"train_top=True"),
    (comparison.BackboneRun("alexnet", None, keep_top_hidden=True, train_top_hidden=True), TrainConfig(),
     r"FROZEN pretrained base. Received: alexnet with weights=None"),
    (comparison.BackboneRun("alexnet", "a.pth", train_top_hidden=True), TrainConfig(),
     r"needs keep_top_hidden=True. Received: alexnet, keep_top_hidden=False"),
])
def test_contradictions_are_errors_when_the_plan_is_built(run, config, message):
    with pytest.raises(ValueError, match=message):
        plan_for(run, config)


def test_plan_names_known_stages_and_maps_seconds_to_result_keys():
    with pytest.raises(ValueError, match=r"stages come from .*Received: \('extract', 'heads'\)"):
        RunPlan(("extract", "heads"), True, False, True, CACHED_EVAL, "x")
    probe = plan_for(comparison.BackboneRun("mobilenetv2"), TrainConfig(head_kind="linear-probe"))
    assert probe.result_seconds({"extract": 1.0, "probe": 2.0}) == {
        "train_seconds": 3.0, "extract_seconds": 1.0, "head_seconds": 2.0, "train_stage_seconds": 0.0,
        "finetune_seconds": 0.0}
    tuned = plan_for(comparison.BackboneRun("mobilenetv2"), TrainConfig(finetune_epochs=1, cache_features=False))
    # A stale key of another stage (not in the plan) is not counted.
    assert tuned.result_seconds({"frozen": 4.0, "finetune": 5.0, "head": 100.0}) == {
        "train_seconds": 9.0, "extract_seconds": 0.0, "head_seconds": 4.0, "train_stage_seconds": 0.0,
        "finetune_seconds": 5.0}
    whole = plan_for(comparison.BackboneRun("smallcnn", None), TrainConfig())
    assert whole.result_seconds({"train": 7.0})["train_stage_seconds"] == 7.0
    assert whole.result_seconds({"train": 7.0})["head_seconds"] == 0.0


def _model(run, plan, num_classes=4):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # frozen random weights; MobileNet input-size notes
        keras.utils.set_random_seed(0)
        return models.build_classifier(
            run.backbone, num_classes, image_size=run.image_size, weights=None, head=run.head,
            freeze_base=plan.frozen_base, backbone_kwargs=run.backbone_kwargs, keep_top_hidden=run.keep_top_hidden,
            train_top_hidden=plan.train_top)


MNV2 = comparison.BackboneRun("mobilenetv2", "local.weights.h5", 32, {"alpha": 0.35}, HeadConfig((8,), 0.0))
SETUPS = {
    "frozen-cached": (MNV2, TrainConfig(epochs=1)),
    "frozen-cached-finetune": (MNV2, TrainConfig(epochs=1, finetune_epochs=1, finetune_top_layers=5)),
    "probe": (comparison.BackboneRun("mobilenetv2", "w.h5", 32, {"alpha": 0.35}, HeadConfig((), 0.0)),
              TrainConfig(epochs=1, head_kind="linear-probe")),
    "frozen-uncached-finetune": (MNV2, TrainConfig(epochs=1, cache_features=False, finetune_epochs=1,
                                                   finetune_top_layers=5)),
    "end-to-end": (comparison.BackboneRun("smallcnn", None, None, {"widths": (8, 16)}, HeadConfig((8,), 0.0)),
                   TrainConfig(epochs=1)),
}


@pytest.mark.parametrize("name", list(SETUPS) + ["lastlayer"])
def test_plan_from_the_model_equals_the_plan_from_the_configuration(name):
    if name == "lastlayer":
        run = comparison.BackboneRun("alexnet", "a.pth", 63, {}, HeadConfig((), 0.0), keep_top_hidden=True,
                                     train_top_hidden=True)
        config = TrainConfig(finetune_epochs=1)
    else:
        run, config = SETUPS[name]
    plan = plan_for(run, config)
    derived = plan_from_model(_model(run, plan), config)
    assert derived == plan
    # A model that does not match its plan is refused before any training.
    if plan.frozen_base:
        other = plan_for(comparison.BackboneRun("smallcnn", None), TrainConfig(epochs=1))
        with pytest.raises(ValueError, match=r"plan does not match the model.*stages \('train',\)"):
            train_classifier(_model(run, plan), None, None, config, "/nonexistent-never-written", plan=other)


@pytest.fixture(scope="module")
def few():
    """40 synthetic images: one training batch of 30 per epoch (the stages, not learning, are tested)."""
    from kerasimpl.data import synthetic_dataset

    return synthetic_dataset(num_train=40, num_test=8, num_classes=4, image_size=32, seed=0)


@pytest.mark.parametrize("name", list(SETUPS))
def test_training_runs_exactly_the_stages_of_the_plan(name, few, tmp_path):
    run, config = SETUPS[name]
    config = dataclasses.replace(config, batch_size=32, augment=(), inference_batch_size=32)
    plan = plan_for(run, config)
    split = few.split(0.25, 0)
    model = _model(run, plan, few.num_classes)
    seconds = train_classifier(model, few, split, config, str(tmp_path), verbose=0, plan=plan)
    assert tuple(seconds) == plan.stages and all(s > 0 for s in seconds.values())
    files = sorted(f for f in os.listdir(tmp_path) if f.endswith(".weights.h5"))
    assert files == sorted(f"{s}.weights.h5" for s in plan.fit_stages)
    assert list(dict.fromkeys(r["stage"] for r in read_csv(tmp_path / "history.csv"))) == list(plan.fit_stages)
    assert os.path.exists(tmp_path / "features_train.npz") == plan.cache_features
    # Evaluation reads the same plan: cached test features only on the cached path.
    test, _, path = comparison.evaluate(model, run, few, split, config, str(tmp_path), plan=plan)
    assert path == plan.eval_path and os.path.exists(tmp_path / "features_test.npz") == (path == CACHED_EVAL)
    np.testing.assert_allclose(test, model.predict(few.x_test, verbose=0), rtol=1e-4, atol=1e-5)


def test_result_json_records_the_plan(few, tmp_path):
    run = comparison.BackboneRun("smallcnn", None, None, {"widths": (8, 16)}, HeadConfig((8,), 0.0))
    config = TrainConfig(epochs=1, batch_size=32, augment=(), inference_batch_size=32)
    result = comparison.run_backbone(run, few, few.split(0.25, 0), config, str(tmp_path), verbose=0)
    saved = json.load(open(tmp_path / "result.json"))
    assert saved["plan"] == plan_for(run, config).to_dict() == result["plan"]
    assert saved["plan"]["stages"] == ["train"] and saved["trained"] == "end-to-end"
    assert saved["train_seconds"] == pytest.approx(saved["train_stage_seconds"])
    assert saved["eval_path"] == FRESH_EVAL
