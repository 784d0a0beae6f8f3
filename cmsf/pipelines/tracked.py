"""The tracked pipelines, ``owod-bind-tracked`` and ``sam-bind-tracked``: OWOD-BIND / SAM-BIND
with SAM 2's video memory, so that an object found in some frames is followed through all of
them and its binder scores are read over time instead of frame by frame.

For one video of T frames:

1. *Candidates*, as the per-frame pipeline makes them (its model stage,
   :data:`cmsf.pipelines.per_frame.PIPELINE_STAGES`), and its selection with its own thresholds
   (τ_BB or SAM's quality filters, then τ_BIND = ``bind_threshold``): the candidates kept at
   each frame.
2. *Seeds*: every kept candidate, at any frame, seeds a track: :func:`cmsf.stages.tracking.track_masks`
   carries its mask from its frame forward to the last frame and back to the first.
3. *Merging*: one object kept on several frames seeds several tracks. Two tracks merge when
   they overlap at both their seed frames (mask IoU ≥ ``track_merge_iou`` at each): the earlier
   seed's track stays (seeds in frame order, then candidate order) and lists the other as
   merged. Comparing at the seed frames, where each track is its seed's own mask, keeps a
   drifting track from swallowing another object.
4. *Binding*: every track is scored against every frame's audio segment in the binder: its
   masked crop at frame t (the same crops as the per-frame pipeline: ``crop_background``
   outside its mask) against segment t, in the same bind mode, the tracks present at t (mask
   not empty) competing as the proposals of frame t do (softmax) or each alone (calibrated,
   cosine). A track absent at t is not scored there.
5. *Sounding*: a track sounds at frame t when its scores averaged over the frames within
   ± ``temporal_window`` where it was scored reach ``track_threshold`` (τ_BIND for tracks; 0
   window: frame t alone) and its mask at t is not empty. The mask of frame t is the union of
   the sounding tracks' masks at t.

What it changes: an object the proposer misses in a frame is still there through its track,
and a binder score that wobbles around τ_BIND from one second to the next is averaged before it
is thresholded, so masks flicker less. What it cannot change: which object sounds is still the
binder's call on each crop against the audio; two people of whom one speaks look alike to it,
tracked or not.

Steps 1–4 run the models (:func:`tracked_candidates`, every model on all frames of a batch of
videos at once); step 5 (:func:`select_tracks`) needs none, so ``track_threshold`` and
``temporal_window`` can be swept over one model pass.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor

from cmsf.io.inputs import Images
from cmsf.models.loading import Models
from cmsf.ops import bind_filter, mask_iou_matrix
from cmsf.pipelines.per_frame import PIPELINE_STAGES
from cmsf.pipelines.results import (
    FrameCandidates,
    FrameEvidence,
    SegmentationResult,
    TrackEvidence,
    VideoInput,
    prepare_video,
)
from cmsf.pipelines.settings import (
    OwodBindTrackedSettings,
    PipelineSettings,
    SamBindTrackedSettings,
    TrackedSettings,
    chosen_settings,
    resolve_settings,
    settings_for,
    settings_type,
)
from cmsf.stages.binding import BindScoring, binder_of, masked_crops
from cmsf.stages.segmentation import mask_bounds
from cmsf.stages.tracking import track_masks

__all__ = [
    "TRACKED_FUNCTIONS",
    "TRACKED_PIPELINES",
    "VideoTracks",
    "frame_settings",
    "merge_tracks",
    "owod_bind_tracked",
    "run_tracked_videos",
    "sam_bind_tracked",
    "select_tracks",
    "smooth_scores",
    "tracked_candidates",
    "tracked_result",
]

TRACKED_PIPELINES: Mapping[str, str] = {"owod-bind-tracked": "owod-bind", "sam-bind-tracked": "sam-bind"}
"""Each tracked pipeline and the per-frame pipeline whose candidates seed its tracks."""


@dataclass
class VideoTracks:
    """What the models computed for one video's tracks (steps 1–4 of the module docstring),
    before the sounding threshold.

    Attributes:
        frames: the per-frame pipeline's evidence at each frame (its candidates, scores, kept).
        seeds: ``(frame, candidate)`` of each track's seed (an index into ``frames[frame]``).
        seed_scores: the per-frame bind score of each seed.
        merged: for each track, the seeds merged into it.
        masks (Tensor[K, T, H, W]): bool, each track in each frame, CPU.
        object_scores (Tensor[K, T]): float32, the tracker's presence probabilities.
        visual (Tensor[K, T, D]): float32, the binder's embedding of each track's crop at each
            frame (zeros where its mask is empty).
        audio (Tensor[T, D]): float32, the binder's embedding of each audio segment.
        scoring: how the binder's dot products become scores.
    """

    frames: list[FrameEvidence]
    seeds: list[tuple[int, int]]
    seed_scores: list[float]
    merged: list[list[tuple[int, int]]]
    masks: Tensor
    object_scores: Tensor
    visual: Tensor
    audio: Tensor
    scoring: Optional[BindScoring]

    @property
    def present(self) -> Tensor:
        """``Tensor[K, T]`` bool: the frames where each track's mask is not empty."""
        return self.masks.flatten(2).any(dim=2)


# ---------------------------------------------------------------- settings
def _check_pipeline(pipeline: object) -> str:
    if not isinstance(pipeline, str) or pipeline not in TRACKED_PIPELINES:
        got = repr(pipeline) if isinstance(pipeline, str) else f"a {type(pipeline).__name__}"
        raise ValueError(f"pipeline: expected one of {', '.join(TRACKED_PIPELINES)}, got {got}")
    return pipeline


def frame_settings(settings: TrackedSettings) -> PipelineSettings:
    """The per-frame pipeline's settings inside a tracked pipeline's (e.g. the
    :class:`~cmsf.pipelines.settings.OwodBindSettings` of an
    :class:`~cmsf.pipelines.settings.OwodBindTrackedSettings`): what its model and selection
    stages run with."""
    base = settings_type(TRACKED_PIPELINES[_check_pipeline(settings.pipeline)])
    return base(**{item.name: getattr(settings, item.name) for item in fields(base)})


# ---------------------------------------------------------------- pure steps
def merge_tracks(masks: Tensor, seed_frames: Sequence[int], threshold: float) -> list[list[int]]:
    """Group tracks that overlap at both their seed frames (step 3 of the module docstring).

    Args:
        masks (Tensor[N, T, H, W]): bool, the tracks (in seed order: frame, then candidate).
        seed_frames: each track's seed frame.
        threshold: IoU a pair needs at each of the two seed frames.

    Returns:
        Groups of track indices, each led by its earliest track (groups in that track's order): a
        track joins the first group whose leader overlaps it enough, else leads a new one.
    """
    groups: list[list[int]] = []
    for n in range(masks.shape[0]):
        for group in groups:
            lead = group[0]
            pairs = [(masks[lead, frame], masks[n, frame]) for frame in {seed_frames[lead], seed_frames[n]}]
            if all(float(mask_iou_matrix(a[None], b[None])[0, 0]) >= threshold for a, b in pairs):
                group.append(n)
                break
        else:
            groups.append([n])
    return groups


def smooth_scores(scores: Tensor, window: int) -> Tensor:
    """``scores (Tensor[K, T])`` averaged over frames ``t - window … t + window`` (inside the
    video), NaN entries (not scored) left out; NaN where the whole window is."""
    valid = ~torch.isnan(scores)
    values = torch.where(valid, scores, torch.zeros_like(scores))
    out = torch.full_like(scores, float("nan"))
    for t in range(scores.shape[1]):
        lo, hi = max(0, t - window), t + window + 1
        count = valid[:, lo:hi].sum(dim=1)
        total = values[:, lo:hi].sum(dim=1)
        out[:, t] = torch.where(count > 0, total / count.clamp(min=1), out[:, t])
    return out


def select_tracks(tracks: VideoTracks, settings: TrackedSettings) -> tuple[list[FrameEvidence], list[TrackEvidence]]:
    """Step 5 of the module docstring, no model: score every present track against each
    frame's audio in ``settings.bind_mode``, average over ± ``settings.temporal_window``, keep
    those reaching ``settings.track_threshold``. Returns each frame's evidence (the tracks as its proposals: their
    masks and boxes at t, the tracker's object scores, the averaged bind scores, the sounding
    ones kept) and each track's."""
    count, num_frames = tracks.masks.shape[:2]
    present = tracks.present
    raw = torch.full((count, num_frames), float("nan"), dtype=torch.float64)
    if count and tracks.scoring is not None:
        mode = tracks.scoring.mode(settings.bind_mode)
        for t in range(num_frames):
            rows = torch.nonzero(present[:, t]).flatten()
            if rows.numel():
                _, scores = bind_filter(
                    tracks.visual[rows, t],
                    tracks.audio[t],
                    -1.0 if mode == "cosine" else 0.0,
                    mode,
                    logit_scale=tracks.scoring.logit_scale,
                    logit_bias=tracks.scoring.logit_bias,
                )
                raw[rows, t] = scores.cpu()
    smoothed = smooth_scores(raw, settings.temporal_window)
    sounding = present & (torch.nan_to_num(smoothed, nan=-2.0) >= settings.track_threshold)
    boxes = mask_bounds(tracks.masks.flatten(0, 1)).reshape(count, num_frames, 4)
    frames = [
        FrameEvidence(
            boxes=boxes[:, t],
            proposal_scores=tracks.object_scores[:, t],
            masks=tracks.masks[:, t],
            kept=sounding[:, t],
            bind_scores=smoothed[:, t],
        )
        for t in range(num_frames)
    ]
    evidence = [
        TrackEvidence(
            seed_frame=seed[0],
            seed_candidate=seed[1],
            seed_score=score,
            merged=list(merged),
            boxes=boxes[k],
            object_scores=tracks.object_scores[k],
            bind_scores=raw[k],
            smoothed_scores=smoothed[k],
            sounding=sounding[k],
        )
        for k, (seed, score, merged) in enumerate(zip(tracks.seeds, tracks.seed_scores, tracks.merged))
    ]
    return frames, evidence


# ---------------------------------------------------------------- model stage
def _seed_tracks(
    video: VideoInput, evidence: list[FrameEvidence], models: Models, merge_iou: float
) -> tuple[list[tuple[int, int]], list[float], list[list[tuple[int, int]]], Tensor, Tensor]:
    """Steps 2–3 for one video: track every kept candidate, merge overlapping tracks. Returns
    the leaders' seeds, seed scores, merged seeds, masks ``[K, T, H, W]`` and object scores."""
    seeds = [(t, i) for t, frame in enumerate(evidence) for i in torch.nonzero(frame.kept).flatten().tolist()]
    tracked = track_masks(video.images, [(t, evidence[t].masks[i]) for t, i in seeds], models)
    groups = merge_tracks(tracked.masks, [t for t, _ in seeds], merge_iou)
    leaders = [group[0] for group in groups]
    scores = []
    for t, i in (seeds[n] for n in leaders):
        bind_scores = evidence[t].bind_scores
        scores.append(float("nan") if bind_scores is None else float(bind_scores[i]))
    merged = [[seeds[n] for n in group[1:]] for group in groups]
    index = torch.tensor(leaders, dtype=torch.int64)
    return [seeds[n] for n in leaders], scores, merged, tracked.masks[index], tracked.object_scores[index]


def _embed_tracks(
    videos: Sequence[VideoInput], masks: Sequence[Tensor], models: Models, crop_background: str
) -> list[Tensor]:
    """Step 4's model half: every present track's masked crop at every frame of every video
    through the binder's vision tower in one batch. Returns ``Tensor[K, T, D]`` float32 per
    video, zeros where a track's mask is empty."""
    binder = binder_of(models)
    crops: list[Tensor] = []
    places: list[tuple[int, int, int]] = []
    for v, (video, video_masks) in enumerate(zip(videos, masks)):
        for t, image in enumerate(video.images):
            rows = torch.nonzero(video_masks[:, t].flatten(1).any(dim=1)).flatten()
            if rows.numel() == 0:
                continue
            frame_masks = video_masks[rows, t]
            crops += masked_crops(image.to(models.device), mask_bounds(frame_masks), frame_masks, crop_background)
            places += [(v, int(k), t) for k in rows.tolist()]
    visual = binder.embed_vision(crops).float().cpu() if crops else None
    out = []
    for video, video_masks in zip(videos, masks):
        dim = 0 if visual is None else visual.shape[1]
        out.append(torch.zeros(video_masks.shape[0], len(video.images), dim, dtype=torch.float32))
    for row, (v, k, t) in enumerate(places):
        out[v][k, t] = visual[row]
    return out


def tracked_candidates(videos: Sequence[VideoInput], models: Models, settings: TrackedSettings) -> list[VideoTracks]:
    """Steps 1–4 of the module docstring for a batch of videos: the per-frame pipeline's model
    stage on all of them at once, its selection, the tracker per video, the binder on every
    track crop of every video in one batch."""
    frame = frame_settings(settings)
    stages = PIPELINE_STAGES[frame.pipeline]
    candidates = stages.candidates(videos, models, frame)
    seeded = []
    for video, frames in zip(videos, candidates):
        evidence = [stages.select(candidate, frame) for candidate in frames]
        seeded.append((evidence, *_seed_tracks(video, evidence, models, settings.track_merge_iou)))
    visual = _embed_tracks(videos, [parts[4] for parts in seeded], models, frame.crop_background)
    out = []
    for (evidence, seeds, scores, merged, masks, object_scores), frames, embeddings in zip(seeded, candidates, visual):
        out.append(VideoTracks(
            frames=evidence, seeds=seeds, seed_scores=scores, merged=merged, masks=masks,
            object_scores=object_scores, visual=embeddings, audio=_audio(frames), scoring=frames[0].scoring,
        ))  # fmt: skip
    return out


def _audio(frames: Sequence[FrameCandidates]) -> Tensor:
    """The binder's embedding of each frame's segment, ``Tensor[T, D]`` float32."""
    if any(frame.audio is None for frame in frames):
        return torch.zeros(len(frames), 0)
    return torch.stack([frame.audio for frame in frames]).float()


# ---------------------------------------------------------------- the pipelines
def run_tracked_videos(
    pipeline: str, videos: Sequence[VideoInput], models: Models, settings: Optional[TrackedSettings] = None
) -> list[SegmentationResult]:
    """Run a tracked pipeline on several videos at once (every model sees all their frames in
    one batch); each result is what the pipeline gives for its video alone.

    Args:
        pipeline: one of :data:`TRACKED_PIPELINES`.
        videos: from :func:`cmsf.pipelines.results.prepare_video`.
        settings: the pipeline's settings (:class:`~cmsf.pipelines.settings.OwodBindTrackedSettings`,
            :class:`~cmsf.pipelines.settings.SamBindTrackedSettings`), None: its defaults.

    Raises:
        ValueError: an unknown pipeline, settings of another pipeline, or a bind mode the
            binder cannot give.
    """
    settings = resolve_settings(settings_for(_check_pipeline(pipeline), settings), models)  # before any model runs
    if not videos:
        return []
    sources = models.sources()
    return [
        tracked_result(tracks, settings, video.frame_size, sources)
        for video, tracks in zip(videos, tracked_candidates(videos, models, settings))
    ]


def tracked_result(
    tracks: VideoTracks, settings: TrackedSettings, frame_size: tuple[int, int], sources: Mapping[str, str]
) -> SegmentationResult:
    """The result of ``settings.pipeline`` on one video from its tracks (:func:`select_tracks`, no
    model): the frame masks (``Tensor[T, H, W]`` bool, ``frame_size = (H, W)`` pixels) are the
    union of the sounding tracks'. A sweep (:mod:`cmsf.runs.sweep`) selects its rows with it from
    cached tracks, as a run does from fresh ones."""
    frames, evidence = select_tracks(tracks, settings)
    height, width = frame_size
    masks = torch.stack([f.union(height, width) for f in frames])
    return SegmentationResult(settings.pipeline, masks, frames, settings, dict(sources), evidence)


def _run_one(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models: Models,
    keywords: TrackedSettings,
    settings: Optional[TrackedSettings],
) -> SegmentationResult:
    """One video with ``settings`` when given (the keyword settings, ``keywords``, then left at
    their defaults), else with ``keywords``; settings first: no model or input work for a bad one."""
    chosen = chosen_settings(keywords, settings)
    return run_tracked_videos(chosen.pipeline, [prepare_video(frames, waveform, sample_rate)], models, chosen)[0]


def owod_bind_tracked(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models: Models,
    *,
    box_threshold: float = OwodBindTrackedSettings.box_threshold,
    bind_threshold: float = OwodBindTrackedSettings.bind_threshold,
    bind_mode: Optional[str] = OwodBindTrackedSettings.bind_mode,
    proposal_nms_threshold: float = OwodBindTrackedSettings.proposal_nms_threshold,
    max_proposals: int = OwodBindTrackedSettings.max_proposals,
    crop_background: str = OwodBindTrackedSettings.crop_background,
    track_merge_iou: float = OwodBindTrackedSettings.track_merge_iou,
    temporal_window: int = OwodBindTrackedSettings.temporal_window,
    track_threshold: float = OwodBindTrackedSettings.track_threshold,
    settings: Optional[OwodBindTrackedSettings] = None,
) -> SegmentationResult:
    """OWOD-BIND with tracks (see the module docstring): the candidates OWOD-BIND keeps at any
    frame (:func:`cmsf.pipelines.per_frame.owod_bind`, with its settings) seed tracks of
    ``models.tracker``; tracks overlapping at their seed frames (IoU ≥ ``track_merge_iou``)
    merge; each track sounds at frame t when its bind scores averaged over ± ``temporal_window``
    frames reach ``track_threshold``. The result's masks are the union of the sounding tracks'
    masks; its ``tracks`` hold each track's evidence.

    The settings are :class:`~cmsf.pipelines.settings.OwodBindTrackedSettings`, given as keyword
    arguments or as one ``settings`` object, not both.
    """
    keywords = OwodBindTrackedSettings(
        box_threshold, bind_threshold, bind_mode, proposal_nms_threshold, max_proposals, crop_background,
        track_merge_iou, temporal_window, track_threshold,
    )  # fmt: skip
    return _run_one(frames, waveform, sample_rate, models, keywords, settings)


def sam_bind_tracked(
    frames: Images,
    waveform: Tensor,
    sample_rate: int,
    models: Models,
    *,
    nms_threshold: float = SamBindTrackedSettings.nms_threshold,
    bind_threshold: float = SamBindTrackedSettings.bind_threshold,
    bind_mode: Optional[str] = SamBindTrackedSettings.bind_mode,
    points_per_side: int = SamBindTrackedSettings.points_per_side,
    pred_iou_threshold: float = SamBindTrackedSettings.pred_iou_threshold,
    stability_score_threshold: float = SamBindTrackedSettings.stability_score_threshold,
    crop_background: str = SamBindTrackedSettings.crop_background,
    track_merge_iou: float = SamBindTrackedSettings.track_merge_iou,
    temporal_window: int = SamBindTrackedSettings.temporal_window,
    track_threshold: float = SamBindTrackedSettings.track_threshold,
    settings: Optional[SamBindTrackedSettings] = None,
) -> SegmentationResult:
    """SAM-BIND with tracks: as :func:`owod_bind_tracked`, seeded by the automatic masks that
    SAM-BIND (:func:`cmsf.pipelines.per_frame.sam_bind`, with its settings) keeps at any frame.
    The settings are :class:`~cmsf.pipelines.settings.SamBindTrackedSettings`."""
    keywords = SamBindTrackedSettings(
        nms_threshold, bind_threshold, bind_mode, points_per_side, pred_iou_threshold, stability_score_threshold,
        crop_background, track_merge_iou, temporal_window, track_threshold,
    )  # fmt: skip
    return _run_one(frames, waveform, sample_rate, models, keywords, settings)


TRACKED_FUNCTIONS: dict[str, Callable[..., SegmentationResult]] = {
    "owod-bind-tracked": owod_bind_tracked,
    "sam-bind-tracked": sam_bind_tracked,
}
"""The tracked pipelines by name, called as the per-frame ones (:data:`cmsf.pipelines.per_frame.PIPELINES`)."""
