"""Fine-tuning defaults per backbone (`backbones.Finetuning`): where a row's settings come from, which flag
overrides which field, and that every registered block boundary exists in its network."""

import warnings

import keras
import pytest

import dataclasses

from kerasimpl import comparison, models
from kerasimpl.backbones import Finetuning, get_spec, list_backbones
from kerasimpl.run_config import ConfigError, RunConfig

OPTIONS = RunConfig(("efficientnetlite0", "efficientnetlite2", "vgg16"), "synthetic", "unused", hidden=(8,),
                    dropout=0.0, epochs=1, batch_size=8, augment=("flip",), workers=1)


def _with(**fields):
    return dataclasses.replace(OPTIONS, **fields)


def test_a_row_takes_its_backbones_registry_defaults():
    lite = get_spec("efficientnetlite0").finetune
    assert (lite.unfreeze_from, lite.learning_rate, lite.views, lite.epochs) == ("block5a", 3e-4, 2, 6)
    lite2 = get_spec("efficientnetlite2").finetune  # chosen on 3 seeds (docs/benchmarks.md)
    assert (lite2.unfreeze_from, lite2.learning_rate, lite2.views, lite2.epochs, lite2.schedule,
            lite2.label_smoothing) == ("block5a", 3e-4, 4, 6, "cosine", 0.1)
    assert (lite.schedule, lite.label_smoothing) == ("plateau", 0.0)
    _, plain = comparison.row_setup("efficientnetlite0", _with(finetune_epochs=4), 0)
    assert (plain.finetune_from, plain.finetune_learning_rate, plain.finetune_views, plain.finetune_epochs) == (
        "block5a", 3e-4, 2, 4)  # --finetune-epochs 4 and nothing else: the registry's block, rate and views
    _, row = comparison.row_setup("efficientnetlite0:finetune", OPTIONS, 0)
    assert row.finetune_epochs == lite.epochs  # NAME:finetune without --finetune-epochs: the backbone's own
    _, vgg = comparison.row_setup("vgg16:finetune", OPTIONS, 0)
    assert (vgg.finetune_from, vgg.finetune_learning_rate) == ("block5", Finetuning().learning_rate)
    _, frozen = comparison.row_setup("efficientnetlite0", OPTIONS, 0)
    assert frozen.finetune_epochs == 0  # a plain row stays frozen


def test_each_flag_overrides_its_field_and_a_layer_count_replaces_the_block():
    tune = comparison.finetuning("efficientnetlite2", _with(finetune_top_layers=40, finetune_learning_rate=1e-4,
                                                            finetune_views=0))
    assert (tune.unfreeze_from, tune.top_layers, tune.learning_rate, tune.views) == (None, 40, 1e-4, 0)
    assert comparison.finetuning("efficientnetlite2", _with(finetune_from="block6a")).unfreeze_from == "block6a"
    assert comparison.finetuning("efficientnetlite2", OPTIONS) == get_spec("efficientnetlite2").finetune
    with pytest.raises(ConfigError, match="finetune_top_layers and finetune_from.*Received: 40 and 'block6a'"):
        _with(finetune_top_layers=40, finetune_from="block6a")  # refused when the options are made
    with pytest.raises(ValueError, match="learning_rate > 0"):
        Finetuning(learning_rate=0.0)


def test_compare_validates_fine_tuning_flags_before_running(tmp_path, capsys):
    from experiments import compare

    base = ["--data", "synthetic", "--backbones", "mobilenetv2", "--out", str(tmp_path / "run"), "--quiet"]
    for argv, message in ((["--finetune-layers", "0"], "error: --finetune-layers must be >= 1. Received: 0"),
                          (["--finetune-layers", "4", "--finetune-from", "block_13"],
                           "error: --finetune-layers and --finetune-from both say where fine-tuning starts"),
                          (["--finetune-lr", "-1"], "error: --finetune-lr must be > 0. Received: -1.0")):
        assert compare.main([*base, *argv]) == 2
        assert capsys.readouterr().err.startswith(message)  # the flag's name, not the library field's
    assert not (tmp_path / "run").exists()  # refused before any folder was made


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="layer names do not depend on the backend, and "
                    "building 21 networks costs minutes on JAX: this runs in the torch suite")
@pytest.mark.parametrize("name", [n for n in list_backbones() if get_spec(n).pretrained])
def test_every_registered_block_boundary_exists_in_its_network(name):
    spec = get_spec(name)
    size = max(spec.min_size, 75)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = models.build_classifier(name, 3, input_shape=(size, size, 3), image_size=size, weights=None)
    opened = models.unfreeze(model, from_block=spec.finetune.unfreeze_from)  # raises if the block is missing
    base = models.base_layers(model)
    assert opened and 0 < sum(bool(l.trainable_weights) for l in base) < sum(bool(l.weights) for l in base)


def test_the_default_preset_runs_each_backbone_at_its_own_size():
    """`compare --backbones efficientnetlite2:finetune --weights imagenet` (the full preset) runs Lite2 at its
    own 260 px: the preset pinned 224 once, which the reference's three backbones share but Lite1/2 do not."""
    from experiments import compare

    config = compare.resolve(compare.build_parser().parse_args(
        ["--backbones", "efficientnetlite2:finetune,mobilenetv3large", "--weights", "imagenet"]))
    assert config.image_size is None
    for row, size in (("efficientnetlite2:finetune", 260), ("mobilenetv3large", 224)):
        run, _ = comparison.row_setup(row, config, 0)
        assert (run.image_size or get_spec(run.backbone).input_size) == size
