"""The dataset runner end to end: OWOD-BIND over an AVSBench-S4-shaped split read from disk (PNG
frames, wav audio), with the masks and evidence written, as ``cmsf eval`` segments a split
(:func:`cmsf.runs.evaluate.segment_videos` on :func:`cmsf.runs.runner.run_jobs`).

``test_runner``: each round runs the *sequential* way first (``frames_per_batch=1``,
``workers=0``: one video at a time, read in the calling thread — the loop ``cmsf eval`` had
before the runner; untimed by pytest-benchmark) and then the runner with its defaults (timed).
``extra_info``:

- ``runner_s`` / ``sequential_s``: median seconds for the ``videos`` of the split;
  ``speedup_vs_sequential``; ``per_video_s``;
- ``s4_test_seconds``: 740 × ``per_video_s``, the S4 test split projected from the runner's
  measured throughput on this split, decoding and writing included (scoring excluded);
- ``flops_per_video`` (mean over the videos, from their proposal counts), ``achieved_tflops``,
  ``fraction_of_peak`` (CUDA; see ``bench/harness.py``), peak GPU memory of the runner;
- ``agreement``: mean IoU of the runner's masks with the sequential ones (batching changes
  rounding only; asserted ≥ 0.99 in float32).

The paper's architectures are measured in bfloat16 only (the goal's precision), in one round
after a warm-up run. ``test_runner_batch_sizes`` (CUDA, paper-random): the runner at several
``frames_per_batch``,
each with its time and peak GPU memory, and ``largest_frames_per_batch_within_80gb``, the
largest of those whose peak stayed within 80 GiB.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.flops import pipeline_units, video_flops
from bench.harness import (
    S4_TEST_VIDEOS,
    Case,
    avsbench_video,
    frame_agreement,
    throughput_info,
    timed,
    with_peak_memory,
    write_avsbench_s4,
)
from bench.test_bench_pipelines import settings_for
from bench.workload import split_settings
from cmsf.io import avsbench
from cmsf.pipelines.settings import make_settings
from cmsf.runs.evaluate import segment_videos
from cmsf.runs.runner import default_frames_per_batch, default_workers

PIPELINE = "owod-bind"
VIDEOS = {"tiny": 6, "paper-random": 32}
"""Videos of the split per preset (tiny: a CPU smoke run; paper-random: 160 frames, 2.5 batches
at the CUDA default)."""
BATCH_SIZES = (5, 20, 40, 80, 160)
GIB = 2**30


_SPLITS: dict[int, tuple[Path, list[Any]]] = {}


@pytest.fixture
def split(case: Case, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    """The case's split on disk, written once per size per session."""
    videos = VIDEOS[case.preset]
    if videos not in _SPLITS:
        root = tmp_path_factory.mktemp(f"s4-{videos}")
        _SPLITS[videos] = (root, write_avsbench_s4(root, videos))
    return _SPLITS[videos]


def _segment(root: Path, entries: list[Any], models: Any, settings: dict[str, Any], **runner: Any) -> Path:
    """Segment ``entries`` into a fresh run folder; return it."""
    out = Path(tempfile.mkdtemp(prefix="cmsf-bench-run-"))
    segment_videos(root, "s4", entries, out, PIPELINE, make_settings(PIPELINE, settings), models, **runner)
    return out


def _masks(out: Path, entries: list[Any]) -> torch.Tensor:
    return torch.cat([avsbench.read_pred_masks(out / "pred_masks", "s4", entry) for entry in entries])


def _flops_per_video(out: Path, entries: list[Any], preset: str) -> int:
    """Mean model FLOPs per video of a run, from the proposal counts in its evidence."""
    units = pipeline_units(preset)
    total = 0
    for entry in entries:
        evidence = json.loads((out / "evidence" / f"{entry.key}.json").read_text())
        counts = [len(frame["boxes"]) for frame in evidence["frames"]]
        total += video_flops(units, PIPELINE, frames=len(counts), proposals_per_frame=counts)
    return round(total / len(entries))


def _skip_unless_measured(case: Case) -> None:
    if case.preset == "paper-random" and case.dtype == "float32":
        pytest.skip("the paper's architectures: the runner is measured in bfloat16 (the goal's precision)")


def test_runner(benchmark, case: Case, models, split) -> None:
    _skip_unless_measured(case)
    root, entries = split
    settings, _ = split_settings(settings_for(PIPELINE, case, avsbench_video(seed=0)))
    frames_per_batch = default_frames_per_batch(case.device)
    runs: dict[str, list[Path]] = {"runner": [], "sequential": []}
    times: dict[str, list[float]] = {"runner": [], "sequential": []}

    def setup() -> None:  # untimed: the sequential way, same round
        seconds, out = timed(lambda: _segment(root, entries, models, settings, frames_per_batch=1, workers=0), case.device)
        times["sequential"].append(seconds)
        runs["sequential"].append(out)

    def target() -> Path:
        seconds, out = timed(lambda: _segment(root, entries, models, settings), case.device)
        times["runner"].append(seconds)
        runs["runner"].append(out)
        return out

    memory: dict[str, Any] = {}
    if case.is_cuda:  # warm-up, measuring the runner's peak memory
        _, memory = with_peak_memory(lambda: runs["runner"].append(_segment(root, entries, models, settings)), case.device)
    benchmark.group = "runner-owod-bind"
    out = benchmark.pedantic(target, setup=setup, rounds=3 if case.preset == "tiny" else 1, iterations=1, warmup_rounds=0)
    runner_s, sequential_s = statistics.median(times["runner"]), statistics.median(times["sequential"])
    per_frame = frame_agreement(_masks(out, entries), _masks(runs["sequential"][-1], entries))
    per_video_s = runner_s / len(entries)
    benchmark.extra_info.update(
        {
            "pipeline": PIPELINE, "preset": case.preset, "device": case.device, "dtype": case.dtype,
            "videos": len(entries), "frames_per_batch": frames_per_batch, "workers": default_workers(case.device),
            "runner_s": runner_s, "sequential_s": sequential_s, "runner_times_s": times["runner"],
            "sequential_times_s": times["sequential"], "speedup_vs_sequential": sequential_s / runner_s,
            "per_video_s": per_video_s, "s4_test_seconds": S4_TEST_VIDEOS * per_video_s,
            "s4_test_seconds_basis": f"projected: {S4_TEST_VIDEOS} × the runner's measured seconds per video over "
            f"{len(entries)} videos read from disk, masks and evidence written (scoring excluded)",
            "agreement": sum(per_frame) / len(per_frame), "settings": settings, **memory,
            **throughput_info(_flops_per_video(out, entries, case.preset), per_video_s, case.device),
        }
    )  # fmt: skip
    for folder in runs["runner"] + runs["sequential"]:
        shutil.rmtree(folder, ignore_errors=True)
    if case.dtype == "float32":
        assert benchmark.extra_info["agreement"] >= 0.99, benchmark.extra_info["agreement"]


def test_runner_batch_sizes(benchmark, case: Case, models, split) -> None:
    if not (case.is_cuda and case.preset == "paper-random"):
        pytest.skip("batch-size sweep: CUDA with the paper's architectures only")
    _skip_unless_measured(case)
    root, entries = split
    settings, _ = split_settings(settings_for(PIPELINE, case, avsbench_video(seed=0)))
    sweep = []
    for frames_per_batch in BATCH_SIZES:
        try:
            (seconds, out), memory = with_peak_memory(
                lambda: timed(lambda: _segment(root, entries, models, settings, frames_per_batch=frames_per_batch), case.device),
                case.device,
            )  # fmt: skip
        except torch.OutOfMemoryError:
            sweep.append({"frames_per_batch": frames_per_batch, "out_of_memory": True})
            torch.cuda.empty_cache()
            break
        shutil.rmtree(out, ignore_errors=True)
        sweep.append({"frames_per_batch": frames_per_batch, "seconds": seconds, "per_video_s": seconds / len(entries), **memory})
    within = [row["frames_per_batch"] for row in sweep if row.get("peak_gpu_mem_bytes") is not None and row["peak_gpu_mem_bytes"] <= 80 * GIB]
    benchmark.group = "runner-owod-bind-batch-sizes"
    best = min((row for row in sweep if "seconds" in row), key=lambda row: row["seconds"])
    benchmark.pedantic(lambda: shutil.rmtree(_segment(root, entries, models, settings, frames_per_batch=best["frames_per_batch"])), rounds=1, iterations=1)
    benchmark.extra_info.update(
        {
            "videos": len(entries), "sweep": sweep, "fastest_frames_per_batch": best["frames_per_batch"],
            "largest_frames_per_batch_within_80gb": max(within) if within else None,
            "largest_frames_per_batch_within_80gb_basis": f"largest measured of {list(BATCH_SIZES)} whose peak "
            "torch.cuda.max_memory_allocated stayed within 80 GiB",
        }
    )  # fmt: skip
