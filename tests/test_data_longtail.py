"""Long-tail counts and the LDAM-DRW selection (SPEC section 5)."""

import numpy as np
import pytest

from iif.data import longtail_counts, select_longtail
from iif.data.longtail import check_nonempty, split_per_class
from iif.errors import IIFError


def test_cifar_lt_totals_match_published():
    # SPEC section 5: CIFAR-10-LT / CIFAR-100-LT at ratio 100 have 12,406 and 10,847 training images.
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
