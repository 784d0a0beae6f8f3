"""Inputs and outputs on disk: :func:`load_clip` reads any supported input (a video file, see
:mod:`cmsf.io.decoding`, or a folder of frames with its audio) into a :class:`Clip`;
:func:`read_image` / :func:`read_frames` read frames (every PIL mode mapped to 8-bit RGB or
refused), :func:`read_mask` a mask image; :func:`write_png_mask` / :func:`write_png_image` write
PNGs atomically (:mod:`cmsf.io.files`) and :func:`overlay_mask` tints a mask over its frame. All
errors name the file and say what was expected.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from cmsf.checks import check_unit
from cmsf.io.decoding import (
    DEFAULT_SAMPLE_RATE,
    MIN_SEGMENT_SECONDS,
    Clip,
    MediaWarning,
    _exists,
    media_warnings_to,
    read_audio,
    read_video,
    read_wav,
)
from cmsf.io.files import atomic_write_bytes
from cmsf.io.inputs import _as_image, as_mask, pil_to_rgb
from cmsf.io.paths import check_file

__all__ = [
    "Clip",
    "DEFAULT_SAMPLE_RATE",
    "FRAME_SUFFIXES",
    "MediaWarning",
    "audio_for_frame_folder",
    "encode_png",
    "find_audio_for_frames",
    "list_frame_files",
    "load_clip",
    "media_warnings_to",
    "natural_sort_key",
    "overlay_mask",
    "read_audio",
    "read_frame_folder",
    "read_frames",
    "read_image",
    "read_mask",
    "read_video",
    "read_wav",
    "write_png_image",
    "write_png_mask",
]

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Image files a frame folder may hold (case-insensitive)."""


def natural_sort_key(name: str) -> tuple:
    """A sort key that orders digit runs by value: ``x_2.png`` before ``x_10.png``."""
    parts = re.split(r"(\d+)", name)
    folded = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts)
    return folded, name  # case-insensitive first; the exact name breaks ties



def list_frame_files(folder: Union[str, Path]) -> list[Path]:
    """The image files (png / jpg / jpeg) directly in ``folder``, sorted naturally.

    Raises:
        FileNotFoundError: no such folder, or a dangling symlink named like a frame.
        ValueError: not a folder, no image in it, or an entry named like a frame that is not a
            regular file (a FIFO, a folder); the message names it.
    """
    folder = _exists(Path(folder), "folder")
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a folder of frames")
    # an entry named like a frame must be one: a FIFO, a folder or a dangling link is refused, not skipped
    files = [check_file(p, "frame image") for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]
    if not files:
        raise ValueError(f"{folder}: no frames in this folder (expected {', '.join(FRAME_SUFFIXES)} files)")
    return sorted(files, key=lambda p: natural_sort_key(p.name))


def read_image(path: Union[str, Path]) -> Tensor:
    """Read an image file as ``Tensor[3, H, W]`` uint8 RGB.

    How each PIL mode becomes 8-bit RGB (:func:`cmsf.io.inputs.pil_to_rgb`, the same for a PIL
    image passed to a pipeline directly):

    - ``1``, ``L``, ``P``, ``PA``, ``LA``, ``RGB``, ``RGBA``, ``RGBX``, ``CMYK``, ``YCbCr`` (and
      premultiplied ``La`` / ``RGBa``): PIL's ``convert("RGB")``. Greys are repeated to three
      channels, palettes applied, CMYK becomes ``round((255 − C)(255 − K) / 255)`` per channel;
      alpha is dropped, not composited: transparent pixels show the colour they store.
    - 16-bit grey (``I;16``, ``I;16B``, ``I;16L``: 16-bit PNG and TIFF): the high byte,
      ``v >> 8``, repeated to three channels. The same rule PIL applies when it opens a 16-bit
      RGB / RGBA / grey-alpha PNG as 8-bit ``RGB`` / ``RGBA``, so every 16-bit PNG is scaled
      alike (0…65535 → 0…255).
    - ``I`` (32-bit integer grey, e.g. TIFF): when every value lies in 0…65535 it is taken as
      16-bit (``v >> 8``); otherwise refused.
    - ``F`` (32-bit float) and any other mode: refused, since their range is not known.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable image, or a mode it refuses; the message names the file and
            its mode.
    """

    path = check_file(Path(path), "image file")  # a FIFO or device is refused before it is opened
    try:
        with Image.open(path) as image:
            mode = image.mode
            rgb = pil_to_rgb(image, str(path))  # the rules a PIL image passed directly follows too
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"{path}: expected a non-empty image, got array shape {rgb.shape} (PIL mode {mode})")
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def read_frames(paths: Sequence[Union[str, Path]]) -> Tensor:
    """Read image files, in the given order, into ``Tensor[T, 3, H, W]`` uint8.

    Raises:
        ValueError: no paths, an unreadable file, or a frame whose size differs from the
            first's (the message names both files).
    """
    if len(paths) == 0:
        raise ValueError("frames: expected at least one image file")
    frames = [read_image(p) for p in paths]
    first = tuple(frames[0].shape[1:])
    for p, f in zip(paths, frames):
        if tuple(f.shape[1:]) != first:
            raise ValueError(
                f"{p}: frame of size {tuple(f.shape[1:])} (H, W), expected {first} like {paths[0]}; "
                "all frames must have one size"
            )
    return torch.stack(frames)


def read_frame_folder(
    folder: Union[str, Path],
    audio: Union[str, Path],
    *,
    sample_rate: Optional[int] = DEFAULT_SAMPLE_RATE,
) -> Clip:
    """Read a folder of frames (png / jpg, sorted naturally: ``x_2.png`` before ``x_10.png``)
    and an audio file (wav or any audio FFmpeg decodes).

    The audio is used whole: the pipelines cut it into T equal segments, one per frame (how
    AVSBench pairs its 5 frames with 5 s of sound); each segment must last at least
    :data:`MIN_SEGMENT_SECONDS` (checked before the frames are read).

    Returns:
        a :class:`Clip` (``frame_times`` is None).
    """
    files = list_frame_files(folder)
    waveform, rate = read_audio(audio, sample_rate)
    duration = waveform.shape[1] / rate
    most = int(math.floor(duration / MIN_SEGMENT_SECONDS + 1e-9))
    if len(files) > most:
        raise ValueError(
            f"{audio}: {duration:.3f} s of audio cannot be cut into one segment per frame of {folder} "
            f"({len(files)} frames, {duration / len(files) * 1000:.3g} ms each): each must hold at least "
            f"{MIN_SEGMENT_SECONDS * 1000:g} ms (one filterbank window of the audio models), so at most "
            f"{most} frames for this audio"
        )
    frames = read_frames(files)
    return Clip(frames=frames, waveform=waveform, sample_rate=rate, source=f"frames: {folder} + audio: {audio}")


def audio_for_frame_folder(folder: Union[str, Path]) -> Optional[Path]:
    """The wav of an AVSBench frame folder, when ``folder`` sits in AVSBench's layout.

    ``…/s4_data/visual_frames/{split}/{category}/{video}`` → ``…/s4_data/audio_wav/{split}/
    {category}/{video}.wav``; ``…/ms3_data/visual_frames/{video}`` → the one existing
    ``…/ms3_data/audio_wav/{split}/{video}.wav``. Returns None when the folder is not in that
    layout or the wav does not exist.
    """
    folder = Path(folder).resolve()
    parts = folder.parts
    if "visual_frames" not in parts:
        return None
    at = len(parts) - 1 - parts[::-1].index("visual_frames")
    data = Path(*parts[:at])
    rest = parts[at + 1 :]
    if len(rest) == 3:  # S4: split / category / video
        split, category, video = rest
        candidate = data / "audio_wav" / split / category / f"{video}.wav"
        return candidate if candidate.is_file() else None
    if len(rest) == 1:  # MS3: video
        video = rest[0]
        found = sorted((data / "audio_wav").glob(f"*/{video}.wav"))
        return found[0] if len(found) == 1 else None
    return None


def find_audio_for_frames(folder: Union[str, Path]) -> Optional[Path]:
    """The audio that goes with a frame folder, when there is exactly one obvious candidate.

    Looks for, in order: AVSBench's own layout (``…/visual_frames/…/{video}/`` → the matching
    ``…/audio_wav/…/{video}.wav``, see :func:`audio_for_frame_folder`); a single
    ``.wav`` file inside the folder; ``{folder}.wav`` next to it. Returns None when none is found.
    """
    folder = Path(folder)
    found = audio_for_frame_folder(folder)
    if found is not None:
        return found
    inside = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav")
    if len(inside) == 1:
        return inside[0]
    beside = folder.with_name(folder.name + ".wav")
    if beside.is_file():
        return beside
    return None


def load_clip(
    path: Union[str, Path],
    *,
    audio: Optional[Union[str, Path]] = None,
    num_frames: Optional[int] = None,
    fps: Optional[float] = None,
    sample_rate: Optional[int] = DEFAULT_SAMPLE_RATE,
) -> Clip:
    """Read any supported input: a video file, or a folder of frames with its audio.

    Args:
        path: a video file (see :func:`read_video`) or a folder of frames (see
            :func:`read_frame_folder`).
        audio: the audio file for a frame folder; when omitted it is found with
            :func:`find_audio_for_frames`. Refused with a video file (its own track is used).
        num_frames, fps: frame sampling of a video file (see :func:`sample_times`); refused with a
            frame folder, whose frames are all used.
        sample_rate: the audio rate to return (default 16 kHz).
    """
    path = Path(path)
    _exists(path, "file or folder")
    if path.is_dir():
        if num_frames is not None or fps is not None:
            raise ValueError(f"{path}: num_frames / fps apply to video files; a frame folder's frames are all used")
        list_frame_files(path)  # a folder without frames is told so, before its audio is looked for
        if audio is None:
            audio = find_audio_for_frames(path)
            if audio is None:
                raise ValueError(
                    f"{path}: a folder of frames needs its audio: pass an audio file (no single .wav "
                    "was found in the folder, next to it, or in AVSBench's audio_wav layout)"
                )
        return read_frame_folder(path, audio, sample_rate=sample_rate)
    if audio is not None:
        raise ValueError(f"{path}: an audio file goes with a folder of frames; a video file brings its own track")
    return read_video(path, num_frames=num_frames, fps=fps, sample_rate=sample_rate)



def encode_png(array: Any) -> bytes:
    """Encode a uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) array as PNG bytes."""

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png_mask(path: Union[str, Path], mask: Tensor) -> Path:
    """Write ``mask (Tensor[H, W])`` as a single-channel 8-bit PNG, 255 = foreground, 0 =
    background, atomically (see :mod:`cmsf.io.files`). Any non-zero value counts as foreground."""

    binary = as_mask(mask, f"mask for {path}")
    return atomic_write_bytes(path, encode_png(binary.to(torch.uint8).mul_(255).numpy()))


def write_png_image(path: Union[str, Path], image: Tensor) -> Path:
    """Write ``image (Tensor[3, H, W]) uint8`` as an RGB PNG, atomically."""

    image = _as_image(image, f"image for {path}").detach().cpu()
    return atomic_write_bytes(path, encode_png(image.permute(1, 2, 0).contiguous().numpy()))


def read_mask(path: Union[str, Path]) -> Tensor:
    """Read a mask image as ``Tensor[H, W]`` bool: any non-zero pixel is foreground.

    Grey (L, I, 1, …) images: value ≠ 0. Palette images: the colour the index maps to ≠ black.
    RGB(A) images: any colour channel ≠ 0 (alpha is ignored).
    """
    path = check_file(Path(path), "mask image")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "PA", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "LAB", "HSV"):
                if image.mode == "LA":
                    array = np.asarray(image.getchannel("L"))
                else:
                    array = np.asarray(image.convert("RGB")).max(axis=2)
            else:
                array = np.asarray(image)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from None
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel or RGB mask image, got array shape {array.shape}")
    return torch.from_numpy(array != 0)


def overlay_mask(
    frame: Tensor,
    mask: Tensor,
    color: tuple[int, int, int] = (255, 0, 0),
    alpha: float = 0.5,
) -> Tensor:
    """Tint the foreground of ``mask (Tensor[H, W])`` over ``frame (Tensor[3, H, W]) uint8``.

    Foreground pixels become ``(1 - alpha) · frame + alpha · color`` (default: red at 50 %);
    background pixels are unchanged. Returns ``Tensor[3, H, W]`` uint8.
    """
    frame = _as_image(frame, "frame").detach().cpu()
    mask = as_mask(mask)
    if tuple(mask.shape) != tuple(frame.shape[1:]):
        raise ValueError(f"mask: expected the frame's size {tuple(frame.shape[1:])}, got {tuple(mask.shape)}")
    alpha = check_unit(alpha, "alpha")
    tint = torch.tensor(color, dtype=torch.float32).view(3, 1, 1)
    blended = ((1 - alpha) * frame.float() + alpha * tint).round().clamp(0, 255).to(torch.uint8)
    return torch.where(mask.unsqueeze(0), blended, frame)
