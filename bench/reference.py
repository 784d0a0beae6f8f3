"""The reference way: the three pipelines as the authors' scripts run them, for comparison.

Frame by frame, in float32, with no batching across frames and no reuse of work:

- every model is called once per frame (OWLv2 / GroundingDINO / AST on one input at a time);
- SAM is called once per frame with that frame's box prompt set (or its point grid), so the
  SAM image embedding is computed anew in every call;
- ImageBind is called once per frame for that frame's masked crops and once per frame for
  that frame's audio segment;
- the frame's mask is the union of the kept proposals' masks, as in cmsf.

The models and weights are those of the pipeline being compared (the same ``Models`` preset
and device, loaded in float32), and the steps are cmsf's public stage functions and ImageBind's
own methods, so any difference in the masks comes from batching and precision only. Settings
are the pipelines' keyword arguments, with the same meaning.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from cmsf.io.inputs import as_image_list, split_segments
from cmsf.models.imagebind import imagebind_audio_inputs, imagebind_vision_inputs
from cmsf.ops import bind_filter
from cmsf.stages.binding import masked_crops
from cmsf.stages.grounding import ground
from cmsf.stages.proposals import propose_boxes
from cmsf.stages.segmentation import sam_masks
from cmsf.stages.tagging import tag_audio


def _check_float32(models: Any) -> None:
    if models.dtype != torch.float32:
        raise ValueError(f"models: the reference loop runs in float32, got models in {models.dtype}")


def _frame_bind(
    image: Tensor, boxes: Tensor, masks: Tensor, segment: Tensor, sample_rate: int, models: Any,
    bind_threshold: float, bind_mode: str,
) -> Tensor:
    """One frame's BIND step: its crops in one ImageBind call, its audio in another."""
    height, width = image.shape[-2:]
    if boxes.shape[0] == 0:
        return torch.zeros(height, width, dtype=torch.bool)
    crops = masked_crops(image, boxes, masks)
    visual = models.imagebind.embed_vision(imagebind_vision_inputs(crops, resampler="pil"))
    audio = models.imagebind.embed_audio(imagebind_audio_inputs(segment, sample_rate).unsqueeze(0))[0]
    keep, _ = bind_filter(visual, audio, bind_threshold, bind_mode)
    if not bool(keep.any()):
        return torch.zeros(height, width, dtype=torch.bool)
    return masks[keep.to(masks.device)].any(dim=0).cpu()


def reference_owod_bind(
    frames: Any,
    waveform: Tensor,
    sample_rate: int,
    models: Any,
    *,
    box_threshold: float = 0.5,
    bind_threshold: float = 0.7,
    bind_mode: str = "softmax",
) -> Tensor:
    """OWOD-BIND, frame by frame: OWLv2 → SAM (boxes) → ImageBind → ``bind_filter`` → union.

    Returns ``Tensor[T, H, W]`` bool on the CPU."""
    _check_float32(models)
    images = as_image_list(frames, "frames")
    segments = split_segments(waveform, len(images))
    out = []
    for image, segment in zip(images, segments):
        proposals = propose_boxes([image], models, threshold=box_threshold)[0]
        masks = sam_masks([image], models, boxes=[proposals.boxes])[0].masks
        out.append(_frame_bind(image, proposals.boxes, masks, segment, sample_rate, models, bind_threshold, bind_mode))
    return torch.stack(out)


def reference_sam_bind(
    frames: Any,
    waveform: Tensor,
    sample_rate: int,
    models: Any,
    *,
    nms_threshold: float = 0.5,
    bind_threshold: float = 0.7,
    bind_mode: str = "softmax",
    sam_options: Optional[dict[str, Any]] = None,
) -> Tensor:
    """SAM-BIND, frame by frame: SAM's automatic masks of the frame (``sam_options`` are
    passed to :func:`cmsf.stages.segmentation.sam_masks`) → ImageBind → ``bind_filter`` → union.

    Returns ``Tensor[T, H, W]`` bool on the CPU."""
    _check_float32(models)
    images = as_image_list(frames, "frames")
    segments = split_segments(waveform, len(images))
    out = []
    for image, segment in zip(images, segments):
        found = sam_masks([image], models, nms_threshold=nms_threshold, **(sam_options or {}))[0]
        out.append(_frame_bind(image, found.boxes, found.masks, segment, sample_rate, models, bind_threshold, bind_mode))
    return torch.stack(out)


def reference_at_gdino_sam(
    frames: Any,
    waveform: Tensor,
    sample_rate: int,
    models: Any,
    *,
    tag_threshold: float = 0.5,
    box_threshold: float = 0.35,
    text_threshold: float = 0.25,
) -> Tensor:
    """AT-GDINO-SAM, frame by frame: AST tags of segment t → GroundingDINO on frame t with
    those tags → SAM (boxes) → union. A segment without tags gives an empty mask.

    Returns ``Tensor[T, H, W]`` bool on the CPU."""
    _check_float32(models)
    images = as_image_list(frames, "frames")
    segments = split_segments(waveform, len(images))
    out = []
    for image, segment in zip(images, segments):
        height, width = image.shape[-2:]
        tags = tag_audio([segment], sample_rate, models, threshold=tag_threshold)[0]
        if not tags:
            out.append(torch.zeros(height, width, dtype=torch.bool))
            continue
        detections = ground(
            [image], [[label for label, _ in tags]], models, box_threshold=box_threshold, text_threshold=text_threshold
        )[0]
        masks = sam_masks([image], models, boxes=[detections.boxes])[0].masks
        if masks.shape[0] == 0:
            out.append(torch.zeros(height, width, dtype=torch.bool))
        else:
            out.append(masks.any(dim=0).cpu())
    return torch.stack(out)


REFERENCES: dict[str, Callable[..., Tensor]] = {
    "owod-bind": reference_owod_bind,
    "sam-bind": reference_sam_bind,
    "at-gdino-sam": reference_at_gdino_sam,
}
"""The reference loop of each pipeline, by cmsf's pipeline name."""
