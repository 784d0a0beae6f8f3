"""The tracked pipelines (owod-bind-tracked, sam-bind-tracked) against their per-frame
counterparts on one AVSBench-shaped video (5 frames of 224×224, 5 s of 16 kHz audio), and the
tracker's FLOPs per frame.

Each round runs the per-frame pipeline (untimed by pytest-benchmark) and then the tracked one
(timed), alternating, with the per-frame pipeline's workload settings (``bench/workload.py``: about
8 proposals and 2 kept per frame, so about 10 seeds per video) and a ``track_threshold`` that
keeps about 2 tracks per frame (chosen from a probe run at 0, as the workload chooses τ_BIND: with
softmax the tracks compete among themselves, not with the per-frame proposals, so τ_BIND of the
proposals does not carry over). ``extra_info`` gets ``tracked_s`` and ``per_frame_s`` (median seconds per
video), ``cost_ratio`` = tracked_s / per_frame_s, the number of seeds and tracks, the masks'
coverage, and the tracker's FLOPs (:func:`bench.flops.tracker_flops`).

Commands: ``OMP_NUM_THREADS=1 python -m pytest bench/test_bench_tracked.py -k tiny-cpu`` (CPU,
tiny); on a GPU, the paper's architectures with SAM 2.1 Hiera-L as tracker:
``python -m pytest bench/test_bench_tracked.py -k "paper-random-cuda"``.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from bench.flops import tracker_flops
from bench.harness import Case, coverage, load_case_models, synchronize, timed
from bench.workload import pipeline_settings, split_settings, threshold_keeping
from cmsf.pipelines.per_frame import PIPELINES
from cmsf.pipelines.tracked import TRACKED_FUNCTIONS, TRACKED_PIPELINES


def test_tracker_flops_add_up() -> None:
    flops = tracker_flops("tiny")
    assert flops["image_encoder_per_frame"] > 0 and flops["per_object_frame"] > 0
    # one object's tracking is at least its frames' encoding and its own per-frame work
    assert flops["per_frame_one_object"] >= flops["image_encoder_per_frame"] + flops["per_object_frame"] * 0.9


@pytest.mark.parametrize("pipeline", sorted(TRACKED_PIPELINES))
def test_tracked_pipeline(benchmark, case: Case, video, pipeline: str) -> None:
    frames, waveform, sample_rate = video
    base = TRACKED_PIPELINES[pipeline]
    models = load_case_models(case.preset, case.device, case.dtype)
    reference_models = load_case_models(case.preset, case.device, "float32")
    kwargs, _ = split_settings(pipeline_settings(base, case.preset, frames, waveform, sample_rate, reference_models))
    per_frame_fn, tracked_fn = PIPELINES[base], TRACKED_FUNCTIONS[pipeline]
    probe = tracked_fn(frames, waveform, sample_rate, reference_models, **kwargs, track_threshold=0.0)
    smoothed = [s for track in probe.tracks for s in track.smoothed_scores.tolist() if s == s]
    tracked_kwargs = {**kwargs, "track_threshold": min(max(threshold_keeping(smoothed, 2 * len(frames)), 0.0), 1.0)}

    def run(fn: Any, arguments: dict[str, Any]) -> Any:
        out = fn(frames, waveform, sample_rate, models, **arguments)
        synchronize(case.device)
        return out

    per_frame_times: list[float] = []
    tracked_times: list[float] = []
    per_frame_out: list[Any] = []

    def setup() -> None:
        seconds, out = timed(lambda: run(per_frame_fn, kwargs), case.device)
        per_frame_times.append(seconds)
        per_frame_out[:] = [out]

    def target() -> Any:
        seconds, out = timed(lambda: run(tracked_fn, tracked_kwargs), case.device)
        tracked_times.append(seconds)
        return out

    if not benchmark.disabled:
        run(tracked_fn, tracked_kwargs)  # warm-up
    benchmark.group = f"tracked-{pipeline}"
    result = benchmark.pedantic(target, setup=setup, rounds=3, iterations=1, warmup_rounds=0)
    per_frame = per_frame_out[0]
    tracked_s, per_frame_s = statistics.median(tracked_times), statistics.median(per_frame_times)
    benchmark.extra_info.update(
        {
            "pipeline": pipeline, "per_frame_pipeline": base, "preset": case.preset, "device": case.device,
            "dtype": case.dtype, "tracked_s": tracked_s, "per_frame_s": per_frame_s,
            "cost_ratio": tracked_s / per_frame_s,
            "seeds": sum(int(f.kept.sum()) for f in per_frame.frames), "tracks": len(result.tracks),
            "coverage_tracked": coverage(result.masks), "coverage_per_frame": coverage(per_frame.masks),
            "settings": tracked_kwargs, "tracker_flops": tracker_flops(case.preset),
        }
    )  # fmt: skip
    assert result.masks.shape == per_frame.masks.shape
    assert len(result.tracks) <= benchmark.extra_info["seeds"]
