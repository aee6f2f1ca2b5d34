"""Any tensorflow-datasets image-classification dataset (optional `tfds` extra)."""

from __future__ import annotations

import numpy as np

from kerasimpl.data.base import DatasetError, ImageClassificationData


def load_tfds(name, image_size=None, data_dir=None, train_split="train", test_split="test"):
    """Load `name` from tensorflow-datasets as uint8 NHWC arrays.

    Args:
        name: a tfds dataset name, e.g. `cifar10` or `oxford_flowers102`.
        image_size: resize every image (bilinear) to this square size, needed
            when the dataset's images differ in size; `None` keeps them as-is.
            Grayscale images are repeated to 3 channels.
        data_dir: tfds data folder (its default when `None`).
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DatasetError(
            f"tfds:{name} needs tensorflow-datasets: pip install 'kerasimpl[tfds]'"
        ) from e
    try:
        splits, info = tfds.load(
            name, split=[train_split, test_split], as_supervised=True,
            with_info=True, data_dir=data_dir,
        )
    except Exception as e:  # tfds raises many kinds: unknown name, no data...
        raise DatasetError(f"tfds:{name}: could not load ({type(e).__name__}: {e})") from e
    label = info.features["label"]
    names = tuple(label.names) if hasattr(label, "names") else tuple(str(i) for i in range(label.num_classes))
    arrays = [_to_arrays(tfds.as_numpy(s), image_size, f"tfds:{name}") for s in splits]
    (x_tr, y_tr), (x_te, y_te) = arrays
    return ImageClassificationData(x_tr, y_tr, x_te, y_te, names, source=f"tfds:{name}")


def _to_arrays(examples, image_size, where):
    from PIL import Image

    xs, ys = [], []
    for image, label in examples:
        image = np.asarray(image)
        if image.ndim == 2 or image.shape[-1] == 1:  # grayscale -> RGB
            image = np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise DatasetError(
                f"{where}: expected images of shape (H, W, 1 or 3). Received: {image.shape}"
            )
        if image_size is not None and image.shape[:2] != (image_size, image_size):
            image = np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.BILINEAR))
        if xs and image.shape != xs[0].shape:  # fail at once, before holding a whole mixed-size set
            raise DatasetError(
                f"{where}: images differ in size (e.g. {xs[0].shape} and {image.shape}); pass "
                "image_size (`--data-size N` in experiments.compare) to resize them when loading"
            )
        xs.append(image.astype(np.uint8))
        ys.append(int(label))
    if not xs:
        raise DatasetError(f"{where}: the split is empty")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)
