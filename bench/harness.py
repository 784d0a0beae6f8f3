"""Shared machinery of the benchmark suite: the (preset, device, dtype) cases, the inputs,
timing with CUDA synchronisation, peak GPU memory, and mask agreement.

Nothing here is cmsf API; it is what every ``bench/test_bench_*.py`` module needs to measure
cmsf the same way.
"""

from __future__ import annotations

import math
import os
import re
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

PRESETS = ("tiny", "paper-random")
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "bfloat16")

PAPER_ON_CPU_ENV = "CMSF_BENCH_PAPER_ON_CPU"

# One AVSBench video: 5 frames of 224×224 (the paper resizes every frame to 224×224) and 5 s of
# 16 kHz mono audio, one second per frame.
VIDEO_FRAMES = 5
FRAME_SIZE = 224
SAMPLE_RATE = 16000
VIDEO_SECONDS = 5.0

# AVSBench S4 (AVSBench-object, single source): 4932 videos, split 3452 / 740 / 740
# (train / val / test); every video has 5 frames (24 660 frames; 10 852 ground-truth masks =
# 3452 train videos × 1 annotated frame + 1480 val/test videos × 5). The S4 test split is thus
# 740 videos = 3700 frames. MS3: 424 videos, 296 / 64 / 64.
S4_TEST_VIDEOS = 740


@dataclass(frozen=True)
class Case:
    """One measured configuration: a model preset on a device at a precision."""

    preset: str
    device: str
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.preset}-{self.device}-{self.dtype}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def skip_reason(self) -> Optional[str]:
        """Why this machine cannot run the case, or ``None`` when it can."""
        return device_skip_reason(self.device) or dtype_skip_reason(self.device, self.dtype) or preset_skip_reason(
            self.preset, self.device
        )


def device_skip_reason(device: str) -> Optional[str]:
    """``None`` when ``device`` is usable here, else why not."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "GPU case: CUDA is not available on this machine (no GPU)"
    return None


def dtype_skip_reason(device: str, dtype: str) -> Optional[str]:
    """bfloat16 is measured on CUDA only."""
    if dtype == "bfloat16" and not device.startswith("cuda"):
        return (
            "bfloat16 is measured on CUDA only: CPU bfloat16 matmuls are slower than float32 on "
            "most CPUs and CPU is not a bfloat16 deployment target"
        )
    return None


def preset_skip_reason(preset: str, device: str) -> Optional[str]:
    """The paper's full architectures run on CUDA only unless ``CMSF_BENCH_PAPER_ON_CPU=1``."""
    if preset == "paper-random" and not device.startswith("cuda") and os.environ.get(PAPER_ON_CPU_ENV) != "1":
        return (
            "paper-random (the paper's full architectures: SAM ViT-H, GroundingDINO, OWLv2, AST, "
            f"ImageBind-Huge) is too slow on CPU; set {PAPER_ON_CPU_ENV}=1 to run it anyway"
        )
    return None


def all_cases() -> list[Case]:
    """Every (preset, device, dtype) combination, in a stable order (cheap ones first)."""
    return [Case(p, d, t) for p in PRESETS for d in DEVICES for t in DTYPES]


# ---------------------------------------------------------------------------------------------
# Models, loaded once per session per (preset, device, dtype)
# ---------------------------------------------------------------------------------------------

_MODELS: dict[tuple[str, str, str, str], Any] = {}
LOAD_SECONDS: dict[tuple[str, str, str, str], float] = {}
"""Seconds each (preset, device, dtype) took to build (reported, never benchmarked)."""

SUMMARY: list[dict[str, Any]] = []
"""Rows the pipeline benchmarks add (cmsf vs reference), printed at the end of the run."""


PROPOSERS = ("owlv2", "mavl")
"""OWOD-BIND's proposers: OWLv2 (every preset), MAVL (``load_models(..., mavl="random")``)."""


def load_case_models(preset: str, device: str, dtype: str, proposer: str = "owlv2") -> Any:
    """``cmsf.load_models(preset, device, dtype)`` with every component loaded, once per
    session per (preset, device, dtype, proposer): loading never falls inside a timed region.
    ``proposer="mavl"`` adds a MAVL of the preset's size with random weights (a second set of
    models: ``Models`` components are fixed at ``load_models``)."""
    key = (preset, device, dtype, proposer)
    if key not in _MODELS:
        from cmsf.models.loading import load_models

        start = time.perf_counter()
        extra = {"mavl": "random"} if proposer == "mavl" else {}
        _MODELS[key] = load_models(preset, device=device, dtype=getattr(torch, dtype), **extra).load()
        synchronize(device)
        LOAD_SECONDS[key] = time.perf_counter() - start
    return _MODELS[key]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def avsbench_video(
    seed: int = 0,
    frames: int = VIDEO_FRAMES,
    size: int = FRAME_SIZE,
    seconds: float = VIDEO_SECONDS,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[Tensor, Tensor, int]:
    """A deterministic AVSBench-shaped video: ``(frames, waveform, sample_rate)``.

    Frames are ``Tensor[T, 3, size, size]`` uint8: a smooth random background with a few
    coloured rectangles and discs that drift between frames (so that proposal models and SAM
    see edges and regions, not white noise). The waveform is ``Tensor[1, S]`` float32 in
    [-1, 1]: a mix of tones whose pitch changes each second, plus a little noise.
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(frames, 3, 7, 7, generator=generator)
    background = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    images = background.clamp(0, 1).mul(160).add(40)
    ys = torch.arange(size).view(size, 1).float()
    xs = torch.arange(size).view(1, size).float()
    num_shapes = 4
    centres = torch.rand(num_shapes, 2, generator=generator) * size * 0.6 + size * 0.2
    radii = torch.rand(num_shapes, generator=generator) * size * 0.15 + size * 0.08
    colours = torch.rand(num_shapes, 3, generator=generator) * 255
    drift = (torch.rand(num_shapes, 2, generator=generator) - 0.5) * size * 0.05
    for t in range(frames):
        for k in range(num_shapes):
            cy, cx = (centres[k] + drift[k] * t).tolist()
            r = float(radii[k])
            if k % 2 == 0:
                region = ((ys - cy) ** 2 + (xs - cx) ** 2) <= r * r
            else:
                region = ((ys - cy).abs() <= r * 0.7) & ((xs - cx).abs() <= r)
            images[t][:, region] = colours[k].view(3, 1)
    video = images.round().clamp(0, 255).to(torch.uint8)

    samples = int(round(seconds * sample_rate))
    time_axis = torch.arange(samples, dtype=torch.float64) / sample_rate
    pitches = 200.0 + 600.0 * torch.rand(max(1, math.ceil(seconds)), generator=generator, dtype=torch.float64)
    second = torch.clamp((time_axis).floor().long(), max=pitches.numel() - 1)
    tone = torch.sin(2 * math.pi * pitches[second] * time_axis) + 0.5 * torch.sin(
        2 * math.pi * 2.5 * pitches[second] * time_axis
    )
    noise = torch.randn(samples, generator=generator, dtype=torch.float64) * 0.05
    waveform = (0.3 * tone + noise).clamp(-1, 1).to(torch.float32).unsqueeze(0)
    return video, waveform, sample_rate


def write_avsbench_s4(root: Path, videos: int) -> list[Any]:
    """An AVSBench-S4-shaped test split of ``videos`` synthetic videos under ``root`` (frames of
    :func:`avsbench_video` as 224×224 PNGs, 5 s of 16-bit 16 kHz wav, the csv; no ground
    truth), for benchmarks that read videos from disk as ``cmsf eval`` does. Returns the
    ``cmsf.io.avsbench.VideoEntry`` of each video, in order."""
    from cmsf.io import avsbench
    from cmsf.io.media import write_png_image

    names = [f"bench_{i:04d}" for i in range(videos)]
    (root / "Single-source").mkdir(parents=True, exist_ok=True)
    csv_lines = ["name,start,category,split"] + [f"{name},0,synthetic,test" for name in names]
    (root / "Single-source/s4_meta_data.csv").write_text("\n".join(csv_lines) + "\n", encoding="utf-8")
    entries = avsbench.list_videos(root, "s4", "test")
    for i, entry in enumerate(entries):
        frames, waveform, sample_rate = avsbench_video(seed=i)
        for path, frame in zip(avsbench.frame_paths(root, "s4", entry), frames):
            write_png_image(path, frame)
        wav = avsbench.audio_path(root, "s4", entry)
        wav.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(wav), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes((waveform[0] * 32767).round().to(torch.int16).numpy().tobytes())
    return entries


# ---------------------------------------------------------------------------------------------
# GPU peaks: achieved FLOP/s as a fraction of the GPU's dense bfloat16 peak
# ---------------------------------------------------------------------------------------------

DENSE_BF16_PEAK_TFLOPS: tuple[tuple[str, float, str], ...] = (
    (r"\bH100\b.*\bPCIe\b", 756.0, "NVIDIA H100 datasheet, H100 PCIe: 1,513 TFLOPS BF16 with sparsity; dense is half"),
    (r"\bH100\b(?!.*\bNVL\b)", 989.0, "NVIDIA H100 datasheet, H100 SXM: 1,979 TFLOPS BF16 with sparsity; dense is half"),
    (r"\bH200\b(?!.*\bNVL\b)", 989.0, "NVIDIA H200 datasheet, H200 SXM: 1,979 TFLOPS BF16 with sparsity; dense is half"),
    (r"\bA100\b", 312.0, "NVIDIA A100 datasheet: 312 TFLOPS BF16 dense (624 with sparsity)"),
    (r"\bL40S\b", 362.0, "NVIDIA L40S datasheet: 733 TFLOPS BF16 with sparsity; dense is half"),
    (r"\bL4\b", 121.0, "NVIDIA L4 datasheet: 242 TFLOPS BF16 with sparsity; dense is half"),
    (r"\bA10\b", 125.0, "NVIDIA A10 datasheet: 125 TFLOPS BF16 dense (250 with sparsity)"),
)
"""``(pattern of torch.cuda.get_device_name, dense bf16 TFLOP/s, source)``, first match wins.
Vendors quote tensor-core peaks "with sparsity" (2:4 structured), twice the dense rate that
cmsf's dense models can reach. A GPU not listed has no peak unless ``CMSF_BENCH_PEAK_TFLOPS``
gives one."""

PEAK_ENV = "CMSF_BENCH_PEAK_TFLOPS"


def dense_bf16_peak(gpu_name: Optional[str]) -> tuple[Optional[float], Optional[str]]:
    """``(TFLOP/s, source)`` of ``gpu_name``'s dense bf16 tensor-core peak, ``(None, None)`` if
    unknown or no GPU (``CMSF_BENCH_PEAK_TFLOPS`` overrides the table for a GPU)."""
    if not gpu_name:
        return None, None
    override = os.environ.get(PEAK_ENV)
    if override:
        return float(override), f"{PEAK_ENV}={override}"
    for pattern, tflops, source in DENSE_BF16_PEAK_TFLOPS:
        if re.search(pattern, gpu_name):
            return tflops, source
    return None, None


def gpu_name(device: str) -> Optional[str]:
    """``torch.cuda.get_device_name`` of a CUDA device, ``None`` for the CPU."""
    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None


def throughput_info(flops: Optional[int], seconds: float, device: str) -> dict[str, Any]:
    """``extra_info`` entries of achieved throughput: ``flops_per_video``, ``achieved_tflops``,
    ``gpu``, ``gpu_dense_bf16_peak_tflops`` (+ its source) and ``fraction_of_peak`` (achieved ÷
    peak; ``None`` on the CPU, for an unknown GPU or without a FLOP count)."""
    name = gpu_name(device)
    peak, source = dense_bf16_peak(name)
    achieved = None if flops is None else flops / seconds / 1e12
    return {
        "flops_per_video": flops,
        "achieved_tflops": achieved,
        "gpu": name,
        "gpu_dense_bf16_peak_tflops": peak,
        "gpu_dense_bf16_peak_source": source,
        "fraction_of_peak": None if achieved is None or peak is None else achieved / peak,
    }


# ---------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """Run ``fn()`` once and return ``(seconds, result)``, synchronising CUDA before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def with_peak_memory(fn: Callable[[], Any], device: str) -> tuple[Any, dict[str, Optional[int]]]:
    """Run ``fn()`` once; return its result and the peak GPU memory it used.

    Returns:
        ``(result, info)`` with ``info["peak_gpu_mem_bytes"]`` (``torch.cuda.max_memory_allocated``
        after a ``reset_peak_memory_stats``: everything allocated at the peak, weights included)
        and ``info["peak_gpu_mem_above_start_bytes"]`` (the peak minus what was allocated before
        the call: the stage's own working memory). Both ``None`` on the CPU.
    """
    if not device.startswith("cuda"):
        return fn(), {"peak_gpu_mem_bytes": None, "peak_gpu_mem_above_start_bytes": None}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return result, {"peak_gpu_mem_bytes": int(peak), "peak_gpu_mem_above_start_bytes": int(peak - start)}


def run_benchmark(
    benchmark: Any,
    fn: Callable[[], Any],
    device: str,
    *,
    rounds: Optional[int] = None,
    extra_info: Optional[dict[str, Any]] = None,
) -> Any:
    """Benchmark ``fn`` with CUDA synchronisation and record its peak GPU memory.

    With benchmarking enabled, one untimed warm-up call (which also measures peak GPU memory)
    precedes the timed rounds: ``rounds`` fixed rounds through ``benchmark.pedantic`` for slow
    calls, or pytest-benchmark's own calibration when ``rounds`` is ``None`` (fast calls). With
    ``--benchmark-disable`` ``fn`` runs exactly once (the smoke run), memory measured on it.

    Returns ``fn``'s result (of the last call).
    """

    def target() -> Any:
        out = fn()
        synchronize(device)
        return out

    info: dict[str, Any] = dict(extra_info or {})
    if benchmark.disabled:
        result, memory = with_peak_memory(lambda: benchmark.pedantic(target, rounds=1, iterations=1), device)
    else:
        _, memory = with_peak_memory(target, device)
        if rounds is None:
            result = benchmark(target)
        else:
            result = benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=0)
    info.update(memory)
    benchmark.extra_info.update(info)
    return result


# ---------------------------------------------------------------------------------------------
# Agreement of two sets of masks
# ---------------------------------------------------------------------------------------------


def frame_agreement(a: Tensor, b: Tensor) -> list[float]:
    """Per-frame IoU of two ``Tensor[T, H, W]`` bool mask stacks; a frame where both masks are
    empty counts as full agreement (1.0), one empty and one not as 0.0."""
    if a.shape != b.shape:
        raise ValueError(f"masks: expected the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a.bool().cpu().flatten(1)
    b = b.bool().cpu().flatten(1)
    inter = (a & b).sum(1).double()
    union = (a | b).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return [float(v) for v in iou]


def mask_agreement(a: Tensor, b: Tensor) -> float:
    """Mean over frames of :func:`frame_agreement`."""
    values = frame_agreement(a, b)
    return sum(values) / len(values)


def coverage(masks: Tensor) -> float:
    """Fraction of pixels set in ``masks`` (any shape, bool): tells empty/full masks apart."""
    return float(masks.float().mean()) if masks.numel() else 0.0
