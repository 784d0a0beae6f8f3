"""SAM-family masks: one mask per box prompt (:func:`sam_masks` with ``boxes``), or automatic
masks from a point grid (:func:`sam_masks` without boxes; segment-anything's
``SamAutomaticMaskGenerator`` semantics). Both embed each image once and share the geometry
helpers below (point grid, stability score, mask bounds, logit upscaling).

Families (the ``sam`` component's families in :data:`cmsf.models.families.FAMILY_TABLE`,
:data:`SEGMENTER_FAMILIES`): SAM (``SamModel``), SAM-HQ (``SamHQModel``), SAM 2 / 2.1
(``Sam2Model``) and EdgeTAM (``EdgeTamModel``). Each runs as its own transformers documentation
runs it: its image processor prepares the images, prompts reach the model in the processor's
coordinate frame and arithmetic, and the low-resolution logits go through its processor's
``post_process_masks`` (SAM, SAM-HQ: upsample to the padded input, crop, upsample to the image;
SAM 2, EdgeTAM: upsample straight to the image). Where they differ is data of each family's
entry (:class:`cmsf.models.families.SegmenterRecipe`).

Conventions (as in the rest of cmsf): images are a list of ``Tensor[3, H, W]`` uint8 or PIL
images, or one ``Tensor[B, 3, H, W]`` uint8; boxes are ``Tensor[K, 4]`` float32 in pixel
(x1, y1, x2, y2) of the image they belong to, in continuous coordinates (pixel ``i`` covers
``[i, i + 1)``). The model runs under ``torch.inference_mode()`` on ``models.device`` in
``models.dtype``; results are on ``models.device`` (scores and boxes in float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from cmsf.checks import check_finite, check_positive_int, check_unit
from cmsf.io.inputs import Images, as_image_list
from cmsf.models.families import Family, SegmenterRecipe, families_of, family_named, loaded_family
from cmsf.models.loading import Models, check_models
from cmsf.models.memory import (
    MAX_IMAGES_PER_FORWARD,
    free_device_memory,
    images_per_forward,
    sam_encoder_bytes_per_image,
)
from cmsf.ops import check_boxes, nms

SEGMENTER_FAMILIES = tuple(family.name for family in families_of("sam"))
"""The ``sam`` component's families (their own config ``model_type``) that :func:`sam_masks` runs."""

@dataclass(frozen=True)
class MaskSet:
    """SAM masks in one image.

    Attributes:
        masks: ``Tensor[K, H, W]`` bool at the image's resolution.
        iou_scores: ``Tensor[K]`` float32, SAM's predicted IoU of each mask.
        stability_scores: ``Tensor[K]`` float32, IoU of the mask logits thresholded at
            ``mask_threshold ± stability_score_offset`` (0 when both are empty).
        boxes: ``Tensor[K, 4]`` float32 pixel (x1, y1, x2, y2): with box prompts, the prompt
            boxes; for automatic masks, the mask's bounds (``x2``/``y2`` one past the last
            pixel; ``(0, 0, 0, 0)`` for an empty mask).
        points: ``Tensor[K, 2]`` float32 pixel (x, y) of the grid point that produced each
            automatic mask; ``None`` with box prompts.
    """

    masks: Tensor
    iou_scores: Tensor
    stability_scores: Tensor
    boxes: Tensor
    points: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def _point_grid(points_per_side: int) -> Tensor:
    """segment-anything's point grid: ``Tensor[n*n, 2]`` float64 (x, y) in [0, 1], the centres
    of an n × n grid of cells (offset 1/(2n) from the borders), row by row (x varies fastest).
    float64 as in segment-anything, which scales the grid to pixels and to the model's input
    frame in float64 and rounds to float32 only after dividing by the input size."""
    offset = 1.0 / (2 * points_per_side)
    side = torch.linspace(offset, 1 - offset, points_per_side, dtype=torch.float64)
    ys, xs = torch.meshgrid(side, side, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def _stability_scores(logits: Tensor, mask_threshold: float, offset: float) -> Tensor:
    """segment-anything's stability score: |logits > t + o| / |logits > t − o| per mask
    (``Tensor[N, H, W]`` → ``Tensor[N]``); 0 where the larger mask is empty."""
    intersections = (logits > (mask_threshold + offset)).flatten(1).sum(1, dtype=torch.int64)
    unions = (logits > (mask_threshold - offset)).flatten(1).sum(1, dtype=torch.int64)
    scores = intersections.to(torch.float32) / unions.clamp(min=1).to(torch.float32)
    return torch.where(unions > 0, scores, torch.zeros_like(scores))


def mask_bounds(masks: Tensor) -> Tensor:
    """Bounds of bool masks ``Tensor[N, H, W]`` → ``Tensor[N, 4]`` float32 (x1, y1, x2, y2),
    with x2/y2 one past the last True column/row; (0, 0, 0, 0) for an empty mask."""
    n, height, width = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.float32, device=masks.device)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    row_index = torch.arange(height, device=masks.device)
    col_index = torch.arange(width, device=masks.device)
    y1 = torch.where(rows, row_index, height).amin(dim=1)
    y2 = torch.where(rows, row_index + 1, 0).amax(dim=1)
    x1 = torch.where(cols, col_index, width).amin(dim=1)
    x2 = torch.where(cols, col_index + 1, 0).amax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def _check_box_list(boxes: Any, count: int) -> list[Tensor]:
    if isinstance(boxes, Tensor) or not isinstance(boxes, (list, tuple)):
        raise ValueError(
            f"boxes: expected a list with one Tensor[K, 4] per image ({count}), got {type(boxes).__name__}"
        )
    if len(boxes) != count:
        raise ValueError(f"boxes: expected one Tensor[K, 4] per image ({count}), got {len(boxes)}")
    return [check_boxes(b, f"boxes[{i}]").to(torch.float32) for i, b in enumerate(boxes)]


def sam_masks(
    images: Images,
    models: Models,
    boxes: Optional[Sequence[Tensor]] = None,
    *,
    points_per_side: int = 32,
    points_per_batch: int = 64,
    pred_iou_threshold: float = 0.88,
    stability_score_threshold: float = 0.95,
    stability_score_offset: float = 1.0,
    nms_threshold: float = 0.7,
    mask_threshold: float = 0.0,
) -> list[MaskSet]:
    """SAM masks for box prompts, or SAM's automatic masks from a point grid.

    Each image is embedded once (``SamModel.get_image_embeddings``, one batched forward for all
    images that need it) and its embedding answers all of its prompts through the mask decoder.

    Args:
        images: a list of ``Tensor[3, H, W]`` uint8 or PIL images (sizes may differ), or one
            ``Tensor[B, 3, H, W]`` uint8.
        models: the loaded models (uses ``models.sam``).
        boxes: one ``Tensor[K, 4]`` per image in pixel (x1, y1, x2, y2) of that image: one mask
            per box (``multimask_output=False``), all boxes of an image in one decoder call; an
            image with no box gets empty results ``(0, H, W)`` and is not embedded. ``None``:
            automatic mask generation (below).
        points_per_side, points_per_batch, pred_iou_threshold, stability_score_threshold,
        stability_score_offset, nms_threshold: automatic mode (the offset also sets the
            returned stability scores with boxes), segment-anything's
            ``SamAutomaticMaskGenerator`` (defaults 32, 64, 0.88, 0.95, 1.0, 0.7) without crop
            layers or small-region removal: a ``points_per_side``² grid of single foreground
            points (:func:`_point_grid`) goes through the decoder ``points_per_batch`` at a time
            with 3 masks per point; masks with predicted IoU ≤ ``pred_iou_threshold`` (skipped if
            that is 0) or stability score < ``stability_score_threshold`` (skipped if 0) are
            dropped; duplicates are removed by :func:`cmsf.ops.nms` on the masks' bounding boxes
            with ``nms_threshold``, scored by predicted IoU.
        mask_threshold: logit threshold that binarises SAM's masks (SAM: 0.0).

    Returns:
        one :class:`MaskSet` per image; with boxes, in the order of the boxes; automatic masks
        in decreasing predicted IoU (NMS order).

    Note:
        Automatic mode differs from segment-anything in small, deliberate ways: the masks'
        bounding boxes (used for NMS and returned) have ``x2``/``y2`` one past the last pixel
        (segment-anything's are inclusive, so IoUs differ by about a pixel's width); a stability
        score whose looser mask is empty is 0, not NaN; masks stay dense (no RLE); images are
        prepared by the Hugging Face ``SamImageProcessor`` (resize the longest side, normalise,
        pad bottom/right) and mask logits follow SAM's post-processing (upsample to the padded
        input, crop, upsample to the image) before thresholds and stability are computed.
    """
    models = check_models(models)
    image_list = as_image_list(images)
    box_list = None if boxes is None else _check_box_list(boxes, len(image_list))
    if box_list is None:
        points_per_side = check_positive_int(points_per_side, "points_per_side")
        points_per_batch = check_positive_int(points_per_batch, "points_per_batch")
        pred_iou_threshold = check_unit(pred_iou_threshold, "pred_iou_threshold")
        stability_score_threshold = check_unit(stability_score_threshold, "stability_score_threshold")
        nms_threshold = check_unit(nms_threshold, "nms_threshold")
    stability_score_offset = check_finite(stability_score_offset, "stability_score_offset", minimum=0.0)
    mask_threshold = check_finite(mask_threshold, "mask_threshold")

    device = models.device
    needed = [i for i in range(len(image_list)) if box_list is None or box_list[i].shape[0] > 0]
    results: list[Optional[MaskSet]] = [
        None if box_list is None or box_list[i].shape[0] > 0 else _empty_mask_set(image, device)
        for i, image in enumerate(image_list)
    ]
    if not needed:
        return results  # type: ignore[return-value]

    model, processor = models.sam
    family = loaded_family("sam", model)
    recipe = family.segmenter
    with torch.inference_mode():
        prepared = processor(
            images=[image_list[i].to(device) for i in needed], input_data_format="channels_first", return_tensors="pt"
        )  # the layout stated: a 1×1 or 3×3 frame is not ambiguous (no warning)
        pixel_values = prepared["pixel_values"].to(device=device, dtype=models.dtype)
        input_size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        embeddings = _embed(model, family, pixel_values)
        for slot, i in enumerate(needed):
            original = (int(image_list[i].shape[1]), int(image_list[i].shape[2]))
            # SAM 2's processor resizes to its square input, its prompts scale to it
            reshaped = input_size if recipe.square_input else prepared["reshaped_input_sizes"][slot]
            resized = tuple(int(v) for v in reshaped)
            frame = _Frame(recipe, processor, input_size, resized, original)
            embedding = embeddings[slot]
            if box_list is not None:
                results[i] = _masks_for_boxes(
                    model, embedding, box_list[i].to(device), frame, mask_threshold, stability_score_offset
                )
            else:
                results[i] = _automatic_masks(
                    model, embedding, frame, points_per_side, points_per_batch, pred_iou_threshold,
                    stability_score_threshold, stability_score_offset, nms_threshold, mask_threshold,
                )
    return results  # type: ignore[return-value]


@dataclass(frozen=True)
class _Frame:
    """One image's geometry for a segmenter family (``recipe``, its processor): ``input_size``
    the model input (H, W), ``resized`` the image inside it, ``original`` the image's (H, W)."""

    recipe: SegmenterRecipe
    processor: Any
    input_size: tuple[int, int]
    resized: tuple[int, int]
    original: tuple[int, int]

    def to_model(self, coords: Tensor, boxes: bool) -> Tensor:
        """Pixel (x, y) pairs ``Tensor[..., 2]`` → the model's input frame, with the family
        processor's arithmetic (:class:`cmsf.models.families.SegmenterRecipe`): SAM 2's scales
        float32 tensors by ``target_size / old`` per axis; SAM's and SAM-HQ's scale by resized /
        original in float64, boxes in the recipe's ``box_dtype`` (SAM: float32, bit-identical
        with earlier cmsf releases)."""
        height, width = self.original
        if self.recipe.square_input:
            target = self.input_size[0]  # Sam2Processor.target_size: the square input side
            out = coords.to(torch.float32).clone()
            out[..., 0] = out[..., 0] * (target / width)
            out[..., 1] = out[..., 1] * (target / height)
            return out
        dtype = self.recipe.box_dtype if boxes else torch.float64
        scale = [self.resized[1] / width, self.resized[0] / height]
        scale = torch.tensor(scale, dtype=torch.float64, device=coords.device)
        return coords.to(dtype) * scale.to(dtype)

    def upscale(self, low_res: Tensor) -> Tensor:
        """Low-resolution logits ``Tensor[N, h, w]`` → float32 logits at the image's (H, W),
        as the family's ``post_process_masks`` (without binarising) computes them: SAM's and
        SAM-HQ's also take the resized size (upsample to the padded input, crop, upsample)."""
        if low_res.shape[0] == 0:
            return torch.zeros(0, *self.original, dtype=torch.float32, device=low_res.device)
        sizes = [[self.original]] + ([] if self.recipe.square_input else [[self.resized]])
        (logits,) = self.processor.post_process_masks([low_res.float()[:, None]], *sizes, binarize=False)
        return logits[:, 0]


def _embed(model: nn.Module, family: Family, pixel_values: Tensor) -> list[dict[str, Any]]:
    """The image encoder over ``pixel_values`` (in chunks of :func:`encoder_chunk` images),
    returned as one dict of the decoder's image inputs per image, as the family's recipe names
    them (``family.segmenter.embeddings``): ``image_embeddings`` (SAM 2, EdgeTAM: the list of
    feature levels) and, for SAM-HQ, ``intermediate_embeddings``."""
    per_image: list[dict[str, Any]] = []
    recipe = family.segmenter
    for chunk in pixel_values.split(encoder_chunk(model, family.name, pixel_values.device)):
        out = model.get_image_embeddings(chunk)
        parts = out if len(recipe.embeddings) > 1 else (out,)
        for k in range(chunk.shape[0]):
            per_image.append(
                {
                    key: [level[k : k + 1] for level in part] if levels else part[k : k + 1]
                    for (key, levels), part in zip(recipe.embeddings, parts)
                }
            )
    return per_image


def encoder_chunk(model: nn.Module, family: str, device: torch.device) -> int:
    """Images per forward of the image encoder of a ``family`` segmenter (the family's name): a
    video's frames go together, in chunks this size. A family whose recipe says
    ``encoder_fits_memory`` (SAM, SAM-HQ): as many as fit the free memory of a CUDA ``device``
    (:func:`cmsf.models.memory.images_per_forward` of
    :func:`cmsf.models.memory.sam_encoder_bytes_per_image`; ViT-H in float32 ≈ 3.2 GiB an image);
    otherwise, and on the CPU, :data:`cmsf.models.memory.MAX_IMAGES_PER_FORWARD`."""
    if not family_named("sam", family).segmenter.encoder_fits_memory:
        return MAX_IMAGES_PER_FORWARD
    dtype = next(model.parameters()).dtype
    per_image = sam_encoder_bytes_per_image(model.config.vision_config, dtype)
    return images_per_forward(per_image, free_device_memory(device))


def _empty_mask_set(image: Tensor, device: torch.device) -> MaskSet:
    height, width = int(image.shape[1]), int(image.shape[2])
    return MaskSet(
        masks=torch.zeros(0, height, width, dtype=torch.bool, device=device),
        iou_scores=torch.zeros(0, device=device),
        stability_scores=torch.zeros(0, device=device),
        boxes=torch.zeros(0, 4, device=device),
    )


def _masks_for_boxes(
    model: nn.Module, embedding: dict[str, Any], boxes: Tensor, frame: _Frame, mask_threshold: float,
    stability_offset: float,
) -> MaskSet:
    model_boxes = frame.to_model(boxes.reshape(-1, 2, 2), boxes=True).reshape(1, -1, 4)
    out = model(**embedding, input_boxes=model_boxes, multimask_output=False)
    logits = frame.upscale(out.pred_masks[0, :, 0])
    return MaskSet(
        masks=logits > mask_threshold,
        iou_scores=out.iou_scores[0, :, 0].float(),
        stability_scores=_stability_scores(logits, mask_threshold, float(stability_offset)),
        boxes=boxes,
    )


def _filter_point_masks(
    low_res: Tensor,
    iou: Tensor,
    points: Tensor,
    pred_iou_threshold: float,
    stability_threshold: float,
    stability_offset: float,
    mask_threshold: float,
    upscale: Callable[[Tensor], Tensor] = lambda logits: logits,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """segment-anything's per-batch filtering of point-prompted masks.

    Args:
        low_res: ``Tensor[N, h, w]`` mask logits as the decoder gives them; iou: ``Tensor[N]``
            predicted IoU; points: ``Tensor[N, 2]`` the prompt of each mask.
        upscale: logits → logits at image resolution (the family's ``post_process_masks``).

    Returns:
        ``(masks, iou, stability, points)`` of the masks with iou > ``pred_iou_threshold``
        (not applied when it is 0) and stability ≥ ``stability_threshold`` (not applied when 0);
        ``masks`` are the upscaled ``logits > mask_threshold``. The IoU filter needs no mask, so
        it runs before upscaling: only its survivors are upscaled and stability-scored (same
        result as segment-anything, which upscales every mask first, for far less work).
    """
    if pred_iou_threshold > 0.0:
        passing = iou > pred_iou_threshold
        low_res, iou, points = low_res[passing], iou[passing], points[passing]
    logits = upscale(low_res)
    stability = _stability_scores(logits, mask_threshold, stability_offset)
    keep = torch.ones_like(iou, dtype=torch.bool)
    if stability_threshold > 0.0:
        keep &= stability >= stability_threshold
    index = torch.nonzero(keep).flatten()
    return logits[index] > mask_threshold, iou[index], stability[index], points[index]


def _deduplicate(masks: Tensor, iou: Tensor, stability: Tensor, points: Tensor, nms_threshold: float) -> MaskSet:
    """Remove duplicate masks as segment-anything does: NMS on the masks' bounding boxes scored
    by predicted IoU; survivors in NMS order. The NMS sees segment-anything's inclusive boxes
    (x2/y2 the last True column/row); the returned boxes are cmsf's (one past the last)."""
    bounds = mask_bounds(masks)
    inclusive = bounds.clone()
    inclusive[:, 2:] = torch.maximum(bounds[:, 2:] - 1, bounds[:, :2])
    order = nms(inclusive, iou, nms_threshold)
    return MaskSet(
        masks=masks[order],
        iou_scores=iou[order],
        stability_scores=stability[order],
        boxes=bounds[order],
        points=points[order],
    )


def _automatic_masks(
    model: nn.Module, embedding: dict[str, Any], frame: _Frame, points_per_side: int, points_per_batch: int,
    pred_iou_threshold: float, stability_threshold: float, stability_offset: float, nms_threshold: float,
    mask_threshold: float,
) -> MaskSet:
    device = next(model.parameters()).device
    height, width = frame.original
    grid = _point_grid(points_per_side).to(device) * torch.tensor([width, height], dtype=torch.float64, device=device)
    parts = []
    for points in grid.split(points_per_batch):
        count = points.shape[0]
        out = model(
            **embedding,
            input_points=frame.to_model(points, boxes=False)[None, :, None, :],
            input_labels=torch.ones(1, count, 1, dtype=torch.long, device=device),
            multimask_output=True,
        )
        per_point = out.pred_masks.shape[2]
        parts.append(
            _filter_point_masks(
                out.pred_masks[0].flatten(0, 1),
                out.iou_scores[0].flatten().float(),
                points.repeat_interleave(per_point, dim=0).float(),
                pred_iou_threshold,
                stability_threshold,
                stability_offset,
                mask_threshold,
                upscale=frame.upscale,
            )
        )
    masks, iou, stability, points = (torch.cat(column) for column in zip(*parts))
    return _deduplicate(masks, iou, stability, points, nms_threshold)

