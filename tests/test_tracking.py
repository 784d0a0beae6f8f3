"""The tracker component and :func:`cmsf.track_masks` against transformers' own video API.

The tracker is a tiny random SAM 2.1 video model (``model_type`` ``sam2_video``, as the hub ships
SAM 2.1's checkpoints) saved with ``save_pretrained`` and loaded back with
``load_models(..., tracker=DIR)``. Its object-score head is biased so that tracked objects stay
present (:func:`cmsf.models.random_families.soften_family`); the reference check below asserts it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from cmsf import TrackedMasks, track_masks
from cmsf.models.loading import ModelLoadError, load_models
from cmsf.models.random_families import FAMILY_SEEDS, family_config, family_processor, soften_family
from cmsf.models.random_models import build_random

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tracker_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sam2_video")
    config = family_config("tracker", "sam2_video", "tiny")
    model = build_random(lambda: transformers.Sam2VideoModel(config), FAMILY_SEEDS["tracker"], CPU).eval()
    soften_family("sam2_video", model)
    model.save_pretrained(folder)
    family_processor("tracker", "sam2_video", "tiny", config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tracker_folder):
    return load_models("tiny", device="cpu", tracker=str(tracker_folder))


def _video(frames: int = 5, height: int = 48, width: int = 72) -> torch.Tensor:
    """A bright square sliding right over a noisy dark background."""
    g = torch.Generator().manual_seed(3)
    video = torch.randint(0, 60, (frames, 3, height, width), dtype=torch.uint8, generator=g)
    for t in range(frames):
        video[t, :, 10:30, 5 + 6 * t : 25 + 6 * t] = 230
    return video


def _box_mask(height: int, width: int, y1: int, y2: int, x1: int, x2: int) -> torch.Tensor:
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y1:y2, x1:x2] = True
    return mask


def _reference(model, processor, video: torch.Tensor, frame: int, mask: torch.Tensor):
    """transformers' documented calls for one object alone: masks [T, H, W] and object logits [T]."""
    height, width = video.shape[-2:]
    session = processor.init_video_session(video=video, inference_device="cpu", dtype=torch.float32)
    processor.add_inputs_to_inference_session(inference_session=session, frame_idx=frame, obj_ids=1, input_masks=mask)
    with torch.inference_mode():
        outputs = [model(inference_session=session, frame_idx=frame)]
        outputs += list(model.propagate_in_video_iterator(session, start_frame_idx=frame))
        outputs += list(model.propagate_in_video_iterator(session, start_frame_idx=frame, reverse=True))
    masks = torch.zeros(video.shape[0], height, width, dtype=torch.bool)
    logits = torch.full((video.shape[0],), float("nan"))
    for out in outputs:
        upsampled = processor.post_process_masks([out.pred_masks], original_sizes=[[height, width]], binarize=False)[0]
        masks[out.frame_idx] = upsampled[0, 0] > 0
        logits[out.frame_idx] = out.object_score_logits.reshape(-1)[0]
    return masks, logits


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


PROMPTS = [  # two objects on frame 2, one on the first frame and one on the last
    (2, (10, 30, 17, 37)),
    (2, (32, 46, 40, 70)),
    (0, (10, 30, 5, 25)),
    (4, (0, 20, 0, 30)),
]


def _prompts(video: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    height, width = video.shape[-2:]
    return [(frame, _box_mask(height, width, *box)) for frame, box in PROMPTS]


def test_tracker_checkpoint_is_a_sam2_video_folder_loaded_with_the_video_classes(models, tracker_folder):
    assert json.loads((tracker_folder / "config.json").read_text())["model_type"] == "sam2_video"
    assert isinstance(models.tracker.model, transformers.Sam2VideoModel)
    assert isinstance(models.tracker.processor, transformers.Sam2VideoProcessor)
    assert models.family("tracker") == "sam2_video" and str(tracker_folder) in models.source("tracker")
    assert load_models("paper").source("tracker") == "'facebook/sam2.1-hiera-large'"
    assert load_models("2025").source("tracker") == "'facebook/sam2.1-hiera-large'"
    assert load_models("2025-random").source("tracker") == "random weights, full sam2_video config"


def test_tracker_refuses_an_image_checkpoint(tmp_path):
    config = family_config("sam", "sam2", "tiny")
    build_random(lambda: transformers.Sam2Model(config), 7, CPU).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="model_type 'sam2'.*'sam2_video', 'edgetam_video'"):
        load_models("tiny", device="cpu", tracker=str(tmp_path)).get("tracker")


def test_each_object_is_what_the_video_api_gives_it_alone(models):
    video = _video()
    prompts = _prompts(video)
    result = track_masks(video, prompts, models)
    assert isinstance(result, TrackedMasks) and len(result) == len(prompts)
    assert result.masks.shape == (4, 5, 48, 72) and result.masks.dtype == torch.bool
    assert result.object_scores.shape == (4, 5) and result.seed_frames == (2, 2, 0, 4)
    model, processor = models.tracker
    for k, (frame, mask) in enumerate(prompts):
        expected, logits = _reference(model, processor, video, frame, mask)
        assert (logits > 0).all(), "the random tracker must keep the object present in every frame"
        assert _iou(expected[frame], mask) > 0.5  # the prompt at the tracker's mask resolution
        nontrivial = [t for t in range(5) if expected[t].any() and not expected[t].all()]
        assert len(nontrivial) == 5
        for t in range(5):
            assert _iou(result.masks[k, t], expected[t]) >= 0.99, (k, t)
        torch.testing.assert_close(result.object_scores[k], torch.sigmoid(logits), rtol=0, atol=1e-5)


def test_an_edgetam_video_tracker_is_what_the_video_api_gives(tmp_path):
    """EdgeTAM's video model (its own ``EdgeTamVideoModel``, with ``Sam2VideoProcessor``) from its
    seeded tiny config of the family table, saved and loaded back as the tracker."""
    config = family_config("tracker", "edgetam_video", "tiny")
    model = build_random(lambda: transformers.EdgeTamVideoModel(config), FAMILY_SEEDS["tracker"], CPU).eval()
    soften_family("edgetam_video", model)
    model.save_pretrained(tmp_path)
    family_processor("tracker", "edgetam_video", "tiny", config).save_pretrained(tmp_path)
    models = load_models("tiny", device="cpu", tracker=str(tmp_path))
    video = _video()
    prompts = _prompts(video)[:1] + _prompts(video)[2:3]  # frame 2 and frame 0: two passes
    result = track_masks(video, prompts, models)
    model, processor = models.tracker
    assert isinstance(model, transformers.EdgeTamVideoModel) and isinstance(processor, transformers.Sam2VideoProcessor)
    assert models.family("tracker") == "edgetam_video"
    for k, (frame, mask) in enumerate(prompts):
        expected, logits = _reference(model, processor, video, frame, mask)
        assert (logits > 0).all(), "the random tracker must keep the object present in every frame"
        assert all(expected[t].any() and not expected[t].all() for t in range(5))
        for t in range(5):
            assert _iou(result.masks[k, t], expected[t]) >= 0.99, (k, t)
        torch.testing.assert_close(result.object_scores[k], torch.sigmoid(logits), rtol=0, atol=1e-5)


def test_objects_of_one_frame_tracked_together_equal_each_tracked_alone(models):
    video = _video()
    prompts = _prompts(video)[:2]  # both on frame 2: one pass
    together = track_masks(video, prompts, models)
    for k, prompt in enumerate(prompts):
        alone = track_masks(video, [prompt], models)
        for t in range(video.shape[0]):
            assert _iou(together.masks[k, t], alone.masks[0, t]) >= 0.99
        torch.testing.assert_close(together.object_scores[k], alone.object_scores[0], rtol=0, atol=1e-6)


def test_every_frame_is_encoded_once_per_video(models, monkeypatch):
    model = models.tracker.model
    calls = []
    encode = model.get_image_features

    def spy(pixel_values, **kwargs):
        calls.append(pixel_values.shape[0])
        return encode(pixel_values, **kwargs)

    monkeypatch.setattr(model, "get_image_features", spy)
    track_masks(_video(), _prompts(_video()), models)  # 4 objects, 3 prompted frames, 5 frames
    assert calls == [1] * 5


def test_no_prompt_gives_empty_tracks_without_loading_the_tracker():
    models = load_models("tiny", device="cpu")
    result = track_masks(list(_video(3)), [], models)
    assert result.masks.shape == (0, 3, 48, 72) and result.object_scores.shape == (0, 3)
    assert "tracker" not in models.loaded


@pytest.mark.parametrize(
    "prompts, message",
    [
        ("x", r"prompts: expected a sequence"),
        ([(5, torch.ones(48, 72, dtype=torch.bool))], r"prompts\[0\]: expected a frame index in \[0, 5\)"),
        ([(True, torch.ones(48, 72, dtype=torch.bool))], r"prompts\[0\]: expected a frame index"),
        ([(0, torch.ones(48, 72)), (1, torch.ones(40, 72))], r"prompts\[1\]: expected a mask of the frames' size"),
        ([(0,)], r"prompts\[0\]: expected a pair"),
    ],
)
def test_bad_prompts_are_refused_by_name(prompts, message):
    with pytest.raises(ValueError, match=message):
        track_masks(_video(), prompts, load_models("tiny", device="cpu"))


def test_frames_of_different_sizes_are_refused():
    frames = [torch.zeros(3, 48, 72, dtype=torch.uint8), torch.zeros(3, 40, 72, dtype=torch.uint8)]
    with pytest.raises(ValueError, match="frames: expected frames of one size"):
        track_masks(frames, [], load_models("tiny", device="cpu"))
