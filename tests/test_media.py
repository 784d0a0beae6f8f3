"""Reading video files, frame folders and audio from disk; writing masks; atomic writes."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from avsbench_fixture import decode_index, encode_index, tone, write_png, write_video, write_wav

from cmsf.io import files as cmsf_io
from cmsf.io.decoding import sample_times
from cmsf.io.inputs import split_segments
from cmsf.io.media import (
    Clip,
    load_clip,
    natural_sort_key,
    overlay_mask,
    read_audio,
    read_frame_folder,
    read_mask,
    read_video,
    read_wav,
    write_png_image,
    write_png_mask,
)


def avsbench_frame_index(second: int, fps: float) -> int:
    """The frame AVSBench's preprocess_s4.py keeps for second ``second`` (0-based): of 16 frames
    sampled per second it keeps the 16th, ``int(l·R + 15/16·R)`` with ``R = round(fps)``."""
    interval = int(round(fps))
    return int(second * interval + (15 * 1.0 / 16) * interval)


# ---------------------------------------------------------------------------- video files


def test_mp4_default_sampling_frames_audio_and_times(tmp_path):
    path = write_video(tmp_path / "clip.mp4", seconds=5, fps=10, audio_rate=22_050)
    clip = read_video(path)
    assert isinstance(clip, Clip)
    assert clip.frames.shape == (5, 3, 16, 128) and clip.frames.dtype == torch.uint8
    # second k (1-based) -> the last frame at or before k - 1/16 s: frames 9, 19, 29, 39, 49
    assert [decode_index(f) for f in clip.frames] == [9, 19, 29, 39, 49]
    assert clip.frame_times == pytest.approx((0.9, 1.9, 2.9, 3.9, 4.9))
    assert clip.sample_rate == 16_000
    assert clip.waveform.dtype == torch.float32 and clip.waveform.shape == (1, 80_000)
    assert clip.source == str(path)
    # the sound survived: a 0.5-amplitude sine has RMS 0.5/sqrt(2)
    rms = float(clip.waveform[:, 8000:-8000].pow(2).mean().sqrt())
    assert rms == pytest.approx(0.5 / math.sqrt(2), rel=0.05)
    # segment t of the audio pairs with frame t
    assert [s.shape[-1] for s in split_segments(clip.waveform, clip.num_frames)] == [16_000] * 5


@pytest.mark.parametrize("fps", [24, 25, 30])
def test_default_sampling_matches_avsbench_preprocessing(tmp_path, fps):
    path = write_video(tmp_path / f"clip{fps}.mkv", seconds=5, fps=fps, acodec="pcm_s16le", audio_rate=16_000)
    clip = read_video(path)
    assert [decode_index(f) for f in clip.frames] == [avsbench_frame_index(k, fps) for k in range(5)]


def test_audio_longer_than_whole_seconds_is_cut_to_the_frame_spans(tmp_path):
    path = write_video(tmp_path / "clip.mkv", seconds=3.7, fps=10, acodec="pcm_s16le", audio_rate=16_000)
    clip = read_video(path)
    assert clip.num_frames == 3
    assert clip.waveform.shape == (1, 48_000)  # 3 whole seconds, not 3.7
    assert [decode_index(f) for f in clip.frames] == [9, 19, 29]


def test_num_frames_option_spans_the_whole_audio(tmp_path):
    path = write_video(tmp_path / "clip.mkv", seconds=4, fps=10, acodec="pcm_s16le", audio_rate=16_000)
    clip = read_video(path, num_frames=8)
    # 8 spans of 0.5 s; instants 0.46875 + 0.5 k -> frames 4, 9, 14, ...
    assert [decode_index(f) for f in clip.frames] == [4 + 5 * k for k in range(8)]
    assert clip.waveform.shape == (1, 64_000)


def test_fps_option(tmp_path):
    path = write_video(tmp_path / "clip.mkv", seconds=3, fps=10, acodec="pcm_s16le", audio_rate=16_000)
    clip = read_video(path, fps=2)
    assert clip.num_frames == 6
    assert [decode_index(f) for f in clip.frames] == [4, 9, 14, 19, 24, 29]


def test_video_shorter_than_audio_repeats_the_last_frame(tmp_path):
    path = write_video(tmp_path / "clip.mkv", seconds=2, audio_seconds=4, fps=10, acodec="pcm_s16le", audio_rate=16_000)
    clip = read_video(path)
    assert [decode_index(f) for f in clip.frames] == [9, 19, 19, 19]


def test_stereo_and_native_rate(tmp_path):
    path = write_video(tmp_path / "clip.mkv", seconds=2, fps=10, acodec="pcm_s16le", audio_rate=8_000, channels=2)
    clip = read_video(path, sample_rate=None)
    assert clip.sample_rate == 8_000 and clip.waveform.shape == (2, 16_000)
    clip16 = read_video(path)
    assert clip16.sample_rate == 16_000 and clip16.waveform.shape == (2, 32_000)


@pytest.mark.parametrize(
    "codecs", [("libvpx-vp9", "libopus", "webm"), ("mpeg4", "aac", "mp4")], ids=["webm", "mpeg4"]
)
def test_other_containers(tmp_path, codecs):
    vcodec, acodec, ext = codecs
    path = write_video(tmp_path / f"clip.{ext}", seconds=2, fps=10, vcodec=vcodec, acodec=acodec, audio_rate=48_000)
    clip = read_video(path)
    assert clip.frames.shape == (2, 3, 16, 128)
    assert [decode_index(f) for f in clip.frames] == [9, 19]
    assert clip.waveform.shape == (1, 32_000)


def test_video_without_audio_is_a_clear_error(tmp_path):
    path = write_video(tmp_path / "silent.mp4", audio=False)
    with pytest.raises(ValueError, match=r"silent\.mp4.*no audio track"):
        read_video(path)


def test_unreadable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"this is not a video" * 100)
    with pytest.raises(ValueError, match=r"broken\.mp4.*not a readable"):
        read_video(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4"):
        read_video(tmp_path / "nope.mp4")


def test_audio_file_is_not_a_video(tmp_path):
    path = write_wav(tmp_path / "sound.wav", tone(2.0, 16_000))
    with pytest.raises(ValueError, match=r"sound\.wav.*no video track"):
        read_video(path)


def test_video_with_no_frames(tmp_path):
    path = write_video(tmp_path / "empty.mkv", frames=[], audio_seconds=2, acodec="pcm_s16le", audio_rate=16_000)
    with pytest.raises(ValueError, match=r"empty\.mkv.*(no frames|no video track)"):
        read_video(path)


def test_too_short_for_one_second(tmp_path):
    path = write_video(tmp_path / "short.mkv", seconds=0.5, fps=10, acodec="pcm_s16le", audio_rate=16_000)
    with pytest.raises(ValueError, match=r"short\.mkv.*too short"):
        read_video(path)
    assert read_video(path, num_frames=2).num_frames == 2


def test_sample_times():
    times, span = sample_times(5.3)
    assert span == 1.0 and times == pytest.approx([0.9375 + k for k in range(5)])
    times, span = sample_times(2.0, num_frames=4)
    assert span == 0.5 and times == pytest.approx([0.46875 + 0.5 * k for k in range(4)])
    times, span = sample_times(1.0, fps=4)
    assert len(times) == 4 and span == 0.25
    with pytest.raises(ValueError, match="at most one"):
        sample_times(5.0, num_frames=2, fps=1)
    with pytest.raises(ValueError, match="num_frames"):
        sample_times(5.0, num_frames=0)
    with pytest.raises(ValueError, match="fps"):
        sample_times(5.0, fps=-1)


# ---------------------------------------------------------------------------- frame folders


def test_frame_folder_natural_order_and_audio(tmp_path):
    folder = tmp_path / "frames"
    for index in [10, 2, 1, 3]:
        write_png(folder / f"x_{index}.png", np.repeat(encode_index(index), 1, axis=0))
    (folder / "notes.txt").write_text("ignored")
    audio = write_wav(tmp_path / "a.wav", tone(4.0, 8_000), rate=8_000)
    clip = read_frame_folder(folder, audio)
    assert [decode_index(f) for f in clip.frames] == [1, 2, 3, 10]
    assert clip.sample_rate == 16_000 and clip.waveform.shape == (1, 64_000)
    assert clip.frame_times is None


def test_natural_sort_key():
    names = ["x_10.png", "x_2.png", "x_1.png", "X_3.png", "y.mp4_1.png"]
    assert sorted(names, key=natural_sort_key) == ["x_1.png", "x_2.png", "X_3.png", "x_10.png", "y.mp4_1.png"]


def test_frame_folder_different_sizes(tmp_path):
    folder = tmp_path / "frames"
    write_png(folder / "f_1.png", np.zeros((8, 8, 3), np.uint8))
    write_png(folder / "f_2.png", np.zeros((8, 10, 3), np.uint8))
    audio = write_wav(tmp_path / "a.wav", tone(1.0, 16_000))
    with pytest.raises(ValueError, match=r"f_2\.png.*size"):
        read_frame_folder(folder, audio)


def test_frame_folder_without_frames(tmp_path):
    (tmp_path / "frames").mkdir()
    with pytest.raises(ValueError, match=r"frames.*no frames"):
        read_frame_folder(tmp_path / "frames", tmp_path / "a.wav")


def test_load_clip_dispatch(tmp_path):
    folder = tmp_path / "frames"
    write_png(folder / "f_1.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="needs its audio"):
        load_clip(folder)
    write_wav(folder / "sound.wav", tone(1.0, 16_000))  # a single wav inside is found
    assert load_clip(folder).num_frames == 1
    with pytest.raises(ValueError, match="frame folder"):
        load_clip(folder, num_frames=3)
    video = write_video(tmp_path / "v.mkv", seconds=2, acodec="pcm_s16le", audio_rate=16_000)
    with pytest.raises(ValueError, match="brings its own track"):
        load_clip(video, audio=folder / "sound.wav")
    assert load_clip(video).num_frames == 2
    with pytest.raises(FileNotFoundError):
        load_clip(tmp_path / "missing")


# ---------------------------------------------------------------------------- audio


def test_read_wav_native_rate_and_values(tmp_path):
    signal = tone(0.5, 8_000, channels=2)
    path = write_wav(tmp_path / "s.wav", signal, rate=8_000)
    waveform, rate = read_wav(path)
    assert rate == 8_000 and waveform.shape == (2, 4_000) and waveform.dtype == torch.float32
    assert torch.allclose(waveform, torch.from_numpy(signal), atol=1 / 16_000)
    resampled, rate16 = read_audio(path)
    assert rate16 == 16_000 and resampled.shape == (2, 8_000)


def test_read_wav_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none\.wav"):
        read_wav(tmp_path / "none.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(ValueError, match=r"bad\.wav"):
        read_wav(bad)
    silent = write_video(tmp_path / "silent.mp4", audio=False)
    with pytest.raises(ValueError, match=r"silent\.mp4.*no audio track"):
        read_wav(silent)


# ---------------------------------------------------------------------------- masks and overlays


def test_mask_png_round_trip(tmp_path):
    mask = torch.zeros(6, 9, dtype=torch.bool)
    mask[1:4, 2:7] = True
    path = write_png_mask(tmp_path / "sub" / "m.png", mask)
    from PIL import Image

    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (9, 6)
        assert set(np.unique(np.asarray(image)).tolist()) == {0, 255}
    assert torch.equal(read_mask(path), mask)
    assert list((tmp_path / "sub").iterdir()) == [path]  # no temporary left over


@pytest.mark.parametrize("mode", ["L", "P", "1", "RGB", "RGBA"])
def test_read_mask_any_nonzero_is_foreground(tmp_path, mode):
    from PIL import Image

    array = np.zeros((5, 5), np.uint8)
    array[0, 0], array[2, 3] = 255, 1 if mode in ("L", "P") else 255
    image = Image.fromarray(array).convert(mode)
    image.save(tmp_path / "m.png")
    expected = torch.from_numpy(array != 0)
    assert torch.equal(read_mask(tmp_path / "m.png"), expected)


def test_read_mask_unreadable(tmp_path):
    (tmp_path / "m.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"m\.png.*not a readable image"):
        read_mask(tmp_path / "m.png")


def test_overlay_tints_only_the_mask():
    frame = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 0] = True
    out = overlay_mask(frame, mask)
    assert out[:, 0, 0].tolist() == [178, 50, 50]  # 0.5·100 + 0.5·(255, 0, 0), rounded
    assert torch.equal(out[:, 1:], frame[:, 1:])
    with pytest.raises(ValueError, match="frame's size"):
        overlay_mask(frame, torch.zeros(3, 3, dtype=torch.bool))
    for bad in (1.5, math.nan, "0.5", True):
        with pytest.raises(ValueError, match=r"^alpha: expected a number in \[0, 1\]"):
            overlay_mask(frame, mask, alpha=bad)


def test_write_png_image(tmp_path):
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    from cmsf.io.media import read_image

    assert torch.equal(read_image(write_png_image(tmp_path / "i.png", image)), image)


# ---------------------------------------------------------------------------- atomic writes


def test_failed_write_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    cmsf_io.atomic_write_json(target, {"miou": 0.5})
    with pytest.raises(RuntimeError, match="disk on fire"):
        with cmsf_io.atomic_open(target, "w") as f:
            f.write('{"miou": 0.')  # half a file...
            raise RuntimeError("disk on fire")  # ...then the process fails
    assert json.loads(target.read_text()) == {"miou": 0.5}
    assert os.listdir(tmp_path) == ["summary.json"]


def test_unserialisable_json_never_touches_the_file(tmp_path):
    target = tmp_path / "s.json"
    cmsf_io.atomic_write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        cmsf_io.atomic_write_json(target, {"a": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["s.json"]


def test_failed_png_write_keeps_previous_mask(tmp_path, monkeypatch):
    target = tmp_path / "m.png"
    old = torch.ones(4, 4, dtype=torch.bool)
    write_png_mask(target, old)

    def broken_replace(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(cmsf_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="replace failed"):
        write_png_mask(target, torch.zeros(4, 4, dtype=torch.bool))
    monkeypatch.undo()
    assert torch.equal(read_mask(target), old)
    assert os.listdir(tmp_path) == ["m.png"]


def test_atomic_file_permissions_follow_umask(tmp_path):
    path = cmsf_io.atomic_write_text(tmp_path / "t.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_remove_stale_temporaries(tmp_path):
    keep = tmp_path / "a" / "m.png"
    keep.parent.mkdir()
    keep.write_bytes(b"x")
    stale = tmp_path / "a" / f".m.png.1234abcd{cmsf_io.TEMP_SUFFIX}"
    stale.write_bytes(b"half")
    assert cmsf_io.remove_stale_temporaries(tmp_path) == [stale]
    assert keep.exists() and not stale.exists()


@pytest.mark.parametrize("count", [2.5, 2.0, True, "5", None])
def test_split_segments_needs_an_integer_count(count):
    from cmsf.io.inputs import split_segments

    with pytest.raises(ValueError, match="num_segments: expected a positive integer"):
        split_segments(torch.zeros(1, 100), count)
    assert len(split_segments(torch.zeros(1, 100), np.int64(4))) == 4
