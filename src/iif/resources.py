"""Machine resources every command shares: one rule for CPU threads, one memory estimate before big allocations.

Threads (``--threads``, ``runtime.threads``):

* A requested count must be a whole number >= 1; 0, negatives and non-integers are refused
  (:class:`~iif.errors.IIFError`, one line naming the fix).
* A count above the CPUs this process may use (:func:`usable_cpus`: ``len(os.sched_getaffinity(0))`` where the
  platform has it, else ``os.cpu_count()``) is clamped to that number with one ``iif: warning:`` line on
  stderr: more threads than CPUs only wait for each other, and a config written on a big machine should still
  run on a laptop. (``--threads 100000`` once crashed torch's thread pool.)
* Unrequested (``None``), training on the CPU picks one thread for training sets under
  :data:`SMALL_TRAIN_SET` images (:func:`default_threads`), unless ``OMP_NUM_THREADS`` is set, which torch
  already follows. Measured on the project's 2-core machine shared with other jobs (docs/training.md, "Your
  own images"): two threads fighting other processes for two cores made ``iif train folder`` 6x slower.
  Elsewhere (GPU, large sets, prediction) ``None`` keeps torch's own default.

Memory: :func:`check_image_memory` refuses, before training allocates anything big, an image size and batch
size whose input tensors alone cannot fit in this machine's memory (:func:`memory_limit`: physical RAM, or a
lower cgroup limit), with one line giving the estimate and the fix (``data.options.image_size=100000`` would
otherwise try to allocate terabytes per batch and die mid-run, or take the machine down with it).

This module imports nothing heavy at import time (torch only inside :func:`set_threads`), so the CLI can check
a flag before loading torch.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sys
from typing import Iterator

from .errors import IIFError

__all__ = ["SMALL_TRAIN_SET", "usable_cpus", "check_threads", "default_threads", "training_threads",
           "set_threads", "thread_limit", "memory_limit", "image_batch_bytes", "check_image_memory", "format_bytes",
           "peak_rss_mb"]

#: Training sets (images) below this size train with one CPU thread unless told otherwise.
SMALL_TRAIN_SET = 10_000

_said: set[str] = set()


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one (Linux; also what a container's
    cpuset allows), else ``os.cpu_count()``; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, int(n))


def _warn(message: str) -> None:
    # once per process, and under torchrun only on rank 0 (every rank computes the same value)
    if message not in _said:
        _said.add(message)
        if os.environ.get("RANK", "0") in ("", "0"):
            print(f"iif: warning: {message}", file=sys.stderr, flush=True)


def check_threads(requested, what: str = "--threads", cpus: int | None = None) -> int | None:
    """``requested`` checked by the rule: None stays None; a whole number >= 1 is returned, clamped to
    ``cpus`` (default :func:`usable_cpus`) with one warning; anything else raises IIFError."""
    if requested is None:
        return None
    try:  # ints and numpy integers; not bools, floats or strings
        if isinstance(requested, bool):
            raise TypeError
        requested = operator.index(requested)
    except TypeError:
        raise IIFError(f"{what} must be a whole number of CPU threads >= 1; got {requested!r}.") from None
    if requested < 1:
        raise IIFError(f"{what} must be >= 1 (CPU threads); got {requested}. Leave it out for the default.")
    cap = usable_cpus() if cpus is None else max(1, int(cpus))
    if requested > cap:
        _warn(f"{what} {requested} is more than the {cap} CPU(s) this process may use; using {cap}")
        return cap
    return requested


def default_threads(num_train_images: int, device_type: str = "cpu") -> int | None:
    """Threads to train with when none were requested: 1 on the CPU for fewer than :data:`SMALL_TRAIN_SET`
    training images (unless ``OMP_NUM_THREADS`` is set), else None (torch's default)."""
    if device_type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    return 1 if int(num_train_images) < SMALL_TRAIN_SET else None


def training_threads(requested, num_train_images: int, device_type: str = "cpu",
                     what: str = "--threads") -> int | None:
    """The rule for a training command: :func:`check_threads` of ``requested``, else :func:`default_threads`."""
    n = check_threads(requested, what)
    return n if n is not None else default_threads(num_train_images, device_type)


def set_threads(n: int | None) -> int:
    """Set torch's intra-op threads to ``n`` (None: leave them); return the count in force before."""
    import torch

    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    return old


@contextlib.contextmanager
def thread_limit(n: int | None) -> Iterator[None]:
    """Run the block with torch's intra-op threads set to ``n`` (None: unchanged), restored afterwards, so a
    library call does not change the caller's setting."""
    old = set_threads(n)
    try:
        yield
    finally:
        if n is not None:
            import torch

            torch.set_num_threads(old)


# ----------------------------------------------------------------------------------------------- memory


def memory_limit() -> int | None:
    """Bytes of memory this process can have at most: physical RAM (``sysconf``), or the cgroup v2/v1 limit
    when that is lower (a container); None where neither can be read."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 2**60:  # "max" or a huge number: no limit
            limits.append(int(text))
    limits = [int(v) for v in limits if v and v > 0]
    return min(limits) if limits else None


def format_bytes(n: float) -> str:
    """``n`` bytes as a short text in binary units, e.g. ``"7.3 GiB"``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - the loop always returns


def image_batch_bytes(batch_size: int, image_size: int, channels: int = 3) -> int:
    """A lower bound on the memory one batch of ``batch_size`` square images of side ``image_size`` takes: the
    float32 input tensor plus one decoded uint8 image (the model's activations come on top, several times
    more), so a size refused on this estimate can never fit."""
    pixels = int(image_size) ** 2 * int(channels)
    return int(batch_size) * pixels * 4 + pixels


def check_image_memory(batch_size: int, image_size: int, channels: int = 3, *, what: str = "a training batch",
                       size_key: str = "data.options.image_size", batch_key: str = "optim.batch_size",
                       limit: int | None = None) -> int:
    """Raise one-line IIFError when :func:`image_batch_bytes` exceeds ``limit`` (default :func:`memory_limit`);
    return the estimate. The message names the estimate, the memory there is and the keys to lower."""
    need = image_batch_bytes(batch_size, image_size, channels)
    have = memory_limit() if limit is None else int(limit)
    if have is not None and need > have:
        raise IIFError(f"{what} of {int(batch_size)} images at {int(image_size)}x{int(image_size)} px needs at least "
                       f"{format_bytes(need)} ({need} bytes, the input tensors alone) but this machine has "
                       f"{format_bytes(have)} of memory; lower {size_key} (e.g. 224) or {batch_key}.")
    return need


def peak_rss_mb() -> float:
    """This process's peak resident set size so far in MiB (``ru_maxrss``, what ``/usr/bin/time -v`` reports;
    bytes on macOS, KiB elsewhere); nan where the platform has no ``resource`` module. The one reading that
    ``iif bench``, ``iif det-bench`` and ``train_detector`` record."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20
    except Exception:  # pragma: no cover - platform without resource
        return float("nan")
