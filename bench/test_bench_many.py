"""``cmsf segment-many`` throughput: videos/s of the local engine and of the Ray engine with 1 and 2
model actors on a local Ray instance (2 CPUs), OWOD-BIND on a corpus of AVSBench-shaped clips.

The corpus: :data:`CLIPS` frame folders of 5 PNG frames (224×224, :func:`bench.harness.
avsbench_video` with seeds 0…) with a 5 s 16 kHz wav beside each, as AVSBench ships its videos;
the OWOD-BIND thresholds of ``bench/workload.py`` (the seed-0 video's, ≈ 8 proposals and ≈ 2 kept
per frame). Each round is a whole run into a fresh output folder: reading, models, writing every
mask, overlay and evidence.json. ``extra_info``:

- ``videos_per_s``: clips / the round's wall time, as a user sees it (the Ray rounds include
  starting their actors and loading the models in them; the local round loads its models too);
- ``steady_videos_per_s``: the rate between the first and the last video finished, i.e. without
  start-up (the rate a long corpus run converges to);
- ``threads`` (torch threads per worker), ``workers``, ``clips``, ``frames_per_batch``.

CPU figures with the tiny preset measure the glue (decoding, PNG writing, Python), not the models;
GPU figures of the paper's architectures are not measured here. These runs take tens of seconds,
so they run only with benchmarking on; ``--benchmark-disable`` (the CI smoke run) skips them,
saying so: their correctness is ``tests/test_many.py`` and ``tests/test_distributed.py``.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
import wave
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator

import numpy as np
import pytest
import torch

import cmsf
from bench.harness import avsbench_video, load_case_models
from bench.workload import pipeline_settings, split_settings
from cmsf.io.media import write_png_image
from cmsf.models.loading import load_models
from cmsf.pipelines.settings import make_settings
from cmsf.runs.distributed import require_ray, run_ray
from cmsf.runs.many import RunSpec, plan_jobs, run_local, segment_many

CLIPS = 12
ROUNDS = 2
ENGINES = {"local": None, "ray-1": 1, "ray-2": 2}  # Ray model actors
RAY_CPUS = 2


def write_clip(folder: Path, seed: int) -> Path:
    """An AVSBench-shaped clip as a frame folder with ``{folder}.wav`` beside it."""
    frames, waveform, sample_rate = avsbench_video(seed=seed)
    for t, frame in enumerate(frames):
        write_png_image(folder / f"{folder.name}_{t + 1}.png", frame)
    samples = (waveform[0].clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
    with wave.open(str(folder.with_name(folder.name + ".wav")), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.tobytes())
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("corpus")
    return [write_clip(root / f"clip{seed:02d}", seed) for seed in range(CLIPS)]


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """A local Ray instance (2 CPUs) for the module; its workers import this cmsf."""
    ray = require_ray()
    tree = str(Path(cmsf.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (tree, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # fmt: skip
    yield ray
    ray.shutdown()


def owod_bind_settings() -> dict[str, Any]:
    frames, waveform, sample_rate = avsbench_video(seed=0)
    models = load_case_models("tiny", "cpu", "float32")
    settings, _ = split_settings(pipeline_settings("owod-bind", "tiny", frames, waveform, sample_rate, models))
    return settings


@pytest.mark.parametrize("engine", tuple(ENGINES))
def test_segment_many(
    benchmark: Any, request: pytest.FixtureRequest, corpus: list[Path], tmp_path: Path, engine: str
) -> None:
    if benchmark.disabled:
        pytest.skip("segment-many runs take tens of seconds: only with benchmarking on (tests/test_many.py and "
                    "tests/test_distributed.py check them)")  # fmt: skip
    workers = ENGINES[engine]
    if workers is not None:
        request.getfixturevalue("ray_instance")
    settings = owod_bind_settings()
    jobs = plan_jobs(corpus)
    rounds = itertools.count()
    finished: list[float] = []

    def timestamps(items: Collection[Any], description: str, unit: str) -> Iterable[Any]:
        for item in items:
            finished.append(time.perf_counter())
            yield item

    def make_engine() -> Callable[..., Iterator[Any]]:
        if workers is None:  # models built in the round, as the command does (lazily)
            return functools.partial(run_local, models=load_models("tiny", device="cpu"))
        return functools.partial(run_ray, workers=workers, gpus_per_worker=0)

    summaries: list[dict[str, Any]] = []
    steady: list[float] = []

    def one_run() -> None:
        spec = RunSpec(tmp_path / f"round{next(rounds)}", "owod-bind", make_settings("owod-bind", settings), preset="tiny", device="cpu",
                       threads=1 if workers is not None else None)  # fmt: skip
        finished.clear()
        summary = segment_many(spec, jobs, make_engine(), progress=timestamps)
        assert summary["segmented"] == CLIPS and summary["failed"] == 0
        summaries.append(summary)
        after_first = len(finished) - 1
        if after_first > 0 and finished[-1] > finished[0]:
            steady.append(after_first / (finished[-1] - finished[0]))

    benchmark.pedantic(one_run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update(
        {
            "engine": engine,
            "workers": workers or 1,
            "threads": 1 if workers is not None else torch.get_num_threads(),
            "clips": CLIPS,
            "frames_per_clip": 5,
            "frames_per_batch": "default (10 on CPU)",
            "videos_per_s": CLIPS / median_s,
            "steady_videos_per_s": float(np.median(steady)) if steady else None,
            "settings": settings,
        }
    )
