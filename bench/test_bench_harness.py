"""Checks of the suite's own helpers (no timing): the agreement measure, the workload
thresholds, the skip rules and the synthetic video."""

from __future__ import annotations

import pytest
import torch

from bench import harness
from bench.workload import threshold_keeping


def test_agreement_counts_empty_vs_empty_as_one_and_empty_vs_something_as_zero() -> None:
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    a[1, :2] = True
    a[2, :2] = True
    b[2, :1] = True
    assert harness.frame_agreement(a, b) == [1.0, 0.0, 0.5]
    assert harness.mask_agreement(a, b) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        harness.frame_agreement(a, b[:2])


def test_threshold_keeping_sits_in_a_gap_and_keeps_about_the_target() -> None:
    values = [0.95, 0.9, 0.85, 0.8, 0.6, 0.58, 0.56, 0.54, 0.52, 0.5, 0.1]
    threshold = threshold_keeping(values, keep=4)
    # the widest gap within 3 positions of the 4th value is 0.8 → 0.6 (0.5 → 0.1 is too far)
    assert threshold == pytest.approx(0.7)
    assert sum(v >= threshold for v in values) == 4


def test_threshold_keeping_keeps_everything_when_scores_do_not_discriminate() -> None:
    assert threshold_keeping([1.0, 1.0, 1.0], keep=1) == 1.0
    assert threshold_keeping([], keep=2) == 0.0


def test_skip_rules() -> None:
    assert harness.Case("tiny", "cpu", "float32").skip_reason() is None
    assert "bfloat16" in harness.Case("tiny", "cpu", "bfloat16").skip_reason()
    if not torch.cuda.is_available():
        assert "CUDA" in harness.Case("tiny", "cuda", "float32").skip_reason()


def test_paper_random_on_cpu_needs_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(harness.PAPER_ON_CPU_ENV, raising=False)
    assert harness.PAPER_ON_CPU_ENV in harness.Case("paper-random", "cpu", "float32").skip_reason()
    monkeypatch.setenv(harness.PAPER_ON_CPU_ENV, "1")
    assert harness.Case("paper-random", "cpu", "float32").skip_reason() is None


def test_video_is_avsbench_shaped_and_deterministic() -> None:
    frames, waveform, sample_rate = harness.avsbench_video(seed=3)
    assert frames.shape == (5, 3, 224, 224) and frames.dtype == torch.uint8
    assert waveform.shape == (1, 80000) and sample_rate == 16000
    assert float(waveform.abs().max()) <= 1.0
    again, _, _ = harness.avsbench_video(seed=3)
    assert torch.equal(frames, again)


def test_flops_counted_on_the_meta_device_equal_those_of_real_models() -> None:
    """The meta-device method of bench/flops.py counts what the real models compute (tiny,
    CPU; the math attention kernel, since FlopCounterMode has no formula for the CPU's flash
    attention), and the units add up to what the stages run."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from bench.flops import build_on_meta, count_flops, unit_flops, video_flops
    from cmsf.stages.binding import embed_crops, masked_crops
    from cmsf.stages.segmentation import sam_masks

    models = harness.load_case_models("tiny", "cpu", "float32")
    real = {"owlv2": models.owlv2.model, "sam": models.sam.model, "ast": models.ast.model, "imagebind": models.imagebind}
    with sdpa_kernel(SDPBackend.MATH):
        units = unit_flops(real, device="cpu")
        assert units == unit_flops(build_on_meta("tiny"))
        frames, _, _ = harness.avsbench_video(seed=0)
        boxes = [torch.tensor([[10.0, 20.0, 90.0, 120.0], [0.0, 0.0, 30.0, 200.0]])] * 3 + [torch.zeros(0, 4)]
        sam_flops = count_flops(lambda: sam_masks(frames[:4], models, boxes=boxes))
        found = sam_masks(frames[:4], models, boxes=boxes)
        crops = [c for image, b, m in zip(frames, boxes, found) for c in masked_crops(image, b, m.masks)]
        crop_flops = count_flops(lambda: embed_crops(crops, models))
    assert sam_flops == 3 * units["sam_image"]["per_item"] + 3 * units["sam_box_decoder"]["per_call"] + 6 * units["sam_box_decoder"]["per_item"]
    assert crop_flops == 6 * units["imagebind_crop"]["per_item"]
    assert video_flops(units, "owod-bind", frames=2, proposals_per_frame=[3, 0]) == (
        2 * (units["owlv2_frame"]["per_item"] + units["sam_image"]["per_item"] + units["imagebind_segment"]["per_item"])
        + units["sam_box_decoder"]["per_call"] + 3 * (units["sam_box_decoder"]["per_item"] + units["imagebind_crop"]["per_item"])
    )


def test_dense_bf16_peaks_are_matched_by_gpu_name(monkeypatch) -> None:
    monkeypatch.delenv(harness.PEAK_ENV, raising=False)
    assert harness.dense_bf16_peak("NVIDIA H100 80GB HBM3")[0] == 989.0
    assert harness.dense_bf16_peak("NVIDIA H100 PCIe")[0] == 756.0
    assert harness.dense_bf16_peak("NVIDIA H200")[0] == 989.0
    assert harness.dense_bf16_peak("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert harness.dense_bf16_peak("NVIDIA L4")[0] == 121.0 and harness.dense_bf16_peak("NVIDIA L40S")[0] == 362.0
    assert harness.dense_bf16_peak("NVIDIA H100 NVL") == (None, None)  # not in the table: no guess
    assert harness.dense_bf16_peak(None) == (None, None)
    monkeypatch.setenv(harness.PEAK_ENV, "500")
    assert harness.dense_bf16_peak("Some GPU")[0] == 500.0 and harness.dense_bf16_peak(None) == (None, None)
    info = harness.throughput_info(2 * 10**12, 4.0, "cpu")
    assert info["achieved_tflops"] == 0.5 and info["fraction_of_peak"] is None and info["gpu"] is None
