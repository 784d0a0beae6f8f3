"""miou / fscore against an independent brute-force numpy reference of the AVSBench protocol,
plus hand-checked edge cases."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cmsf import dataset_scores, fscore, miou
from cmsf.metrics import fscore_curve


# ---------------------------------------------------------------- brute-force numpy references
def brute_miou(pred: np.ndarray, target: np.ndarray) -> float:
    """Frame by frame, pixel counts by plain numpy; float64."""
    ious = []
    for p, t in zip(pred, target):
        binary = p > 0.5
        fg = t != 0
        if fg.sum() == 0:
            ious.append(np.sum(~binary & ~fg) / (fg.size + 1e-7))
        else:
            ious.append(np.sum(binary & fg) / (np.sum(binary | fg) + 1e-7))
    return float(np.mean(ious))


def brute_fscore(pred: np.ndarray, target: np.ndarray) -> float:
    """One threshold at a time, as the protocol is worded; thresholds are float32 as in torch."""
    thresholds = np.linspace(0, 1 - 1e-10, 255).astype(np.float32)
    curves = []
    for p, t in zip(pred.astype(np.float32), target):
        fg = t != 0
        if fg.sum() == 0:
            continue
        curve = []
        for th in thresholds:
            positive = p >= th
            tp = float(np.sum(positive & fg))
            precision = tp / (positive.sum() + 1e-20)
            recall = tp / (fg.sum() + 1e-20)
            denominator = 0.3 * precision + recall
            curve.append(0.0 if denominator == 0 else 1.3 * precision * recall / denominator)
        curves.append(curve)
    if not curves:
        return 0.0
    return float(np.max(np.mean(np.array(curves), axis=0)))


# ---------------------------------------------------------------- strategies
probability_values = st.sampled_from(
    [0.0, 1.0, 0.5, np.nextafter(np.float32(0.5), np.float32(1)), 0.25, 1 / 254, 127 / 254, 0.999]
) | st.floats(0, 1, width=32)


@st.composite
def video(draw):
    n = draw(st.integers(1, 4))
    h = draw(st.integers(1, 7))
    w = draw(st.integers(1, 7))
    pred = draw(arrays(np.float32, (n, h, w), elements=probability_values))
    target = draw(arrays(np.uint8, (n, h, w), elements=st.sampled_from([0, 0, 1, 255])))
    if draw(st.booleans()):  # make some frames' targets empty
        target[draw(st.integers(0, n - 1))] = 0
    return pred, target


@settings(max_examples=300, deadline=None)
@given(video())
def test_miou_matches_brute_force(case):
    pred, target = case
    assert miou(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(
        brute_miou(pred, target), rel=1e-6, abs=1e-6
    )


@settings(max_examples=300, deadline=None)
@given(video())
def test_fscore_matches_brute_force(case):
    pred, target = case
    assert fscore(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(
        brute_fscore(pred, target), rel=1e-5, abs=1e-6
    )


@settings(max_examples=100, deadline=None)
@given(video())
def test_bool_prediction_equals_its_zero_one_probabilities(case):
    pred, target = case
    binary = torch.from_numpy(pred > 0.5)
    truth = torch.from_numpy(target)
    assert miou(binary, truth) == miou(binary.float(), truth)
    assert fscore(binary, truth) == fscore(binary.float(), truth)


def reference_style(pred_logits: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """The AVSBench protocol written as its reference functions take it: logits in, float32
    target, one threshold per pass (written from the protocol's description, not copied)."""
    n = pred_logits.shape[0]
    probabilities = torch.sigmoid(pred_logits)
    binary = (probabilities > 0.5).int()
    empty = target.sum(2).sum(1) == 0
    inter = (binary * target).sum(2).sum(1)
    union = torch.max(binary, target).sum(2).sum(1)
    inter[empty] = ((1 - target) * (1 - binary)).sum(2).sum(1)[empty]
    union[empty] = target.shape[1] * target.shape[2]
    iou = float(torch.sum(inter / (union + 1e-7)) / n)
    thresholds = torch.linspace(0, 1 - 1e-10, 255)
    total, frames, score = 0.0, 0, torch.zeros(255)
    for p, y in zip(probabilities, target):
        if torch.mean(y) == 0.0:
            continue
        prec, rec = torch.zeros(255), torch.zeros(255)
        for i in range(255):
            positive = (p >= thresholds[i]).float()
            tp = (positive * y).sum()
            prec[i], rec[i] = tp / (positive.sum() + 1e-20), tp / (y.sum() + 1e-20)
        f = 1.3 * prec * rec / (0.3 * prec + rec)
        f[f != f] = 0
        total = total + f
        frames += 1
        score = total / frames
    return iou, float(score.max())


@pytest.mark.parametrize("seed", range(5))
def test_equals_reference_protocol_on_logits_bit_for_bit(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(5, 24, 24, generator=generator) * 3
    target = (torch.rand(5, 24, 24, generator=generator) > 0.6).float()
    target[seed % 5] = 0  # one empty frame
    probabilities = torch.sigmoid(logits)
    expected_iou, expected_f = reference_style(logits, target)
    # cmsf takes probabilities; the reference takes logits and applies sigmoid itself.
    assert miou(probabilities, target) == expected_iou
    assert fscore(probabilities, target) == expected_f


# ---------------------------------------------------------------- hand-checked edge cases
def test_all_empty_target_and_prediction():
    pred = torch.zeros(5, 4, 4)
    target = torch.zeros(5, 4, 4)
    assert miou(pred, target) == pytest.approx(16 / (16 + 1e-7))
    assert fscore(pred, target) == 0.0  # every frame left out: the reference's 0


def test_all_full():
    pred = torch.ones(3, 4, 4)
    target = torch.ones(3, 4, 4)
    assert miou(pred, target) == pytest.approx(1.0, abs=1e-7)
    assert fscore(pred, target) == pytest.approx(1.0, abs=1e-6)


def test_full_prediction_on_empty_target_scores_zero_iou():
    assert miou(torch.ones(2, 3, 3), torch.zeros(2, 3, 3)) == 0.0


def test_single_pixel():
    target = torch.zeros(1, 5, 5)
    target[0, 2, 2] = 255
    hit = torch.zeros(1, 5, 5)
    hit[0, 2, 2] = 1.0
    assert miou(hit, target) == pytest.approx(1.0, abs=1e-6)
    miss = torch.zeros(1, 5, 5)
    miss[0, 0, 0] = 1.0
    assert miou(miss, target) == 0.0
    # hit with a second false-positive pixel: IoU 1/2; F at the best threshold: P=1/2, R=1
    two = hit.clone()
    two[0, 4, 4] = 1.0
    assert miou(two, target) == pytest.approx(0.5, rel=1e-6)
    assert fscore(two, target) == pytest.approx(1.3 * 0.5 / (0.3 * 0.5 + 1), rel=1e-6)


def test_probability_exactly_half_is_background_for_iou_but_positive_for_fscore():
    target = torch.ones(1, 2, 2)
    pred = torch.full((1, 2, 2), 0.5)
    assert miou(pred, target) == 0.0  # 0.5 > 0.5 is false
    # thresholds up to 0.5 make every pixel positive: P = R = 1
    assert fscore(pred, target) == pytest.approx(1.0, abs=1e-6)


def test_fscore_skips_empty_frames_in_the_average():
    target = torch.zeros(2, 2, 2)
    target[0] = 1
    pred = torch.ones(2, 2, 2)
    curve, frames = fscore_curve(pred, target)
    assert frames == 1
    assert fscore(pred, target) == pytest.approx(1.0, abs=1e-6)
    # the last threshold is 1.0 in float32: a prediction of exactly 1 still counts there
    assert curve[-1] == pytest.approx(1.0, abs=1e-6)


def test_dataset_scores_is_the_mean_over_videos():
    scores = dataset_scores([(1.0, 0.5), (0.0, 0.25), (0.5, 0.0)])
    assert scores.miou == pytest.approx(0.5)
    assert scores.fscore == pytest.approx(0.25)
    assert scores.videos == 3
    with pytest.raises(ValueError, match="per_video"):
        dataset_scores([])


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn", [miou, fscore])
def test_bad_input_is_a_clear_error(fn):
    with pytest.raises(ValueError, match=r"pred: expected Tensor\[N, H, W\]"):
        fn(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.full((1, 2, 2), math.nan), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(torch.full((1, 2, 2), 2.0), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="at least one frame"):
        fn(torch.zeros(0, 2, 2), torch.zeros(0, 2, 2))
    with pytest.raises(ValueError, match="dtype"):
        fn(torch.zeros(1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 2))


# ---------------------------------------------------------------- the variants (score_video, VariantTotals)
from cmsf.metrics import VARIANTS, VariantTotals, frame_ious, score_video  # noqa: E402


def brute_frame_f(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """One frame's F-curve, one threshold at a time (float64 arithmetic on float32 thresholds)."""
    fg = t != 0
    curve = []
    for th in np.linspace(0, 1 - 1e-10, 255).astype(np.float32):
        positive = p.astype(np.float32) >= th
        tp = float(np.sum(positive & fg))
        precision, recall = tp / (positive.sum() + 1e-20), tp / (fg.sum() + 1e-20)
        denominator = 0.3 * precision + recall
        curve.append(0.0 if denominator == 0 else 1.3 * precision * recall / denominator)
    return np.array(curve)


def brute_variants(split: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """The four variants written from their definitions, frame by frame, in plain numpy."""
    ious, f_frames, curves, inter, union = [], [], [], 0, 0
    for pred, target in split:
        for p, t in zip(pred, target):
            ious.append(brute_miou(p[None], t[None]))
            binary, fg = p > 0.5, t != 0
            inter += int(np.sum(binary & fg))
            union += int(np.sum(binary | fg))
            if fg.any():
                curve = brute_frame_f(p, t)
                curves.append(curve)
                f_frames.append(curve.max())
    return {
        "miou_per_frame": float(np.mean(ious)),
        "fscore_per_frame": float(np.mean(f_frames)) if f_frames else None,
        "iou_dataset": inter / union if union else 1.0,
        "fscore_dataset": float(np.max(np.mean(curves, axis=0))) if curves else None,
    }


@st.composite
def split_of_videos(draw):
    """1-3 videos of one frame size (so the split can also be scored as one batch)."""
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    videos = []
    for _ in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 3))
        pred = draw(arrays(np.float32, (n, h, w), elements=probability_values))
        target = draw(arrays(np.uint8, (n, h, w), elements=st.sampled_from([0, 0, 1, 255])))
        if draw(st.booleans()):
            target[draw(st.integers(0, n - 1))] = 0
        videos.append((pred, target))
    return videos


def _approx_or_none(value, expected, rel):
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected, rel=rel, abs=1e-6)


@settings(max_examples=80, deadline=None)
@given(split_of_videos())
def test_variants_match_brute_force_and_the_one_batch_identities(split):
    totals = VariantTotals()
    for pred, target in split:
        scores = score_video(torch.from_numpy(pred), torch.from_numpy(target))
        # AVSBench's two figures are unchanged, bit for bit
        assert scores.miou == miou(torch.from_numpy(pred), torch.from_numpy(target))
        assert scores.fscore == fscore(torch.from_numpy(pred), torch.from_numpy(target))
        totals.add(scores)
    variants = totals.variants()
    assert tuple(variants) == VARIANTS
    expected = brute_variants(split)
    assert variants["miou_per_frame"] == pytest.approx(expected["miou_per_frame"], rel=1e-6, abs=1e-6)
    _approx_or_none(variants["fscore_per_frame"], expected["fscore_per_frame"], 1e-5)
    assert variants["iou_dataset"] == expected["iou_dataset"]  # integer counts: exact
    _approx_or_none(variants["fscore_dataset"], expected["fscore_dataset"], 1e-5)
    # the per-frame mIoU and dataset F-score are AVSBench's functions on the split as one batch
    all_pred = torch.from_numpy(np.concatenate([p for p, _ in split]))
    all_target = torch.from_numpy(np.concatenate([t for _, t in split]))
    assert variants["miou_per_frame"] == miou(all_pred, all_target)
    if variants["fscore_dataset"] is not None:
        assert variants["fscore_dataset"] == fscore(all_pred, all_target)


def test_variants_of_one_video_by_hand():
    """Frame 0: 2 of 4 target pixels hit, 2 false positives; frame 1: empty target, nothing predicted."""
    target = torch.zeros(2, 2, 4)
    target[0, 0] = 1
    pred = torch.zeros(2, 2, 4, dtype=torch.bool)
    pred[0, :, :2] = True
    scores = score_video(pred, target)
    assert scores.intersections.tolist() == [2, 0] and scores.unions.tolist() == [6, 0]
    assert frame_ious(pred, target).tolist() == pytest.approx([2 / 6, 8 / 8], rel=1e-6)
    assert scores.iou_pooled == 2 / 6  # the empty frame adds nothing to either sum
    # frame 0 alone: at threshold 0 every pixel is positive (P = 1/2, R = 1: F = 1.3·0.5/1.15),
    # above it P = R = 1/2 (F = 1/2); the best is the first. Frame 1 (empty target) is left out.
    best = 1.3 * 0.5 / (0.3 * 0.5 + 1)
    assert scores.fscore_per_frame == pytest.approx(best, rel=1e-6)
    totals = VariantTotals()
    totals.add(scores)
    variants = totals.variants()
    assert variants["miou_per_frame"] == pytest.approx((2 / 6 + 1) / 2, rel=1e-6)
    assert variants["fscore_dataset"] == pytest.approx(best, rel=1e-6)


def test_variants_edge_cases_are_defined():
    empty = torch.zeros(3, 4, 4)
    nothing = score_video(torch.zeros(3, 4, 4, dtype=torch.bool), empty)
    assert nothing.fscore == 0.0  # AVSBench's figure for a video without a target
    assert nothing.fscore_per_frame is None and nothing.iou_pooled == 1.0
    totals = VariantTotals()
    totals.add(nothing)
    assert totals.variants()["fscore_dataset"] is None and totals.variants()["fscore_per_frame"] is None
    assert totals.variants()["iou_dataset"] == 1.0  # nothing predicted, nothing to find
    false_alarm = score_video(torch.ones(1, 4, 4, dtype=torch.bool), torch.zeros(1, 4, 4))
    assert false_alarm.iou_pooled == 0.0 and false_alarm.miou == 0.0
    with pytest.raises(ValueError, match="at least one video"):
        VariantTotals().variants()
