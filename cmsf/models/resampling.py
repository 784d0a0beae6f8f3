"""Pillow's bicubic resize of the shorter side followed by a centre crop (torchvision's
``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` on a PIL image, ImageBind's image transform),
re-done in torch: bit-exact, batched over images of any sizes, on any device, and computing only
the ``size × size`` pixels that survive the crop.

How Pillow resamples an 8-bit image (``libImaging/Resample.c``), reproduced step by step:

1. per axis, for each output index ``i``: ``scale = in / out``, ``filterscale = max(scale, 1)``,
   ``support = 2 · filterscale`` (bicubic, a = −0.5), ``center = (i + 0.5) · scale``; the window
   is source indices ``xmin = int(center − support + 0.5)`` (≥ 0) to ``int(center + support +
   0.5)`` (≤ in); the weights ``bicubic((x − center + 0.5) / filterscale)`` are summed in order
   and divided by their sum, all in float64, then made 22-bit fixed point (``int(w · 2²² ±
   0.5)``, rounding half away from zero);
2. horizontal pass, then vertical (vertical first, from Pillow 13 on, when the height shrinks by
   more than twice as many pixels as the width: :func:`vertical_first`): ``2²¹ + Σ pixel ·
   weight`` in integers, shifted right by 22 bits and clipped to 0…255; the first pass's result
   is stored as 8-bit, so the order shows in the pixels.

Each output pixel depends only on its own windows, so the crop's pixels are computed from the same
weights as the full resize computes them, without the rest: a 1-pixel-high sliver that the full
transform resizes to 224 × 50 176 pixels costs here what any other crop costs. Integer sums are
exact in any order, so the result does not depend on the device or on batching. The weights are
computed on the CPU in float64 with the same operations in the same order as Pillow's C code
(which x86-64 builds compile without fused multiply-adds; the tests compare with the installed
Pillow, bit for bit).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import PIL
import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

PRECISION_BITS = 22
"""Fractional bits of Pillow's fixed-point weights for 8-bit images (``32 − 8 − 2``)."""

PILLOW_VERTICAL_FIRST = int(PIL.__version__.split(".")[0]) >= 13
"""Whether the installed Pillow may run the vertical pass first (see :func:`vertical_first`)."""

BICUBIC_SUPPORT = 2.0
BICUBIC_A = -0.5

_ELEMENTS_PER_CHUNK = 1 << 24
"""Images are processed in chunks whose horizontal-pass buffer holds at most this many values."""


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)`` output ``(height, width)``: the shorter side becomes
    ``size``, the longer ``int(size · long / short)`` (a float division, truncated)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def center_crop_origin(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's ``CenterCrop(size)`` of a ``height × width`` image (both ≥ ``size``): the
    ``(top, left)`` of the kept window, ``int(round((side − size) / 2))`` (Python's round)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def _bicubic(x: Tensor) -> Tensor:
    """Pillow's ``bicubic_filter`` (a = −0.5) on float64, term by term in its order."""
    x = x.abs()
    near = ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * BICUBIC_A
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def axis_weights(in_sizes: Tensor, out_sizes: Tensor, starts: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pillow's windows and fixed-point weights along one axis, for output indices
    ``starts[n] … starts[n] + length − 1`` of a resize of ``in_sizes[n]`` to ``out_sizes[n]``.

    Args:
        in_sizes, out_sizes, starts (Tensor[N]): int64, on the CPU.

    Returns:
        ``(first, count, weights)``: ``first`` and ``count`` (``Tensor[N, length]`` int64) the
        first source index and the number of source pixels of each output's window; ``weights``
        (``Tensor[N, length, K]`` int32) the 22-bit weights, 0 past ``count``.
    """
    scale = in_sizes.double() / out_sizes.double()
    filterscale = torch.clamp(scale, min=1.0)
    support = BICUBIC_SUPPORT * filterscale
    taps = int(torch.ceil(support).max()) * 2 + 1 if len(in_sizes) else 1
    index = starts[:, None] + torch.arange(length, dtype=torch.int64)
    center = (index.double() + 0.5) * scale[:, None]
    first = torch.trunc(center - support[:, None] + 0.5).long().clamp(min=0)
    last = torch.minimum(torch.trunc(center + support[:, None] + 0.5).long(), in_sizes[:, None])
    count = last - first
    tap = torch.arange(taps, dtype=torch.int64)
    position = (first[..., None] + tap).double()
    weights = _bicubic(((position - center[..., None]) + 0.5) * (1.0 / filterscale)[:, None, None])
    weights = torch.where(tap < count[..., None], weights, torch.zeros_like(weights))
    total = torch.zeros_like(center)
    for t in range(taps):  # summed in order, as Pillow does
        total = total + weights[..., t]
    weights = torch.where(total[..., None] != 0.0, weights / total[..., None], weights)
    scaled = weights * float(1 << PRECISION_BITS)
    fixed = torch.where(scaled < 0, torch.trunc(scaled - 0.5), torch.trunc(scaled + 0.5))
    return first, count, fixed.to(torch.int32)


def _clip8(values: Tensor) -> Tensor:
    """Pillow's ``clip8``: the integer sum shifted right by 22 bits (rounding down), in 0…255."""
    return torch.clamp(values >> PRECISION_BITS, 0, 255)


def vertical_first(height: int, width: int, new_height: int, new_width: int) -> bool:
    """Whether Pillow resizes ``height × width`` to ``new_height × new_width`` with the vertical
    pass first: from Pillow 13 on when the height shrinks by more than twice as many pixels as
    the width (python-pillow/Pillow#9549, a speed-up; the 8-bit result between the passes makes
    the order visible in the pixels), never before. Checked against the installed Pillow by the
    tests."""
    return PILLOW_VERTICAL_FIRST and new_height < height and height - new_height > 2 * (width - new_width)


def resize_center_crop(images: Sequence[Tensor], size: int) -> Tensor:
    """``CenterCrop(size)(Resize(size, BICUBIC)(to_pil_image(image)))`` for each image, bit for bit.

    Args:
        images: ``Tensor[C, h, w]`` uint8 (any sizes, any ``C``), all on one device.
        size: the resize target of the shorter side and the side of the crop.

    Returns:
        ``Tensor[N, C, size, size]`` uint8 on the images' device.

    The weights of every image are computed at once on the CPU (float64); the pixel passes run
    on the images' device on groups of images of similar cost (sorted by the source rows and
    taps each needs, so that little padding is computed), each group a handful of batched
    gathers: no per-image host-device transfer. An image Pillow resizes vertically first
    (:func:`vertical_first`) goes through the same passes transposed.
    """
    if len(images) == 0:
        raise ValueError("images: expected at least one image")
    shapes = [(int(image.shape[1]), int(image.shape[2])) for image in images]
    resized = [resized_size(h, w, size) for h, w in shapes]
    origins = [center_crop_origin(h, w, size) for h, w in resized]
    transposed = [vertical_first(h, w, *new) for (h, w), new in zip(shapes, resized)]
    # each image oriented so that its first pass runs along its columns (horizontal)
    oriented = [image.transpose(1, 2) if flip else image for image, flip in zip(images, transposed)]

    def axis(picks: list[int]) -> _Axis:
        """Weights along axis ``picks[n]`` (0: rows, 1: columns of the original image n)."""
        return _Axis(*axis_weights(
            torch.tensor([shape[p] for shape, p in zip(shapes, picks)], dtype=torch.int64),
            torch.tensor([new[p] for new, p in zip(resized, picks)], dtype=torch.int64),
            torch.tensor([origin[p] for origin, p in zip(origins, picks)], dtype=torch.int64),
            size,
        ))  # fmt: skip

    rows = axis([int(flip) for flip in transposed])  # the oriented images' rows: the second pass
    cols = axis([1 - int(flip) for flip in transposed])  # their columns: the first pass
    row0 = rows.first[:, 0]
    rows_needed = (rows.first + rows.count).amax(dim=1) - row0
    cost = (rows_needed * cols.count.amax(dim=1)).tolist()
    out = torch.empty(len(images), int(images[0].shape[0]), size, size, dtype=torch.uint8, device=images[0].device)
    row_elements = int(images[0].shape[0]) * size
    for group in _groups(sorted(range(len(images)), key=lambda n: cost[n]), cost, rows_needed.tolist(), row_elements):
        index = torch.tensor(group, dtype=torch.int64)
        pixels = _passes([oriented[n] for n in group], rows.take(index), cols.take(index), size)
        flips = torch.tensor([transposed[n] for n in group], device=pixels.device)[:, None, None, None]
        out[index.to(out.device)] = torch.where(flips, pixels.transpose(2, 3), pixels)
    return out


class _Axis:
    """One axis's windows and weights (see :func:`axis_weights`), ``Tensor[N, size(, K)]``."""

    def __init__(self, first: Tensor, count: Tensor, weights: Tensor) -> None:
        self.first, self.count, self.weights = first, count, weights

    def take(self, index: Tensor) -> "_Axis":
        """The rows ``index`` of each tensor, the weights cut to the taps those rows use."""
        count = self.count[index]
        taps = max(int(count.max()), 1)
        return _Axis(self.first[index], count, self.weights[index, :, :taps])


def _groups(order: list[int], cost: list[int], rows: list[int], row_elements: int) -> list[list[int]]:
    """Consecutive images of ``order`` (sorted by ``cost``) in groups whose padded cost (size ×
    the largest cost) stays within 1.5 × their total cost and whose horizontal-pass buffer
    (Σ rows × ``row_elements``, padded) stays within :data:`_ELEMENTS_PER_CHUNK`."""
    groups: list[list[int]] = []
    group: list[int] = []
    total = 0
    for n in order:
        largest_rows = max([rows[m] for m in group] + [rows[n]])
        if group and (
            (len(group) + 1) * cost[n] > 1.5 * (total + cost[n])
            or (len(group) + 1) * largest_rows * row_elements > _ELEMENTS_PER_CHUNK
        ):
            groups.append(group)
            group, total = [], 0
        group.append(n)
        total += cost[n]
    groups.append(group)
    return groups


def _passes(images: Sequence[Tensor], rows: _Axis, cols: _Axis, size: int) -> Tensor:
    """Pillow's two passes over the kept window of each image: ``Tensor[N, C, size, size]`` uint8."""
    device = images[0].device
    channels = int(images[0].shape[0])
    heights = torch.tensor([int(image.shape[1]) for image in images], dtype=torch.int64)
    widths = torch.tensor([int(image.shape[2]) for image in images], dtype=torch.int64)
    row0 = rows.first[:, 0]
    needed = int(((rows.first + rows.count).amax(dim=1) - row0).max())
    lengths = heights * widths
    offsets = torch.cumsum(lengths, 0) - lengths
    source_rows = torch.minimum(row0[:, None] + torch.arange(needed), heights[:, None] - 1)  # [N, R]
    row_starts = (offsets[:, None] + source_rows * widths[:, None]).to(device)  # flat index of each row
    columns = torch.minimum(cols.first[:, :, None] + torch.arange(cols.weights.shape[-1]), widths[:, None, None] - 1)
    columns, col_weights = columns.to(device), cols.weights.to(device)
    flat = torch.cat([image.reshape(channels, -1) for image in images], dim=1).to(torch.int32)  # [C, Σ h·w]

    half = 1 << (PRECISION_BITS - 1)
    acc = torch.full((channels, len(images), needed, size), half, dtype=torch.int32, device=device)
    for t in range(col_weights.shape[-1]):  # horizontal pass over the needed rows: [C, N, R, size]
        index = (row_starts[:, :, None] + columns[:, None, :, t]).reshape(-1)
        taps = torch.index_select(flat, 1, index).view(acc.shape)
        acc.addcmul_(taps, col_weights[None, :, None, :, t])
    horizontal = _clip8(acc)

    relative = (rows.first - row0[:, None]).to(device)  # [N, size]
    row_weights = rows.weights.to(device)
    acc = torch.full((channels, len(images), size, size), half, dtype=torch.int32, device=device)
    for t in range(row_weights.shape[-1]):  # vertical pass: [C, N, size, size]
        index = torch.clamp(relative + t, max=needed - 1)[None, :, :, None].expand(channels, -1, -1, size)
        acc.addcmul_(torch.gather(horizontal, 2, index), row_weights[None, :, :, t, None])
    return _clip8(acc).to(torch.uint8).permute(1, 0, 2, 3)


def pil_resize_center_crop(images: Sequence[Tensor], size: int) -> Tensor:
    """The reference: each ``Tensor[C, h, w]`` uint8 (CPU) converted to a PIL image, torchvision's
    ``Resize(size, BICUBIC)`` and ``CenterCrop(size)`` on it, back to ``Tensor[N, C, size, size]``
    uint8. From 8 images on, the resizes run on a thread pool (PIL releases the GIL while
    resampling); the result does not depend on it."""

    def one(image: Tensor) -> Tensor:
        pil = TF.resize(TF.to_pil_image(image), size, interpolation=InterpolationMode.BICUBIC)
        return TF.pil_to_tensor(TF.center_crop(pil, size))

    if len(images) >= 8 and (os.cpu_count() or 1) > 1:
        with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:
            return torch.stack(list(pool.map(one, images)))
    return torch.stack([one(image) for image in images])


def resize_is_large(height: int, width: int, size: int, factor: float = 4.0) -> bool:
    """Whether the full resize of a ``height × width`` image (before the centre crop) has more
    than ``factor`` times the pixels of the crop: a thin image, where computing only the crop
    pays most."""
    new_height, new_width = resized_size(height, width, size)
    return new_height * new_width > factor * size * size


__all__ = [
    "axis_weights", "center_crop_origin", "pil_resize_center_crop", "resize_center_crop", "resize_is_large", "resized_size",
]  # fmt: skip
