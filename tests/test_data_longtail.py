"""Long-tail counts, the LDAM-DRW selection and the validation split (docs/method.md#datasets-and-splits)."""

import numpy as np
import pytest

from iif.data import longtail_counts, select_longtail
from iif.data.longtail import check_nonempty, longtail_train_val, split_per_class
from iif.errors import IIFError


def test_cifar_lt_totals_match_published():
    # Cao et al. (LDAM-DRW): CIFAR-10-LT / CIFAR-100-LT at ratio 100 have 12,406 and 10,847 training images.
    c10 = longtail_counts(5000, 10, 100)
    c100 = longtail_counts(500, 100, 100)
    assert sum(c10) == 12406 and sum(c100) == 10847
    assert c10[0] == 5000 and c10[-1] == 50 and c100[0] == 500 and c100[-1] == 5


def test_exp_profile_formula_by_hand():
    # n_i = int(n_max * ratio^(-i/(C-1))): 100 * 20^(-1/2) = 22.36 -> 22; 100 * 20^-1 = 5.
    assert longtail_counts(100, 3, 20) == [100, 22, 5]
    counts = longtail_counts(1000, 7, 50)
    assert counts == [int(1000 * 50 ** (-i / 6)) for i in range(7)]
    assert longtail_counts(10, 4, 1) == [10] * 4


def test_step_profile():
    assert longtail_counts(500, 10, 10, "step") == [500] * 5 + [50] * 5
    assert longtail_counts(500, 5, 100, "step") == [500, 500, 5, 5, 5]


@pytest.mark.parametrize("args", [(100, 10, 0.5, "exp"), (100, 0, 10, "exp"), (0, 10, 10, "exp"),
                                  (100, 10, 10, "linear"), (100, 10, float("nan"), "exp")])
def test_longtail_counts_bad_input(args):
    with pytest.raises(IIFError):
        longtail_counts(*args)


def test_select_longtail_matches_global_numpy_route():
    rng = np.random.default_rng(5)
    targets = rng.permutation(np.repeat(np.arange(6), 40))
    counts = longtail_counts(30, 6, 10)
    got = select_longtail(targets, counts, seed=3)
    # Independent route: the LDAM-DRW code itself, on numpy's global generator.
    np.random.seed(3)
    expect = []
    for c, n in zip(np.unique(targets), counts):
        idx = np.where(targets == c)[0]
        np.random.shuffle(idx)
        expect.extend(idx[:n].tolist())
    assert got.tolist() == expect
    assert np.bincount(targets[got]).tolist() == counts
    assert len(set(got.tolist())) == len(got)
    assert select_longtail(targets, counts, seed=4).tolist() != expect


def test_split_per_class_disjoint_from_exclude():
    targets = np.repeat(np.arange(3), 10)
    ex = select_longtail(targets, [8, 5, 2], 0)
    val = split_per_class(targets, 2, 1, exclude=ex)
    assert not set(val.tolist()) & set(ex.tolist())
    assert np.bincount(targets[val]).tolist() == [2, 2, 2]


def test_check_nonempty_names_empty_classes():
    with pytest.raises(IIFError, match=r"2 class\(es\): 1 \(cat\), 3 \(fox\)"):
        check_nonempty([0, 2, 2], 4, ["dog", "cat", "cow", "fox"])
    check_nonempty([0, 1], 2)


def _ldam_draw(targets, counts, seed):
    """The LDAM-DRW code's own route, per class (global numpy generator)."""
    np.random.seed(seed)
    out = []
    for c, n in enumerate(counts):
        idx = np.where(targets == c)[0]
        np.random.shuffle(idx)
        out.append(idx[:n])
    return out


@pytest.mark.parametrize("num_classes,per_class,n_max,val_per_class,published,expected_train", [
    (10, 5000, 5000, 100, 12406, 12306),   # CIFAR-10-LT: the head gives 100 of its 5,000
    (100, 500, 500, 20, 10847, 10827),     # CIFAR-100-LT: the head gives 20 of its 500
])
def test_cifar_sized_validation_holds_every_class(num_classes, per_class, n_max, val_per_class, published,
                                                  expected_train):
    # CIFAR-sized label vectors (5,000 / 500 training images per class, shuffled like the real files).
    targets = np.random.default_rng(1).permutation(np.repeat(np.arange(num_classes), per_class))
    counts = longtail_counts(n_max, num_classes, 100)
    assert sum(counts) == published and counts[0] == per_class  # the head takes its whole class
    train, val, moved = longtail_train_val(targets, counts, 0, val_per_class, num_classes)
    # Every class in val, balanced; val disjoint from train; the totals as documented.
    assert np.bincount(targets[val], minlength=num_classes).tolist() == [val_per_class] * num_classes
    assert not set(train.tolist()) & set(val.tolist()) and len(set(val.tolist())) == len(val)
    assert len(train) == expected_train == published - val_per_class
    assert moved.tolist() == [val_per_class] + [0] * (num_classes - 1)
    # Train is the LDAM-DRW draw except the head's last val_per_class draws, which are the head's val images.
    draw = _ldam_draw(targets, counts, 0)
    expect_train = np.concatenate([draw[0][:-val_per_class], *draw[1:]])
    assert train.tolist() == expect_train.tolist()
    assert set(val[targets[val] == 0].tolist()) == set(draw[0][-val_per_class:].tolist())
    # Other classes' val images are the unselected images drawn with seed + 1, as before.
    assert set(val[targets[val] == 1].tolist()) <= set(np.where(targets == 1)[0].tolist()) - set(draw[1].tolist())
    # val_per_class=0: the published split exactly, no validation set.
    exact, none, zero = longtail_train_val(targets, counts, 0, 0, num_classes)
    assert exact.tolist() == np.concatenate(draw).tolist() and none is None and not zero.any()


def test_validation_never_takes_a_class_last_training_image():
    targets = np.repeat(np.arange(3), [2, 6, 6])
    # Class 0: 2 images, both drawn; asking 3 val images moves only 1 (one stays to train on).
    train, val, moved = longtail_train_val(targets, [2, 3, 1], seed=0, val_per_class=3, num_classes=3)
    assert moved.tolist() == [1, 0, 0]
    assert np.bincount(targets[train], minlength=3).tolist() == [1, 3, 1]
    assert np.bincount(targets[val], minlength=3).tolist() == [1, 3, 3]
    assert not set(train.tolist()) & set(val.tolist())
    with pytest.raises(IIFError, match="val_per_class"):
        longtail_train_val(targets, [2, 3, 1], seed=0, val_per_class=-1, num_classes=3)


def _write_cifar10(root, per_class_train: int, per_class_test: int) -> None:
    """A tiny CIFAR-10 python release (5 data batches, test batch, meta) with random pixels."""
    import pickle

    rng = np.random.default_rng(0)
    ytr = rng.permutation(np.repeat(np.arange(10), per_class_train))
    base = root / "cifar-10-batches-py"
    base.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(ytr)), 5), 1):
        data = rng.integers(0, 256, (len(part), 3072), dtype=np.uint8)
        (base / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": data, b"labels": ytr[part].tolist()}))
    yte = np.repeat(np.arange(10), per_class_test)
    test = {b"data": rng.integers(0, 256, (len(yte), 3072), dtype=np.uint8), b"labels": yte.tolist()}
    (base / "test_batch").write_bytes(pickle.dumps(test))
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))


def _rows(images) -> set:
    return {bytes(x) for x in images.reshape(images.shape[0], -1).numpy()}


def test_cifar10_lt_builder_val_holds_the_head_class(tmp_path):
    from iif.data import build_datasets

    # As in the real CIFAR-10, the head (n_max) takes every training image of class 0.
    _write_cifar10(tmp_path, per_class_train=40, per_class_test=3)
    s = build_datasets("cifar10-lt", root=str(tmp_path), n_max=40, imbalance_ratio=10, val_per_class=4)
    counts = longtail_counts(40, 10, 10)
    assert s.freq.image_counts.tolist() == [counts[0] - 4] + counts[1:]
    assert np.bincount(s.val.targets.numpy(), minlength=10).tolist() == [4] * 10
    train, val, test = _rows(s.train.images), _rows(s.val.images), _rows(s.test.images)
    assert not train & val and not val & test and not train & test
    exact = build_datasets("cifar10-lt", root=str(tmp_path), n_max=40, imbalance_ratio=10, val_per_class=0)
    assert exact.val is None and exact.freq.image_counts.tolist() == counts


# mnist-lt is built by the same code as fashion-mnist-lt (and its real-data test lives in test_data_datasets).
@pytest.mark.parametrize("name", ["digits-lt", "fashion-mnist-lt"])
def test_small_benchmarks_val_holds_every_class_disjoint(name):
    from iif.data import build_datasets

    try:
        s = build_datasets(name)
    except IIFError as exc:
        # only a missing download may skip (Fashion-MNIST comes from dataset-fashion-mnist or a data.root);
        # digits-lt is bundled with scikit-learn, and any other refusal is a defect to report
        if name == "digits-lt" or " not found (looked in: " not in str(exc):
            raise
        pytest.skip(str(exc))
    vpc = {"digits-lt": 20}.get(name, 100)
    assert np.bincount(s.val.targets.numpy(), minlength=10).tolist() == [vpc] * 10
    # These pools leave enough unselected images in every class: the LT train split is the exact draw.
    n_max, ratio = (100, 20) if name == "digits-lt" else (5000, 100)
    assert s.freq.image_counts.tolist() == longtail_counts(n_max, 10, ratio)
    train, val, test = _rows(s.train.images), _rows(s.val.images), _rows(s.test.images)
    assert not train & val and not val & test
