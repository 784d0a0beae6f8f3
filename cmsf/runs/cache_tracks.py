"""A tracked pipeline's model pass in a sweep's cache file (:mod:`cmsf.runs.cache`): one video's
tracks (:class:`~cmsf.pipelines.tracked.VideoTracks`) before the sounding threshold, all that
:func:`~cmsf.pipelines.tracked.select_tracks` reads, so that every ``temporal_window`` and
``track_threshold`` is selected again without a model.

A track part ``i`` of K tracks over T frames of H×W pixels holds the members::

    p{i}_masks    uint8 [K·T, ⌈H·W/8⌉]  each track's mask at each frame (track after track),
                                          flattened row-major, np.packbits (8 pixels a byte)
    p{i}_scores   float32 [K·T]          the tracker's object scores, in the same order
    p{i}_visual   float32 [K·T, D]       the binder's embedding of each track's crop at each
                                          frame (zeros where its mask is empty)
    p{i}_audio    float32 [T, D]         the binder's embedding of each audio segment

and, in the header's entry of the part (next to ``compute`` and ``scoring``), ``"tracks": K``,
``"seeds"`` ([frame, candidate] of each track), ``"seed_scores"`` (null for NaN) and ``"merged"``.
The per-frame pipeline's evidence of the seeding frames (``VideoTracks.frames``) is not kept: no
selection reads it. Everything is stored exactly (bool, float32 as computed). Before compression
a part takes about ``K·T·(⌈H·W/8⌉ + 4·D + 4) + T·4·D`` bytes; tracks are far fewer than the
per-frame candidates a per-frame pipeline caches, and deflate shrinks their masks many times over.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from cmsf.pipelines.tracked import VideoTracks
from cmsf.stages.binding import BindScoring

__all__ = ["check_track_part", "decode_tracks", "is_track_part", "track_arrays", "track_meta"]


def is_track_part(meta: dict[str, Any]) -> bool:
    """Whether a part's header entry is a tracked pipeline's (has ``"tracks"``)."""
    return "tracks" in meta


def track_meta(tracks: VideoTracks) -> dict[str, Any]:
    """The header entry of a track part, less ``compute`` and ``scoring`` (JSON-safe: NaN as null)."""
    return {
        "tracks": int(tracks.masks.shape[0]),
        "seeds": [[int(t), int(i)] for t, i in tracks.seeds],
        "seed_scores": [None if math.isnan(score) else float(score) for score in tracks.seed_scores],
        "merged": [[[int(t), int(i)] for t, i in group] for group in tracks.merged],
    }


def track_arrays(index: int, tracks: VideoTracks, frame_size: tuple[int, int], frames: int) -> dict[str, np.ndarray]:
    """The members of track part ``index`` (see the module docstring).

    Raises:
        ValueError: tracks of another frame count or size than the cache's ``frames`` and ``frame_size``."""
    count, num_frames = tracks.masks.shape[:2]
    if num_frames != frames or tuple(tracks.masks.shape[2:]) != tuple(frame_size):
        raise ValueError(
            f"cache part {index}: expected tracks over {frames} frames of {frame_size}, got {tuple(tracks.masks.shape[1:])}"
        )
    pixels = frame_size[0] * frame_size[1]
    masks = tracks.masks.reshape(count * num_frames, pixels).numpy().astype(bool)
    return {
        f"p{index}_masks": np.packbits(masks, axis=1),
        f"p{index}_scores": tracks.object_scores.reshape(-1).to(torch.float32).numpy(),
        f"p{index}_visual": tracks.visual.reshape(count * num_frames, tracks.visual.shape[2]).to(torch.float32).numpy(),
        f"p{index}_audio": tracks.audio.to(torch.float32).numpy(),
    }


def check_track_part(
    index: int, meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], cache: tuple[int, int, int]
) -> None:
    """Track part ``index``'s header entry and member shapes agree with each other and with the
    file's ``(frames, height, width)``, before any of its arrays is read.

    Raises:
        ValueError: they do not."""
    frames, height, width = cache
    count = meta["tracks"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"part {index}: tracks {count!r:.80}")
    if not len(meta["seeds"]) == len(meta["seed_scores"]) == len(meta["merged"]) == count:
        raise ValueError(f"part {index}: seeds, seed scores and merged seeds for {count} tracks")
    rows = count * frames
    audio = shapes.get(f"p{index}_audio")
    if audio is None or len(audio) != 2 or audio[0] != frames:
        raise ValueError(f"part {index}: audio of shape {audio} for {frames} frames")
    expected = {"masks": (rows, -(-height * width // 8)), "scores": (rows,)}
    for name, shape in expected.items():
        if shapes.get(f"p{index}_{name}") != shape:
            raise ValueError(f"part {index}: {name} of shape {shapes.get(f'p{index}_{name}')}, expected {shape}")
    visual = shapes.get(f"p{index}_visual")  # width 0: no crop of the pass's batch was embedded
    if visual not in ((rows, audio[1]), (rows, 0)):
        raise ValueError(f"part {index}: visual of shape {visual} for {rows} track frames of width {audio[1]}")
    if f"p{index}_boxes" in shapes:
        raise ValueError(f"part {index}: a track part has no boxes")


def _seed(value: Any) -> tuple[int, int]:
    frame, candidate = value
    return int(frame), int(candidate)


def decode_tracks(
    index: int, meta: dict[str, Any], archive: Any, frame_size: tuple[int, int], scoring: Optional[BindScoring]
) -> VideoTracks:
    """Track part ``index`` read back (checked first with :func:`check_track_part`): the tracks
    as :func:`~cmsf.pipelines.tracked.tracked_candidates` gave them, less ``frames`` (empty)."""
    height, width = frame_size
    count = int(meta["tracks"])
    audio = torch.from_numpy(archive[f"p{index}_audio"])
    visual = torch.from_numpy(archive[f"p{index}_visual"])
    frames = audio.shape[0]
    bits = np.unpackbits(archive[f"p{index}_masks"], axis=1, count=height * width).astype(bool)
    return VideoTracks(
        frames=[],
        seeds=[_seed(seed) for seed in meta["seeds"]],
        seed_scores=[float("nan") if score is None else float(score) for score in meta["seed_scores"]],
        merged=[[_seed(seed) for seed in group] for group in meta["merged"]],
        masks=torch.from_numpy(bits).reshape(count, frames, height, width),
        object_scores=torch.from_numpy(archive[f"p{index}_scores"]).reshape(count, frames),
        visual=visual.reshape(count, frames, visual.shape[1]),
        audio=audio,
        scoring=scoring,
    )
