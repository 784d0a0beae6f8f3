"""propose_boxes: OWLv2's input as its authors prepare it (grey padding, scikit-image's resize),
large frames without transformers' processor, NMS and the cap on OWLv2 proposals, MAVL without
NMS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from cmsf import load_models, propose_boxes
from cmsf.models.mavl import mavl_detect
from cmsf.stages.proposals import _select_proposals, owl_pixel_values

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def tiny():
    return load_models("tiny", device="cpu")


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


def _scenic_preprocess(image: torch.Tensor, side: int) -> np.ndarray:
    """scenic owl_vit's preprocess_image restated with scipy.ndimage, which scikit-image's
    resize(anti_aliasing=True) calls: /255, grey padding, Gaussian σ = (f − 1)/2 (truncate 4)
    and order-1 zoom with grid_mode, both in mode "mirror" (scikit-image's "reflect")."""
    ndimage = pytest.importorskip("scipy.ndimage")
    array = image.permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    height, width, _ = array.shape
    square = max(height, width)
    padded = np.pad(array, ((0, square - height), (0, square - width), (0, 0)), constant_values=0.5)
    factor = square / side
    sigma = max(0.0, (factor - 1) / 2)
    filtered = ndimage.gaussian_filter(padded, (sigma, sigma, 0), mode="mirror") if sigma > 0 else padded
    zoom = side / square
    return ndimage.zoom(filtered, (zoom, zoom, 1), order=1, mode="mirror", grid_mode=True)


@pytest.mark.parametrize(
    "height, width, side",
    [(40, 100, 96), (100, 40, 96), (300, 170, 64), (224, 224, 240), (17, 5, 32)],
    ids=["wide-shrink", "tall-shrink", "tall-strong-shrink", "square-enlarge", "tiny-enlarge"],
)
def test_owl_input_is_the_authors_grey_padded_antialiased_resize(height, width, side):
    image = _image(height, width)
    ours = owl_pixel_values([image], side, CLIP_MEAN, CLIP_STD, torch.device("cpu"))[0]
    expected = torch.from_numpy(_scenic_preprocess(image, side)).permute(2, 0, 1)
    expected = (expected - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    assert ours.shape == (3, side, side)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)


def test_owl_input_matches_scikit_image_itself():
    transform = pytest.importorskip("skimage.transform")
    image = _image(50, 120, seed=1)
    array = image.permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    padded = np.pad(array, ((0, 70), (0, 0), (0, 0)), constant_values=0.5)
    expected = torch.from_numpy(transform.resize(padded, (96, 96), anti_aliasing=True)).permute(2, 0, 1)
    ours = owl_pixel_values([image], 96, (0, 0, 0), (1, 1, 1), torch.device("cpu"))[0]
    torch.testing.assert_close(ours, expected.float(), rtol=0, atol=1e-5)


def test_owl_padding_is_half_grey_not_black():
    black = torch.zeros(3, 40, 100, dtype=torch.uint8)  # wide: padded below to 100 x 100
    pixels = owl_pixel_values([black], 50, (0, 0, 0), (1, 1, 1), torch.device("cpu"))[0]
    assert float(pixels[:, :15].max()) < 1e-6  # the frame (rows 0-39 → 0-19), away from the edge
    torch.testing.assert_close(pixels[:, 25:], torch.full_like(pixels[:, 25:], 0.5))  # the padding


def test_large_frame_is_prepared_without_transformers_processor(tiny, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("transformers' Owlv2ImageProcessor must not run")

    monkeypatch.setattr(transformers.Owlv2ImageProcessor, "__call__", refuse)
    monkeypatch.setattr(transformers.Owlv2ImageProcessor, "preprocess", refuse)
    frame = _image(1500, 2000, seed=2)
    (proposals,) = propose_boxes([frame], tiny, threshold=0.3)
    assert len(proposals) >= 1
    assert bool((proposals.boxes[:, 0::2] <= 2000).all() and (proposals.boxes[:, 1::2] <= 1500).all())


# ------------------------------------------------------------------------------------------
# NMS and the cap (OWLv2), no NMS (MAVL)
# ------------------------------------------------------------------------------------------


def _iou(a: list[float], b: list[float]) -> float:
    """IoU in float32, as torchvision's NMS computes it (0.3 exactly in float64 is
    float32(0.3) = 0.30000001 there, which suppresses at a threshold of 0.3)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(np.float32(inter) / np.float32(union)) if union > 0 else 0.0


@st.composite
def proposal_sets(draw):
    n = draw(st.integers(1, 40))
    values = draw(st.lists(st.integers(0, 60), min_size=4 * n, max_size=4 * n))
    boxes = []
    for i in range(n):
        x1, y1, w, h = values[4 * i : 4 * i + 4]
        boxes.append([float(x1), float(y1), float(min(100, x1 + w // 2)), float(min(100, y1 + h // 2))])
    scores = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n))
    return torch.tensor(boxes), torch.tensor(scores, dtype=torch.float32) / 1000


@settings(max_examples=150, deadline=None)
@given(proposal_sets(), st.sampled_from([0.3, 0.5, 0.7]), st.integers(1, 10), st.sampled_from([0.0, 0.4]))
def test_nms_and_cap_equal_a_greedy_brute_force(data, nms_threshold, cap, threshold):
    boxes, scores = data
    chosen = _select_proposals(boxes, scores, 100, 100, threshold, True, False, nms_threshold, cap)
    # brute force: usable boxes passing the threshold, best first, greedy suppression, then the cap
    candidates = [
        i for i in range(len(scores))
        if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]
        and boxes[i, 2] - boxes[i, 0] < 98 and boxes[i, 3] - boxes[i, 1] < 98 and scores[i] >= threshold
    ]
    candidates.sort(key=lambda i: -float(scores[i]))
    kept: list[int] = []
    for i in candidates:
        if all(_iou(boxes[i].tolist(), boxes[j].tolist()) <= nms_threshold for j in kept):
            kept.append(i)
    kept = kept[:cap]
    assert len(chosen) == len(kept) <= cap
    assert sorted(chosen.scores.tolist()) == pytest.approx(sorted(float(scores[i]) for i in kept))
    chosen_boxes = chosen.boxes.tolist()
    for a in range(len(chosen_boxes)):
        for b in range(a + 1, len(chosen_boxes)):
            assert _iou(chosen_boxes[a], chosen_boxes[b]) <= nms_threshold + 1e-6


def test_owl_proposals_are_deduplicated_and_capped(tiny):
    images = [_image(48, 80, seed=3), _image(90, 60, seed=4)]
    without = propose_boxes(images, tiny, threshold=0.0, nms_threshold=1.0)
    default = propose_boxes(images, tiny, threshold=0.0)
    strict = propose_boxes(images, tiny, threshold=0.0, nms_threshold=0.02)
    capped = propose_boxes(images, tiny, threshold=0.0, max_proposals=3)
    for all_boxes, deduplicated, fewer, top in zip(without, default, strict, capped):
        for chosen, limit in ((deduplicated, 0.5), (fewer, 0.02)):
            iou = torch.triu(box_iou(chosen.boxes, chosen.boxes), diagonal=1)
            assert float(iou.max()) <= limit + 1e-6
        assert {tuple(b) for b in fewer.boxes.tolist()} <= {tuple(b) for b in all_boxes.boxes.tolist()}
        assert len(top) == 3
        torch.testing.assert_close(top.boxes, deduplicated.boxes[:3])
        torch.testing.assert_close(top.scores, deduplicated.scores[:3])
    assert sum(map(len, strict)) < sum(map(len, without))  # the tiny model's boxes touch their neighbours'


def test_random_mavl_is_seeded_and_proposes_in_image_pixels():
    images = [_image(72, 96, seed=6), _image(72, 96, seed=7)]
    first = propose_boxes(images, load_models("tiny", mavl="random"), threshold=0.5)
    again = propose_boxes(images, load_models("tiny", mavl="random"), threshold=0.5)
    for a, b in zip(first, again):
        torch.testing.assert_close(a.boxes, b.boxes)
        assert len(a) >= 1 and bool((a.scores[:-1] >= a.scores[1:]).all())
        assert bool((a.boxes >= 0).all() and (a.boxes[:, 0::2] <= 96).all() and (a.boxes[:, 1::2] <= 72).all())


def test_mavl_proposals_are_not_suppressed():
    models = load_models("tiny", mavl="random")
    images = [_image(64, 96, seed=5)]
    loose = propose_boxes(images, models, threshold=0.0, drop_full_frame=False, nms_threshold=0.1)
    (boxes, scores), = mavl_detect(images, models.mavl)
    assert len(loose[0]) == models.mavl.config.num_queries  # every query, no NMS whatever nms_threshold
    torch.testing.assert_close(loose[0].scores, scores.sort(descending=True).values)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"nms_threshold": 1.5}, "nms_threshold"), ({"max_proposals": 0}, "max_proposals"),
     ({"max_proposals": 2.5}, "max_proposals")],
)
def test_propose_boxes_rejects_bad_nms_and_cap(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        propose_boxes([_image(32, 32)], tiny, **kwargs)
