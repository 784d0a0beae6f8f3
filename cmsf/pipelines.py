"""The CMSF pipelines (the paper's three and AT-SAM3), composed from the public stages.

Each pipeline takes one video: its frames (``Tensor[T, 3, H, W]`` uint8 or a list of PIL images /
``Tensor[3, H, W]``), its waveform (``Tensor[C, S]`` or ``Tensor[S]`` float) with its sample rate,
and the loaded :class:`~cmsf.loading.Models`. Audio segment t is the t-th of T equal slices of the
waveform (:func:`cmsf.inputs.split_segments`; AVSBench: 5 frames, 5 s, one second each).

Every model sees a whole video's worth of inputs at once (all frames through the proposer and SAM,
all masked crops through ImageBind in one batch, all audio segments in one batch) and nothing is
computed twice. The result keeps its evidence (tags, boxes, scores, which proposals were kept)
next to the masks; the frame mask is always the union of the kept proposals' masks.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor

from cmsf.binding import binder_of, masked_crops
from cmsf.checks import check_positive_int, check_range, check_unit
from cmsf.concepts import segment_concepts
from cmsf.grounding import ground
from cmsf.loading import Models
from cmsf.inputs import Images, as_image_list, check_sample_rate, split_segments
from cmsf.ops import BIND_MODES, bind_filter
from cmsf.proposals import propose_boxes
from cmsf.segmentation import sam_masks
from cmsf.tagging import tag_audio


@dataclass
class FrameEvidence:
    """What one frame's mask was made from.

    Attributes:
        boxes (Tensor[K, 4]): the K proposals, pixel (x1, y1, x2, y2) of the frame, float32.
        proposal_scores (Tensor[K]): the proposer's score of each: OWLv2 objectness (OWOD-BIND),
            SAM's predicted IoU (SAM-BIND), GroundingDINO's box score (AT-GDINO-SAM), SAM 3's
            instance score (AT-SAM3).
        masks (Tensor[K, H, W]): SAM's mask of each proposal, bool at the frame's resolution.
        kept (Tensor[K]): bool, the proposals whose masks make up the frame's mask.
        bind_scores (Tensor[K] | None): the binder's audio-visual scores (the BIND pipelines).
        tags (list[tuple[str, float]]): the segment's audio tags and probabilities (AT pipelines).
        phrases (list[str]): the tag each box was grounded to / each instance was found for (AT
            pipelines).
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
        pipeline: ``"owod-bind"``, ``"sam-bind"``, ``"at-gdino-sam"`` or ``"at-sam3"``.
        masks (Tensor[T, H, W]): bool, the sounding objects of each frame, at frame resolution, CPU.
        frames: the evidence of each frame; ``masks[t]`` is ``frames[t].union(H, W)``.
        settings: the thresholds the pipeline ran with (``bind_mode`` resolved to the mode used).
        sources: where each component the pipeline used comes from (:meth:`Models.source`).
    """

    pipeline: str
    masks: Tensor
    frames: list[FrameEvidence]
    settings: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "settings": dict(self.settings),
            "models": dict(self.sources),
            "frame_size": list(self.masks.shape[1:]),
            "frames": [
                {"index": t, "mask_pixels": int(self.masks[t].sum()), **evidence.to_json()}
                for t, evidence in enumerate(self.frames)
            ],
        }


# ---------------------------------------------------------------- shared steps
def _bind(
    name: str,
    images: list[Tensor],
    segments: list[Tensor],
    sample_rate: int,
    boxes: list[Tensor],
    proposal_scores: list[Tensor],
    masks: list[Tensor],
    models: Models,
    bind_threshold: float,
    bind_mode: str,
    settings: dict[str, Any],
) -> SegmentationResult:
    """The BIND step shared by OWOD-BIND and SAM-BIND: masked crops of every frame in one
    binder batch, audio segments in another, then ``bind_filter`` per frame and the union.
    ``bind_mode=None`` is the binder's own (:attr:`cmsf.binding.Binder.default_bind_mode`)."""
    binder = binder_of(models)
    mode = binder.default_bind_mode if bind_mode is None else bind_mode
    if mode == "calibrated" and binder.logit_bias is None:
        raise ValueError(
            f"bind_mode: 'calibrated' needs a binder with a calibrated match logit (PE-AV); the binder is {binder.name}"
        )
    settings = {**settings, "bind_mode": mode}
    crops: list[Tensor] = []
    for image, frame_boxes, frame_masks in zip(images, boxes, masks):
        crops.extend(masked_crops(image, frame_boxes, frame_masks))
    visual = binder.embed_vision(crops)
    audio = binder.embed_audio(segments, sample_rate)
    counts = [frame_boxes.shape[0] for frame_boxes in boxes]
    frames = []
    for t, visual_t in enumerate(visual.split(counts)):
        keep, scores = bind_filter(
            visual_t, audio[t], bind_threshold, mode, logit_scale=binder.logit_scale, logit_bias=binder.logit_bias
        )
        frames.append(
            FrameEvidence(
                boxes=boxes[t].cpu(),
                proposal_scores=proposal_scores[t].float().cpu(),
                masks=masks[t].cpu(),
                kept=keep.cpu(),
                bind_scores=scores.float().cpu(),
            )
        )
    return _result(name, images, frames, settings, models)


def _result(
    name: str, images: list[Tensor], frames: list[FrameEvidence], settings: dict[str, Any], models: Models
) -> SegmentationResult:
    height, width = images[0].shape[-2:]
    masks = torch.stack([evidence.union(height, width) for evidence in frames])
    sources = {component: models.source(component) for component in models.loaded}
    return SegmentationResult(pipeline=name, masks=masks, frames=frames, settings=settings, sources=sources)


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
    models: Models,
    *,
    box_threshold: float = 0.5,
    bind_threshold: float = 0.7,
    bind_mode: Optional[str] = None,
) -> SegmentationResult:
    """OWOD-BIND: class-agnostic proposals → SAM masks → ImageBind filter against the audio.

    For each frame t: OWLv2 objectness proposals (≥ ``box_threshold`` = τ_BB; boxes spanning
    ≥ 98 % of the frame dropped, the best proposal kept when none passes) → one SAM mask per box →
    the frame cropped to each box with the pixels outside its mask black → ImageBind image
    embeddings (the binder: ImageBind, or PE-AV with ``binder=``) → :func:`~cmsf.ops.bind_filter`
    against the binder's embedding of audio segment t (``bind_threshold`` = τ_BIND; ``bind_mode``
    None: the binder's own, softmax for ImageBind as in the authors' code, calibrated for PE-AV)
    → union of the kept masks.
    """
    settings = check_settings(
        "owod-bind", {"box_threshold": box_threshold, "bind_threshold": bind_threshold, "bind_mode": bind_mode}
    )
    images, segments, sample_rate = _video(frames, waveform, sample_rate)
    proposals = propose_boxes(images, models, threshold=box_threshold)
    boxes = [p.boxes for p in proposals]
    mask_sets = sam_masks(images, models, boxes=boxes)
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
    models: Models,
    *,
    nms_threshold: float = 0.5,
    bind_threshold: float = 0.7,
    bind_mode: Optional[str] = None,
    points_per_side: int = 32,
    pred_iou_threshold: float = 0.88,
    stability_score_threshold: float = 0.95,
) -> SegmentationResult:
    """SAM-BIND: SAM's automatic point-grid masks (a ``points_per_side``² grid and
    segment-anything's automatic-generator quality filters, predicted IoU > ``pred_iou_threshold``
    and stability ≥ ``stability_score_threshold``, 0 switching a filter off; see
    :func:`~cmsf.segmentation.sam_masks`),
    de-duplicated by NMS at ``nms_threshold`` (the paper's 0.5, where segment-anything's own
    default is 0.7), as proposals; then the same masked crops and ImageBind filter as
    :func:`owod_bind`."""
    settings = check_settings(
        "sam-bind",
        {
            "nms_threshold": nms_threshold,
            "bind_threshold": bind_threshold,
            "bind_mode": bind_mode,
            "points_per_side": points_per_side,
            "pred_iou_threshold": pred_iou_threshold,
            "stability_score_threshold": stability_score_threshold,
        },
    )
    images, segments, sample_rate = _video(frames, waveform, sample_rate)
    mask_sets = sam_masks(
        images,
        models,
        nms_threshold=nms_threshold,
        points_per_side=points_per_side,
        pred_iou_threshold=pred_iou_threshold,
        stability_score_threshold=stability_score_threshold,
    )
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
    models: Models,
    *,
    tag_threshold: float = 0.5,
    box_threshold: float = 0.35,
    text_threshold: float = 0.25,
) -> SegmentationResult:
    """AT-GDINO-SAM: AST tags of segment t (≥ ``tag_threshold`` = τ_AT) → GroundingDINO boxes
    for those tags on frame t → one SAM mask per box → union. A segment with no tag gives an empty
    mask (and GroundingDINO is not run on its frame)."""
    settings = check_settings(
        "at-gdino-sam", {"tag_threshold": tag_threshold, "box_threshold": box_threshold, "text_threshold": text_threshold}
    )
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
    return _result("at-gdino-sam", images, frames_evidence, settings, models)


def at_sam3(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models: Models,
    *,
    tag_threshold: float = 0.5,
    instance_threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> SegmentationResult:
    """AT-SAM3: AST tags of segment t (≥ ``tag_threshold`` = τ_AT) → SAM 3 concept prompts on
    frame t → the instance masks of every tag (score > ``instance_threshold``, pixels with mask
    probability > ``mask_threshold``; :func:`~cmsf.concepts.segment_concepts`) → union. No
    GroundingDINO and no second SAM: SAM 3 both finds and segments. A segment with no tag gives
    an empty mask (and SAM 3 is not run on its frame). The evidence keeps the tags, each
    instance's box, score and tag (``phrases``); every instance is kept."""
    settings = check_settings(
        "at-sam3",
        {"tag_threshold": tag_threshold, "instance_threshold": instance_threshold, "mask_threshold": mask_threshold},
    )
    images, segments, sample_rate = _video(frames, waveform, sample_rate)
    tags = tag_audio(segments, sample_rate, models, threshold=tag_threshold)
    prompts = [[label for label, _ in frame_tags] for frame_tags in tags]
    instances = segment_concepts(images, prompts, models, threshold=instance_threshold, mask_threshold=mask_threshold)
    frames_evidence = [
        FrameEvidence(
            boxes=found.boxes.cpu(),
            proposal_scores=found.scores.float().cpu(),
            masks=found.masks.cpu(),
            kept=torch.ones(len(found), dtype=torch.bool),
            tags=list(frame_tags),
            phrases=list(found.labels),
        )
        for frame_tags, found in zip(tags, instances)
    ]
    return _result("at-sam3", images, frames_evidence, settings, models)


PIPELINES: dict[str, Callable[..., SegmentationResult]] = {
    "owod-bind": owod_bind,
    "sam-bind": sam_bind,
    "at-gdino-sam": at_gdino_sam,
    "at-sam3": at_sam3,
}


_UNIT_SETTINGS = (
    "box_threshold",
    "tag_threshold",
    "text_threshold",
    "nms_threshold",
    "pred_iou_threshold",
    "stability_score_threshold",
    "instance_threshold",
    "mask_threshold",
)


def default_settings(pipeline: str) -> dict[str, Any]:
    """The keyword-only settings of ``PIPELINES[pipeline]`` and their defaults (the paper's)."""
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline: expected one of {', '.join(PIPELINES)}, got {pipeline!r}")
    return {
        name: parameter.default
        for name, parameter in inspect.signature(PIPELINES[pipeline]).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


def check_settings(pipeline: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """All settings of ``pipeline``: its defaults updated with ``overrides``, each checked.

    Thresholds are numbers in [0, 1] (``bind_threshold`` in [-1, 1] with ``bind_mode="cosine"``),
    ``bind_mode`` one of :data:`cmsf.ops.BIND_MODES` or None (the binder's own),
    ``points_per_side`` a positive integer.

    Raises:
        ValueError: an unknown pipeline or setting, or a bad value; the message starts with the
            setting's name.
    """
    defaults = default_settings(pipeline)
    unknown = [key for key in overrides if key not in defaults]
    if unknown:
        accepted = ", ".join(f"{k} (default {v!r})" for k, v in defaults.items()) or "none"
        raise ValueError(f"{unknown[0]}: {pipeline} has no setting {unknown[0]!r}; it accepts: {accepted}")
    settings = {**defaults, **overrides}
    mode = settings.get("bind_mode")
    if mode is not None and mode not in BIND_MODES:
        raise ValueError(f"bind_mode: expected one of {', '.join(BIND_MODES)}, got {mode!r}")
    for key in overrides:
        if key in _UNIT_SETTINGS:
            check_unit(settings[key], key)
        elif key == "bind_threshold":
            check_range(settings[key], key, -1.0 if mode == "cosine" else 0.0, 1.0)
        elif key == "points_per_side":
            check_positive_int(settings[key], key)
    return settings


def parse_settings(pipeline: str, values: Mapping[str, str]) -> dict[str, Any]:
    """Settings given as text (``{"bind_threshold": "0.6"}``, from a command line or a file)
    typed after the pipeline's defaults, then checked (:func:`check_settings`).

    A value whose default is an integer becomes an int, one whose default is a float a finite
    float; other values stay strings. Returns only the settings given.

    Raises:
        ValueError: a value that does not parse, or one :func:`check_settings` refuses; the
            message starts with the setting's name.
    """
    defaults = default_settings(pipeline)
    settings: dict[str, Any] = {}
    for key, text in values.items():
        default = defaults.get(key)
        if isinstance(default, int) and not isinstance(default, bool):
            try:
                settings[key] = int(text)
            except ValueError:
                raise ValueError(f"{key}: expected an integer, got {text!r}") from None
        elif isinstance(default, float):
            try:
                settings[key] = float(text)
            except ValueError:
                raise ValueError(f"{key}: expected a number, got {text!r}") from None
            if not math.isfinite(settings[key]):
                raise ValueError(f"{key}: expected a finite number, got {text!r}")
        else:
            settings[key] = text
    check_settings(pipeline, settings)
    return settings
