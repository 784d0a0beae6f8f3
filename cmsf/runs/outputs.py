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
import json
import os
import re
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor

from cmsf.io.files import (
    RUN_NAME,
    TEMP_SUFFIX,
    RunConflictError,
    atomic_write_json,
    claim_folder,
    deferred_interrupts,
    recorded_kind,
)
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


def existing_outputs(out_dir: Path) -> str:
    """What of an earlier output ``out_dir`` holds, in words (``"evidence.json, 5 masks, 5
    overlays"``), or ``""`` when it holds none of cmsf's files (or does not exist)."""
    if not out_dir.is_dir():
        return ""
    names = [path.name for path in out_dir.iterdir() if path.is_file() and is_output_name(path.name)]
    masks = sum(name.startswith("mask_") for name in names)
    overlays = sum(name.startswith("overlay_") for name in names)
    parts = [EVIDENCE_NAME] if EVIDENCE_NAME in names else []
    parts += [f"{count} {what}{'s' if count != 1 else ''}" for count, what in ((masks, "mask"), (overlays, "overlay")) if count]
    return ", ".join(parts)


def refuse_run_folder(out_dir: Path) -> None:
    """Refuse ``out_dir`` when it is the run folder of ``cmsf eval`` or ``cmsf segment-many`` (its
    ``run.json`` names such a run): one video's output would be mixed into theirs.

    Raises:
        RunConflictError: naming the folder and the kind of run it holds.
    """
    path = out_dir / RUN_NAME
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    kind = recorded_kind(record) if isinstance(record, dict) else None
    holds = f"a `cmsf {kind}` run" if kind else "another command's run"
    raise RunConflictError(f"{out_dir} holds {holds} ({path} says so), not the output of one video; use another --out")


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
            the run, recorded in the evidence (:func:`segmentation_evidence`).
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
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        for t in progress(range(clip.num_frames), "writing", "frame"):
            write_png_mask(staging / mask_name(t), masks[t])
            write_png_image(staging / overlay_name(t), overlay_mask(clip.frames[t], masks[t]))
        evidence = segmentation_evidence(clip, result, run, elapsed_s=time.perf_counter() - started)
        atomic_write_json(staging / EVIDENCE_NAME, evidence)
        with deferred_interrupts():
            _swap_in(staging, out_dir, clip.num_frames)
    finally:
        _remove_staging(staging)
    return evidence


def segmentation_evidence(clip: Clip, result: SegmentationResult, run: Mapping[str, Any], *, elapsed_s: float) -> dict[str, Any]:
    """The content of ``evidence.json``: the run (input, pipeline, preset, device, dtype, settings,
    models, seconds), the video (frame size, audio) and a list ``frames``, one entry per frame:
    its index, time in the video (seconds, None for image files), mask and overlay file names,
    coverage (fraction of pixels in the mask), and what :meth:`SegmentationResult.to_json` says
    of the frame (``mask_pixels``, the proposals' boxes and scores, which were kept, …). Each
    fact is stated once. See README.md, "What cmsf segment writes", for an example.

    Args:
        clip: the video (a clip with no audio samples records ``sample_rate`` and
            ``audio_seconds`` as None, and an empty ``source`` as None).
        run: ``input``, ``pipeline``, ``preset``, ``device``, ``dtype`` and ``settings`` (each
            None when unknown; ``pipeline`` defaults to the result's; the result's own
            ``settings``, those it ran with, bind mode resolved, come before the run's).
        elapsed_s: seconds from the start of the run to its evidence.
    """
    described = result.to_json()
    masks = result.masks.detach().cpu().bool()
    height, width = clip.frames.shape[-2:]
    times = clip.frame_times
    has_audio = clip.waveform.numel() > 0  # a Clip of frames alone (save_segmentation) has none
    frames = []
    for t, frame in enumerate(described.get("frames", [{"index": t} for t in range(clip.num_frames)])):
        place = {"time_s": times[t] if times is not None else None, "mask": mask_name(t), "overlay": overlay_name(t)}
        frames.append({"index": t, **place, "coverage": float(masks[t].float().mean()), **frame})
    return {
        "input": run.get("input"),
        "source": clip.source or None,
        "pipeline": run.get("pipeline", described.get("pipeline")),
        "preset": run.get("preset"),
        "device": run.get("device"),
        "dtype": run.get("dtype"),
        "settings": dict(described.get("settings", run.get("settings", {}))),
        "models": dict(described.get("models", {})),
        "elapsed_s": round(elapsed_s, 3),
        "frame_size": [int(height), int(width)],
        "sample_rate": clip.sample_rate if has_audio else None,
        "audio_seconds": clip.duration if has_audio else None,
        "frames": frames,
    }


class SegmentOutput:
    """An output folder of ``cmsf segment``, owned for one run.

    Usage::

        with SegmentOutput(out_dir) as output:     # created, checked for writing, locked
            ...                                    # read the clip, run the pipeline
            evidence = output.write(clip, result, run, started=started)

    Entering claims the folder (:func:`cmsf.io.files.claim_folder`: raises
    ``UnwritableFolderError`` / ``FolderInUseError`` before anything runs) and refuses the run
    folder of another command (:func:`refuse_run_folder`: ``RunConflictError``); leaving releases it.
    :meth:`write` replaces the folder's set as one (:func:`replace_segmentation`, which see).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self._stack: Optional[contextlib.ExitStack] = None

    def __enter__(self) -> "SegmentOutput":
        with contextlib.ExitStack() as stack:
            stack.enter_context(claim_folder(self.out_dir))
            refuse_run_folder(self.out_dir)
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


def save_segmentation(
    result: SegmentationResult,
    frames: Union[Clip, Tensor],
    out: Union[str, Path],
    *,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Save a pipeline's result as ``cmsf segment`` does: ``mask_0000.png …`` (0/255, frame
    size), ``overlay_0000.png …`` (the mask in red over the frame) and ``evidence.json``
    (:func:`segmentation_evidence`) into the folder ``out``, created if needed, replacing an
    earlier output there as one set (:func:`write_segmentation`; the folder is locked meanwhile).

    Args:
        result: what a pipeline returned for the video (``result.masks``: ``Tensor[T, H, W]`` bool).
        frames: the video it ran on: the :class:`~cmsf.io.media.Clip` of
            :func:`~cmsf.io.media.load_clip` (its source, frame times and audio are recorded), or
            its frames alone, ``Tensor[T, 3, H, W]`` uint8 (the audio fields are then None).
        out: the output folder.
        progress: reports the writing of the frames.

    Returns:
        the evidence, as written (``evidence["frames"][t]["coverage"]``: frame t's fraction of
        pixels in the mask).

    Raises:
        ValueError: ``frames`` that are not T uint8 frames of the masks' size.
        UnwritableFolderError, FolderInUseError: ``out`` cannot be written, or another run holds it.
    """
    started = time.perf_counter()
    clip = frames if isinstance(frames, Clip) else _frames_only(frames)
    masks = result.masks
    if clip.frames.ndim != 4 or clip.frames.dtype != torch.uint8 or clip.frames.shape[1] != 3:
        raise ValueError(f"frames: expected a Clip or Tensor[T, 3, H, W] uint8, got {_describe(clip.frames)}")
    if clip.frames.shape[0] != masks.shape[0] or clip.frames.shape[-2:] != masks.shape[-2:]:
        expected = f"Tensor[{masks.shape[0]}, 3, {masks.shape[-2]}, {masks.shape[-1]}] (the result's masks)"
        raise ValueError(f"frames: expected {expected}, got {_describe(clip.frames)}")
    run = {"input": str(clip.source) if isinstance(frames, Clip) else None, "pipeline": result.pipeline}
    return write_segmentation(Path(out), clip, result, run, started=started, progress=progress)


def _frames_only(frames: Any) -> Clip:
    """A :class:`Clip` of ``frames`` alone (no audio), for :func:`save_segmentation`."""
    if not isinstance(frames, Tensor):
        raise ValueError(f"frames: expected a Clip or Tensor[T, 3, H, W] uint8, got {type(frames).__name__}")
    return Clip(frames=frames, waveform=torch.zeros(1, 0), sample_rate=1, source="")  # no audio: see segmentation_evidence


def _describe(tensor: Tensor) -> str:
    return f"Tensor{list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
