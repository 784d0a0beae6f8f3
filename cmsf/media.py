"""Inputs: images and waveforms as tensors, resampling, mixdown, cutting audio into segments;
reading video files (PyAV), frame folders and audio files; writing masks and overlays.

Every stage of cmsf takes its inputs through the helpers here, so that all of them accept the
same forms and reject bad input with the same clear errors:

- images: a list of ``Tensor[3, H, W]`` uint8 or PIL images (sizes may differ), or one
  ``Tensor[B, 3, H, W]`` uint8;
- waveforms: ``Tensor[C, S]`` or ``Tensor[S]`` float, with an explicit ``sample_rate`` in Hz.

From disk (all errors name the file and say what was expected):

- :func:`load_clip` reads a video file (:func:`read_video`: T frames sampled as AVSBench does,
  the audio track at 16 kHz) or a folder of frames plus an audio file (:func:`read_frame_folder`)
  into a :class:`Clip`;
- :func:`read_wav` / :func:`read_audio` read audio, :func:`read_mask` a mask image;
- :func:`write_png_mask` / :func:`write_png_image` write PNGs atomically (:mod:`cmsf.files`), and
  :func:`overlay_mask` tints a mask over its frame.
"""

from __future__ import annotations

import io
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import av
import numpy as np
import torch
import torchaudio.functional as AF
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from cmsf.files import atomic_write_bytes

ImageLike = Union[Tensor, Image.Image]
Images = Union[Tensor, Sequence[ImageLike]]
Waveforms = Union[Tensor, Sequence[Tensor]]


def as_image_list(images: Images, name: str = "images") -> list[Tensor]:
    """Normalise ``images`` to a non-empty list of ``Tensor[3, H, W]`` uint8 (CPU or not).

    Args:
        images: a list of ``Tensor[3, H, W]`` uint8 or PIL images, or one ``Tensor[B, 3, H, W]``
            uint8 (a single ``Tensor[3, H, W]`` is refused: wrap it in a list).
        name: the argument's name, used in error messages.

    Raises:
        ValueError: empty batch, wrong rank or channel count, or a non-uint8 tensor.
    """
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(
                f"{name}: expected a list of Tensor[3, H, W] or one Tensor[B, 3, H, W] uint8, "
                f"got a tensor of shape {tuple(images.shape)}"
            )
        images = list(images.unbind(0))
    elif not isinstance(images, (list, tuple)):
        raise ValueError(
            f"{name}: expected a list of Tensor[3, H, W] uint8 / PIL images or a Tensor[B, 3, H, W] "
            f"uint8, got {type(images).__name__}"
        )
    if len(images) == 0:
        raise ValueError(f"{name}: empty batch, expected at least one image")
    return [_as_image(image, f"{name}[{i}]") for i, image in enumerate(images)]


def _as_image(image: ImageLike, name: str) -> Tensor:
    if isinstance(image, Tensor):
        if image.dtype != torch.uint8:
            raise ValueError(f"{name}: expected a uint8 image tensor, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"{name}: expected Tensor[3, H, W] (RGB), got shape {tuple(image.shape)}")
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"{name}: empty image of shape {tuple(image.shape)}")
        return image
    if isinstance(image, Image.Image):
        return pil_to_tensor(image.convert("RGB"))
    raise ValueError(f"{name}: expected Tensor[3, H, W] uint8 or a PIL image, got {type(image).__name__}")


def check_sample_rate(sample_rate: int, name: str = "sample_rate") -> int:
    """Return ``sample_rate`` as an int after checking it is a positive whole number of Hz."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
        raise ValueError(f"{name}: expected a positive integer in Hz, got {sample_rate!r}")
    if sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise ValueError(f"{name}: expected a positive integer in Hz, got {sample_rate!r}")
    return int(sample_rate)


def as_waveform(waveform: Tensor, name: str = "waveform") -> Tensor:
    """Check one waveform and return it as ``Tensor[C, S]`` floating point.

    Accepts ``Tensor[S]`` (mono) or ``Tensor[C, S]``; refuses integer dtypes, empty audio and
    non-finite samples.
    """
    if not isinstance(waveform, Tensor):
        raise ValueError(f"{name}: expected a Tensor[C, S] or Tensor[S], got {type(waveform).__name__}")
    if not waveform.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point waveform, got dtype {waveform.dtype}")
    if waveform.ndim == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.ndim != 2:
        raise ValueError(f"{name}: expected Tensor[C, S] or Tensor[S], got shape {tuple(waveform.shape)}")
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise ValueError(f"{name}: empty audio of shape {tuple(waveform.shape)}")
    if not bool(torch.isfinite(waveform).all()):
        raise ValueError(f"{name}: contains NaN or infinite samples")
    return waveform


def as_waveform_list(waveforms: Waveforms, name: str = "waveforms") -> list[Tensor]:
    """Normalise a batch of audio segments to a non-empty list of ``Tensor[C, S]`` float.

    Args:
        waveforms: a list of ``Tensor[C, S]`` / ``Tensor[S]``, or one ``Tensor[B, C, S]`` /
            ``Tensor[B, S]``. Items of a list may differ in length and channel count.
    """
    if isinstance(waveforms, Tensor):
        if waveforms.ndim not in (2, 3):
            raise ValueError(
                f"{name}: expected a list of Tensor[C, S] / Tensor[S] or one Tensor[B, C, S] / "
                f"Tensor[B, S], got a tensor of shape {tuple(waveforms.shape)}"
            )
        waveforms = list(waveforms.unbind(0))
    elif not isinstance(waveforms, (list, tuple)):
        raise ValueError(
            f"{name}: expected a list of Tensor[C, S] or a Tensor[B, C, S], got {type(waveforms).__name__}"
        )
    if len(waveforms) == 0:
        raise ValueError(f"{name}: empty batch, expected at least one audio segment")
    return [as_waveform(w, f"{name}[{i}]") for i, w in enumerate(waveforms)]


def mixdown(waveform: Tensor) -> Tensor:
    """``Tensor[C, S]`` → ``Tensor[S]``: the mean over channels."""
    return waveform.mean(dim=0)


def resample(waveform: Tensor, sample_rate: int, target_rate: int) -> Tensor:
    """Resample ``waveform (Tensor[..., S])`` from ``sample_rate`` to ``target_rate`` Hz.

    Uses ``torchaudio.functional.resample`` (windowed sinc, its defaults); a no-op when the rates
    are equal. Computed in float32 at least (float64 stays float64).
    """
    sample_rate = check_sample_rate(sample_rate)
    target_rate = check_sample_rate(target_rate, "target_rate")
    if sample_rate == target_rate:
        return waveform

    work = waveform if waveform.dtype == torch.float64 else waveform.float()
    return AF.resample(work, sample_rate, target_rate)


def split_segments(waveform: Tensor, num_segments: int, name: str = "waveform") -> list[Tensor]:
    """Cut ``waveform (Tensor[C, S] or Tensor[S])`` into ``num_segments`` equal consecutive slices.

    Segment ``t`` covers samples ``[t * S // T, (t + 1) * S // T)``: when S is not a multiple of T
    the slices differ in length by at most one sample, and together they cover the whole waveform.
    This is how a video's audio is paired with its T frames (AVSBench: 5 frames, 5 s, one second
    each).

    Returns:
        a list of T ``Tensor[C, S_t]`` views.
    """
    waveform = as_waveform(waveform, name)
    if isinstance(num_segments, bool) or not isinstance(num_segments, numbers.Integral) or num_segments <= 0:
        raise ValueError(f"num_segments: expected a positive integer, got {num_segments!r}")
    num_segments = int(num_segments)
    total = waveform.shape[-1]
    if total < num_segments:
        raise ValueError(
            f"{name}: {total} samples cannot be cut into {num_segments} non-empty segments"
        )
    bounds = [t * total // num_segments for t in range(num_segments + 1)]
    return [waveform[:, bounds[t] : bounds[t + 1]] for t in range(num_segments)]


# ------------------------------------------------------------------------------------------------
# Reading inputs from disk: video files, frame folders, audio files; writing masks and overlays.
# ------------------------------------------------------------------------------------------------

DEFAULT_SAMPLE_RATE = 16_000
"""The sample rate (Hz) audio is resampled to when read: what the pipelines' audio models use."""

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Image files a frame folder may hold (case-insensitive)."""

SAMPLE_POINT = 15 / 16
"""Where in its span a sampled frame sits: AVSBench's preprocessing keeps, of 16 frames sampled
per second, the last one, at 15/16 of the second."""

_TIME_EPS = 1e-6


@dataclass(frozen=True)
class Clip:
    """One video's worth of input for a pipeline.

    Attributes:
        frames (Tensor[T, 3, H, W]): uint8 RGB frames, all the same size.
        waveform (Tensor[C, S]): float32 audio, ``sample_rate`` Hz. For a video file it spans
            exactly the T frame spans (see :func:`read_video`), so that
            :func:`split_segments` pairs segment t with frame t.
        sample_rate: Hz.
        source: where the clip came from (a path, or ``"frames: … + audio: …"``), for messages
            and evidence.
        frame_times: the presentation time in seconds of each frame in its video (relative to
            the start of the audio track), or ``None`` for frames read from image files.
    """

    frames: Tensor
    waveform: Tensor
    sample_rate: int
    source: str
    frame_times: Optional[tuple[float, ...]] = None

    @property
    def num_frames(self) -> int:
        """T, the number of frames."""
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """The audio's length in seconds."""
        return self.waveform.shape[-1] / self.sample_rate


def natural_sort_key(name: str) -> tuple:
    """A sort key that orders digit runs by value: ``x_2.png`` before ``x_10.png``."""
    parts = re.split(r"(\d+)", name)
    folded = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts)
    return folded, name  # case-insensitive first; the exact name breaks ties


def _exists(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what}")
    return path


def _open_container(path: Path) -> Any:

    _exists(path, "file")
    if path.is_dir():
        raise ValueError(f"{path}: expected a media file, got a folder")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable audio/video file ({error})") from None


def _decode_audio(path: Path) -> tuple[Tensor, int, float]:
    """Decode the first audio track of ``path``: ``(Tensor[C, S] float32, rate, start_seconds)``."""
    with _open_container(path) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: has no audio track (expected a file with sound)")
        stream = container.streams.audio[0]
        resampler: Optional[Any] = None  # av.AudioResampler
        chunks: list[np.ndarray] = []
        rate: Optional[int] = None
        start: Optional[float] = None
        try:
            for frame in container.decode(stream):
                if rate is None:
                    rate = int(frame.sample_rate)
                    start = float(frame.time) if frame.time is not None else 0.0
                    # planar float, the input's own layout and rate
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=rate)
                elif int(frame.sample_rate) != rate:
                    raise ValueError(
                        f"{path}: the audio's sample rate changes mid-stream "
                        f"({rate} Hz, then {frame.sample_rate} Hz)"
                    )
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray())
        except av.FFmpegError as error:
            raise ValueError(f"{path}: the audio track cannot be decoded ({error})") from None
    if rate is None or not chunks:
        raise ValueError(f"{path}: the audio track holds no samples")
    channels = {c.shape[0] for c in chunks}
    if len(channels) != 1:
        raise ValueError(f"{path}: the audio's channel count changes mid-stream ({sorted(channels)})")
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32, copy=False))
    if waveform.shape[1] == 0:
        raise ValueError(f"{path}: the audio track holds no samples")
    return waveform, rate, float(start or 0.0)


def read_wav(path: Union[str, Path]) -> tuple[Tensor, int]:
    """Read an audio file (wav, or anything FFmpeg decodes) at its own sample rate.

    Returns:
        ``(waveform, sample_rate)``: ``Tensor[C, S]`` float32 in [-1, 1] for integer formats,
        and the file's rate in Hz.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, no audio track, or no samples; the message names the file.
    """
    waveform, rate, _ = _decode_audio(Path(path))
    return waveform, rate


def read_audio(path: Union[str, Path], sample_rate: Optional[int] = DEFAULT_SAMPLE_RATE) -> tuple[Tensor, int]:
    """Read an audio file (or a video's audio track) resampled to ``sample_rate`` Hz.

    Args:
        sample_rate: the rate to return (default 16 kHz); ``None`` keeps the file's own rate.

    Returns:
        ``(Tensor[C, S] float32, rate)``.
    """
    waveform, rate = read_wav(path)
    return _to_rate(waveform, rate, sample_rate)


def _to_rate(waveform: Tensor, rate: int, sample_rate: Optional[int]) -> tuple[Tensor, int]:
    """``(waveform, rate)`` resampled to ``sample_rate`` as float32; unchanged when it is None."""
    if sample_rate is None:
        return waveform, rate
    sample_rate = check_sample_rate(sample_rate)
    return resample(waveform, rate, sample_rate).to(torch.float32), sample_rate


def sample_times(duration: float, *, num_frames: Optional[int] = None, fps: Optional[float] = None) -> tuple[list[float], float]:
    """Which instants of a clip become its frames.

    The clip (``duration`` seconds of audio) is cut into T equal consecutive spans of ``L``
    seconds and span k is represented by the frame showing at ``k·L + (15/16)·L``:

    - default: one span per second (L = 1), over ``floor(duration)`` whole seconds: the frame
      at k + 15/16 s for k = 0 … T-1, which is the frame AVSBench's preprocessing picks;
    - ``fps=F``: spans of 1/F s, ``T = floor(duration · F)``;
    - ``num_frames=N``: N spans of ``duration / N`` s that cover the whole clip.

    Returns:
        ``(times, span)``: the T sample instants in seconds from the start of the audio, and L.

    Raises:
        ValueError: both options given, a non-positive option, or a clip too short for one span.
    """
    if num_frames is not None and fps is not None:
        raise ValueError("num_frames and fps: give at most one of them")
    if not (duration > 0) or math.isinf(duration):
        raise ValueError(f"duration: expected a positive number of seconds, got {duration!r}")
    if num_frames is not None:
        if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames <= 0:
            raise ValueError(f"num_frames: expected a positive integer, got {num_frames!r}")
        count = int(num_frames)
        span = duration / count
    else:
        rate = 1.0 if fps is None else float(fps)
        if not (rate > 0) or math.isinf(rate):
            raise ValueError(f"fps: expected a positive number of frames per second, got {fps!r}")
        span = 1.0 / rate
        count = int(math.floor(duration * rate + 1e-9))
        if count == 0:
            option = "the default one frame per second" if fps is None else f"fps={fps}"
            raise ValueError(
                f"the audio lasts {duration:.3f} s, too short for one frame at {option}; "
                "ask for num_frames instead"
            )
    times = [k * span + SAMPLE_POINT * span for k in range(count)]
    return times, span


def read_video(
    path: Union[str, Path],
    *,
    num_frames: Optional[int] = None,
    fps: Optional[float] = None,
    sample_rate: Optional[int] = DEFAULT_SAMPLE_RATE,
) -> Clip:
    """Read a video file (mp4, mkv, webm, mov, avi, …; anything FFmpeg decodes) with PyAV.

    Frames are sampled as described in :func:`sample_times` — by default one per second of
    audio: for second k (k = 1 … floor(duration)) the last frame whose presentation time is at
    most k − 1/16 s, exactly what AVSBench's preprocessing keeps for videos with a whole-number
    frame rate. Times are measured from the start of the audio track, so a frame is paired with
    the sound it was shown with. A span whose instant lies after the last frame gets the last
    frame (so does AVSBench); one before the first frame gets the first.

    The audio is the first audio track, cut to the T spans (``T · L`` seconds; with
    ``num_frames`` nothing is cut) and resampled to ``sample_rate``.

    Args:
        path: the video file.
        num_frames: N frames, one per each of N equal spans of the audio.
        fps: F frames per second of audio.
        sample_rate: the audio rate to return (default 16 kHz); ``None`` keeps the file's.

    Returns:
        a :class:`Clip` with ``frames (Tensor[T, 3, H, W]) uint8``, ``waveform (Tensor[C, S])
        float32`` and ``frame_times``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, no video or no audio track, no frames, frames of different sizes,
            or audio too short; the message names the file.
    """

    path = Path(path)
    waveform, rate, audio_start = _decode_audio(path)
    duration = waveform.shape[1] / rate
    try:
        times, span = sample_times(duration, num_frames=num_frames, fps=fps)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    targets = [audio_start + t for t in times]

    chosen: list[Any] = [None] * len(targets)
    with _open_container(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: has no video track (expected a video file)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frame_rate = float(stream.average_rate) if stream.average_rate else 25.0
        j = 0
        previous = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                when = float(frame.time) if frame.time is not None else index / frame_rate
                while j < len(targets) and when > targets[j] + _TIME_EPS:
                    chosen[j] = (previous or (frame, when))
                    j += 1
                if j == len(targets):
                    break
                previous = (frame, when)
        except av.FFmpegError as error:
            raise ValueError(f"{path}: the video track cannot be decoded ({error})") from None
    if previous is None and chosen[0] is None:
        raise ValueError(f"{path}: the video track holds no frames")
    for k in range(j, len(targets)):
        chosen[k] = previous

    converted: dict[int, Tensor] = {}
    frames: list[Tensor] = []
    for frame, _ in chosen:
        key = id(frame)
        if key not in converted:
            converted[key] = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
        frames.append(converted[key])
    sizes = {tuple(f.shape[1:]) for f in frames}
    if len(sizes) != 1:
        raise ValueError(
            f"{path}: the sampled frames differ in size ({sorted(sizes)} as (H, W)); "
            "expected one frame size throughout the video"
        )
    if num_frames is None:
        keep = int(round(len(targets) * span * rate))
        waveform = waveform[:, : max(1, min(keep, waveform.shape[1]))]
    waveform, rate = _to_rate(waveform, rate, sample_rate)
    return Clip(
        frames=torch.stack(frames).contiguous(),
        waveform=waveform.contiguous(),
        sample_rate=rate,
        source=str(path),
        frame_times=tuple(when - audio_start for _, when in chosen),
    )


def list_frame_files(folder: Union[str, Path]) -> list[Path]:
    """The image files (png / jpg / jpeg) directly in ``folder``, sorted naturally.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: not a folder, or no image in it.
    """
    folder = _exists(Path(folder), "folder")
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a folder of frames")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    if not files:
        raise ValueError(f"{folder}: no frames in this folder (expected {', '.join(FRAME_SUFFIXES)} files)")
    return sorted(files, key=lambda p: natural_sort_key(p.name))


def read_image(path: Union[str, Path]) -> Tensor:
    """Read an image file as ``Tensor[3, H, W]`` uint8 RGB (alpha dropped, palettes applied)."""

    path = _exists(Path(path), "file")
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from None

    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


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
    AVSBench pairs its 5 frames with 5 s of sound).

    Returns:
        a :class:`Clip` (``frame_times`` is None).
    """
    files = list_frame_files(folder)
    frames = read_frames(files)
    waveform, rate = read_audio(audio, sample_rate)
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


def as_mask(mask: Tensor, name: str = "mask") -> Tensor:
    """Check one mask and return it as ``Tensor[H, W]`` bool on the CPU (non-zero = foreground)."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name}: expected Tensor[H, W], got {type(mask).__name__}")
    if mask.ndim != 2 or mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty Tensor[H, W], got shape {tuple(mask.shape)}")
    return (mask.detach().cpu() != 0)


def encode_png(array: Any) -> bytes:
    """Encode a uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) array as PNG bytes."""

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png_mask(path: Union[str, Path], mask: Tensor) -> Path:
    """Write ``mask (Tensor[H, W])`` as a single-channel 8-bit PNG, 255 = foreground, 0 =
    background, atomically (see :mod:`cmsf.files`). Any non-zero value counts as foreground."""

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
    path = _exists(Path(path), "file")
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
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha}")
    tint = torch.tensor(color, dtype=torch.float32).view(3, 1, 1)
    blended = ((1 - alpha) * frame.float() + alpha * tint).round().clamp(0, 255).to(torch.uint8)
    return torch.where(mask.unsqueeze(0), blended, frame)
