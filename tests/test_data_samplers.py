"""Epoch-seeded, rank-sharded samplers: coverage, disjointness and class distributions."""

import numpy as np
import pytest

from iif.data import build_sampler
from iif.errors import IIFError

# 3 classes with 70 / 25 / 6 images (N = 101, odd so 2 ranks need one padding index).
TARGETS = np.repeat([0, 1, 2], [70, 25, 6])


def _ranks(name, epoch=0, replicas=2, seed=0, **kw):
    out = []
    for r in range(replicas):
        s = build_sampler(name, TARGETS, num_replicas=replicas, rank=r, seed=seed, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def test_random_covers_every_index_once_across_ranks():
    a, b = _ranks("random")
    assert len(a) == len(b) == 51  # ceil(101 / 2)
    both = a + b
    assert sorted(set(both)) == list(range(101))
    assert len(both) == 102 and len(set(a) & set(b)) <= 1  # one wrapped padding index may repeat
    one = _ranks("random", replicas=1)[0]
    assert sorted(one) == list(range(101))


def test_epochs_differ_and_seed_reproduces():
    for name in ("random", "class_balanced", "sqrt", "progressive"):
        e0, e1 = _ranks(name, 0, total_epochs=10), _ranks(name, 1, total_epochs=10)
        assert e0 != e1
        assert _ranks(name, 1, total_epochs=10) == e1
        assert _ranks(name, 1, seed=5, total_epochs=10) != e1


def _class_freq(name, epochs=40, **kw):
    idx = [i for e in range(epochs) for shard in _ranks(name, e, **kw) for i in shard]
    return np.bincount(TARGETS[idx], minlength=3) / len(idx), len(idx)


def test_class_balanced_and_sqrt_distributions():
    n = np.array([70, 25, 6], dtype=float)
    for name, target in (("class_balanced", np.ones(3) / 3), ("sqrt", np.sqrt(n) / np.sqrt(n).sum())):
        freq, total = _class_freq(name)
        # Multinomial standard error sqrt(p(1-p)/total) is ~0.011 at total = 4080; allow 4 sigma.
        tol = 4 * np.sqrt(target * (1 - target) / total)
        assert np.all(np.abs(freq - target) < tol), (name, freq, target)


def test_progressive_interpolates():
    s = build_sampler("progressive", TARGETS, total_epochs=10)
    n = np.array([70, 25, 6]) / 101
    assert np.allclose(s.class_probs(0), n)
    assert np.allclose(s.class_probs(10), np.ones(3) / 3)
    assert np.allclose(s.class_probs(4), 0.6 * n + 0.4 / 3)
    freq, total = _class_freq("progressive", epochs=1, total_epochs=1)  # epoch 0 = instance-balanced
    assert np.all(np.abs(freq - n) < 4 * np.sqrt(n * (1 - n) / total) + 1e-9)


def test_bad_sampler_input():
    with pytest.raises(IIFError, match="unknown sampler"):
        build_sampler("balanced", TARGETS)
    with pytest.raises(IIFError, match="total_epochs"):
        build_sampler("progressive", TARGETS)
    with pytest.raises(IIFError, match="rank"):
        build_sampler("random", TARGETS, num_replicas=2, rank=2)
    with pytest.raises(IIFError, match="non-empty"):
        build_sampler("random", [])
