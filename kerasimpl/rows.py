"""A comparison's rows: `NAME` or `NAME:VARIANT`, and the variants a row may take."""

from __future__ import annotations

from kerasimpl.backbones import get_spec, list_backbones

# Row variants of `experiments.compare --backbones NAME:VARIANT` (AlexNet's two experiment rows).
ROW_VARIANTS = {
    "scratch": "random weights, trained end to end; a backbone whose ImageNet top has hidden layers keeps "
               "its own classifier (AlexNet: the whole torchvision AlexNet, last layer N-wide)",
    "lastlayer": "pretrained (--weights) features frozen, the ImageNet top's hidden layers kept AND trained "
                 "(AlexNet: fc6, fc7), only the last layer new: torchvision's classifier[6] = Linear(4096, N)",
    "frozen": "pretrained (--weights) base frozen, a new --hidden/--dropout head on its pooled features "
              "(the same as NAME alone)",
    "finetune": "as NAME alone, then the top of the base fine-tuned with augmentation (BatchNormalization "
                "frozen; on cached activations where the base splits, kerasimpl.partial): from the backbone's "
                "own block, learning rate, views and epochs (its registry entry, backbones.Finetuning), each "
                "overridden by its --finetune-* flag",
}


def parse_row(text):
    """`"alexnet:lastlayer"` -> `("alexnet", "lastlayer")`; `"vgg16"` -> `("vgg16", None)`.

    Raises:
        ValueError: an unknown backbone or variant, or a variant the backbone
            cannot take; the message lists what is accepted.
    """
    name, _, variant = str(text).strip().lower().partition(":")
    spec = get_spec(name)
    if not variant:
        return spec.name, None
    if variant not in ROW_VARIANTS:
        raise ValueError(f"Unknown row variant in {text!r}. Accepted: {', '.join(ROW_VARIANTS)} (NAME:VARIANT)")
    if variant in ("lastlayer", "frozen", "finetune") and not spec.pretrained:
        raise ValueError(f"{text!r}: {spec.name} has no pretrained weights. Accepted for it: {spec.name}:scratch")
    if variant == "lastlayer" and not spec.top_first:
        accepted = [n for n in list_backbones() if get_spec(n).top_first]
        raise ValueError(f"{text!r}: 'lastlayer' needs a backbone whose ImageNet top is kept and trained. "
                         f"Accepted: {', '.join(f'{n}:lastlayer' for n in accepted)}")
    return spec.name, variant


def pretrained_backbones(rows) -> list:
    """The backbones of `rows` (`NAME` or `NAME:VARIANT`) that start from pretrained weights (not
    NAME:scratch), sorted."""
    parsed = [parse_row(b) for b in rows]
    return sorted({n for n, v in parsed if get_spec(n).pretrained and v != "scratch"})
