"""The SAM image-encoder chunk: per-image activation memory from the config, the chunk as a pure
function of it and the free memory, and masks that do not depend on the chunk."""

from __future__ import annotations

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

import cmsf.stages.segmentation as segmentation
from cmsf.models.loading import load_models
from cmsf.models.memory import (
    MAX_IMAGES_PER_FORWARD,
    free_device_memory,
    images_per_forward,
    sam_encoder_bytes_per_image,
)
from cmsf.models.random_models import random_config

GIB = 1 << 30


def test_vit_h_needs_3_2_gib_an_image_in_float32_and_2_6_in_bfloat16():
    vision = random_config("sam", "paper").vision_config  # facebook/sam-vit-huge's vision config
    assert (vision.image_size, vision.patch_size, vision.num_attention_heads) == (1024, 16, 16)
    scores = 16 * 4096**2
    assert sam_encoder_bytes_per_image(vision, torch.float32) == scores * 12 + 4096 * (6 * 1280 + 5120) * 4
    assert sam_encoder_bytes_per_image(vision, torch.bfloat16) == scores * 10 + 4096 * (6 * 1280 + 5120) * 2
    assert round(sam_encoder_bytes_per_image(vision, torch.float32) / GIB, 1) == 3.2


def test_the_score_term_is_the_attention_tensor_of_transformers_global_layer():
    """heads · N² is the size of the [B·heads, N, N] scores transformers' eager attention returns."""
    config = transformers.SamVisionConfig(image_size=128, patch_size=16, hidden_size=32, num_attention_heads=2, mlp_dim=64,
                                num_hidden_layers=1, global_attn_indexes=[0], output_channels=16)  # fmt: skip
    config._attn_implementation = "eager"
    attention = transformers.models.sam.modeling_sam.SamVisionAttention(config, window_size=0).eval()
    side = 128 // 16
    with torch.no_grad():
        _, weights = attention(torch.randn(3, side, side, 32))
    assert weights.numel() == 3 * 2 * side**4
    element = 4
    assert sam_encoder_bytes_per_image(config, torch.float32) == (
        weights.numel() // 3 * 3 * element + side**2 * (6 * 32 + 64) * element
    )


@given(
    per_image=st.integers(1, 1 << 34),
    free=st.one_of(st.none(), st.integers(0, 1 << 38)),
    fraction=st.floats(0.05, 1.0),
    most=st.integers(1, 16),
)
def test_images_per_forward_is_the_largest_chunk_that_fits(per_image, free, fraction, most):
    chunk = images_per_forward(per_image, free, fraction=fraction, most=most)
    if free is None:
        assert chunk == most
        return
    fitting = [k for k in range(1, most + 1) if k * per_image <= int(free * fraction)]
    assert chunk == (max(fitting) if fitting else 1)


def test_a_24_gb_gpu_holds_the_default_chunk_of_vit_h_in_float32():
    """24 GB less the paper's weights in float32 (parameters counted from the paper-random configs:
    SAM ViT-H 2.39 GiB, ImageBind huge's two towers 2.68, OWLv2 B/16 0.58, AST 0.32,
    GroundingDINO-T 0.64) and 0.5 GiB of CUDA context."""
    total = 24e9
    weights = (2.39 + 2.68 + 0.58 + 0.32 + 0.64 + 0.5) * GIB
    per_image = sam_encoder_bytes_per_image(random_config("sam", "paper").vision_config, torch.float32)
    chunk = images_per_forward(per_image, int(total - weights))
    assert chunk == 3 and weights + chunk * per_image < total
    assert images_per_forward(per_image, int(80e9 - weights)) == MAX_IMAGES_PER_FORWARD


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="bytes_per_image"):
        images_per_forward(0, 10)
    with pytest.raises(ValueError, match="fraction"):
        images_per_forward(1, 10, fraction=0.0)
    with pytest.raises(ValueError, match="free_bytes"):
        images_per_forward(1, -1)
    assert free_device_memory(torch.device("cpu")) is None


def test_sam_masks_do_not_depend_on_the_chunk(monkeypatch):
    models = load_models("tiny", device="cpu")
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8, generator=g) for _ in range(5)]
    boxes = [torch.tensor([[2.0, 3.0, 30.0, 20.0 + i]]) for i in range(5)]
    assert segmentation.encoder_chunk(models.sam.model, "sam", models.device) == MAX_IMAGES_PER_FORWARD
    whole = segmentation.sam_masks(images, models, boxes=boxes)
    monkeypatch.setattr(segmentation, "encoder_chunk", lambda model, family, device: 2)
    chunked = segmentation.sam_masks(images, models, boxes=boxes)
    for a, b in zip(whole, chunked):
        assert torch.equal(a.masks, b.masks)
        torch.testing.assert_close(a.iou_scores, b.iou_scores, rtol=0, atol=1e-6)
