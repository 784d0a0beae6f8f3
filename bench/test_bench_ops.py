"""Benchmarks of the model-free operations: ``nms`` over boxes and masks, ``bind_filter``.

Sizes: N = 100, 500, 2000 proposals (SAM's automatic generator gives up to ~1000 masks per
frame before NMS; OWLv2 scores 3600 boxes per 960² image), masks at 224×224 (the paper's frame
size), ImageBind's 1024-d joint space.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from bench.harness import FRAME_SIZE, run_benchmark
from cmsf import bind_filter, nms
from cmsf.ops import mask_iou_matrix

NMS_SIZES = (100, 500, 2000)
NMS_IOU = 0.5  # the paper's SAM-BIND NMS threshold
SMOKE_MAX_CPU_MASKS = 500  # larger mask NMS on the CPU only when benchmarking (≈ 6 s at N = 2000)


def random_boxes(n: int, size: int = FRAME_SIZE, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` boxes clustered around a few objects (so NMS has work to do) and distinct scores."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(8, 2, generator=generator) * size
    which = torch.randint(0, 8, (n,), generator=generator)
    centre = centres[which] + torch.randn(n, 2, generator=generator) * size * 0.03
    half = (torch.rand(n, 2, generator=generator) * 0.2 + 0.05) * size
    boxes = torch.cat([centre - half, centre + half], dim=1).clamp(0, size)
    scores = torch.randperm(n, generator=generator).float() / n
    return boxes, scores


def random_masks(n: int, size: int = FRAME_SIZE, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` bool masks ``[n, size, size]``: the boxes of :func:`random_boxes` filled as ellipses."""
    boxes, scores = random_boxes(n, size, seed)
    ys = torch.arange(size).view(1, size, 1).float() + 0.5
    xs = torch.arange(size).view(1, 1, size).float() + 0.5
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2).view(n, 1, 1)
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2).view(n, 1, 1)
    rx = ((boxes[:, 2] - boxes[:, 0]) / 2).clamp(min=1).view(n, 1, 1)
    ry = ((boxes[:, 3] - boxes[:, 1]) / 2).clamp(min=1).view(n, 1, 1)
    masks = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0
    return masks, scores


def check_nms_result(keep: Tensor, iou: Tensor, scores: Tensor) -> None:
    """Kept indices are distinct, highest score first, and no two kept overlap above NMS_IOU;
    every suppressed item overlaps a higher-scoring kept one above NMS_IOU."""
    keep = keep.cpu()
    assert keep.numel() == keep.unique().numel()
    kept_scores = scores[keep]
    assert bool((kept_scores[:-1] >= kept_scores[1:]).all())
    pairwise = iou[keep][:, keep].clone()
    pairwise.fill_diagonal_(0)
    assert pairwise.numel() == 0 or float(pairwise.max()) <= NMS_IOU
    suppressed = torch.ones(scores.numel(), dtype=torch.bool)
    suppressed[keep] = False
    for index in suppressed.nonzero().flatten().tolist():
        blockers = keep[(iou[index, keep] > NMS_IOU) & (scores[keep] >= scores[index])]
        assert blockers.numel() > 0, f"item {index} suppressed without a kept overlap"


@pytest.mark.parametrize("n", NMS_SIZES)
def test_nms_boxes(benchmark, device: str, n: int) -> None:
    from torchvision.ops import box_iou

    boxes, scores = random_boxes(n)
    boxes_d, scores_d = boxes.to(device), scores.to(device)
    benchmark.group = f"nms-boxes-N{n}"
    keep = run_benchmark(
        benchmark, lambda: nms(boxes_d, scores_d, NMS_IOU), device, extra_info={"n": n, "device": device}
    )
    benchmark.extra_info["kept"] = int(keep.numel())
    check_nms_result(keep, box_iou(boxes, boxes), scores)


@pytest.mark.parametrize("n", NMS_SIZES)
def test_nms_masks(benchmark, device: str, n: int) -> None:
    if benchmark.disabled and device == "cpu" and n > SMOKE_MAX_CPU_MASKS:
        pytest.skip(f"mask NMS with N = {n} on the CPU runs only with benchmarking enabled (smoke-run time budget)")
    masks, scores = random_masks(n)
    masks_d, scores_d = masks.to(device), scores.to(device)
    benchmark.group = f"nms-masks-N{n}"
    keep = run_benchmark(
        benchmark,
        lambda: nms(masks_d, scores_d, NMS_IOU),
        device,
        rounds=3 if n >= 2000 else None,
        extra_info={"n": n, "device": device, "mask_size": FRAME_SIZE},
    )
    benchmark.extra_info["kept"] = int(keep.numel())
    check_nms_result(keep, mask_iou_matrix(masks_d, masks_d).cpu(), scores)


@pytest.mark.parametrize("k", (10, 100, 1000))
def test_bind_filter(benchmark, device: str, k: int) -> None:
    generator = torch.Generator().manual_seed(k)
    visual = torch.nn.functional.normalize(torch.randn(k, 1024, generator=generator), dim=1)
    audio = torch.nn.functional.normalize(torch.randn(1024, generator=generator), dim=0) * 20
    visual_d, audio_d = visual.to(device), audio.to(device)
    benchmark.group = f"bind_filter-K{k}"
    keep, scores = run_benchmark(
        benchmark, lambda: bind_filter(visual_d, audio_d, 0.7, "softmax"), device, extra_info={"k": k, "device": device}
    )
    expected = torch.softmax(visual.double() @ audio.double(), dim=0)
    torch.testing.assert_close(scores.cpu(), expected, rtol=1e-9, atol=1e-12)
    assert int(keep.sum()) <= 1
