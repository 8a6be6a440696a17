"""The one device resolver: 'auto' means CUDA when available, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else must be a valid torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda', ...") from e
    if dev.type not in ("cpu", "cuda", "mps"):  # meta, xla, ...: nothing to compute on here
        raise ValueError(
            f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} "
                         "CUDA device(s) exist")  # fmt: skip
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return dev
