"""Test helpers: a miniature AVSBench-semantic release in the official layout, and predictions in
the layout of the reference's ``save_color_mask``.

Not a test module itself; tests import it as ``avss_fixture``. The palette here is written out
independently of cmsf (bit-interleaving as in AVSBench's ``get_v2_pallete``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from avsbench_fixture import tone, write_wav
from PIL import Image

NUM_CLASSES = 71
CLASS_NAMES = ["background"] + [f"thing{k:02d}" for k in range(1, NUM_CLASSES - 1)] + ["woman"]
FRAMES = {"v1s": 5, "v1m": 5, "v2": 10}


def fixture_palette() -> np.ndarray:
    """``[71, 3]`` int: class k's colour (bits 0/1/2 of each octal digit of k → R/G/B, from the
    top bit down)."""
    colours = np.zeros((NUM_CLASSES, 3), np.int64)
    for k in range(NUM_CLASSES):
        for digit in range(3):
            octal = (k >> (3 * digit)) & 7
            for channel in range(3):
                colours[k, channel] |= ((octal >> channel) & 1) << (7 - digit)
    return colours


@dataclass(frozen=True)
class FixtureVideo:
    uid: str
    split: str
    label: str
    size: tuple[int, int]  # (H, W) of its frames and masks on disk
    classes: tuple[int, ...]  # the object classes of its masks


@dataclass
class MiniAVSS:
    root: Path
    videos: list[FixtureVideo]

    def split(self, split: str) -> list[FixtureVideo]:
        return [v for v in self.videos if v.split == split]


def class_map(rng: np.random.Generator, size: tuple[int, int], classes: tuple[int, ...]) -> np.ndarray:
    """An ``[H, W]`` int map: background with a few rectangles of ``classes``."""
    h, w = size
    out = np.zeros((h, w), np.int64)
    for c in classes:
        if rng.random() < 0.2:
            continue  # a class absent from this frame
        top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        out[top : top + int(rng.integers(4, h // 2)), left : left + int(rng.integers(4, w // 2))] = c
    return out


def write_colour_png(path: Path, classes: np.ndarray, off_palette: int = 0) -> Path:
    """Write an ``[H, W]`` class map in palette colours; ``off_palette`` pixels of the first row
    get a colour in no palette entry."""
    rgb = fixture_palette()[classes].astype(np.uint8)
    rgb[0, :off_palette] = (1, 2, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


VIDEOS = [
    FixtureVideo("s4vid_a", "test", "v1s", (224, 224), (5,)),
    FixtureVideo("ms3vid_b", "test", "v1m", (224, 224), (7, 70)),
    FixtureVideo("v2vid_c", "test", "v2", (240, 360), (12, 13, 5)),
    FixtureVideo("v2vid_d", "test", "v2", (224, 224), (1, 64)),
    FixtureVideo("v2vid_e", "test", "v2", (180, 320), (33,)),
    FixtureVideo("s4vid_f", "train", "v1s", (224, 224), (9,)),
    FixtureVideo("v2vid_g", "val", "v2", (224, 224), (2, 3)),
]


def make_avss(root: Path, *, seed: int = 0, off_palette: int = 0) -> MiniAVSS:
    """Write the miniature release under ``root``: ``metadata.csv`` (extra columns, shuffled
    order), ``label2idx.json``, jpg frames, palette PNG masks (v1s train: only mask 0), wavs."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
        for k, v in enumerate(VIDEOS):
            writer.writerow([f"yt{k}", v.uid, 0, k, f"obj{k}", v.split, v.label])
    (root / "label2idx.json").write_text(json.dumps({n: i + 1 for i, n in enumerate(CLASS_NAMES)}))
    for v in VIDEOS:
        folder = root / v.label / v.uid
        n = FRAMES[v.label]
        for i in range(n):
            (folder / "frames").mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (*v.size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "frames" / f"{i}.jpg", quality=90)
        masks = 1 if (v.label == "v1s" and v.split == "train") else n
        for i in range(masks):
            write_colour_png(folder / "labels_rgb" / f"{i}.png", class_map(rng, v.size, v.classes), off_palette)
        write_wav(folder / "audio.wav", tone(float(n), 16_000))
    return MiniAVSS(root, list(VIDEOS))


def write_predictions(
    pred_dir: Path,
    videos: list[FixtureVideo],
    *,
    seed: int = 1,
    size: tuple[int, int] = (224, 224),
    frames: Optional[int] = None,
) -> Path:
    """Random predictions ``{uid}/{uid}_{k}.png`` (k = 0 … 9, or ``frames`` of them) at ``size``,
    drawing from each video's classes and a few others."""
    rng = np.random.default_rng(seed)
    for v in videos:
        for k in range(frames or 10):
            classes = tuple(v.classes) + (int(rng.integers(1, NUM_CLASSES)),)
            write_colour_png(pred_dir / v.uid / f"{v.uid}_{k}.png", class_map(rng, size, classes))
    return pred_dir
