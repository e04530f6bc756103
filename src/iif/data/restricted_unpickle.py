"""Read dataset pickles (CIFAR's ``data_batch_*``, the MNIST ``mnist.pkl.gz``) without running their code.

These formats are pickles written by their publishers, and we read them from a folder the user points at:
a crafted file there must not run code. :func:`load_data_pickle` allows only what those files contain
(numpy arrays, dtypes and scalars inside plain dicts, lists and tuples) and refuses any other global,
naming it, before it is called.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

from ..errors import IIFError

__all__ = ["load_data_pickle", "ALLOWED_GLOBALS"]

# What numpy arrays pickle to, under numpy 1 (numpy.core) and numpy 2 (numpy._core) module names.
ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    # Python 3 pickles bytes at protocols < 3 as _codecs.encode(str, "latin1"): a pure conversion.
    ("_codecs", "encode"),
})


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise IIFError(f"{self.source} asks to load {module}.{name} while unpickling; dataset files hold only numpy "
                       "arrays, so it was refused (nothing in it ran). Re-download the dataset from its publisher.")


def load_data_pickle(file: IO[bytes], source: str = "dataset file") -> Any:
    """Unpickle ``file`` (latin1 strings, as Python 2 pickles need) allowing only numpy array globals."""
    try:
        return _DataUnpickler(file, source).load()
    except IIFError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise IIFError(f"cannot read {source}: {exc}; the file is damaged or not a dataset pickle, re-download it.") from exc
