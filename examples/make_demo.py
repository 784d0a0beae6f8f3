"""Regenerate ``examples/demo.mp4``: 5 s, 224×224, 25 fps H.264 video with an AAC speech track.

The picture is scikit-image's ``astronaut`` sample (Eileen Collins, NASA; public domain) with a
slow zoom so that every second shows a slightly different frame; the sound is a sentence spoken by
the eSpeak NG speech synthesiser. Needs, only to regenerate (cmsf does not depend on them)::

    pip install scikit-image
    apt-get install espeak-ng

Run from the repository root: ``python examples/make_demo.py [--out examples/demo.mp4]``.
"""

from __future__ import annotations

import argparse
import fractions
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SECONDS = 5
FPS = 25
SIZE = 224
AUDIO_RATE = 22_050  # espeak-ng's native rate
TEXT = "Hello from the space shuttle. I am the astronaut in this picture, talking to you."


def frames() -> list[np.ndarray]:
    """SECONDS·FPS frames of SIZE×SIZE RGB: a crop of the astronaut photograph that zooms from
    the whole 512×512 image to its central 400×400 pixels."""
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.astronaut())
    count = SECONDS * FPS
    out = []
    for i in range(count):
        side = 512 - (512 - 400) * i / (count - 1)
        left = (512 - side) / 2
        box = (left, left * 0.6, left + side, left * 0.6 + side)
        out.append(np.asarray(image.resize((SIZE, SIZE), Image.Resampling.LANCZOS, box=box)))
    return out


def speech() -> np.ndarray:
    """TEXT spoken by espeak-ng: ``[1, SECONDS·AUDIO_RATE]`` float32, zero-padded or cut."""
    import av

    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), TEXT], check=True)
        with av.open(str(wav)) as container:
            chunks = [frame.to_ndarray() for frame in container.decode(audio=0)]
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    if samples.dtype.kind != "f" or np.abs(samples).max() > 1.5:
        samples = samples / 32768.0
    samples = samples[:1]
    length = SECONDS * AUDIO_RATE
    padded = np.zeros((1, length), np.float32)
    padded[:, : min(length, samples.shape[1])] = samples[:, :length]
    return padded


def write(path: Path) -> None:
    import av

    pictures, sound = frames(), speech()
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "30", "preset": "veryslow"}
        audio = out.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        audio.bit_rate = 48_000
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        for start in range(0, sound.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(sound[:, start : start + 1024]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = AUDIO_RATE, start
            frame.time_base = fractions.Fraction(1, AUDIO_RATE)
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("demo.mp4"))
    args = parser.parse_args()
    write(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
