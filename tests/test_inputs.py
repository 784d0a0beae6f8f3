"""The shared input helpers of cmsf.io.inputs: image, waveform and prompt normalisation, segments."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cmsf.io.inputs import (
    as_image_list,
    as_prompt_lists,
    as_waveform,
    as_waveform_list,
    check_sample_rate,
    resample,
    split_segments,
)
from cmsf.models.loading import load_models
from cmsf.stages.concepts import segment_concepts
from cmsf.stages.grounding import ground, grounding_phrase


def test_images_from_batch_list_and_pil_agree():
    batch = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in batch]
    for images in (batch, list(batch), pil):
        out = as_image_list(images)
        assert len(out) == 2
        for got, want in zip(out, batch):
            assert got.dtype == torch.uint8 and torch.equal(got, want)


def test_grey_pil_becomes_rgb():
    grey = Image.fromarray(np.full((4, 6), 9, dtype=np.uint8))
    (out,) = as_image_list([grey])
    assert out.shape == (3, 4, 6) and int(out.min()) == 9


@pytest.mark.parametrize(
    "images, message",
    [
        ([], "empty batch"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), r"Tensor\[B, 3, H, W\]"),
        ([torch.zeros(4, 4, 4, dtype=torch.uint8)], r"images\[0\]: expected Tensor\[3, H, W\]"),
        ([torch.zeros(3, 4, 4)], "uint8"),
        ("frame.png", "got str"),
        ([torch.zeros(3, 0, 4, dtype=torch.uint8)], "empty image"),
    ],
)
def test_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        as_image_list(images)


def test_waveform_shapes():
    assert as_waveform(torch.zeros(10)).shape == (1, 10)
    assert as_waveform(torch.zeros(2, 10)).shape == (2, 10)
    assert [w.shape for w in as_waveform_list(torch.zeros(3, 2, 10))] == [(2, 10)] * 3
    assert [w.shape for w in as_waveform_list(torch.zeros(3, 10))] == [(1, 10)] * 3
    assert [w.shape for w in as_waveform_list([torch.zeros(5), torch.zeros(2, 7)])] == [(1, 5), (2, 7)]


@pytest.mark.parametrize(
    "waveform, message",
    [
        (torch.tensor([0.0, math.nan]), "NaN or infinite"),
        (torch.tensor([0.0, math.inf]), "NaN or infinite"),
        (torch.zeros(0), "empty audio"),
        (torch.zeros(2, 3, 4), r"Tensor\[C, S\]"),
        (torch.zeros(4, dtype=torch.int16), "floating-point"),
    ],
)
def test_bad_waveform(waveform, message):
    with pytest.raises(ValueError, match=message):
        as_waveform(waveform)


def test_bad_waveform_batch():
    with pytest.raises(ValueError, match="empty batch"):
        as_waveform_list([])
    with pytest.raises(ValueError, match=r"waveforms\[1\]"):
        as_waveform_list([torch.zeros(4), torch.tensor([math.nan])])


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, "16k", True])
def test_bad_sample_rate(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        check_sample_rate(rate)


def test_resample_length_and_identity():
    x = torch.randn(2, 48000)
    assert resample(x, 16000, 16000) is x
    y = resample(x, 48000, 16000)
    assert y.shape == (2, 16000)
    # a 440 Hz tone keeps its frequency
    t = torch.arange(44100) / 44100
    tone = torch.sin(2 * math.pi * 440 * t)
    down = resample(tone, 44100, 16000)
    spectrum = torch.fft.rfft(down).abs()
    assert int(spectrum.argmax()) == pytest.approx(440, abs=1)


def test_split_segments_cover_the_waveform():
    x = torch.arange(17.0)
    parts = split_segments(x, 5)
    assert [p.shape[-1] for p in parts] == [3, 3, 4, 3, 4]
    assert torch.equal(torch.cat(parts, dim=-1)[0], x)
    with pytest.raises(ValueError, match="num_segments"):
        split_segments(x, 0)
    with pytest.raises(ValueError, match="cannot be cut"):
        split_segments(torch.zeros(3), 5)


def test_prompt_lists_shared_and_per_image():
    shared = as_prompt_lists(["  a  dog ", "Bee, wasp, etc."], 3)
    assert shared == [["a dog", "Bee, wasp, etc."]] * 3
    shared[0].append("x")  # each image gets its own list
    assert shared[1] == ["a dog", "Bee, wasp, etc."]
    assert as_prompt_lists((["x"], [], ("y\tz",)), 3) == [["x"], [], ["y z"]]
    assert as_prompt_lists([], 2) == [[], []]
    assert as_prompt_lists([["Bee, wasp, etc."], ["Why? "]], 2, grounding_phrase) == [["bee, wasp, etc"], ["why"]]


@pytest.mark.parametrize(
    "prompts, message",
    [
        ("dog. cat.", r"^prompts: expected a list of strings \(the same prompts for every image\).*got str$"),
        ({"dog"}, "got set"),
        (["dog", ["cat"]], "not a mixture"),
        ([["dog"]], r"one list of prompts per image \(2\), got 1 lists"),
        ([["dog"], ["cat", 3]], r"^prompts\[1\]\[1\]: expected a string, got int$"),
        ([["dog"], ["cat", " "]], r"^prompts\[1\]\[1\]: empty prompt ' '$"),
    ],
)
def test_bad_prompts_are_refused_alike_by_grounding_and_concepts(prompts, message):
    models = load_models("tiny", device="cpu")
    image = [torch.zeros(3, 4, 4, dtype=torch.uint8)] * 2
    for stage in (ground, segment_concepts):
        with pytest.raises(ValueError, match=message):
            stage(image, prompts, models)
    assert models.loaded == ()  # refused before any model is loaded
    with pytest.raises(ValueError, match=message):
        as_prompt_lists(prompts, 2)


def test_grounding_refuses_a_prompt_left_empty_by_its_convention():
    with pytest.raises(ValueError, match=r"prompts\[0\]: empty prompt ' \. '"):
        as_prompt_lists([" . "], 1, grounding_phrase)
    assert as_prompt_lists([" . "], 1) == [["."]]  # SAM 3's concepts keep "."
