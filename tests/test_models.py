"""The model-backed stages and their loading (cmsf.models.loading, tagging, grounding, proposals,
segmentation) on the tiny preset: offline, CPU, seeded random weights.

Tiny random models find no real objects, so coordinate conventions are checked on the
conversion functions with known normalised boxes, and the stages are checked for shapes,
batching, determinism, thresholds and errors.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from cmsf import checks
from cmsf.io.audioset import audioset_labels
from cmsf.models import loading, random_models
from cmsf.models.loading import ModelLoadError, Models, load_models
from cmsf.stages import grounding, proposals, segmentation
from cmsf.stages.grounding import Detections, ground
from cmsf.stages.proposals import Proposals, propose_boxes
from cmsf.stages.segmentation import MaskSet, sam_masks
from cmsf.stages.tagging import audio_tag_probabilities, tag_audio

# a cheap automatic-mask setting for the tiny SAM (8 x 8 grid instead of 32 x 32)
AUTO = dict(points_per_side=8, points_per_batch=24)


@pytest.fixture(scope="module")
def tiny() -> Models:
    return load_models("tiny", device="cpu")


def _images(seed: int = 0, sizes=((48, 80), (90, 60))) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]


def _waveforms(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        0.1 * torch.randn(2, 22050, generator=g),  # stereo, 1 s at 22.05 kHz
        0.1 * torch.randn(11025, generator=g),  # mono, 0.5 s
        0.1 * torch.randn(3, 100, generator=g),  # 3 channels, shorter than one analysis window
    ]


# ------------------------------------------------------------------------------------------
# AudioSet labels and the tiny tokenizer
# ------------------------------------------------------------------------------------------


def test_audioset_labels_are_the_527_classes_in_index_order():
    labels = audioset_labels()
    assert len(labels) == 527 == len(set(labels))
    assert labels[0] == "Speech"
    assert labels[1] == "Male speech, man speaking"
    assert labels[137] == "Music"
    assert labels[521] == "Pink noise"
    assert labels[-1] == "Field recording"
    assert all(label == label.strip() and label for label in labels)


def test_tiny_ast_carries_the_audioset_label_names(tiny):
    id2label = tiny.ast.model.config.id2label
    assert [id2label[i] for i in range(527)] == audioset_labels()


def test_tiny_tokenizer_covers_every_audioset_label_and_uses_bert_delimiter_ids(tiny):
    tokenizer = tiny.grounding_dino.processor.tokenizer
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"]) == [101, 102, 1012, 1029]
    for label in audioset_labels():
        ids = tokenizer(grounding.grounding_phrase(label))["input_ids"]
        assert tokenizer.unk_token_id not in ids, label
        assert 1012 not in ids[1:-1], label  # no phrase delimiter inside a phrase


# ------------------------------------------------------------------------------------------
# load_models
# ------------------------------------------------------------------------------------------


def test_load_models_is_lazy_and_records_device_dtype(tiny):
    models = load_models("tiny", device="cpu")
    assert models.loaded == ()
    assert models.device == torch.device("cpu") and models.dtype == torch.float32
    tag_audio(_waveforms()[:1], 22050, models)
    assert models.loaded == ("ast",)  # SAM, GroundingDINO, OWLv2, ImageBind not built
    assert "sam" not in models._loaded


def test_loading_inside_a_stage_gives_ordinary_eval_parameters():
    models = load_models("tiny", device="cpu")
    sam_masks(_images()[:1], models, boxes=[torch.tensor([[1.0, 2.0, 20.0, 30.0]])])
    model = models.sam.model
    assert not model.training
    assert all(not p.is_inference() and not p.requires_grad for p in model.parameters())


def test_random_presets_do_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_models("tiny", device="cpu").load("ast", "sam", "owlv2")
    assert torch.equal(torch.rand(3), expected)


def test_two_tiny_loads_give_identical_outputs(tiny):
    other = load_models("tiny", device="cpu")
    images, waves = _images(), _waveforms()
    assert torch.equal(audio_tag_probabilities(waves, 22050, tiny), audio_tag_probabilities(waves, 22050, other))
    for a, b in zip(propose_boxes(images, tiny, threshold=0.2), propose_boxes(images, other, threshold=0.2)):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
    boxes = [torch.tensor([[2.0, 3.0, 40.0, 30.0]]), torch.tensor([[5.0, 5.0, 50.0, 80.0]])]
    for a, b in zip(sam_masks(images, tiny, boxes=boxes), sam_masks(images, other, boxes=boxes)):
        assert torch.equal(a.masks, b.masks) and torch.equal(a.iou_scores, b.iou_scores)
    for a, b in zip(ground(images, ["dog", "car"], tiny), ground(images, ["dog", "car"], other)):
        assert torch.equal(a.boxes, b.boxes) and a.labels == b.labels


def test_attention_is_pytorchs_fused_sdpa_wherever_transformers_offers_it(tiny):
    """AST, SAM (image encoder and mask decoder), OWLv2 and GroundingDINO's BERT text encoder run
    their attention through torch's scaled_dot_product_attention (fused kernels on a GPU);
    ImageBind is cmsf's own and calls it directly. GroundingDINO's Swin backbone and its own
    attention layers have no SDPA path in transformers (eager)."""
    for name in ("ast", "sam", "owlv2"):
        assert tiny.get(name).model.config._attn_implementation == "sdpa", name
    grounding_dino = tiny.grounding_dino.model.config
    assert grounding_dino.text_config._attn_implementation == "sdpa"
    assert grounding_dino._attn_implementation == "eager"  # not offered by transformers


def test_bad_arguments_to_load_models():
    with pytest.raises(ValueError, match="preset"):
        load_models("huge")
    with pytest.raises(ValueError, match="dtype"):
        load_models("tiny", device="cpu", dtype=torch.float16)
    with pytest.raises(ValueError, match="dtype"):
        load_models("tiny", device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="unknown component"):
        load_models("tiny", device="cpu", clip="openai/clip")
    with pytest.raises(ValueError, match="sam"):
        load_models("tiny", device="cpu", sam=3)
    with pytest.raises(ValueError, match="device"):
        load_models("tiny", device="not-a-device")


def test_check_sources_names_an_unknown_component_or_a_missing_local_path(tmp_path):
    sources = {"sam": "facebook/sam-vit-base", "owlv2": str(tmp_path)}
    assert loading.check_sources(sources) == sources
    with pytest.raises(ValueError, match=r"^unknown component 'clip'; expected one of ast, grounding_dino, sam"):
        loading.check_sources({"sam": "facebook/sam-vit-base", "clip": "openai/clip"})
    missing = str(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"^sam=.*nothing: the local path .* does not exist"):
        loading.check_sources({"sam": missing})


def test_paper_preset_points_at_the_paper_checkpoints():
    models = load_models("paper", device="cpu")
    assert models.loaded == ()
    assert "facebook/sam-vit-huge" in models.source("sam")
    assert "MIT/ast-finetuned-audioset-10-10-0.4593" in models.source("ast")
    assert "IDEA-Research/grounding-dino-tiny" in models.source("grounding_dino")
    assert "google/owlv2-base-patch16-ensemble" in models.source("owlv2")
    overridden = load_models("paper", device="cpu", sam="facebook/sam-vit-base")
    assert "facebook/sam-vit-base" in overridden.source("sam")


def test_unloadable_component_is_a_clear_error_naming_component_and_id(tmp_path):
    models = load_models("paper", device="cpu", ast="cmsf-test/no-such-model", owlv2=str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        models.ast
    message = str(info.value)
    assert "'ast'" in message and "cmsf-test/no-such-model" in message
    assert "HF_HOME" in message and "local directory" in message
    with pytest.raises(ModelLoadError, match="owlv2"):  # a folder, but no model saved in it
        models.owlv2
    assert models.loaded == ()
    assert isinstance(info.value, RuntimeError)
    # a local path that does not exist is refused at once, naming the component and the path
    with pytest.raises(ValueError, match=rf"^owlv2: the local path '{tmp_path / 'missing'}' does not exist"):
        load_models("paper", device="cpu", owlv2=str(tmp_path / "missing"))


def test_paper_random_configs_match_the_published_architectures():
    sam = random_models.random_config("sam", "paper").vision_config
    assert (sam.hidden_size, sam.num_hidden_layers, sam.num_attention_heads, sam.mlp_dim) == (1280, 32, 16, 5120)
    assert list(sam.global_attn_indexes) == [7, 15, 23, 31] and sam.image_size == 1024
    owl = random_models.random_config("owlv2", "paper").vision_config
    assert (owl.image_size, owl.patch_size, owl.hidden_size, owl.num_hidden_layers) == (960, 16, 768, 12)
    ast = random_models.random_config("ast", "paper")
    assert (ast.hidden_size, ast.num_hidden_layers, ast.max_length, ast.num_mel_bins) == (768, 12, 1024, 128)
    assert (ast.frequency_stride, ast.time_stride, ast.num_labels) == (10, 10, 527)
    gdino = random_models.random_config("grounding_dino", "paper")
    assert gdino.backbone_config.model_type == "swin" and gdino.backbone_config.embed_dim == 96
    assert list(gdino.backbone_config.depths) == [2, 2, 6, 2]
    assert gdino.text_config.model_type == "bert" and gdino.text_config.hidden_size == 768
    assert (gdino.d_model, gdino.num_queries, gdino.max_text_len) == (256, 900, 256)
    sizes = dict(loading._preset_specs("paper-random")["imagebind"].sizes)
    assert sizes["vision_embed_dim"] == 1280 and sizes["out_embed_dim"] == 1024


@pytest.mark.parametrize("component", ["ast", "sam", "owlv2", "grounding_dino"])
def test_saved_then_loaded_component_equals_the_in_memory_one(tiny, tmp_path, component):
    model, processor = tiny.get(component)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = load_models("tiny", device="cpu", **{component: str(tmp_path)})
    assert "random" not in loaded.source(component)
    # same weights, but possibly other memory alignment: equal up to float rounding
    close = dict(rtol=1e-5, atol=1e-5)
    images, waves = _images(), _waveforms()
    if component == "ast":
        torch.testing.assert_close(
            audio_tag_probabilities(waves, 22050, tiny), audio_tag_probabilities(waves, 22050, loaded), **close
        )
    elif component == "sam":
        boxes = [torch.tensor([[2.0, 3.0, 40.0, 30.0]]), torch.tensor([[5.0, 5.0, 50.0, 80.0]])]
        for a, b in zip(sam_masks(images, tiny, boxes=boxes), sam_masks(images, loaded, boxes=boxes)):
            torch.testing.assert_close(a.iou_scores, b.iou_scores, **close)
            assert (a.masks == b.masks).float().mean() > 0.999
    elif component == "owlv2":
        for a, b in zip(propose_boxes(images, tiny, threshold=0.2), propose_boxes(images, loaded, threshold=0.2)):
            torch.testing.assert_close(a.boxes, b.boxes, **close)
            torch.testing.assert_close(a.scores, b.scores, **close)
    else:
        prompts = [["speech", "bee, wasp, etc"], ["dog"]]
        for a, b in zip(ground(images, prompts, tiny), ground(images, prompts, loaded)):
            torch.testing.assert_close(a.boxes, b.boxes, **close)
            torch.testing.assert_close(a.scores, b.scores, **close)
            assert a.labels == b.labels


def test_imagebind_component_builds_lazily_with_the_preset_sizes():
    pytest.importorskip("cmsf.models.imagebind")
    models = load_models("tiny", device="cpu")
    model = models.imagebind
    assert models.loaded == ("imagebind",)
    assert model.out_embed_dim == 16 and not model.training
    assert models.imagebind is model  # loaded once


# ------------------------------------------------------------------------------------------
# tag_audio
# ------------------------------------------------------------------------------------------


def test_tag_audio_returns_sorted_label_probability_pairs(tiny):
    tags = tag_audio(_waveforms(), 22050, tiny, threshold=0.45)
    assert len(tags) == 3
    labels = set(audioset_labels())
    for segment in tags:
        assert all(isinstance(label, str) and label in labels for label, _ in segment)
        probabilities = [p for _, p in segment]
        assert all(0.45 <= p <= 1 for p in probabilities)
        assert probabilities == sorted(probabilities, reverse=True)
    assert sum(len(segment) for segment in tags) > 0  # the threshold is in the tiny model's range


def test_tag_thresholds_are_monotone(tiny):
    waves = _waveforms()
    low = tag_audio(waves, 22050, tiny, threshold=0.4)
    high = tag_audio(waves, 22050, tiny, threshold=0.55)
    for lo, hi in zip(low, high):
        assert {label for label, _ in hi} <= {label for label, _ in lo}
    assert sum(map(len, low)) > sum(map(len, high))
    assert all(len(t) == 527 for t in tag_audio(waves, 22050, tiny, threshold=0.0))
    assert tag_audio(waves, 22050, tiny, threshold=1.0) == [[], [], []]


def test_tag_batch_equals_one_by_one_and_tensor_forms(tiny):
    waves = _waveforms()
    batch = audio_tag_probabilities(waves, 22050, tiny)
    assert batch.shape == (3, 527) and batch.dtype == torch.float32
    single = torch.cat([audio_tag_probabilities([w], 22050, tiny) for w in waves])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)
    stacked = torch.stack([waves[0], waves[0]])  # Tensor[B, C, S]
    torch.testing.assert_close(audio_tag_probabilities(stacked, 22050, tiny), batch[[0, 0]], rtol=1e-4, atol=1e-5)


def test_tag_mixdown_and_resampling(tiny):
    g = torch.Generator().manual_seed(1)
    mono = 0.1 * torch.randn(16000, generator=g)
    stereo = torch.stack([mono, mono])
    torch.testing.assert_close(
        audio_tag_probabilities([stereo], 16000, tiny), audio_tag_probabilities([mono], 16000, tiny)
    )
    # resampling happens: the same samples declared at another rate give other probabilities
    assert not torch.allclose(audio_tag_probabilities([mono], 16000, tiny), audio_tag_probabilities([mono], 48000, tiny))


@pytest.mark.parametrize(
    "waveforms, sample_rate, threshold, match",
    [
        ([], 16000, 0.5, "empty batch"),
        ([torch.tensor([0.0, float("nan"), 0.0] * 200)], 16000, 0.5, "NaN"),
        ([torch.zeros(1000)], 0, 0.5, "sample_rate"),
        ([torch.zeros(1000)], -16000, 0.5, "sample_rate"),
        ([torch.zeros(1000, dtype=torch.int16)], 16000, 0.5, "floating"),
        ([torch.zeros(1000)], 16000, 1.5, "threshold"),
        ([torch.zeros(1000)], 16000, -0.1, "threshold"),
        (torch.zeros(2, 2, 2, 100), 16000, 0.5, "shape"),
    ],
)
def test_tag_audio_rejects_bad_input(tiny, waveforms, sample_rate, threshold, match):
    with pytest.raises(ValueError, match=match):
        tag_audio(waveforms, sample_rate, tiny, threshold=threshold)


# ------------------------------------------------------------------------------------------
# ground
# ------------------------------------------------------------------------------------------


def test_grounding_boxes_convert_to_each_images_pixels(tiny):
    """Known normalised (cx, cy, w, h) boxes through the processor's post-processing."""
    processor = tiny.grounding_dino.processor
    texts = ["speech. dog.", "car."]
    input_ids = processor.tokenizer(texts, padding="longest", return_tensors="pt")["input_ids"]
    # row 0: "[CLS] s ##p ##e ##e ##c ##h . d ##o ##g . [SEP]"; row 1: "[CLS] c ##a ##r . [SEP] pad…"
    logits = torch.full((2, 3, 256), -10.0)
    logits[0, 0, 1:7] = 4.0  # query 0 of row 0 matches "speech"
    logits[0, 1, 8:11] = 3.0  # query 1 of row 0 matches "dog"
    logits[1, 2, 1:4] = 5.0  # query 2 of row 1 matches "car"
    boxes = torch.tensor(
        [
            [[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.4, 0.4], [0.5, 0.5, 1.0, 1.0]],
            [[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0], [0.25, 0.75, 0.5, 0.5]],
        ]
    )
    sizes = [(50, 100), (80, 40)]  # a wide and a tall image
    rows = grounding._postprocess_grounding(
        processor, grounding._GroundingOutputs(logits, boxes), input_ids, sizes, box_threshold=0.5, text_threshold=0.5
    )
    torch.testing.assert_close(rows[0].boxes, torch.tensor([[40.0, 15.0, 60.0, 35.0], [0.0, 35.0, 30.0, 50.0]]))
    torch.testing.assert_close(rows[1].boxes, torch.tensor([[0.0, 40.0, 20.0, 80.0]]))
    assert rows[0].phrase_indices.tolist() == [0, 1] and rows[1].phrase_indices.tolist() == [0]
    assert rows[0].phrases == ["speech", "dog"] and rows[1].phrases == ["car"]


def test_phrase_index_of_tokens():
    ids = torch.tensor([[101, 5, 6, 1012, 7, 1012, 102, 0]])
    assert grounding._phrase_index_of_tokens(ids).tolist() == [[-1, 0, 0, -1, 1, -1, -1, -1]]


def test_ground_results_per_image(tiny):
    images = _images()
    prompts = [["Speech", "Bee, wasp, etc."], ["dog"]]
    results = ground(images, prompts, tiny, box_threshold=0.0)
    assert len(results) == 2 and all(isinstance(r, Detections) for r in results)
    for image, result, own in zip(images, results, [["speech", "bee, wasp, etc"], ["dog"]]):
        height, width = image.shape[1:]
        k = len(result)
        assert k > 0
        assert result.boxes.shape == (k, 4) and result.boxes.dtype == torch.float32
        assert result.scores.shape == (k,) and result.prompt_indices.shape == (k,)
        assert bool((result.boxes[:, 0::2] >= 0).all() and (result.boxes[:, 0::2] <= width).all())
        assert bool((result.boxes[:, 1::2] >= 0).all() and (result.boxes[:, 1::2] <= height).all())
        assert result.scores.tolist() == sorted(result.scores.tolist(), reverse=True)
        assert result.labels == [own[i] for i in result.prompt_indices.tolist()]
        assert len(result.phrases) == k


def test_ground_thresholds_are_monotone(tiny):
    images = _images()
    low = ground(images, ["dog", "music"], tiny, box_threshold=0.3)
    high = ground(images, ["dog", "music"], tiny, box_threshold=0.9)
    for lo, hi in zip(low, high):
        assert bool((lo.scores > 0.3).all() and (hi.scores > 0.9).all())
        assert {tuple(b) for b in hi.boxes.tolist()} <= {tuple(b) for b in lo.boxes.tolist()}
        assert 0 < len(hi) < len(lo)


def test_ground_skips_images_without_prompts():
    models = load_models("tiny", device="cpu")
    results = ground(_images(), [[], []], models)
    assert [len(r) for r in results] == [0, 0]
    assert results[0].boxes.shape == (0, 4) and results[0].labels == []
    assert "grounding_dino" not in models.loaded  # not even loaded
    results = ground(_images(), [[], ["dog"]], models, box_threshold=0.0)
    assert len(results[0]) == 0 and len(results[1]) > 0


def test_ground_batch_equals_one_by_one(tiny):
    images = _images(sizes=((64, 96), (64, 96), (64, 96)))
    prompts = [["dog", "a car"], ["speech"], ["dog", "a car"]]
    batch = ground(images, prompts, tiny, box_threshold=0.0)
    for image, own, together in zip(images, prompts, batch):
        (alone,) = ground([image], [own], tiny, box_threshold=0.0)
        torch.testing.assert_close(together.scores, alone.scores, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(together.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        assert together.labels == alone.labels


def test_ground_images_of_different_sizes_equal_each_alone(tiny):
    """GroundingDINO's processor pads the images of one call to a common size, and the padding
    goes through the backbone: images of different sizes must not share a forward."""
    images = _images(sizes=((48, 80), (90, 60), (48, 80), (30, 30)))
    prompts = [["dog", "a car"], ["speech"], ["speech", "dog"], ["dog"]]
    batch = ground(images, prompts, tiny, box_threshold=0.0)
    for image, own, together in zip(images, prompts, batch):
        (alone,) = ground([image], [own], tiny, box_threshold=0.0)
        assert len(together) == len(alone) > 0
        torch.testing.assert_close(together.scores, alone.scores, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(together.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        assert together.labels == alone.labels


def test_ground_accepts_pil_and_batched_tensors(tiny):
    images = _images(sizes=((40, 60), (40, 60)))
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    a = ground(pil, ["dog"], tiny, box_threshold=0.0)
    b = ground(torch.stack(images), ["dog"], tiny, box_threshold=0.0)
    for x, y in zip(a, b):
        assert torch.equal(x.boxes, y.boxes)


def test_prompts_longer_than_the_text_limit_are_split(tiny):
    tokenizer = tiny.grounding_dino.processor.tokenizer
    phrases = ["dog", "cat", "bird song", "music"]
    groups = grounding._chunk_prompts(phrases, tokenizer, max_tokens=12)
    assert [start for start, _ in groups] == [0, 2, 3]
    assert [p for _, group in groups for p in group] == phrases
    for _, group in groups:
        assert len(tokenizer(". ".join(group) + ".")["input_ids"]) <= 12
    with pytest.raises(ValueError, match="tokens"):
        grounding._chunk_prompts(["a very long phrase indeed"], tokenizer, max_tokens=12)
    # all 527 AudioSet labels (several thousand character tokens) in one call
    labels = audioset_labels()
    (result,) = ground(_images()[:1], [labels], tiny, box_threshold=0.0)
    assert len(result) > 0
    assert bool((result.prompt_indices >= 0).all() and (result.prompt_indices < 527).all())
    assert result.prompt_indices.max() >= 40  # boxes come from chunks beyond the first


@pytest.mark.parametrize(
    "prompts, match",
    [
        ("dog. cat.", "list"),
        ([["dog"]], "one list of prompts per image"),
        ([" . "], "empty prompt"),
        ([3], "string"),
        (["dog", ["cat"]], "mixture"),
    ],
)
def test_ground_rejects_bad_prompts(tiny, prompts, match):
    with pytest.raises(ValueError, match=match):
        ground(_images(), prompts, tiny)


def test_stages_reject_bad_images(tiny):
    with pytest.raises(ValueError, match="empty batch"):
        ground([], ["dog"], tiny)
    with pytest.raises(ValueError, match="RGB"):
        propose_boxes([torch.zeros(4, 10, 10, dtype=torch.uint8)], tiny)
    with pytest.raises(ValueError, match="uint8"):
        sam_masks([torch.zeros(3, 10, 10)], tiny, boxes=[torch.zeros(0, 4)])
    with pytest.raises(ValueError, match="box_threshold"):
        ground(_images(), ["dog"], tiny, box_threshold=2.0)
    with pytest.raises(ValueError, match="models"):
        propose_boxes(_images(), "tiny")


# ------------------------------------------------------------------------------------------
# propose_boxes
# ------------------------------------------------------------------------------------------


def test_owl_boxes_convert_through_the_padded_square():
    normalised = torch.tensor([[0.5, 0.25, 0.2, 0.1], [0.9, 0.9, 0.4, 0.4], [0.25, 0.5, 0.1, 0.2]])
    wide = proposals._owl_boxes_to_pixels(normalised, height=50, width=100)  # padded to 100 x 100
    torch.testing.assert_close(
        wide, torch.tensor([[40.0, 20.0, 60.0, 30.0], [70.0, 50.0, 100.0, 50.0], [20.0, 40.0, 30.0, 50.0]])
    )
    tall = proposals._owl_boxes_to_pixels(normalised, height=100, width=50)  # padded to 100 x 100
    torch.testing.assert_close(
        tall, torch.tensor([[40.0, 20.0, 50.0, 30.0], [50.0, 70.0, 50.0, 100.0], [20.0, 40.0, 30.0, 60.0]])
    )


def test_proposal_selection_rules():
    boxes = torch.tensor([[0.0, 0.0, 99.0, 49.5], [10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 99.0, 40.0], [5.0, 5.0, 9.0, 9.0]])
    scores = torch.tensor([0.9, 0.6, 0.7, 0.3])
    kept = proposals._select_proposals(boxes, scores, 50, 100, 0.5, drop_full_frame=True, keep_best_if_none=True)
    # 0.9 spans the frame both ways and 0.7 its whole width (99 >= 0.98 * 100): both dropped
    assert kept.scores.tolist() == pytest.approx([0.6])
    tall = torch.tensor([[40.0, 0.0, 50.0, 49.0]])  # the whole height (49 >= 0.98 * 50)
    assert len(proposals._select_proposals(tall, torch.tensor([0.9]), 50, 100, 0.5, True, False)) == 0
    narrow = torch.tensor([[0.0, 0.0, 97.9, 48.9]])  # just under 98 % both ways: kept
    assert len(proposals._select_proposals(narrow, torch.tensor([0.9]), 50, 100, 0.5, True, False)) == 1
    kept = proposals._select_proposals(boxes, scores, 50, 100, 0.5, drop_full_frame=False, keep_best_if_none=True)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    kept = proposals._select_proposals(boxes, scores, 50, 100, 0.95, drop_full_frame=True, keep_best_if_none=True)
    assert kept.boxes.tolist() == [[10.0, 10.0, 20.0, 20.0]]  # none passes: the best non-full-frame one
    kept = proposals._select_proposals(boxes, scores, 50, 100, 0.95, drop_full_frame=True, keep_best_if_none=False)
    assert len(kept) == 0
    only_full = proposals._select_proposals(boxes[[0, 2]], scores[[0, 2]], 50, 100, 0.5, True, True)
    assert only_full.scores.tolist() == pytest.approx([0.9])  # every box spans the frame: the top one
    assert len(proposals._select_proposals(boxes[[0, 2]], scores[[0, 2]], 50, 100, 0.5, True, False)) == 0
    flat = torch.tensor([[10.0, 50.0, 20.0, 50.0], [3.0, 3.0, 6.0, 7.0]])  # the first clipped to nothing
    kept = proposals._select_proposals(flat, torch.tensor([0.9, 0.2]), 50, 100, 0.5, True, True)
    assert kept.boxes.tolist() == [[3.0, 3.0, 6.0, 7.0]]


def test_propose_boxes_in_image_pixels_sorted_and_monotone(tiny):
    images = _images()
    low = propose_boxes(images, tiny, threshold=0.3)
    high = propose_boxes(images, tiny, threshold=0.6)
    assert all(isinstance(p, Proposals) for p in low)
    for image, lo, hi in zip(images, low, high):
        height, width = image.shape[1:]
        assert lo.boxes.dtype == torch.float32 and lo.boxes.shape == (len(lo), 4)
        assert bool((lo.boxes[:, 0::2] <= width).all() and (lo.boxes[:, 1::2] <= height).all())
        assert bool((lo.boxes >= 0).all())
        assert lo.scores.tolist() == sorted(lo.scores.tolist(), reverse=True)
        assert bool((lo.scores >= 0.3).all() and (hi.scores >= 0.6).all())
        assert {tuple(b) for b in hi.boxes.tolist()} <= {tuple(b) for b in lo.boxes.tolist()}
        assert len(hi) < len(lo)
    # nothing passes 1.0: the best proposal is kept, unless asked not to
    assert [len(p) for p in propose_boxes(images, tiny, threshold=1.0)] == [1, 1]
    assert [len(p) for p in propose_boxes(images, tiny, threshold=1.0, keep_best_if_none=False)] == [0, 0]


def test_propose_boxes_batch_equals_one_by_one(tiny):
    images = _images()
    batch = propose_boxes(images, tiny, threshold=0.3)
    for image, together in zip(images, batch):
        (alone,) = propose_boxes([image], tiny, threshold=0.3)
        torch.testing.assert_close(together.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(together.scores, alone.scores, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# sam_masks
# ------------------------------------------------------------------------------------------


def test_sam_box_masks_are_at_each_input_resolution(tiny):
    images = _images(sizes=((48, 80), (90, 60), (30, 30)))
    boxes = [
        torch.tensor([[2.0, 3.0, 40.0, 30.0], [10.0, 10.0, 70.0, 45.0]]),
        torch.zeros(0, 4),
        torch.tensor([[0.0, 0.0, 30.0, 30.0]]),
    ]
    results = sam_masks(images, tiny, boxes=boxes)
    assert all(isinstance(r, MaskSet) for r in results)
    for image, prompt, result in zip(images, boxes, results):
        k = prompt.shape[0]
        assert result.masks.shape == (k, *image.shape[1:]) and result.masks.dtype == torch.bool
        assert result.iou_scores.shape == (k,) and result.iou_scores.dtype == torch.float32
        assert torch.equal(result.boxes, prompt)
        assert result.stability_scores.shape == (k,)
    assert results[0].masks.any()  # the tiny model does produce foreground


def test_sam_box_prompts_are_scaled_into_the_model_frame(tiny, monkeypatch):
    """A box in image pixels reaches the decoder in the resized (longest side = 64) frame."""
    seen = []
    model = tiny.sam.model
    original_forward = model.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["input_boxes"].clone())
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    image = _images(sizes=((48, 80),))
    sam_masks(image, tiny, boxes=[torch.tensor([[10.0, 6.0, 50.0, 30.0]])])
    # 48 x 80 → 38 x 64 (SAM's round-half-up of 38.4 x 64): x scales by 64/80, y by 38/48
    torch.testing.assert_close(seen[0], torch.tensor([[[8.0, 6.0 * 38 / 48, 40.0, 30.0 * 38 / 48]]]))


def test_sam_embeds_each_image_once_and_only_when_needed(tiny, monkeypatch):
    calls = []
    model = tiny.sam.model
    original = model.get_image_embeddings

    def spy(pixel_values, **kwargs):
        calls.append(pixel_values.shape[0])
        return original(pixel_values, **kwargs)

    monkeypatch.setattr(model, "get_image_embeddings", spy)
    images = _images(sizes=((48, 80), (90, 60), (30, 30)))
    boxes = [torch.tensor([[2.0, 3.0, 40.0, 30.0]] * 5), torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 9.0, 9.0]])]
    sam_masks(images, tiny, boxes=boxes)
    assert calls == [2]  # one batched forward, the image without boxes skipped
    calls.clear()
    sam_masks(images[1:2], tiny, boxes=[torch.zeros(0, 4)])
    assert calls == []


def test_sam_batch_equals_one_by_one(tiny):
    images = _images()
    boxes = [torch.tensor([[2.0, 3.0, 40.0, 30.0], [0.0, 0.0, 80.0, 48.0]]), torch.tensor([[5.0, 5.0, 50.0, 80.0]])]
    batch = sam_masks(images, tiny, boxes=boxes)
    for image, prompt, together in zip(images, boxes, batch):
        (alone,) = sam_masks([image], tiny, boxes=[prompt])
        torch.testing.assert_close(together.iou_scores, alone.iou_scores, rtol=1e-4, atol=1e-4)
        agreement = (together.masks == alone.masks).float().mean()
        assert agreement > 0.995


def test_point_grid_matches_segment_anything():
    grid = segmentation._point_grid(4)
    assert grid.shape == (16, 2) and grid.dtype == torch.float64  # float64, as segment-anything
    f64 = dict(dtype=torch.float64)
    torch.testing.assert_close(grid[0], torch.tensor([0.125, 0.125], **f64))
    torch.testing.assert_close(grid[1], torch.tensor([0.375, 0.125], **f64))  # x varies fastest
    torch.testing.assert_close(grid[4], torch.tensor([0.125, 0.375], **f64))
    torch.testing.assert_close(grid[-1], torch.tensor([0.875, 0.875], **f64))


def test_automatic_deduplication_uses_segment_anythings_inclusive_boxes():
    """A 10x10 and a 10x14 mask: IoU of inclusive boxes (9x9 vs 9x13) is 0.692, of exclusive
    boxes 0.714; at NMS 0.7 segment-anything keeps both, and so must cmsf."""
    masks = torch.zeros(2, 20, 20, dtype=torch.bool)
    masks[0, 0:10, 0:10] = True
    masks[1, 0:10, 0:14] = True
    iou, stability, points = torch.tensor([0.9, 0.8]), torch.ones(2), torch.zeros(2, 2)
    kept = segmentation._deduplicate(masks, iou, stability, points, 0.7)
    assert len(kept) == 2
    assert kept.boxes.tolist() == [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 14.0, 10.0]]  # cmsf's boxes
    assert len(segmentation._deduplicate(masks, iou, stability, points, 0.69)) == 1


def test_stability_score_and_mask_bounds():
    logits = torch.full((3, 6, 8), -5.0)
    logits[0, 1:3, 2:5] = 5.0  # crisp: stability 1
    logits[1, 1:3, 2:5] = 0.5  # 6 pixels above 0, none above +1, 6 above -1 → 0
    logits[1, 0, 0] = 2.0  # …one pixel above +1: 1 / 7
    area = logits[0] > 0
    assert segmentation._stability_scores(logits, 0.0, 1.0).tolist() == pytest.approx([1.0, 1 / 7, 0.0])
    bounds = segmentation.mask_bounds(logits > 0)
    assert bounds.tolist() == [[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 5.0, 3.0], [0.0, 0.0, 0.0, 0.0]]
    assert int(area.sum()) == 6


def test_automatic_filtering_and_nms_dedupe():
    logits = torch.full((5, 20, 20), -5.0)
    logits[0, 2:10, 2:10] = 5.0  # A
    logits[1, 2:10, 2:11] = 5.0  # A again, slightly wider: a duplicate
    logits[2, 12:18, 12:18] = 5.0  # B
    logits[3, 12:18, 0:6] = 0.5  # unstable
    logits[4, 0:5, 14:20] = 5.0  # low predicted IoU
    iou = torch.tensor([0.95, 0.97, 0.9, 0.99, 0.5])
    points = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    masks, kept_iou, stability, kept_points = segmentation._filter_point_masks(logits, iou, points, 0.88, 0.95, 1.0, 0.0)
    assert kept_iou.tolist() == pytest.approx([0.95, 0.97, 0.9])
    assert torch.equal(kept_points, points[:3]) and stability.tolist() == [1.0, 1.0, 1.0]
    result = segmentation._deduplicate(masks, kept_iou, stability, kept_points, nms_threshold=0.7)
    assert result.iou_scores.tolist() == pytest.approx([0.97, 0.9])  # A's duplicate with the lower IoU is gone
    assert result.boxes.tolist() == [[2.0, 2.0, 11.0, 10.0], [12.0, 12.0, 18.0, 18.0]]
    assert torch.equal(result.masks[0], logits[1] > 0)
    # filters off (0): everything passes, NMS still de-duplicates
    everything = segmentation._filter_point_masks(logits, iou, points, 0.0, 0.0, 1.0, 0.0)
    assert everything[0].shape[0] == 5


def test_automatic_masks_pass_the_filters_and_are_deduplicated(tiny):
    images = _images()
    results = sam_masks(images, tiny, pred_iou_threshold=0.5, stability_score_threshold=0.2, nms_threshold=0.9, **AUTO)
    unfiltered = sam_masks(images, tiny, pred_iou_threshold=0.0, stability_score_threshold=0.0, nms_threshold=1.0, **AUTO)
    for image, result, everything in zip(images, results, unfiltered):
        height, width = image.shape[1:]
        k = len(result)
        assert 0 < k < len(everything) <= 8 * 8 * 3
        assert result.masks.shape == (k, height, width) and result.masks.dtype == torch.bool
        assert bool((result.iou_scores > 0.5).all() and (result.stability_scores >= 0.2).all())
        assert result.iou_scores.tolist() == sorted(result.iou_scores.tolist(), reverse=True)
        assert torch.equal(result.boxes, segmentation.mask_bounds(result.masks))
        overlaps = box_iou(result.boxes, result.boxes) - torch.eye(k)
        assert bool((overlaps <= 0.9 + 1e-6).all())
        assert bool((result.points[:, 0] < width).all() and (result.points[:, 1] < height).all())


def test_automatic_nms_threshold_is_monotone(tiny):
    image = _images()[:1]
    counts = [
        len(sam_masks(image, tiny, pred_iou_threshold=0.0, stability_score_threshold=0.0, nms_threshold=t, **AUTO)[0])
        for t in (0.3, 0.7, 1.0)
    ]
    assert counts[0] <= counts[1] <= counts[2] and counts[0] < counts[2]


@pytest.mark.parametrize(
    "boxes, kwargs, match",
    [
        ([torch.zeros(0, 4)], {}, "one Tensor"),
        (torch.zeros(2, 4), {}, "list"),
        ([torch.zeros(1, 3), torch.zeros(0, 4)], {}, "boxes\\[0\\]"),
        ([torch.tensor([[5.0, 5.0, 1.0, 9.0]]), torch.zeros(0, 4)], {}, "negative-size"),
        ([torch.tensor([[0.0, 0.0, float("inf"), 9.0]]), torch.zeros(0, 4)], {}, "infinite"),
        (None, {"points_per_side": 0}, "points_per_side"),
        (None, {"nms_threshold": 1.5}, "nms_threshold"),
        (None, {"stability_score_offset": -1.0}, "stability_score_offset"),
    ],
)
def test_sam_masks_rejects_bad_arguments(tiny, boxes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sam_masks(_images(), tiny, boxes=boxes, **kwargs)


def test_bfloat16_models_run_and_return_float32():
    models = load_models("tiny", device="cpu", dtype="bfloat16")
    assert models.dtype == torch.bfloat16
    probabilities = audio_tag_probabilities(_waveforms()[:1], 22050, models)
    assert probabilities.dtype == torch.float32 and probabilities.shape == (1, 527)
    assert next(models.ast.model.parameters()).dtype == torch.bfloat16
    (masks,) = sam_masks(_images()[:1], models, boxes=[torch.tensor([[2.0, 3.0, 40.0, 30.0]])])
    assert masks.masks.shape == (1, 48, 80) and masks.iou_scores.dtype == torch.float32
    (proposals,) = propose_boxes(_images()[:1], models, threshold=0.5)
    assert proposals.boxes.dtype == torch.float32
    (detections,) = ground(_images()[:1], ["dog"], models, box_threshold=0.0)
    assert len(detections) > 0 and detections.scores.dtype == torch.float32


@pytest.mark.parametrize("size", [(224, 224), (64, 64), (300, 120)])
def test_ground_runs_on_a_single_image_of_any_shape(tiny, size):
    """One square frame once left the tiny preset's coarsest feature map 1 x 1 (GroupNorm error)."""
    image = torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    (detections,) = ground(image, ["dog", "piano"], tiny, box_threshold=0.0)
    assert detections.boxes.shape[1] == 4
    assert bool((detections.boxes[:, 2] <= size[1]).all()) and bool((detections.boxes[:, 3] <= size[0]).all())


def test_a_cuda_device_this_machine_lacks_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device: 'cuda' asked for, but CUDA is not available"):
        load_models("tiny", device="cuda")
    from cmsf.models.imagebind import load_imagebind

    with pytest.raises(ValueError, match="device"):
        load_imagebind({}, device="cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        load_models("tiny", device="cuda:3")
    assert checks.resolve_device("cpu") == torch.device("cpu")
    assert checks.resolve_dtype("bfloat16") is torch.bfloat16 and checks.resolve_dtype(None) is torch.float32
