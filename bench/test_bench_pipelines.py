"""One benchmark per pipeline on one AVSBench-shaped video (5 frames of 224×224, 5 s of 16 kHz
audio), against the reference loop (``bench/reference.py``) measured in the same run; OWOD-BIND
once with each proposer (OWLv2, and MAVL of the preset's size with random weights).

Each round runs the reference loop (float32, frame by frame, untimed by pytest-benchmark) and
then cmsf's pipeline (timed by pytest-benchmark), alternating, so both see the same machine
state. ``extra_info`` gets:

- ``cmsf_s``, ``reference_s``: median seconds per video of each path (same timer, CUDA
  synchronised), ``speedup`` = reference_s / cmsf_s (throughput ratio per video);
- ``agreement``: mean over frames of the IoU of the two paths' masks (a frame where both are
  empty counts 1), ``agreement_per_frame``, and the masks' ``coverage`` (fraction of pixels set)
  so that empty/full results are visible;
- ``agreement_vs_cmsf_float32`` for bfloat16 cases (cmsf bfloat16 vs cmsf float32);
- peak GPU memory of each path, the settings (see ``bench/workload.py``) and the proposal counts;
- ``s4_test_seconds``: 740 × ``cmsf_s``, the S4 test split projected from one video per call
  (``bench/test_bench_runner.py`` measures the dataset runner's batched throughput, decoding
  included);
- ``flops_per_video`` (OWOD-BIND, SAM-BIND: the model FLOPs of this run's proposal counts, from
  the units of ``bench/results/flops.json``), ``achieved_tflops``, ``gpu``,
  ``gpu_dense_bf16_peak_tflops`` (and its source) and ``fraction_of_peak`` = achieved ÷ peak
  (CUDA only; see ``bench/harness.py``).

Assertions: float32 agreement ≥ 0.99 everywhere. On CUDA with the paper's architectures
(paper-random): bfloat16 masks within mean IoU 0.98 of float32, and OWOD-BIND / SAM-BIND in
bfloat16 at least 10× the reference loop's throughput per video (the reference loop is float32
by definition; cmsf's float32 speedup is recorded, not asserted).
"""

from __future__ import annotations

import statistics
from typing import Any, Optional

import pytest
import torch

from bench.flops import pipeline_units, video_flops
from bench.harness import (
    S4_TEST_VIDEOS,
    SUMMARY,
    Case,
    coverage,
    frame_agreement,
    load_case_models,
    synchronize,
    throughput_info,
    timed,
    with_peak_memory,
)
from bench.reference import REFERENCES
from bench.workload import pipeline_settings, split_settings
from cmsf.pipelines.per_frame import PIPELINES

FLOAT32_AGREEMENT = 0.99
BFLOAT16_AGREEMENT = 0.98
SPEEDUP_GOAL = 10.0
SPEEDUP_PIPELINES = ("owod-bind", "sam-bind")

_SETTINGS: dict[tuple[str, str, str, str], dict[str, Any]] = {}

VARIANTS = [("owod-bind", "owlv2"), ("owod-bind", "mavl"), ("sam-bind", "owlv2"), ("at-gdino-sam", "owlv2")]
"""(pipeline, proposer): OWOD-BIND with each proposer (OWLv2, MAVL); the others use none."""


def _variant_id(variant: tuple[str, str]) -> str:
    pipeline, proposer = variant
    return f"{pipeline}-mavl" if proposer == "mavl" else pipeline


def settings_for(pipeline: str, case: Case, video: tuple, proposer: str = "owlv2") -> dict[str, Any]:
    """The pipeline's settings for this preset and device, from the float32 models (cached)."""
    key = (pipeline, case.preset, case.device, proposer)
    if key not in _SETTINGS:
        frames, waveform, sample_rate = video
        models = load_case_models(case.preset, case.device, "float32", proposer)
        _SETTINGS[key] = pipeline_settings(pipeline, case.preset, frames, waveform, sample_rate, models)
    return _SETTINGS[key]


def _rounds(case: Case) -> int:
    return 5


def run_flops(pipeline: str, proposer: str, preset: str, result: Any, kwargs: dict[str, Any]) -> Optional[int]:
    """Model FLOPs of this run of OWOD-BIND (OWLv2 proposer) / SAM-BIND, from its proposal
    counts and the units of ``bench/results/flops.json`` (see ``bench/flops.py``); ``None``
    for AT-GDINO-SAM and the MAVL proposer (not counted)."""
    if pipeline not in ("owod-bind", "sam-bind") or proposer != "owlv2":
        return None
    return video_flops(
        pipeline_units(preset), pipeline, frames=len(result.frames),
        proposals_per_frame=[int(f.boxes.shape[0]) for f in result.frames],
        points_per_side=kwargs.get("points_per_side", 32) if pipeline == "sam-bind" else None,
    )  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_pipeline(benchmark, case: Case, video, variant: tuple[str, str]) -> None:
    pipeline, proposer = variant
    frames, waveform, sample_rate = video
    models = load_case_models(case.preset, case.device, case.dtype, proposer)
    settings = settings_for(pipeline, case, video, proposer)
    kwargs, reference_kwargs = split_settings(settings)
    reference_models = load_case_models(case.preset, case.device, "float32", proposer)
    pipeline_fn = PIPELINES[pipeline]
    reference_fn = REFERENCES[pipeline]

    def run_cmsf() -> Any:
        out = pipeline_fn(frames, waveform, sample_rate, models, **kwargs)
        synchronize(case.device)
        return out

    def run_reference() -> torch.Tensor:
        return reference_fn(frames, waveform, sample_rate, reference_models, **reference_kwargs)

    memory: dict[str, Any] = {}
    if case.is_cuda or not benchmark.disabled:  # warm-up both paths (also measures their memory)
        _, cmsf_memory = with_peak_memory(run_cmsf, case.device)
        _, reference_memory = with_peak_memory(run_reference, case.device)
        memory = {
            "peak_gpu_mem_bytes": cmsf_memory["peak_gpu_mem_bytes"],
            "peak_gpu_mem_above_start_bytes": cmsf_memory["peak_gpu_mem_above_start_bytes"],
            "reference_peak_gpu_mem_bytes": reference_memory["peak_gpu_mem_bytes"],
            "reference_peak_gpu_mem_above_start_bytes": reference_memory["peak_gpu_mem_above_start_bytes"],
        }

    reference_times: list[float] = []
    cmsf_times: list[float] = []
    reference_out: list[torch.Tensor] = []

    def setup() -> None:  # untimed by pytest-benchmark: the reference loop of this round
        seconds, masks = timed(run_reference, case.device)
        reference_times.append(seconds)
        reference_out[:] = [masks]

    def target() -> Any:
        seconds, out = timed(run_cmsf, case.device)
        cmsf_times.append(seconds)
        return out

    benchmark.group = f"pipeline-{_variant_id(variant)}"
    result = benchmark.pedantic(target, setup=setup, rounds=_rounds(case), iterations=1, warmup_rounds=0)
    reference_masks = reference_out[0]

    cmsf_s = statistics.median(cmsf_times)
    reference_s = statistics.median(reference_times)
    per_frame = frame_agreement(result.masks, reference_masks)
    agreement = sum(per_frame) / len(per_frame)
    info: dict[str, Any] = {
        "pipeline": pipeline,
        "proposer": proposer if pipeline == "owod-bind" else None,
        "preset": case.preset,
        "device": case.device,
        "dtype": case.dtype,
        "reference_dtype": "float32",
        "frames": int(frames.shape[0]),
        "frame_size": list(frames.shape[-2:]),
        "audio_seconds": waveform.shape[-1] / sample_rate,
        "cmsf_s": cmsf_s,
        "reference_s": reference_s,
        "speedup": reference_s / cmsf_s,
        "cmsf_times_s": cmsf_times,
        "reference_times_s": reference_times,
        "agreement": agreement,
        "agreement_per_frame": per_frame,
        "coverage_cmsf": coverage(result.masks),
        "coverage_reference": coverage(reference_masks),
        "proposals_per_frame": [int(f.boxes.shape[0]) for f in result.frames],
        "kept_per_frame": [int(f.kept.sum()) for f in result.frames],
        "settings": {k: v for k, v in settings.items()},
        "s4_test_seconds": S4_TEST_VIDEOS * cmsf_s,
        "s4_test_seconds_basis": f"projected: {S4_TEST_VIDEOS} × cmsf_s (one video per call)",
        **memory,
        **throughput_info(run_flops(pipeline, proposer, case.preset, result, kwargs), cmsf_s, case.device),
    }
    if case.dtype != "float32":
        float32_result = pipeline_fn(frames, waveform, sample_rate, reference_models, **kwargs)
        info["agreement_vs_cmsf_float32"] = sum(frame_agreement(result.masks, float32_result.masks)) / len(per_frame)
    benchmark.extra_info.update(info)
    SUMMARY.append(
        {"pipeline": _variant_id(variant), "case": case.id, "cmsf_s": cmsf_s, "reference_s": reference_s,
         "speedup": reference_s / cmsf_s, "agreement": agreement}
    )

    # A comparison of two empty (or two full) results shows nothing: the workload settings
    # are chosen so that both paths produce partial masks; check that they did.
    assert 0.0 < info["coverage_reference"] < 1.0, f"reference masks are all empty or all full: {info}"
    if case.dtype == "float32":
        assert agreement >= FLOAT32_AGREEMENT, f"cmsf vs reference mask IoU {agreement:.4f} < {FLOAT32_AGREEMENT}"
    if case.is_cuda and case.preset == "paper-random":
        if case.dtype == "bfloat16":
            assert info["agreement_vs_cmsf_float32"] >= BFLOAT16_AGREEMENT, (
                f"bfloat16 vs float32 mask IoU {info['agreement_vs_cmsf_float32']:.4f} < {BFLOAT16_AGREEMENT}"
            )
            if pipeline in SPEEDUP_PIPELINES:
                assert info["speedup"] >= SPEEDUP_GOAL, (
                    f"{pipeline}: {info['speedup']:.2f}× the reference loop's throughput, goal {SPEEDUP_GOAL}×"
                )
