"""Test helpers: a miniature AVSBench in both official layouts, and media files made with PyAV.

Not a test module itself (no ``test_`` prefix); tests import it as ``avsbench_fixture``.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

SIZE = 224  # AVSBench's frames and masks are 224×224
FRAMES = 5
RATE = 16_000

# frame-index code: 8 blocks of BLOCK×BLOCK pixels, black (0) or white (1), most significant first
BLOCK = 16


def encode_index(index: int, height: int = BLOCK, width: int = 8 * BLOCK) -> np.ndarray:
    """An RGB ``[height, width, 3]`` uint8 image whose 8 blocks spell ``index`` in binary, robust
    to lossy coding and chroma subsampling."""
    image = np.zeros((height, width, 3), np.uint8)
    for bit in range(8):
        if (index >> (7 - bit)) & 1:
            image[:, bit * BLOCK : (bit + 1) * BLOCK] = 255
    return image


def decode_index(frame: torch.Tensor) -> int:
    """Read back :func:`encode_index` from a ``Tensor[3, H, W]`` uint8 frame."""
    value = 0
    centre_y = min(frame.shape[1] // 2, BLOCK // 2)
    for bit in range(8):
        pixel = int(frame[:, centre_y, bit * BLOCK + BLOCK // 2].float().mean())
        value = value * 2 + (1 if pixel > 127 else 0)
    return value


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """A ``[channels, S]`` float32 sine at amplitude 0.5 (channel c at ``freq·(c+1)``)."""
    t = np.arange(int(round(seconds * rate))) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def write_video(
    path: Path,
    *,
    seconds: float = 5.0,
    fps: int = 10,
    size: tuple[int, int] = (BLOCK, 8 * BLOCK),
    audio: bool = True,
    audio_seconds: Optional[float] = None,
    audio_rate: int = 22_050,
    channels: int = 1,
    vcodec: str = "libx264",
    acodec: str = "aac",
    frames: Optional[list[np.ndarray]] = None,
) -> Path:
    """Write a video whose frame i shows :func:`encode_index` ``(i)`` (or ``frames[i]``), with a
    sine track of ``audio_seconds`` (default ``seconds``) when ``audio``."""
    import av

    if frames:
        size = frames[0].shape[:2]
    height, width = size
    count = len(frames) if frames is not None else int(round(seconds * fps))
    with av.open(str(path), "w") as out:
        video = out.add_stream(vcodec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if vcodec == "libx264":
            video.options = {"crf": "0", "preset": "ultrafast"}
        if audio:
            sound = out.add_stream(acodec, rate=audio_rate)
            sound.layout = "mono" if channels == 1 else "stereo"
        for i in range(count):
            if frames is not None:
                image = frames[i]
            else:
                image = np.zeros((height, width, 3), np.uint8)
                code = encode_index(i)
                image[: code.shape[0], : code.shape[1]] = code[:height, :width]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio:
            signal = tone(audio_seconds if audio_seconds is not None else seconds, audio_rate, channels)
            for start in range(0, signal.shape[1], 1024):
                chunk = np.ascontiguousarray(signal[:, start : start + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=sound.layout.name)
                frame.sample_rate, frame.pts = audio_rate, start
                frame.time_base = fractions.Fraction(1, audio_rate)
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


def write_wav(path: Path, waveform: np.ndarray, rate: int = RATE) -> Path:
    """Write ``waveform ([C, S] float in [-1, 1])`` as a 16-bit PCM wav with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.clip(np.round(waveform * 32767), -32768, 32767).astype(np.int16)
    channels = samples.shape[0]
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono" if channels == 1 else "stereo"
        packed = np.ascontiguousarray(samples.T.reshape(1, -1))
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=stream.layout.name)
        frame.sample_rate, frame.pts = rate, 0
        frame.time_base = fractions.Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def box_mask(top: int, left: int, height: int, width: int, size: int = SIZE) -> np.ndarray:
    """A ``[size, size]`` bool mask with one rectangle set."""
    mask = np.zeros((size, size), bool)
    mask[top : top + height, left : left + width] = True
    return mask


@dataclass
class Video:
    """One miniature video: its csv fields and its ground truth ``gt ([K, 224, 224] bool)``."""

    name: str
    split: str
    category: Optional[str]
    gt: np.ndarray

    @property
    def key(self) -> str:
        return f"{self.category}/{self.name}" if self.category else self.name


@dataclass
class MiniAVSBench:
    root: Path
    videos: dict[str, list[Video]] = field(default_factory=dict)  # subset -> videos

    def split(self, subset: str, split: str) -> list[Video]:
        return [v for v in self.videos[subset] if v.split == split]


def _frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(FRAMES):
        frame = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        frame[:, :, 0] = (frame[:, :, 0] // 4) + k * 40
        out.append(frame)
    return out


def _gt(seed: int, count: int) -> np.ndarray:
    """K masks: frame k holds a box that moves with k; seed picks its size."""
    side = 40 + 20 * (seed % 3)
    return np.stack([box_mask(30 + 10 * k, 20 + 15 * k, side, side + 10) for k in range(count)])


def make_avsbench(root: Path) -> MiniAVSBench:
    """Write a miniature AVSBench under ``root`` (``root/Single-source``, ``root/Multi-sources``).

    S4: test ``s4_a`` (dog), ``s4_b`` (guitar), ``s4_c`` (dog, its 3rd mask empty); val ``s4_v``
    (dog); train ``s4_t`` (guitar, one mask). MS3: test ``ms3_a``, ``ms3_b``; train ``ms3_t``.
    Frames are 5 noisy 224×224 PNGs, audio a 5 s 16 kHz mono sine.
    """
    mini = MiniAVSBench(root=root)
    s4 = [
        ("s4_a", "test", "dog"),
        ("s4_b", "test", "guitar"),
        ("s4_c", "test", "dog"),
        ("s4_v", "val", "dog"),
        ("s4_t", "train", "guitar"),
    ]
    base = root / "Single-source"
    base.mkdir(parents=True, exist_ok=True)
    lines = ["name,start,category,split"]
    mini.videos["s4"] = []
    for seed, (name, split, category) in enumerate(s4):
        lines.append(f"{name},{seed},{category},{split}")
        count = 1 if split == "train" else FRAMES
        gt = _gt(seed, count)
        if name == "s4_c":
            gt[2] = False
        data = base / "s4_data"
        for k, frame in enumerate(_frames(seed), start=1):
            write_png(data / "visual_frames" / split / category / name / f"{name}_{k}.png", frame)
        for k in range(count):
            write_png(data / "gt_masks" / split / category / name / f"{name}_{k + 1}.png", gt[k].astype(np.uint8) * 255)
        write_wav(data / "audio_wav" / split / category / f"{name}.wav", tone(5.0, RATE, freq=300 + 50 * seed))
        mini.videos["s4"].append(Video(name, split, category, gt))
    (base / "s4_meta_data.csv").write_text("\n".join(lines) + "\n")

    ms3 = [("ms3_a", "test"), ("ms3_b", "test"), ("ms3_t", "train")]
    base = root / "Multi-sources"
    base.mkdir(parents=True, exist_ok=True)
    lines = ["video_id,split"]
    mini.videos["ms3"] = []
    for seed, (name, split) in enumerate(ms3, start=10):
        lines.append(f"{name},{split}")
        gt = _gt(seed, FRAMES)
        data = base / "ms3_data"
        for k, frame in enumerate(_frames(seed), start=1):
            write_png(data / "visual_frames" / name / f"{name}.mp4_{k}.png", frame)
        for k in range(FRAMES):
            write_png(data / "gt_masks" / split / name / f"{name}_{k + 1}.png", gt[k].astype(np.uint8) * 255)
        write_wav(data / "audio_wav" / split / f"{name}.wav", tone(5.0, RATE, freq=200 + 30 * seed))
        mini.videos["ms3"].append(Video(name, split, None, gt))
    (base / "ms3_meta_data.csv").write_text("\n".join(lines) + "\n")
    return mini


def write_predictions(pred_dir: Path, video: Video, masks: np.ndarray) -> list[Path]:
    """Write ``masks ([5, H, W] bool)`` as AVSBench's ``save_mask`` would (0-based, 0/255, mode P)."""
    paths = []
    for k in range(FRAMES):
        path = pred_dir / video.key / f"{video.name}_{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(masks[k].astype(np.uint8) * 255).convert("P").save(path, format="PNG")
        paths.append(path)
    return paths
