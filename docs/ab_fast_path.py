"""A/B of one compiled-torch-path optimisation, in one process: the program as it is against the same
program with the optimisation switched off, timed interleaved (experiments.bench.common.interleaved).

    KERAS_BACKEND=torch python docs/ab_fast_path.py padding mobilenetv2_tv 32   # ZeroPadding2D folded into the conv
    KERAS_BACKEND=torch python docs/ab_fast_path.py inplace vgg16 16            # in-place activations (a Conv2D's own)

Arguments: what (padding | inplace), backbone, batch. The base's pooled features at 224 px, random
weights (speed does not depend on them); both programs' outputs are checked equal first.
"""
import sys

import numpy as np

from experiments.bench.common import build_classifier, interleaved
from kerasimpl import models
from kerasimpl.backend.torch import inference as torch_inference, layers as torch_layers

what, name, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
switch = {"padding": (torch_inference._Program, "_fold_padding", lambda *a: None),
          "inplace": (torch_layers, "_inplace_activation", lambda name, torch: None)}[what]
fe = models.feature_extractor(build_classifier(name, input_shape=(224, 224, 3), image_size=224, weights=None))
now = torch_inference.compile_frozen(fe)
owner, attr, off = switch
original = getattr(owner, attr)
setattr(owner, attr, off)
try:
    without = torch_inference.compile_frozen(fe)
finally:
    setattr(owner, attr, original)
x = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
np.testing.assert_allclose(now(x), without(x), rtol=1e-5, atol=1e-5)
secs = interleaved([lambda: now(x), lambda: without(x)], 9 if what == "padding" else 7)
print(f"{name} {what}: with {batch / secs[0]:.2f} img/s, without {batch / secs[1]:.2f} img/s, "
      f"ratio {secs[1] / secs[0]:.3f}")
