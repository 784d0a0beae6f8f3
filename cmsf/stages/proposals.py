"""Class-agnostic box proposals, the OWOD step of OWOD-BIND (images → boxes with objectness):
OWLv2's objectness head, de-duplicated by NMS, or MAVL (:mod:`cmsf.models.mavl`, the paper's
proposer) when :func:`~cmsf.models.loading.load_models` was given one.

OWLv2's input is prepared here, on the models' device, as its authors' code does (scenic's
``owl_vit`` inference: /255, pad to a square at the bottom / right with 0.5 grey, scikit-image's
anti-aliased resize), in a few separable gathers instead of a blur of the whole padded frame
(see :func:`owl_pixel_values`).

Conventions (as in the rest of cmsf): images are a list of ``Tensor[3, H, W]`` uint8 or PIL
images, or one ``Tensor[B, 3, H, W]`` uint8; boxes are ``Tensor[K, 4]`` float32 in pixel
(x1, y1, x2, y2) of the image they belong to, in continuous coordinates (pixel ``i`` covers
``[i, i + 1)``). The models run under ``torch.inference_mode()`` on ``models.device`` in
``models.dtype``; results are on ``models.device`` (scores and boxes in float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert, clip_boxes_to_image
from torchvision.ops import nms as box_nms

from cmsf.checks import check_positive_int, check_unit
from cmsf.io.inputs import Images, as_image_list
from cmsf.models.loading import Models, check_models
from cmsf.models.mavl import mavl_detect
from cmsf.ops import mirror_index

PROPOSAL_NMS_THRESHOLD = 0.5
"""Default IoU of :func:`propose_boxes`' NMS over OWLv2 boxes: the class-agnostic NMS IoU of
MAVL's own tools (``utils/combine_detections.py``) and of the paper's SAM-BIND."""

MAX_PROPOSALS = 300
"""Default cap on proposals per image: MAVL's query count."""


@dataclass(frozen=True)
class Proposals:
    """Class-agnostic box proposals in one image.

    Attributes:
        boxes: ``Tensor[K, 4]`` float32, pixel (x1, y1, x2, y2) of the image, clipped to it.
        scores: ``Tensor[K]`` float32 objectness in [0, 1], highest first.
    """

    boxes: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


# ---------------------------------------------------------------- OWLv2's input
def _axis_resampling(valid: int, padded: int, out: int) -> tuple[Tensor, Tensor]:
    """scikit-image's ``resize(..., order=1, anti_aliasing=True)`` along one axis, as taps.

    The axis holds ``valid`` image samples followed by ``padded - valid`` samples of the pad
    value. Its Gaussian pre-filter (σ = max(0, (f − 1) / 2), f = padded / out, truncated at
    4σ as ``scipy.ndimage.gaussian_filter``) and linear interpolation at
    ``(i + 0.5)·f − 0.5`` (``scipy.ndimage.zoom(grid_mode=True)``), both with mirrored borders,
    combine into one weighted sum per output sample.

    Returns:
        ``index (Tensor[out, K])`` long into ``[0, valid]``, where ``valid`` stands for the pad
        value, and ``weights (Tensor[out, K])`` float64 (each row sums to 1).
    """
    factor = padded / out
    sigma = max(0.0, (factor - 1.0) / 2.0)
    radius = int(4.0 * sigma + 0.5) if sigma > 0 else 0
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    gaussian = torch.exp(-0.5 * (taps / sigma) ** 2) if sigma > 0 else torch.ones(1, dtype=torch.float64)
    gaussian = gaussian / gaussian.sum()
    position = (torch.arange(out, dtype=torch.float64) + 0.5) * factor - 0.5
    left = torch.floor(position)
    fraction = (position - left)[:, None]
    offsets = torch.arange(-radius, radius + 2, dtype=torch.float64)  # the taps of both neighbours
    zero = torch.zeros(out, 1, dtype=torch.float64)
    weights = torch.cat([(1 - fraction) * gaussian, zero], 1) + torch.cat([zero, fraction * gaussian], 1)
    index = mirror_index((left[:, None] + offsets).long(), padded)
    return index.clamp(max=valid), weights


def _resample_rows(rows: Tensor, index: Tensor, weights: Tensor, pad_value: float) -> Tensor:
    """Σ_k weights[:, k] · rows[index[:, k]] for a ``[L, N]`` tensor (one row per sample of the
    axis, contiguous), where index ``L`` reads a row of ``pad_value``: ``[out, N]`` float32."""
    length = rows.shape[0]
    is_pad = index == length
    safe = index.clamp(max=length - 1)
    out = (pad_value * (weights * is_pad).sum(1, keepdim=True)).expand(-1, rows.shape[1]).clone()
    for k in range(index.shape[1]):
        weight = torch.where(is_pad[:, k], 0.0, weights[:, k])
        out.addcmul_(rows.index_select(0, safe[:, k]).to(torch.float32), weight[:, None])
    return out


def owl_pixel_values(
    images: Sequence[Tensor],
    side: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """OWLv2's input, prepared as its authors' code does (scenic ``owl_vit`` ``preprocess_image``):
    /255, pad at the bottom / right to a square with 0.5 grey, ``skimage.transform.resize`` to
    ``side × side`` with ``anti_aliasing=True`` (Gaussian pre-filter σ = (f − 1)/2 when shrinking
    by f, linear interpolation, mirrored borders), then the model's mean / std.

    transformers' ``Owlv2ImageProcessor`` pads with black and blurs the whole padded frame on
    the CPU (slow on large frames, ~80 s for a 4000 × 3000 frame); here each image goes to
    ``device`` as uint8 and is resampled as separable weighted gathers of the rows, then the
    columns it needs, without materialising the padded square. Equal to scikit-image's result
    within float32 rounding (≲ 1e-5 before normalisation).

    Args:
        images: ``Tensor[3, H, W]`` uint8 each (any device).
        side: the model's input side (960 for OWLv2 B/16).
        mean, std: per-channel normalisation of the processor (CLIP's).
        device, dtype: where and in which dtype the result lives.

    Returns:
        ``Tensor[B, 3, side, side]`` in ``dtype`` on ``device``.
    """
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=device).view(3, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=device).view(3, 1, 1)
    taps: dict[tuple[int, int, int], tuple[Tensor, Tensor]] = {}
    out = []
    for image in images:
        height, width = int(image.shape[1]), int(image.shape[2])
        square = max(height, width)
        for length in (height, width):
            if (length, square, side) not in taps:
                index, weights = _axis_resampling(length, square, side)
                taps[(length, square, side)] = (index.to(device), weights.to(device=device, dtype=torch.float32))
        # rows first on an (H, W·3) view, then columns on the transposed (W, side·3) result:
        # every gather reads whole contiguous rows
        pixels = image.to(device).permute(1, 2, 0).reshape(height, width * 3)
        rows = _resample_rows(pixels, *taps[(height, square, side)], pad_value=127.5)
        columns = rows.view(side, width, 3).transpose(0, 1).reshape(width, side * 3)
        resized = _resample_rows(columns, *taps[(width, square, side)], pad_value=127.5)
        resized = resized.view(side, side, 3).permute(2, 1, 0)  # (x, y, c) → (c, y, x)
        out.append(((resized / 255.0 - mean_t) / std_t).to(dtype))
    return torch.stack(out)


def _owl_side(processor: object) -> int:
    size = processor.size  # type: ignore[attr-defined]
    height = size["height"] if isinstance(size, dict) else size.height
    return int(height)


def _owl_boxes_to_pixels(boxes: Tensor, height: int, width: int) -> Tensor:
    """OWLv2 boxes → pixel (x1, y1, x2, y2) of the input image.

    Args:
        boxes: ``Tensor[N, 4]`` normalised (cx, cy, w, h) as OWLv2 predicts them: relative to the
            square the image was padded to (bottom/right padding to side max(H, W)) before
            resizing.
        height, width: the input image's size.

    Returns:
        ``Tensor[N, 4]`` float32: the corners scaled by max(H, W), clipped to [0, W] × [0, H].
    """
    side = float(max(height, width))
    corners = box_convert(boxes.to(torch.float32), in_fmt="cxcywh", out_fmt="xyxy") * side
    return clip_boxes_to_image(corners, (height, width))


def _owl_detect(images: list[Tensor], models: Models) -> list[tuple[Tensor, Tensor]]:
    """Every OWLv2 patch's box (pixels of its image, clipped) and objectness, one forward."""
    model, processor = models.owlv2
    device = models.device
    pixel_values = owl_pixel_values(
        images, _owl_side(processor), processor.image_mean, processor.image_std, device, models.dtype
    )
    feature_map, _ = model.image_embedder(pixel_values=pixel_values)
    features = feature_map.reshape(feature_map.shape[0], -1, feature_map.shape[-1])
    objectness = torch.sigmoid(model.objectness_predictor(features).float())
    boxes = model.box_predictor(features, feature_map).float()
    return [
        (_owl_boxes_to_pixels(boxes[i], int(image.shape[1]), int(image.shape[2])), objectness[i])
        for i, image in enumerate(images)
    ]


# ---------------------------------------------------------------- choosing proposals
_FULL_FRAME = 0.98  # a box spanning ≥ 98 % of the frame's width or height is "the whole frame"


def _select_proposals(
    boxes: Tensor,
    scores: Tensor,
    height: int,
    width: int,
    threshold: float,
    drop_full_frame: bool,
    keep_best_if_none: bool,
    nms_threshold: float = 1.0,
    max_proposals: int = MAX_PROPOSALS,
) -> Proposals:
    """Choose among one image's pixel boxes ``Tensor[N, 4]`` (clipped to the image) and
    objectness ``Tensor[N]``: boxes of zero width or height (e.g. predicted inside OWLv2's
    padding and clipped away) are never proposals; the usable boxes passing ``threshold`` are
    de-duplicated by NMS at ``nms_threshold`` (1 = none) and the best ``max_proposals`` kept;
    see :func:`propose_boxes` for the rest."""
    box_width, box_height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    non_empty = (box_width > 0) & (box_height > 0)
    usable = non_empty
    if drop_full_frame:
        usable = usable & (box_width < _FULL_FRAME * width) & (box_height < _FULL_FRAME * height)
    keep = usable & (scores >= threshold)
    if keep_best_if_none and not bool(keep.any()) and bool(non_empty.any()):
        # the best usable box; the best box at all when every box spans the frame (as the
        # authors' code falls back to its top detection)
        candidates = usable if bool(usable.any()) else non_empty
        masked = torch.where(candidates, scores, torch.full_like(scores, -1.0))
        keep = torch.zeros_like(keep)
        keep[masked.argmax()] = True
    index = torch.nonzero(keep).flatten()
    index = index[torch.sort(scores[index], descending=True, stable=True).indices]
    if nms_threshold < 1.0 and index.numel() > 1:
        # NMS sees each box's rank, not its score: equal scores are then visited in the stable
        # order above (lower index first), where torchvision's own sort leaves ties unordered
        ranks = -torch.arange(index.numel(), dtype=torch.float32, device=boxes.device)
        survivors = box_nms(boxes[index], ranks, nms_threshold)
        index = index[torch.sort(survivors).values]
    index = index[:max_proposals]
    return Proposals(boxes[index], scores[index])


def propose_boxes(
    images: Images,
    models: Models,
    threshold: float = 0.5,
    drop_full_frame: bool = True,
    keep_best_if_none: bool = True,
    nms_threshold: float = PROPOSAL_NMS_THRESHOLD,
    max_proposals: int = MAX_PROPOSALS,
) -> list[Proposals]:
    """Class-agnostic box proposals (the OWOD step of OWOD-BIND), from the proposer of
    ``models`` (:attr:`~cmsf.models.loading.Models.proposer`):

    - ``"owlv2"`` (default): one batched forward of OWLv2's vision tower (its text tower is
      never run); every 16-px patch predicts a box and an objectness logit, so one object is
      predicted again by its neighbouring patches: boxes are de-duplicated by class-agnostic
      NMS at ``nms_threshold``.
    - ``"mavl"`` (``load_models(..., mavl=...)``, the paper's proposer): MAVL's queries with
      objectness 1 − p(no-object) (:func:`cmsf.models.mavl.mavl_detect`); a set prediction, so no NMS.

    Args:
        images: a list of ``Tensor[3, H, W]`` uint8 or PIL images (sizes may differ), or one
            ``Tensor[B, 3, H, W]`` uint8.
        models: the loaded models.
        threshold: keep boxes with objectness ≥ threshold (τ_BB, 0.5 in the paper; the MAVL
            authors' published OWOD-BIND config keeps MAVL boxes with objectness > 0.15), in
            [0, 1].
        drop_full_frame: drop boxes that span the frame, defined as the authors' code does:
            width ≥ 0.98·W *or* height ≥ 0.98·H (after clipping to the image; the authors
            compare both sides with the image height, which is the same on AVSBench's square
            frames).
        keep_best_if_none: when no box passes, keep the single box of highest objectness among
            the usable ones (among all non-empty boxes if every box spans the frame, as the
            authors' code falls back to its top detection), so that every frame has a proposal.
        nms_threshold: OWLv2 only: after the threshold, suppress a box whose IoU with a
            higher-scored kept box exceeds this (torchvision's NMS), in [0, 1]; 1 switches NMS
            off. Default 0.5 (:data:`PROPOSAL_NMS_THRESHOLD`).
        max_proposals: keep at most this many proposals per image, the highest objectness
            first (default 300, :data:`MAX_PROPOSALS`).

    Returns:
        one :class:`Proposals` per image, in that image's pixels (clipped to it), highest
        objectness first. OWLv2 boxes are relative to the square the image was padded to, so
        they scale by max(H, W); boxes that clip to zero width or height (predicted in the
        padding) are dropped. A higher threshold gives a subset.
    """
    models = check_models(models)
    image_list = as_image_list(images)
    threshold = check_unit(threshold, "threshold")
    nms_threshold = check_unit(nms_threshold, "nms_threshold")
    max_proposals = check_positive_int(max_proposals, "max_proposals")
    use_mavl = models.proposer == "mavl"
    with torch.inference_mode():
        if use_mavl:
            detections = [
                (clip_boxes_to_image(boxes, (int(image.shape[1]), int(image.shape[2]))), scores)
                for image, (boxes, scores) in zip(image_list, mavl_detect(image_list, models.mavl))
            ]
        else:
            detections = _owl_detect(image_list, models)
        return [
            _select_proposals(
                boxes,
                scores,
                int(image.shape[1]),
                int(image.shape[2]),
                threshold,
                drop_full_frame,
                keep_best_if_none,
                nms_threshold=1.0 if use_mavl else nms_threshold,
                max_proposals=max_proposals,
            )
            for image, (boxes, scores) in zip(image_list, detections)
        ]

