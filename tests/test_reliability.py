"""Hostile inputs (issue 15): many-channel audio, every image mode, frame counts beyond the video,
truncated files, rotation tags, NaN audio, and argument checks of the library; and the same cases
through the ``cmsf`` command (which option an error names, its exit status, what is on disk
after it), runs sharing an --out, an --out that cannot be written, Ctrl-C over an older output.

Every file is generated in the test (PyAV / PIL / numpy) into ``tmp_path``.
"""

from __future__ import annotations

import fractions
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from avsbench_fixture import decode_index, make_avsbench, tone, write_png, write_predictions, write_video, write_wav
from click.testing import CliRunner
from PIL import Image
from stand_ins import as_stages

from cmsf.cli import commands as cli
from cmsf.io import decoding, inputs, media
from cmsf.io.decoding import MIN_SEGMENT_SECONDS, apply_orientation, sample_times
from cmsf.io.files import LOCK_NAME
from cmsf.io.inputs import check_sample_rate
from cmsf.io.media import MediaWarning, read_audio, read_frame_folder, read_image, read_video, read_wav
from cmsf.models import loading
from cmsf.pipelines.per_frame import PIPELINE_STAGES, PIPELINES

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- many-channel audio


def _signal(channels: int, seconds: float, rate: int) -> np.ndarray:
    """``[C, S]`` float32: channel c is a sine at ``100·(c+1)`` Hz with amplitude ``0.5 - 0.02 c``,
    so that a swapped, dropped or shifted channel changes the values."""
    t = np.arange(int(round(seconds * rate))) / rate
    return np.stack(
        [(0.5 - 0.02 * c) * np.sin(2 * np.pi * 100 * (c + 1) * t) for c in range(channels)]
    ).astype(np.float32)


def _write_pcm(path: Path, signal: np.ndarray, rate: int, layout: str, codec: str, container: str) -> np.ndarray:
    """Write ``signal`` as PCM (``pcm_s16le`` / ``pcm_f32le``) in ``layout``; return the values a
    perfect reader gives back (the 16-bit quantisation applied)."""
    import av

    if codec == "pcm_s16le":
        stored = np.clip(np.round(signal * 32767), -32768, 32767).astype(np.int16)
        expected = stored.astype(np.float32) / 32768
        packed, fmt = stored, "s16"
    else:
        expected = signal
        packed, fmt = signal, "flt"
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(packed.T.reshape(1, -1)), format=fmt, layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, fractions.Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return expected


# (channels, layout): named layouts, and layouts FFmpeg has no name for ("N channels")
CHANNEL_CASES = [
    (1, "mono"), (2, "stereo"), (3, "2.1"), (3, "3 channels"), (5, "5 channels"), (6, "5.1"),
    (7, "6.1"), (8, "7.1"), (8, "8 channels"), (16, "16 channels"),
]  # fmt: skip


def _write_surround_video(path: Path, seconds: float, rate: int) -> None:
    """A 10 fps video with a lossy 7.1 (AAC) track of 200·(c+1) Hz sines at amplitude 0.5:
    decoded as planar float with 8 planes, the case that crashed."""
    import av

    signal = tone(seconds, rate, channels=8, freq=200.0)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 128, 16, "yuv420p"
        sound = out.add_stream("aac", rate=rate)
        sound.layout = "7.1"
        for i in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 128, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, 10)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        for start in range(0, signal.shape[1], 1024):
            chunk = np.ascontiguousarray(signal[:, start : start + 1024].T.reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="7.1")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, fractions.Fraction(1, rate)
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)


def test_any_channel_count_reads_back_exactly_in_a_subprocess(tmp_path):
    """An 8-channel track used to end the process with a segmentation fault; read every file in a
    child process so that a crash fails this test instead of killing pytest."""
    rate = 8_000
    cases = []
    for channels, layout in CHANNEL_CASES:
        for codec, container, ext in [("pcm_s16le", "wav", "wav"), ("pcm_f32le", "wav", "wav"), ("pcm_s16le", "matroska", "mkv")]:
            path = tmp_path / f"{channels}_{layout.replace(' ', '_')}_{codec}.{ext}"
            expected = _write_pcm(path, _signal(channels, 0.25, rate), rate, layout, codec, container)
            np.save(path.with_suffix(".expected.npy"), expected)
            cases.append(path)
    surround = tmp_path / "surround.mkv"
    _write_surround_video(surround, 2.0, 48_000)
    script = (
        "import sys, json, numpy as np\n"
        "from cmsf.io.media import read_audio, read_video, read_wav\n"
        "for p in json.loads(sys.argv[1]):\n"
        "    print('reading', p, flush=True)\n"
        "    w, r = read_wav(p)\n"
        "    np.save(p + '.got.npy', w.numpy())\n"
        "w, r = read_audio(sys.argv[2])\n"
        "clip = read_video(sys.argv[2])\n"
        "rms = w[:, 4000:-4000].pow(2).mean(1).sqrt()\n"
        "print(json.dumps([list(w.shape), r, list(clip.waveform.shape), clip.num_frames, rms.tolist()]))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, json.dumps([str(p) for p in cases]), str(surround)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert child.returncode == 0, f"exit {child.returncode}\n{child.stdout[-2000:]}\n{child.stderr[-2000:]}"
    for path in cases:
        expected = np.load(path.with_suffix(".expected.npy"))
        got = np.load(str(path) + ".got.npy")
        assert got.shape == expected.shape, path.name
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7, err_msg=path.name)
    # the lossy 7.1 track inside a video, via read_audio and read_video: 8 channels at 16 kHz,
    # each full-band channel carrying its sine (RMS 0.5/√2); channel 3 is the low-passed LFE
    shape, got_rate, clip_shape, frames, rms = json.loads(child.stdout.strip().splitlines()[-1])
    assert shape[0] == 8 and got_rate == 16_000 and clip_shape == [8, 32_000] and frames == 2
    for c in (0, 1, 2, 4, 5, 6, 7):
        assert rms[c] == pytest.approx(0.5 / math.sqrt(2), rel=0.05), (c, rms)


# ---------------------------------------------------------------------------- NaN / inf audio


def test_nan_samples_are_an_error_naming_the_audio_file(tmp_path):
    signal = _signal(2, 0.5, 16_000)
    signal[1, 100] = np.nan
    wav = tmp_path / "noisy.wav"
    _write_pcm(wav, signal, 16_000, "stereo", "pcm_f32le", "wav")
    with pytest.raises(ValueError, match=r"noisy\.wav: the audio holds 1 NaN or infinite"):
        read_wav(wav)
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "0.png")
    with pytest.raises(ValueError, match=r"noisy\.wav") as raised:
        read_frame_folder(folder, wav)
    assert "frames" not in str(raised.value)
    signal[1, 100] = np.inf
    _write_pcm(wav, signal, 16_000, "stereo", "pcm_f32le", "wav")
    with pytest.raises(ValueError, match=r"noisy\.wav.*NaN or infinite"):
        read_audio(wav)


# ---------------------------------------------------------------------------- frame counts


class _DecodeSpy:
    """Wraps an opened container and records every ``decode`` call's stream type."""

    def __init__(self, container, log: list[str]) -> None:
        self._container, self._log = container, log

    def __enter__(self):
        self._container.__enter__()
        return self

    def __exit__(self, *exc):
        return self._container.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._container, name)

    def decode(self, *streams, **kwargs):
        self._log.extend(getattr(s, "type", "?") for s in streams)
        self._log.extend(kwargs)
        return self._container.decode(*streams, **kwargs)


@pytest.fixture
def decode_log(monkeypatch) -> list[str]:
    log: list[str] = []
    real = decoding._open_container
    monkeypatch.setattr(decoding, "_open_container", lambda path: _DecodeSpy(real(path), log))
    return log


def test_more_frames_than_the_video_has_is_refused_before_decoding(tmp_path, decode_log):
    for name, kwargs in [("clip.mp4", {}), ("clip.mkv", {"acodec": "pcm_s16le", "audio_rate": 16_000})]:
        path = write_video(tmp_path / name, seconds=3, fps=10, **kwargs)
        decode_log.clear()
        start = time.perf_counter()
        with pytest.raises(ValueError, match=rf"^num_frames: .*{name} holds 30 video frames.*at most 30") as raised:
            read_video(path, num_frames=100_000)
        assert decode_log == [], "nothing may be decoded before the frame count is refused"
        assert time.perf_counter() - start < 2.0
        assert "100000" in str(raised.value)
        with pytest.raises(ValueError, match=rf"^fps: .*{name} has 10 frames per second.*at most 10"):
            read_video(path, fps=1000)
        assert decode_log == []
        # the limits themselves are fine (with PCM audio of exactly 3 s: each frame once)
        clip = read_video(path, num_frames=30)
        assert clip.num_frames == 30 and read_video(path, fps=10).num_frames == 30
        if name.endswith(".mkv"):
            assert [decode_index(f) for f in clip.frames] == list(range(30))


def test_more_frames_than_the_audio_allows_is_refused_before_decoding_video(tmp_path, decode_log):
    # 2 s of 60 fps video over 0.5 s of sound: the audio allows 20 frames of 25 ms
    path = write_video(
        tmp_path / "clip.mkv", seconds=2, fps=60, audio_seconds=0.5, acodec="pcm_s16le", audio_rate=16_000
    )
    with pytest.raises(ValueError, match=r"^num_frames: .*clip\.mkv.*25 ms.*at most 20 frames"):
        read_video(path, num_frames=21)
    assert "video" not in decode_log
    decode_log.clear()
    with pytest.raises(ValueError, match=r"^fps: .*clip\.mkv.*25 ms.*at most 40 frames per second"):
        read_video(path, fps=50)
    assert "video" not in decode_log
    assert read_video(path, num_frames=20).num_frames == 20


def test_sample_times_limits_and_prefixes():
    assert len(sample_times(60.0, num_frames=2400)[0]) == 2400
    with pytest.raises(ValueError, match=r"^num_frames: 2401 frames.*at most 2400 frames"):
        sample_times(60.0, num_frames=2401)
    assert len(sample_times(1.0, fps=40)[0]) == 40
    with pytest.raises(ValueError, match=r"^fps: 1000 frames per second.*at most 40"):
        sample_times(60.0, fps=1000)
    with pytest.raises(ValueError, match=r"^fps: the audio lasts 0\.100 s, too short"):
        sample_times(0.1, fps=2)
    for bad in (math.nan, 2.5, "3", True, 0, -1):
        with pytest.raises(ValueError, match=r"^num_frames: expected a positive integer"):
            sample_times(5.0, num_frames=bad)
    for bad in (math.nan, math.inf, "2", True, 0):
        with pytest.raises(ValueError, match=r"^fps: expected a positive number"):
            sample_times(5.0, fps=bad)
    assert len(sample_times(5.0, num_frames=np.int64(4))[0]) == 4
    assert MIN_SEGMENT_SECONDS * 16_000 == 400


# ---------------------------------------------------------------------------- truncated files


def test_truncated_video_warns_naming_file_and_durations(tmp_path):
    path = write_video(tmp_path / "whole.mkv", seconds=6, fps=10, acodec="pcm_s16le", audio_rate=16_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MediaWarning)  # the whole file: no warning
        assert read_video(path).num_frames == 6
    data = path.read_bytes()
    half = tmp_path / "half.mkv"
    half.write_bytes(data[: len(data) // 2])
    with pytest.warns(MediaWarning, match=r"half\.mkv: the audio track decodes to \d\.\d\d s but the file declares 6\.00 s"):
        waveform, rate = read_audio(half)
    assert waveform.shape[1] / rate < 4.0
    with pytest.warns(MediaWarning, match=r"half\.mkv") as caught:
        clip = read_video(half)
    assert clip.num_frames < 6
    assert all(issubclass(w.category, MediaWarning) for w in caught)


def test_warn_if_short_tolerance():
    with warnings.catch_warnings():
        warnings.simplefilter("error", MediaWarning)
        decoding._warn_if_short(Path("a.wav"), "audio track", 5.6, 6.0)  # 0.4 s short: under 0.5 s
        decoding._warn_if_short(Path("a.wav"), "audio track", 96.0, 100.0)  # 4 %: under 5 %
        decoding._warn_if_short(Path("a.wav"), "audio track", 1.0, None)  # nothing declared
    with pytest.warns(MediaWarning, match=r"a\.wav: the audio track decodes to 5\.40 s but the file declares 6\.00 s"):
        decoding._warn_if_short(Path("a.wav"), "audio track", 5.4, 6.0)


# ---------------------------------------------------------------------------- rotation


def _quadrants(height: int = 32, width: int = 64) -> np.ndarray:
    """``[H, W, 3]`` uint8, four grey levels: top-left 255, top-right 170, bottom-left 85,
    bottom-right 0 (robust to 4:2:0 coding)."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w], image[:h, w:], image[h:, :w] = 255, 170, 85
    return image


def _write_rotated(path: Path, degrees: int, hflip: bool = False, vflip: bool = False, seconds: int = 2) -> None:
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 32, "yuv420p"
        video.options = {"crf": "0", "preset": "ultrafast"}
        video.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        sound = out.add_stream("pcm_s16le", rate=16_000)
        sound.layout = "mono"
        for i in range(seconds * 10):
            frame = av.VideoFrame.from_ndarray(_quadrants(), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, 10)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        samples = np.zeros((1, seconds * 16_000), np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16_000, 0, fractions.Fraction(1, 16_000)
        for packet in sound.encode(frame):
            out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)


@pytest.mark.parametrize(
    "degrees, hflip, vflip",
    [(90, False, False), (-90, False, False), (180, False, False), (0, True, False), (0, False, True), (90, True, False), (-90, False, True)],
)
def test_rotation_tag_is_applied(tmp_path, degrees, hflip, vflip):
    import av

    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display matrix")
    path = tmp_path / "phone.mkv"
    _write_rotated(path, degrees, hflip, vflip)
    clip = read_video(path)
    # what PyAV's writer promises: `degrees` counter-clockwise, then the mirrors
    expected = torch.from_numpy(_quadrants()).permute(2, 0, 1)
    expected = torch.rot90(expected, k=(degrees // 90) % 4, dims=(1, 2))
    if hflip:
        expected = expected.flip(2)
    if vflip:
        expected = expected.flip(1)
    assert clip.frames.shape == (2, *expected.shape)
    for frame in clip.frames:
        assert (frame.float() - expected.float()).abs().mean() < 6


def test_rotation_matches_ffmpeg_transpose(tmp_path):
    """A phone's portrait tag (rotation 90 counter-clockwise, ``ffmpeg`` autorotates it with
    ``transpose=cclock``: L.R / l.r → R.r / L.l): the source's top-right corner ends top-left."""
    import av

    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display matrix")
    path = tmp_path / "portrait.mkv"
    _write_rotated(path, 90)
    frame = read_video(path).frames[0]
    assert frame.shape == (3, 64, 32)  # portrait
    corners = [int(frame[0, y, x]) for y, x in [(0, 0), (0, 31), (63, 0), (63, 31)]]
    # top-left = R (170), top-right = r (0), bottom-left = L (255), bottom-right = l (85)
    assert [round(c / 85) for c in corners] == [2, 0, 3, 1]


def _orient_brute_force(image: torch.Tensor, a: int, b: int, c: int, d: int) -> torch.Tensor:
    """Move every pixel where the matrix sends it: column x, row y → (a·x + c·y, b·x + d·y),
    then shift the picture to start at (0, 0)."""
    _, height, width = image.shape
    spots = {}
    for y in range(height):
        for x in range(width):
            spots[(a * x + c * y, b * x + d * y)] = image[:, y, x]
    min_x = min(k[0] for k in spots)
    min_y = min(k[1] for k in spots)
    new_w = max(k[0] for k in spots) - min_x + 1
    new_h = max(k[1] for k in spots) - min_y + 1
    out = torch.zeros((image.shape[0], new_h, new_w), dtype=image.dtype)
    for (x, y), value in spots.items():
        out[:, y - min_y, x - min_x] = value
    return out


@pytest.mark.parametrize(
    "signs",
    [(1, 0, 0, 1), (-1, 0, 0, 1), (1, 0, 0, -1), (-1, 0, 0, -1), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, -1, 0), (0, -1, -1, 0)],
)
def test_apply_orientation_against_brute_force(signs):
    image = torch.arange(2 * 3 * 5, dtype=torch.int64).reshape(2, 3, 5)
    assert torch.equal(apply_orientation(image, signs), _orient_brute_force(image, *signs))
    assert apply_orientation(image, None) is image


def test_rotation_not_a_right_angle_warns_and_keeps_frames(tmp_path):
    import av

    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display matrix")
    path = tmp_path / "tilted.mkv"
    _write_rotated(path, 45)
    with pytest.warns(MediaWarning, match=r"tilted\.mkv: frames used as stored.*not a multiple of 90"):
        clip = read_video(path)
    stored = torch.from_numpy(_quadrants()).permute(2, 0, 1).float()
    assert (clip.frames[0].float() - stored).abs().mean() < 6


# ---------------------------------------------------------------------------- image modes


def _png(width: int, height: int, bit_depth: int, colour_type: int, rows: np.ndarray) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit colour): ``rows`` ``[H, W·channels]`` of
    big-endian samples."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


def _grey3(grey: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.repeat(grey.astype(np.uint8)[None], 3, axis=0))


RNG = np.random.default_rng(15)
RGB = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
GREY = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
RAMP16 = (np.arange(256 * 3, dtype=np.int64) * 65535 // (256 * 3 - 1)).reshape(3, 256).astype(np.uint16)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(RAMP16).save(path)
    assert _mode(path) == "I;16"
    got = read_image(path)
    assert torch.equal(got, _grey3(RAMP16 >> 8))
    assert len(torch.unique(got)) == 256  # a 0…65535 ramp uses every 8-bit level (was {0, 255})


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16B"])
def test_every_pil_mode_becomes_the_right_rgb(tmp_path, mode):
    if mode == "1":
        bits = GREY > 127
        image, expected = Image.fromarray(bits), _grey3(bits * 255)
    elif mode == "L":
        image, expected = Image.fromarray(GREY, "L"), _grey3(GREY)
    elif mode == "LA":
        image, expected = Image.fromarray(np.stack([GREY, ALPHA], 2), "LA"), _grey3(GREY)  # alpha dropped
    elif mode == "P":
        palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
        index = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
        image = Image.frombytes("P", (7, 6), index.tobytes())
        image.putpalette(palette.reshape(-1).tolist())
        expected = torch.from_numpy(palette[index]).permute(2, 0, 1)
    elif mode == "RGB":
        image, expected = Image.fromarray(RGB, "RGB"), torch.from_numpy(RGB).permute(2, 0, 1)
    elif mode == "RGBA":
        image = Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA")
        expected = torch.from_numpy(RGB).permute(2, 0, 1)  # alpha dropped, not composited
    elif mode == "CMYK":
        cmyk = RNG.integers(0, 256, (6, 7, 4), dtype=np.uint8)
        image = Image.fromarray(cmyk, "CMYK")
        c = cmyk.astype(np.int64)
        expected = torch.from_numpy(np.round((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8)).permute(2, 0, 1)
    elif mode == "I":
        values = RNG.integers(0, 65536, (6, 7)).astype(np.int32)
        image, expected = Image.fromarray(values, "I"), _grey3(values >> 8)
    else:  # I;16B: big-endian 16-bit grey
        values = RNG.integers(0, 65536, (6, 7)).astype(">u2")
        image = Image.frombytes("I;16B", (7, 6), values.tobytes())
        expected = _grey3(values.astype(np.int64) >> 8)
    path = tmp_path / f"image_{mode.replace(';', '_')}.{'tif' if mode in ('I', 'I;16B', 'CMYK') else 'png'}"
    image.save(path)
    assert _mode(path) == mode or (mode == "I;16B" and _mode(path).startswith("I;16"))
    got = read_image(path)
    assert got.dtype == torch.uint8 and got.shape == (3, 6, 7)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("colour_type, channels", [(2, 3), (6, 4), (4, 2), (0, 1)], ids=["RGB16", "RGBA16", "LA16", "L16"])
def test_sixteen_bit_png_of_every_colour_type(tmp_path, colour_type, channels):
    samples = RNG.integers(0, 65536, (6, 7, channels)).astype(">u2")
    path = tmp_path / "deep.png"
    path.write_bytes(_png(7, 6, 16, colour_type, samples.reshape(6, 7 * channels)))
    high = samples.astype(np.int64) >> 8
    if channels >= 3:
        expected = torch.from_numpy(high[..., :3].astype(np.uint8)).permute(2, 0, 1)
    else:
        expected = _grey3(high[..., 0])
    assert torch.equal(read_image(path), expected)


def test_jpeg_grey_and_cmyk(tmp_path):
    grey = tmp_path / "grey.jpg"
    Image.fromarray(GREY, "L").save(grey, quality=95)
    got = read_image(grey)
    assert torch.equal(got[0], got[1]) and torch.equal(got[1], got[2])
    assert (got[0].float() - torch.from_numpy(GREY).float()).abs().mean() < 12
    cmyk = tmp_path / "print.jpg"
    Image.fromarray(np.zeros((6, 7, 4), np.uint8), "CMYK").save(cmyk, quality=95)
    assert int(read_image(cmyk).min()) >= 250  # no ink: white


def test_unsupported_modes_are_refused_naming_file_and_mode(tmp_path):
    floats = tmp_path / "floats.tif"
    Image.fromarray(RNG.random((6, 7)).astype(np.float32), "F").save(floats)
    with pytest.raises(ValueError, match=r"floats\.tif: an image of PIL mode F"):
        read_image(floats)
    wide = tmp_path / "wide.tif"
    Image.fromarray(np.full((6, 7), 70_000, np.int32), "I").save(wide)
    with pytest.raises(ValueError, match=r"wide\.tif: a 32-bit integer image \(PIL mode I\) with values 70000"):
        read_image(wide)
    negative = tmp_path / "negative.tif"
    Image.fromarray(np.full((6, 7), -1, np.int32), "I").save(negative)
    with pytest.raises(ValueError, match=r"negative\.tif.*outside 0…65535"):
        read_image(negative)


# ---------------------------------------------------------------------------- library arguments


@pytest.mark.parametrize("rate", [np.int64(16_000), np.int32(16_000), np.uint16(16_000), 16_000.0, np.float32(16_000), np.float64(16_000)])
def test_sample_rate_accepts_every_integral_number(rate):
    got = check_sample_rate(rate)
    assert got == 16_000 and type(got) is int


@pytest.mark.parametrize("rate", [math.nan, math.inf, -math.inf, np.float64("nan"), 16_000.5, "16000", True, None, 0, -8_000, np.int64(0)])
def test_sample_rate_refusals_name_the_argument(rate):
    with pytest.raises(ValueError, match=r"^sample_rate: expected a positive integer in Hz"):
        check_sample_rate(rate)
    with pytest.raises(ValueError, match=r"^target_rate: expected a positive integer"):
        inputs.resample(torch.zeros(1, 10), 16_000, rate)


@pytest.mark.parametrize("fn_name", ["miou", "fscore"])
def test_metrics_refuse_nan_targets_and_empty_frames(fn_name):
    from cmsf import metrics

    fn = getattr(metrics, fn_name)
    pred = torch.ones(2, 3, 3)
    target = torch.ones(2, 3, 3)
    target[1, 1, 1] = math.nan
    with pytest.raises(ValueError, match=r"^target: contains NaN"):
        fn(pred, target)
    for shape in [(1, 0, 4), (1, 4, 0), (1, 0, 0)]:
        with pytest.raises(ValueError, match=r"^pred: expected frames of at least one pixel"):
            fn(torch.zeros(shape), torch.zeros(shape))
    # the checks refuse only what is wrong: an integer or bool target is never NaN
    assert fn(pred, torch.ones(2, 3, 3, dtype=torch.int64)) == pytest.approx(1.0, abs=1e-6)


def test_wrong_size_prediction_mentions_resize_pred(tmp_path):
    from cmsf.io import avsbench
    from cmsf.io.avsbench import VideoEntry

    entry = VideoEntry("v", "test")
    avsbench.write_pred_masks(tmp_path, "ms3", entry, torch.zeros(5, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"v_0\.png.*--resize-pred.*resize=True"):
        avsbench.read_pred_masks(tmp_path, "ms3", entry, (8, 8))


def test_frame_folder_with_too_little_audio_per_frame_names_both(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / f"{i}.png")
    short = write_wav(tmp_path / "short.wav", tone(0.1, 16_000))  # 4 segments of 25 ms at most
    with pytest.raises(ValueError, match=r"short\.wav: 0\.100 s of audio.*frames.*5 frames.*at most 4 frames"):
        read_frame_folder(folder, short)
    enough = write_wav(tmp_path / "enough.wav", tone(0.125, 16_000))
    assert read_frame_folder(folder, enough).num_frames == 5


# ---------------------------------------------------------------------------- the command line


def _cli(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


class _Result:
    def __init__(self, masks: torch.Tensor) -> None:
        self.masks = masks

    def to_json(self) -> dict:
        return {"pixels": [int(m.sum()) for m in self.masks]}


@pytest.fixture
def stand_in(monkeypatch):
    """A stand-in owod-bind (the left half of every frame) and load_models; ``stand_in.calls``
    counts pipeline runs, ``stand_in.during`` runs inside the first one."""

    class StandIn:
        calls: list[int] = []
        during = None

        def __call__(self, frames, waveform, sample_rate, models, *, settings=None, **keyword_settings):
            self.calls.append(len(self.calls))
            if self.during is not None and len(self.calls) == 1:
                self.during()
            masks = torch.zeros(frames.shape[0], *frames.shape[-2:], dtype=torch.bool)
            masks[..., : frames.shape[-1] // 2] = True
            return _Result(masks)

    pipeline = StandIn()
    pipeline.calls = []
    monkeypatch.setitem(PIPELINES, "owod-bind", pipeline)  # cmsf segment
    monkeypatch.setitem(PIPELINE_STAGES, "owod-bind", as_stages(pipeline))  # cmsf eval's runner
    monkeypatch.setattr(loading, "load_models", lambda *args, load=loading.load_models, **kwargs: load("tiny", device="cpu"))  # never loaded
    return pipeline


@pytest.fixture(scope="module")
def clip_mkv(tmp_path_factory) -> Path:
    """3 s of 10 fps video with 3 s of 16 kHz PCM audio."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mkv", seconds=3, fps=10, acodec="pcm_s16le", audio_rate=16_000)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_avsbench(tmp_path_factory.mktemp("avsbench"))


@pytest.mark.parametrize(
    "option, value, limit",
    [("--num-frames", "100000", "at most 30"), ("--fps", "1000", "at most 10"), ("--fps", "10.5", "at most 10")],
)
def test_frame_counts_beyond_the_video_are_usage_errors_naming_the_option(clip_mkv, tmp_path, stand_in, decode_log, option, value, limit):
    result = _cli("segment", clip_mkv, "-p", "owod-bind", option, value, "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}" in result.output and limit in result.output and value in result.output
    assert "clip.mkv" in result.output and "Traceback" not in result.output
    assert decode_log == [] and stand_in.calls == []  # refused before anything is decoded
    assert not (tmp_path / "o").exists()


def test_more_than_40_fps_is_refused_before_the_audio_is_decoded(tmp_path, stand_in, decode_log):
    fast = write_video(tmp_path / "fast.mkv", seconds=1, fps=60, acodec="pcm_s16le", audio_rate=16_000)
    result = _cli("segment", fast, "-p", "owod-bind", "--fps", "50", "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert "Invalid value for --fps" in result.output and "25 ms" in result.output and "at most 40" in result.output
    assert decode_log == []
    with pytest.raises(ValueError, match=r"^fps: .*fast\.mkv: 50 frames per second.*at most 40"):
        read_video(fast, fps=50)
    assert decode_log == []


@pytest.mark.parametrize("source", ["/nonexistent", "./missing", "../missing/dir", "~/missing-cmsf-model", "a/b/c"])
def test_a_model_path_that_does_not_exist_is_a_usage_error_before_the_video_is_read(clip_mkv, mini, tmp_path, monkeypatch, source):
    reads = []
    monkeypatch.setattr(media, "load_clip", lambda *args, **kwargs: reads.append(args))
    result = _cli("segment", clip_mkv, "-p", "sam-bind", "--preset", "tiny", "--model", f"sam={source}", "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert f"Invalid value for --model: sam={source}: the local path {source!r} does not exist" in result.output
    assert "repo" not in result.output.lower() and "clip.mkv" not in result.output
    assert reads == [] and not (tmp_path / "o").exists()
    result = _cli("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--model", f"imagebind={source}", "--out", tmp_path / "e")
    assert result.exit_code == 2 and f"imagebind={source}: the local path" in result.output
    assert not (tmp_path / "e").exists()
    with pytest.raises(ValueError, match=rf"^owlv2: the local path '{source}' does not exist"):
        loading.load_models("tiny", owlv2=source)


def test_model_sources_that_are_hub_ids_or_existing_paths_pass_the_path_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "sam").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for source in ["facebook/sam-vit-base", "sam-vit-base", "models/sam", "./models/sam", str(tmp_path / "models"), "org/not-cached"]:
        assert loading.check_local_source("sam", source) == source
    assert loading.check_local_source("sam", "~") == str(tmp_path / "home")  # ~ expanded for the loader
    models = loading.load_models("tiny", sam="models/sam", owlv2="~")
    # recorded absolute: a run.json or evidence does not depend on the folder the run started in
    sam = os.path.realpath(tmp_path / "models" / "sam")
    assert models.source("sam") == repr(sam) and models.source("owlv2") == repr(os.path.realpath(tmp_path / "home"))
    assert loading.load_models("tiny", sam=sam).source("sam") == models.source("sam")  # one source, two spellings


def test_nan_in_the_audio_of_a_frame_folder_names_the_wav(tmp_path, stand_in):
    folder = tmp_path / "frames"
    for k in range(2):
        write_png(folder / f"f_{k}.png", np.zeros((8, 8, 3), np.uint8))
    signal_ = _signal(1, 2.0, 16_000)
    signal_[0, 500] = np.nan
    wav = tmp_path / "noisy.wav"
    _write_pcm(wav, signal_, 16_000, "mono", "pcm_f32le", "wav")
    result = _cli("segment", folder, "--audio", wav, "-p", "owod-bind", "--out", tmp_path / "o")
    assert result.exit_code == 1, result.output
    assert f"Error: {wav}: the audio holds 1 NaN or infinite" in result.output
    assert str(folder) not in result.output and stand_in.calls == []


def test_a_wrong_size_prediction_mentions_resize_pred_on_the_command_line(mini, tmp_path):
    for video in mini.split("ms3", "test"):
        write_predictions(tmp_path / "p", video, video.gt[:, :100, :100])
    result = _cli("eval", "--root", mini.root, "--subset", "ms3", "--pred-dir", tmp_path / "p", "--out", tmp_path / "o")
    assert result.exit_code == 1, result.output
    assert "ms3_a_0.png" in result.output and "--resize-pred" in result.output and "Traceback" not in result.output


def test_media_warnings_are_one_line_on_stderr(tmp_path, stand_in):
    whole = write_video(tmp_path / "whole.mkv", seconds=6, fps=10, acodec="pcm_s16le", audio_rate=16_000)
    half = tmp_path / "half.mkv"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = _cli("segment", half, "-p", "owod-bind", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "half.mkv" in line and "declares" in line]
    assert lines and all(line.startswith(f"Warning: {half}: the ") for line in lines)
    assert "MediaWarning" not in result.stderr and "warnings.warn" not in result.stderr
    assert "Warning" not in result.stdout


def test_an_out_that_cannot_be_written_is_refused_before_anything_runs(clip_mkv, mini, tmp_path, stand_in, monkeypatch):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    reads = []
    real_load_clip = media.load_clip
    monkeypatch.setattr(media, "load_clip", lambda *args, **kwargs: reads.append(args) or real_load_clip(*args, **kwargs))
    result = _cli("segment", clip_mkv, "-p", "owod-bind", "--out", blocker / "out")
    assert result.exit_code == 2, result.output
    assert "Invalid value for --out" in result.output and "file.txt/out: cannot be created" in result.output
    result = _cli("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--out", blocker / "out")
    assert result.exit_code == 2 and "Invalid value for --out" in result.output

    real_open = os.open

    def read_only(path, flags, *args):  # as a read-only folder answers (root ignores chmod)
        if flags & os.O_CREAT and str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    (tmp_path / "ro").mkdir()
    for command in (["segment", clip_mkv], ["eval", "--root", mini.root, "--subset", "ms3"]):
        result = _cli(*command, "-p", "owod-bind", "--out", tmp_path / "ro")
        assert result.exit_code == 2, result.output
        assert f"Invalid value for --out: {tmp_path / 'ro'}: cannot write files here (Permission denied)" in result.output
        assert "cmsf-tmp" not in result.output and "Traceback" not in result.output
    assert reads == [] and stand_in.calls == [] and list((tmp_path / "ro").iterdir()) == []


def test_two_evals_sharing_an_out_cannot_mix(mini, tmp_path, stand_in):
    """A second eval into the folder while the first runs (neither has predictions yet, and with
    other settings) is refused naming the folder and the first run; the first is unaffected."""
    out = tmp_path / "run"
    second = []
    command = ["eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind"]
    stand_in.during = lambda: second.append(_cli(*command, "--set", "bind_threshold=0.5", "--out", out))
    result = _cli(*command, "--out", out)
    assert result.exit_code == 0, result.output
    refused = second[0]
    assert refused.exit_code == 1, refused.output
    assert f"Error: {out} is in use by another cmsf run (pid {os.getpid()} on host" in refused.output
    assert "cmsf" in refused.output and LOCK_NAME in refused.output
    videos = len(mini.split("ms3", "test"))
    assert len(stand_in.calls) == videos  # the first run's videos; the second ran none
    assert json.loads((out / "run.json").read_text())["settings"]["bind_threshold"] == 0.7
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["bind_threshold"] == 0.7 and summary["computed"] == videos
    assert not (out / LOCK_NAME).exists()
    # afterwards the other settings are refused as a resume (the folder holds the first run's masks)
    result = _cli(*command, "--set", "bind_threshold=0.5", "--out", out)
    assert result.exit_code == 1 and "another run" in result.output


def test_two_segments_sharing_an_out_cannot_mix(clip_mkv, tmp_path, stand_in):
    out = tmp_path / "o"
    second = []
    stand_in.during = lambda: second.append(_cli("segment", clip_mkv, "-p", "owod-bind", "--num-frames", "2", "--out", out))
    result = _cli("segment", clip_mkv, "-p", "owod-bind", "--out", out)
    assert result.exit_code == 0, result.output
    assert second[0].exit_code == 1 and f"{out} is in use by another cmsf run" in second[0].output
    evidence = json.loads((out / "evidence.json").read_text())
    assert len(evidence["frames"]) == 3 and sorted(p.name for p in out.glob("mask_*.png")) == [f"mask_{t:04d}.png" for t in range(3)]
    assert not (out / LOCK_NAME).exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ctrl_c_during_segment_over_an_older_output_leaves_the_old_set(clip_mkv, tmp_path, stand_in, monkeypatch):
    """A real SIGINT (sent to this process by the kernel, as Ctrl-C is) while ``cmsf segment``
    writes its second new mask over an older output with the user's own file in it. (In-process:
    a child process would spend seconds importing torch for the same signal path.)"""
    out = tmp_path / "o"
    assert _cli("segment", clip_mkv, "-p", "owod-bind", "--num-frames", "5", "--out", out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    real_encode, written = media.encode_png, []

    def interrupted(array):
        written.append(1)
        if len(written) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the signal's handler raises KeyboardInterrupt here
        return real_encode(array)

    monkeypatch.setattr(media, "encode_png", interrupted)
    result = _cli("segment", clip_mkv, "-p", "owod-bind", "--num-frames", "3", "--set", "bind_threshold=0.5", "--out", out)
    assert result.exit_code == 1 and "Aborted!" in result.output and len(written) == 3
    assert _snapshot(out) == before  # the old masks, overlays, evidence and the user's file
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no staging, no lock


def test_deep_frames_surround_audio_and_a_phone_video_through_segment(tmp_path, stand_in):
    """The library's fixes reach the command: 16-bit grey frames scaled (not clipped) to 8 bits,
    a 5.1 wav read, a rotation tag applied to the frames and the masks."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(2):
        Image.fromarray(RAMP16).save(folder / f"{k}.png")
    wav = tmp_path / "surround.wav"
    _write_pcm(wav, _signal(6, 2.0, 16_000), 16_000, "5.1", "pcm_s16le", "wav")
    result = _cli("segment", folder, "--audio", wav, "-p", "owod-bind", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    overlay = np.asarray(Image.open(tmp_path / "o" / "overlay_0001.png"))
    expected = np.repeat((RAMP16[:, 128:] >> 8).astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_array_equal(overlay[:, 128:], expected)  # outside the stand-in's mask: the frame
    phone = tmp_path / "phone.mp4"
    _write_rotated(phone, 90)
    result = _cli("segment", phone, "-p", "owod-bind", "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p" / "evidence.json").read_text())["frame_size"] == [64, 32]
    with Image.open(tmp_path / "p" / "mask_0000.png") as mask:
        assert mask.size == (32, 64)  # (W, H): upright
