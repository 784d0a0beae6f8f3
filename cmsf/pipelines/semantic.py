"""Semantic labels for any pipeline's result: each kept mask gets an AVSBench-semantic class (or is
dropped as background) and each frame becomes a class map (:mod:`cmsf.stages.labelling`).

- BIND pipelines (``owod-bind``, ``sam-bind`` and their tracked versions): each kept mask's masked crop (the frame inside the
  mask, its blur or black outside, as the run's BIND step crops) and the frame's audio segment are embedded by
  the binder and compared with the class prompts' text embeddings (:func:`class_texts`);
  :func:`~cmsf.stages.labelling.label_masks` picks the class where picture and sound agree
  (background below ``threshold``). The embeddings are computed again for the kept masks only
  (the result keeps masks, not embeddings): the same crops and segments as the run's, so the
  same embeddings up to batch rounding.
- AT pipelines (``at-gdino-sam``, ``at-sam3``): a kept mask takes the class the reviewed AudioSet
  vocabulary gives the tag it was grounded to (:mod:`cmsf.io.vocabulary`); a tag without an AVSS
  class gives background (the mask is dropped). Its score is the proposal's (box or instance).

Overlaps: :func:`~cmsf.stages.labelling.class_map`, the higher-scoring mask wins a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from cmsf.io.vocabulary import audioset_vocabulary
from cmsf.models.loading import Models
from cmsf.pipelines.results import FrameEvidence, SegmentationResult, prepare_video
from cmsf.pipelines.tracked import TRACKED_PIPELINES
from cmsf.stages.binding import TextEmbeddings, binder_of, masked_crops
from cmsf.stages.grounding import grounding_phrase
from cmsf.stages.labelling import DEFAULT_CLASS_TEMPLATE, class_map, class_prompts, label_masks

BIND_PIPELINES = ("owod-bind", "sam-bind", *TRACKED_PIPELINES)
"""The pipelines whose kept masks are labelled by the binder (a tracked pipeline's frame lists its
tracks present there as proposals, so each track is labelled frame by frame)."""
TAGGED_PIPELINES = ("at-gdino-sam", "at-sam3")


@dataclass(frozen=True)
class SemanticFrames:
    """A video's class decision.

    Attributes:
        maps: ``Tensor[T, H, W]`` int64, each frame's class map (0 = background).
        classes: per frame, the class of each kept mask (0: dropped), in kept order.
        scores: per frame, each kept mask's score (the one overlaps are resolved by).
    """

    maps: Tensor
    classes: list[list[int]]
    scores: list[list[float]]


def class_texts(models: Models, template: str = DEFAULT_CLASS_TEMPLATE) -> TextEmbeddings:
    """The 70 class prompts (:func:`~cmsf.stages.labelling.class_prompts`) embedded by ``models``'
    binder (loaded now if it was not)."""
    return binder_of(models).embed_text(class_prompts(template))


def _tag_classes(frame: FrameEvidence) -> dict[str, int]:
    """The frame's phrases as the AT stages name them (the tag, or GroundingDINO's cleaned form
    of it) → the tag's AVSS class."""
    vocabulary = audioset_vocabulary()
    out: dict[str, int] = {}
    for tag, _ in frame.tags:
        entry = vocabulary.get(tag)
        index = entry.class_index if entry is not None else 0
        out.setdefault(tag, index)
        out.setdefault(grounding_phrase(tag), index)
    return out


def tagged_labels(frame: FrameEvidence) -> tuple[Tensor, Tensor]:
    """An AT pipeline's frame: the class (``Tensor[K'] int64``) and score (``Tensor[K'] float32``)
    of each of its K' kept masks, in kept order (the module docstring's rule)."""
    kept = torch.nonzero(frame.kept).flatten().tolist()
    table = _tag_classes(frame)
    classes = torch.tensor([table.get(frame.phrases[k], 0) for k in kept], dtype=torch.int64)
    return classes, frame.proposal_scores[kept].float()


def _bind_labels(
    evidence: Sequence[FrameEvidence], images: Sequence[Tensor], audio: Tensor, text: TextEmbeddings,
    models: Models, threshold: float, background: str,
) -> list[tuple[Tensor, Tensor]]:  # fmt: skip
    crops, counts = [], []
    for frame, image in zip(evidence, images):
        kept = frame.kept.bool()
        crops.extend(masked_crops(image, frame.boxes[kept], frame.masks[kept], background=background))
        counts.append(int(kept.sum()))
    visual = binder_of(models).embed_vision(crops) if crops else torch.zeros(0, text.vision.shape[1])
    out, start = [], 0
    for t, count in enumerate(counts):
        labels = label_masks(visual[start : start + count], audio[t], text, threshold=threshold)
        out.append((labels.classes.cpu(), labels.scores.float().cpu()))
        start += count
    return out


def semantic_frames(
    pipeline: str,
    frames: Tensor,
    waveform: Tensor,
    sample_rate: int,
    result: SegmentationResult,
    models: Models,
    *,
    text: Optional[TextEmbeddings] = None,
    threshold: float = 0.0,
    crop_background: str = "blur",
) -> SemanticFrames:
    """The class decision for ``result``, the output of ``pipeline`` on ``frames (Tensor[T, 3, H,
    W]) uint8`` with ``waveform (Tensor[C, S])`` at ``sample_rate`` Hz.

    Args:
        text: the class prompts' embeddings (:func:`class_texts`; computed here when None, for
            a BIND pipeline).
        threshold: BIND pipelines: a mask whose best class score is below it is dropped.
        crop_background: BIND pipelines: outside the mask in its crop, ``"blur"`` or ``"black"``
            (:func:`~cmsf.stages.binding.masked_crops`); the run's own ``crop_background``.

    Raises:
        ValueError: an unknown pipeline, or a result that does not match the frames.
    """
    if pipeline not in BIND_PIPELINES + TAGGED_PIPELINES:
        raise ValueError(f"pipeline: expected one of {', '.join(BIND_PIPELINES + TAGGED_PIPELINES)}, got {pipeline!r}")
    video = prepare_video(frames, waveform, sample_rate)
    evidence = result.frames
    if len(evidence) != len(video.images):
        raise ValueError(f"result: {len(evidence)} frames of evidence for {len(video.images)} frames")
    if pipeline in BIND_PIPELINES:
        text = class_texts(models) if text is None else text
        audio = binder_of(models).embed_audio(video.segments, video.sample_rate)
        labels = _bind_labels(evidence, video.images, audio, text, models, threshold, crop_background)
    else:
        labels = [tagged_labels(frame) for frame in evidence]
    return labelled_frames(evidence, labels)


def labelled_frames(evidence: Sequence[FrameEvidence], labels: Sequence[tuple[Tensor, Tensor]]) -> SemanticFrames:
    """The :class:`SemanticFrames` of a video whose frame t keeps the masks ``evidence[t]`` keeps,
    labelled ``labels[t]`` (``(classes Tensor[K'] int64, scores Tensor[K'] float)``, in kept order)."""
    maps = torch.stack([
        class_map(frame.masks[frame.kept.bool()].cpu(), classes, scores)
        for frame, (classes, scores) in zip(evidence, labels)
    ])  # fmt: skip
    return SemanticFrames(
        maps=maps,
        classes=[c.tolist() for c, _ in labels],
        scores=[s.tolist() for _, s in labels],
    )
