"""How many images SAM's image encoder takes per forward: from the activation memory one image
needs (computed from the model's config) and the free memory of the device.

SAM and SAM-HQ (ViT-B/L/H) run some encoder layers with global attention over all
``N = (image_size / patch_size)²`` patch tokens (4096 at 1024 px) and add a decomposed
relative-position bias ``[B, heads, N, N]``; for ViT-H (16 heads) that is 1 GiB per image for each
float32 tensor of that shape, so a fixed chunk of 8 frames does not fit a 24 GB GPU. SAM 2 / 2.1
and EdgeTAM attend without such a bias (through ``scaled_dot_product_attention``), so their chunk
stays :data:`MAX_IMAGES_PER_FORWARD`.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = [
    "FREE_MEMORY_FRACTION",
    "MAX_IMAGES_PER_FORWARD",
    "free_device_memory",
    "images_per_forward",
    "sam_encoder_bytes_per_image",
]

MAX_IMAGES_PER_FORWARD = 8
"""Images per forward of the image encoder at most (and always on the CPU)."""

FREE_MEMORY_FRACTION = 0.7
"""The share of the free GPU memory one encoder chunk may take (the rest: the decoder, the other
stages' tensors, allocator fragmentation)."""


def sam_encoder_bytes_per_image(vision_config: Any, dtype: torch.dtype) -> int:
    """Peak activation memory of one image in a global-attention layer of SAM's ViT image encoder
    (``SamVisionConfig`` / ``SamHQVisionConfig``: ``image_size``, ``patch_size``, ``hidden_size``,
    ``num_attention_heads``, ``mlp_dim``), in bytes::

        N = (image_size / patch_size)²                         tokens (4096 at 1024 / 16)
        scores = heads · N²                                    one [heads, N, N] tensor
        bytes = scores · s + N · (6 · hidden_size + mlp_dim) · e

    with ``e`` the element size of ``dtype`` (4 for float32, 2 for bfloat16) and ``s`` the bytes per
    score alive at once in transformers' ``SamVisionAttention`` (the eager path; the SDPA path
    holds less): ``q·kᵀ``, the relative-position bias and their sum (3 · e), then the bias, the
    sum and the float32 softmax with its cast back to ``dtype`` (2 · e + 4 + e when ``e`` < 4):
    ``s = 12`` in float32, ``s = 10`` in bfloat16. The second term is the layer's token tensors
    (hidden states, q/k/v, the attention output, the MLP's hidden layer). ViT-H at 1024 px:
    16 · 4096² · 12 B + 4096 · (6 · 1280 + 5120) · 4 B = 3.43 GB (3.2 GiB) per image in float32,
    2.79 GB (2.6 GiB) in bfloat16.
    """
    tokens = (int(vision_config.image_size) // int(vision_config.patch_size)) ** 2
    element = torch.empty((), dtype=dtype).element_size()
    per_score = 3 * element if element >= 4 else 3 * element + 4
    scores = int(vision_config.num_attention_heads) * tokens * tokens
    mlp_dim = getattr(vision_config, "mlp_dim", None) or 4 * int(vision_config.hidden_size)
    return scores * per_score + tokens * (6 * int(vision_config.hidden_size) + int(mlp_dim)) * element


def images_per_forward(
    bytes_per_image: int,
    free_bytes: Optional[int],
    *,
    fraction: float = FREE_MEMORY_FRACTION,
    most: int = MAX_IMAGES_PER_FORWARD,
) -> int:
    """Images per encoder forward: ``most`` when ``free_bytes`` is None (the CPU), else as many as
    fit ``fraction · free_bytes`` at ``bytes_per_image`` each, between 1 and ``most``.

    Raises:
        ValueError: ``bytes_per_image`` or ``most`` below 1, ``free_bytes`` negative, or
            ``fraction`` outside (0, 1].
    """
    if bytes_per_image < 1 or most < 1:
        raise ValueError(f"bytes_per_image and most: expected ≥ 1, got {bytes_per_image} and {most}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: expected a number in (0, 1], got {fraction}")
    if free_bytes is None:
        return most
    if free_bytes < 0:
        raise ValueError(f"free_bytes: expected ≥ 0 or None, got {free_bytes}")
    return max(1, min(most, int(free_bytes * fraction) // bytes_per_image))


def free_device_memory(device: torch.device) -> Optional[int]:
    """Bytes a new tensor on ``device`` can take: CUDA's free memory plus what PyTorch's caching
    allocator holds unused; None for any other device (no limit is derived there)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free) + int(torch.cuda.memory_reserved(device)) - int(torch.cuda.memory_allocated(device))
