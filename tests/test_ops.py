"""nms and bind_filter: properties against brute-force references, and bad input."""

import math

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from cmsf import bind_filter, nms
from cmsf.ops import mask_iou_matrix


# ---------------------------------------------------------------- helpers
def brute_mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 0.0 if union == 0 else np.logical_and(a, b).sum() / union


@st.composite
def masks_and_scores(draw):
    n = draw(st.integers(0, 12))
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    masks = rng.random((n, h, w)) < draw(st.sampled_from([0.2, 0.5, 0.8]))
    if n >= 2 and draw(st.booleans()):
        masks[1] = masks[0]  # exact duplicates
    # ties on purpose: scores from a small set
    scores = np.array([draw(st.sampled_from([0.1, 0.5, 0.9, 0.3])) for _ in range(n)], dtype=np.float32)
    threshold = draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
    return masks, scores, threshold


@st.composite
def boxes_and_scores(draw):
    n = draw(st.integers(0, 30))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, (n, 2))
    wh = rng.uniform(0, 30, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / max(n, 1)  # distinct scores
    threshold = draw(st.sampled_from([0.1, 0.3, 0.5, 0.7]))
    return boxes, scores, threshold


# ---------------------------------------------------------------- mask nms
@settings(max_examples=200, deadline=None)
@given(masks_and_scores())
def test_mask_nms_properties(case):
    masks, scores, threshold = case
    kept = nms(torch.from_numpy(masks), torch.from_numpy(scores), threshold)
    assert kept.dtype == torch.int64
    kept_list = kept.tolist()
    assert len(set(kept_list)) == len(kept_list)
    # highest score first
    assert all(scores[a] >= scores[b] for a, b in zip(kept_list, kept_list[1:]))
    # kept items pairwise IoU <= threshold
    for i, a in enumerate(kept_list):
        for b in kept_list[i + 1 :]:
            assert brute_mask_iou(masks[a], masks[b]) <= threshold + 1e-6
    # every suppressed item overlaps a kept item scoring at least as high above the threshold
    for s in set(range(len(masks))) - set(kept_list):
        assert any(
            scores[k] >= scores[s] and brute_mask_iou(masks[k], masks[s]) > threshold for k in kept_list
        ), f"item {s} was suppressed without cause"


@settings(max_examples=100, deadline=None)
@given(masks_and_scores())
def test_mask_nms_equals_brute_force_greedy(case):
    masks, scores, threshold = case
    order = sorted(range(len(masks)), key=lambda i: (-scores[i], i))
    expected = []
    for i in order:
        if all(brute_mask_iou(masks[i], masks[k]) <= threshold for k in expected):
            expected.append(i)
    assert nms(torch.from_numpy(masks), torch.from_numpy(scores), threshold).tolist() == expected


def test_mask_iou_matrix_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    a = rng.random((7, 9, 11)) < 0.4
    b = rng.random((5, 9, 11)) < 0.6
    a[0] = False  # empty mask
    expected = np.array([[brute_mask_iou(x, y) for y in b] for x in a])
    for chunk in (1, 13, 1 << 16):
        got = mask_iou_matrix(torch.from_numpy(a), torch.from_numpy(b), chunk_pixels=chunk)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- box nms
@settings(max_examples=200, deadline=None)
@given(boxes_and_scores())
def test_box_nms_equals_torchvision(case):
    boxes, scores, threshold = case
    b, s = torch.from_numpy(boxes), torch.from_numpy(scores)
    ours = nms(b, s, threshold)
    assert ours.tolist() == torchvision.ops.nms(b, s, threshold).tolist()
    kept = ours.tolist()
    iou = torchvision.ops.box_iou(b, b)
    for i, a in enumerate(kept):
        for c in kept[i + 1 :]:
            assert iou[a, c] <= threshold


def test_empty_input_gives_empty_result():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert nms(torch.zeros(0, 3, 3, dtype=torch.bool), torch.zeros(0), 0.5).shape == (0,)


def test_nms_bad_input():
    with pytest.raises(ValueError, match="negative-size"):
        nms(torch.tensor([[5.0, 5.0, 1.0, 9.0]]), torch.tensor([1.0]), 0.5)
    with pytest.raises(ValueError, match="scores: contains NaN"):
        nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([math.nan]), 0.5)
    with pytest.raises(ValueError, match=r"scores: expected Tensor\[2\]"):
        nms(torch.zeros(2, 4), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"items: expected Tensor\[N, 4\]"):
        nms(torch.zeros(2, 5), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="bool"):
        nms(torch.zeros(2, 3, 3), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="items"):
        nms(torch.zeros(2), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="NaN or infinite"):
        nms(torch.tensor([[0.0, 0.0, math.inf, 1.0]]), torch.tensor([1.0]), 0.5)
    for bad in (math.nan, True, "0.5", None):
        with pytest.raises(ValueError, match=r"^iou_threshold: expected a number"):
            nms(torch.zeros(2, 4), torch.zeros(2), bad)


def test_nms_iou_threshold_is_a_number_in_0_1():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 3.0], [10.0, 10.0, 12.0, 12.0]])
    masks = torch.zeros(3, 12, 12, dtype=torch.bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        masks[k, y1:y2, x1:x2] = True
    scores = torch.tensor([0.9, 0.8, 0.7])
    for items in (boxes, masks):
        assert nms(items, scores, np.float32(0.5)).tolist() == [0, 2]  # numpy numbers too
        assert nms(items, scores, 1).tolist() == [0, 1, 2]
        assert nms(items, scores, 0).tolist() == [0, 2]  # any overlap suppresses
        for bad in (-1, -1e-9, 1.0000001, math.inf, -math.inf):
            with pytest.raises(ValueError, match=r"^iou_threshold: expected a number in \[0, 1\]"):
                nms(items, scores, bad)


# ---------------------------------------------------------------- bind_filter
@st.composite
def embeddings(draw):
    k = draw(st.integers(0, 8))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    visual = torch.nn.functional.normalize(torch.randn(k, d, generator=generator), dim=-1)
    audio = torch.nn.functional.normalize(torch.randn(d, generator=generator), dim=0) * 20
    return visual, audio


def brute_scores(visual, audio, mode):
    v = visual.double().numpy()
    a = audio.double().numpy()
    if mode == "softmax":
        logits = v @ a
        e = np.exp(logits - logits.max()) if len(logits) else logits
        return e / e.sum() if len(logits) else e
    return np.array([x @ a / max(np.linalg.norm(x) * np.linalg.norm(a), 1e-8) for x in v])


@settings(max_examples=200, deadline=None)
@given(embeddings(), st.sampled_from(["softmax", "cosine"]), st.floats(0, 1))
def test_bind_filter_matches_brute_force(case, mode, threshold):
    visual, audio = case
    keep, scores = bind_filter(visual, audio, threshold, mode)
    expected = brute_scores(visual, audio, mode)
    np.testing.assert_allclose(scores.double().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert keep.dtype == torch.bool and keep.shape == (visual.shape[0],)
    assert keep.tolist() == (scores >= threshold).tolist()


@settings(max_examples=100, deadline=None)
@given(embeddings(), st.sampled_from(["softmax", "cosine"]), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_bind_filter_is_permutation_equivariant(case, mode, threshold, seed):
    visual, audio = case
    perm = torch.randperm(visual.shape[0], generator=torch.Generator().manual_seed(seed))
    keep, scores = bind_filter(visual, audio, threshold, mode)
    keep_p, scores_p = bind_filter(visual[perm], audio, threshold, mode)
    torch.testing.assert_close(scores_p, scores[perm])
    # membership may only differ where a score sits on the threshold within rounding
    differs = keep_p != keep[perm]
    assert bool(((scores[perm][differs] - threshold).abs() < 1e-6).all())


@settings(max_examples=100, deadline=None)
@given(embeddings(), st.sampled_from(["softmax", "cosine"]), st.floats(0, 1), st.floats(0, 1))
def test_bind_filter_is_monotone_in_the_threshold(case, mode, t1, t2):
    visual, audio = case
    low, high = min(t1, t2), max(t1, t2)
    keep_low, _ = bind_filter(visual, audio, low, mode)
    keep_high, _ = bind_filter(visual, audio, high, mode)
    assert bool((keep_high <= keep_low).all())  # kept at high => kept at low


@settings(max_examples=100, deadline=None)
@given(embeddings(), st.floats(0.5, 1, exclude_min=True))
def test_softmax_above_half_keeps_at_most_one(case, threshold):
    visual, audio = case
    keep, _ = bind_filter(visual, audio, threshold, "softmax")
    assert int(keep.sum()) <= 1


def test_bind_filter_empty_and_errors():
    keep, scores = bind_filter(torch.zeros(0, 4), torch.ones(4))
    assert keep.shape == (0,) and scores.shape == (0,)
    with pytest.raises(ValueError, match="threshold"):
        bind_filter(torch.ones(2, 4), torch.ones(4), threshold=1.5)
    with pytest.raises(ValueError, match="threshold"):
        bind_filter(torch.ones(2, 4), torch.ones(4), threshold=-0.1, mode="softmax")
    bind_filter(torch.ones(2, 4), torch.ones(4), threshold=-0.1, mode="cosine")  # valid for cosine
    with pytest.raises(ValueError, match=r"^threshold \(mode 'cosine'\): expected a number in \[-1, 1\], got nan$"):
        bind_filter(torch.ones(2, 4), torch.ones(4), threshold=math.nan, mode="cosine")
    with pytest.raises(ValueError, match=r"^threshold \(mode 'softmax'\): expected a number in \[0, 1\], got True$"):
        bind_filter(torch.ones(2, 4), torch.ones(4), threshold=True)
    keep, _ = bind_filter(torch.eye(2, 4), torch.tensor([1.0, 0, 0, 0]), threshold=np.float32(0.6))  # numpy numbers too
    assert keep.tolist() == [True, False]
    for name in ("logit_scale", "logit_bias"):
        for bad in (math.inf, math.nan, True, "1"):
            with pytest.raises(ValueError, match=rf"^{name}: expected a finite number, got"):
                bind_filter(torch.ones(2, 4), torch.ones(4), 0.5, "calibrated", **{"logit_scale": 1.0, "logit_bias": 0.0, name: bad})
    with pytest.raises(ValueError, match="mode"):
        bind_filter(torch.ones(2, 4), torch.ones(4), mode="dot")
    with pytest.raises(ValueError, match=r"visual_embeddings: expected Tensor\[K, D\]"):
        bind_filter(torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match=r"audio_embedding: expected Tensor\[D\]"):
        bind_filter(torch.ones(2, 4), torch.ones(1, 4))
    with pytest.raises(ValueError, match="same D"):
        bind_filter(torch.ones(2, 4), torch.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        bind_filter(torch.tensor([[math.nan, 1.0]]), torch.ones(2))
