"""The three pipelines: composition, evidence consistency, batching; and their shared steps."""

import math

import numpy as np
import pytest
import torch
import torchvision

from cmsf.pipelines.per_frame import FrameEvidence, masked_crops


def test_black_masked_crops_equal_pil_crop_of_the_blacked_out_frame():
    """The ImageBind-SAM demo's way (background="black"; the authors' blur: tests/test_crops.py):
    black out everything outside the mask, then PIL's crop(box)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    image = torch.randint(1, 256, (3, 9, 12), dtype=torch.uint8, generator=generator)
    masks = torch.rand(4, 9, 12, generator=generator) > 0.4
    boxes = torch.tensor([[1.5, 0.2, 5.0, 4.0], [2.5, 3.5, 11.4, 8.6], [0.0, 0.0, 12.0, 9.0], [3.3, 2.7, 7.7, 6.2]])
    crops = masked_crops(image, boxes, masks, background="black")
    for crop, box, mask in zip(crops, boxes.tolist(), masks):
        blacked = (image * mask).permute(1, 2, 0).numpy()
        expected = np.asarray(Image.fromarray(blacked).crop(tuple(box)))
        assert crop.dtype == torch.uint8
        np.testing.assert_array_equal(crop.permute(1, 2, 0).numpy(), expected)


def test_masked_crops_never_empty():
    image = torch.full((3, 6, 8), 5, dtype=torch.uint8)
    masks = torch.ones(1, 6, 8, dtype=torch.bool)
    (crop,) = masked_crops(image, torch.tensor([[7.2, 5.1, 7.4, 5.3]]), masks)
    assert crop.shape == (3, 1, 1)
    with pytest.raises(ValueError, match="one mask per box"):
        masked_crops(image, torch.zeros(2, 4), masks)


def test_masked_crops_clip_boxes_to_the_image():
    image = torch.full((3, 4, 4), 7, dtype=torch.uint8)
    masks = torch.ones(1, 4, 4, dtype=torch.bool)
    (crop,) = masked_crops(image, torch.tensor([[-3.0, -2.0, 10.0, 9.0]]), masks)
    assert crop.shape == (3, 4, 4) and int(crop.min()) == 7


def test_frame_union_is_the_union_of_kept_masks():
    masks = torch.zeros(3, 4, 5, dtype=torch.bool)
    masks[0, 0, 0] = masks[1, 1, 1] = masks[2, 2, 2] = True
    evidence = FrameEvidence(
        boxes=torch.zeros(3, 4), proposal_scores=torch.zeros(3), masks=masks, kept=torch.tensor([True, False, True])
    )
    union = evidence.union(4, 5)
    assert union.shape == (4, 5)
    assert union.sum() == 2 and union[0, 0] and union[2, 2] and not union[1, 1]
    none = FrameEvidence(boxes=torch.zeros(0, 4), proposal_scores=torch.zeros(0),
                         masks=torch.zeros(0, 4, 5, dtype=torch.bool), kept=torch.zeros(0, dtype=torch.bool))
    assert none.union(4, 5).shape == (4, 5) and not none.union(4, 5).any()


# ---------------------------------------------------------------- the pipelines, tiny preset
from cmsf import at_gdino_sam, bind_filter, load_models, owod_bind, sam_bind  # noqa: E402
from cmsf.io.inputs import split_segments  # noqa: E402
from cmsf.models.imagebind import imagebind_audio_inputs, imagebind_vision_inputs  # noqa: E402
from cmsf.stages.grounding import grounding_phrase  # noqa: E402

T, H, W = 3, 56, 72  # non-square on purpose
SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def models():
    return load_models("tiny", device="cpu")


@pytest.fixture(scope="module")
def video():
    generator = torch.Generator().manual_seed(7)
    frames = torch.randint(0, 256, (T, 3, H, W), dtype=torch.uint8, generator=generator)
    frames[:, :, 10:40, 20:50] = torch.tensor([250, 30, 30], dtype=torch.uint8)[None, :, None, None]
    waveform = 0.1 * torch.randn(2, T * SAMPLE_RATE, generator=generator)
    return frames, waveform


def check_evidence(result, pipeline):
    assert result.pipeline == pipeline
    assert result.masks.shape == (T, H, W) and result.masks.dtype == torch.bool
    assert len(result.frames) == T
    for t, evidence in enumerate(result.frames):
        k = evidence.boxes.shape[0]
        assert evidence.boxes.shape == (k, 4) and evidence.proposal_scores.shape == (k,)
        assert evidence.masks.shape == (k, H, W) and evidence.kept.shape == (k,)
        union = evidence.masks[evidence.kept].any(0) if k else torch.zeros(H, W, dtype=torch.bool)
        assert torch.equal(result.masks[t], union)
    json.dumps(result.to_json())  # serialisable


import json  # noqa: E402


def test_owod_bind_evidence_and_composition(models, video):
    frames, waveform = video
    result = owod_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=0.0)
    check_evidence(result, "owod-bind")
    # threshold 0 keeps every proposal: the mask is the union of all proposal masks
    for t, evidence in enumerate(result.frames):
        assert bool(evidence.kept.all())
        assert evidence.boxes.shape[0] >= 1  # the best proposal is kept when none passes τ_BB
    # the bind scores are bind_filter of the masked crops' embeddings against segment t's audio
    t = 1
    evidence = result.frames[t]
    crops = masked_crops(frames[t], evidence.boxes, evidence.masks)
    visual = models.imagebind.embed_vision(imagebind_vision_inputs(crops))
    segment = split_segments(waveform, T)[t]
    audio = models.imagebind.embed_audio(imagebind_audio_inputs(segment, SAMPLE_RATE)[None])[0]
    _, scores = bind_filter(visual, audio, 0.0)
    torch.testing.assert_close(evidence.bind_scores, scores.float(), rtol=1e-4, atol=1e-5)


def test_owod_bind_softmax_above_half_keeps_at_most_one_per_frame(models, video):
    frames, waveform = video
    result = owod_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=0.51)
    check_evidence(result, "owod-bind")
    assert all(int(e.kept.sum()) <= 1 for e in result.frames)
    strict = owod_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=1.0)
    # bind scores do not depend on the threshold; kept sets shrink with it
    for loose_e, strict_e in zip(result.frames, strict.frames):
        torch.testing.assert_close(loose_e.bind_scores, strict_e.bind_scores)
        assert bool((strict_e.kept <= loose_e.kept).all())


def test_whole_video_equals_frame_by_frame(models, video):
    """Batching a video's frames changes nothing: frame t of the video equals a one-frame video
    made of frame t and audio segment t."""
    frames, waveform = video
    whole = owod_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=0.0)
    segments = split_segments(waveform, T)
    for t in range(T):
        single = owod_bind(frames[t : t + 1], segments[t], SAMPLE_RATE, models, bind_threshold=0.0)
        torch.testing.assert_close(single.frames[0].boxes, whole.frames[t].boxes, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(single.frames[0].bind_scores, whole.frames[t].bind_scores, rtol=1e-3, atol=1e-4)
        agreement = (single.masks[0] == whole.masks[t]).float().mean()
        assert agreement > 0.999


def test_each_model_sees_the_video_in_one_batch(models, video, monkeypatch):
    frames, waveform = video
    calls = {"vision": 0, "audio": 0, "sam": 0}
    imagebind = models.imagebind
    sam = models.sam.model
    for name, obj, attr in (("vision", imagebind, "embed_vision"), ("audio", imagebind, "embed_audio"),
                            ("sam", sam, "get_image_embeddings")):
        original = getattr(obj, attr)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(obj, attr, counted)
    owod_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=0.0)
    assert calls == {"vision": 1, "audio": 1, "sam": 1}


def test_sam_bind_evidence(models, video):
    frames, waveform = video
    result = sam_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=0.0, points_per_side=4)
    check_evidence(result, "sam-bind")
    assert result.settings.nms_threshold == 0.5
    for evidence in result.frames:
        # automatic proposals are de-duplicated: kept boxes overlap at most at the NMS IoU
        if evidence.boxes.shape[0] > 1:
            iou = torchvision.ops.box_iou(evidence.boxes, evidence.boxes)
            assert bool((iou.triu(1) <= 0.5 + 1e-6).all())


def test_at_gdino_sam_evidence(models, video):
    frames, waveform = video
    result = at_gdino_sam(frames, waveform, SAMPLE_RATE, models, tag_threshold=0.0, box_threshold=0.6)
    check_evidence(result, "at-gdino-sam")
    for evidence in result.frames:
        assert len(evidence.tags) == 527  # threshold 0: every AudioSet label, most probable first
        probabilities = [p for _, p in evidence.tags]
        assert probabilities == sorted(probabilities, reverse=True)
        assert len(evidence.phrases) == evidence.boxes.shape[0]
        # each box is grounded to one of the frame's tags (GroundingDINO's lowercase prompt form)
        assert set(evidence.phrases) <= {grounding_phrase(label) for label, _ in evidence.tags}


def test_at_gdino_sam_without_tags_gives_empty_masks_and_skips_grounding(models, video, monkeypatch):
    frames, waveform = video

    def forbidden(*args, **kwargs):
        raise AssertionError("GroundingDINO must not run for a frame without tags")

    monkeypatch.setattr(models.grounding_dino.model, "forward", forbidden)
    result = at_gdino_sam(frames, waveform, SAMPLE_RATE, models, tag_threshold=1.0)
    check_evidence(result, "at-gdino-sam")
    assert not result.masks.any()
    assert all(e.tags == [] and e.boxes.shape[0] == 0 for e in result.frames)


def test_pipelines_reject_bad_input(models, video):
    frames, waveform = video
    with pytest.raises(ValueError, match="sample_rate"):
        owod_bind(frames, waveform, 0, models)
    with pytest.raises(ValueError, match="waveform"):
        owod_bind(frames, torch.tensor([math.nan] * 100), SAMPLE_RATE, models)
    with pytest.raises(ValueError, match="frames"):
        owod_bind(frames[:, :2], waveform, SAMPLE_RATE, models)
    with pytest.raises(ValueError, match="one size"):
        owod_bind([frames[0], frames[1, :, :40]], waveform, SAMPLE_RATE, models)
    with pytest.raises(ValueError, match="threshold"):
        owod_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=2.0)


def test_evidence_json_keeps_frame_and_proposal_pixel_counts_apart(models, video):
    frames, waveform = video
    result = owod_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=0.0)
    document = result.to_json()
    for t, frame in enumerate(document["frames"]):
        assert frame["mask_pixels"] == int(result.masks[t].sum())
        assert frame["proposal_mask_pixels"] == result.frames[t].masks.flatten(1).sum(1).tolist()
        assert len(frame["kept"]) == len(frame["boxes"]) == len(frame["bind_scores"])


def test_sam_bind_passes_the_quality_filters_to_sam(models, video):
    frames, waveform = video
    strict = sam_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=0.0, points_per_side=4)
    loose = sam_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=0.0, points_per_side=4,
                     pred_iou_threshold=0.0, stability_score_threshold=0.0)
    assert loose.settings.pred_iou_threshold == 0.0 and strict.settings.stability_score_threshold == 0.95
    # switching the filters off can only add proposals (before NMS); random tiny SAM passes few
    assert sum(len(f.boxes) for f in loose.frames) >= sum(len(f.boxes) for f in strict.frames)
    assert sum(len(f.boxes) for f in loose.frames) > 0


# ---------------------------------------------------------------- the two stages
from cmsf.pipelines.per_frame import PIPELINE_STAGES, prepare_video, run_videos, select_video  # noqa: E402
from cmsf.pipelines.settings import make_settings  # noqa: E402


def test_run_videos_equals_each_video_alone(models, video):
    """Several videos in one batch per model: each video's result is the one it gets alone."""
    frames, waveform = video
    other_frames = frames.flip(-1)[:2]  # a second video of another length
    other_waveform = waveform[:1, : 2 * SAMPLE_RATE] * 0.5
    videos = [prepare_video(frames, waveform, SAMPLE_RATE), prepare_video(other_frames, other_waveform, SAMPLE_RATE)]
    for pipeline, settings in (("owod-bind", {"bind_threshold": 0.0}), ("sam-bind", {"points_per_side": 2, "bind_threshold": 0.0})):
        together = run_videos(pipeline, videos, models, make_settings(pipeline, settings))
        alone = [run_videos(pipeline, [v], models, make_settings(pipeline, settings))[0] for v in videos]
        assert len(together) == 2
        for batched, single in zip(together, alone):
            assert torch.equal(batched.masks, single.masks)
            assert batched.settings == single.settings
            for b, s in zip(batched.frames, single.frames):
                assert torch.equal(b.boxes, s.boxes) and torch.equal(b.kept, s.kept)
                torch.testing.assert_close(b.bind_scores, s.bind_scores, rtol=1e-4, atol=1e-6)
    assert run_videos("owod-bind", [], models) == []


def test_selection_of_loose_candidates_equals_a_stricter_run(models, video):
    """Candidates computed at a low τ_BB, selected at a higher one, give the run at that τ_BB:
    score thresholds commute with the proposer's rules, so one model pass serves many settings."""
    frames, waveform = video
    clip = prepare_video(frames, waveform, SAMPLE_RATE)
    loose = PIPELINE_STAGES["owod-bind"].candidates([clip], models, make_settings("owod-bind", {"box_threshold": 0.0}))[0]
    objectness = torch.cat([c.proposal_scores for c in loose])
    thresholds = ((0.0, 0.0), (float(objectness.median()), 0.3), (float(objectness.max()) + 1e-3, 0.7))
    for box_threshold, bind_threshold in thresholds:
        settings = make_settings("owod-bind", {"box_threshold": box_threshold, "bind_threshold": bind_threshold})
        selected = select_video("owod-bind", clip, loose, settings)
        direct = owod_bind(frames, waveform, SAMPLE_RATE, models, settings=settings)
        assert torch.equal(selected.masks, direct.masks)
        for s, d in zip(selected.frames, direct.frames):
            assert torch.equal(s.boxes, d.boxes) and torch.equal(s.kept, d.kept)
            torch.testing.assert_close(s.bind_scores, d.bind_scores, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- proposer, proposal NMS / cap, crop background
from cmsf import propose_boxes  # noqa: E402


def test_owod_bind_records_proposer_nms_cap_and_crop_background(models, video):
    frames, waveform = video
    result = owod_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=0.0, max_proposals=2)
    assert result.sources["mavl"] == "not used" and result.sources["owlv2"] == "random weights, tiny owlv2 config"
    assert result.settings.proposal_nms_threshold == 0.5 and result.settings.max_proposals == 2
    assert result.settings.crop_background == "blur"
    assert all(len(f.boxes) <= 2 for f in result.frames)
    assert result.to_json()["models"]["mavl"] == "not used"
    assert sam_bind(frames, waveform, SAMPLE_RATE, models, points_per_side=2).settings.crop_background == "blur"


def test_crop_background_reaches_the_binder(models, video):
    """Blur and black crops of the same proposals give different ImageBind scores; each equals
    bind_filter of masked_crops with that background."""
    frames, waveform = video
    scores = {}
    for background in ("blur", "black"):
        result = owod_bind(frames, waveform, SAMPLE_RATE, models, bind_threshold=0.0, crop_background=background)
        assert result.settings.crop_background == background
        evidence = result.frames[0]
        crops = masked_crops(frames[0], evidence.boxes, evidence.masks, background=background)
        visual = models.imagebind.embed_vision(imagebind_vision_inputs(crops))
        audio = models.imagebind.embed_audio(imagebind_audio_inputs(split_segments(waveform, T)[0], SAMPLE_RATE)[None])[0]
        torch.testing.assert_close(evidence.bind_scores, bind_filter(visual, audio, 0.0)[1].float(), rtol=1e-4, atol=1e-5)
        scores[background] = evidence.bind_scores
    if len(scores["blur"]) > 1:
        assert not torch.allclose(scores["blur"], scores["black"])


def test_owod_bind_with_mavl_proposes_with_mavl(video):
    frames, waveform = video
    mavl_models = load_models("tiny", device="cpu", mavl="random")
    result = owod_bind(frames, waveform, SAMPLE_RATE, mavl_models, bind_threshold=0.0)
    check_evidence(result, "owod-bind")
    assert result.sources["mavl"] == "random weights, tiny mavl config"
    for evidence, proposals in zip(result.frames, propose_boxes(frames, mavl_models)):
        torch.testing.assert_close(evidence.boxes, proposals.boxes)
        torch.testing.assert_close(evidence.proposal_scores, proposals.scores)


@pytest.mark.parametrize(
    "settings, match",
    [({"crop_background": "grey"}, "crop_background: expected one of blur, black"),
     ({"max_proposals": 0}, "max_proposals"), ({"proposal_nms_threshold": 1.5}, "proposal_nms_threshold")],
)
def test_owod_bind_rejects_bad_proposal_and_crop_settings(settings, match):
    with pytest.raises(ValueError, match=match):
        make_settings("owod-bind", settings)
