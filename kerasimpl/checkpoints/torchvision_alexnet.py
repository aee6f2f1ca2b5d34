"""torchvision's AlexNet checkpoints (`alexnet-owt-7be5be79.pth`): key map.

Keras layers of `kerasimpl.alexnet` <- torchvision's `features` and
`classifier` modules. The first Linear (`classifier.1`, Keras `fc6`) reads
torch's channels-first flatten of the 256x6x6 map (index c*36 + h*6 + w);
Keras flattens channels-last (h*1536 + w*256 + c), so its 9216 input rows
are reordered. The file is downloaded (`kerasimpl.checkpoints.torchvision_hosted`).
"""

from __future__ import annotations

from kerasimpl.checkpoints import torchvision_hosted
from kerasimpl.checkpoints.core import KernelTransform, Source

HOSTED = torchvision_hosted.HostedFile("alexnet-owt-7be5be79.pth", "torchvision's AlexNet")

LAYERS = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
          "conv5": "features.10", "fc6": "classifier.1", "fc7": "classifier.4", "predictions": "classifier.6"}
POOLED = (6, 6, 256)  # the map the first Linear reads


def _fc6_to_keras(array):  # (4096, C*H*W) -> (H*W*C, 4096)
    h, w, c = POOLED
    return array.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)


def _fc6_to_torch(array):
    h, w, c = POOLED
    return array.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)


SOURCE = Source("torchvision-alexnet", LAYERS, locate=lambda: torchvision_hosted.locate(HOSTED),
                kernels={"fc6": KernelTransform(_fc6_to_keras, _fc6_to_torch)},
                description=f"torchvision's AlexNet ({HOSTED.file_name} format)")
