"""The three pipelines: composition, evidence consistency, batching; and their shared steps."""

import math

import numpy as np
import pytest
import torch

from cmsf.pipelines import FrameEvidence, masked_crops


def test_masked_crops_equal_pil_crop_of_the_blacked_out_frame():
    """The authors' way: black out everything outside the mask, then PIL's crop(box)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    image = torch.randint(1, 256, (3, 9, 12), dtype=torch.uint8, generator=generator)
    masks = torch.rand(4, 9, 12, generator=generator) > 0.4
    boxes = torch.tensor([[1.5, 0.2, 5.0, 4.0], [2.5, 3.5, 11.4, 8.6], [0.0, 0.0, 12.0, 9.0], [3.3, 2.7, 7.7, 6.2]])
    crops = masked_crops(image, boxes, masks)
    for crop, box, mask in zip(crops, boxes.tolist(), masks):
        blacked = (image * mask).permute(1, 2, 0).numpy()
        expected = np.asarray(Image.fromarray(blacked).crop(tuple(box)))
        assert crop.dtype == torch.uint8
        np.testing.assert_array_equal(crop.permute(1, 2, 0).numpy(), expected)


def test_masked_crops_never_empty():
    image = torch.full((3, 6, 8), 5, dtype=torch.uint8)
    masks = torch.ones(1, 6, 8, dtype=torch.bool)
    (crop,) = masked_crops(image, torch.tensor([[7.2, 5.1, 7.4, 5.3]]), masks)
    assert crop.shape == (3, 1, 1)
    with pytest.raises(ValueError, match="one mask per box"):
        masked_crops(image, torch.zeros(2, 4), masks)


def test_masked_crops_clip_boxes_to_the_image():
    image = torch.full((3, 4, 4), 7, dtype=torch.uint8)
    masks = torch.ones(1, 4, 4, dtype=torch.bool)
    (crop,) = masked_crops(image, torch.tensor([[-3.0, -2.0, 10.0, 9.0]]), masks)
    assert crop.shape == (3, 4, 4) and int(crop.min()) == 7


def test_frame_union_is_the_union_of_kept_masks():
    masks = torch.zeros(3, 4, 5, dtype=torch.bool)
    masks[0, 0, 0] = masks[1, 1, 1] = masks[2, 2, 2] = True
    evidence = FrameEvidence(
        boxes=torch.zeros(3, 4), proposal_scores=torch.zeros(3), masks=masks, kept=torch.tensor([True, False, True])
    )
    union = evidence.union(4, 5)
    assert union.shape == (4, 5)
    assert union.sum() == 2 and union[0, 0] and union[2, 2] and not union[1, 1]
    none = FrameEvidence(boxes=torch.zeros(0, 4), proposal_scores=torch.zeros(0),
                         masks=torch.zeros(0, 4, 5, dtype=torch.bool), kept=torch.zeros(0, dtype=torch.bool))
    assert none.union(4, 5).shape == (4, 5) and not none.union(4, 5).any()
