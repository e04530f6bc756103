"""IIF weight variants (paper Eq. 10-12, Table III; docs/method.md#weight-variants) against values computed by hand.

The independent route is the standard library: ``math.log``/``log2``/``log10`` and
``statistics.NormalDist().inv_cdf`` for normit, evaluated one class at a time.
"""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np
import pytest
import torch

from iif import VARIANTS, IIFError, iif_weights
from iif.weights import as_counts, canonical_variant


def by_hand(variant: str, n: float, k: float) -> float:
    """One weight of Table III (docs/method.md#weight-variants), written out with the standard library."""
    p = n / k
    return {
        "raw": lambda: math.log(k / n),
        "smooth": lambda: math.log((k + 1) / (n + 1)) + 1,
        "relative": lambda: math.log((k - n) / n),
        "base2": lambda: math.log2(k / n),
        "base10": lambda: math.log10(k / n),
        "gombit": lambda: -math.log(-math.log(1 - p)),
        "normit": lambda: -NormalDist().inv_cdf(p),
    }[variant]()


# CIFAR-100-LT, ratio 100: K = 10,847, head class 500 images, tail class 5 (reference values, docs/method.md#weight-variants).
CIFAR100_K = 10847
CIFAR100_REFERENCE = {
    "raw": (3.0770, 7.6822),
    "smooth": (4.0751, 8.5000),
    "base10": (1.3363, 3.3363),
    "normit": (1.6840, 3.3133),
}


@pytest.mark.parametrize("variant", sorted(CIFAR100_REFERENCE))
def test_reference_values_cifar100_lt(variant):
    w = iif_weights([500, 5], variant, total=CIFAR100_K)
    head, tail = CIFAR100_REFERENCE[variant]
    assert w.dtype == torch.float32 and w.shape == (2,)
    assert w[0].item() == pytest.approx(head, abs=1e-4)
    assert w[1].item() == pytest.approx(tail, abs=1e-4)


def test_variants_list_is_the_table_iii_set():
    assert VARIANTS == ("raw", "smooth", "relative", "base2", "base10", "gombit", "normit")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_matches_hand_formula_with_default_total(variant):
    counts = [35, 25, 9, 3, 1]  # K defaults to the sum, 73 (paper Eq. 11); no class above K/2
    k = sum(counts)
    w = iif_weights(counts, variant)
    expected = [by_hand(variant, n, k) for n in counts]
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_matches_hand_formula_with_explicit_total(variant):
    counts = np.array([500, 120, 30, 5])
    w = iif_weights(counts, variant, total=CIFAR100_K)
    expected = [by_hand(variant, float(n), CIFAR100_K) for n in counts]
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)


def test_tail_classes_get_larger_weights_for_every_variant():
    for variant in VARIANTS:
        w = iif_weights([500, 120, 30, 5], variant, total=CIFAR100_K)
        assert torch.all(w[1:] > w[:-1]), variant


def test_accepts_numpy_tensor_and_list_alike():
    ref = iif_weights([10, 5, 1], "raw")
    np.testing.assert_array_equal(iif_weights(np.array([10, 5, 1], dtype=np.int32), "raw").numpy(), ref.numpy())
    np.testing.assert_array_equal(iif_weights(torch.tensor([10.0, 5.0, 1.0]), "raw").numpy(), ref.numpy())


@pytest.mark.parametrize("alias,name", [("rel", "relative"), ("prob", "relative"), ("RAW", "raw"), ("Smooth", "smooth")])
def test_aliases(alias, name):
    assert canonical_variant(alias) == name
    counts = [12, 10, 3]
    assert torch.equal(iif_weights(counts, alias), iif_weights(counts, name))


def test_smooth_is_the_default_variant():
    counts = [30, 10, 2]
    assert torch.equal(iif_weights(counts), iif_weights(counts, "smooth"))


@pytest.mark.parametrize("where", ["first", "last"])
def test_background_position_and_weight(where):
    counts = [30, 10, 2]
    fg = [by_hand("raw", n, 42) for n in counts]
    w = iif_weights(counts, "raw", background=where).numpy()
    assert w.shape == (4,)
    expected = [1.0, *fg] if where == "first" else [*fg, 1.0]
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    w2 = iif_weights(counts, "raw", background=where, background_weight=0.5).numpy()
    assert (w2[0] if where == "first" else w2[-1]) == 0.5


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_norm_divides_foreground_by_its_p_norm(p):
    counts = [30, 10, 2]
    fg = [by_hand("smooth", n, 42) for n in counts]
    pnorm = sum(abs(x) ** p for x in fg) ** (1 / p)
    w = iif_weights(counts, "smooth", norm=p, background="last").numpy()
    np.testing.assert_allclose(w[:3], [x / pnorm for x in fg], rtol=1e-6)
    assert w[3] == 1.0  # the background weight is not normalised


def test_smooth_is_finite_for_unseen_classes():
    w = iif_weights([9, 0], "smooth")
    np.testing.assert_allclose(w.numpy(), [math.log(10 / 10) + 1, math.log(10 / 1) + 1], rtol=1e-6)


# ----------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("variant", ["raw", "relative", "base2", "base10", "gombit", "normit"])
def test_zero_count_refused_by_inf_variants_naming_class_and_suggesting_smooth(variant):
    with pytest.raises(IIFError) as err:
        iif_weights([50, 0, 7, 0], variant)
    msg = str(err.value)
    assert "[1, 3]" in msg and "zero count" in msg and "smooth" in msg


@pytest.mark.parametrize(
    "counts,fragment",
    [
        ([5, -1, 3], "negative at classes [1]"),
        ([5, float("nan"), 3], "NaN or inf at classes [1]"),
        ([5, 3, float("inf")], "NaN or inf at classes [2]"),
        ([5, 2.5, 3], "not whole numbers at classes [1]"),
        ([], "non-empty 1-D"),
        ([[1, 2], [3, 4]], "non-empty 1-D"),
        (["a", "b"], "must be numbers"),
    ],
)
def test_bad_counts(counts, fragment):
    with pytest.raises(IIFError, match=None) as err:
        iif_weights(counts, "smooth")
    assert fragment in str(err.value)


def test_bad_counts_are_reported_for_tensors_too():
    with pytest.raises(IIFError, match="negative"):
        as_counts(torch.tensor([3.0, -2.0]))


def test_all_zero_counts():
    with pytest.raises(IIFError, match="All class counts are zero"):
        iif_weights([0, 0], "smooth")


@pytest.mark.parametrize("total", [0, -5, float("nan"), float("inf"), "abc", [1]])
def test_bad_total(total):
    with pytest.raises(IIFError, match="total"):
        iif_weights([3, 2], "smooth", total=total)


def test_total_smaller_than_a_count():
    with pytest.raises(IIFError, match="smaller than the count of classes \\[0\\]"):
        iif_weights([30, 2], "smooth", total=20)


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(IIFError) as err:
        iif_weights([3, 2], "sqrt")
    assert "'sqrt'" in str(err.value) and "smooth" in str(err.value) and "prob" in str(err.value)


@pytest.mark.parametrize(
    "variant,counts",
    [
        ("relative", [8, 2]),  # ln(2/8) < 0: a class holding more than half of K
        ("normit", [8, 2]),  # -Phi^-1(0.8) < 0
        ("gombit", [7, 3]),  # p = 0.7 > 1 - 1/e
        ("raw", [10, 0]),  # refused earlier: zero count
    ],
)
def test_negative_weights_refused_unless_allowed(variant, counts):
    with pytest.raises(IIFError) as err:
        iif_weights(counts, variant)
    if variant != "raw":
        assert "allow_negative=True" in str(err.value) and "classes [0]" in str(err.value)


@pytest.mark.parametrize("variant,counts", [("relative", [8, 2]), ("normit", [8, 2]), ("gombit", [7, 3])])
def test_allow_negative_warns_and_returns_the_formula(variant, counts):
    with pytest.warns(UserWarning, match="allow_negative=True"):
        w = iif_weights(counts, variant, allow_negative=True)
    k = sum(counts)
    np.testing.assert_allclose(w.numpy(), [by_hand(variant, n, k) for n in counts], rtol=1e-6)
    assert w[0] < 0 < w[1]


def test_allow_negative_warning_points_at_the_caller():
    """The warning names the line that called iif_weights (not a line inside iif), so a user sees their own call."""
    with pytest.warns(UserWarning, match="allow_negative=True") as rec:
        iif_weights([8, 2], "relative", allow_negative=True)
    assert rec[0].filename == __file__


def test_zero_weight_is_refused_too():
    # raw for a class equal to K is ln(1) = 0, which would zero its logit.
    with pytest.raises(IIFError, match="non-positive"):
        iif_weights([10], "raw")


def test_class_equal_to_total_gives_non_finite_relative():
    with pytest.raises(IIFError, match="non-finite"):
        iif_weights([10, 3], "relative", total=10)


def test_no_warning_for_valid_weights():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iif_weights([12, 10, 3], "relative")


@pytest.mark.parametrize("norm", [0, -2, float("nan"), "x"])
def test_bad_norm(norm):
    with pytest.raises(IIFError, match="norm must be 'mean' .* or a positive number"):
        iif_weights([3, 2], "smooth", norm=norm)


def test_bad_background():
    with pytest.raises(IIFError, match="'first' or 'last'"):
        iif_weights([3, 2], "smooth", background="middle")
    with pytest.raises(IIFError, match="background_weight"):
        iif_weights([3, 2], "smooth", background="first", background_weight=float("nan"))


# ---------------------------------------------------------------- the one variant table


def test_variant_table_is_the_single_source_of_the_formulas():
    from iif.weights import VARIANT_TABLE, variant_formula, weights_from_counts

    assert tuple(VARIANT_TABLE) == VARIANTS
    n = np.array([35.0, 25.0, 9.0, 3.0, 1.0, 0.0])
    for name, row in VARIANT_TABLE.items():
        got = weights_from_counts(n, name, 73.0)
        expect = [by_hand(name, c, 73.0) for c in n[:-1]]
        np.testing.assert_allclose(got[:-1], expect, rtol=1e-13)
        # n = 0: finite exactly for the variants the table marks finite (smooth), +inf for the others
        assert np.isfinite(got[-1]) == row.finite_at_zero
        assert row.finite_at_zero or got[-1] == np.inf
        # the same function runs on device tensors with a tensor K (the online loss)
        t = variant_formula(name)(torch.tensor(n[:-1]), torch.tensor(73.0, dtype=torch.float64))
        np.testing.assert_allclose(t.numpy(), expect, rtol=1e-13)
    assert variant_formula("rel") is VARIANT_TABLE["relative"].weight


def test_float64_weights_keep_every_digit():
    w = iif_weights([35, 25, 9, 3, 1], "normit", dtype=torch.float64)
    assert w.dtype == torch.float64
    np.testing.assert_allclose(w.numpy(), [by_hand("normit", c, 73.0) for c in (35, 25, 9, 3, 1)], rtol=1e-14)
    w32 = iif_weights([35, 25, 9, 3, 1], "normit")
    assert w32.dtype == torch.float32 and torch.equal(w32, w.float())


def test_unit_mean_norm_keeps_the_ratios():
    w = iif_weights([35, 25, 9, 3, 1], "smooth", dtype=torch.float64)
    u = iif_weights([35, 25, 9, 3, 1], "smooth", norm="mean", dtype=torch.float64)
    assert u.mean().item() == pytest.approx(1.0, rel=1e-14)
    np.testing.assert_allclose((u / u[0]).numpy(), (w / w[0]).numpy(), rtol=1e-14)


def test_zero_count_refusal_is_one_helper():
    from iif.weights import refuse_zero_counts

    refuse_zero_counts(np.array([1.0, 2.0]), "x is infinite")  # nothing to refuse
    with pytest.raises(IIFError, match=r"^ln\(n\) is -inf for classes with zero count \[0, 2\] \(2 in all\); add 1\.$"):
        refuse_zero_counts(np.array([0.0, 2.0, 0.0]), "ln(n) is -inf", "add 1")


def test_weight_vector_keeps_float64_and_refuses_non_finite():
    from iif.weights import as_weight_vector

    assert as_weight_vector(np.array([1.0, 2.0])).dtype == torch.float64
    assert as_weight_vector([1.0, 2.0]).dtype == torch.float32
    assert as_weight_vector(torch.tensor([1.0, 2.0], dtype=torch.bfloat16)).dtype == torch.float32
    with pytest.raises(IIFError, match=r"NaN or inf at classes \[1\]"):
        as_weight_vector([1.0, float("inf")])
    with pytest.raises(IIFError, match="1-D vector"):
        as_weight_vector([[1.0]])


# ---------------------------------------------------------------- the torch-free route (iif weights)


def test_the_formulas_run_on_numpy_arrays_too():
    """One table, two array libraries: numpy arrays give numpy arrays with the hand values (zero -> inf)."""
    from iif.weights import VARIANT_TABLE

    n = np.array([35.0, 25.0, 9.0, 3.0, 1.0, 0.0])
    for name, row in VARIANT_TABLE.items():
        got = row.weight(n[:-1], 73.0)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        np.testing.assert_allclose(got, [by_hand(name, c, 73.0) for c in n[:-1]], rtol=1e-13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's divide-by-zero warning must not reach iif weights' stderr
        from iif.weights import _numpy_weights_from_counts

        assert _numpy_weights_from_counts(n, "raw", 73.0)[-1] == np.inf


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kwargs", [{}, {"norm": "mean"}, {"norm": 2.0, "background": "first"},
                                    {"total": 1000, "background": "last", "background_weight": 0.5}])
def test_array_route_gives_iif_weights_float32_values(variant, kwargs):
    from iif.weights import iif_weights_array

    rng = np.random.default_rng(len(variant))
    counts = rng.integers(1, 200, size=300).tolist()
    got = iif_weights_array(counts, variant, **kwargs)
    want = iif_weights(counts, variant, **kwargs)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and want.dtype == torch.float32
    assert np.array_equal(got, want.numpy())  # bit for bit


def test_array_route_keeps_the_errors_and_the_warning():
    from iif.weights import iif_weights_array

    with pytest.raises(IIFError, match=r"^Variant 'raw' is infinite for classes with zero count \[1\]"):
        iif_weights_array([3, 0], "raw")
    with pytest.raises(IIFError, match="non-positive weights for classes \\[0\\]"):
        iif_weights_array([8, 2], "relative")
    with pytest.warns(UserWarning, match="allow_negative=True") as rec:
        got = iif_weights_array([8, 2], "relative", allow_negative=True)
    assert rec[0].filename == __file__
    with pytest.warns(UserWarning, match="allow_negative=True"):
        assert got.tolist() == iif_weights([8, 2], "relative", allow_negative=True).tolist()
    assert got[0] == np.float32(math.log(2 / 8)) and got[1] == np.float32(math.log(8 / 2))


def test_float32_certainty_guard():
    """A value on a float32 rounding boundary (the midpoint of two neighbours) is not certain; a float32 is."""
    from iif.weights import _float32_is_certain

    one = np.array([1.0])
    mid = np.array([1.0 + 2.0**-24])  # halfway between 1 and the next float32
    assert _float32_is_certain(one, one)
    assert not _float32_is_certain(mid, mid)
    assert not _float32_is_certain(np.nextafter(mid, 2.0), mid)  # one float64 ulp above it: still too close
    assert _float32_is_certain(mid + 2.0**-30, mid)  # 2**-30 away (a 128th of a float32 ulp): clear of it
    assert not _float32_is_certain(np.array([np.inf]), one)
    assert not _float32_is_certain(one, np.array([-1.0]))  # negative formula values: torch decides


def test_array_route_falls_back_to_torch_when_not_certain(monkeypatch):
    import iif.weights as weights

    called = []
    torch_route = weights.weights_from_counts
    monkeypatch.setattr(weights, "_float32_is_certain", lambda w, f: False)
    monkeypatch.setattr(weights, "weights_from_counts", lambda *a: called.append(a) or torch_route(*a))
    got = weights.iif_weights_array([35, 25, 9, 3, 1], "gombit")
    assert len(called) == 1 and called[0][1:] == ("gombit", 73.0)
    assert np.array_equal(got, iif_weights([35, 25, 9, 3, 1], "gombit").numpy())


def test_iif_weights_keeps_its_types():
    """A torch tensor in, a float32 tensor out by default; dtype= still chooses; the online formula takes tensors."""
    from iif.weights import VARIANT_TABLE

    w = iif_weights(torch.tensor([35, 25, 9, 3, 1]), "smooth")
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32
    assert iif_weights([3, 1], dtype=torch.float64).dtype == torch.float64
    k = torch.tensor(4.0, dtype=torch.float64)
    t = VARIANT_TABLE["smooth"].weight(torch.tensor([3.0, 1.0], dtype=torch.float64), k)
    assert isinstance(t, torch.Tensor) and t.tolist() == [math.log(5 / 4) + 1, math.log(5 / 2) + 1]
