"""Fine-tuning defaults per backbone (`Finetuning`, as timm keeps a `pretrained_cfg` per model): where the
base is unfrozen from, the learning rate and its schedule, label smoothing, views and epochs. The registry
(`kerasimpl.backbones`) gives each backbone one; `--finetune-*` flags override its fields."""

from __future__ import annotations

import dataclasses
from typing import Optional

SCHEDULES = ("plateau", "cosine")  # the fine-tuning stage's learning-rate schedules (`Finetuning.schedule`)


@dataclasses.dataclass(frozen=True)
class Finetuning:
    """How a backbone's top is fine-tuned unless the caller says otherwise (as timm keeps a
    `pretrained_cfg` per model): what `NAME:finetune` and `--finetune-epochs N` use; every
    `--finetune-*` flag overrides its field.

    Attributes:
        unfreeze_from: the first block unfrozen, named at a block boundary: every backbone layer from
            the first whose name is this or starts with this + "_" (graph order) up is trainable
            (BatchNormalization stays frozen). `None`: the last `top_layers` layers.
        top_layers: layers unfrozen when `unfreeze_from` is `None`.
        learning_rate: Adam learning rate of the fine-tuning stage.
        epochs: epochs of a `NAME:finetune` row when no `--finetune-epochs` is given.
        views: copies of each training image the top trains on (cached activations,
            `kerasimpl.partial`): view 0 plain, the others augmented.
        schedule: the stage's learning rate. `"plateau"`: constant, halved when the
            validation loss stalls (`ReduceLROnPlateau`); `"cosine"`: cosine decay per
            step from `learning_rate` to 0 over the stage's epochs (no halving).
        label_smoothing: of the stage's cross-entropy (0: none).
        mixup: MixUp's alpha in the stage (0: none): on cached activations, pairs of activations at the
            cut and their one-hot labels mix (manifold mixup, `kerasimpl.partial.ActivationMixUp`); when the
            whole model trains, pairs of images (`keras.layers.MixUp` at this alpha, added to `augment`'s
            augmentations: with `cutmix` there each batch gets one of the two, as `--augment mixup,cutmix`).
        measured: where these values come from (a sweep and its device, or "not measured").
    """

    unfreeze_from: Optional[str] = None
    top_layers: int = 20
    learning_rate: float = 1e-5
    epochs: int = 6
    views: int = 4
    schedule: str = "plateau"
    label_smoothing: float = 0.0
    mixup: float = 0.0
    measured: str = "not measured here: the last stage at Keras' transfer-learning guide's 1e-5"

    def __post_init__(self):
        if self.learning_rate <= 0 or self.epochs < 1 or self.views < 0 or self.top_layers < 1:
            raise ValueError(f"Finetuning needs learning_rate > 0, epochs >= 1, views >= 0 and top_layers >= 1. "
                             f"Received: {self}")
        if (self.schedule not in SCHEDULES or not 0 <= self.label_smoothing < 1
                or not 0 <= self.mixup < float("inf")):
            raise ValueError(f"Finetuning needs schedule in {SCHEDULES}, 0 <= label_smoothing < 1 and a finite "
                             f"mixup >= 0. Received: schedule={self.schedule!r}, label_smoothing={self.label_smoothing}, "
                             f"mixup={self.mixup}")


_LITE_MEASURED = {
    0: "the best row of a sweep of Lite0 on the CIFAR-10 subset (lent H200), then 3 seeds on 2 CPU cores",
    1: "Lite0's settings at the same block; not measured for Lite1",
    2: "3 seeds on 2 CPU cores: 93.52% +- 0.33 on 2,000 other CIFAR-10 test images against 92.93% +- 0.10 "
       "with Lite0's settings (constant rate, 2 views, no smoothing) at the same block; the three changes "
       "together, not one by one",
}


def measured_lite(n):
    """EfficientNet-Lite: from stage 5 (`block5a`, stride 16) at 3e-4, 6 epochs; Lite0 and Lite1 at a
    constant rate (halved on a plateau) on 2 views, Lite2 with cosine decay, label smoothing 0.1 and 4 views
    (docs/benchmarks.md, 'Choosing the fine-tuning defaults')."""
    if n == 2:
        return Finetuning("block5a", learning_rate=3e-4, epochs=6, views=4, schedule="cosine", label_smoothing=0.1,
                          measured=_LITE_MEASURED[n])
    return Finetuning("block5a", learning_rate=3e-4, epochs=6, views=2, measured=_LITE_MEASURED[n])
