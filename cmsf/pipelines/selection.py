"""The selection stage of each pipeline: the thresholds that need no model, applied to one
frame's :class:`~cmsf.pipelines.results.FrameCandidates` to give its :class:`~cmsf.pipelines.results.FrameEvidence`
(τ_BB on proposals, SAM's predicted-IoU filter, GroundingDINO's box threshold, the BIND filter).

Each re-applies the proposal thresholds it owns, so that candidates computed with looser ones
select exactly what a run with the stricter ones computes: one model pass serves a whole grid of
settings (``cmsf eval --sweep``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Union

import torch
from torch import Tensor

from cmsf.ops import bind_filter
from cmsf.pipelines.results import FrameCandidates, FrameEvidence
from cmsf.pipelines.settings import AtGdinoSamSettings, OwodBindSettings, PipelineSettings, SamBindSettings


def _take(candidates: FrameCandidates, index: Tensor) -> FrameCandidates:
    """The candidates at ``index (Tensor[K'])``, in that order."""
    return replace(
        candidates,
        boxes=candidates.boxes[index],
        proposal_scores=candidates.proposal_scores[index],
        masks=candidates.masks[index],
        visual=None if candidates.visual is None else candidates.visual[index],
        phrases=[candidates.phrases[i] for i in index.tolist()] if candidates.phrases else [],
    )


def _bind_selection(candidates: FrameCandidates, settings: Union[OwodBindSettings, SamBindSettings]) -> FrameEvidence:
    """The selection half of the BIND step: :func:`~cmsf.ops.bind_filter` of the proposals'
    embeddings against the segment's, read as the binder says (``bind_mode`` None: its own)."""
    scoring = candidates.scoring
    assert candidates.visual is not None and candidates.audio is not None and scoring is not None
    keep, scores = bind_filter(
        candidates.visual,
        candidates.audio,
        settings.bind_threshold,
        scoring.mode(settings.bind_mode),
        logit_scale=scoring.logit_scale,
        logit_bias=scoring.logit_bias,
    )
    return FrameEvidence(
        boxes=candidates.boxes,
        proposal_scores=candidates.proposal_scores,
        masks=candidates.masks,
        kept=keep.cpu(),
        bind_scores=scores.float().cpu(),
    )


def select_owod_bind(candidates: FrameCandidates, settings: OwodBindSettings) -> FrameEvidence:
    """OWOD-BIND's selection: the proposals with objectness ≥ ``box_threshold`` (the top
    candidate when none is: candidates are in decreasing objectness, and the top one is the
    proposer's keep-best-if-none choice), then the BIND filter among them.

    On candidates computed with ``box_threshold`` itself this is the identity on proposals; on
    candidates computed with a lower one it gives exactly the proposals a run with
    ``box_threshold`` computes (score thresholds commute with the proposer's other rules: the
    greedy NMS over OWLv2 boxes decides each box from higher-scored ones only, and the cap keeps
    a prefix)."""
    scores = candidates.proposal_scores
    passing = torch.nonzero(scores >= settings.box_threshold).flatten()
    if passing.numel() == 0 and scores.numel() > 0:
        passing = torch.zeros(1, dtype=torch.int64)
    if passing.numel() != scores.numel():
        candidates = _take(candidates, passing)
    return _bind_selection(candidates, settings)


def _passing(candidates: FrameCandidates, passing: Tensor) -> FrameCandidates:
    """The candidates where ``passing (Tensor[K])`` bool is set (all of them when it is all set)."""
    if bool(passing.all()):
        return candidates
    return _take(candidates, torch.nonzero(passing).flatten())


def select_sam_bind(candidates: FrameCandidates, settings: SamBindSettings) -> FrameEvidence:
    """SAM-BIND's selection: the automatic masks with predicted IoU > ``pred_iou_threshold``
    (none dropped at 0, SAM's "filter off"), then the BIND filter among them.

    On candidates computed with ``pred_iou_threshold`` itself the first step is the identity; on
    candidates computed with a lower one it gives exactly the masks a run with it computes: the
    filter drops the lowest-scored masks and the NMS that follows it in SAM is greedy in the same
    score order, so filtering before or after it keeps the same masks."""
    threshold = settings.pred_iou_threshold
    if threshold > 0.0:
        candidates = _passing(candidates, candidates.proposal_scores > threshold)
    return _bind_selection(candidates, settings)


def select_all(candidates: FrameCandidates, settings: Optional[PipelineSettings] = None) -> FrameEvidence:
    """The AT pipelines' selection: every grounded box (AT-GDINO-SAM) or found instance
    (AT-SAM3) is kept."""
    return FrameEvidence(
        boxes=candidates.boxes,
        proposal_scores=candidates.proposal_scores,
        masks=candidates.masks,
        kept=torch.ones(candidates.boxes.shape[0], dtype=torch.bool),
        tags=list(candidates.tags),
        phrases=list(candidates.phrases),
    )


def select_at_gdino_sam(candidates: FrameCandidates, settings: AtGdinoSamSettings) -> FrameEvidence:
    """AT-GDINO-SAM's selection: the grounded boxes scoring > ``box_threshold``, all kept.

    On candidates computed with ``box_threshold`` itself every box passes; on candidates
    computed with a lower one this gives exactly the boxes of a run with it (GroundingDINO's box
    threshold is a filter on the box scores kept as ``proposal_scores``; the same tags are
    assumed: ``tag_threshold`` changes the prompts, so it is a model setting)."""
    return select_all(_passing(candidates, candidates.proposal_scores > settings.box_threshold), settings)
