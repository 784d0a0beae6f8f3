"""The 2025 model families through cmsf's public loading path: SAM-HQ, SAM 2, EdgeTAM (sam),
MM-GroundingDINO (grounding_dino), SAM 3 (sam3), PE-AV (binder).

Each family is a tiny random model saved with ``save_pretrained`` and loaded back with
``load_models(..., COMPONENT=DIR)``; its results are compared with the family's own transformers
calls (processor → model → post-processing), and each pipeline runs end to end with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from cmsf import at_gdino_sam, at_sam3, bind_filter, owod_bind, sam_bind
from cmsf.models.loading import ModelLoadError, load_models
from cmsf.models.random_families import family_config, family_processor, soften_family
from cmsf.models.random_models import build_random
from cmsf.stages.binding import binder_of
from cmsf.stages.concepts import segment_concepts
from cmsf.stages.grounding import ground
from cmsf.stages.segmentation import sam_masks

CPU = torch.device("cpu")
SAM_FAMILIES = {"sam_hq": transformers.SamHQModel, "sam2": transformers.Sam2Model, "edgetam": transformers.EdgeTamModel}


def _save(tmp: Path, component: str, family: str, model_class) -> Path:
    config = family_config(component, family, "tiny")
    model = build_random(lambda: model_class(config), 7, CPU).eval()
    soften_family(family, model)
    model.save_pretrained(tmp)
    family_processor(component, family, "tiny", config).save_pretrained(tmp)
    return tmp


@pytest.fixture(scope="module", params=sorted(SAM_FAMILIES))
def sam_family(request, tmp_path_factory):
    family = request.param
    folder = _save(tmp_path_factory.mktemp(family), "sam", family, SAM_FAMILIES[family])
    return family, load_models("tiny", device="cpu", sam=str(folder))


def _images(sizes=((48, 80), (90, 60))) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]


def _video(frames: int = 2, side: int = 64, seconds: float = 0.5, rate: int = 16000):
    g = torch.Generator().manual_seed(1)
    video = torch.randint(0, 256, (frames, 3, side, side), dtype=torch.uint8, generator=g)
    return video, 0.1 * torch.randn(int(frames * seconds * rate), generator=g), rate


def test_sam_family_masks_equal_the_familys_own_transformers_calls(sam_family):
    family, models = sam_family
    assert models.family("sam") == family and "tmp" in models.source("sam")
    model, image_processor = models.sam
    processor = transformers.SamHQProcessor(image_processor) if family == "sam_hq" else transformers.Sam2Processor(image_processor)
    images = _images()
    boxes = [torch.tensor([[2.3, 3.1, 40.2, 30.7], [10.0, 10.0, 70.0, 45.0]]), torch.tensor([[5.5, 5.2, 50.1, 80.3]])]
    ours = sam_masks(images, models, boxes=boxes)
    for image, prompt, got in zip(images, boxes, ours):
        inputs = processor(images=image, input_boxes=[prompt.tolist()], return_tensors="pt")
        with torch.no_grad():
            out = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output=False)
        sizes = [inputs["original_sizes"]] + ([inputs["reshaped_input_sizes"]] if family == "sam_hq" else [])
        expected = processor.post_process_masks(out.pred_masks, *sizes)[0][:, 0]
        assert got.masks.any() and not got.masks.all()
        assert torch.equal(got.masks, expected)
        torch.testing.assert_close(got.iou_scores, out.iou_scores[0, :, 0], rtol=0, atol=1e-5)


def test_sam_family_automatic_masks_run(sam_family):
    _, models = sam_family
    results = sam_masks(_images(), models, points_per_side=4, points_per_batch=8, pred_iou_threshold=0.0,
                        stability_score_threshold=0.0)
    for image, result in zip(_images(), results):
        assert len(result) >= 1 and result.masks.shape[1:] == image.shape[1:]
        assert torch.all(result.iou_scores[:-1] >= result.iou_scores[1:])  # NMS order


def test_sam_family_automatic_masks_equal_one_point_at_a_time_through_the_familys_own_calls(sam_family):
    """Every automatic mask (filters and NMS off) is the family's own answer to its grid point
    alone: processor (the point in image pixels) → model (3 masks) → post_process_masks."""
    family, models = sam_family
    model, image_processor = models.sam
    processor = transformers.SamHQProcessor(image_processor) if family == "sam_hq" else transformers.Sam2Processor(image_processor)
    for image in _images():
        ours = sam_masks([image], models, points_per_side=2, points_per_batch=3, pred_iou_threshold=0.0,
                         stability_score_threshold=0.0, nms_threshold=1.0)[0]  # fmt: skip
        assert len(ours) == 2 * 2 * 3  # every mask of every point
        assert any(bool(mask.any()) and not bool(mask.all()) for mask in ours.masks)  # something to compare
        height, width = image.shape[1:]
        expected = {}
        for cx in (0.25, 0.75):
            for cy in (0.25, 0.75):
                point = (cx * width, cy * height)
                inputs = processor(images=image, input_points=[[[list(point)]]], input_labels=[[[1]]], return_tensors="pt")
                with torch.no_grad():
                    out = model(**{k: v for k, v in inputs.items() if k not in ("original_sizes", "reshaped_input_sizes")},
                                multimask_output=True)  # fmt: skip
                sizes = [inputs["original_sizes"]] + ([inputs["reshaped_input_sizes"]] if family == "sam_hq" else [])
                logits = processor.post_process_masks(out.pred_masks, *sizes, binarize=False)[0][0]
                expected[point] = (logits > 0.0, out.iou_scores[0, 0])
        for mask, iou, point in zip(ours.masks, ours.iou_scores, ours.points.tolist()):
            (masks, ious), = [value for key, value in expected.items() if max(abs(a - b) for a, b in zip(key, point)) < 1e-3]
            k = int((ious - iou).abs().argmin())  # which of the point's 3 masks
            torch.testing.assert_close(ious[k], iou, rtol=1e-5, atol=1e-5)
            assert float((masks[k] == mask).float().mean()) > 0.999


def test_pipelines_run_end_to_end_with_each_segmenter(sam_family):
    _, models = sam_family
    video, wave, rate = _video()
    for run, kwargs in ((owod_bind, dict(box_threshold=0.2)), (sam_bind, dict(points_per_side=4)),
                        (at_gdino_sam, dict(tag_threshold=0.3))):
        result = run(video, wave, rate, models, **kwargs)
        assert result.masks.shape == (2, 64, 64)
        assert "sam" in result.sources and "tmp" in result.sources["sam"]


def test_an_unsupported_family_is_an_error_naming_it_and_the_accepted_ones(tmp_path):
    folder = _save(tmp_path, "grounding_dino", "mm-grounding-dino", transformers.MMGroundingDinoForObjectDetection)
    models = load_models("tiny", device="cpu", sam=str(folder), binder=str(folder))
    with pytest.raises(ModelLoadError) as info:
        models.sam
    message = str(info.value)
    assert "'mm-grounding-dino'" in message and "'sam_hq'" in message and "'sam2'" in message and "'sam'" in message
    with pytest.raises(ModelLoadError, match="'imagebind'"):
        models.binder
    assert models.loaded == ()


def test_mm_grounding_dino_scores_equal_its_own_calls(tmp_path):
    folder = _save(tmp_path, "grounding_dino", "mm-grounding-dino", transformers.MMGroundingDinoForObjectDetection)
    models = load_models("tiny", device="cpu", grounding_dino=str(folder))
    assert models.family("grounding_dino") == "mm-grounding-dino"
    model, processor = models.grounding_dino
    for image in _images():
        (got,) = ground([image], ["dog", "speech"], models, box_threshold=0.05)
        inputs = processor(images=image, text="dog. speech.", return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs)
        (expected,) = processor.post_process_grounded_object_detection(
            out, input_ids=inputs["input_ids"], threshold=0.05, text_threshold=0.25, target_sizes=[image.shape[1:]]
        )
        order = torch.sort(expected["scores"], descending=True, stable=True).indices
        assert len(got) > 0 and torch.equal(got.scores, expected["scores"][order])
        clipped = expected["boxes"][order].clamp(min=0)
        clipped[:, 0::2] = clipped[:, 0::2].clamp(max=image.shape[2])
        clipped[:, 1::2] = clipped[:, 1::2].clamp(max=image.shape[1])
        torch.testing.assert_close(got.boxes, clipped)


def test_sam3_concepts_equal_its_own_calls_and_at_sam3_runs():
    models = load_models("tiny", device="cpu")
    model, processor = models.sam3
    images = _images(((48, 80), (90, 60), (30, 30)))
    prompts = [["dog", "speech"], ["bee, wasp, etc."], []]
    found = segment_concepts(images, prompts, models, threshold=0.2)
    assert len(found[2]) == 0
    for image, concepts, got in zip(images, prompts, found):
        for j, concept in enumerate(concepts):
            inputs = processor(images=image, text=concept, return_tensors="pt")
            with torch.no_grad():
                out = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                            attention_mask=inputs["attention_mask"])
            (expected,) = processor.post_process_instance_segmentation(
                out, threshold=0.2, mask_threshold=0.5, target_sizes=[tuple(image.shape[1:])]
            )
            mine = got.prompt_indices == j
            order = torch.sort(expected["scores"], descending=True, stable=True).indices
            assert int(mine.sum()) == len(order) > 0
            assert torch.equal(got.scores[mine], expected["scores"][order])
            assert torch.equal(got.masks[mine], expected["masks"][order].bool())
            assert torch.equal(got.boxes[mine], expected["boxes"][order])
            assert all(got.labels[k] == concept for k in torch.nonzero(mine).flatten().tolist())
    video, wave, rate = _video()
    result = at_sam3(video, wave, rate, models, tag_threshold=0.3, instance_threshold=0.2)
    assert result.pipeline == "at-sam3" and result.masks.shape == (2, 64, 64)
    for t, frame in enumerate(result.frames):
        assert torch.equal(result.masks[t], frame.masks.any(dim=0) if len(frame.masks) else torch.zeros(64, 64, dtype=torch.bool))
        assert len(frame.phrases) == len(frame.boxes) and set(frame.phrases) <= {label for label, _ in frame.tags}
        assert frame.kept.all() and torch.all(frame.proposal_scores > 0.2)
    assert result.to_json()["models"]["sam3"].startswith("random")


@pytest.fixture(scope="module")
def pe_av(tmp_path_factory):
    folder = _save(tmp_path_factory.mktemp("peav"), "binder", "pe_audio_video", transformers.PeAudioVideoModel)
    return load_models("tiny", device="cpu", binder=str(folder))


def test_pe_av_calibrated_scores_equal_pe_audio_video_model(pe_av):
    binder = binder_of(pe_av)
    assert binder.name == "pe_audio_video" and binder.scoring.default_mode == "calibrated"
    g = torch.Generator().manual_seed(0)
    crops = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in ((20, 30), (9, 12), (40, 17))]
    segments = [0.1 * torch.randn(4800, generator=g), 0.3 * torch.randn(5000, generator=g)]
    visual, audio = binder.embed_vision(crops), binder.embed_audio(segments, 48000)
    model, processor = pe_av.binder
    inputs = processor(videos=[c[None] for c in crops], audio=[s.numpy() for s in segments], sampling_rate=48000,
                       return_tensors="pt")
    with torch.no_grad():
        out = model(input_values=inputs["input_values"], padding_mask=inputs["padding_mask"],
                    pixel_values_videos=inputs["pixel_values_videos"])
    expected = torch.sigmoid(out.logits_audio_video.double())  # [T, N]
    for t in range(2):
        keep, scores = bind_filter(visual, audio[t], 0.5, "calibrated", logit_scale=binder.scoring.logit_scale,
                                   logit_bias=binder.scoring.logit_bias)
        torch.testing.assert_close(scores, expected[t], rtol=0, atol=1e-6)
        assert torch.equal(keep, scores >= 0.5)


def test_owod_bind_with_pe_av_reads_the_calibrated_scores_and_softmax_on_request(pe_av):
    video, wave, rate = _video()
    result = owod_bind(video, wave, rate, pe_av, box_threshold=0.2, bind_threshold=0.0)
    assert result.settings.bind_mode == "calibrated"
    scores = torch.cat([frame.bind_scores for frame in result.frames])
    distinct = torch.unique(scores)  # a threshold halfway between two scores: no rounding tie
    middle = len(distinct) // 2
    threshold = float(distinct[middle - 1 : middle + 1].double().mean())
    again = owod_bind(video, wave, rate, pe_av, box_threshold=0.2, bind_threshold=threshold)
    for frame in again.frames:
        assert torch.equal(frame.kept, frame.bind_scores >= threshold)
    softmax = owod_bind(video, wave, rate, pe_av, box_threshold=0.2, bind_mode="softmax")
    for frame in softmax.frames:
        assert abs(float(frame.bind_scores.sum()) - 1.0) < 1e-5
    with pytest.raises(ValueError, match="bind_mode"):
        owod_bind(video, wave, rate, load_models("tiny", device="cpu"), bind_mode="calibrated")


def test_presets_name_their_sources():
    assert load_models("paper", device="cpu").source("binder").startswith("ImageBind")
    modern = load_models("2025", device="cpu")
    assert "facebook/sam2.1-hiera-large" in modern.source("sam")
    assert "facebook/pe-av-large" in modern.source("binder")
    assert "mm_grounding_dino_large_all" in modern.source("grounding_dino")
    twin = load_models("2025-random", device="cpu").sources()
    assert twin["sam"] == "random weights, full sam2 config" and "pe_audio_video" in twin["binder"]
    assert load_models("2025", device="cpu", binder="imagebind").source("binder").startswith("ImageBind")


def test_the_bind_mode_is_resolved_from_the_binder_without_loading_it(pe_av):
    from cmsf.stages.binding import check_bind_mode

    fresh = load_models("tiny", device="cpu", binder=pe_av.source("binder").strip("'"))
    assert fresh.binder_kind == "pe_audio_video" and check_bind_mode(fresh, None) == "calibrated"
    assert check_bind_mode(fresh, "softmax") == "softmax" and fresh.loaded == ()
    paper = load_models("tiny", device="cpu")
    assert paper.binder_kind == "imagebind" and check_bind_mode(paper, None) == "softmax"
    with pytest.raises(ValueError, match="bind_mode: 'calibrated' needs"):
        check_bind_mode(paper, "calibrated")
    assert paper.loaded == ()
