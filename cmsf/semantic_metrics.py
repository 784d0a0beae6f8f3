"""AVSBench-semantic (AVSS) metrics: per-class mIoU and F-score exactly as the reference computes
them (``avs_scripts/avss/utils/compute_color_metrics.py: _batch_miou_fscore``, reduced as
``test.py`` reduces it), float32 in its order of operations.

Per frame and per class c (predicted class = the arg-max, here given as class maps):

- ``IoU_c = |P_c ∩ G_c| / (2.22e-16 + |P_c ∪ G_c|)`` (0 when the union is empty),
- ``F_c = 1.3 · p · r / (0.3 · p + r)`` with ``p = |P_c ∩ G_c| / |P_c|``, ``r = |P_c ∩ G_c| / |G_c|``
  and any 0/0 on the way (nothing predicted, nothing to find, or no overlap) counting 0,
- the frame *counts* for class c when its union is non-empty.

Summed over frames (in batches of ``batch_size`` videos, the reference's ``--test_batch_size 4``
of ``test.sh``: frame by frame into the batch's sum, the batch's sum into the total), a class's
figure is its sum divided by its frame count. The official figures (:meth:`SemanticTotals.summary`
``miou`` / ``fscore``) are the mean over **all** 71 classes, a class never seen (count 0)
counting 0 (``test.py``: ``miou_pc[isnan] = 0; mean``). Every frame of the padded 10-frame stack
counts, the black padding frames of v1 videos (ground truth all background) included.

Variants (``summary["variants"]``):

- ``miou_present`` / ``fscore_present``: the mean over the classes that occur (count > 0),
  what ``test.py`` prints per batch and what TACO reports; all frames as above.
- ``miou_annotated`` / ``fscore_annotated`` (and ``…_present_annotated``): only the frames with a
  ground-truth mask, without the padding (and without v1s train's frames 1 … 4, which the
  reference scores against an all-background mask).
- ``miou_no_bg`` / ``fscore_no_bg``: the mean over the 70 object classes (1 … 70), all frames.
  (``test.py``'s ``miou_noBg`` takes ``miou_pc[:-1]``, dropping the last class instead of
  background; that figure is not reproduced.)
- ``binary_miou`` / ``binary_fscore``: the binary view (foreground = any class), scored per video
  with AVSBench-object's metrics (:mod:`cmsf.metrics`) on the annotated frames, mean over videos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from cmsf.metrics import dataset_scores, score_video

EPS = 2.220446049250313e-16
BETA2 = 0.3
DEFAULT_BATCH_SIZE = 4
"""Videos per batch of the reference's test (``test.sh``: ``--test_batch_size 4``)."""


def _check_maps(pred: Tensor, target: Tensor, num_classes: int) -> None:
    for name, value in (("pred", pred), ("target", target)):
        if not isinstance(value, Tensor) or value.ndim != 3 or value.dtype.is_floating_point:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name}: expected an integer class map Tensor[N, H, W], got {shape}")
        if value.numel() and (int(value.min()) < 0 or int(value.max()) >= num_classes):
            raise ValueError(f"{name}: expected class indices in 0 … {num_classes - 1}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target: expected one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def frame_areas(pred: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per frame and class: ``(intersection, predicted, labelled)`` pixel counts, each
    ``Tensor[N, num_classes]`` float32 (exact integers: the reference's ``torch.histc`` counts).

    Args:
        pred, target: ``Tensor[N, H, W]`` integer class maps (0 = background).
    """
    _check_maps(pred, target, num_classes)
    n = pred.shape[0]
    offsets = (torch.arange(n, device=pred.device) * num_classes)[:, None]
    flat_pred = (pred.reshape(n, -1).long() + offsets).reshape(-1)
    flat_target = (target.reshape(n, -1).long() + offsets).reshape(-1)
    size = n * num_classes
    predicted = torch.bincount(flat_pred, minlength=size).reshape(n, num_classes)
    labelled = torch.bincount(flat_target, minlength=size).reshape(n, num_classes)
    inter = torch.bincount(flat_pred[flat_pred == flat_target], minlength=size).reshape(n, num_classes)
    return inter.float().cpu(), predicted.float().cpu(), labelled.float().cpu()


def frame_scores(pred: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per frame and class, the reference's ``(iou, fscore, counts)``: each ``Tensor[N, C]``,
    float32 IoU and F (see the module docstring) and a bool of the non-empty unions."""
    inter, predicted, labelled = frame_areas(pred, target, num_classes)
    union = predicted + labelled - inter
    iou = 1.0 * inter / (EPS + union)
    precision = inter / predicted
    recall = inter / labelled
    fscore = (1 + BETA2) * precision * recall / (BETA2 * precision + recall)
    fscore[torch.isnan(fscore)] = 0.0
    return iou, fscore, union != 0


def _per_class(sums: Tensor, counts: Tensor) -> Tensor:
    figures = sums / counts
    figures[torch.isnan(figures)] = 0.0
    return figures


@dataclass
class _Sums:
    """Float32 sums of IoU and F per class, and frame counts, accumulated in the reference's
    order: frame by frame into the open batch, the batch into the total."""

    num_classes: int
    iou: Tensor = field(init=False)
    fscore: Tensor = field(init=False)
    count: Tensor = field(init=False)
    batch: list[Tensor] = field(init=False)

    def __post_init__(self) -> None:
        zeros = lambda: torch.zeros(self.num_classes, dtype=torch.float32)  # noqa: E731
        self.iou, self.fscore, self.count = zeros(), zeros(), zeros()
        self.batch = [zeros(), zeros(), zeros()]

    def add_frames(self, iou: Tensor, fscore: Tensor, counts: Tensor) -> None:
        for k in range(iou.shape[0]):
            self.batch[0] += iou[k]
            self.batch[1] += fscore[k]
            self.batch[2][torch.nonzero(counts[k]).squeeze(-1)] += 1

    def close_batch(self) -> None:
        self.iou += self.batch[0]
        self.fscore += self.batch[1]
        self.count += self.batch[2]
        self.batch = [torch.zeros(self.num_classes, dtype=torch.float32) for _ in range(3)]

    def figures(self) -> dict[str, float]:
        iou, fscore = _per_class(self.iou, self.count), _per_class(self.fscore, self.count)
        present = torch.sum(self.count != 0)
        return {
            "miou": torch.mean(iou).item(),
            "fscore": torch.mean(fscore).item(),
            "miou_present": (torch.sum(iou) / present).item() if present else 0.0,
            "fscore_present": (torch.sum(fscore) / present).item() if present else 0.0,
            "miou_no_bg": torch.mean(iou[1:]).item(),
            "fscore_no_bg": torch.mean(fscore[1:]).item(),
        }


@dataclass(frozen=True)
class VideoFigures:
    """One video's figures: ``miou`` / ``fscore`` over the classes occurring in its annotated
    frames (per-class sum / count as above; None when no class occurs), ``binary_miou`` /
    ``binary_fscore`` of its binary view (:func:`cmsf.metrics.score_video` on the annotated
    frames), and ``frames`` (annotated)."""

    miou: Optional[float]
    fscore: Optional[float]
    binary_miou: float
    binary_fscore: float
    frames: int


class SemanticTotals:
    """A split's figures, video by video in the reference's order (see the module docstring).

    Args:
        num_classes: 71 for AVSS. batch_size: videos per reference batch (float32 rounding only).
    """

    def __init__(self, num_classes: int, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer ≥ 1, got {batch_size!r}")
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.all = _Sums(num_classes)
        self.annotated = _Sums(num_classes)
        self.binary: list[tuple[float, float]] = []
        self._in_batch = 0

    def add(self, pred: Tensor, target: Tensor, annotated: Tensor) -> VideoFigures:
        """Add one video: ``pred``, ``target (Tensor[T, H, W])`` integer class maps of its padded
        frames (T = 10 for AVSS), ``annotated (Tensor[T]) bool`` the frames with a mask."""
        if not isinstance(annotated, Tensor) or annotated.shape != pred.shape[:1] or not bool(annotated.any()):
            raise ValueError("annotated: expected Tensor[T] bool, one per frame, at least one True")
        iou, fscore, counts = frame_scores(pred, target, self.num_classes)
        keep = annotated.bool().cpu()
        self.all.add_frames(iou, fscore, counts)
        self.annotated.add_frames(iou[keep], fscore[keep], counts[keep])
        self._in_batch += 1
        if self._in_batch == self.batch_size:
            self.close_batch()
        video = _Sums(self.num_classes)
        video.add_frames(iou[keep], fscore[keep], counts[keep])
        video.close_batch()
        binary = score_video(pred[keep] != 0, target[keep] != 0)
        self.binary.append((binary.miou, binary.fscore))
        present = video.count != 0
        own = video.figures() if bool(present.any()) else None
        return VideoFigures(
            miou=own["miou_present"] if own else None,
            fscore=own["fscore_present"] if own else None,
            binary_miou=binary.miou,
            binary_fscore=binary.fscore,
            frames=int(keep.sum()),
        )

    def close_batch(self) -> None:
        """End the open batch (the last one may be short, as the reference's last batch)."""
        self.all.close_batch()
        self.annotated.close_batch()
        self._in_batch = 0

    def summary(self) -> dict[str, object]:
        """``{"miou", "fscore", "variants": {…}}``: see the module docstring."""
        self.close_batch()
        official = self.all.figures()
        annotated = self.annotated.figures()
        binary = dataset_scores(self.binary)
        variants = {
            "miou_present": official["miou_present"],
            "fscore_present": official["fscore_present"],
            "miou_annotated": annotated["miou"],
            "fscore_annotated": annotated["fscore"],
            "miou_present_annotated": annotated["miou_present"],
            "fscore_present_annotated": annotated["fscore_present"],
            "miou_no_bg": official["miou_no_bg"],
            "fscore_no_bg": official["fscore_no_bg"],
            "binary_miou": binary.miou,
            "binary_fscore": binary.fscore,
        }
        return {"miou": official["miou"], "fscore": official["fscore"], "variants": variants}

    def per_class(self) -> list[dict[str, float]]:
        """Per class: ``iou``, ``fscore``, ``frames`` (all frames) and the same over the
        annotated frames (``…_annotated``)."""
        self.close_batch()
        rows = []
        tables = [(s, _per_class(s.iou, s.count), _per_class(s.fscore, s.count)) for s in (self.all, self.annotated)]
        for c in range(self.num_classes):
            row: dict[str, float] = {}
            for suffix, (sums, iou, fscore) in zip(("", "_annotated"), tables):
                row.update({f"iou{suffix}": iou[c].item(), f"fscore{suffix}": fscore[c].item(),
                            f"frames{suffix}": int(sums.count[c])})  # fmt: skip
            rows.append(row)
        return rows
