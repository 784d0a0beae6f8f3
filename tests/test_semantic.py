"""The class decision on a pipeline's result (cmsf.pipelines.semantic)."""

from __future__ import annotations

import pytest
import torch

from cmsf.models.loading import load_models
from cmsf.pipelines.per_frame import PIPELINES
from cmsf.pipelines.results import FrameEvidence, SegmentationResult, prepare_video
from cmsf.pipelines.semantic import class_texts, semantic_frames
from cmsf.pipelines.settings import settings_for
from cmsf.stages.binding import binder_of, masked_crops
from cmsf.stages.labelling import label_masks

H, W = 32, 48
MAN, DOG = 41, 17  # "man", "dog" in the AVSS class order


def box_mask(top: int, left: int, bottom: int, right: int) -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


def result(pipeline: str, frames: list[FrameEvidence]) -> SegmentationResult:
    masks = torch.stack([f.union(H, W) for f in frames])
    settings = settings_for(pipeline if pipeline in PIPELINES else "owod-bind", None)
    return SegmentationResult(pipeline=pipeline, masks=masks, frames=frames, settings=settings, sources={})


def test_tagged_masks_take_their_tags_class_and_the_higher_score_wins() -> None:
    tags = [("Male speech, man speaking", 0.9), ("Bark", 0.6), ("Wind", 0.5)]
    masks = torch.stack(
        [box_mask(0, 0, 20, 20), box_mask(10, 10, 30, 40), box_mask(0, 30, 10, 48), box_mask(20, 0, 32, 8)]
    )
    frame = FrameEvidence(
        boxes=torch.zeros(4, 4), proposal_scores=torch.tensor([0.5, 0.8, 0.9, 0.7]), masks=masks,
        kept=torch.tensor([True, True, True, False]), tags=tags,
        phrases=["male speech, man speaking", "bark", "wind", "bark"],  # GroundingDINO's cleaned prompts
    )  # fmt: skip
    frames = torch.zeros(1, 3, H, W, dtype=torch.uint8)
    out = semantic_frames("at-gdino-sam", frames, torch.zeros(1, 1600), 16_000, result("at-gdino-sam", [frame]), None)
    assert out.classes == [[MAN, DOG, 0]] and out.scores == [pytest.approx([0.5, 0.8, 0.9])]
    expected = torch.zeros(H, W, dtype=torch.int64)
    expected[masks[0]] = MAN
    expected[masks[1]] = DOG  # scores 0.8 > 0.5: the dog wins the overlap
    assert torch.equal(out.maps[0], expected)  # wind (no class) and the unkept mask claim nothing


def test_bind_masks_labelled_where_picture_and_sound_agree() -> None:
    models = load_models("tiny", device="cpu")
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, H, W), dtype=torch.uint8, generator=g)
    waveform = torch.randn(1, 32_000, generator=g) * 0.1
    evidence = []
    for t in range(2):
        masks = torch.stack([box_mask(0, 0, 20, 24), box_mask(8, 16, 32, 48), box_mask(0, 40, 4, 48)])
        boxes = torch.tensor([[0, 0, 24, 20], [16, 8, 48, 32], [40, 0, 48, 4]], dtype=torch.float32)
        kept = torch.tensor([True, t == 0, True])
        evidence.append(FrameEvidence(boxes=boxes, proposal_scores=torch.ones(3), masks=masks, kept=kept))
    text = class_texts(models)
    out = semantic_frames("owod-bind", frames, waveform, 16_000, result("owod-bind", evidence), models, text=text)
    binder = binder_of(models)
    video = prepare_video(frames, waveform, 16_000)
    audio = binder.embed_audio(video.segments, 16_000)
    for t, frame in enumerate(evidence):
        crops = masked_crops(video.images[t], frame.boxes[frame.kept], frame.masks[frame.kept])
        labels = label_masks(binder.embed_vision(crops), audio[t], text)
        assert out.classes[t] == labels.classes.tolist() and all(c > 0 for c in out.classes[t])
        assert set(out.maps[t].unique().tolist()) <= {0, *labels.classes.tolist()}
        assert bool((out.maps[t][frame.masks[frame.kept].any(0)] > 0).all())


def test_unknown_pipeline_and_mismatched_result_refused() -> None:
    frame = FrameEvidence(boxes=torch.zeros(0, 4), proposal_scores=torch.zeros(0), masks=torch.zeros(0, H, W,
                          dtype=torch.bool), kept=torch.zeros(0, dtype=torch.bool))  # fmt: skip
    frames = torch.zeros(2, 3, H, W, dtype=torch.uint8)
    with pytest.raises(ValueError, match="pipeline"):
        semantic_frames("nope", frames, torch.zeros(1, 3200), 16_000, result("x", [frame, frame]), None)
    with pytest.raises(ValueError, match="1 frames of evidence for 2"):
        semantic_frames("at-sam3", frames, torch.zeros(1, 3200), 16_000, result("at-sam3", [frame]), None)
