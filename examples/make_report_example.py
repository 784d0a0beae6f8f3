"""Regenerate ``examples/report.png``: a screenshot of ``cmsf report`` on a 3 × 3 sweep.

The data is synthetic, written here in AVSBench's S4 layout: 8 videos of 5 frames (224×224, a
gradient background with three shapes, the "sounding" one drifting from frame to frame and taken as
the ground truth) with 5 s of 16 kHz tone each. The pipeline is OWOD-BIND with the ``tiny`` preset
(random weights), swept over τ_BB × τ_BIND on the val split: its masks mean nothing, the picture
shows the report's layout. Needs Chromium (Debian: ``apt-get install chromium``).

Run from the repository root: ``python examples/make_report_example.py [--out examples/report.png]``.
"""

from __future__ import annotations

import argparse
import tempfile
import wave
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cmsf import load_models
from cmsf.runs.report import render_in_browser, write_report
from cmsf.runs.sweep import run_sweep

SIZE = 224
FRAMES = 5
RATE = 16_000
VIDEOS = [("cat_01", "cat"), ("cat_02", "cat"), ("cat_03", "cat"), ("dog_01", "dog"), ("dog_02", "dog"),
          ("guitar_01", "guitar"), ("guitar_02", "guitar"), ("piano_01", "piano")]  # fmt: skip


def _scene(rng: np.random.Generator, k: int, shapes: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """Frame k of a video: gradient background, the shapes drawn (the first one drifting with k);
    returns the RGB frame and the first shape's mask."""
    top, bottom = rng.integers(40, 220, 3), rng.integers(40, 220, 3)
    ramp = np.linspace(0, 1, SIZE)[:, None, None]
    image = Image.fromarray((top * (1 - ramp) + bottom * ramp).repeat(SIZE, axis=1).astype(np.uint8))
    mask = Image.new("L", (SIZE, SIZE), 0)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for index, (kind, x, y, w, h, color) in enumerate(shapes):
        if index == 0:
            x, y = x + 8 * k, y + 4 * k
        box = (x, y, x + w, y + h)
        (draw.ellipse if kind == "ellipse" else draw.rectangle)(box, fill=color)
        if index == 0:
            (draw_mask.ellipse if kind == "ellipse" else draw_mask.rectangle)(box, fill=255)
    return np.asarray(image), np.asarray(mask)


def write_dataset(root: Path) -> Path:
    """The synthetic S4 val split under ``root`` (see the module docstring)."""
    data = root / "Single-source" / "s4_data"
    lines = ["name,start,category,split"]
    for seed, (name, category) in enumerate(VIDEOS):
        rng = np.random.default_rng(seed)
        shapes = [
            (rng.choice(["ellipse", "rectangle"]), int(rng.integers(20, 90)), int(rng.integers(20, 90)),
             int(rng.integers(50, 90)), int(rng.integers(50, 90)), tuple(int(c) for c in rng.integers(0, 256, 3)))
            for _ in range(3)
        ]  # fmt: skip
        for k in range(FRAMES):
            frame, mask = _scene(np.random.default_rng(seed), k, shapes)
            for kind, array in (("visual_frames", frame), ("gt_masks", mask)):
                path = data / kind / "val" / category / name / f"{name}_{k + 1}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)
        audio = data / "audio_wav" / "val" / category / f"{name}.wav"
        audio.parent.mkdir(parents=True, exist_ok=True)
        tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * np.arange(5 * RATE) / RATE)
        with wave.open(str(audio), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(RATE)
            handle.writeframes((tone * 32767).astype("<i2").tobytes())
        lines.append(f"{name},0,{category},val")
    (root / "Single-source" / "s4_meta_data.csv").write_text("\n".join(lines) + "\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples/report.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = write_dataset(Path(folder) / "avsbench")
        run = Path(folder) / "run"
        models = load_models("tiny", device="cpu")
        grid = {"box_threshold": [0.4, 0.5, 0.6], "bind_threshold": [0.2, 0.3, 0.4]}
        run_sweep(root, "s4", run, pipeline="owod-bind", grid=grid, split="val", load=lambda: models, preset="tiny")
        page = write_report(run)
        shot = Path(folder) / "shot.png"
        render_in_browser(page, screenshot=shot, size=(1200, 2200))
        picture = Image.open(shot).convert("RGB")
        picture = picture.resize((picture.width * 3 // 4, picture.height * 3 // 4), Image.LANCZOS)
        picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
