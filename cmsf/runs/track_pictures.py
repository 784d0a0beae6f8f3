"""The tracks of a tracked pipeline's run (``owod-bind-tracked``, ``sam-bind-tracked``) drawn over
its frames, for the strips of ``cmsf report``: each track's mask box in its own colour, thick
where it sounds, thin where it is tracked but silent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["TRACK_COLORS", "draw_tracks", "read_tracks"]

TRACK_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (23, 190, 207))
"""The colour of track k is ``TRACK_COLORS[k % 6]``."""


def read_tracks(path: Path) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    """The ``tracks`` of an evidence file and its ``frame_size`` ``(H, W)``; no tracks when the
    file is missing, unreadable or has none (a per-frame pipeline's)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        tracks = list(document.get("tracks", []))
        height, width = (int(v) for v in document["frame_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return [], (0, 0)
    return tracks, (height, width)


def draw_tracks(frame: Tensor, tracks: Sequence[dict[str, Any]], t: int, frame_size: tuple[int, int]) -> Tensor:
    """``frame (Tensor[3, H, W]) uint8`` with each track's box at frame ``t`` (evidence pixels of
    ``frame_size``, scaled to the frame) drawn in its colour: 3 px wide where it sounds, 1 px where
    not; a track whose mask is empty at ``t`` is not drawn. Returns ``Tensor[3, H, W]`` uint8."""
    picture = Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy())
    draw = ImageDraw.Draw(picture)
    scale_y = frame.shape[1] / max(frame_size[0], 1)
    scale_x = frame.shape[2] / max(frame_size[1], 1)
    for k, track in enumerate(tracks):
        boxes, sounding = track.get("boxes", []), track.get("sounding", [])
        if t >= len(boxes):
            continue
        x1, y1, x2, y2 = boxes[t]
        if x2 <= x1 or y2 <= y1:
            continue
        width = 3 if t < len(sounding) and sounding[t] else 1
        box = (x1 * scale_x, y1 * scale_y, max(x1 * scale_x, x2 * scale_x - 1), max(y1 * scale_y, y2 * scale_y - 1))
        draw.rectangle(box, outline=TRACK_COLORS[k % len(TRACK_COLORS)], width=width)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).contiguous()
