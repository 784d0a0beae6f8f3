"""Model passes: a pipeline's model stage (:data:`~cmsf.pipelines.per_frame.PIPELINE_STAGES`) run
with several settings over one batch of videos, each video asking for the settings it needs
(:class:`PassRequest`), for a threshold sweep that selects many settings from few model runs
(:mod:`cmsf.runs.sweep`; the dataset runner's :func:`~cmsf.runs.runner.run_passes` runs it).
A tracked pipeline's pass is its model stage, :func:`~cmsf.pipelines.tracked.tracked_candidates`:
each video's tracks (:class:`~cmsf.pipelines.tracked.VideoTracks`) before the sounding threshold.

Every model sees the videos of the batch that need a pass in one call per pass. The AT pipelines'
audio tags are computed once per video, at the request's ``tag_threshold`` (the lowest of its
passes), or taken from the request; each pass selects its tags from them (AST's probabilities
compared in float32, as :func:`~cmsf.stages.tagging.tag_audio` does), so a pass equals the model
stage run with its settings alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import torch

from cmsf.models.loading import Models
from cmsf.pipelines.per_frame import PIPELINE_STAGES, find_tagged_concepts, ground_tagged_frames, tag_videos
from cmsf.pipelines.results import FrameCandidates, VideoInput
from cmsf.pipelines.settings import PipelineSettings, TaggedSettings, TrackedSettings
from cmsf.pipelines.tracked import TRACKED_PIPELINES, VideoTracks, tracked_candidates

Tags = list[tuple[str, float]]
"""One frame's audio tags: (label, probability), most probable first."""

PassOutput = Union[list[FrameCandidates], VideoTracks]
"""One video's output of one pass: a per-frame pipeline's candidates, one
:class:`~cmsf.pipelines.results.FrameCandidates` per frame, or a tracked pipeline's tracks."""

TAGGED_STAGES: dict[str, Callable[..., list[list[FrameCandidates]]]] = {
    "at-gdino-sam": ground_tagged_frames,
    "at-sam3": find_tagged_concepts,
}
"""Pipelines whose model stage starts with AST tagging (their settings are
:class:`~cmsf.pipelines.settings.TaggedSettings`): the rest of the stage, given each frame's tags."""


@dataclass(frozen=True)
class PassRequest:
    """What one video needs of a pipeline's model stage.

    Attributes:
        passes: the settings to compute candidates with (the pipeline's settings objects), in the
            order the results list them.
        tag_threshold: the tagged pipelines: the threshold to compute the tags at when ``tags``
            is None (at most every pass's ``tag_threshold``); ignored by the others.
        tags: the tagged pipelines: each frame's tags, already computed at a threshold at most
            every pass's (e.g. cached), or None to compute them.
    """

    passes: tuple[PipelineSettings, ...]
    tag_threshold: Optional[float] = None
    tags: Optional[list[Tags]] = None


@dataclass
class PassCandidates:
    """What a :class:`PassRequest` got: ``parts``, each pass's settings with its output
    (:data:`PassOutput`), in the request's order, and, for a
    tagged pipeline whose tags were computed here, ``tags`` (at the request's ``tag_threshold``)."""

    parts: list[tuple[PipelineSettings, PassOutput]] = field(default_factory=list)
    tags: Optional[list[Tags]] = None


def tags_at(tags: Sequence[tuple[str, float]], threshold: float) -> Tags:
    """The tags with probability ≥ ``threshold``, compared in float32 as :func:`~cmsf.stages.tagging.tag_audio` does."""
    probabilities = torch.tensor([p for _, p in tags], dtype=torch.float32)
    return [tag for tag, passes in zip(tags, (probabilities >= threshold).tolist()) if passes]


def _batch_tags(videos: Sequence[VideoInput], requests: Sequence[PassRequest], models: Models) -> list[list[Tags]]:
    """Each video's frame tags: its request's, or AST's at the request's ``tag_threshold`` (the
    videos of one threshold in one batch)."""
    tags: list[Optional[list[Tags]]] = [request.tags for request in requests]
    todo = [i for i, request in enumerate(requests) if request.tags is None]
    for threshold in dict.fromkeys(requests[i].tag_threshold for i in todo):
        if threshold is None:
            raise ValueError("requests: a tagged pipeline's request needs tags or a tag_threshold")
        indices = [i for i in todo if requests[i].tag_threshold == threshold]
        per_frame = tag_videos([videos[i] for i in indices], models, threshold)
        start = 0
        for i in indices:
            count = len(videos[i].images)
            tags[i] = per_frame[start : start + count]
            start += count
    return [list(frames or []) for frames in tags]


def _run_pass(
    pipeline: str,
    videos: Sequence[VideoInput],
    tags: Optional[Sequence[list[Tags]]],
    models: Models,
    compute: PipelineSettings,
) -> Sequence[PassOutput]:
    """One pass of the model stage over ``videos`` (for a tagged pipeline: after tagging, each
    video's ``tags`` selected at ``compute.tag_threshold``; a tracked one: its tracks)."""
    if pipeline in TRACKED_PIPELINES:
        assert isinstance(compute, TrackedSettings)
        return tracked_candidates(videos, models, compute)
    if pipeline not in TAGGED_STAGES:
        return PIPELINE_STAGES[pipeline].candidates(videos, models, compute)
    assert tags is not None and isinstance(compute, TaggedSettings)
    frames = [tags_at(frame, compute.tag_threshold) for video_tags in tags for frame in video_tags]
    return TAGGED_STAGES[pipeline](videos, frames, models, compute)


def candidates_of_passes(
    pipeline: str, videos: Sequence[VideoInput], requests: Sequence[PassRequest], models: Models
) -> list[PassCandidates]:
    """Run the passes each video of ``videos`` requests (``requests[i]`` for ``videos[i]``): each
    distinct pass once, over the videos that ask for it; a tagged pipeline's tags once per video
    (see the module docstring). Settings are used as given (resolved by the caller,
    :func:`~cmsf.pipelines.settings.resolve_settings`).

    Returns:
        one :class:`PassCandidates` per video, its parts in its request's order.
    """
    if len(videos) != len(requests):
        raise ValueError(f"requests: expected one per video ({len(videos)}), got {len(requests)}")
    tagged = pipeline in TAGGED_STAGES
    tags = _batch_tags(videos, requests, models) if tagged else None
    found: list[dict[PipelineSettings, PassOutput]] = [{} for _ in videos]
    for compute in dict.fromkeys(p for request in requests for p in request.passes):
        indices = [i for i, request in enumerate(requests) if compute in request.passes]
        batch_tags = [tags[i] for i in indices] if tags is not None else None
        for i, frames in zip(indices, _run_pass(pipeline, [videos[i] for i in indices], batch_tags, models, compute)):
            found[i][compute] = frames
    return [
        PassCandidates(
            parts=[(compute, found[i][compute]) for compute in request.passes],
            tags=tags[i] if tags is not None and request.tags is None else None,
        )
        for i, request in enumerate(requests)
    ]
