"""iif.detection.sampling: repeat factors equal hand-computed ones; the sampler's expected repeats equal the
factors, its epochs are a function of (seed, epoch), and DDP ranks split each epoch exactly."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from iif.detection import RepeatFactorSampler, repeat_factors
from iif.errors import IIFError

# json image order 30, 10, 50, 20, 40; categories A=1, B=2, C=3.
# Images containing A: 30, 10, 20 -> f_A = 3/5; B: 10 -> 1/5; C: 50 -> 1/5; image 40 has no annotation.
ANN = {
    "images": [{"id": i, "width": 8, "height": 8, "file_name": f"{i}.png"} for i in (30, 10, 50, 20, 40)],
    "categories": [{"id": 3, "name": "C"}, {"id": 1, "name": "A"}, {"id": 2, "name": "B"}],
    "annotations": [
        {"id": 1, "image_id": 30, "category_id": 1, "bbox": [0, 0, 2, 2]},
        {"id": 2, "image_id": 30, "category_id": 1, "bbox": [1, 1, 2, 2]},
        {"id": 3, "image_id": 10, "category_id": 1, "bbox": [0, 0, 2, 2]},
        {"id": 4, "image_id": 10, "category_id": 2, "bbox": [0, 0, 2, 2]},
        {"id": 5, "image_id": 50, "category_id": 3, "bbox": [0, 0, 2, 2]},
        {"id": 6, "image_id": 20, "category_id": 1, "bbox": [0, 0, 2, 2]},
    ],
}


def test_repeat_factors_hand_computed():
    # t = 0.5: r_A = max(1, sqrt(0.5 / 0.6)) = 1, r_B = r_C = sqrt(0.5 / 0.2) = sqrt(2.5).
    r = repeat_factors(ANN, threshold=0.5)
    assert r.dtype == np.float64
    np.testing.assert_allclose(r, [1.0, math.sqrt(2.5), math.sqrt(2.5), 1.0, 1.0], rtol=1e-15)
    # t = 0.9: r_A = sqrt(1.5), r_B = r_C = sqrt(4.5); image 10 has A and B -> the max, sqrt(4.5).
    r = repeat_factors(ANN, threshold=0.9)
    np.testing.assert_allclose(r, [math.sqrt(1.5), math.sqrt(4.5), math.sqrt(4.5), math.sqrt(1.5), 1.0], rtol=1e-15)
    # LVIS's t = 0.001: every category is in >= 20% of the images, so nothing repeats.
    np.testing.assert_array_equal(repeat_factors(ANN), np.ones(5))


def test_repeat_factors_from_path_equals_dict(tmp_path):
    import json

    p = tmp_path / "ann.json"
    p.write_text(json.dumps(ANN))
    np.testing.assert_array_equal(repeat_factors(p, 0.9), repeat_factors(ANN, 0.9))


def test_repeat_factors_match_a_loop_on_a_random_json():
    rng = np.random.default_rng(3)
    n_img, n_cat = 60, 9
    ids = rng.permutation(1000)[:n_img] + 5
    anns = []
    for k in range(300):
        # Two thirds of the annotations fall on the first half of the images; some images get none.
        j = rng.integers(0, n_img // 2) if k % 3 else rng.integers(0, n_img)
        anns.append({"id": k + 1, "image_id": int(ids[j]),
                     "category_id": int(rng.zipf(1.6) % n_cat) * 10 + 10, "bbox": [0, 0, 1, 1]})
    data = {"images": [{"id": int(i)} for i in ids], "annotations": anns,
            "categories": [{"id": 10 * c + 10, "name": str(c)} for c in range(n_cat)]}
    t = 0.3
    cats_of = {int(i): set() for i in ids}
    for a in anns:
        cats_of[a["image_id"]].add(a["category_id"])
    f = {c["id"]: sum(c["id"] in s for s in cats_of.values()) / n_img for c in data["categories"]}
    expected = [max([1.0] + [max(1.0, math.sqrt(t / f[c])) for c in cats_of[int(i)]]) for i in ids]
    assert min(expected) == 1.0 and max(expected) > 1.2  # the fixture exercises both cases
    with warnings.catch_warnings():  # a category may have no image (warned by ClassFrequency)
        warnings.simplefilter("ignore")
        got = repeat_factors(data, t)
    np.testing.assert_allclose(got, expected, rtol=1e-14)


def test_repeat_factors_bad_input():
    with pytest.raises(IIFError, match="threshold"):
        repeat_factors(ANN, threshold=0)
    with pytest.raises(IIFError, match="threshold"):
        repeat_factors(ANN, threshold=float("nan"))
    extra = {"id": 9, "image_id": 10, "category_id": 77, "bbox": [0, 0, 1, 1]}
    bad = {**ANN, "annotations": ANN["annotations"] + [extra]}
    with pytest.raises(IIFError, match="77"):
        repeat_factors(bad)


# ------------------------------------------------------------------------------------------ sampler

FACTORS = np.array([1.0, 1.3, 2.5, 0.2, 3.75, 1.0, 1.9])


def test_expected_repeats_equal_factors():
    s = RepeatFactorSampler(FACTORS, num_replicas=1, rank=0, seed=7)
    epochs = 4000
    copies = np.zeros((epochs, FACTORS.size))
    for e in range(epochs):
        s.set_epoch(e)
        copies[e] = np.bincount(list(s), minlength=FACTORS.size)
    whole = np.floor(FACTORS)
    # Each epoch's copies are floor(r) + Bernoulli(frac(r)): never outside those two values ...
    assert ((copies == whole) | (copies == whole + 1)).all()
    # ... and their mean over the epochs is r within 5 standard errors, sqrt(p (1 - p) / epochs).
    p = FACTORS - whole
    tol = 5 * np.sqrt(p * (1 - p) / epochs) + 1e-12
    assert (np.abs(copies.mean(0) - FACTORS) <= tol).all(), (copies.mean(0), FACTORS, tol)
    # Integer factors are exact in every epoch.
    assert (copies[:, FACTORS == np.round(FACTORS)] == FACTORS[FACTORS == np.round(FACTORS)]).all()


def test_deterministic_per_seed_and_epoch():
    a = RepeatFactorSampler(FACTORS, num_replicas=1, rank=0, seed=3)
    b = RepeatFactorSampler(FACTORS, num_replicas=1, rank=0, seed=3)
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating twice gives the same epoch
    lists = set()
    for e in range(6):
        a.set_epoch(e)
        lists.add(tuple(a))
    assert len(lists) == 6  # epochs differ
    c = RepeatFactorSampler(FACTORS, num_replicas=1, rank=0, seed=4)
    c.set_epoch(5)
    a.set_epoch(5)
    assert list(c) != list(a)


def test_no_shuffle_keeps_copies_in_index_order():
    s = RepeatFactorSampler([2.0, 1.0, 3.0], num_replicas=1, rank=0, shuffle=False)
    assert list(s) == [0, 0, 1, 2, 2, 2]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_the_epoch_exactly(world):
    factors = np.r_[FACTORS, FACTORS * 1.7]
    for epoch in range(20):
        samplers = [RepeatFactorSampler(factors, num_replicas=world, rank=k, seed=11) for k in range(world)]
        for s in samplers:
            s.set_epoch(epoch)
        parts = [list(s) for s in samplers]
        full = samplers[0].epoch_indices().tolist()
        n = len(full)
        total = -(-n // world) * world
        assert {len(p) for p in parts} == {total // world}
        assert [len(s) for s in samplers] == [total // world] * world
        # Interleaving the ranks rebuilds the epoch's list plus padding taken from its start: the ranks cover
        # every position once (disjoint), and only the padding repeats positions.
        interleaved = [parts[k][j] for j in range(total // world) for k in range(world)]
        assert interleaved[:n] == full
        assert interleaved[n:] == full[: total - n]
        assert Counter(interleaved) - Counter(full) == Counter(full[: total - n])


def test_len_before_iter_matches_iteration_and_dataloader():
    s = RepeatFactorSampler(FACTORS * 3, num_replicas=2, rank=1, seed=0)
    lengths = set()
    for e in range(8):
        s.set_epoch(e)
        n = len(s)  # asked first, as DataLoader does
        assert n == len(list(s))
        lengths.add(n)
        loader = torch.utils.data.DataLoader(list(range(FACTORS.size)), batch_size=3, sampler=s)
        assert len(loader) == -(-n // 3) == len(list(loader))
    assert len(lengths) > 1  # stochastic rounding changes the length between epochs
    assert abs(np.mean(sorted(lengths)) - s.expected_len) < 2


def test_defaults_come_from_torch_distributed(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    monkeypatch.setattr(dist, "get_rank", lambda: 3)
    s = RepeatFactorSampler(FACTORS)
    assert (s.num_replicas, s.rank) == (4, 3)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    s = RepeatFactorSampler(FACTORS)
    assert (s.num_replicas, s.rank) == (1, 0)


@pytest.mark.parametrize("kwargs, match", [
    ({"factors": [1.0, -0.5]}, "index 1"),
    ({"factors": [1.0, float("nan")]}, "finite"),
    ({"factors": []}, "non-empty"),
    ({"factors": [[1.0]]}, "1-D"),
    ({"factors": [1.0], "num_replicas": 2, "rank": 2}, "rank"),
    ({"factors": [1.0], "num_replicas": 0, "rank": 0}, "num_replicas"),
    ({"factors": [1.0], "seed": -1}, "seed"),
])
def test_sampler_bad_input(kwargs, match):
    factors = kwargs.pop("factors")
    with pytest.raises(IIFError, match=match):
        RepeatFactorSampler(factors, **{"num_replicas": 1, "rank": 0, **kwargs})


def test_set_epoch_rejects_negative():
    with pytest.raises(IIFError, match="epoch"):
        RepeatFactorSampler([1.0], num_replicas=1, rank=0).set_epoch(-1)
