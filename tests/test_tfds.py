"""tensorflow-datasets source, tested with tfds' own mocking (no network, no
prepared data). Needs the `tfds` extra; .ci/run installs it in a separate
environment and sets KERASIMPL_REQUIRE_TFDS so that these run, not skip."""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.tfds


@pytest.fixture(scope="module")
def tfds():
    try:
        import tensorflow_datasets
    except ImportError:
        if os.environ.get("KERASIMPL_REQUIRE_TFDS"):
            pytest.fail("tensorflow_datasets is not importable, and KERASIMPL_REQUIRE_TFDS is set (CI)")
        pytest.skip("tensorflow-datasets not installed: pip install -e '.[tfds]'")
    return tensorflow_datasets


def _reference(tfds, name, split, size=None):
    """What tfds itself yields, decoded independently of kerasimpl."""
    from PIL import Image

    xs, ys = [], []
    for image, label in tfds.as_numpy(tfds.load(name, split=split, as_supervised=True)):
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        if size is not None:
            image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        xs.append(image)
        ys.append(label)
    return np.stack(xs), np.asarray(ys)


def test_tfds_cifar10_matches_tfds_and_feeds_the_pipeline(tfds):
    from kerasimpl.data import ArrayDataset, load_dataset, stratified_split

    with tfds.testing.mock_data(num_examples=40):
        data = load_dataset("tfds:cifar10")
        ref_train = _reference(tfds, "cifar10", "train")
        ref_test = _reference(tfds, "cifar10", "test")
        # Mocked cifar10 has the ClassLabel's default names ("0".."9"); prepared data has the real ones.
        names = tuple(tfds.builder("cifar10").info.features["label"].names)
        again = load_dataset("tfds:cifar10")
    assert data.source == "tfds:cifar10"
    assert data.x_train.shape == (40, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (40, 32, 32, 3) and data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.x_train, ref_train[0])
    np.testing.assert_array_equal(data.y_train, ref_train[1])
    np.testing.assert_array_equal(data.x_test, ref_test[0])
    np.testing.assert_array_equal(data.y_test, ref_test[1])
    np.testing.assert_array_equal(again.x_train, data.x_train)  # deterministic
    assert data.class_names == names and len(names) == 10
    assert data.y_train.min() >= 0 and data.y_train.max() < 10

    # The same split and loader as CIFAR-10 from the archive.
    split = stratified_split(data.y_train, 0.25, seed=0)
    assert not set(split.train) & set(split.val)
    assert len(split.train) + len(split.val) == 40
    ds = ArrayDataset(data.x_train, data.y_train, batch_size=8, indices=split.train, shuffle=False)
    x, y = ds[0]
    assert x.shape == (8, 32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, data.x_train[split.train[:8]])


def test_tfds_mixed_sizes_need_image_size_and_resize_like_pil(tfds):
    from kerasimpl.data import DatasetError, load_dataset

    with tfds.testing.mock_data(num_examples=6):
        with pytest.raises(DatasetError, match=r"tfds:oxford_flowers102: images differ in size.*--data-size"):
            load_dataset("tfds:oxford_flowers102")
        data = load_dataset("tfds:oxford_flowers102", image_size=40)
        ref_x, ref_y = _reference(tfds, "oxford_flowers102", "train", size=40)
    assert data.x_train.shape == (6, 40, 40, 3) and data.x_train.dtype == np.uint8
    np.testing.assert_array_equal(data.x_train, ref_x)
    np.testing.assert_array_equal(data.y_train, ref_y)
    assert len(data.class_names) == 102 and data.class_names[0] == "pink primrose"


def test_tfds_grayscale_becomes_rgb(tfds):
    from kerasimpl.data import load_dataset

    with tfds.testing.mock_data(num_examples=5):
        data = load_dataset("tfds:mnist")
        ref_x, _ = _reference(tfds, "mnist", "test")
    assert data.x_test.shape == (5, 28, 28, 3)
    np.testing.assert_array_equal(data.x_test, ref_x)
    np.testing.assert_array_equal(data.x_test[..., 0], data.x_test[..., 2])


def test_tfds_unknown_name_is_a_dataset_error(tfds):
    from kerasimpl.data import DatasetError, load_dataset

    with pytest.raises(DatasetError, match=r"tfds:no_such_dataset_xyz: could not load"):
        load_dataset("tfds:no_such_dataset_xyz")


def test_compare_cli_on_a_mocked_tfds_dataset_with_data_size(tfds, tmp_path):
    """`--data tfds:NAME --data-size N` end to end: the saved model takes the
    loaded size and its test accuracy is recomputed from the file."""
    import json

    from experiments import compare
    from kerasimpl import inference
    from kerasimpl.artifacts import load_model
    from kerasimpl.data import load_dataset

    out = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=60):
        code = compare.main([
            "--preset", "smoke", "--data", "tfds:oxford_flowers102", "--data-size", "24",
            "--backbones", "smallcnn", "--epochs", "1", "--batch-size", "16", "--quiet",
            "--plots-dir", "", "--out", str(out),
        ])
        data = load_dataset("tfds:oxford_flowers102", image_size=24)
    assert code == 0
    config = json.load(open(out / "config.json"))
    assert config["data_source"] == "tfds:oxford_flowers102" and config["data_size"] == 24
    (result,) = json.load(open(out / "results.json"))
    assert result["num_test"] == 60
    model = load_model(out / "smallcnn" / "model.keras")
    assert tuple(model.input_shape[1:]) == (24, 24, 3) and model.output_shape[-1] == 102
    proba = inference.predict(model, data.x_test, batch_size=16)
    assert abs(float(np.mean(proba.argmax(-1) == data.y_test)) - result["test_accuracy"]) < 1e-6
