"""Benchmarks of the AVSBench metrics: one 5-frame 224×224 video, and a whole S4 test split
(740 videos × 5 frames) scored video by video as AVSBench's test script does, then averaged
with ``dataset_scores``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from bench.harness import FRAME_SIZE, S4_TEST_VIDEOS, VIDEO_FRAMES, run_benchmark
from cmsf import dataset_scores, fscore, miou


def predictions(videos: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(pred [V, 5, 224, 224] probabilities, target [V, 5, 224, 224] bool)``: each frame's
    target is a disc, its prediction a noisy blurred version of it (realistic score spread)."""
    generator = torch.Generator().manual_seed(seed)
    size = FRAME_SIZE
    ys = torch.arange(size).view(1, size, 1).float()
    xs = torch.arange(size).view(1, 1, size).float()
    n = videos * VIDEO_FRAMES
    cy, cx = (torch.rand(2, n, 1, 1, generator=generator) * size * 0.6 + size * 0.2).unbind(0)
    r = torch.rand(n, 1, 1, generator=generator) * size * 0.2 + size * 0.05
    distance = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt()
    target = distance <= r
    pred = torch.sigmoid((r - distance) / 6.0 + torch.randn(n, 1, 1, generator=generator))
    shape = (videos, VIDEO_FRAMES, size, size)
    return pred.reshape(shape), target.reshape(shape)


@pytest.fixture(scope="module")
def one_video() -> tuple[Tensor, Tensor]:
    pred, target = predictions(1, seed=1)
    return pred[0], target[0]


@pytest.fixture(scope="module")
def s4_test() -> tuple[Tensor, Tensor]:
    return predictions(S4_TEST_VIDEOS, seed=2)


@pytest.mark.parametrize("metric", ["miou", "fscore"])
def test_metric_one_video(benchmark, device: str, metric: str, one_video: tuple[Tensor, Tensor]) -> None:
    fn = {"miou": miou, "fscore": fscore}[metric]
    pred, target = (t.to(device) for t in one_video)
    benchmark.group = f"{metric}-one-video"
    value = run_benchmark(
        benchmark, lambda: fn(pred, target), device, extra_info={"device": device, "frames": VIDEO_FRAMES}
    )
    assert 0.0 < value <= 1.0


@pytest.mark.parametrize("metric", ["miou", "fscore"])
def test_metric_s4_test_split(benchmark, device: str, metric: str, request: pytest.FixtureRequest) -> None:
    if benchmark.disabled and device == "cpu":
        pytest.skip(
            f"the S4-test-sized batch ({S4_TEST_VIDEOS} videos) on the CPU runs only with benchmarking "
            "enabled (smoke-run time budget); the smoke run scores the one-video case"
        )
    fn = {"miou": miou, "fscore": fscore}[metric]
    pred, target = (t.to(device) for t in request.getfixturevalue("s4_test"))  # built only when run

    def score_split() -> float:
        per_video = [(fn(p, y), 0.0) for p, y in zip(pred, target)]  # one video per call, as AVSBench
        return dataset_scores(per_video).miou

    benchmark.group = f"{metric}-s4-test"
    value = run_benchmark(
        benchmark,
        score_split,
        device,
        rounds=1,
        extra_info={"device": device, "videos": S4_TEST_VIDEOS, "frames": S4_TEST_VIDEOS * VIDEO_FRAMES},
    )
    assert 0.0 < value <= 1.0
