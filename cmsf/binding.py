"""The BIND step's inputs: masked crops of the proposals, and their ImageBind embeddings next to
those of the audio segments (scored against each other by :func:`cmsf.ops.bind_filter`).

Every crop of a video goes through ImageBind's vision tower in one batch (in chunks of
:data:`CROPS_PER_FORWARD`), every audio segment through its audio tower in another.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from cmsf.imagebind import imagebind_audio_inputs, imagebind_vision_inputs
from cmsf.loading import Models

CROPS_PER_FORWARD = 256
"""Crops per forward of ImageBind's vision tower."""


def masked_crops(image: Tensor, boxes: Tensor, masks: Tensor) -> list[Tensor]:
    """Cut each proposal out of ``image`` with the pixels outside its mask set to black.

    As the authors' OWOD-BIND code does (black out everything outside the mask, then
    ``PIL.Image.crop(box)``): the crop spans columns ``round(x1) .. round(x2) - 1`` and rows
    ``round(y1) .. round(y2) - 1`` (Python's round, as PIL uses), clipped to the image and at
    least one pixel wide and high.

    Args:
        image (Tensor[3, H, W]): uint8.
        boxes (Tensor[K, 4]): pixel (x1, y1, x2, y2) of ``image``.
        masks (Tensor[K, H, W]): bool.

    Returns:
        K ``Tensor[3, h, w]`` uint8 crops, on ``image``'s device.
    """
    height, width = image.shape[-2:]
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"boxes and masks: expected one mask per box, got {boxes.shape[0]} and {masks.shape[0]}")
    masks = masks.to(image.device)
    crops = []
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        left = min(max(round(x1), 0), width - 1)
        top = min(max(round(y1), 0), height - 1)
        right = max(min(round(x2), width), left + 1)
        bottom = max(min(round(y2), height), top + 1)
        region = masks[k, top:bottom, left:right]
        crops.append(image[:, top:bottom, left:right] * region.unsqueeze(0).to(image.dtype))
    return crops


def embed_audio_segments(segments: Sequence[Tensor], sample_rate: int, models: Models) -> Tensor:
    """ImageBind audio embeddings of the T segments in one batch: ``Tensor[T, D]`` float32."""
    features = torch.stack([imagebind_audio_inputs(segment, sample_rate) for segment in segments])
    return models.imagebind.embed_audio(features)


def embed_crops(crops: Sequence[Tensor], models: Models) -> Tensor:
    """ImageBind image embeddings of masked crops: ``Tensor[N, D]`` float32 (N may be 0)."""
    model = models.imagebind
    if len(crops) == 0:
        return torch.zeros(0, model.out_embed_dim)
    pixel_values = imagebind_vision_inputs(list(crops))
    return torch.cat([model.embed_vision(chunk) for chunk in pixel_values.split(CROPS_PER_FORWARD)])
