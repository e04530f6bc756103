"""Dataset pickles are read without running code (iif.data.restricted_unpickle)."""

import io
import pickle

import numpy as np
import pytest

from iif.data.restricted_unpickle import load_data_pickle
from iif.errors import IIFError


class _Exploit:
    """Unpickling this calls open(path, "w"): a file appearing would prove code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_numpy_arrays_in_plain_containers_round_trip():
    obj = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "x": (np.float32(1.5),)}
    for protocol in (2, 4):
        got = load_data_pickle(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
        np.testing.assert_array_equal(got["data"], obj["data"])
        assert got["labels"] == [1, 2, 3] and got["x"][0] == np.float32(1.5)


def test_a_crafted_pickle_is_refused_before_it_runs(tmp_path):
    victim = tmp_path / "pwned"
    blob = pickle.dumps({"data": _Exploit(str(victim))}, protocol=2)
    with pytest.raises(IIFError, match=r"open while unpickling.*refused"):
        load_data_pickle(io.BytesIO(blob), "data_batch_1")
    assert not victim.exists()


def test_a_damaged_pickle_is_one_clear_error():
    with pytest.raises(IIFError, match="damaged"):
        load_data_pickle(io.BytesIO(b"\x80\x02}q\x00(X"), "test_batch")


def test_cifar_loader_refuses_a_crafted_batch(tmp_path):
    from iif.data.cifar import _unpickle

    victim = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _Exploit(str(victim)), "labels": [0]}, protocol=2))
    with pytest.raises(IIFError, match="refused"):
        _unpickle(str(path))
    assert not victim.exists()
