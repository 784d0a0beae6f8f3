"""Argument checks shared by cmsf's public functions: numbers in a range, positive integers,
devices and dtypes. Each raises a ``ValueError`` that names the argument and says what was
expected; each returns the value in its canonical type."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Union

import torch

from cmsf.names import DTYPE_NAMES

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}
"""The model precisions cmsf runs in, by name (``"fp32"`` / ``"bf16"`` are accepted aliases)."""

_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16"}


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_range(value: Any, name: str, low: float = 0.0, high: float = 1.0) -> float:
    """``value`` as a float after checking it is a number in ``[low, high]`` (NaN is not)."""
    if not _is_real(value) or not (low <= float(value) <= high):
        raise ValueError(f"{name}: expected a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def check_unit(value: Any, name: str) -> float:
    """``value`` as a float after checking it is a number in [0, 1] (a probability, a threshold)."""
    return check_range(value, name, 0.0, 1.0)


def check_finite(value: Any, name: str, minimum: Optional[float] = None) -> float:
    """``value`` as a float after checking it is finite (and ≥ ``minimum`` when given)."""
    if not _is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected a number ≥ {minimum:g}, got {value!r}")
    return float(value)


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int after checking it is a whole number > 0 (numpy integers included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``device`` as a ``torch.device``: CUDA when available if ``None``. A CUDA device that this
    machine does not have is a ``ValueError`` now, not a driver error at the first model."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda:0', got {device!r}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but CUDA is not available on this machine (use 'cpu')")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: {device!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return resolved


def dtype_name(dtype: torch.dtype) -> str:
    """The name of a model precision of :data:`DTYPES`: ``torch.bfloat16`` → ``"bfloat16"``."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")


def resolve_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    """``dtype`` as ``torch.float32`` (the default, for ``None``) or ``torch.bfloat16``; the
    names of :data:`DTYPES` are accepted; anything else is a ``ValueError``."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str):
        name = dtype.lower().removeprefix("torch.")
        name = _DTYPE_ALIASES.get(name, name)
        if name in DTYPES:
            return DTYPES[name]
    raise ValueError(f"dtype: expected torch.float32 or torch.bfloat16 (or 'float32' / 'bfloat16'), got {dtype!r}")
