"""torchvision's MobileNetV2 written out in plain torch, for tests where torchvision cannot be installed.

The main test environment has a CPU torch that torchvision's wheels would
replace, so the tests compare our Keras MobileNetV2 with this module: the
network of torchvision 0.29's `models/mobilenetv2.py` at width 1.0, with
the same module tree (so torchvision's state dict loads into it strictly)
and the same arithmetic (padding (k - 1) // 2 on every side, BatchNorm2d's
epsilon 1e-5, ReLU6, adaptive average pooling, dropout 0.2). CI's
torchvision stage checks that it equals torchvision's own `mobilenet_v2`
(tests/test_torchvision.py), so the chain Keras -> this -> torchvision holds.
Written independently of kerasimpl: nothing here imports it.
"""

import torch
from torch import nn

# torchvision's inverted_residual_setting: t, c, n, s
SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


def conv_bn_relu6(cin, cout, kernel=3, stride=1, groups=1):
    """torchvision's Conv2dNormActivation(norm BatchNorm2d, activation ReLU6): keys `.0` and `.1`."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers = [conv_bn_relu6(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """NCHW ImageNet-normalised input -> 1000 logits. `features[18]` is the Grad-CAM layer (after its ReLU6)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        features, cin = [conv_bn_relu6(3, 32, stride=2)], 32
        for t, c, n, s in SETTING:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class RawPixels(nn.Module):
    """`net` on raw [0, 255] NCHW pixels: ToTensor's / 255, then Normalize(MEAN, STD), as torchvision's transforms."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x / 255.0 - self.mean) / self.std)


def from_state_dict(state):
    """The reference with `state` loaded strictly, in eval mode."""
    net = MobileNetV2()
    net.load_state_dict(state, strict=True)
    return net.eval()
