"""Pipeline settings that give randomly initialised models a meaningful workload.

The benchmark presets (``tiny``, ``paper-random``) have random weights, so the paper's
thresholds (τ_BB 0.5, τ_BIND 0.7, τ_AT 0.5, SAM's predicted-IoU 0.88 / stability 0.95 filters)
select nothing or everything: OWLv2's objectness saturates, softmax ImageBind scores are nearly
uniform (nothing reaches 0.7 → every mask empty), AST gives ~250 tags of probability ≈ 0.5,
and no random SAM mask passes the quality filters. A comparison of empty masks with empty masks
proves nothing, and the amount of work would not resemble a real run.

So each threshold is chosen from the float32 models' own scores on the benchmark video, to keep
a realistic number of items (≈ 8 box proposals, ≈ 2 kept proposals, ≈ 3 audio tags and ≈ 3
grounded boxes per frame), and it is put in the middle of the widest gap between neighbouring
scores near that count, so that the tiny numeric differences between two code paths (batched
vs frame by frame) cannot flip a decision. The same settings are used for cmsf and the reference
loop, in float32 and bfloat16, and are recorded in the benchmark's ``extra_info``.

SAM's automatic mask generator gets its quality filters switched off (threshold 0 skips a
filter); the tiny preset also uses an 8 × 8 point grid instead of 32 × 32 to fit the CPU smoke
run. ``sam_bind`` takes these options as parameters; the reference loop passes them to
``sam_masks`` directly.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from cmsf.io.inputs import split_segments
from cmsf.stages.grounding import ground
from cmsf.stages.proposals import propose_boxes
from cmsf.stages.tagging import audio_tag_probabilities, tag_audio

PROPOSALS_PER_FRAME = 8
KEPT_PER_FRAME = 2
TAGS_PER_SEGMENT = 3
GROUNDED_PER_FRAME = 3
GAP_SEARCH = 3  # look this many positions either side of the target count for the widest gap

SAM_AUTOMATIC_OPTIONS: dict[str, dict[str, Any]] = {
    "tiny": {"points_per_side": 8, "pred_iou_threshold": 0.0, "stability_score_threshold": 0.0},
    "paper-random": {"pred_iou_threshold": 0.0, "stability_score_threshold": 0.0},
}
"""``sam_masks`` options of automatic mode per preset (filters off; smaller grid for tiny)."""


def threshold_keeping(values: Sequence[float], keep: int) -> float:
    """A threshold that keeps about ``keep`` of ``values`` (those ≥ the threshold).

    The threshold is the midpoint of the widest gap between neighbouring distinct values among
    the ``GAP_SEARCH`` positions either side of the ``keep``-th largest. When all values are
    equal (or there is one), it is that value: everything is kept.
    """
    distinct = sorted({float(v) for v in values}, reverse=True)
    if len(distinct) <= 1:
        return distinct[0] if distinct else 0.0
    target = min(max(int(keep), 1), len(distinct) - 1)
    candidates = range(max(1, target - GAP_SEARCH), min(len(distinct) - 1, target + GAP_SEARCH) + 1)
    best = max(candidates, key=lambda i: distinct[i - 1] - distinct[i])
    return (distinct[best - 1] + distinct[best]) / 2


def _unit(value: float) -> float:
    return float(min(max(value, 0.0), 1.0))


def pipeline_settings(pipeline: str, preset: str, frames: Tensor, waveform: Tensor, sample_rate: int, models: Any) -> dict[str, Any]:
    """Keyword arguments for ``cmsf.pipelines.per_frame.PIPELINES[pipeline]`` (and the reference loop)
    that make the random-weight ``models`` (float32) do a realistic amount of work.

    The result also names the ``"pipeline"``; for ``sam-bind`` it has ``"sam_options"``, the
    automatic-mask options of ``cmsf.stages.segmentation.sam_masks`` (see :func:`split_settings`).
    """
    from cmsf.pipelines.per_frame import owod_bind, sam_bind

    count = frames.shape[0]
    if pipeline == "owod-bind":
        proposals = propose_boxes(frames, models, threshold=0.0)
        scores = torch.cat([p.scores for p in proposals]).tolist()
        box_threshold = _unit(threshold_keeping(scores, PROPOSALS_PER_FRAME * count))
        probe = owod_bind(frames, waveform, sample_rate, models, box_threshold=box_threshold, bind_threshold=0.0)
        bind_scores = torch.cat([f.bind_scores for f in probe.frames]).tolist()
        bind_threshold = _unit(threshold_keeping(bind_scores, KEPT_PER_FRAME * count))
        return {"pipeline": pipeline, "box_threshold": box_threshold, "bind_threshold": bind_threshold, "bind_mode": "softmax"}
    if pipeline == "sam-bind":
        probe_settings = {"pipeline": pipeline, "nms_threshold": 0.5, "bind_threshold": 0.0, "bind_mode": "softmax",
                          "sam_options": dict(SAM_AUTOMATIC_OPTIONS[preset])}
        kwargs, _ = split_settings(probe_settings)
        probe = sam_bind(frames, waveform, sample_rate, models, **kwargs)
        bind_scores = torch.cat([f.bind_scores for f in probe.frames]).tolist()
        return dict(probe_settings, bind_threshold=_unit(threshold_keeping(bind_scores, KEPT_PER_FRAME * count)))
    if pipeline == "at-gdino-sam":
        segments = split_segments(waveform, count)
        probabilities = audio_tag_probabilities(segments, sample_rate, models)
        tag_threshold = _unit(threshold_keeping(probabilities.flatten().tolist(), TAGS_PER_SEGMENT * count))
        tags = tag_audio(segments, sample_rate, models, threshold=tag_threshold)
        prompts = [[label for label, _ in frame_tags] for frame_tags in tags]
        detections = ground(frames, prompts, models, box_threshold=0.0, text_threshold=0.0)
        scores = torch.cat([d.scores for d in detections]).tolist()
        box_threshold = _unit(threshold_keeping(scores, GROUNDED_PER_FRAME * count))
        return {"pipeline": pipeline, "tag_threshold": tag_threshold, "box_threshold": box_threshold, "text_threshold": 0.25}
    raise ValueError(f"pipeline: expected one of owod-bind, sam-bind, at-gdino-sam, got {pipeline!r}")


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split :func:`pipeline_settings`' result for the pipeline ``settings["pipeline"]``.

    Returns:
        ``(pipeline kwargs, reference kwargs)``: ``sam_bind`` takes the SAM automatic options
        as keyword arguments; the reference loop gets them as ``sam_options``.
    """
    kwargs = dict(settings)
    kwargs.pop("pipeline")
    options = kwargs.pop("sam_options", None)
    if options is None:
        return kwargs, dict(kwargs)
    return {**kwargs, **options}, {**kwargs, "sam_options": dict(options)}
