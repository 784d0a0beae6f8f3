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
