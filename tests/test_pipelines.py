"""The three pipelines: composition, evidence consistency, batching; and their shared steps."""

import math

import numpy as np
import pytest
import torch

from cmsf.pipelines import FrameEvidence, masked_crops


def test_masked_crops_cut_the_box_and_black_out_the_rest():
    image = torch.arange(3 * 6 * 8, dtype=torch.int64).reshape(3, 6, 8).remainder(250).add(1).to(torch.uint8)
    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, 1:4, 2:5] = True
    masks[0, 2, 3] = False
    masks[1, 5, 7] = True
    boxes = torch.tensor([[1.5, 0.2, 5.0, 4.0], [7.2, 5.1, 7.9, 5.9]])
    first, second = masked_crops(image, boxes, masks)
    # box 0 covers columns floor(1.5)=1 .. ceil(5.0)-1=4, rows 0 .. 3
    assert first.shape == (3, 4, 4)
    expected = image[:, 0:4, 1:5].clone()
    expected[:, ~masks[0, 0:4, 1:5]] = 0
    assert torch.equal(first, expected)
    assert first.dtype == torch.uint8
    # a sub-pixel box still yields one pixel
    assert second.shape == (3, 1, 1) and torch.equal(second[:, 0, 0], image[:, 5, 7])


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
