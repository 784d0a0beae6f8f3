"""What ``cmsf segment`` writes for one video: ``mask_0000.png …`` (0/255, frame size),
``overlay_0000.png …`` (the mask in red over the frame) and ``evidence.json`` (the settings and
the pipeline's proposals, scores and kept indices behind every mask).

A run owns its folder while it lasts (:func:`cmsf.io.files.claim_folder`: created, checked for
writing, locked) and replaces the previous output as one set (:func:`replace_segmentation`): a
reader finds the old set or the new one, never a mix, and an interrupted run leaves the old set
as it was. ``cmsf segment`` claims its ``--out`` (:class:`SegmentOutput`); ``cmsf segment-many``
claims the folder above its videos' folders once and writes each video's folder with
:func:`replace_segmentation` alone (no lock, probe or fsync of a lock per video). cmsf's own
files are exactly the names above (``evidence.json``, and ``mask_`` / ``overlay_`` + the frame
index in at least 4 digits + ``.png``); nothing else in the folder is touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Optional

from cmsf.io.files import TEMP_SUFFIX, atomic_write_json, claim_folder, deferred_interrupts
from cmsf.io.media import Clip, overlay_mask, write_png_image, write_png_mask
from cmsf.pipelines.results import SegmentationResult
from cmsf.runs.progress import Progress, no_progress

EVIDENCE_NAME = "evidence.json"

STAGING_PREFIX = ".cmsf-new-"
"""A run writes its files into ``OUT/.cmsf-new-XXXXXXXX/`` before they replace the old ones."""

_OUTPUT_NAME = re.compile(r"(mask|overlay)_(\d{4,})\.png")


def mask_name(t: int) -> str:
    """The file name of frame ``t``'s mask: ``mask_0000.png``."""
    return f"mask_{t:04d}.png"


def overlay_name(t: int) -> str:
    """The file name of frame ``t``'s overlay: ``overlay_0000.png``."""
    return f"overlay_{t:04d}.png"


def is_output_name(name: str) -> bool:
    """Whether a file named ``name`` is one ``cmsf segment`` writes: ``evidence.json``,
    ``mask_{t:04d}.png`` or ``overlay_{t:04d}.png`` (``mask_5.png`` or ``mask_00004.png`` are not)."""
    if name == EVIDENCE_NAME:
        return True
    match = _OUTPUT_NAME.fullmatch(name)
    return match is not None and name == f"{match.group(1)}_{int(match.group(2)):04d}.png"


def remove_stale_outputs(out_dir: Path, num_frames: int) -> list[Path]:
    """Delete the ``mask_{t:04d}.png`` / ``overlay_{t:04d}.png`` of an earlier, longer run (t ≥
    ``num_frames``) from ``out_dir``; only files named exactly as cmsf names them are touched."""
    removed = []
    for path in sorted(out_dir.iterdir()):
        match = _OUTPUT_NAME.fullmatch(path.name)
        if match is None or not path.is_file() or not is_output_name(path.name):
            continue
        if int(match.group(2)) >= num_frames:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _remove_staging(folder: Path) -> None:
    """Delete a staging folder's own files (cmsf's outputs and temporaries) and the folder, unless
    something else is in it."""
    with contextlib.suppress(FileNotFoundError):
        for path in folder.iterdir():
            if path.is_file() and (is_output_name(path.name) or path.name.endswith(TEMP_SUFFIX)):
                path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def remove_leftovers(out_dir: Path) -> None:
    """Remove what a killed run left in ``out_dir``: its staging folders (``.cmsf-new-*``, only
    cmsf's files in them) and the ``.*.cmsf-tmp`` temporaries of interrupted atomic writes."""
    for path in out_dir.iterdir():
        if path.name.startswith(STAGING_PREFIX) and path.is_dir() and not path.is_symlink():
            _remove_staging(path)
        elif path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX) and path.is_file():
            path.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _swap_in(staging: Path, out_dir: Path, num_frames: int) -> None:
    """Replace the output set in ``out_dir`` with the one in ``staging``.

    ``evidence.json`` goes first and comes back last: while the files move (a few renames, with
    Ctrl-C held back) a reader finds no evidence, i.e. no complete set, never an old evidence
    beside new masks.
    """
    names = [name for t in range(num_frames) for name in (mask_name(t), overlay_name(t))]
    for name in (*names, EVIDENCE_NAME):
        target = out_dir / name
        if target.exists() and not target.is_file():
            raise ValueError(f"{target}: in the way of cmsf's output (expected a file or nothing there)")
    (out_dir / EVIDENCE_NAME).unlink(missing_ok=True)
    for name in names:
        os.replace(staging / name, out_dir / name)
    remove_stale_outputs(out_dir, num_frames)
    os.replace(staging / EVIDENCE_NAME, out_dir / EVIDENCE_NAME)
    _fsync_folder(out_dir)


def replace_segmentation(
    out_dir: Path,
    clip: Clip,
    result: SegmentationResult,
    run: Mapping[str, Any],
    *,
    started: float,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Write one video's masks, overlays and ``evidence.json`` into ``out_dir`` (created if
    needed) as the folder's new set, without claiming the folder: the caller must be its only
    writer (:class:`SegmentOutput` holds its lock; ``cmsf segment-many`` holds the lock of the
    folder above and writes each video's folder once).

    First removes what a killed writer left there (:func:`remove_leftovers`). Then puts the whole
    new set into a staging folder ``OUT/.cmsf-new-XXXXXXXX/`` and moves it in: ``evidence.json``
    of the old set is removed, the masks and overlays moved over the old ones, those of an
    earlier, longer run removed, the new ``evidence.json`` moved in last. Ctrl-C (SIGINT) and
    SIGTERM are held back during these moves. So an interrupted or failing write leaves the old
    set (and its evidence) untouched; only a kill that cannot be held back (SIGKILL, power loss)
    during the moves can leave a set without ``evidence.json``, which tells a reader that it is
    incomplete.

    Args:
        clip: the input the pipeline ran on; result: what it returned.
        run: ``input``, ``pipeline``, ``preset``, ``device``, ``dtype`` and ``settings`` of
            the run, recorded in the evidence.
        started: ``time.perf_counter()`` when the run began (the evidence records the
            elapsed time up to the evidence itself).
        progress: reports the writing of the frames.

    Returns:
        the evidence, as written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir)
    masks = result.masks.detach().cpu().bool()
    height, width = clip.frames.shape[-2:]
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        for t in progress(range(clip.num_frames), "writing", "frame"):
            write_png_mask(staging / mask_name(t), masks[t])
            write_png_image(staging / overlay_name(t), overlay_mask(clip.frames[t], masks[t]))
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
        atomic_write_json(staging / EVIDENCE_NAME, evidence)
        with deferred_interrupts():
            _swap_in(staging, out_dir, clip.num_frames)
    finally:
        _remove_staging(staging)
    return evidence


class SegmentOutput:
    """An output folder of ``cmsf segment``, owned for one run.

    Usage::

        with SegmentOutput(out_dir) as output:     # created, checked for writing, locked
            ...                                    # read the clip, run the pipeline
            evidence = output.write(clip, result, run, started=started)

    Entering claims the folder (:func:`cmsf.io.files.claim_folder`: raises
    ``UnwritableFolderError`` / ``FolderInUseError`` before anything runs); leaving releases it.
    :meth:`write` replaces the folder's set as one (:func:`replace_segmentation`, which see).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self._stack: Optional[contextlib.ExitStack] = None

    def __enter__(self) -> "SegmentOutput":
        with contextlib.ExitStack() as stack:
            stack.enter_context(claim_folder(self.out_dir))
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(kind, error, traceback)

    def write(
        self,
        clip: Clip,
        result: SegmentationResult,
        run: Mapping[str, Any],
        *,
        started: float,
        progress: Progress = no_progress,
    ) -> dict[str, Any]:
        """Write one video's masks, overlays and ``evidence.json`` as the folder's new set
        (:func:`replace_segmentation`, which see for the arguments). Returns the evidence."""
        if self._stack is None:
            raise RuntimeError("SegmentOutput.write: use it inside its with block")
        return replace_segmentation(self.out_dir, clip, result, run, started=started, progress=progress)


def write_segmentation(
    out_dir: Path,
    clip: Clip,
    result: SegmentationResult,
    run: Mapping[str, Any],
    *,
    started: float,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Write one video's masks, overlays and ``evidence.json`` into ``out_dir`` (created if
    needed), replacing an earlier output there as one set: :meth:`SegmentOutput.write` inside
    ``with SegmentOutput(out_dir)``, which see. Returns the evidence, as written."""
    with SegmentOutput(out_dir) as output:
        return output.write(clip, result, run, started=started, progress=progress)
