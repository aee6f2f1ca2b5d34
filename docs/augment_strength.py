"""What `--augment randaugment=F` does to CIFAR-10 images, by strength: one figure.

    python docs/augment_strength.py [--data PATH] [--out plots/augmentation/randaugment_strength.png]

Rows: the images, then the same 16 images under RandAugment at strengths
0.1, 0.2 and Keras' default 0.5 (plain `randaugment`), one seeded draw each
(`kerasimpl.augmentation.augmenter`, key (1, 0)). Images are the first 16
training images of `--data` (default: the real subset beside the checkout).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import experiments  # noqa: E402,F401  (the default backend before keras loads)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                  "cifar10-subset", "cifar-10-python-subset.tar.gz"))
    p.add_argument("--out", default="plots/augmentation/randaugment_strength.png")
    args = p.parse_args(argv)
    import numpy as np
    from matplotlib.figure import Figure

    from kerasimpl.artifacts import save_figure
    from kerasimpl.augmentation import augmenter
    from kerasimpl.data import load_cifar10

    data = load_cifar10(args.data)
    x, y = data.x_train[:16], data.y_train[:16]
    rows = [("original", x)] + [(f"randaugment={f}", augmenter((f"randaugment={f}",), seed=0)(x, y, key=(1, 0))[0])
                                for f in (0.1, 0.2)]
    rows.append(("randaugment (Keras' default 0.5)", augmenter(("randaugment",), seed=0)(x, y, key=(1, 0))[0]))
    fig = Figure(figsize=(16, 4.8), layout="constrained")
    axes = fig.subplots(len(rows), len(x))
    for r, (name, images) in enumerate(rows):
        for i, image in enumerate(images):
            axes[r, i].imshow(np.clip(image, 0, 255).astype(np.uint8))
            axes[r, i].set_axis_off()
        axes[r, 0].set_title(name, fontsize=9, loc="left")
    fig.suptitle("RandAugment (Keras core) on 32 px CIFAR-10 training images, one seeded draw per strength")
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
