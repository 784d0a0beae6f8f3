"""Test helper: a small corpus for ``cmsf segment-many`` (both engines): videos that share a file
name, a frame folder with its audio beside it, a corrupt file and a video without sound.

Not a test module itself (no ``test_`` prefix); tests import it as ``corpus_fixture``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from avsbench_fixture import tone, write_png, write_video, write_wav


@dataclass
class Corpus:
    root: Path
    videos: list[Path]  # readable video files; the first two are both named clip.mp4
    folder: Path  # a folder of frames, its audio at folder.wav beside it
    broken: Path  # not a video
    silent: Path  # a video without an audio track

    @property
    def good(self) -> list[Path]:
        return [*self.videos, self.folder]


def _frames(rng: np.random.Generator, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def make_corpus(root: Path) -> Corpus:
    """Videos of 2 s (8 frames at 4 fps, 48×64; cmsf samples 2 of them), a 2-frame folder."""
    rng = np.random.default_rng(14)
    videos = []
    for relative in ("a/clip.mp4", "b/clip.mp4", "c/other.mp4"):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        videos.append(write_video(path, fps=4, frames=_frames(rng, 8, (48, 64)), audio_seconds=2))
    folder = root / "frames"
    for k, frame in enumerate(_frames(rng, 2, (40, 56)), start=1):
        write_png(folder / f"f_{k}.png", frame)
    write_wav(root / "frames.wav", tone(2.0, 16_000, freq=300.0))
    broken = root / "broken.mp4"
    broken.write_bytes(b"not a video" * 50)
    silent = write_video(root / "silent.mp4", fps=4, frames=_frames(rng, 8, (48, 64)), audio=False)
    return Corpus(root=root, videos=videos, folder=folder, broken=broken, silent=silent)


def output_files(folder: Path) -> dict[str, bytes]:
    """The masks and overlays under ``folder`` (``name/file`` → bytes)."""
    return {
        f"{path.parent.name}/{path.name}": path.read_bytes()
        for path in sorted(folder.glob("*/*.png"))
    }


RUN_BOOKKEEPING = ("input", "source", "elapsed_s")


def found(evidence: dict) -> dict:
    """What an ``evidence.json`` says the pipeline found (settings, models, every frame's
    proposals, scores, mask and coverage), without where the input came from and how long it took."""
    return {key: value for key, value in evidence.items() if key not in RUN_BOOKKEEPING}
