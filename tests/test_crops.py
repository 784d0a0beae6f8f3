"""masked_crops: the authors' blurred background (OpenCV GaussianBlur((21, 21), 0)) against a
direct computation, the black background of the ImageBind-SAM demo, and the crop rectangles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cmsf import masked_crops
from cmsf.stages.binding import _fixed_point_taps, blurred_region


def _opencv_gaussian_blur_direct(image: np.ndarray) -> np.ndarray:
    """cv2.GaussianBlur(image, (21, 21), 0) by its definition, in float64: σ = 0.3·((21 − 1)·0.5
    − 1) + 0.8, separable, BORDER_REFLECT_101 (numpy's "reflect", repeated for small images),
    rounded to the nearest grey level. OpenCV itself works in 8-bit fixed point, within a grey
    level or two of this."""
    sigma = 0.3 * ((21 - 1) * 0.5 - 1) + 0.8
    assert sigma == pytest.approx(3.5)
    x = np.arange(21) - 10
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (10, 10)
        padded = np.pad(out, pad, mode="reflect")
        length = out.shape[axis]
        out = sum(kernel[i] * np.take(padded, np.arange(i, i + length), axis=axis) for i in range(21))
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).contiguous().numpy()


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


def test_fixed_point_kernel_is_the_gaussian_of_sigma_3_5_in_256ths():
    taps = _fixed_point_taps(21)
    assert sum(taps) == 256 and taps == taps[::-1]
    gaussian = [math.exp(-((i - 10) ** 2) / (2 * 3.5**2)) for i in range(21)]
    for tap, weight in zip(taps, gaussian):
        assert abs(tap - 256 * weight / sum(gaussian)) <= 1.0


@pytest.mark.parametrize("height, width", [(64, 80), (7, 30), (3, 3), (1, 12)])
def test_blur_is_within_two_grey_levels_of_the_direct_computation(height, width):
    image = _image(height, width)
    ours = blurred_region(image, 0, 0, height, width)
    expected = torch.from_numpy(_opencv_gaussian_blur_direct(_hwc(image))).permute(2, 0, 1)
    difference = (ours.int() - expected.int()).abs()
    assert int(difference.max()) <= 2


@pytest.mark.parametrize("height, width", [(64, 80), (7, 30), (3, 3), (1, 1)])
def test_blur_is_bit_exact_with_opencv(height, width):
    cv2 = pytest.importorskip("cv2")
    image = _image(height, width, seed=1)
    expected = torch.from_numpy(cv2.GaussianBlur(_hwc(image), (21, 21), 0)).permute(2, 0, 1)
    assert torch.equal(blurred_region(image, 0, 0, height, width), expected)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.data())
def test_a_region_of_the_blur_equals_the_blurred_frame_cut(height, width, data):
    image = _image(height, width, seed=height * 41 + width)
    top = data.draw(st.integers(0, height - 1))
    left = data.draw(st.integers(0, width - 1))
    bottom = data.draw(st.integers(top + 1, height))
    right = data.draw(st.integers(left + 1, width))
    full = blurred_region(image, 0, 0, height, width)
    assert torch.equal(blurred_region(image, top, left, bottom, right), full[:, top:bottom, left:right])


def _boxes_and_masks(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.tensor([[4.4, 6.6, 40.5, 30.2], [0.0, 0.0, float(width), float(height)], [50.2, 20.4, 51.1, 22.6]])
    ys = torch.arange(height).view(-1, 1).float()
    xs = torch.arange(width).view(1, -1).float()
    masks = torch.stack([
        ((xs - 20) ** 2 / 200 + (ys - 18) ** 2 / 80) <= 1,
        (xs + ys) % 7 < 3,
        torch.zeros(height, width, dtype=torch.bool),
    ])
    return boxes, masks


def test_blur_crops_equal_the_authors_composite_then_pil_crop():
    height, width = 48, 64
    image = _image(height, width, seed=2)
    boxes, masks = _boxes_and_masks(height, width)
    crops = masked_crops(image, boxes, masks)  # background="blur" by default
    frame = _hwc(image)
    blurred = _opencv_gaussian_blur_direct(frame)
    exact = blurred_region(image, 0, 0, height, width).permute(1, 2, 0).numpy()
    for crop, box, mask in zip(crops, boxes.tolist(), masks.numpy()):
        for background, tolerance in ((blurred, 2), (exact, 0)):
            composite = Image.fromarray(np.where(mask[..., None], frame, background))
            expected = torch.from_numpy(np.array(composite.crop(box))).permute(2, 0, 1)
            assert crop.shape == expected.shape
            assert int((crop.int() - expected.int()).abs().max()) <= tolerance
    inside = masks[0, 7:30, 4:40]
    assert torch.equal(crops[0][:, inside], image[:, 7:30, 4:40][:, inside])  # the frame kept inside


def test_black_crops_zero_outside_the_mask():
    height, width = 48, 64
    image = _image(height, width, seed=3) | 1  # no black pixel of its own
    boxes, masks = _boxes_and_masks(height, width)
    for crop, box, mask in zip(masked_crops(image, boxes, masks, background="black"), boxes.tolist(), masks):
        composite = Image.fromarray(np.where(mask.numpy()[..., None], _hwc(image), 0).astype(np.uint8))
        assert torch.equal(crop, torch.from_numpy(np.array(composite.crop(box))).permute(2, 0, 1))
    assert masked_crops(image, boxes[:0], masks[:0]) == []


def test_masked_crops_rejects_an_unknown_background():
    image = _image(8, 8)
    with pytest.raises(ValueError, match="background: expected one of blur, black"):
        masked_crops(image, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.ones(1, 8, 8, dtype=torch.bool), background="grey")
