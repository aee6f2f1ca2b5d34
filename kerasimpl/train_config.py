"""How one classifier trains: `TrainConfig`, and compiling a model or a head for a stage.

`kerasimpl.training` runs the stages; `comparison.row_setup` makes a
comparison row's config from a `RunConfig` and the backbone's registry
defaults.
"""

from __future__ import annotations

import dataclasses

import keras

from kerasimpl.augmentation import AUGMENTATIONS, unknown
from kerasimpl.backbones import SCHEDULES, Finetuning
from kerasimpl.precise_bn import DEFAULT_IMAGES as PRECISE_BN_IMAGES

HEAD_KINDS = ("mlp", "linear-probe")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train one classifier.

    Attributes:
        epochs: epochs of stage 1 (head on a frozen base, or end to end).
        batch_size: images (or feature rows) per training step.
        inference_batch_size: images per batch of feature extraction and
            evaluation, independent of training; `None`: the measured
            default for the device (`runtime.inference_batch_size`).
        learning_rate: Adam learning rate of stage 1.
        finetune_epochs: epochs of stage 2 (0 skips it).
        finetune_learning_rate: learning rate of stage 2.
        finetune_top_layers: backbone layers unfrozen in stage 2 (when
            `finetune_from` is `None`).
        finetune_from: the block from which stage 2 unfreezes the backbone
            (`models.unfreeze(from_block=...)`); `None`: the last
            `finetune_top_layers` layers. The defaults of these four fields
            are the generic `backbones.Finetuning()`; a comparison row takes
            its backbone's (`comparison.row_setup`).
        finetune_views: with a frozen bottom (`kerasimpl.partial`), stage 2
            trains the top on cached activations of this many copies of
            each training image (view 0 unaugmented, the others augmented
            by `augment`); epoch e uses view `e mod finetune_views`.
            `0`: always fine-tune the whole model (the frozen bottom runs
            in every step).
        finetune_schedule: stage 2's learning rate, `"plateau"` or
            `"cosine"` (`backbones.Finetuning.schedule`).
        finetune_label_smoothing: of stage 2's cross-entropy (0: none).
        finetune_mixup: MixUp's alpha in stage 2 (0: none; `backbones.Finetuning.mixup`): activations at
            the cut on cached activations, images when the whole model trains.
        cache_features: stage 1 on cached pooled features (frozen base only).
        augment: augmentations for full-model stages, from `AUGMENTATIONS`.
            `mixup`/`cutmix` switch those stages to one-hot labels and
            categorical cross-entropy; the head stage on cached features
            is never augmented.
        patience: early-stopping patience (epochs).
        seed: seed of initialisation, shuffles and augmentation.
        workers: `PyDataset` workers (threads loading, and decoding image
            files, ahead), also used by feature extraction.
        head_kind: `"mlp"`: the head is trained with Adam (stage `head`);
            `"linear-probe"`: the head (one Dense layer) is L2-regularised
            softmax regression fitted on the cached features with the
            strength chosen on validation (stage `probe`,
            `kerasimpl.probe`; frozen base and cached features only).
        precise_bn: training images (a fixed sample of the split, unaugmented)
            over which the statistics of trainable BatchNormalization layers
            are re-estimated before every validation and at the end of a
            stage that updates them (`kerasimpl.precise_bn`); `0` keeps
            Keras' moving averages. Frozen BatchNormalization (frozen bases,
            fine-tuning) is never touched.
        precision: `float32`, `bfloat16` or `float16` (resolved, see
            `kerasimpl.precision`): feature extraction runs the compiled
            program under autocast at it; the model is built and trained
            under the matching Keras dtype policy by the caller
            (`comparison.run_backbone`).
    """

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    finetune_epochs: int = 0
    finetune_learning_rate: float = Finetuning.learning_rate
    finetune_top_layers: int = Finetuning.top_layers
    finetune_views: int = Finetuning.views
    finetune_from: str | None = Finetuning.unfreeze_from
    finetune_schedule: str = Finetuning.schedule
    finetune_label_smoothing: float = Finetuning.label_smoothing
    finetune_mixup: float = Finetuning.mixup
    cache_features: bool = True
    augment: tuple = ("flip", "translate")
    patience: int = 3
    seed: int = 0
    workers: int = 1
    head_kind: str = "mlp"
    inference_batch_size: int | None = None
    precision: str = "float32"
    precise_bn: int = PRECISE_BN_IMAGES

    @property
    def extract_batch(self) -> int:
        """Images per batch of inference-only passes on this device."""
        from kerasimpl.runtime import inference_batch_size

        return inference_batch_size(self.inference_batch_size)

    def __post_init__(self):
        if self.head_kind not in HEAD_KINDS:
            raise ValueError(f"Unknown head_kind. Received: {self.head_kind!r}. Accepted: {HEAD_KINDS}")
        bad = unknown(self.augment)
        if bad:
            raise ValueError(f"Unknown augmentation {bad}. Accepted: {AUGMENTATIONS}, and randaugment=F (0 < F <= 1)")
        if self.precision not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"precision must be resolved (kerasimpl.precision.resolve). Received: "
                             f"{self.precision!r}. Accepted: float32, bfloat16, float16")
        if self.inference_batch_size is not None and self.inference_batch_size < 1:
            raise ValueError(f"inference_batch_size must be >= 1 or None. Received: {self.inference_batch_size}")
        if self.precise_bn < 0:
            raise ValueError(f"precise_bn must be >= 0 (images; 0: off). Received: {self.precise_bn}")
        if self.finetune_schedule not in SCHEDULES:
            raise ValueError(f"Unknown finetune_schedule. Received: {self.finetune_schedule!r}. Accepted: {SCHEDULES}")
        if not 0 <= self.finetune_label_smoothing < 1:
            raise ValueError(f"finetune_label_smoothing must be in [0, 1). Received: {self.finetune_label_smoothing}")
        if not 0 <= self.finetune_mixup < float("inf"):
            raise ValueError(f"finetune_mixup must be finite and >= 0 (MixUp's alpha; 0: none). "
                             f"Received: {self.finetune_mixup}")
        if self.epochs < 0 or self.finetune_epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs, finetune_epochs must be >= 0 and batch_size >= 1. Received: {self}")


@keras.saving.register_keras_serializable(package="kerasimpl")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of probabilities against integer labels smoothed as
    `keras.losses.CategoricalCrossentropy(label_smoothing=...)` smooths
    one-hot ones: the target is `(1 - s) * one_hot + s / classes`.
    (Keras' `SparseCategoricalCrossentropy` has no label smoothing.)"""

    def __init__(self, label_smoothing=0.1, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, y_pred.shape[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def compile_full(model, learning_rate, one_hot=False, label_smoothing=0.0):
    """Adam + cross-entropy on the model's probabilities; `one_hot` for
    one-hot or mixed (MixUp/CutMix) labels, else integer labels;
    `label_smoothing` as `keras.losses.CategoricalCrossentropy`'s."""
    if one_hot:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = (SmoothedSparseCrossentropy(label_smoothing) if label_smoothing
                else keras.losses.SparseCategoricalCrossentropy())
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[accuracy])


def compile_head(head, learning_rate):
    """Adam + cross-entropy on a head's logits, integer labels (the head stage on cached features)."""
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
