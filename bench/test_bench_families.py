"""The 2025 families per stage, and OWOD-BIND with them next to the paper's parts, on the CPU at
tiny size (AVSBench-shaped inputs: 5 frames of 224×224, 5 one-second segments at 16 kHz).

- ``sam_masks`` with boxes (5 frames × 8 boxes) for each segmenter family: SAM, SAM-HQ, SAM 2,
  EdgeTAM (tiny random models saved with ``save_pretrained`` and loaded with
  ``load_models("tiny", sam=DIR)``, as a user's checkpoint would be);
- the PE-AV binder: 40 masked crops through ``embed_vision``, the 5 segments through
  ``embed_audio``;
- SAM 3 concept masks (``segment_concepts``: 5 frames × 3 prompts);
- OWOD-BIND per video with the paper's parts (tiny preset) and with the 2025 parts (SAM 2,
  PE-AV binder; tiny).

GPU figures of the full-size twins (``2025-random``) need CUDA: those cases are skipped here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from bench.harness import run_benchmark
from bench.test_bench_stages import BOXES_PER_FRAME, PROMPTS, frame_boxes
from cmsf import owod_bind
from cmsf.io.inputs import split_segments
from cmsf.models.loading import Models, load_models
from cmsf.models.random_families import family_config, family_processor, soften_family
from cmsf.models.random_models import build_random
from cmsf.stages.binding import binder_of, masked_crops
from cmsf.stages.concepts import segment_concepts
from cmsf.stages.segmentation import sam_masks

_CLASSES = {"sam_hq": transformers.SamHQModel, "sam2": transformers.Sam2Model, "edgetam": transformers.EdgeTamModel, "pe_audio_video": transformers.PeAudioVideoModel}
_LOADED: dict[str, Models] = {}


def _family_models(family: str, tmp: Path) -> Models:
    """``load_models("tiny")`` with the sam (or binder) component a saved tiny ``family`` model."""
    if family == "sam":
        return load_models("tiny", device="cpu").load("sam")
    if family not in _LOADED:
        component = "binder" if family == "pe_audio_video" else "sam"
        config = family_config(component, family, "tiny")
        model = build_random(lambda: _CLASSES[family](config), 7, torch.device("cpu")).eval()
        soften_family(family, model)
        model.save_pretrained(tmp)
        family_processor(component, family, "tiny", config).save_pretrained(tmp)
        _LOADED[family] = load_models("tiny", device="cpu", **{component: str(tmp)}).load(component)
    return _LOADED[family]


def _info(**extra: Any) -> dict[str, Any]:
    return {"preset": "tiny", "device": "cpu", "dtype": "float32", **extra}


@pytest.fixture(scope="module")
def avs_video() -> tuple[torch.Tensor, torch.Tensor, int]:
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (5, 3, 224, 224), dtype=torch.uint8, generator=g),
            0.1 * torch.randn(5 * 16000, generator=g), 16000)


@pytest.mark.parametrize("family", ["sam", "sam_hq", "sam2", "edgetam"])
def test_sam_masks_boxes_per_family(benchmark, family, avs_video, tmp_path_factory) -> None:
    models = _family_models(family, tmp_path_factory.mktemp(family))
    frames = avs_video[0]
    boxes = frame_boxes(frames.shape[0])
    benchmark.group = "family-sam_masks-boxes"
    found = run_benchmark(
        benchmark, lambda: sam_masks(frames, models, boxes=boxes), "cpu", rounds=3,
        extra_info=_info(family=family, frames=int(frames.shape[0]), boxes_per_frame=BOXES_PER_FRAME),
    )
    assert models.family("sam") == family
    assert [tuple(m.masks.shape) for m in found] == [(BOXES_PER_FRAME, 224, 224)] * frames.shape[0]


def test_pe_av_embed_vision(benchmark, avs_video, tmp_path_factory) -> None:
    binder = binder_of(_family_models("pe_audio_video", tmp_path_factory.mktemp("peav")))
    frames = avs_video[0]
    boxes = frame_boxes(frames.shape[0])
    crops = [c for frame, b in zip(frames, boxes) for c in masked_crops(frame, b, torch.ones(len(b), 224, 224, dtype=torch.bool))]
    benchmark.group = "family-binder-embed_vision"
    embeddings = run_benchmark(benchmark, lambda: binder.embed_vision(crops), "cpu", rounds=3, extra_info=_info(family="pe_audio_video", crops=len(crops)))
    assert embeddings.shape[0] == len(crops) and torch.isfinite(embeddings).all()


def test_pe_av_embed_audio(benchmark, avs_video, tmp_path_factory) -> None:
    binder = binder_of(_family_models("pe_audio_video", tmp_path_factory.mktemp("peav")))
    _, waveform, rate = avs_video
    segments = split_segments(waveform, 5)
    benchmark.group = "family-binder-embed_audio"
    embeddings = run_benchmark(benchmark, lambda: binder.embed_audio(segments, rate), "cpu", rounds=3, extra_info=_info(family="pe_audio_video", segments=5))
    assert embeddings.shape[0] == 5


def test_segment_concepts(benchmark, avs_video) -> None:
    models = load_models("tiny", device="cpu").load("sam3")
    frames = avs_video[0]
    prompts = [list(PROMPTS) for _ in range(frames.shape[0])]
    benchmark.group = "family-sam3-segment_concepts"
    found = run_benchmark(benchmark, lambda: segment_concepts(frames, prompts, models, threshold=0.2), "cpu", rounds=3,
                          extra_info=_info(family="sam3", frames=5, prompts_per_frame=len(PROMPTS)))
    assert len(found) == 5


@pytest.mark.parametrize("parts", ["paper", "2025"])
def test_owod_bind_per_video(benchmark, parts, avs_video, tmp_path_factory) -> None:
    frames, waveform, rate = avs_video
    if parts == "paper":
        models = load_models("tiny", device="cpu").load("owlv2", "sam", "imagebind")
    else:
        sam2 = _family_models("sam2", tmp_path_factory.mktemp("sam2"))
        peav = _family_models("pe_audio_video", tmp_path_factory.mktemp("peav"))
        models = load_models("tiny", device="cpu", sam=sam2.source("sam").strip("'"), binder=peav.source("binder").strip("'"))
        models.load("owlv2", "sam", "binder")
    benchmark.group = "family-owod-bind-per-video"
    result = run_benchmark(benchmark, lambda: owod_bind(frames, waveform, rate, models), "cpu", rounds=3,
                           extra_info=_info(parts=parts, frames=5))
    assert result.masks.shape == (5, 224, 224)
