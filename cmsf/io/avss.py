"""AVSBench-semantic (AVSS, "V2", Zhou et al. 2023) on disk: the release's layout as its
reference code (``avs_scripts/avss/color_dataloader.py``) reads it::

    ROOT/metadata.csv          columns found by name: uid, split, label (v1s, v1m or v2); a_obj
                               and any other column may be present and are kept or ignored
    ROOT/label2idx.json        the 71 class names → 1-based index; class k of a mask is the name
                               with index k + 1 (background first)
    ROOT/{label}/{uid}/frames/{i}.jpg         i = 0 … 4 (v1s, v1m: 5 s) or 0 … 9 (v2: 10 s)
    ROOT/{label}/{uid}/labels_rgb/{i}.png     colour masks, same numbering (v1s train: only 0)
    ROOT/{label}/{uid}/audio.wav

Masks are colour images in the unified palette of ``get_v2_pallete`` (:func:`palette`: 71
colours, bit-interleaved, background black). Reading one follows the reference exactly: the PNG
is converted to RGB, resized to 224 × 224 with PIL's nearest neighbour (``resize_img``, the
val / test transform), and each pixel's class is the palette entry its colour equals
(``color_mask_to_label``; a colour in no entry counts as background, as there: the readers
count such pixels so that runs can report them). Frames are resized to 224 × 224 with PIL's
bilinear filter, as the reference feeds its models.

The reference pads every video to 10 frames: a v1 video's frames 5 … 9 are black and their
ground truth is all background, and a v1s train video's masks 1 … 4 (not annotated) are
background too. :func:`load_ground_truth` returns the padded stack with a flag of the frames
that are annotated, so metrics can count the padding as the official protocol does, or not.

Predictions as the reference's ``test.py --save_pred_mask`` writes them (``utils/vis_mask.py``)::

    PRED/{uid}/{uid}_{k}.png      k = 0 … 9, RGB, palette colours

For a v1 video the files 5 … 9 (the reference's predictions on its black padding frames) may be
left out: they then count as all background.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from cmsf.io.decoding import DEFAULT_SAMPLE_RATE, Clip, read_audio
from cmsf.io.files import atomic_write_bytes

PathLike = Union[str, Path]

NUM_CLASSES = 71
"""Classes of AVSS, background (index 0) included (the reference's ``cfg.NUM_CLASSES``)."""
MAX_FRAMES = 10
"""Frames every video is padded to (the reference's T)."""
SIZE = 224
"""Frames and masks are resized to SIZE × SIZE (the reference's ``cfg.DATA.CROP_SIZE``)."""
FRAMES_OF = {"v1s": 5, "v1m": 5, "v2": 10}
"""Frames (one a second) of a video by its ``label``."""
METADATA_NAME = "metadata.csv"
CLASSES_NAME = "label2idx.json"
REQUIRED_COLUMNS = ("uid", "split", "label")


@dataclass(frozen=True)
class AvssVideo:
    """One row of ``metadata.csv``.

    Attributes:
        uid: the video's id (its folder's name).
        split: ``train``, ``val`` or ``test``.
        label: ``v1s`` (from S4), ``v1m`` (from MS3) or ``v2`` (new 10 s videos).
        a_obj: the csv's sounding-object column, ``""`` when the csv has none.
    """

    uid: str
    split: str
    label: str
    a_obj: str = ""

    @property
    def key(self) -> str:
        """The video's path under a prediction folder (its uid)."""
        return self.uid

    @property
    def num_frames(self) -> int:
        """5 (v1s, v1m) or 10 (v2)."""
        return FRAMES_OF[self.label]

    def annotated(self) -> list[bool]:
        """Which of the 10 (padded) frames have a ground-truth mask: all real frames, but only
        frame 0 of a v1s train video."""
        real = 1 if (self.label == "v1s" and self.split == "train") else self.num_frames
        return [k < real for k in range(MAX_FRAMES)]


def palette(num_classes: int = NUM_CLASSES) -> Tensor:
    """The unified AVSBench palette, ``Tensor[num_classes, 3]`` uint8 (class k's RGB colour):
    bits 0, 1, 2 of k go to the top bit of R, G, B, bits 3, 4, 5 to the next, and so on
    (``get_v2_pallete``); class 0 is black."""
    colours = torch.zeros(num_classes, 3, dtype=torch.uint8)
    for k in range(num_classes):
        rgb = [0, 0, 0]
        value, shift = k, 7
        while value > 0:
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
        colours[k] = torch.tensor(rgb, dtype=torch.uint8)
    return colours


def _root(root: PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected the AVSS release, holding {METADATA_NAME})")
    return root


def read_classes(root: PathLike) -> list[str]:
    """The class names in mask order (index 0 = background), from ``ROOT/label2idx.json``.

    Raises:
        FileNotFoundError: no ``label2idx.json``.
        ValueError: not a JSON object of names → integers, not exactly :data:`NUM_CLASSES`
            entries (the palette's length, the reference's assert), or indices that are not
            1 … 71 (the release's; 0 … 70 is read as well) each once.
    """
    path = _root(root) / CLASSES_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; expected AVSS's class list (71 names → index 1 … 71)")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(table, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in table.values()
    ):
        raise ValueError(f"{path}: expected a JSON object of class names → integer indices")
    if len(table) != NUM_CLASSES:
        raise ValueError(
            f"{path}: {len(table)} classes, expected {NUM_CLASSES} (the palette's length, background included)"
        )
    first = min(table.values())
    if first not in (0, 1) or sorted(table.values()) != list(range(first, first + NUM_CLASSES)):
        raise ValueError(f"{path}: the indices must be 1 … {NUM_CLASSES} (or 0 … {NUM_CLASSES - 1}), each once")
    return [name for name, _ in sorted(table.items(), key=lambda item: item[1])]


def read_metadata(root: PathLike) -> list[AvssVideo]:
    """Every video of ``ROOT/metadata.csv`` in its order (columns found by their header).

    Raises:
        FileNotFoundError: no ``metadata.csv``.
        ValueError: unreadable, a required column missing, an empty uid or a label other than
            v1s / v1m / v2 (naming the line).
    """
    path = _root(root) / METADATA_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; expected AVSS's metadata (columns {', '.join(REQUIRED_COLUMNS)})")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            header = [h.strip() for h in (rows[0].keys() if rows else [])]
    except (csv.Error, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable CSV ({error})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if not rows or missing:
        raise ValueError(f"{path}: expected the columns {', '.join(REQUIRED_COLUMNS)} and one row a video; "
                         f"missing {', '.join(missing) or 'rows'}")  # fmt: skip
    videos = []
    for line, row in enumerate(rows, start=2):
        cells = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        if not cells.get("uid"):
            raise ValueError(f"{path}: line {line} has an empty uid")
        if cells.get("label") not in FRAMES_OF:
            raise ValueError(f"{path}: line {line} has label {cells.get('label')!r}, expected v1s, v1m or v2")
        videos.append(AvssVideo(cells["uid"], cells.get("split", ""), cells["label"], cells.get("a_obj", "")))
    return videos


def list_videos(root: PathLike, split: str = "test") -> list[AvssVideo]:
    """The videos of one split, in the csv's order.

    Raises:
        ValueError: a split the csv does not have (the message lists those it has).
    """
    videos = read_metadata(root)
    chosen = [v for v in videos if v.split == split]
    if not chosen:
        splits = ", ".join(sorted({v.split for v in videos}))
        raise ValueError(f"split: {split!r} has no videos in {Path(root) / METADATA_NAME}; it has {splits}")
    return chosen


def video_dir(root: PathLike, video: AvssVideo) -> Path:
    """``ROOT/{label}/{uid}``."""
    return Path(root) / video.label / video.uid


def frame_paths(root: PathLike, video: AvssVideo) -> list[Path]:
    """``frames/0.jpg`` … of the video's real frames (5 or 10; not checked to exist)."""
    return [video_dir(root, video) / "frames" / f"{i}.jpg" for i in range(video.num_frames)]


def gt_paths(root: PathLike, video: AvssVideo) -> list[Path]:
    """``labels_rgb/{i}.png`` the video needs: all its frames', only frame 0's for a v1s train
    video (not checked to exist; see :func:`load_ground_truth` for more masks than needed)."""
    folder = video_dir(root, video) / "labels_rgb"
    return [folder / f"{i}.png" for i, here in enumerate(video.annotated()) if here]


def audio_path(root: PathLike, video: AvssVideo) -> Path:
    """``audio.wav`` of the video (not checked to exist)."""
    return video_dir(root, video) / "audio.wav"


def missing_files(root: PathLike, videos: Iterable[AvssVideo], *, media: bool = False) -> list[Path]:
    """What the videos need that does not exist (file checks only): a video's folder when it has
    none, else its missing ground-truth masks (and with ``media`` its frames and audio)."""
    missing: list[Path] = []
    for video in videos:
        folder = video_dir(root, video)
        if not folder.is_dir():
            missing.append(folder)
            continue
        needed = gt_paths(root, video) + (frame_paths(root, video) + [audio_path(root, video)] if media else [])
        missing.extend(p for p in needed if not p.is_file())
    return missing


def _open_rgb(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what})")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from None


def colours_to_classes(rgb: Tensor, colours: Optional[Tensor] = None) -> tuple[Tensor, int]:
    """``rgb (Tensor[H, W, 3]) uint8`` → ``(classes (Tensor[H, W]) int64, off_palette)``: each
    pixel's class is the first palette entry (of ``colours``, default :func:`palette`) its colour
    equals (``color_mask_to_label``); a colour in no entry is background (0) and is counted in
    ``off_palette``."""
    colours = palette() if colours is None else colours
    codes = (rgb[..., 0].long() << 16) | (rgb[..., 1].long() << 8) | rgb[..., 2].long()
    table = (colours[:, 0].long() << 16) | (colours[:, 1].long() << 8) | colours[:, 2].long()
    # the first class of each distinct colour (the palette's colours are distinct; the first wins
    # if not, as numpy's argmax in color_mask_to_label), looked up by binary search
    order = torch.argsort(table, stable=True)
    sorted_codes = table[order]
    first = torch.ones_like(sorted_codes, dtype=torch.bool)
    first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    sorted_codes, order = sorted_codes[first], order[first]
    index = torch.searchsorted(sorted_codes, codes).clamp_(max=len(sorted_codes) - 1)
    found = sorted_codes[index] == codes
    return order[index] * found, int((~found).sum())


def read_class_mask(
    path: PathLike, *, resize: bool = True, what: str = "mask", colours: Optional[Tensor] = None
) -> tuple[Tensor, int]:
    """Read a colour mask as ``(Tensor[224, 224] int64 classes, off-palette pixel count)``.

    With ``resize`` (the reference's treatment of ground truth) a mask of another size is resized
    to 224 × 224 with PIL's nearest neighbour first; without it, another size is an error.

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, or (``resize`` off) not 224 × 224.
    """
    path = Path(path)
    image = _open_rgb(path, what)
    if image.size != (SIZE, SIZE):
        if not resize:
            raise ValueError(
                f"{path}: {what} of size {image.size[1]} × {image.size[0]} (H × W), expected {SIZE} × {SIZE}; "
                "allow nearest-neighbour resizing (--resize-pred, resize=True) or save at 224 × 224"
            )
        image = image.resize((SIZE, SIZE), Image.NEAREST)
    return colours_to_classes(torch.from_numpy(np.asarray(image).copy()), colours)


def load_ground_truth(root: PathLike, video: AvssVideo) -> tuple[Tensor, Tensor, int]:
    """The video's ground truth padded as the reference pads it.

    The masks read are ``labels_rgb/0.png``, ``1.png``, … as far as they exist (at most the
    video's 5 or 10 frames), as the reference reads as many masks as the folder holds: a v1s
    train video has only mask 0 in the release (its frames 1 … 4 then count as background).

    Returns:
        ``(classes (Tensor[10, 224, 224]) int64, annotated (Tensor[10]) bool, off_palette)``:
        frames without a mask (padding, and a v1s train video's frames 1 … 4) are all
        background (0) and not ``annotated``.

    Raises:
        FileNotFoundError: a mask the video needs is missing (:func:`gt_paths`).
        ValueError: a mask exists after a missing one, or one cannot be read.
    """
    folder = video_dir(root, video) / "labels_rgb"
    paths = [folder / f"{i}.png" for i in range(video.num_frames)]
    present = [p.is_file() for p in paths]
    count = present.index(False) if False in present else len(paths)
    if count < len(gt_paths(root, video)):
        raise FileNotFoundError(f"{paths[count]}: missing (ground truth of video {video.uid})")
    if any(present[count:]):
        raise ValueError(f"{paths[count]}: missing while later masks of video {video.uid} exist; expected "
                         "masks numbered consecutively from 0")  # fmt: skip
    classes = torch.zeros(MAX_FRAMES, SIZE, SIZE, dtype=torch.int64)
    off, colours = 0, palette()
    for k, path in enumerate(paths[:count]):
        classes[k], pixels = read_class_mask(path, what=f"ground truth of video {video.uid}", colours=colours)
        off += pixels
    return classes, torch.arange(MAX_FRAMES) < count, off


def pred_paths(pred_dir: PathLike, video: AvssVideo) -> list[Path]:
    """``{uid}/{uid}_{k}.png``, k = 0 … 9, under ``pred_dir``."""
    folder = Path(pred_dir) / video.uid
    return [folder / f"{video.uid}_{k}.png" for k in range(MAX_FRAMES)]


def resolve_pred_dir(path: PathLike) -> Path:
    """``path/pred_masks`` when that folder exists (a run's folder), else ``path``."""
    path = Path(path)
    return path / "pred_masks" if (path / "pred_masks").is_dir() else path


def _required_preds(pred_dir: PathLike, video: AvssVideo) -> list[Path]:
    paths = pred_paths(pred_dir, video)
    padded = paths[video.num_frames :]
    if padded and not any(p.is_file() for p in padded):  # a v1 video's padding left out
        return paths[: video.num_frames]
    return paths


def missing_preds(pred_dir: PathLike, videos: Iterable[AvssVideo]) -> list[Path]:
    """The prediction files the videos need that do not exist: all 10 for v2 videos; for v1
    videos the first 5, and the other 5 once any of them exists."""
    return [p for v in videos for p in _required_preds(pred_dir, v) if not p.is_file()]


def is_complete(pred_dir: PathLike, video: AvssVideo) -> bool:
    """Whether the video's predictions are all there (see :func:`missing_preds`)."""
    return not missing_preds(pred_dir, [video])


def read_predictions(pred_dir: PathLike, video: AvssVideo, *, resize: bool = False) -> tuple[Tensor, int]:
    """A video's predictions as ``(Tensor[10, 224, 224] int64 classes, off-palette pixels)``;
    a v1 video's left-out padding predictions are background. ``resize``: see
    :func:`read_class_mask`.

    Raises:
        FileNotFoundError: a needed file is missing. ValueError: unreadable, or a wrong size.
    """
    classes = torch.zeros(MAX_FRAMES, SIZE, SIZE, dtype=torch.int64)
    off, colours = 0, palette()
    for k, path in enumerate(_required_preds(pred_dir, video)):
        what = f"prediction of video {video.uid}"
        classes[k], count = read_class_mask(path, resize=resize, what=what, colours=colours)
        off += count
    return classes, off


def encode_class_png(classes: Tensor, colours: Optional[Tensor] = None) -> bytes:
    """``classes (Tensor[H, W])`` integer indices → an RGB PNG in palette colours."""
    colours = palette() if colours is None else colours
    if classes.dtype.is_floating_point or classes.ndim != 2:
        raise ValueError(f"classes: expected an integer Tensor[H, W], got {classes.dtype} {tuple(classes.shape)}")
    if bool((classes < 0).any()) or bool((classes >= len(colours)).any()):
        raise ValueError(f"classes: expected indices in 0 … {len(colours) - 1}")
    buffer = io.BytesIO()
    Image.fromarray(colours[classes.long()].numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def write_predictions(pred_dir: PathLike, video: AvssVideo, classes: Tensor) -> list[Path]:
    """Write ``classes (Tensor[10, H, W])`` as the video's 10 prediction PNGs (palette colours,
    as ``save_color_mask`` writes them, without its resize), each atomically."""
    if not isinstance(classes, Tensor) or classes.ndim != 3 or classes.shape[0] != MAX_FRAMES:
        shape = tuple(classes.shape) if isinstance(classes, Tensor) else type(classes).__name__
        raise ValueError(f"classes of video {video.uid}: expected Tensor[{MAX_FRAMES}, H, W], got {shape}")
    colours = palette()
    paths = pred_paths(pred_dir, video)
    for path, frame in zip(paths, classes):
        atomic_write_bytes(path, encode_class_png(frame, colours))
    return paths


def load_video(root: PathLike, video: AvssVideo, *, sample_rate: Optional[int] = DEFAULT_SAMPLE_RATE) -> Clip:
    """Read the video's real frames (5 or 10, no padding), each resized to 224 × 224 with PIL's
    bilinear filter as the reference does, and its audio.

    Returns:
        a :class:`~cmsf.io.decoding.Clip`: ``frames (Tensor[T, 3, 224, 224]) uint8``,
        ``waveform (Tensor[C, S]) float32`` at ``sample_rate`` Hz.

    Raises:
        FileNotFoundError: a frame or the audio is missing. ValueError: an unreadable file.
    """
    frames = []
    for path in frame_paths(root, video):
        image = _open_rgb(path, f"frame of video {video.uid}").resize((SIZE, SIZE), Image.BILINEAR)
        frames.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    audio = audio_path(root, video)
    if not audio.is_file():
        raise FileNotFoundError(f"{audio}: missing (audio of video {video.uid})")
    waveform, rate = read_audio(audio, sample_rate)
    return Clip(frames=torch.stack(frames), waveform=waveform, sample_rate=rate, source=f"avss:{video.uid}")


def describe_missing(paths: Sequence[Path], limit: int = 20) -> str:
    """``paths`` one a line for an error message (the first ``limit``, then a count)."""
    shown = "\n".join(f"  {p}" for p in paths[:limit])
    return shown + (f"\n  … and {len(paths) - limit} more" if len(paths) > limit else "")
