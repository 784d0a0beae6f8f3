"""What the pipelines take and give, as data: a checked video (:class:`VideoInput`, made by
:func:`prepare_video`), what the models computed for a frame before any threshold
(:class:`FrameCandidates`), what its mask was made from (:class:`FrameEvidence`), and a video's
result (:class:`SegmentationResult`) with its JSON form.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from torch import Tensor

from cmsf.io.decoding import DEFAULT_SAMPLE_RATE, MIN_SEGMENT_SECONDS
from cmsf.io.inputs import Images, as_image_list, check_sample_rate, split_segments
from cmsf.pipelines.settings import PipelineSettings
from cmsf.stages.binding import BindScoring


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
        settings: the settings the pipeline ran with (``bind_mode`` resolved to the mode used;
            one of :data:`cmsf.pipelines.settings.SETTINGS`).
        sources: where every component of the models comes from (:meth:`Models.sources`).
    """

    pipeline: str
    masks: Tensor
    frames: list[FrameEvidence]
    settings: PipelineSettings
    sources: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "settings": asdict(self.settings),
            "models": dict(self.sources),
            "frame_size": list(self.masks.shape[1:]),
            "frames": [
                {"index": t, "mask_pixels": int(self.masks[t].sum()), **evidence.to_json()}
                for t, evidence in enumerate(self.frames)
            ],
        }


@dataclass
class FrameCandidates:
    """What the models computed for one frame, before any threshold of the selection step.

    The model stage of a pipeline (:data:`PIPELINE_STAGES`) turns a video into one
    ``FrameCandidates`` per frame; the selection stage turns each into a :class:`FrameEvidence`
    with the pipeline's thresholds. Candidates computed with looser proposal thresholds are a
    superset of those computed with stricter ones, so one model pass can be selected with
    several settings (see :mod:`cmsf.pipelines.selection`).

    Attributes:
        boxes (Tensor[K, 4]): pixel (x1, y1, x2, y2) of the frame, float32, CPU.
        proposal_scores (Tensor[K]): float32, highest first for OWOD-BIND (see
            :attr:`FrameEvidence.proposal_scores`).
        masks (Tensor[K, H, W]): bool, one per box.
        visual (Tensor[K, D] | None): the binder's embedding of each proposal's masked crop (the
            BIND pipelines), float32.
        audio (Tensor[D] | None): the binder's embedding of the frame's audio segment.
        scoring (BindScoring | None): how the binder's dot products become scores.
        tags, phrases: as in :class:`FrameEvidence` (AT pipelines).
    """

    boxes: Tensor
    proposal_scores: Tensor
    masks: Tensor
    visual: Optional[Tensor] = None
    audio: Optional[Tensor] = None
    scoring: Optional[BindScoring] = None
    tags: list[tuple[str, float]] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VideoInput:
    """One video as the pipelines take it, checked: ``images`` (T ``Tensor[3, H, W]`` uint8 of
    one size), ``segments`` (T ``Tensor[C, S_t]`` float, segment t goes with frame t) and
    ``sample_rate`` in Hz. Made by :func:`prepare_video`."""

    images: list[Tensor]
    segments: list[Tensor]
    sample_rate: int

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of every frame."""
        return int(self.images[0].shape[-2]), int(self.images[0].shape[-1])


def prepare_video(frames: Images, waveform: Tensor, sample_rate: int) -> VideoInput:
    """Check one video's inputs and cut its audio into one segment per frame.

    Args:
        frames: ``Tensor[T, 3, H, W]`` uint8, or a list of T PIL images / ``Tensor[3, H, W]``
            uint8, all of one size.
        waveform: ``Tensor[C, S]`` or ``Tensor[S]`` float; segment t is the t-th of T equal
            slices (:func:`cmsf.io.inputs.split_segments`).
        sample_rate: Hz.

    Raises:
        ValueError: frames of different sizes, an audio segment shorter than
            :data:`~cmsf.io.decoding.MIN_SEGMENT_SECONDS` (checked here, before any model runs), or
            any input refused by the shared checks; the message names the argument.
    """
    images = as_image_list(frames, "frames")
    sizes = {tuple(image.shape[-2:]) for image in images}
    if len(sizes) != 1:
        raise ValueError(f"frames: expected frames of one size, got sizes {sorted(sizes)}")
    sample_rate = check_sample_rate(sample_rate)
    segments = split_segments(waveform, len(images), "waveform")
    shortest = min(segment.shape[-1] for segment in segments)
    if math.ceil(shortest * DEFAULT_SAMPLE_RATE / sample_rate) < round(MIN_SEGMENT_SECONDS * DEFAULT_SAMPLE_RATE):
        total = sum(segment.shape[-1] for segment in segments)
        most = int(total / sample_rate / MIN_SEGMENT_SECONDS + 1e-9)
        advice = f"at most {most} frame(s) for this audio, or longer audio" if most else "longer audio"
        raise ValueError(
            f"waveform: {total} samples at {sample_rate} Hz ({total / sample_rate * 1000:.4g} ms) give each of the "
            f"{len(images)} frames {shortest} samples ({shortest / sample_rate * 1000:.3g} ms); each frame's segment "
            f"must hold at least {MIN_SEGMENT_SECONDS * 1000:g} ms (one filterbank window of the audio models): "
            f"{advice}"
        )
    return VideoInput(images=images, segments=segments, sample_rate=sample_rate)
