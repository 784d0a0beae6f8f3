"""Pure tensor operations shared by the pipelines: IoU, NMS over boxes or masks, the
cross-modal filter ``bind_filter``, and mirrored border indices.

Conventions: boxes are ``Tensor[N, 4]`` in pixel (x1, y1, x2, y2); masks are ``Tensor[N, H, W]``
bool. Nothing here moves data between devices except where a docstring says so.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import nms as box_nms

from cmsf.checks import check_finite, check_range, check_unit

BIND_MODES = ("softmax", "cosine", "calibrated")


def check_boxes(boxes: Tensor, name: str = "boxes") -> Tensor:
    """Check ``boxes (Tensor[N, 4])`` in (x1, y1, x2, y2): finite, floating point, x2 ≥ x1, y2 ≥ y1."""
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name}: expected Tensor[N, 4] in (x1, y1, x2, y2), got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}: expected Tensor[N, 4] in (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        boxes = boxes.to(torch.float32)
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{name}: contains NaN or infinite coordinates")
    if bool((boxes[:, 2] < boxes[:, 0]).any()) or bool((boxes[:, 3] < boxes[:, 1]).any()):
        raise ValueError(f"{name}: negative-size box (expected x2 >= x1 and y2 >= y1)")
    return boxes


def _check_scores(scores: Tensor, count: int, name: str = "scores") -> None:
    if not isinstance(scores, Tensor):
        raise ValueError(f"{name}: expected Tensor[{count}], got {type(scores).__name__}")
    if scores.ndim != 1 or scores.shape[0] != count:
        raise ValueError(f"{name}: expected Tensor[{count}] (one score per item), got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"{name}: expected floating-point scores, got dtype {scores.dtype}")
    if bool(torch.isnan(scores).any()):
        raise ValueError(f"{name}: contains NaN")


def mirror_index(index: Tensor, length: int) -> Tensor:
    """Reflect integer indices into ``[0, length)`` without repeating the edge sample
    (``d c b | a b c d | c b a``: OpenCV's ``BORDER_REFLECT_101``, scipy.ndimage's ``"mirror"``,
    numpy's ``"reflect"``), however far outside they are; ``length == 1`` maps all to 0."""
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = torch.remainder(index, period)
    return torch.where(index >= length, period - index, index)


def mask_iou_matrix(masks_a: Tensor, masks_b: Tensor, chunk_pixels: int = 1 << 16) -> Tensor:
    """Pairwise IoU of two sets of bool masks.

    Args:
        masks_a (Tensor[N, H, W]) bool, masks_b (Tensor[M, H, W]) bool, on the same device.
        chunk_pixels: pixels handled per matrix product, to bound memory to (N + M) × chunk.

    Returns:
        Tensor[N, M] float32 on the masks' device. Two empty masks have IoU 0.

    Intersections are counted by float32 matrix products over pixel chunks (exact for counts
    below 2**24 per chunk), never by an N × M × H × W tensor.
    """
    n, m = masks_a.shape[0], masks_b.shape[0]
    flat_a = masks_a.reshape(n, -1)
    flat_b = masks_b.reshape(m, -1)
    device = masks_a.device
    inter = torch.zeros(n, m, dtype=torch.float64, device=device)
    step = max(1, min(int(chunk_pixels), 1 << 24))
    for start in range(0, flat_a.shape[1], step):
        a = flat_a[:, start : start + step].to(torch.float32)
        b = flat_b[:, start : start + step].to(torch.float32)
        inter += (a @ b.T).to(torch.float64)
    area_a = flat_a.sum(1, dtype=torch.float64)
    area_b = flat_b.sum(1, dtype=torch.float64)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    return iou.to(torch.float32)


def nms(items: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression over boxes or masks.

    Args:
        items: boxes ``Tensor[N, 4]`` in pixel (x1, y1, x2, y2), or masks ``Tensor[N, H, W]`` bool.
        scores (Tensor[N]): higher is better; NaN is refused.
        iou_threshold: in [0, 1]: an item is suppressed when its IoU with an already kept,
            higher-scoring item is greater than this (1 keeps every item). A number outside
            [0, 1] is refused: IoU lies in [0, 1], so a negative threshold would keep only the
            top item and one above 1 means the same as 1, either most likely a mistake.

    Returns:
        Tensor[K] int64, the indices of the kept items, highest score first (on the items'
        device). Boxes go through ``torchvision.ops.nms``; masks use a pairwise IoU matrix
        computed on the masks' device (see :func:`mask_iou_matrix`) and one greedy pass over it
        on the CPU. Among equal scores the lower index comes first for masks.
    """
    if not isinstance(items, Tensor):
        raise ValueError(f"items: expected boxes Tensor[N, 4] or masks Tensor[N, H, W], got {type(items).__name__}")
    iou_threshold = check_unit(iou_threshold, "iou_threshold")
    if items.ndim == 2:
        boxes = check_boxes(items, "items")
        _check_scores(scores, boxes.shape[0])
        if boxes.shape[0] == 0:
            return torch.empty(0, dtype=torch.int64, device=items.device)
        return box_nms(boxes, scores.to(device=boxes.device, dtype=boxes.dtype), iou_threshold)
    if items.ndim == 3:
        if items.dtype != torch.bool:
            raise ValueError(f"items: masks must be bool Tensor[N, H, W], got dtype {items.dtype}")
        _check_scores(scores, items.shape[0])
        return _mask_nms(items, scores.to(items.device), iou_threshold)
    raise ValueError(
        f"items: expected boxes Tensor[N, 4] or masks Tensor[N, H, W], got shape {tuple(items.shape)}"
    )


def _mask_nms(masks: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    n = masks.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=masks.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    overlaps = (mask_iou_matrix(masks[order], masks[order]) > iou_threshold).cpu().numpy()
    suppressed = np.zeros(n, dtype=bool)
    kept: list[int] = []
    for i in range(n):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(kept, dtype=torch.int64, device=masks.device)]


def bind_filter(
    visual_embeddings: Tensor,
    audio_embedding: Tensor,
    threshold: float = 0.7,
    mode: str = "softmax",
    *,
    logit_scale: Optional[float] = None,
    logit_bias: Optional[float] = None,
) -> tuple[Tensor, Tensor]:
    """Keep the visual proposals whose embedding matches the audio (the BIND step).

    Args:
        visual_embeddings (Tensor[K, D]): the binder's image embeddings of the K proposals'
            masked crops (ImageBind: L2-normalised, as ImageBind returns them).
        audio_embedding (Tensor[D]): the binder's audio embedding of the segment (ImageBind:
            L2-normalised and multiplied by its fixed logit scale 20, as ImageBind returns it).
        threshold: keep proposals with score ≥ threshold; in [0, 1] for ``"softmax"`` and
            ``"calibrated"``, in [-1, 1] for ``"cosine"``.
        mode: ``"softmax"`` (default; what the authors' OWOD-BIND code does): the softmax over the
            K proposals of the dot products ``logit_scale · visual @ audio`` (ImageBind: no
            ``logit_scale``, the audio embedding already carries it). ``"cosine"`` (what the
            paper's text says): the cosine similarity of each proposal with the audio.
            ``"calibrated"``: each proposal's own match probability
            ``sigmoid(logit_scale · ⟨visual, audio⟩ + logit_bias)`` (PE-AV's calibrated
            audio-video logit); needs both ``logit_scale`` and ``logit_bias``.
        logit_scale, logit_bias: the binder's trained logit scale and bias (finite numbers);
            ``logit_bias`` is used by ``"calibrated"`` only (a softmax does not see it).

    Returns:
        ``(keep, scores)``: ``keep (Tensor[K])`` bool, ``scores >= threshold``, and
        ``scores (Tensor[K])`` float64 (computed in float64 whatever the inputs' dtype). K = 0 gives
        two empty tensors. With softmax and threshold > 0.5 at most one proposal is kept (the
        best one), even where rounding puts two scores a hair above 0.5.
    """
    if mode not in BIND_MODES:
        raise ValueError(f"mode: expected one of {BIND_MODES}, got {mode!r}")
    logit_scale = None if logit_scale is None else check_finite(logit_scale, "logit_scale")
    logit_bias = None if logit_bias is None else check_finite(logit_bias, "logit_bias")
    if mode == "calibrated" and (logit_scale is None or logit_bias is None):
        raise ValueError(
            "mode: 'calibrated' needs the binder's logit_scale and logit_bias (a binder with a calibrated match "
            "logit, such as PE-AV)"
        )
    threshold = check_range(threshold, f"threshold (mode {mode!r})", -1.0 if mode == "cosine" else 0.0, 1.0)
    if not isinstance(visual_embeddings, Tensor) or visual_embeddings.ndim != 2:
        shape = tuple(visual_embeddings.shape) if isinstance(visual_embeddings, Tensor) else type(visual_embeddings).__name__
        raise ValueError(f"visual_embeddings: expected Tensor[K, D], got {shape}")
    if not isinstance(audio_embedding, Tensor) or audio_embedding.ndim != 1:
        shape = tuple(audio_embedding.shape) if isinstance(audio_embedding, Tensor) else type(audio_embedding).__name__
        raise ValueError(f"audio_embedding: expected Tensor[D], got {shape}")
    if visual_embeddings.shape[1] != audio_embedding.shape[0]:
        raise ValueError(
            f"visual_embeddings and audio_embedding: expected the same D, got Tensor{list(visual_embeddings.shape)} "
            f"and Tensor{list(audio_embedding.shape)}"
        )
    for name, value in (("visual_embeddings", visual_embeddings), ("audio_embedding", audio_embedding)):
        if not value.is_floating_point():
            raise ValueError(f"{name}: expected floating point, got dtype {value.dtype}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
    visual = visual_embeddings.to(torch.float64)
    audio = audio_embedding.to(device=visual.device, dtype=torch.float64)
    if mode == "softmax":
        logits = visual @ audio
        scores = torch.softmax(logits if logit_scale is None else logit_scale * logits, dim=0)
    elif mode == "calibrated":
        scores = torch.sigmoid(logit_scale * (visual @ audio) + logit_bias)
    else:
        scores = torch.nn.functional.cosine_similarity(visual, audio[None, :], dim=1)
    keep = scores >= threshold
    if mode == "softmax" and threshold > 0.5 and keep.any():
        # Softmax scores sum to 1, so at most one exceeds 0.5; rounding must not break that.
        keep = torch.zeros_like(keep)
        keep[torch.argmax(scores)] = True
    return keep, scores
