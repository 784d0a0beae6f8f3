"""Reading video and audio files with PyAV (anything FFmpeg decodes): :func:`read_video` samples
T frames as AVSBench does and cuts the audio track to them, :func:`read_wav` /
:func:`read_audio` read a sound; both give every channel, whatever the count. A file that
decodes to less than it declares (truncated), or whose rotation cannot be applied, is read with
a :class:`MediaWarning` naming it; a frame count or rate the file cannot give is refused before
anything is decoded in bulk. All errors name the file and say what was expected.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import av
import numpy as np
import torch
from torch import Tensor

from cmsf.io.inputs import _whole_number, check_sample_rate, resample
from cmsf.io.paths import check_file, stat_input

DEFAULT_SAMPLE_RATE = 16_000
"""The sample rate (Hz) audio is resampled to when read: what the pipelines' audio models use."""

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



def _exists(path: Path, what: str) -> Path:
    stat_input(path, what)  # a symlink loop, a long name, a NUL byte: a ValueError naming the path
    return path


def _open_container(path: Path) -> Any:
    check_file(path, "media file")  # a folder, a FIFO (opening it would block), a device: refused
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable audio/video file ({error})") from None


class MediaWarning(UserWarning):
    """A media file was read, but something about it is suspect: it decodes to less than it
    declares (truncated or damaged), or its display matrix could not be applied. The message
    names the file."""


@contextlib.contextmanager
def media_warnings_to(log: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, pass every :class:`MediaWarning` to ``log`` as one line,
    ``"Warning: {message}"`` (each one, not only the first per place), instead of Python's
    two-line warning display; other warnings are shown as before.

    Usage::

        with media_warnings_to(lambda line: print(line, file=sys.stderr)):
            clip = load_clip("phone.mp4")
    """
    with warnings.catch_warnings():
        warnings.simplefilter("always", MediaWarning)
        show = warnings.showwarning

        def show_line(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, MediaWarning):
                log(f"Warning: {message}")
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = show_line
        yield


TRUNCATION_MIN_SECONDS = 0.5
"""A track is reported short (:class:`MediaWarning`) when it decodes to at least this many
seconds less than the file declares for it …"""

TRUNCATION_MIN_FRACTION = 0.05
"""… and at least this fraction of the declared duration less (both must hold)."""


def _declared_seconds(container: Any, stream: Any) -> Optional[float]:
    """The duration in seconds the file declares for ``stream``, or None when it declares none.

    In order: the stream's own duration (mp4, mov, wav, …); Matroska / WebM's per-track
    ``DURATION`` tag; the container's duration when ``stream`` is the file's only stream (a
    container's duration is its longest stream's, so it says nothing about the others).
    """
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), None)
    match = re.fullmatch(r"\s*(\d+):(\d+):(\d+(?:\.\d*)?)\s*", tag) if isinstance(tag, str) else None
    if match:
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if len(container.streams) == 1 and container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE: microseconds
    return None


def _warn_if_short(path: Path, what: str, decoded: float, declared: Optional[float]) -> None:
    """Warn (:class:`MediaWarning`) when ``decoded`` seconds fall short of ``declared`` by at
    least :data:`TRUNCATION_MIN_SECONDS` and :data:`TRUNCATION_MIN_FRACTION` of it."""
    if declared is None:
        return
    missing = declared - decoded
    if missing >= TRUNCATION_MIN_SECONDS and missing >= TRUNCATION_MIN_FRACTION * declared:
        warnings.warn(
            MediaWarning(
                f"{path}: the {what} decodes to {decoded:.2f} s but the file declares {declared:.2f} s; "
                "it is probably truncated or damaged, and only the decoded part is used"
            ),
            stacklevel=3,
        )


def _packed_to_channels(frame: Any) -> Any:
    """A packed (interleaved) float32 audio frame as a ``[C, S]`` float32 numpy array.

    Reads the frame's single plane and de-interleaves it by the channel count, so any number of
    channels works (planar frames of more than 8 channels are where PyAV's ``to_ndarray`` reads
    past the end of the frame).
    """
    channels = len(frame.layout.channels)
    samples = frame.to_ndarray().reshape(-1)
    if samples.size != frame.samples * channels:
        raise ValueError(
            f"decoded audio frame holds {samples.size} values, expected {frame.samples} samples × {channels} channels"
        )
    return samples.reshape(frame.samples, channels).T


def _decode_audio(path: Path) -> tuple[Tensor, int, float]:
    """Decode the first audio track of ``path``: ``(Tensor[C, S] float32, rate, start_seconds)``.

    Every channel is kept, whatever the count and whether or not FFmpeg has a name for the
    layout. FFmpeg converts each frame to *packed* float32 at the track's own rate and layout,
    and the channels are separated here (see :func:`_packed_to_channels`).

    Warns :class:`MediaWarning` when the track decodes to less than the file declares for it
    (see :func:`_warn_if_short`).

    Raises:
        ValueError: no audio track, undecodable, no samples, a sample rate or channel count that
            changes mid-stream, or NaN / infinite samples; the message names the file.
    """
    with _open_container(path) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: has no audio track (expected a file with sound)")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        resampler: Optional[Any] = None  # av.AudioResampler
        chunks: list[np.ndarray] = []
        rate: Optional[int] = None
        channels: Optional[int] = None
        start: Optional[float] = None
        try:
            for frame in container.decode(stream):
                if rate is None:
                    rate = int(frame.sample_rate)
                    channels = len(frame.layout.channels)
                    start = float(frame.time) if frame.time is not None else 0.0
                    # packed float32, the input's own layout and rate
                    resampler = av.AudioResampler(format="flt", layout=frame.layout, rate=rate)
                elif int(frame.sample_rate) != rate:
                    raise ValueError(
                        f"{path}: the audio's sample rate changes mid-stream "
                        f"({rate} Hz, then {frame.sample_rate} Hz)"
                    )
                elif len(frame.layout.channels) != channels:
                    raise ValueError(
                        f"{path}: the audio's channel count changes mid-stream "
                        f"({channels}, then {len(frame.layout.channels)})"
                    )
                for out in resampler.resample(frame):
                    chunks.append(_packed_to_channels(out))
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append(_packed_to_channels(out))
        except av.FFmpegError as error:
            raise ValueError(f"{path}: the audio track cannot be decoded ({error})") from None
        except ValueError as error:
            if str(error).startswith(str(path)):
                raise
            raise ValueError(f"{path}: the audio track cannot be read ({error})") from None
    if rate is None or not chunks:
        raise ValueError(f"{path}: the audio track holds no samples")
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32, copy=False))
    if waveform.shape[1] == 0:
        raise ValueError(f"{path}: the audio track holds no samples")
    if not bool(torch.isfinite(waveform).all()):
        bad = int((~torch.isfinite(waveform)).sum())
        raise ValueError(
            f"{path}: the audio holds {bad} NaN or infinite sample(s); expected finite samples"
        )
    _warn_if_short(path, "audio track", waveform.shape[1] / rate, declared)
    return waveform, rate, float(start or 0.0)


def read_wav(path: Union[str, Path]) -> tuple[Tensor, int]:
    """Read an audio file (wav, or anything FFmpeg decodes) at its own sample rate.

    Returns:
        ``(waveform, sample_rate)``: ``Tensor[C, S]`` float32 in [-1, 1] for integer formats
        (every channel, whatever their number), and the file's rate in Hz.

    Warns:
        MediaWarning: the track decodes to less than the file declares (see
            :data:`TRUNCATION_MIN_SECONDS`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, no audio track, no samples, or NaN / infinite samples; the
            message names the file.
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


MIN_SEGMENT_SECONDS = 0.025
"""The shortest audio segment a frame may get: one 25 ms filterbank window (400 samples at
16 kHz), the least the audio models (AST, ImageBind) can turn into features."""


_SEGMENT_FLOOR = (
    f"each frame's audio segment must hold at least {MIN_SEGMENT_SECONDS * 1000:g} ms "
    f"({round(MIN_SEGMENT_SECONDS * DEFAULT_SAMPLE_RATE)} samples at {DEFAULT_SAMPLE_RATE // 1000} kHz, "
    "one filterbank window of the audio models)"
)


def _check_fps_floor(fps: float) -> None:
    """Refuse a frame rate whose spans are shorter than :data:`MIN_SEGMENT_SECONDS` (over 40)."""
    if fps * MIN_SEGMENT_SECONDS > 1 + 1e-9:
        raise ValueError(
            f"fps: {fps:g} frames per second would give each frame {1000 / fps:.3g} ms of audio; "
            f"{_SEGMENT_FLOOR}, so at most {1 / MIN_SEGMENT_SECONDS:g} frames per second"
        )


def _option_error(error: ValueError, path: Path) -> ValueError:
    """``error`` with ``path`` named: after its option prefix (``num_frames:`` / ``fps:``) when it
    has one, so the message still starts with the option, else in front."""
    message = str(error)
    for prefix in ("num_frames:", "fps:"):
        if message.startswith(prefix):
            return ValueError(f"{prefix} {path}:{message[len(prefix):]}")
    return ValueError(f"{path}: {message}")


def _check_sampling_options(num_frames: Optional[int], fps: Optional[float]) -> None:
    """At most one of them; ``num_frames`` a positive integer (an integral float will do),
    ``fps`` a positive finite number. Messages start with ``"num_frames:"`` / ``"fps:"``."""
    if num_frames is not None and fps is not None:
        raise ValueError("num_frames and fps: give at most one of them")
    if num_frames is not None:
        count = _whole_number(num_frames)
        if count is None or count <= 0:
            raise ValueError(f"num_frames: expected a positive integer, got {num_frames!r}")
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (float(fps) > 0) or math.isinf(fps):
            raise ValueError(f"fps: expected a positive number of frames per second, got {fps!r}")


def sample_times(duration: float, *, num_frames: Optional[int] = None, fps: Optional[float] = None) -> tuple[list[float], float]:
    """Which instants of a clip become its frames.

    The clip (``duration`` seconds of audio) is cut into T equal consecutive spans of ``L``
    seconds and span k is represented by the frame showing at ``k·L + (15/16)·L``:

    - default: one span per second (L = 1), over ``floor(duration)`` whole seconds: the frame
      at k + 15/16 s for k = 0 … T-1, which is the frame AVSBench's preprocessing picks;
    - ``fps=F``: spans of 1/F s, ``T = floor(duration · F)``;
    - ``num_frames=N``: N spans of ``duration / N`` s that cover the whole clip.

    Each span's audio must hold one filterbank window (:data:`MIN_SEGMENT_SECONDS`, 25 ms): so
    ``N ≤ floor(duration / 0.025)`` and ``F ≤ 40``.

    Returns:
        ``(times, span)``: the T sample instants in seconds from the start of the audio, and L.

    Raises:
        ValueError: both options given, a non-positive or non-integer option, spans shorter than
            25 ms, or a clip too short for one span. A message about ``num_frames`` starts with
            ``"num_frames:"``, one about ``fps`` with ``"fps:"``.
    """
    if not (duration > 0) or math.isinf(duration):
        raise ValueError(f"duration: expected a positive number of seconds, got {duration!r}")
    _check_sampling_options(num_frames, fps)
    if num_frames is not None:
        count = int(num_frames)
        most = int(math.floor(duration / MIN_SEGMENT_SECONDS + 1e-9))
        if count > most:
            raise ValueError(
                f"num_frames: {count} frames would cut {duration:.3f} s of audio into segments of "
                f"{duration / count * 1000:.3g} ms; {_SEGMENT_FLOOR}, so this audio allows at most {most} frames"
            )
        span = duration / count
    else:
        rate = 1.0 if fps is None else float(fps)
        _check_fps_floor(rate)
        span = 1.0 / rate
        count = int(math.floor(duration * rate + 1e-9))
        if count == 0:
            option = "the default one frame per second" if fps is None else f"fps={fps}"
            message = (
                f"the audio lasts {duration:.3f} s, too short for one frame at {option}; "
                "ask for num_frames instead"
            )
            raise ValueError(message if fps is None else f"fps: {message}")
    times = [k * span + SAMPLE_POINT * span for k in range(count)]
    return times, span


def _video_limits(path: Path) -> tuple[Optional[int], Optional[float]]:
    """What the first video track of ``path`` declares, read from metadata without decoding:
    ``(frame count, frame rate)``, each None when the file does not say.

    The frame count is the stream's own (mp4, mov) or else its declared duration × its average
    frame rate (Matroska / WebM, …).

    Raises:
        ValueError: no video track; the message names the file.
    """
    with _open_container(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: has no video track (expected a video file)")
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else None
        count: Optional[int] = int(stream.frames) if stream.frames else None
        if count is None and rate is not None:
            declared = _declared_seconds(container, stream)
            if declared is not None:
                count = max(1, int(round(declared * rate)))
    return count, rate


def _check_video_limits(path: Path, num_frames: Optional[int], fps: Optional[float]) -> None:
    """Check the sampling options' types, then refuse ``num_frames`` above the video's frame
    count, ``fps`` more than :data:`_FPS_SLACK` above its frame rate (as the file declares
    them) and ``fps`` above 40 (25 ms of audio per frame), all before anything is decoded.
    Messages start with the option."""
    try:
        _check_sampling_options(num_frames, fps)
    except ValueError as error:
        raise _option_error(error, path) from None
    count, rate = _video_limits(path)
    if num_frames is not None and count is not None and int(num_frames) > count:
        raise ValueError(
            f"num_frames: {path} holds {count} video frames, fewer than the {int(num_frames)} asked for "
            f"(there are no more distinct frames to give); ask for at most {count}"
        )
    if fps is not None and rate is not None and float(fps) > rate * _FPS_SLACK:
        raise ValueError(
            f"fps: {path} has {rate:.4g} frames per second, fewer than the {float(fps):g} asked for "
            f"(more would only repeat frames); ask for at most {rate:.4g}"
        )
    if fps is not None:  # the audio's limit that needs no audio: spans of 25 ms at least
        try:
            _check_fps_floor(float(fps))
        except ValueError as error:
            raise _option_error(error, path) from None


_FPS_SLACK = 1.02
"""``fps`` may exceed a video's declared average frame rate by this factor (2 %), for variable
frame rate videos and rates such as 30000/1001."""


def _display_orientation(frame: Any) -> Optional[tuple[int, int, int, int]]:
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

    Frames are turned upright as their display matrix says (a phone video's rotation tag,
    mirroring; see :func:`apply_orientation`), as players show them.

    The audio is the first audio track, cut to the T spans (``T · L`` seconds; with
    ``num_frames`` nothing is cut) and resampled to ``sample_rate``.

    Before anything is decoded, ``num_frames`` is checked against the video's frame count and
    ``fps`` against its frame rate, as the file declares them; after the audio is decoded, both
    against its length (see :func:`sample_times`). Only the T chosen frames are kept in memory,
    written into the output as they are found.

    Args:
        path: the video file.
        num_frames: N frames, one per each of N equal spans of the audio.
        fps: F frames per second of audio.
        sample_rate: the audio rate to return (default 16 kHz); ``None`` keeps the file's.

    Returns:
        a :class:`Clip` with ``frames (Tensor[T, 3, H, W]) uint8``, ``waveform (Tensor[C, S])
        float32`` and ``frame_times``.

    Warns:
        MediaWarning: a track decodes to less than the file declares (truncated file; see
            :data:`TRUNCATION_MIN_SECONDS`), or a frame's display matrix is not a right angle
            (the frame is used as stored).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, no video or no audio track, no frames, frames of different sizes,
            or audio too short; the message names the file. A message about ``num_frames`` or
            ``fps`` (too many frames for the video or its audio, …) starts with ``"num_frames:"``
            / ``"fps:"``.
    """

    path = Path(path)
    _check_video_limits(path, num_frames, fps)
    waveform, rate, audio_start = _decode_audio(path)
    duration = waveform.shape[1] / rate
    try:
        times, span = sample_times(duration, num_frames=num_frames, fps=fps)
    except ValueError as error:
        raise _option_error(error, path) from None
    targets = [audio_start + t for t in times]
    count = len(targets)

    frames: Optional[Tensor] = None  # Tensor[T, 3, H, W], allocated at the first chosen frame
    frame_times: list[float] = [0.0] * count
    last: list[Any] = [None, None]  # the last frame converted, and its RGB tensor
    bad_orientation: list[str] = []

    def keep(k: int, frame: Any, when: float) -> None:
        nonlocal frames
        if last[0] is not frame:
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            try:
                rgb = apply_orientation(rgb, _display_orientation(frame))
            except ValueError as error:
                if not bad_orientation:
                    bad_orientation.append(str(error))
            last[0], last[1] = frame, rgb
        rgb = last[1]
        if frames is None:
            frames = torch.empty((count, *rgb.shape), dtype=torch.uint8)
        elif tuple(rgb.shape) != tuple(frames.shape[1:]):
            raise ValueError(
                f"{path}: the sampled frames differ in size ({tuple(frames.shape[2:])} and "
                f"{tuple(rgb.shape[1:])} as (H, W)); expected one frame size throughout the video"
            )
        frames[k] = rgb
        frame_times[k] = when - audio_start

    with _open_container(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: has no video track (expected a video file)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frame_rate = float(stream.average_rate) if stream.average_rate else 25.0
        declared = _declared_seconds(container, stream)
        j = 0
        first_when: Optional[float] = None
        previous: Optional[tuple[Any, float]] = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                when = float(frame.time) if frame.time is not None else index / frame_rate
                if first_when is None:
                    first_when = when
                while j < count and when > targets[j] + _TIME_EPS:
                    keep(j, *(previous or (frame, when)))
                    j += 1
                if j == count:
                    break
                previous = (frame, when)
        except av.FFmpegError as error:
            raise ValueError(f"{path}: the video track cannot be decoded ({error})") from None
        if previous is None and j == 0:
            raise ValueError(f"{path}: the video track holds no frames")
        if j < count:  # the video ran out: the rest get its last frame
            assert previous is not None and first_when is not None
            _warn_if_short(path, "video track", previous[1] - first_when + 1.0 / frame_rate, declared)
            for k in range(j, count):
                keep(k, *previous)
    last[0] = last[1] = previous = None
    if bad_orientation:
        warnings.warn(
            MediaWarning(f"{path}: frames used as stored, not turned upright: {bad_orientation[0]}"),
            stacklevel=2,
        )
    assert frames is not None
    if num_frames is None:
        keep_samples = int(round(count * span * rate))
        waveform = waveform[:, : max(1, min(keep_samples, waveform.shape[1]))]
    waveform, rate = _to_rate(waveform, rate, sample_rate)
    return Clip(
        frames=frames,
        waveform=waveform.contiguous(),
        sample_rate=rate,
        source=str(path),
        frame_times=tuple(frame_times),
    )


