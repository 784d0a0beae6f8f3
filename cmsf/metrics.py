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

Papers disagree on how frames are averaged, which moves mIoU by points; :func:`score_video` keeps
what every protocol needs and :class:`VariantTotals` adds up a split's videos into the variants
reported next to AVSBench's figures (``summary.json``'s ``"variants"``):

- ``miou_per_frame``: AVSBench's ``mask_iou`` of each frame alone (a frame with an empty target
  scores its background agreement, as there), averaged over all frames of the split. Equals
  ``miou`` of all the split's frames as one batch, bit for bit.
- ``fscore_per_frame``: AVSBench's ``Eval_Fmeasure`` of each frame alone (its own best
  threshold), averaged (float64) over the frames whose target is not empty; ``None`` when there is
  no such frame (AVSBench's ``Eval_Fmeasure`` would say 0 for such a batch).
- ``iou_dataset``: Σ intersections / Σ unions over all frames (raw pixel counts: a frame with an
  empty target adds its false positives to the unions and nothing else; no epsilon); 1.0 when
  Σ unions = 0 (nothing predicted and nothing to find anywhere).
- ``fscore_dataset``: the per-frame precision/recall F-curves of all frames with a non-empty
  target in the split averaged per threshold, then the maximum over thresholds (one threshold for
  the whole split, as TACO's evaluation aggregates). Equals ``fscore`` of all the split's frames as
  one batch, bit for bit; ``None`` when no frame has a non-empty target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

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
        The mean over the N frames of the per-frame IoU (:func:`frame_ious`). Equals AVSBench's
        ``mask_iou(logit(pred), target)``.
    """
    return _mean_iou(frame_ious(pred, target))


def _mean_iou(ious: Tensor) -> float:
    """AVSBench's mean of per-frame IoUs: a float32 sum divided by the frame count."""
    return float(torch.sum(ious) / ious.shape[0])


def _binarised(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(pred > 0.5, target != 0)`` as float32 0/1 tensors, after the checks."""
    _check_pair(pred, target)
    return (_probabilities(pred) > 0.5).to(torch.float32), _foreground(target)


def frame_ious(pred: Tensor, target: Tensor) -> Tensor:
    """AVSBench's IoU of each frame alone.

    Args:
        pred (Tensor[N, H, W]): probabilities in [0, 1] (float) or a bool mask.
        target (Tensor[N, H, W]): ground truth; any non-zero pixel is foreground.

    Returns:
        ``Tensor[N]`` float32: with the prediction binarised as ``pred > 0.5``, IoU =
        intersection / (union + 1e-7); a frame whose target is empty scores the agreement of the
        backgrounds instead, (pixels background in both) / (all pixels + 1e-7).
    """
    binary, truth = _binarised(pred, target)
    return _frame_ious(binary, truth)


def _frame_ious(binary: Tensor, truth: Tensor) -> Tensor:
    num_pixels = binary.shape[-1] * binary.shape[-2]
    empty = truth.sum(2).sum(1) == 0
    inter = (binary * truth).sum(2).sum(1)
    union = torch.max(binary, truth).sum(2).sum(1)
    background_agreement = ((1 - truth) * (1 - binary)).sum(2).sum(1)
    inter[empty] = background_agreement[empty]
    union[empty] = num_pixels
    return inter / (union + IOU_EPS)


def fscore_curve(pred: Tensor, target: Tensor) -> tuple[Tensor, int]:
    """Per-threshold F-measure of one video, averaged over its frames with a non-empty target.

    Returns:
        ``(curve, frames)``: ``curve (Tensor[255])`` float32, the F-measure at each of the
        thresholds ``linspace(0, 1 - 1e-10, 255)`` (float32, so the last one is 1.0) averaged over
        the ``frames`` frames whose target is not empty; all zeros when ``frames == 0``.
    """
    curves = frame_fscore_curves(pred, target)
    return _mean_curve(curves), int(curves.shape[0])


def frame_fscore_curves(pred: Tensor, target: Tensor) -> Tensor:
    """The F-curve of each frame whose target is not empty (β² = 0.3, see :func:`fscore`).

    Returns:
        ``Tensor[M, 255]`` float32, one row per frame with a non-empty target, in frame order
        (M = 0 when every target is empty): F at each threshold, NaN taken as 0.
    """
    _check_pair(pred, target)
    return _frame_fscore_curves(_probabilities(pred), _foreground(target))


def _frame_fscore_curves(probabilities: Tensor, truth: Tensor) -> Tensor:
    thresholds = torch.linspace(0, 1 - 1e-10, FSCORE_NUM_THRESHOLDS)
    beta2 = FSCORE_BETA2
    curves = []
    for frame_pred, frame_truth in zip(probabilities, truth):
        if torch.mean(frame_truth) == 0.0:
            continue
        precision, recall = _precision_recall(frame_pred, frame_truth, thresholds)
        f = (1 + beta2) * precision * recall / (beta2 * precision + recall)
        f[f != f] = 0
        curves.append(f)
    if not curves:
        return torch.zeros(0, FSCORE_NUM_THRESHOLDS)
    return torch.stack(curves)


def _add_curves(total: Tensor, curves: Tensor) -> Tensor:
    """``total`` plus each row of ``curves`` in turn, in float32: AVSBench's running sum."""
    for curve in curves:
        total = total + curve
    return total


def _mean_curve(curves: Tensor) -> Tensor:
    """AVSBench's average of per-frame F-curves ``Tensor[M, 255]``: a running float32 sum in frame
    order divided by M; all zeros when M = 0."""
    if curves.shape[0] == 0:
        return torch.zeros(FSCORE_NUM_THRESHOLDS)
    return _add_curves(torch.zeros(FSCORE_NUM_THRESHOLDS), curves) / curves.shape[0]


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


def _pooled_iou(intersection: int, union: int) -> float:
    """Σ intersections / Σ unions; 1.0 when the union is empty (nothing predicted, nothing to find)."""
    return intersection / union if union > 0 else 1.0


@dataclass(frozen=True)
class VideoScores:
    """One video's frames scored for AVSBench's figures and every variant (:func:`score_video`).

    Attributes:
        frame_ious (Tensor[N]): float32, AVSBench's IoU of each frame alone (:func:`frame_ious`).
        intersections (Tensor[N]), unions (Tensor[N]): int64, raw pixel counts of each frame
            (prediction ``> 0.5`` against target ``!= 0``; no empty-target rule).
        fscore_curves (Tensor[M, 255]): float32, the F-curve of each frame with a non-empty target
            (:func:`frame_fscore_curves`).
    """

    frame_ious: Tensor
    intersections: Tensor
    unions: Tensor
    fscore_curves: Tensor

    @property
    def miou(self) -> float:
        """AVSBench's mIoU of the video (equals :func:`miou`)."""
        return _mean_iou(self.frame_ious)

    @property
    def fscore(self) -> float:
        """AVSBench's F-score of the video (equals :func:`fscore`): 0 when every target is empty."""
        return float(_mean_curve(self.fscore_curves).max())

    @property
    def frame_fscores(self) -> list[float]:
        """The F-score of each frame with a non-empty target alone (its own best threshold)."""
        return [float(curve.max()) for curve in self.fscore_curves]

    @property
    def fscore_per_frame(self) -> Optional[float]:
        """The mean (float64) of :attr:`frame_fscores`; ``None`` when every target is empty."""
        values = self.frame_fscores
        return sum(values) / len(values) if values else None

    @property
    def iou_pooled(self) -> float:
        """Σ intersections / Σ unions over the video's frames (1.0 when Σ unions = 0)."""
        return _pooled_iou(int(self.intersections.sum()), int(self.unions.sum()))


def score_video(pred: Tensor, target: Tensor) -> VideoScores:
    """Score one video's frames for AVSBench's figures and the variants (one pass over them).

    Args:
        pred (Tensor[N, H, W]): probabilities in [0, 1] (float) or a bool mask.
        target (Tensor[N, H, W]): ground truth; any non-zero pixel is foreground.

    ``score_video(p, y).miou == miou(p, y)`` and ``.fscore == fscore(p, y)``, bit for bit.
    """
    binary, truth = _binarised(pred, target)
    return VideoScores(
        frame_ious=_frame_ious(binary, truth),
        intersections=(binary * truth).sum((1, 2)).to(torch.int64),
        unions=torch.max(binary, truth).sum((1, 2)).to(torch.int64),
        fscore_curves=_frame_fscore_curves(_probabilities(pred), truth),
    )


@dataclass
class VariantTotals:
    """Running totals of a split's videos, added in order with :meth:`add`, for the variants of
    the module docstring (:meth:`variants`). Keeps 4 bytes per frame, 8 per frame with a
    non-empty target and one F-curve: a 3700-frame split takes a few tens of kB."""

    frame_ious: list[Tensor] = field(default_factory=list)
    frame_fscores: list[float] = field(default_factory=list)
    intersection: int = 0
    union: int = 0
    fscore_total: Tensor = field(default_factory=lambda: torch.zeros(FSCORE_NUM_THRESHOLDS))
    fscore_frames: int = 0

    def add(self, video: VideoScores) -> None:
        """Add one video's frames (after those added before)."""
        self.frame_ious.append(video.frame_ious)
        self.frame_fscores.extend(video.frame_fscores)
        self.intersection += int(video.intersections.sum())
        self.union += int(video.unions.sum())
        self.fscore_total = _add_curves(self.fscore_total, video.fscore_curves)
        self.fscore_frames += int(video.fscore_curves.shape[0])

    def variants(self) -> dict[str, Optional[float]]:
        """``miou_per_frame``, ``fscore_per_frame``, ``iou_dataset``, ``fscore_dataset`` (see
        the module docstring for their definitions and edge cases)."""
        if not self.frame_ious:
            raise ValueError("VariantTotals: expected at least one video's scores")
        return {
            "miou_per_frame": _mean_iou(torch.cat(self.frame_ious)),
            "fscore_per_frame": (
                sum(self.frame_fscores) / len(self.frame_fscores) if self.frame_fscores else None
            ),
            "iou_dataset": _pooled_iou(self.intersection, self.union),
            "fscore_dataset": (
                float((self.fscore_total / self.fscore_frames).max()) if self.fscore_frames else None
            ),
        }


VARIANTS = ("miou_per_frame", "fscore_per_frame", "iou_dataset", "fscore_dataset")
"""The names of :meth:`VariantTotals.variants`, in the order reports show them."""
