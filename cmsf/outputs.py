"""What ``cmsf segment`` writes for one video: ``mask_0000.png …`` (0/255, frame size),
``overlay_0000.png …`` (the mask in red over the frame) and ``evidence.json`` (the settings and
the pipeline's proposals, scores and kept indices behind every mask). Each file is written
atomically (:mod:`cmsf.files`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from cmsf.files import atomic_write_json
from cmsf.media import Clip, overlay_mask, write_png_image, write_png_mask
from cmsf.pipelines import SegmentationResult

T = TypeVar("T")

_OUTPUT_NAME = re.compile(r"(mask|overlay)_(\d{4,})\.png")


def mask_name(t: int) -> str:
    """The file name of frame ``t``'s mask: ``mask_0000.png``."""
    return f"mask_{t:04d}.png"


def overlay_name(t: int) -> str:
    """The file name of frame ``t``'s overlay: ``overlay_0000.png``."""
    return f"overlay_{t:04d}.png"


def remove_stale_outputs(out_dir: Path, num_frames: int) -> list[Path]:
    """Delete the ``mask_{t:04d}.png`` / ``overlay_{t:04d}.png`` of an earlier, longer run (t ≥
    ``num_frames``) from ``out_dir``; only files named exactly as cmsf names them are touched."""
    removed = []
    for path in sorted(out_dir.iterdir()):
        match = _OUTPUT_NAME.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        index = int(match.group(2))
        if index >= num_frames and path.name == f"{match.group(1)}_{index:04d}.png":
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_segmentation(
    out_dir: Path,
    clip: Clip,
    result: SegmentationResult,
    run: Mapping[str, Any],
    *,
    started: float,
    progress: Callable[[Sequence[T], str, str], Iterable[T]] = lambda items, description, unit: iter(items),
) -> dict[str, Any]:
    """Write one video's masks, overlays and ``evidence.json`` into ``out_dir``.

    Args:
        out_dir: the output folder (created if needed); masks and overlays of an earlier, longer
            run there are removed.
        clip: the input the pipeline ran on; result: what it returned.
        run: ``input``, ``pipeline``, ``preset``, ``device``, ``dtype`` and ``settings`` of the
            run, recorded in the evidence.
        started: ``time.perf_counter()`` when the run began (the evidence records the elapsed
            time up to the evidence itself).

    Returns:
        the evidence, as written.
    """
    masks = result.masks.detach().cpu().bool()
    height, width = clip.frames.shape[-2:]
    out_dir.mkdir(parents=True, exist_ok=True)
    for t in progress(range(clip.num_frames), "writing", "frame"):
        write_png_mask(out_dir / mask_name(t), masks[t])
        write_png_image(out_dir / overlay_name(t), overlay_mask(clip.frames[t], masks[t]))
    remove_stale_outputs(out_dir, clip.num_frames)
    evidence = {
        "input": run["input"],
        "source": clip.source,
        "pipeline": run["pipeline"],
        "preset": run["preset"],
        "device": run["device"],
        "dtype": run["dtype"],
        "settings": dict(run["settings"]),
        "frames": clip.num_frames,
        "frame_size": [int(height), int(width)],
        "frame_times_s": list(clip.frame_times) if clip.frame_times is not None else None,
        "sample_rate": clip.sample_rate,
        "audio_seconds": clip.duration,
        "coverage": [float(m.float().mean()) for m in masks],
        "masks": [mask_name(t) for t in range(clip.num_frames)],
        "overlays": [overlay_name(t) for t in range(clip.num_frames)],
        "elapsed_s": round(time.perf_counter() - started, 3),
        "result": result.to_json(),
    }
    atomic_write_json(out_dir / "evidence.json", evidence)
    return evidence
