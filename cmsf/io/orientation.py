"""Frame orientation: a video frame's display matrix (a phone's rotation tag, mirroring) read
with PyAV and applied to the decoded picture, as players show it."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from torch import Tensor

__all__ = ["apply_orientation", "display_orientation"]


def display_orientation(frame: Any) -> Optional[tuple[int, int, int, int]]:
    """The frame's display matrix as the signs ``(a, b, c, d)`` of its 2×2 part, or None when it
    has none or it is the identity.

    A source pixel at column x, row y is shown at ``(a·x + c·y, b·x + d·y)`` (plus a shift);
    FFmpeg's convention (``libavutil/display.h``), with rows growing downwards. Raises
    ValueError for a matrix that is not a right-angle rotation with optional mirroring.
    """
    side_data = getattr(frame, "side_data", None)
    if side_data is None:
        return None
    try:
        entry = side_data.get("DISPLAYMATRIX")
    except (AttributeError, KeyError, ValueError, TypeError):  # a PyAV without this mapping
        return None
    if entry is None:
        return None
    raw = bytes(entry)
    if len(raw) < 36:
        return None
    matrix = np.frombuffer(raw[:36], dtype="<i4").astype(np.float64) / 65536.0  # 16.16 fixed point
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    signs = tuple(int(np.sign(v)) if abs(v) > 1e-3 else 0 for v in (a, b, c, d))
    diagonal = signs[1] == signs[2] == 0 and signs[0] != 0 and signs[3] != 0
    swapped = signs[0] == signs[3] == 0 and signs[1] != 0 and signs[2] != 0
    if not (diagonal or swapped):
        raise ValueError(
            f"a display matrix [[{a:.3f}, {b:.3f}], [{c:.3f}, {d:.3f}]] that is not a multiple of 90°"
        )
    if signs == (1, 0, 0, 1):
        return None
    return signs  # type: ignore[return-value]


def apply_orientation(image: Tensor, orientation: Optional[tuple[int, int, int, int]]) -> Tensor:
    """Turn ``image (Tensor[C, H, W])`` as a display matrix says it is to be shown.

    Args:
        orientation: the signs ``(a, b, c, d)`` of the matrix's 2×2 part: the source pixel at
            column x, row y goes to column ``a·x + c·y``, row ``b·x + d·y`` (then shifted into
            the picture). ``(0, -1, 1, 0)`` is a 90° counter-clockwise turn, what a phone
            held upright records (FFmpeg reads it as rotation 90; ``ffmpeg`` shows it turned
            with ``transpose=cclock``); ``(-1, 0, 0, 1)`` a horizontal mirror. None: unchanged.

    Returns:
        ``Tensor[C, H, W]``, or ``Tensor[C, W, H]`` for a quarter turn; a new tensor unless None.
    """
    if orientation is None:
        return image
    a, b, c, d = orientation
    if b == 0 and c == 0:  # rows stay rows: mirror columns when a < 0, rows when d < 0
        dims = [dim for dim, sign in ((2, a), (1, d)) if sign < 0]
        return image.flip(dims) if dims else image
    # a quarter turn: new row = b·x (a source column), new column = c·y (a source row)
    turned = image.transpose(1, 2)
    dims = [dim for dim, sign in ((1, b), (2, c)) if sign < 0]
    return (turned.flip(dims) if dims else turned).contiguous()
