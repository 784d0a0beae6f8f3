"""Binder.embed_text for both binders: ImageBind's text tower, PE-AV's two text heads against
`PeAudioVideoModel.forward`'s own text embeddings and logits."""

from __future__ import annotations

import pytest
import torch
import transformers

from cmsf import imagebind_text_inputs
from cmsf.models.loading import build_random, load_models
from cmsf.models.random_families import family_config, family_processor, soften_family
from cmsf.stages.binding import TextEmbeddings, binder_of

TEXTS = ["dog", "man speaking", "a photo of a piano.", "acoustic guitar"]


@pytest.fixture(scope="module")
def pe_av(tmp_path_factory):
    folder = tmp_path_factory.mktemp("peav")
    config = family_config("binder", "pe_audio_video", "tiny")
    model = build_random(lambda: transformers.PeAudioVideoModel(config), 7, torch.device("cpu")).eval()
    soften_family("pe_audio_video", model)
    with torch.no_grad():  # random models start with zero text scales: every logit would be the bias
        model.video_model.text_video_logit_scale.fill_(7.0)
        model.video_model.text_video_logit_bias.fill_(-1.5)
        model.audio_model.text_audio_logit_scale.fill_(3.0)
        model.audio_model.text_audio_logit_bias.fill_(0.25)
    model.save_pretrained(folder)
    family_processor("binder", "pe_audio_video", "tiny", config).save_pretrained(folder)
    return load_models("tiny", device="cpu", binder=str(folder))


def test_imagebind_text_embeddings_are_embed_text_for_both_towers():
    models = load_models("tiny", device="cpu")
    text = binder_of(models).embed_text(TEXTS)
    expected = models.imagebind.embed_text(imagebind_text_inputs(TEXTS))
    assert torch.equal(text.vision, expected) and torch.equal(text.audio, expected)
    assert (text.vision_scale, text.vision_bias, text.audio_scale, text.audio_bias) == (1.0, 0.0, 1.0, 0.0)
    visual = torch.randn(3, expected.shape[1])
    torch.testing.assert_close(text.vision_logits(visual), visual @ expected.T)


def test_pe_av_text_embeddings_and_logits_equal_its_forward(pe_av):
    binder = binder_of(pe_av)
    g = torch.Generator().manual_seed(0)
    crops = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in ((20, 30), (9, 12))]
    segments = [0.1 * torch.randn(4800, generator=g), 0.3 * torch.randn(5000, generator=g)]
    visual, audio = binder.embed_vision(crops), binder.embed_audio(segments, 48000)
    text = binder.embed_text(TEXTS)
    assert isinstance(text, TextEmbeddings) and text.vision.shape == text.audio.shape == (len(TEXTS), visual.shape[1])
    model, processor = pe_av.binder
    inputs = processor(videos=[c[None] for c in crops], audio=[s.numpy() for s in segments], sampling_rate=48000,
                       return_tensors="pt")
    for start in (0, 2):  # forward pairs texts with the clips one to one: two texts at a time
        rows = slice(start, start + 2)
        tokens = processor.tokenizer(TEXTS[rows], padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                        input_values=inputs["input_values"], padding_mask=inputs["padding_mask"],
                        pixel_values_videos=inputs["pixel_values_videos"])
        torch.testing.assert_close(text.vision[rows], out.text_video_embeds, rtol=0, atol=1e-5)
        torch.testing.assert_close(text.audio[rows], out.text_audio_embeds, rtol=0, atol=1e-5)
        torch.testing.assert_close(text.vision_logits(visual)[:, rows], out.logits_video_text, rtol=0, atol=1e-4)
        torch.testing.assert_close(text.audio_logits(audio)[:, rows], out.logits_audio_text, rtol=0, atol=1e-4)
    assert not torch.allclose(text.vision, text.audio)  # two heads, two spaces


def test_embed_text_refuses_bad_texts(pe_av):
    for binder in (binder_of(load_models("tiny", device="cpu")), binder_of(pe_av)):
        for bad in ([], "dog", ["dog", ""], ["dog", 3]):
            with pytest.raises(ValueError, match="texts"):
                binder.embed_text(bad)
