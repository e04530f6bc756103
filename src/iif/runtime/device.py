"""The one device resolution of both tasks: a config's or a call's device name to a ``torch.device``."""

from __future__ import annotations

import torch

from ..errors import IIFError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto`` (or None) -> cuda when available, else cpu; ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``
    as given. A name torch does not know, or cuda without a CUDA device, is an IIFError naming the fix."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise IIFError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N (e.g. cuda:1).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise IIFError("runtime.device is cuda but no CUDA device is available; use --device cpu.")
    return dev
