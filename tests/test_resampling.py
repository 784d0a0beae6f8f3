"""cmsf.models.resampling against Pillow itself (through torchvision's PIL transforms, Meta's ImageBind
image transform): bit-equal pixels for images of any shape, slivers and batches of mixed sizes
included; and imagebind_vision_inputs equal whichever resampler it uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import InterpolationMode, transforms
from torchvision.transforms import functional as TF

from cmsf.models.imagebind import imagebind_vision_inputs
from cmsf.models.resampling import (
    axis_weights,
    center_crop_origin,
    pil_resize_center_crop,
    resize_center_crop,
    resize_is_large,
    resized_size,
    vertical_first,
)

SIZE = 224
META = transforms.Compose([transforms.Resize(SIZE, interpolation=InterpolationMode.BICUBIC), transforms.CenterCrop(SIZE)])


def meta(image: torch.Tensor) -> torch.Tensor:
    """Meta's transform on the PIL image (the oracle): ``Tensor[C, 224, 224]`` uint8."""
    return TF.pil_to_tensor(META(TF.to_pil_image(image)))


def random_image(height: int, width: int, seed: int, channels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (channels, height, width), dtype=torch.uint8, generator=generator)
    image[:, : height // 2] //= 4  # some structure: a dark band, so edges are resampled too
    return image


SLIVERS = [(1, 1), (1, 224), (224, 1), (1, 640), (480, 1), (2, 3), (3, 700), (700, 3), (17, 5000), (5, 2)]
REGULAR = [(224, 224), (223, 225), (225, 224), (224, 300), (100, 60), (60, 100), (500, 300), (1080, 1920), (37, 32)]
# around Pillow 13's switch to the vertical pass first (height shrinks by > 2 × the width's pixels)
PASS_ORDER = [(451, 225), (451, 226), (700, 350), (701, 350), (801, 250), (226, 451), (2000, 300)]


@pytest.mark.parametrize("height, width", SLIVERS + REGULAR + PASS_ORDER)
def test_equals_pillow_bit_for_bit(height, width):
    image = random_image(height, width, seed=height * 7919 + width)
    assert torch.equal(resize_center_crop([image], SIZE)[0], meta(image))


def test_a_batch_of_mixed_sizes_equals_each_image_alone():
    images = [random_image(h, w, seed=i) for i, (h, w) in enumerate(SLIVERS[:7] + REGULAR[:-2] + PASS_ORDER[:5])]
    batch = resize_center_crop(images, SIZE)
    assert batch.shape == (len(images), 3, SIZE, SIZE) and batch.dtype == torch.uint8
    for image, out in zip(images, batch):
        assert torch.equal(out, meta(image))
    assert torch.equal(pil_resize_center_crop(images, SIZE), batch)


side = st.one_of(st.integers(1, 4), st.integers(5, 260), st.integers(261, 900))


@settings(max_examples=40, deadline=None)
@given(height=side, width=side, seed=st.integers(0, 2**16), channels=st.sampled_from([1, 3]))
def test_any_shape_equals_pillow(height, width, seed, channels):
    image = random_image(height, width, seed, channels)
    assert torch.equal(resize_center_crop([image], SIZE)[0], meta(image) if channels == 3 else meta(image)[:1])


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 3000),
    width=st.integers(1, 3000),
    size=st.one_of(st.sampled_from([7, 64, 224, 800]), st.integers(1, 1333)),  # ImageBind, MAVL
)
def test_resized_size_is_torchvisions(height, width, size):
    new_height, new_width = resized_size(height, width, size)
    assert [new_height, new_width] == TF._compute_resized_output_size((height, width), [size])
    assert resize_is_large(height, width, size) == (new_height * new_width > 4 * size * size)


@settings(max_examples=30, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), size=st.integers(1, 48))
def test_resized_size_is_the_size_of_torchvisions_resize(height, width, size):
    resized = TF.resize(Image.new("RGB", (width, height)), size)  # Resize(size) on a PIL image
    assert resized_size(height, width, size) == (resized.height, resized.width)


@settings(max_examples=30, deadline=None)
@given(height=st.integers(7, 300), width=st.integers(7, 300))
def test_center_crop_origin_is_torchvisions(height, width):
    index = torch.arange(height * width).reshape(1, height, width)
    first = int(TF.center_crop(index, [7, 7])[0, 0, 0])
    assert center_crop_origin(height, width, 7) == divmod(first, width)


def two_passes(image: np.ndarray, height: int, width: int, vertical_first: bool) -> np.ndarray:
    """Pillow's two 8-bit passes over a whole grey image in a given order, from the per-axis
    weights of cmsf.models.resampling (equal to Pillow's: the tests above)."""

    def horizontal(a: np.ndarray, out: int) -> np.ndarray:
        first, _, weights = axis_weights(torch.tensor([a.shape[1]]), torch.tensor([out]), torch.tensor([0]), out)
        taps = np.minimum(first[0].numpy()[:, None] + np.arange(weights.shape[-1]), a.shape[1] - 1)
        return np.clip(((a[:, taps] * weights[0].numpy().astype(np.int64)).sum(-1) + (1 << 21)) >> 22, 0, 255)

    def vertical(a: np.ndarray, out: int) -> np.ndarray:
        return horizontal(a.T, out).T

    a = image.astype(np.int64)
    steps = [(vertical, height, a.shape[0]), (horizontal, width, a.shape[1])]
    for step, out, current in steps if vertical_first else steps[::-1]:
        if out != current:
            a = step(a, out)
    return a


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 120), st.integers(1, 120), st.integers(1, 120), st.integers(1, 120), st.integers(0, 99))
def test_pass_order_is_the_installed_pillows(height, width, new_height, new_width, seed):
    """Pillow ≥ 13 runs the vertical pass first when the height shrinks by more than twice the
    width's pixels; which order Pillow took shows in the pixels (the first pass rounds to 8 bits)."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BICUBIC)).astype(np.int64)
    order = vertical_first(height, width, new_height, new_width)
    assert np.array_equal(two_passes(image, new_height, new_width, order), pillow)


def test_imagebind_vision_inputs_are_the_same_with_every_resampler():
    images = [random_image(h, w, seed=i) for i, (h, w) in enumerate([(1, 300), (40, 90), (224, 224), (700, 2), (90, 40)])]
    pil = imagebind_vision_inputs(images, resampler="pil")
    assert torch.equal(imagebind_vision_inputs(images, resampler="torch"), pil)
    assert torch.equal(imagebind_vision_inputs(images), pil)  # auto: PIL for some, torch for the slivers
    with pytest.raises(ValueError, match="resampler"):
        imagebind_vision_inputs(images, resampler="cv2")
