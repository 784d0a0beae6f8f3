"""AVSBench metrics: mIoU and F-score, computed exactly as the AVSBench reference code does.

The reference (``avs_scripts/*/utils/utility.py`` of the AVSBench repository) defines
``mask_iou(pred, target)`` and ``Eval_Fmeasure(pred, gt)``; both take *logits* and apply a sigmoid
first. cmsf's functions take probabilities in [0, 1] (or bools) instead, so

    miou(p, y)   == mask_iou(logit(p), y)
    fscore(p, y) == Eval_Fmeasure(logit(p), y)

with ``logit(True) = +inf`` and ``logit(False) = -inf``. Arithmetic is float32, in the
reference's order, so the figures agree with it to the last bit in all but pathological cases.

Both score *one video* (its N frames, AVSBench evaluates one video per batch). A dataset's figure
is the mean of its per-video figures: see :func:`dataset_scores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

IOU_EPS = 1e-7
FSCORE_BETA2 = 0.3
FSCORE_NUM_THRESHOLDS = 255


def _check_pair(pred: Tensor, target: Tensor) -> None:
    for name, value in (("pred", pred), ("target", target)):
        if not isinstance(value, Tensor):
            raise ValueError(f"{name}: expected Tensor[N, H, W], got {type(value).__name__}")
        if value.ndim != 3:
            raise ValueError(f"{name}: expected Tensor[N, H, W], got shape {tuple(value.shape)}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target: expected the same shape [N, H, W], got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.shape[0] == 0:
        raise ValueError("pred: expected at least one frame, got N = 0")
    if pred.shape[1] == 0 or pred.shape[2] == 0:
        raise ValueError(f"pred: expected frames of at least one pixel, got H × W = {pred.shape[1]} × {pred.shape[2]}")
    if target.is_floating_point() or target.is_complex():
        if bool(torch.isnan(target).any()):
            raise ValueError("target: contains NaN (expected a mask: any non-zero pixel is foreground)")
    if pred.dtype != torch.bool:
        if not pred.is_floating_point():
            raise ValueError(f"pred: expected probabilities (floating point) or bool, got dtype {pred.dtype}")
        if bool(torch.isnan(pred).any()):
            raise ValueError("pred: contains NaN")
        if bool((pred < 0).any()) or bool((pred > 1).any()):
            raise ValueError("pred: expected probabilities in [0, 1]")


def _probabilities(pred: Tensor) -> Tensor:
    return pred.to(torch.float32)


def _foreground(target: Tensor) -> Tensor:
    """Any non-zero pixel of ``target`` is foreground: a float32 0/1 mask."""
    return (target != 0).to(torch.float32)


def miou(pred: Tensor, target: Tensor) -> float:
    """Mean IoU of one video's frames, the AVSBench protocol.

    Args:
        pred (Tensor[N, H, W]): probabilities in [0, 1] (float) or a bool mask.
        target (Tensor[N, H, W]): ground truth; any non-zero pixel is foreground.

    Returns:
        The mean over the N frames of the per-frame IoU, where the prediction is binarised as
        ``pred > 0.5`` and IoU = intersection / (union + 1e-7). A frame whose target is empty
        scores the agreement of the backgrounds instead, (pixels background in both) /
        (all pixels + 1e-7). Equals AVSBench's ``mask_iou(logit(pred), target)``.
    """
    _check_pair(pred, target)
    binary = (_probabilities(pred) > 0.5).to(torch.float32)
    truth = _foreground(target)
    num_frames = binary.shape[0]
    num_pixels = binary.shape[-1] * binary.shape[-2]
    empty = truth.sum(2).sum(1) == 0
    inter = (binary * truth).sum(2).sum(1)
    union = torch.max(binary, truth).sum(2).sum(1)
    background_agreement = ((1 - truth) * (1 - binary)).sum(2).sum(1)
    inter[empty] = background_agreement[empty]
    union[empty] = num_pixels
    return float(torch.sum(inter / (union + IOU_EPS)) / num_frames)


def fscore_curve(pred: Tensor, target: Tensor) -> tuple[Tensor, int]:
    """Per-threshold F-measure of one video, averaged over its frames with a non-empty target.

    Returns:
        ``(curve, frames)``: ``curve (Tensor[255])`` float32, the F-measure at each of the
        thresholds ``linspace(0, 1 - 1e-10, 255)`` (float32, so the last one is 1.0) averaged over
        the ``frames`` frames whose target is not empty; all zeros when ``frames == 0``.
    """
    _check_pair(pred, target)
    probabilities = _probabilities(pred)
    truth = _foreground(target)
    thresholds = torch.linspace(0, 1 - 1e-10, FSCORE_NUM_THRESHOLDS)
    beta2 = FSCORE_BETA2
    total = torch.zeros(FSCORE_NUM_THRESHOLDS)
    curve = torch.zeros(FSCORE_NUM_THRESHOLDS)
    frames = 0
    for frame_pred, frame_truth in zip(probabilities, truth):
        if torch.mean(frame_truth) == 0.0:
            continue
        precision, recall = _precision_recall(frame_pred, frame_truth, thresholds)
        f = (1 + beta2) * precision * recall / (beta2 * precision + recall)
        f[f != f] = 0
        total = total + f
        frames += 1
        curve = total / frames
    return curve, frames


def _precision_recall(pred: Tensor, truth: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """Precision and recall of ``pred >= threshold`` for every threshold at once (float32).

    Counts come from one sort of the pixels instead of one pass per threshold: the number of
    thresholds a pixel passes is ``searchsorted(thresholds, p, right=True)``; the positives and
    true positives at threshold i are the pixels passing more than i thresholds.
    """
    device = pred.device
    thresholds = thresholds.to(device)
    num = thresholds.numel()
    passed = torch.searchsorted(thresholds, pred.reshape(-1).contiguous(), right=True)
    counts = torch.bincount(passed, minlength=num + 1)
    hits = torch.bincount(passed, weights=truth.reshape(-1).to(torch.float64), minlength=num + 1)
    # pixels passing threshold i are those with passed >= i + 1
    positives = counts.flip(0).cumsum(0).flip(0)[1:].to(torch.float32)
    true_positives = hits.flip(0).cumsum(0).flip(0)[1:].to(torch.float32)
    target_pixels = truth.sum()
    precision = true_positives / (positives + 1e-20)
    recall = true_positives / (target_pixels + 1e-20)
    return precision.cpu(), recall.cpu()


def fscore(pred: Tensor, target: Tensor) -> float:
    """F-score of one video, the AVSBench protocol (β² = 0.3).

    Args:
        pred (Tensor[N, H, W]): probabilities in [0, 1] (float) or a bool mask.
        target (Tensor[N, H, W]): ground truth; any non-zero pixel is foreground.

    Returns:
        For each of 255 thresholds ``linspace(0, 1 - 1e-10, 255)`` a pixel is positive when
        ``pred >= threshold``; precision = tp / (positives + 1e-20), recall =
        tp / (target pixels + 1e-20), F = 1.3·P·R / (0.3·P + R) with NaN taken as 0. Frames with an
        empty target are left out, F is averaged over the other frames per threshold, and the
        result is the maximum over thresholds of that average. A video whose targets are all
        empty scores 0, as in the reference. Equals AVSBench's ``Eval_Fmeasure(logit(pred),
        target)``.
    """
    curve, _ = fscore_curve(pred, target)
    return float(curve.max())


@dataclass(frozen=True)
class DatasetScores:
    """A dataset's figures: the mean of per-video ``miou`` and ``fscore`` over ``videos`` videos."""

    miou: float
    fscore: float
    videos: int


def dataset_scores(per_video: Iterable[tuple[float, float]]) -> DatasetScores:
    """Average per-video ``(miou, fscore)`` pairs into the dataset's figures (AVSBench's way)."""
    pairs = list(per_video)
    if not pairs:
        raise ValueError("per_video: expected at least one video's scores")
    count = len(pairs)
    return DatasetScores(
        miou=sum(p[0] for p in pairs) / count,
        fscore=sum(p[1] for p in pairs) / count,
        videos=count,
    )
