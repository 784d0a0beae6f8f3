"""One benchmark per model-backed stage, on one AVSBench-shaped video's worth of inputs:
5 frames of 224×224 and 5 one-second audio segments at 16 kHz.

- ``tag_audio``: the 5 segments (AST).
- ``ground``: the 5 frames, 3 AudioSet label prompts each (GroundingDINO).
- ``propose_boxes``: the 5 frames, with each proposer (OWLv2 objectness + NMS; MAVL);
  OWLv2's input preparation of one large (2000 × 1500) frame, cmsf's against transformers'
  processor (the path before).
- ``sam_masks`` with boxes: the 5 frames, 8 box prompts each; automatic: the 5 frames with the
  automatic options of ``bench/workload.py`` (random weights: quality filters off).
- ImageBind image embedding: 40 masked crops (5 frames × 8), split into the input preparation
  (``imagebind_vision_inputs`` with each resampler, on the CPU and on CUDA, with and without 5
  thin slivers) and the vision tower (``embed_vision``).
- ImageBind audio embedding: the 5 segments, input preparation (``imagebind_audio_inputs``,
  Kaldi fbank) and the audio tower (``embed_audio``).

Every case is (preset, device, dtype), see ``bench/conftest.py``; ``extra_info`` records the
case, the batch sizes and the peak GPU memory.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest
import torch
from torch import Tensor

from bench.harness import PROPOSERS, Case, load_case_models, run_benchmark
from bench.workload import SAM_AUTOMATIC_OPTIONS
from cmsf.io.inputs import split_segments
from cmsf.models.imagebind import imagebind_audio_inputs, imagebind_vision_inputs
from cmsf.models.random_models import random_config, random_processor
from cmsf.stages.binding import masked_crops
from cmsf.stages.grounding import ground
from cmsf.stages.proposals import owl_pixel_values, propose_boxes
from cmsf.stages.segmentation import sam_masks
from cmsf.stages.tagging import tag_audio

BOXES_PER_FRAME = 8
PROMPTS = ["Speech", "Dog", "Acoustic guitar"]


def _rounds(case: Case) -> Optional[int]:
    """pytest-benchmark's calibration for the tiny preset (fast calls), 5 fixed rounds else."""
    return None if case.preset == "tiny" else 5


def _info(case: Case, **extra: Any) -> dict[str, Any]:
    return {"preset": case.preset, "device": case.device, "dtype": case.dtype, **extra}


def frame_boxes(count: int, size: int = 224, seed: int = 0) -> list[Tensor]:
    """``count`` lists of BOXES_PER_FRAME random boxes (10–60 % of the frame) per frame."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        wh = (torch.rand(BOXES_PER_FRAME, 2, generator=generator) * 0.5 + 0.1) * size
        xy = torch.rand(BOXES_PER_FRAME, 2, generator=generator) * (size - wh)
        out.append(torch.cat([xy, xy + wh], dim=1))
    return out


def _inside(boxes: Tensor, height: int, width: int) -> bool:
    limits = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return bool((boxes >= 0).all() and (boxes <= limits).all())


def test_tag_audio(benchmark, case: Case, models, video) -> None:
    frames, waveform, sample_rate = video
    segments = split_segments(waveform, frames.shape[0])
    benchmark.group = "stage-tag_audio"
    tags = run_benchmark(
        benchmark, lambda: tag_audio(segments, sample_rate, models, threshold=0.5), case.device,
        rounds=_rounds(case), extra_info=_info(case, segments=len(segments)),
    )
    assert len(tags) == len(segments)
    for segment_tags in tags:
        probabilities = [p for _, p in segment_tags]
        assert probabilities == sorted(probabilities, reverse=True) and all(p >= 0.5 for p in probabilities)


def test_ground(benchmark, case: Case, models, video) -> None:
    frames, _, _ = video
    prompts = [list(PROMPTS) for _ in range(frames.shape[0])]
    benchmark.group = "stage-ground"
    detections = run_benchmark(
        benchmark, lambda: ground(frames, prompts, models), case.device,
        rounds=_rounds(case), extra_info=_info(case, frames=int(frames.shape[0]), prompts_per_frame=len(PROMPTS)),
    )
    assert len(detections) == frames.shape[0]
    assert all(_inside(d.boxes, 224, 224) for d in detections)
    benchmark.extra_info["boxes_per_frame"] = [len(d) for d in detections]


@pytest.mark.parametrize("proposer", PROPOSERS)
def test_propose_boxes(benchmark, case: Case, video, proposer: str) -> None:
    """The paper's τ_BB = 0.5; OWLv2 with its default NMS (0.5) and cap (300), MAVL without NMS.
    ``extra_info`` has the proposals per frame (and, for OWLv2, their count without NMS)."""
    frames, _, _ = video
    models = load_case_models(case.preset, case.device, case.dtype, proposer)
    benchmark.group = f"stage-propose_boxes-{proposer}"
    proposals = run_benchmark(
        benchmark, lambda: propose_boxes(frames, models), case.device,
        rounds=_rounds(case), extra_info=_info(case, frames=int(frames.shape[0]), proposer=proposer),
    )
    assert models.proposer == proposer and len(proposals) == frames.shape[0]
    for p in proposals:
        assert len(p) >= 1 and _inside(p.boxes, 224, 224)
        assert bool((p.scores[:-1] >= p.scores[1:]).all())
    benchmark.extra_info["boxes_per_frame"] = [len(p) for p in proposals]
    if proposer == "owlv2":
        undeduplicated = propose_boxes(frames, models, nms_threshold=1.0)
        benchmark.extra_info["boxes_per_frame_without_nms"] = [len(p) for p in undeduplicated]


LARGE_FRAME = (1500, 2000)
"""(H, W) of the OWLv2 input-preparation benchmark: a 3-megapixel video frame."""


@pytest.mark.parametrize("path", ["cmsf", "transformers-processor"])
def test_owlv2_inputs_of_a_large_frame(benchmark, device: str, path: str) -> None:
    """OWLv2's input (960 × 960) from one 2000 × 1500 frame: cmsf's ``owl_pixel_values`` on the
    device (the authors' grey padding and scikit-image resize, as separable gathers) against
    transformers' ``Owlv2ImageProcessor`` (black padding, Gaussian blur of the whole padded frame
    on the CPU), the path cmsf took before. ``extra_info["max_abs_difference"]`` compares the two
    (mostly the padding: black vs grey)."""
    height, width = LARGE_FRAME
    generator = torch.Generator().manual_seed(3)
    frame = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    processor = random_processor("owlv2", "paper", random_config("owlv2", "paper"))
    side = int(processor.size["height"])
    if path == "transformers-processor" and device != "cpu":
        pytest.skip("transformers' processor runs on the CPU")
    if path == "transformers-processor" and benchmark.disabled:
        pytest.skip("several seconds on a CPU: runs when benchmarking is on")

    def cmsf_inputs() -> Tensor:
        return owl_pixel_values([frame], side, processor.image_mean, processor.image_std, torch.device(device))

    def processor_inputs() -> Tensor:
        return processor(images=[frame], return_tensors="pt")["pixel_values"]

    benchmark.group = "stage-owlv2-inputs-large-frame"
    pixels = run_benchmark(
        benchmark, cmsf_inputs if path == "cmsf" else processor_inputs, device,
        rounds=3, extra_info={"path": path, "frame_size": [height, width], "input_side": side},
    )
    assert pixels.shape == (1, 3, side, side)
    if path == "transformers-processor":
        benchmark.extra_info["max_abs_difference"] = float((pixels - cmsf_inputs().cpu()).abs().max())


def test_sam_masks_boxes(benchmark, case: Case, models, video) -> None:
    frames, _, _ = video
    boxes = frame_boxes(frames.shape[0])
    benchmark.group = "stage-sam_masks-boxes"
    found = run_benchmark(
        benchmark, lambda: sam_masks(frames, models, boxes=boxes), case.device,
        rounds=_rounds(case), extra_info=_info(case, frames=int(frames.shape[0]), boxes_per_frame=BOXES_PER_FRAME),
    )
    assert [tuple(m.masks.shape) for m in found] == [(BOXES_PER_FRAME, 224, 224)] * frames.shape[0]
    assert all(m.masks.dtype == torch.bool for m in found)


def test_sam_masks_automatic(benchmark, case: Case, models, video) -> None:
    frames, _, _ = video
    options = dict(SAM_AUTOMATIC_OPTIONS[case.preset])
    benchmark.group = "stage-sam_masks-automatic"
    found = run_benchmark(
        benchmark, lambda: sam_masks(frames, models, nms_threshold=0.5, **options), case.device,
        rounds=_rounds(case) if case.preset != "tiny" else 3,
        extra_info=_info(case, frames=int(frames.shape[0]), options=options),
    )
    assert len(found) == frames.shape[0]
    for m in found:
        assert m.masks.shape[1:] == (224, 224) and m.masks.shape[0] == m.boxes.shape[0]
    benchmark.extra_info["masks_per_frame"] = [len(m) for m in found]


def test_sam_masks_automatic_default_filters(benchmark, case: Case, models, video) -> None:
    """Automatic masks as SAM-BIND runs them: segment-anything's quality filters on (predicted
    IoU > 0.88, stability ≥ 0.95), the full 32 × 32 grid (8 × 8 in the CPU smoke run)."""
    frames, _, _ = video
    points = 8 if benchmark.disabled and not case.is_cuda else 32
    benchmark.group = "stage-sam_masks-automatic-default-filters"
    found = run_benchmark(
        benchmark, lambda: sam_masks(frames, models, nms_threshold=0.5, points_per_side=points), case.device,
        rounds=_rounds(case) if case.preset != "tiny" else 3,
        extra_info=_info(case, frames=int(frames.shape[0]), points_per_side=points),
    )
    assert len(found) == frames.shape[0]
    for m in found:
        assert m.masks.shape[1:] == (224, 224) and m.masks.shape[0] == m.boxes.shape[0]
        assert bool((m.iou_scores > 0.88).all()) and bool((m.stability_scores >= 0.95).all())
    benchmark.extra_info["masks_per_frame"] = [len(m) for m in found]


def _crops(frames: Tensor) -> list[Tensor]:
    """5 × 8 masked crops: each box's crop with an elliptical mask."""
    crops = []
    ys = torch.arange(224).view(224, 1).float() + 0.5
    xs = torch.arange(224).view(1, 224).float() + 0.5
    for image, boxes in zip(frames, frame_boxes(frames.shape[0], seed=1)):
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
        masks = torch.stack(
            [((xs - x) / a) ** 2 + ((ys - y) / b) ** 2 <= 1 for x, y, a, b in zip(cx, cy, rx, ry)]
        )
        crops.extend(masked_crops(image, boxes, masks))
    return crops


SLIVERS = [(1, 224), (224, 1), (3, 180), (150, 2), (6, 224)]
"""Thin proposals (h, w) added to the crops of the ``crops+slivers`` workload: real proposal
sets include them, and the full Meta transform resizes a 1 × 224 crop to 50 176 × 224."""


def _slivers(frames: Tensor) -> list[Tensor]:
    return [frames[0, :, 10 : 10 + h, 5 : 5 + w].clone() for h, w in SLIVERS]


@pytest.mark.parametrize("workload", ["crops", "crops+slivers"])
@pytest.mark.parametrize("resampler", ["pil", "torch", "auto"])
def test_imagebind_vision_inputs(benchmark, device, video, resampler: str, workload: str) -> None:
    """Crop preparation (resize, centre crop, normalise) of 40 masked crops (+ 5 slivers) on the
    crops' device by each resampler of ``imagebind_vision_inputs``; every one must give Meta's
    PIL pixels exactly (``max_abs_diff_vs_pil`` is recorded and asserted 0)."""
    crops = _crops(video[0]) + (_slivers(video[0]) if workload == "crops+slivers" else [])
    reference = imagebind_vision_inputs(crops, resampler="pil")
    crops = [crop.to(device) for crop in crops]
    benchmark.group = f"stage-imagebind-vision-inputs-{workload}"
    pixels = run_benchmark(
        benchmark, lambda: imagebind_vision_inputs(crops, resampler=resampler), device,
        extra_info={"crops": len(crops), "resampler": resampler, "workload": workload, "device": device},
    )  # fmt: skip
    difference = (pixels.cpu() - reference).abs()
    benchmark.extra_info.update(
        max_abs_diff_vs_pil=float(difference.max()), mean_abs_diff_vs_pil=float(difference.mean())
    )
    assert pixels.shape == (len(crops), 3, 224, 224) and pixels.device.type == torch.device(device).type
    assert float(difference.max()) == 0.0


def test_imagebind_embed_vision(benchmark, case: Case, models, video) -> None:
    crops = _crops(video[0])
    pixels = imagebind_vision_inputs(crops).to(case.device)
    benchmark.group = "stage-imagebind-embed_vision"
    embeddings = run_benchmark(
        benchmark, lambda: models.imagebind.embed_vision(pixels), case.device,
        rounds=_rounds(case), extra_info=_info(case, crops=len(crops)),
    )
    assert embeddings.shape == (len(crops), models.imagebind.out_embed_dim) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(len(crops), device=embeddings.device))


def test_imagebind_audio_inputs(benchmark, video) -> None:
    """Input preparation (resampling, Kaldi fbank of 3 clips per segment) on the CPU."""
    frames, waveform, sample_rate = video
    segments = split_segments(waveform, frames.shape[0])
    benchmark.group = "stage-imagebind-audio-inputs"
    features = run_benchmark(
        benchmark, lambda: torch.stack([imagebind_audio_inputs(s, sample_rate) for s in segments]), "cpu",
        extra_info={"segments": len(segments)},
    )
    assert features.shape == (len(segments), 3, 1, 128, 204)


def test_imagebind_embed_audio(benchmark, case: Case, models, video) -> None:
    frames, waveform, sample_rate = video
    segments = split_segments(waveform, frames.shape[0])
    features = torch.stack([imagebind_audio_inputs(s, sample_rate) for s in segments]).to(case.device)
    benchmark.group = "stage-imagebind-embed_audio"
    embeddings = run_benchmark(
        benchmark, lambda: models.imagebind.embed_audio(features), case.device,
        rounds=_rounds(case), extra_info=_info(case, segments=len(segments), clips_per_segment=3),
    )
    assert embeddings.shape == (len(segments), models.imagebind.out_embed_dim)
    assert bool((embeddings.norm(dim=1) <= 20.0 + 1e-3).all())
