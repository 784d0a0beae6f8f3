"""Stand-in pipelines for tests about bookkeeping (resuming, atomic writes, locks) rather than
models: a per-video function ``run(frames, waveform, sample_rate, models) -> result with .masks``
as the two stages ``cmsf eval``'s dataset runner runs (cmsf.pipelines.per_frame.PIPELINE_STAGES)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from cmsf.pipelines.per_frame import FrameCandidates, FrameEvidence, PipelineStages


def as_stages(run: Callable[..., Any]) -> PipelineStages:
    """``run`` called once per video of each batch (frames ``Tensor[T, 3, H, W]`` uint8, the
    video's segments joined as its waveform); each frame's mask becomes one proposal, kept."""

    def candidates(videos, models, settings) -> list[list[FrameCandidates]]:
        out = []
        for video in videos:
            masks = run(torch.stack(video.images), torch.cat(video.segments, dim=-1), video.sample_rate, models).masks
            box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
            out.append([FrameCandidates(box, torch.ones(1), mask[None].bool()) for mask in masks])
        return out

    def select(frame: FrameCandidates, settings) -> FrameEvidence:
        return FrameEvidence(frame.boxes, frame.proposal_scores, frame.masks, kept=torch.ones(1, dtype=torch.bool))

    return PipelineStages(candidates, select)
