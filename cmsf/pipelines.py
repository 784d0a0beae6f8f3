"""The three CMSF pipelines, composed from the public stages.

Each pipeline takes one video: its frames (``Tensor[T, 3, H, W]`` uint8 or a list of PIL images /
``Tensor[3, H, W]``), its waveform (``Tensor[C, S]`` or ``Tensor[S]`` float) with its sample rate,
and the loaded :class:`~cmsf.models.Models`. Audio segment t is the t-th of T equal slices of the
waveform (:func:`cmsf.media.split_segments`; AVSBench: 5 frames, 5 s, one second each).

Every model sees a whole video's worth of inputs at once (all frames through the proposer and SAM,
all masked crops through ImageBind in one batch, all audio segments in one batch) and nothing is
computed twice. The result keeps its evidence (tags, boxes, scores, which proposals were kept)
next to the masks; the frame mask is always the union of the kept proposals' masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from cmsf.media import Images, as_image_list, check_sample_rate, split_segments
from cmsf.ops import bind_filter

PIPELINE_NAMES = ("owod-bind", "sam-bind", "at-gdino-sam")


@dataclass
class FrameEvidence:
    """What one frame's mask was made from.

    Attributes:
        boxes (Tensor[K, 4]): the K proposals, pixel (x1, y1, x2, y2) of the frame, float32.
        proposal_scores (Tensor[K]): the proposer's score of each: OWLv2 objectness (OWOD-BIND),
            SAM's predicted IoU (SAM-BIND), GroundingDINO's box score (AT-GDINO-SAM).
        masks (Tensor[K, H, W]): SAM's mask of each proposal, bool at the frame's resolution.
        kept (Tensor[K]): bool, the proposals whose masks make up the frame's mask.
        bind_scores (Tensor[K] | None): the ImageBind audio-visual scores (the BIND pipelines).
        tags (list[tuple[str, float]]): the segment's audio tags and probabilities (AT-GDINO-SAM).
        phrases (list[str]): the tag each box was grounded to (AT-GDINO-SAM).
    """

    boxes: Tensor
    proposal_scores: Tensor
    masks: Tensor
    kept: Tensor
    bind_scores: Optional[Tensor] = None
    tags: list[tuple[str, float]] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)

    def union(self, height: int, width: int) -> Tensor:
        """The frame's mask: ``Tensor[H, W]`` bool, the union of the kept proposals' masks."""
        if tuple(self.masks.shape[1:]) != (height, width):
            raise ValueError(f"masks: expected Tensor[K, {height}, {width}], got {tuple(self.masks.shape)}")
        return self.masks[self.kept].any(dim=0)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable evidence (no masks: those are written as images)."""
        out: dict[str, Any] = {
            "boxes": [[round(float(v), 2) for v in box] for box in self.boxes.tolist()],
            "proposal_scores": [round(float(s), 5) for s in self.proposal_scores.tolist()],
            "kept": [bool(k) for k in self.kept.tolist()],
            "proposal_mask_pixels": [int(n) for n in self.masks.flatten(1).sum(1).tolist()],
        }
        if self.bind_scores is not None:
            out["bind_scores"] = [round(float(s), 5) for s in self.bind_scores.tolist()]
        if self.tags:
            out["tags"] = [[label, round(float(p), 5)] for label, p in self.tags]
        if self.phrases:
            out["phrases"] = list(self.phrases)
        return out


@dataclass
class SegmentationResult:
    """A pipeline's output for one video.

    Attributes:
        pipeline: ``"owod-bind"``, ``"sam-bind"`` or ``"at-gdino-sam"``.
        masks (Tensor[T, H, W]): bool, the sounding objects of each frame, at frame resolution, CPU.
        frames: the evidence of each frame; ``masks[t]`` is ``frames[t].union(H, W)``.
        settings: the thresholds the pipeline ran with.
    """

    pipeline: str
    masks: Tensor
    frames: list[FrameEvidence]
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "settings": dict(self.settings),
            "frame_size": list(self.masks.shape[1:]),
            "frames": [
                {"index": t, "mask_pixels": int(self.masks[t].sum()), **evidence.to_json()}
                for t, evidence in enumerate(self.frames)
            ],
        }


# ---------------------------------------------------------------- shared steps
def masked_crops(image: Tensor, boxes: Tensor, masks: Tensor) -> list[Tensor]:
    """Cut each proposal out of ``image`` with the pixels outside its mask set to black.

    As the authors' OWOD-BIND code does (black out everything outside the mask, then
    ``PIL.Image.crop(box)``): the crop spans columns ``round(x1) .. round(x2) - 1`` and rows
    ``round(y1) .. round(y2) - 1`` (Python's round, as PIL uses), clipped to the image and at
    least one pixel wide and high.

    Args:
        image (Tensor[3, H, W]): uint8.
        boxes (Tensor[K, 4]): pixel (x1, y1, x2, y2) of ``image``.
        masks (Tensor[K, H, W]): bool.

    Returns:
        K ``Tensor[3, h, w]`` uint8 crops, on ``image``'s device.
    """
    height, width = image.shape[-2:]
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"boxes and masks: expected one mask per box, got {boxes.shape[0]} and {masks.shape[0]}")
    masks = masks.to(image.device)
    crops = []
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        left = min(max(round(x1), 0), width - 1)
        top = min(max(round(y1), 0), height - 1)
        right = max(min(round(x2), width), left + 1)
        bottom = max(min(round(y2), height), top + 1)
        region = masks[k, top:bottom, left:right]
        crops.append(image[:, top:bottom, left:right] * region.unsqueeze(0).to(image.dtype))
    return crops


def embed_audio_segments(segments: Sequence[Tensor], sample_rate: int, models) -> Tensor:
    """ImageBind audio embeddings of the T segments in one batch: ``Tensor[T, D]`` float32."""
    from cmsf.imagebind import imagebind_audio_inputs

    model = models.imagebind
    features = torch.stack([imagebind_audio_inputs(segment, sample_rate) for segment in segments])
    return model.embed_audio(features)


def embed_crops(crops: Sequence[Tensor], models, batch_size: int = 256) -> Tensor:
    """ImageBind image embeddings of masked crops: ``Tensor[N, D]`` float32 (N may be 0)."""
    from cmsf.imagebind import imagebind_vision_inputs

    model = models.imagebind
    if len(crops) == 0:
        return torch.zeros(0, model.out_embed_dim)
    pixel_values = imagebind_vision_inputs(list(crops))
    return torch.cat([model.embed_vision(chunk) for chunk in pixel_values.split(batch_size)])


def _bind(
    name: str,
    images: list[Tensor],
    segments: list[Tensor],
    sample_rate: int,
    boxes: list[Tensor],
    proposal_scores: list[Tensor],
    masks: list[Tensor],
    models,
    bind_threshold: float,
    bind_mode: str,
    settings: dict[str, Any],
) -> SegmentationResult:
    """The BIND step shared by OWOD-BIND and SAM-BIND: masked crops of every frame in one
    ImageBind batch, audio segments in another, then ``bind_filter`` per frame and the union."""
    crops: list[Tensor] = []
    for image, frame_boxes, frame_masks in zip(images, boxes, masks):
        crops.extend(masked_crops(image, frame_boxes, frame_masks))
    visual = embed_crops(crops, models)
    audio = embed_audio_segments(segments, sample_rate, models)
    counts = [frame_boxes.shape[0] for frame_boxes in boxes]
    frames = []
    for t, visual_t in enumerate(visual.split(counts)):
        keep, scores = bind_filter(visual_t, audio[t], bind_threshold, bind_mode)
        frames.append(
            FrameEvidence(
                boxes=boxes[t].cpu(),
                proposal_scores=proposal_scores[t].float().cpu(),
                masks=masks[t].cpu(),
                kept=keep.cpu(),
                bind_scores=scores.float().cpu(),
            )
        )
    return _result(name, images, frames, settings)


def _result(name: str, images: list[Tensor], frames: list[FrameEvidence], settings: dict[str, Any]) -> SegmentationResult:
    height, width = images[0].shape[-2:]
    masks = torch.stack([evidence.union(height, width) for evidence in frames])
    return SegmentationResult(pipeline=name, masks=masks, frames=frames, settings=settings)


def _video(frames: Images, waveform: Tensor, sample_rate: int) -> tuple[list[Tensor], list[Tensor], int]:
    images = as_image_list(frames, "frames")
    sizes = {tuple(image.shape[-2:]) for image in images}
    if len(sizes) != 1:
        raise ValueError(f"frames: expected frames of one size, got sizes {sorted(sizes)}")
    sample_rate = check_sample_rate(sample_rate)
    segments = split_segments(waveform, len(images), "waveform")
    return images, segments, sample_rate


# ---------------------------------------------------------------- the pipelines
def owod_bind(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models,
    *,
    box_threshold: float = 0.5,
    bind_threshold: float = 0.7,
    bind_mode: str = "softmax",
) -> SegmentationResult:
    """OWOD-BIND: class-agnostic proposals → SAM masks → ImageBind filter against the audio.

    For each frame t: OWLv2 objectness proposals (≥ ``box_threshold`` = τ_BB; boxes spanning
    ≥ 98 % of the frame dropped, the best proposal kept when none passes) → one SAM mask per box →
    the frame cropped to each box with the pixels outside its mask black → ImageBind image
    embeddings → :func:`~cmsf.ops.bind_filter` against the ImageBind embedding of audio segment t
    (``bind_threshold`` = τ_BIND, ``bind_mode`` softmax as in the authors' code) → union of the
    kept masks.
    """
    from cmsf.models import propose_boxes, sam_masks

    images, segments, sample_rate = _video(frames, waveform, sample_rate)
    proposals = propose_boxes(images, models, threshold=box_threshold)
    boxes = [p.boxes for p in proposals]
    mask_sets = sam_masks(images, models, boxes=boxes)
    settings = {"box_threshold": box_threshold, "bind_threshold": bind_threshold, "bind_mode": bind_mode}
    return _bind(
        "owod-bind",
        images,
        segments,
        sample_rate,
        boxes=boxes,
        proposal_scores=[p.scores for p in proposals],
        masks=[m.masks for m in mask_sets],
        models=models,
        bind_threshold=bind_threshold,
        bind_mode=bind_mode,
        settings=settings,
    )


def sam_bind(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models,
    *,
    nms_threshold: float = 0.5,
    bind_threshold: float = 0.7,
    bind_mode: str = "softmax",
    points_per_side: int = 32,
    pred_iou_threshold: float = 0.88,
    stability_score_threshold: float = 0.95,
) -> SegmentationResult:
    """SAM-BIND: SAM's automatic point-grid masks (a ``points_per_side``² grid and
    segment-anything's automatic-generator quality filters, predicted IoU > ``pred_iou_threshold``
    and stability ≥ ``stability_score_threshold``, 0 switching a filter off; see
    :func:`~cmsf.models.sam_masks`),
    de-duplicated by NMS at ``nms_threshold`` (the paper's 0.5, where segment-anything's own
    default is 0.7), as proposals; then the same masked crops and ImageBind filter as
    :func:`owod_bind`."""
    from cmsf.models import sam_masks

    images, segments, sample_rate = _video(frames, waveform, sample_rate)
    mask_sets = sam_masks(
        images,
        models,
        nms_threshold=nms_threshold,
        points_per_side=points_per_side,
        pred_iou_threshold=pred_iou_threshold,
        stability_score_threshold=stability_score_threshold,
    )
    settings = {
        "nms_threshold": nms_threshold,
        "bind_threshold": bind_threshold,
        "bind_mode": bind_mode,
        "points_per_side": points_per_side,
        "pred_iou_threshold": pred_iou_threshold,
        "stability_score_threshold": stability_score_threshold,
    }
    return _bind(
        "sam-bind",
        images,
        segments,
        sample_rate,
        boxes=[m.boxes for m in mask_sets],
        proposal_scores=[m.iou_scores for m in mask_sets],
        masks=[m.masks for m in mask_sets],
        models=models,
        bind_threshold=bind_threshold,
        bind_mode=bind_mode,
        settings=settings,
    )


def at_gdino_sam(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models,
    *,
    tag_threshold: float = 0.5,
    box_threshold: float = 0.35,
    text_threshold: float = 0.25,
) -> SegmentationResult:
    """AT-GDINO-SAM: AST tags of segment t (≥ ``tag_threshold`` = τ_AT) → GroundingDINO boxes
    for those tags on frame t → one SAM mask per box → union. A segment with no tag gives an empty
    mask (and GroundingDINO is not run on its frame)."""
    from cmsf.models import ground, sam_masks, tag_audio

    images, segments, sample_rate = _video(frames, waveform, sample_rate)
    tags = tag_audio(segments, sample_rate, models, threshold=tag_threshold)
    prompts = [[label for label, _ in frame_tags] for frame_tags in tags]
    detections = ground(images, prompts, models, box_threshold=box_threshold, text_threshold=text_threshold)
    mask_sets = sam_masks(images, models, boxes=[d.boxes for d in detections])
    frames_evidence = [
        FrameEvidence(
            boxes=d.boxes.cpu(),
            proposal_scores=d.scores.float().cpu(),
            masks=m.masks.cpu(),
            kept=torch.ones(d.boxes.shape[0], dtype=torch.bool),
            tags=list(frame_tags),
            phrases=list(d.labels),
        )
        for frame_tags, d, m in zip(tags, detections, mask_sets)
    ]
    settings = {"tag_threshold": tag_threshold, "box_threshold": box_threshold, "text_threshold": text_threshold}
    return _result("at-gdino-sam", images, frames_evidence, settings)


PIPELINES: dict[str, Callable[..., SegmentationResult]] = {
    "owod-bind": owod_bind,
    "sam-bind": sam_bind,
    "at-gdino-sam": at_gdino_sam,
}
