"""The tracked pipelines (owod-bind-tracked, sam-bind-tracked): their pure steps against
brute-force references, and the pipelines end to end on the tiny preset against the stages they
are made of (the per-frame pipeline's kept candidates, track_masks, the binder on the tracks'
crops)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cmsf import bind_filter, load_models, owod_bind, owod_bind_tracked, sam_bind, sam_bind_tracked, track_masks
from cmsf.io.inputs import split_segments
from cmsf.pipelines.settings import (
    FREE,
    OwodBindSettings,
    OwodBindTrackedSettings,
    SamBindTrackedSettings,
    settings_type,
    sweep_rules,
)
from cmsf.pipelines.tracked import VideoTracks, frame_settings, merge_tracks, select_tracks, smooth_scores
from cmsf.stages.binding import BindScoring, binder_of, masked_crops
from cmsf.stages.segmentation import mask_bounds

T, H, W = 4, 48, 64
RATE = 16000
LOOSE = dict(bind_threshold=0.2, track_threshold=0.2)


@pytest.fixture(scope="module")
def models():
    return load_models("tiny", device="cpu")


@pytest.fixture(scope="module")
def video():
    g = torch.Generator().manual_seed(5)
    frames = torch.randint(0, 256, (T, 3, H, W), dtype=torch.uint8, generator=g)
    frames[:, :, 8:30, 10:40] = torch.tensor([240, 40, 40], dtype=torch.uint8)[None, :, None, None]
    return frames, 0.1 * torch.randn(T * RATE, generator=g)


# ---------------------------------------------------------------- pure steps
@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=5, max_size=5), min_size=1, max_size=4),
    st.integers(0, 6),
)
def test_smooth_scores_is_the_windowed_mean_of_the_scored_frames(rows, window):
    scores = torch.tensor([[math.nan if v is None else v for v in row] for row in rows], dtype=torch.float64)
    got = smooth_scores(scores, window)
    for k, row in enumerate(rows):
        for t in range(len(row)):
            seen = [v for v in row[max(0, t - window) : t + window + 1] if v is not None]
            if seen:
                assert got[k, t].item() == pytest.approx(sum(seen) / len(seen), abs=1e-12)
            else:
                assert math.isnan(got[k, t].item())


def _boxes_masks(*boxes):
    """One track per box list (one box per frame, None: empty) on a 2-frame 10×10 video."""
    masks = torch.zeros(len(boxes), 2, 10, 10, dtype=torch.bool)
    for k, frames in enumerate(boxes):
        for t, box in enumerate(frames):
            if box is not None:
                y1, y2, x1, x2 = box
                masks[k, t, y1:y2, x1:x2] = True
    return masks


def test_merge_tracks_needs_overlap_at_both_seed_frames():
    masks = _boxes_masks(
        [(0, 5, 0, 5), (0, 5, 0, 5)],  # seed frame 0
        [(0, 5, 0, 5), (0, 5, 0, 5)],  # seed frame 1: overlaps track 0 at both seeds
        [(0, 5, 0, 5), (5, 10, 5, 10)],  # seed frame 1: overlaps at frame 0 only
        [(5, 10, 5, 10), (5, 10, 5, 10)],  # seed frame 0: overlaps track 2 at frame 1, not at frame 0
    )
    assert merge_tracks(masks, [0, 1, 1, 0], 0.5) == [[0, 1], [2], [3]]
    assert merge_tracks(masks, [0, 1, 1, 1], 0.5) == [[0, 1], [2, 3]]  # 2 and 3 share their seed frame
    assert merge_tracks(masks, [0, 1, 1, 0], 1.01) == [[0], [1], [2], [3]]
    assert merge_tracks(masks, [0, 0, 1, 1], 0.0) == [[0, 1, 2, 3]]


def _tracks(visual, audio, masks, scoring=BindScoring("softmax")) -> VideoTracks:
    count = masks.shape[0]
    return VideoTracks(
        frames=[], seeds=[(0, k) for k in range(count)], seed_scores=[0.9] * count, merged=[[] for _ in range(count)],
        masks=masks, object_scores=torch.ones(count, masks.shape[1]), visual=visual, audio=audio, scoring=scoring,
    )  # fmt: skip


def test_select_tracks_scores_present_tracks_per_frame_and_smooths():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(3, 5, 8, 8, dtype=torch.bool)
    masks[0, :, :4] = True
    masks[1, :, 4:] = True
    masks[2, :3, :, :2] = True  # absent from frame 3 on
    visual, audio = torch.randn(3, 5, 6, generator=g), 3 * torch.randn(5, 6, generator=g)
    tracks = _tracks(visual, audio, masks)
    frames, evidence = select_tracks(tracks, OwodBindTrackedSettings(temporal_window=1, track_threshold=0.3))
    raw = torch.full((3, 5), math.nan, dtype=torch.float64)
    for t in range(5):
        rows = [k for k in range(3) if masks[k, t].any()]
        raw[rows, t] = bind_filter(visual[rows, t], audio[t], 0.0, "softmax")[1]
    for k, track in enumerate(evidence):
        torch.testing.assert_close(track.bind_scores, raw[k], equal_nan=True)
        for t in range(5):
            seen = [v for v in raw[k, max(0, t - 1) : t + 2].tolist() if not math.isnan(v)]
            expected = sum(seen) / len(seen) if seen else math.nan
            assert track.smoothed_scores[t].item() == pytest.approx(expected, nan_ok=True)
            assert bool(track.sounding[t]) == (masks[k, t].any().item() and expected >= 0.3)
    for t, frame in enumerate(frames):
        assert torch.equal(frame.kept, torch.stack([track.sounding[t] for track in evidence]))
        assert torch.equal(frame.union(8, 8), masks[frame.kept, t].any(0))
    assert math.isnan(evidence[2].bind_scores[4].item()) and not evidence[2].sounding[4]
    assert json.loads(json.dumps(evidence[2].to_json()))["bind_scores"][4] is None


def test_a_wider_window_smooths_flicker():
    masks = torch.ones(1, 5, 4, 4, dtype=torch.bool)
    visual = torch.ones(1, 5, 2)
    scoring = BindScoring("calibrated", logit_scale=1.0, logit_bias=0.0)
    # calibrated score sigmoid(<v, a>): above 0.6 except at frame 2
    audio = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-0.5, 0.0], [1.0, 0.0], [1.0, 0.0]])
    tracks = _tracks(visual, audio, masks, scoring)
    alone, _ = select_tracks(tracks, SamBindTrackedSettings(temporal_window=0, track_threshold=0.6))
    smoothed, _ = select_tracks(tracks, SamBindTrackedSettings(temporal_window=2, track_threshold=0.6))
    assert [bool(f.kept[0]) for f in alone] == [True, True, False, True, True]
    assert [bool(f.kept[0]) for f in smoothed] == [True] * 5


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"temporal_window": -1}, "temporal_window: expected an integer ≥ 0"),
        ({"temporal_window": 1.5}, "temporal_window"),
        ({"track_merge_iou": 1.5}, "track_merge_iou"),
        ({"track_threshold": -0.5}, "track_threshold"),
        ({"box_threshold": 2}, "box_threshold"),
        ({"nms_threshold": 0.5}, "nms_threshold: owod-bind-tracked has no setting"),
    ],
)
def test_bad_settings_are_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        OwodBindTrackedSettings.of(overrides)


def test_cosine_track_threshold_may_be_negative_and_the_frame_settings_are_the_per_frame_pipelines():
    settings = SamBindTrackedSettings(bind_mode="cosine", track_threshold=-0.2, points_per_side=4)
    assert settings.track_threshold == -0.2
    frame = frame_settings(OwodBindTrackedSettings(box_threshold=0.3, bind_mode="cosine", temporal_window=3))
    assert frame == OwodBindSettings(box_threshold=0.3, bind_mode="cosine")
    assert frame_settings(settings).points_per_side == 4 and frame_settings(settings).pipeline == "sam-bind"


def test_sweep_rules_free_only_what_selects_without_a_model():
    for cls in (OwodBindTrackedSettings, SamBindTrackedSettings):
        assert [key for key, rule in sweep_rules(cls).items() if rule == FREE] == ["temporal_window", "track_threshold"]


# ---------------------------------------------------------------- end to end, tiny preset
def _kept_seeds(result):
    return [(t, i) for t, frame in enumerate(result.frames) for i in torch.nonzero(frame.kept).flatten().tolist()]


@pytest.mark.parametrize("name", ["owod-bind-tracked", "sam-bind-tracked"])
def test_tracked_pipeline_is_made_of_its_stages(models, video, name):
    frames, waveform = video
    sam_grid = dict(points_per_side=4, pred_iou_threshold=0.0, stability_score_threshold=0.0)
    if name == "owod-bind-tracked":
        per_frame = owod_bind(frames, waveform, RATE, models, bind_threshold=0.2)
        result = owod_bind_tracked(frames, waveform, RATE, models, **LOOSE)
    else:
        per_frame = sam_bind(frames, waveform, RATE, models, bind_threshold=0.2, **sam_grid)
        result = sam_bind_tracked(frames, waveform, RATE, models, **LOOSE, **sam_grid)
    assert result.pipeline == name and result.masks.shape == (T, H, W)
    seeds = _kept_seeds(per_frame)
    assert len(seeds) > 1 and result.tracks
    # every kept candidate seeds a track; the leaders are the first of their groups
    leaders = [(track.seed_frame, track.seed_candidate) for track in result.tracks]
    merged = [tuple(seed) for track in result.tracks for seed in track.merged]
    assert sorted(leaders + merged) == sorted(seeds) and leaders == sorted(leaders)
    tracked = track_masks(frames, [(t, per_frame.frames[t].masks[i]) for t, i in leaders], models)
    binder = binder_of(models)
    for t in range(T):
        evidence = result.frames[t]
        assert torch.equal(evidence.masks, tracked.masks[:, t])
        present = [k for k in range(len(leaders)) if tracked.masks[k, t].any()]
        boxes = mask_bounds(tracked.masks[present, t])
        crops = masked_crops(frames[t], boxes, tracked.masks[present, t], "blur")
        visual = binder.embed_vision(crops).float()
        audio = per_frame_audio(binder, waveform, t)
        _, scores = bind_filter(visual, audio, 0.0, "softmax")
        got = torch.stack([result.tracks[k].bind_scores[t] for k in present])
        torch.testing.assert_close(got, scores, rtol=0, atol=1e-5)
        assert torch.equal(result.masks[t], evidence.masks[evidence.kept].any(0) if len(leaders) else result.masks[t])
    document = json.loads(json.dumps(result.to_json()))
    assert len(document["tracks"]) == len(leaders) and len(document["tracks"][0]["boxes"]) == T
    assert result.settings.temporal_window == 1 and result.settings.bind_mode == "softmax"
    given = {**LOOSE, **(sam_grid if name == "sam-bind-tracked" else {}), "bind_mode": "softmax"}
    assert document["settings"] == {**settings_type(name).defaults(), **given}


def per_frame_audio(binder, waveform, t):
    return binder.embed_audio([split_segments(waveform, T)[t]], RATE)[0].float()


def test_no_kept_candidate_gives_empty_masks_and_no_tracks(models, video):
    frames, waveform = video
    result = owod_bind_tracked(frames, waveform, RATE, models, bind_mode="cosine", bind_threshold=1.0)
    assert not result.masks.any() and result.tracks == []
    assert all(frame.boxes.shape == (0, 4) for frame in result.frames)


def test_bad_setting_is_refused_before_any_model_loads(video):
    models = load_models("tiny", device="cpu")
    with pytest.raises(ValueError, match="temporal_window"):
        owod_bind_tracked(*video, RATE, models, temporal_window=-2)
    assert models.loaded == ()
