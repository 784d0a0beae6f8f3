"""AVSBench (AVSBench-object v1, Zhou et al. 2022) on disk: the S4 and MS3 layouts of the
official release, as its reference code (``avs_scripts/avs_s4`` and ``avs_ms3``) reads them.

``root`` is the folder that holds ``Single-source/`` (S4) and ``Multi-sources/`` (MS3); the
subset's own folder (the one holding its csv) is accepted too::

    Single-source/s4_meta_data.csv          columns: name, start, category, split (the reader
                                            uses the split column by its header and the first
                                            and third columns by position, as AVSBench does)
    Single-source/s4_data/visual_frames/{split}/{category}/{video}/{video}_{1..5}.png
    Single-source/s4_data/audio_wav/{split}/{category}/{video}.wav
    Single-source/s4_data/gt_masks/{split}/{category}/{video}/{video}_{1..5}.png

    Multi-sources/ms3_meta_data.csv         first column the video name, a split column
    Multi-sources/ms3_data/visual_frames/{video}/{video}.mp4_{1..5}.png      (no split folder)
    Multi-sources/ms3_data/audio_wav/{split}/{video}.wav
    Multi-sources/ms3_data/gt_masks/{split}/{video}/{video}_{1..5}.png

Every video has 5 frames (one per second, 224×224 in the release) and 5 s of 16 kHz audio. Test
and val videos have 5 ground-truth masks; S4's train split has only the first (AVSBench's
``mask_num = 1``); :func:`load_gt_masks` reads whichever masks exist, numbered from 1.

Predicted masks are written the way AVSBench's ``test.py --save_pred_mask`` writes them
(``utils/utility.py: save_mask``), which numbers frames **from 0**::

    pred_masks/{category}/{video}/{video}_{k}.png    (S4)     k = 0 … 4
    pred_masks/{video}/{video}_{k}.png               (MS3)

so prediction k belongs with frame ``{video}_{k+1}.png`` and ground truth ``{video}_{k+1}.png``
(ground truth and frames are numbered from 1, predictions from 0, as in AVSBench). Masks are
single-channel 0/255 PNGs at frame size. When reading masks (ground truth or predictions), any
non-zero pixel is foreground (AVSBench's metrics take the ground truth as read, 0/255 PNGs).
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from cmsf.io.media import (  # audio_for_frame_folder: AVSBench's layout, re-exported here
    DEFAULT_SAMPLE_RATE,
    Clip,
    MediaWarning,
    audio_for_frame_folder,  # noqa: F401
    read_audio,
    read_frames,
    read_mask,
    write_png_mask,
)
from cmsf.io.paths import check_file
from cmsf.names import SUBSETS

PathLike = Union[str, Path]

NUM_FRAMES = 5
"""Frames (and seconds of audio, and at most ground-truth masks) per AVSBench video."""

_SUBSET_DIR = {"s4": "Single-source", "ms3": "Multi-sources"}
_DATA_DIR = {"s4": "s4_data", "ms3": "ms3_data"}
_CSV_NAME = {"s4": "s4_meta_data.csv", "ms3": "ms3_meta_data.csv"}


@dataclass(frozen=True)
class VideoEntry:
    """One row of the metadata csv.

    Attributes:
        name: the video's name (its YouTube id and start, e.g. ``-0Ib4Ge2yGk_30000_40000`` —
            whatever the csv's first column says).
        split: ``train``, ``val`` or ``test``.
        category: the S4 sounding-object category (third csv column), None for MS3.
    """

    name: str
    split: str
    category: Optional[str] = None

    @property
    def key(self) -> str:
        """``category/name`` (S4) or ``name`` (MS3): the video's path under ``pred_masks``."""
        return f"{self.category}/{self.name}" if self.category is not None else self.name


def check_subset(subset: str) -> str:
    """Return ``subset`` lower-cased after checking it is ``s4`` or ``ms3``."""
    if not isinstance(subset, str) or subset.lower() not in SUBSETS:
        raise ValueError(f"subset: expected one of {', '.join(SUBSETS)}, got {subset!r}")
    return subset.lower()


def subset_dir(root: PathLike, subset: str) -> Path:
    """The subset's folder (``root/Single-source`` or ``root/Multi-sources``, or ``root`` itself
    when it holds the subset's csv).

    Raises:
        FileNotFoundError: no such root, or the subset's csv is in neither place.
    """
    subset = check_subset(subset)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected the AVSBench root)")
    if (root / _CSV_NAME[subset]).is_file():
        return root
    candidate = root / _SUBSET_DIR[subset]
    if (candidate / _CSV_NAME[subset]).is_file():
        return candidate
    raise FileNotFoundError(
        f"{candidate / _CSV_NAME[subset]}: missing; expected AVSBench's {subset.upper()} metadata "
        f"there (root = the folder holding {_SUBSET_DIR[subset]}/)"
    )


def metadata_csv(root: PathLike, subset: str) -> Path:
    """The path of the subset's metadata csv (checked to exist)."""
    subset = check_subset(subset)
    return subset_dir(root, subset) / _CSV_NAME[subset]


def _data_dir(root: PathLike, subset: str) -> Path:
    return subset_dir(root, subset) / _DATA_DIR[subset]


def read_metadata(root: PathLike, subset: str) -> list[VideoEntry]:
    """All videos of the subset's csv, in its order.

    The ``split`` column is found by its header; the video name is the first column and (S4) the
    category the third, as AVSBench's dataloaders read them.

    Raises:
        ValueError: not a readable UTF-8 CSV, no ``split`` column, too few columns, or an empty
            name; names the csv (and the line).
    """
    subset = check_subset(subset)
    path = check_file(metadata_csv(root, subset), "metadata CSV")  # a FIFO would block the open
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (csv.Error, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable CSV ({error})") from None
    if not rows:
        raise ValueError(f"{path}: empty; expected a header with a 'split' column and one row per video")
    header = [h.strip() for h in rows[0]]
    if "split" not in header:
        raise ValueError(f"{path}: the header {header} has no 'split' column")
    split_col = header.index("split")
    need = max(split_col, 2 if subset == "s4" else 0) + 1
    entries: list[VideoEntry] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < need:
            raise ValueError(f"{path}: line {line} has {len(row)} columns, expected at least {need}")
        name = row[0].strip()
        if not name:
            raise ValueError(f"{path}: line {line} has an empty video name")
        category = row[2].strip() if subset == "s4" else None
        if subset == "s4" and not category:
            raise ValueError(f"{path}: line {line} has an empty category")
        entries.append(VideoEntry(name=name, split=row[split_col].strip(), category=category))
    return _unique(path, entries)


def _unique(path: Path, entries: list[VideoEntry]) -> list[VideoEntry]:
    """``entries`` with repeated rows (same name, split and category) kept once, at their first
    place, and a :class:`~cmsf.io.decoding.MediaWarning` naming the csv and the repeated videos: a
    video listed twice would otherwise be scored twice and weigh double in the means."""
    unique = list(dict.fromkeys(entries))
    if len(unique) < len(entries):
        repeated = sorted(entry.key for entry, count in Counter(entries).items() if count > 1)
        shown = ", ".join(repeated[:5]) + (f" and {len(repeated) - 5} more" if len(repeated) > 5 else "")
        message = f"{path}: {len(entries) - len(unique)} repeated row(s) ignored, each video scored once: {shown}"
        warnings.warn(MediaWarning(message), stacklevel=3)
    return unique


def list_videos(root: PathLike, subset: str, split: str = "test") -> list[VideoEntry]:
    """The videos of one split, in the csv's order.

    Raises:
        FileNotFoundError: the csv is missing (the message says where it was expected).
        ValueError: unknown subset, or a split the csv does not have (the message lists those
            it has).
    """
    entries = read_metadata(root, subset)
    chosen = [e for e in entries if e.split == split]
    if not chosen:
        splits = sorted({e.split for e in entries})
        raise ValueError(
            f"split: {split!r} has no videos in {metadata_csv(root, subset)}; it has {', '.join(splits) or 'none'}"
        )
    return chosen


def _check_entry(subset: str, entry: VideoEntry) -> None:
    if subset == "s4" and entry.category is None:
        raise ValueError(f"entry {entry.name!r}: an S4 video needs its category")
    if subset == "ms3" and entry.category is not None:
        raise ValueError(f"entry {entry.name!r}: an MS3 video has no category, got {entry.category!r}")


def frame_paths(root: PathLike, subset: str, entry: VideoEntry) -> list[Path]:
    """The paths of the video's 5 frames, ``…_1.png`` to ``…_5.png`` (not checked to exist)."""
    subset = check_subset(subset)
    _check_entry(subset, entry)
    base = _data_dir(root, subset) / "visual_frames"
    if subset == "s4":
        folder = base / entry.split / entry.category / entry.name  # type: ignore[operator]
        return [folder / f"{entry.name}_{k}.png" for k in range(1, NUM_FRAMES + 1)]
    folder = base / entry.name
    return [folder / f"{entry.name}.mp4_{k}.png" for k in range(1, NUM_FRAMES + 1)]


def audio_path(root: PathLike, subset: str, entry: VideoEntry) -> Path:
    """The path of the video's wav (not checked to exist)."""
    subset = check_subset(subset)
    _check_entry(subset, entry)
    base = _data_dir(root, subset) / "audio_wav" / entry.split
    if subset == "s4":
        return base / entry.category / f"{entry.name}.wav"  # type: ignore[operator]
    return base / f"{entry.name}.wav"


def gt_mask_paths(root: PathLike, subset: str, entry: VideoEntry) -> list[Path]:
    """The paths of the video's ground-truth masks ``…_1.png`` to ``…_5.png`` (not checked)."""
    subset = check_subset(subset)
    _check_entry(subset, entry)
    base = _data_dir(root, subset) / "gt_masks" / entry.split
    if subset == "s4":
        folder = base / entry.category / entry.name  # type: ignore[operator]
    else:
        folder = base / entry.name
    return [folder / f"{entry.name}_{k}.png" for k in range(1, NUM_FRAMES + 1)]


def list_paths(paths: Sequence[PathLike], limit: int = 5, *, lines: bool = False) -> str:
    """The first ``limit`` of ``paths`` for an error message, then a count of the rest: on one
    line, comma-separated (``a, b and 3 more``), or with ``lines`` one indented path a line."""
    shown = [str(p) for p in paths[:limit]]
    rest = len(paths) - len(shown)
    if lines:
        return "\n".join(f"  {p}" for p in shown) + (f"\n  … and {rest} more" if rest > 0 else "")
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


def _require(paths: Sequence[Path], what: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        present = [p for p in missing if p.exists()]  # a folder, a FIFO, a device: named as such
        if present:
            check_file(present[0], f"file ({what})")
        raise FileNotFoundError(f"missing {what}: {list_paths(missing)}")


def load_video(
    root: PathLike, subset: str, entry: VideoEntry, *, sample_rate: Optional[int] = DEFAULT_SAMPLE_RATE
) -> Clip:
    """Read one video's 5 frames and its audio.

    Returns:
        a :class:`~cmsf.io.decoding.Clip`: ``frames (Tensor[5, 3, H, W]) uint8`` at their stored size
        (224×224 in the release; AVSBench's dataloader does not resize them), ``waveform
        (Tensor[C, S]) float32`` resampled to ``sample_rate`` (the wavs are 16 kHz already) and
        ``sample_rate``.

    Raises:
        FileNotFoundError: a frame or the wav is missing (the message names them).
        ValueError: an unreadable file, or frames of different sizes.
    """
    frames = frame_paths(root, subset, entry)
    audio = audio_path(root, subset, entry)
    _require(frames, f"frames of video {entry.name}")
    _require([audio], f"audio of video {entry.name}")
    waveform, rate = read_audio(audio, sample_rate)
    return Clip(
        frames=read_frames(frames), waveform=waveform, sample_rate=rate, source=f"{subset}:{entry.key}"
    )


def existing_gt_mask_paths(root: PathLike, subset: str, entry: VideoEntry) -> list[Path]:
    """The ground-truth masks that exist, numbered consecutively from 1 (5 for test / val
    videos, 1 for S4 train videos).

    Raises:
        FileNotFoundError: no mask at all.
        ValueError: a gap in the numbering (e.g. ``_1`` and ``_3`` but no ``_2``).
    """
    paths = gt_mask_paths(root, subset, entry)
    present = [p.is_file() for p in paths]
    count = 0
    while count < len(paths) and present[count]:
        count += 1
    if count == 0:
        raise FileNotFoundError(f"missing ground truth of video {entry.name}: {paths[0]}")
    if any(present[count:]):
        raise ValueError(
            f"{paths[count]}: missing while later masks of video {entry.name} exist; expected masks "
            "numbered consecutively from 1"
        )
    return paths[:count]


def missing_gt_masks(root: PathLike, subset: str, entries: Iterable[VideoEntry]) -> list[Path]:
    """The ground-truth files the videos need that do not exist, in order (file checks only,
    nothing is read): a video's first mask when it has none, and any mask missing before a later
    one that exists (a gap in the numbering)."""
    missing: list[Path] = []
    for entry in entries:
        paths = gt_mask_paths(root, subset, entry)
        present = [p.is_file() for p in paths]
        if not any(present):
            missing.append(paths[0])
            continue
        last = max(k for k, here in enumerate(present) if here)
        missing.extend(p for p, here in zip(paths[: last + 1], present) if not here)
    return missing


def load_gt_masks(root: PathLike, subset: str, entry: VideoEntry) -> Tensor:
    """The video's ground truth as ``Tensor[K, H, W]`` bool (any non-zero pixel = foreground).

    K = 5 for test and val videos; S4's train videos have only the first frame's mask (K = 1).
    Mask k (0-based here) belongs with frame ``{video}_{k+1}.png`` and prediction ``{video}_{k}``.

    Raises:
        FileNotFoundError, ValueError: see :func:`existing_gt_mask_paths`; masks of different sizes.
    """
    paths = existing_gt_mask_paths(root, subset, entry)
    masks = [read_mask(p) for p in paths]
    first = tuple(masks[0].shape)
    for p, m in zip(paths, masks):
        if tuple(m.shape) != first:
            raise ValueError(f"{p}: mask of size {tuple(m.shape)}, expected {first} like {paths[0]}")
    return torch.stack(masks)


def resolve_pred_dir(path: PathLike) -> Path:
    """The ``pred_masks`` folder meant by ``path``: ``path/pred_masks`` when that folder exists
    (``path`` is a run's output folder, like AVSBench's ``log_dir``), else ``path`` itself."""
    path = Path(path)
    return path / "pred_masks" if (path / "pred_masks").is_dir() else path


def pred_mask_paths(pred_dir: PathLike, subset: str, entry: VideoEntry) -> list[Path]:
    """The 5 prediction files of a video under ``pred_dir`` (the ``pred_masks`` folder itself):
    ``{category}/{video}/{video}_{k}.png`` (S4) or ``{video}/{video}_{k}.png`` (MS3), k = 0 … 4."""
    subset = check_subset(subset)
    _check_entry(subset, entry)
    folder = Path(pred_dir) / entry.key
    return [folder / f"{entry.name}_{k}.png" for k in range(NUM_FRAMES)]


def is_complete(pred_dir: PathLike, subset: str, entry: VideoEntry) -> bool:
    """Whether all 5 prediction files of the video exist (writes are atomic, so an existing file
    is a whole file)."""
    return all(p.is_file() for p in pred_mask_paths(pred_dir, subset, entry))


def missing_pred_masks(pred_dir: PathLike, subset: str, entries: Iterable[VideoEntry]) -> list[Path]:
    """Every prediction file the videos need that does not exist, in order."""
    return [p for e in entries for p in pred_mask_paths(pred_dir, subset, e) if not p.is_file()]


def write_pred_masks(pred_dir: PathLike, subset: str, entry: VideoEntry, masks: Tensor) -> list[Path]:
    """Write ``masks (Tensor[5, H, W])`` (non-zero = foreground) as the video's 5 predictions,
    0/255 single-channel PNGs, each atomically. Returns the paths written."""
    if not isinstance(masks, Tensor) or masks.ndim != 3 or masks.shape[0] != NUM_FRAMES:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"masks of video {entry.name}: expected Tensor[{NUM_FRAMES}, H, W], got {shape}")
    paths = pred_mask_paths(pred_dir, subset, entry)
    for path, mask in zip(paths, masks):
        write_png_mask(path, mask)
    return paths


def read_pred_masks(
    pred_dir: PathLike,
    subset: str,
    entry: VideoEntry,
    size: Optional[tuple[int, int]] = None,
    *,
    resize: bool = False,
) -> Tensor:
    """Read a video's 5 predictions as ``Tensor[5, H, W]`` bool (any non-zero pixel = foreground).

    Args:
        size: the expected ``(H, W)``, usually the ground truth's. A prediction of another size is
            an error naming the file, unless ``resize`` is set: then it is resized to ``size``
            with nearest-neighbour sampling.

    Raises:
        FileNotFoundError: a prediction file is missing (all missing ones are named).
        ValueError: an unreadable file, or a size mismatch.
    """
    paths = pred_mask_paths(pred_dir, subset, entry)
    _require(paths, f"predictions of video {entry.name}")
    masks = []
    for path in paths:
        mask = read_mask(path)
        if size is not None and tuple(mask.shape) != tuple(size):
            if not resize:
                raise ValueError(
                    f"{path}: prediction of size {tuple(mask.shape)} (H, W), expected the ground truth's "
                    f"{tuple(size)}; save predictions at frame size, or allow nearest-neighbour resizing "
                    "(--resize-pred on the command line, resize=True in read_pred_masks)"
                )
            mask = torch.nn.functional.interpolate(
                mask[None, None].float(), size=tuple(size), mode="nearest"
            )[0, 0].bool()
        masks.append(mask)
    sizes = {tuple(m.shape) for m in masks}
    if len(sizes) != 1:
        raise ValueError(f"predictions of video {entry.name}: masks of different sizes {sorted(sizes)}")
    return torch.stack(masks)
