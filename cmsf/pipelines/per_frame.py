"""The CMSF pipelines (the paper's three and AT-SAM3), composed from the public stages.

Each pipeline takes one video: its frames (``Tensor[T, 3, H, W]`` uint8 or a list of PIL images /
``Tensor[3, H, W]``), its waveform (``Tensor[C, S]`` or ``Tensor[S]`` float) with its sample rate,
and the loaded :class:`~cmsf.models.loading.Models`. Audio segment t is the t-th of T equal slices of the
waveform (:func:`cmsf.io.inputs.split_segments`; AVSBench: 5 frames, 5 s, one second each).

Each pipeline is two stages (:data:`PIPELINE_STAGES`):

- the *model stage* (here) runs the foundation models on a batch of videos and returns, per
  frame, :class:`~cmsf.pipelines.results.FrameCandidates` (proposals, their masks, binder embeddings,
  tags); every model sees the frames (crops, audio segments) of the whole batch at once and
  nothing is computed twice;
- the *selection stage* (:mod:`cmsf.pipelines.selection`) applies the thresholds that need no model (τ_BB
  on cached proposals, τ_BIND) to one frame's candidates and gives its
  :class:`~cmsf.pipelines.results.FrameEvidence`.

The data types (inputs, candidates, evidence, results) live in :mod:`cmsf.pipelines.results`; the
pipelines' settings (one frozen dataclass per pipeline: defaults, checks, parsing from text) in
:mod:`cmsf.pipelines.settings`.

:func:`run_videos` chains them for several videos; :func:`owod_bind`, :func:`sam_bind`,
:func:`at_gdino_sam` and :func:`at_sam3` for one. The result keeps its evidence (tags, boxes, scores, which proposals
were kept) next to the masks; the frame mask is always the union of the kept proposals' masks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import torch
from torch import Tensor

from cmsf.io.inputs import Images
from cmsf.models.loading import Models, check_models
from cmsf.pipelines.results import FrameCandidates, FrameEvidence, SegmentationResult, VideoInput, prepare_video
from cmsf.pipelines.selection import select_all, select_at_gdino_sam, select_owod_bind, select_sam_bind
from cmsf.pipelines.settings import (
    BIND_SETTINGS,
    AtGdinoSamSettings,
    AtSam3Settings,
    OwodBindSettings,
    PipelineSettings,
    SamBindSettings,
    chosen_settings,
    resolve_settings,
    settings_for,
)
from cmsf.stages.binding import binder_of, masked_crops
from cmsf.stages.concepts import segment_concepts
from cmsf.stages.grounding import ground
from cmsf.stages.proposals import propose_boxes
from cmsf.stages.segmentation import sam_masks
from cmsf.stages.tagging import tag_audio

__all__ = [
    "PIPELINES",
    "PIPELINE_STAGES",
    "FrameCandidates",
    "FrameEvidence",
    "PipelineStages",
    "SegmentationResult",
    "VideoInput",
    "at_gdino_sam",
    "at_sam3",
    "find_tagged_concepts",
    "ground_tagged_frames",
    "owod_bind",
    "prepare_video",
    "run_videos",
    "sam_bind",
    "select_frames",
    "select_video",
    "tag_videos",
]

T = TypeVar("T")


def _per_video(items: Sequence[Any], videos: Sequence[VideoInput]) -> list[list[Any]]:
    """Split a flat list with one item per frame of ``videos`` back into one list per video."""
    out, start = [], 0
    for video in videos:
        out.append(list(items[start : start + len(video.images)]))
        start += len(video.images)
    return out


def _all_images(videos: Sequence[VideoInput]) -> list[Tensor]:
    return [image for video in videos for image in video.images]


# ---------------------------------------------------------------- model stages (batches of videos)
def _bind_candidates(
    videos: Sequence[VideoInput],
    boxes: list[Tensor],
    proposal_scores: list[Tensor],
    masks: list[Tensor],
    models: Models,
    crop_background: str,
) -> list[list[FrameCandidates]]:
    """The model half of the BIND step shared by OWOD-BIND and SAM-BIND: the masked crops of
    every frame of every video (``crop_background`` outside the mask, see
    :func:`~cmsf.stages.binding.masked_crops`) through the binder's vision tower in one batch, every
    audio segment through its audio tower in another (grouped by sample rate). The crops are
    cut on the models' device and, for ImageBind, resized there (:mod:`cmsf.models.resampling`); the
    candidates come to the host in one copy per kind, not one per frame."""
    binder = binder_of(models)
    device = models.device
    boxes, proposal_scores, cpu_masks = (_to_cpu(parts) for parts in (boxes, proposal_scores, masks))
    crops: list[Tensor] = []
    for image, frame_boxes, frame_masks in zip(_all_images(videos), boxes, masks):
        crops.extend(masked_crops(image.to(device), frame_boxes, frame_masks, background=crop_background))
    visual = binder.embed_vision(crops).float().cpu()
    audio = torch.stack(_per_segment(videos, binder.embed_audio)).float().cpu()
    counts = [frame_boxes.shape[0] for frame_boxes in boxes]
    frames = [
        FrameCandidates(
            boxes=boxes[i],
            proposal_scores=proposal_scores[i].float(),
            masks=cpu_masks[i],
            visual=visual_i,
            audio=audio[i],
            scoring=binder.scoring,
        )
        for i, visual_i in enumerate(visual.split(counts))
    ]
    return _per_video(frames, videos)


def _to_cpu(tensors: Sequence[Tensor]) -> list[Tensor]:
    """``tensors`` (any shapes, one dtype and device) on the CPU with one transfer, not one per
    tensor (each transfer from a GPU waits for it)."""
    if not tensors or tensors[0].device.type == "cpu":
        return list(tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors]).cpu()
    return [part.reshape(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def _per_segment(videos: Sequence[VideoInput], compute: Callable[[list[Tensor], int], Sequence[T]]) -> list[T]:
    """``compute(segments, sample_rate)`` over the audio segments of all ``videos`` (one call
    per sample rate, all segments of that rate in one batch), its results back in video, then
    segment order."""
    segments = [(segment, video.sample_rate) for video in videos for segment in video.segments]
    results: list[Any] = [None] * len(segments)
    for rate in dict.fromkeys(rate for _, rate in segments):
        indices = [i for i, (_, r) in enumerate(segments) if r == rate]
        for i, result in zip(indices, compute([segments[i][0] for i in indices], rate)):
            results[i] = result
    return results


def owod_bind_candidates(
    videos: Sequence[VideoInput], models: Models, settings: OwodBindSettings
) -> list[list[FrameCandidates]]:
    """OWOD-BIND's model stage: class-agnostic proposals of ``models.proposer`` (OWLv2 or MAVL;
    ≥ ``settings.box_threshold``, OWLv2's de-duplicated at ``proposal_nms_threshold``, at most
    ``max_proposals``; see :func:`~cmsf.stages.proposals.propose_boxes`) → one SAM mask per box →
    masked crops → ImageBind. Every frame of every video goes through each model in one batch."""
    images = _all_images(videos)
    proposals = propose_boxes(
        images,
        models,
        threshold=settings.box_threshold,
        nms_threshold=settings.proposal_nms_threshold,
        max_proposals=settings.max_proposals,
    )
    boxes = [p.boxes for p in proposals]
    mask_sets = sam_masks(images, models, boxes=boxes)
    return _bind_candidates(
        videos, boxes, [p.scores for p in proposals], [m.masks for m in mask_sets], models, settings.crop_background
    )


def sam_bind_candidates(
    videos: Sequence[VideoInput], models: Models, settings: SamBindSettings
) -> list[list[FrameCandidates]]:
    """SAM-BIND's model stage: SAM's automatic masks (the settings' grid, quality filters and
    NMS, see :func:`~cmsf.stages.segmentation.sam_masks`) → masked crops → ImageBind."""
    images = _all_images(videos)
    mask_sets = sam_masks(
        images,
        models,
        nms_threshold=settings.nms_threshold,
        points_per_side=settings.points_per_side,
        pred_iou_threshold=settings.pred_iou_threshold,
        stability_score_threshold=settings.stability_score_threshold,
    )
    return _bind_candidates(
        videos,
        [m.boxes for m in mask_sets],
        [m.iou_scores for m in mask_sets],
        [m.masks for m in mask_sets],
        models,
        settings.crop_background,
    )


def at_gdino_sam_candidates(
    videos: Sequence[VideoInput], models: Models, settings: AtGdinoSamSettings
) -> list[list[FrameCandidates]]:
    """AT-GDINO-SAM's model stage: AST tags of every segment (≥ ``tag_threshold``,
    :func:`tag_videos`) → GroundingDINO on each frame with its segment's tags as prompts → one SAM
    mask per box (:func:`ground_tagged_frames`)."""
    return ground_tagged_frames(videos, tag_videos(videos, models, settings.tag_threshold), models, settings)


def tag_videos(
    videos: Sequence[VideoInput], models: Models, tag_threshold: float
) -> list[list[tuple[str, float]]]:
    """The AT pipelines' tagging: the AST tags (≥ ``tag_threshold``, most probable first) of every
    audio segment of ``videos``, one list per frame, all segments of a sample rate in one batch.
    A stricter threshold gives a prefix of each list (see :func:`~cmsf.stages.tagging.tag_audio`)."""
    return _per_segment(videos, lambda segments, rate: tag_audio(segments, rate, models, threshold=tag_threshold))


def ground_tagged_frames(
    videos: Sequence[VideoInput],
    tags: Sequence[Sequence[tuple[str, float]]],
    models: Models,
    settings: AtGdinoSamSettings,
) -> list[list[FrameCandidates]]:
    """AT-GDINO-SAM after tagging: GroundingDINO on each frame with its segment's ``tags`` (one
    list per frame of ``videos``, as :func:`tag_videos` gives them) as prompts (boxes scoring
    > ``settings.box_threshold``) → one SAM mask per box. A frame without a tag gets no box
    (GroundingDINO does not run on it)."""
    images = _all_images(videos)
    prompts = [[label for label, _ in frame_tags] for frame_tags in tags]
    detections = ground(
        images, prompts, models, box_threshold=settings.box_threshold, text_threshold=settings.text_threshold
    )
    mask_sets = sam_masks(images, models, boxes=[d.boxes for d in detections])
    frames = [
        FrameCandidates(
            boxes=d.boxes.cpu(),
            proposal_scores=d.scores.float().cpu(),
            masks=m.masks.cpu(),
            tags=list(frame_tags),
            phrases=list(d.labels),
        )
        for frame_tags, d, m in zip(tags, detections, mask_sets)
    ]
    return _per_video(frames, videos)


def at_sam3_candidates(
    videos: Sequence[VideoInput], models: Models, settings: AtSam3Settings
) -> list[list[FrameCandidates]]:
    """AT-SAM3's model stage: AST tags of every segment (≥ ``tag_threshold``, :func:`tag_videos`)
    → SAM 3 concept prompts on each frame (:func:`find_tagged_concepts`)."""
    return find_tagged_concepts(videos, tag_videos(videos, models, settings.tag_threshold), models, settings)


def find_tagged_concepts(
    videos: Sequence[VideoInput],
    tags: Sequence[Sequence[tuple[str, float]]],
    models: Models,
    settings: AtSam3Settings,
) -> list[list[FrameCandidates]]:
    """AT-SAM3 after tagging: SAM 3 concept prompts on each frame, its segment's ``tags`` (one list
    per frame of ``videos``, as :func:`tag_videos` gives them) as concepts
    (:func:`~cmsf.stages.concepts.segment_concepts`). A frame without a tag gets no instance (SAM 3 does
    not run on it)."""
    prompts = [[label for label, _ in frame_tags] for frame_tags in tags]
    instances = segment_concepts(
        _all_images(videos),
        prompts,
        models,
        threshold=settings.instance_threshold,
        mask_threshold=settings.mask_threshold,
    )
    frames = [
        FrameCandidates(
            boxes=found.boxes.cpu(),
            proposal_scores=found.scores.float().cpu(),
            masks=found.masks.cpu(),
            tags=list(frame_tags),
            phrases=list(found.labels),
        )
        for frame_tags, found in zip(tags, instances)
    ]
    return _per_video(frames, videos)


@dataclass(frozen=True)
class PipelineStages:
    """A pipeline as its two stages: ``candidates(videos, models, settings)`` runs the models
    on a batch of videos (one list of :class:`FrameCandidates` per video) and
    ``select(candidates, settings)`` applies the thresholds to one frame; ``settings`` are the
    pipeline's (:data:`cmsf.pipelines.settings.SETTINGS`)."""

    candidates: Callable[[Sequence[VideoInput], Models, Any], list[list[FrameCandidates]]]
    select: Callable[[FrameCandidates, Any], FrameEvidence]


def select_video(
    pipeline: str,
    video: VideoInput,
    candidates: Sequence[FrameCandidates],
    settings: PipelineSettings,
    sources: Optional[Mapping[str, str]] = None,
) -> SegmentationResult:
    """Apply ``pipeline``'s selection to each frame's candidates: the video's result (see
    :func:`select_frames`)."""
    return select_frames(pipeline, candidates, settings, video.frame_size, sources)


def select_frames(
    pipeline: str,
    candidates: Sequence[FrameCandidates],
    settings: PipelineSettings,
    frame_size: tuple[int, int],
    sources: Optional[Mapping[str, str]] = None,
) -> SegmentationResult:
    """:func:`select_video` for candidates kept without their video (e.g. in a sweep's cache):
    ``frame_size`` is the video's ``(H, W)``. The result's settings name the bind mode used
    (``bind_mode`` None resolved to the binder's own); its ``sources`` are ``sources``."""
    select = PIPELINE_STAGES[pipeline].select
    frames = [select(frame, settings) for frame in candidates]
    height, width = frame_size
    masks = torch.stack([evidence.union(height, width) for evidence in frames])
    scoring = candidates[0].scoring
    if isinstance(settings, BIND_SETTINGS) and scoring is not None:
        settings = replace(settings, bind_mode=scoring.mode(settings.bind_mode))
    return SegmentationResult(pipeline=pipeline, masks=masks, frames=frames, settings=settings, sources=dict(sources or {}))


def run_videos(
    pipeline: str, videos: Sequence[VideoInput], models: Models, settings: Optional[PipelineSettings] = None
) -> list[SegmentationResult]:
    """Run ``pipeline`` on several videos at once: every model sees the frames (crops,
    segments) of all ``videos`` in one batch; each video's result is what the pipeline gives
    for it alone.

    Args:
        videos: from :func:`prepare_video`.
        settings: the pipeline's settings (:data:`cmsf.pipelines.settings.SETTINGS`), None: its
            defaults.

    Raises:
        ValueError: an unknown pipeline, settings of another pipeline, or a bind mode the
            binder cannot give.
    """
    return _run_checked(pipeline, videos, models, settings_for(pipeline, settings))


def _run_checked(
    pipeline: str, videos: Sequence[VideoInput], models: Models, settings: PipelineSettings
) -> list[SegmentationResult]:
    models = check_models(models)  # None or another object: a ValueError naming models
    if not videos:
        return []
    settings = resolve_settings(settings, models)  # before any model runs
    candidates = PIPELINE_STAGES[pipeline].candidates(videos, models, settings)
    sources = models.sources()
    return [select_video(pipeline, video, frames, settings, sources) for video, frames in zip(videos, candidates)]


# ---------------------------------------------------------------- the pipelines
def _run_one(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models: Models,
    keywords: PipelineSettings,
    settings: Optional[PipelineSettings],
) -> SegmentationResult:
    """Run one video with ``settings`` when given (then the keyword settings, ``keywords``, must
    be left at their defaults), else with ``keywords``; settings first: no model or input work
    for a bad one."""
    chosen = chosen_settings(keywords, settings)
    return _run_checked(chosen.pipeline, [prepare_video(frames, waveform, sample_rate)], models, chosen)[0]


def owod_bind(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models: Models,
    *,
    box_threshold: float = OwodBindSettings.box_threshold,
    bind_threshold: float = OwodBindSettings.bind_threshold,
    bind_mode: Optional[str] = OwodBindSettings.bind_mode,
    proposal_nms_threshold: float = OwodBindSettings.proposal_nms_threshold,
    max_proposals: int = OwodBindSettings.max_proposals,
    crop_background: str = OwodBindSettings.crop_background,
    settings: Optional[OwodBindSettings] = None,
) -> SegmentationResult:
    """OWOD-BIND: class-agnostic proposals → SAM masks → binder filter against the audio.

    For each frame t: class-agnostic proposals of ``models.proposer`` — OWLv2 objectness, or
    MAVL (the paper's) when ``load_models(..., mavl=...)`` — with objectness ≥ ``box_threshold``
    (τ_BB, the paper's 0.5; the authors' published MAVL config uses 0.15), boxes spanning ≥ 98 %
    of the frame dropped, the best proposal kept when none passes, OWLv2's boxes de-duplicated by
    NMS at ``proposal_nms_threshold`` (MAVL's are not), at most ``max_proposals`` (see
    :func:`~cmsf.stages.proposals.propose_boxes`) → one SAM mask per box → the frame cropped to each box
    with ``crop_background`` outside its mask (``"blur"``: OpenCV's 21 × 21 Gaussian blur of the
    frame, as the authors' code; ``"black"``) → image embeddings of the binder (ImageBind, or
    PE-AV with ``load_models(..., binder=…)``) → :func:`~cmsf.ops.bind_filter` against the
    binder's embedding of audio segment t (``bind_threshold`` = τ_BIND; ``bind_mode`` None: the
    binder's own, softmax for ImageBind as in the authors' code, calibrated for PE-AV) → union of
    the kept masks. The result's ``sources`` say which proposer ran (``mavl``: ``"not used"`` when
    OWLv2 proposed).

    Args:
        frames: the video's T frames, ``Tensor[T, 3, H, W]`` uint8 or a list of T PIL images /
            ``Tensor[3, H, W]`` uint8, all of one size.
        waveform: its audio, ``Tensor[C, S]`` or ``Tensor[S]`` float; segment t (the t-th of T
            equal slices) goes with frame t.
        sample_rate: ``waveform``'s rate in Hz.
        models: from :func:`~cmsf.models.loading.load_models` (each component loads on first use).
        settings: one :class:`~cmsf.pipelines.settings.OwodBindSettings` (units, ranges and defaults
            there), or its fields as keyword arguments (``box_threshold``, …), not both.

    Returns:
        a :class:`~cmsf.pipelines.results.SegmentationResult`: ``masks`` (``Tensor[T, H, W]`` bool,
        CPU, frame resolution); ``frames``, each frame's evidence (proposals: boxes, objectness,
        masks, bind scores, which were kept); ``settings``, those it ran with (``bind_mode``
        resolved); ``sources``, where each model came from.

    Raises:
        ValueError: a bad setting or input, before any model runs; the message names it.
    """
    keywords = OwodBindSettings(
        box_threshold, bind_threshold, bind_mode, proposal_nms_threshold, max_proposals, crop_background
    )
    return _run_one(frames, waveform, sample_rate, models, keywords, settings)


def sam_bind(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models: Models,
    *,
    nms_threshold: float = SamBindSettings.nms_threshold,
    bind_threshold: float = SamBindSettings.bind_threshold,
    bind_mode: Optional[str] = SamBindSettings.bind_mode,
    points_per_side: int = SamBindSettings.points_per_side,
    pred_iou_threshold: float = SamBindSettings.pred_iou_threshold,
    stability_score_threshold: float = SamBindSettings.stability_score_threshold,
    crop_background: str = SamBindSettings.crop_background,
    settings: Optional[SamBindSettings] = None,
) -> SegmentationResult:
    """SAM-BIND: SAM's automatic point-grid masks (a ``points_per_side``² grid and
    segment-anything's automatic-generator quality filters, predicted IoU > ``pred_iou_threshold``
    and stability ≥ ``stability_score_threshold``, 0 switching a filter off; see
    :func:`~cmsf.stages.segmentation.sam_masks`),
    de-duplicated by NMS at ``nms_threshold`` (the paper's 0.5, where segment-anything's own
    default is 0.7), as proposals; then the same masked crops (``crop_background`` outside the
    mask) and ImageBind filter as :func:`owod_bind`.

    Args:
        frames: the video's T frames, ``Tensor[T, 3, H, W]`` uint8 or a list of T PIL images /
            ``Tensor[3, H, W]`` uint8, all of one size.
        waveform: its audio, ``Tensor[C, S]`` or ``Tensor[S]`` float; segment t (the t-th of T
            equal slices) goes with frame t.
        sample_rate: ``waveform``'s rate in Hz.
        models: from :func:`~cmsf.models.loading.load_models` (each component loads on first use).
        settings: one :class:`~cmsf.pipelines.settings.SamBindSettings` (units, ranges and defaults
            there), or its fields as keyword arguments (``nms_threshold``, …), not both.

    Returns:
        a :class:`~cmsf.pipelines.results.SegmentationResult`: ``masks`` (``Tensor[T, H, W]`` bool,
        CPU, frame resolution); ``frames``, each frame's evidence (automatic masks as proposals:
        boxes, predicted IoUs, masks, bind scores, which were kept); ``settings``, those it ran with
        (``bind_mode`` resolved); ``sources``, where each model came from.

    Raises:
        ValueError: a bad setting or input, before any model runs; the message names it.
    """
    keywords = SamBindSettings(
        nms_threshold,
        bind_threshold,
        bind_mode,
        points_per_side,
        pred_iou_threshold,
        stability_score_threshold,
        crop_background,
    )
    return _run_one(frames, waveform, sample_rate, models, keywords, settings)


def at_gdino_sam(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models: Models,
    *,
    tag_threshold: float = AtGdinoSamSettings.tag_threshold,
    box_threshold: float = AtGdinoSamSettings.box_threshold,
    text_threshold: float = AtGdinoSamSettings.text_threshold,
    settings: Optional[AtGdinoSamSettings] = None,
) -> SegmentationResult:
    """AT-GDINO-SAM: AST tags of segment t (≥ ``tag_threshold`` = τ_AT) → GroundingDINO boxes
    for those tags on frame t → one SAM mask per box → union. A segment with no tag gives an empty
    mask (and GroundingDINO is not run on its frame).

    Args:
        frames: the video's T frames, ``Tensor[T, 3, H, W]`` uint8 or a list of T PIL images /
            ``Tensor[3, H, W]`` uint8, all of one size.
        waveform: its audio, ``Tensor[C, S]`` or ``Tensor[S]`` float; segment t (the t-th of T
            equal slices) goes with frame t.
        sample_rate: ``waveform``'s rate in Hz.
        models: from :func:`~cmsf.models.loading.load_models` (each component loads on first use).
        settings: one :class:`~cmsf.pipelines.settings.AtGdinoSamSettings` (units, ranges and
            defaults there), or its fields as keyword arguments (``tag_threshold``, …), not both.

    Returns:
        a :class:`~cmsf.pipelines.results.SegmentationResult`: ``masks`` (``Tensor[T, H, W]`` bool,
        CPU, frame resolution); ``frames``, each frame's evidence (tags, grounded boxes, their
        scores, phrases and masks); ``settings``, those it ran with; ``sources``, where each model
        came from.

    Raises:
        ValueError: a bad setting or input, before any model runs; the message names it.
    """
    keywords = AtGdinoSamSettings(tag_threshold, box_threshold, text_threshold)
    return _run_one(frames, waveform, sample_rate, models, keywords, settings)


def at_sam3(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models: Models,
    *,
    tag_threshold: float = AtSam3Settings.tag_threshold,
    instance_threshold: float = AtSam3Settings.instance_threshold,
    mask_threshold: float = AtSam3Settings.mask_threshold,
    settings: Optional[AtSam3Settings] = None,
) -> SegmentationResult:
    """AT-SAM3: AST tags of segment t (≥ ``tag_threshold`` = τ_AT) → SAM 3 concept prompts on
    frame t → the instance masks of every tag (score > ``instance_threshold``, pixels with mask
    probability > ``mask_threshold``; :func:`~cmsf.stages.concepts.segment_concepts`) → union. No
    GroundingDINO and no second SAM: SAM 3 both finds and segments. A segment with no tag gives
    an empty mask (and SAM 3 is not run on its frame). The evidence keeps the tags, each
    instance's box, score and tag (``phrases``); every instance is kept.

    Args:
        frames: the video's T frames, ``Tensor[T, 3, H, W]`` uint8 or a list of T PIL images /
            ``Tensor[3, H, W]`` uint8, all of one size.
        waveform: its audio, ``Tensor[C, S]`` or ``Tensor[S]`` float; segment t (the t-th of T
            equal slices) goes with frame t.
        sample_rate: ``waveform``'s rate in Hz.
        models: from :func:`~cmsf.models.loading.load_models` (each component loads on first use).
        settings: one :class:`~cmsf.pipelines.settings.AtSam3Settings` (units, ranges and defaults
            there), or its fields as keyword arguments (``tag_threshold``, …), not both.

    Returns:
        a :class:`~cmsf.pipelines.results.SegmentationResult`: ``masks`` (``Tensor[T, H, W]`` bool,
        CPU, frame resolution); ``frames``, each frame's evidence (tags, instances' boxes, scores,
        tags and masks); ``settings``, those it ran with; ``sources``, where each model came from.

    Raises:
        ValueError: a bad setting or input, before any model runs; the message names it.
    """
    keywords = AtSam3Settings(tag_threshold, instance_threshold, mask_threshold)
    return _run_one(frames, waveform, sample_rate, models, keywords, settings)


PIPELINES: dict[str, Callable[..., SegmentationResult]] = {
    "owod-bind": owod_bind,
    "sam-bind": sam_bind,
    "at-gdino-sam": at_gdino_sam,
    "at-sam3": at_sam3,
}
"""The pipelines by name: each runs one video (``frames, waveform, sample_rate, models``) with
its keyword-only settings (or ``settings=``, an object of :data:`cmsf.pipelines.settings.SETTINGS`)."""

PIPELINE_STAGES: dict[str, PipelineStages] = {
    "owod-bind": PipelineStages(owod_bind_candidates, select_owod_bind),
    "sam-bind": PipelineStages(sam_bind_candidates, select_sam_bind),
    "at-gdino-sam": PipelineStages(at_gdino_sam_candidates, select_at_gdino_sam),
    "at-sam3": PipelineStages(at_sam3_candidates, select_all),
}
"""The two stages of each pipeline of :data:`PIPELINES` (see :class:`PipelineStages`)."""
