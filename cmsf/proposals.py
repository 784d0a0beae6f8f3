"""Class-agnostic box proposals from OWLv2's objectness head: the OWOD step of OWOD-BIND
(images → boxes with objectness).

Conventions (as in the rest of cmsf): images are a list of ``Tensor[3, H, W]`` uint8 or PIL
images, or one ``Tensor[B, 3, H, W]`` uint8; boxes are ``Tensor[K, 4]`` float32 in pixel
(x1, y1, x2, y2) of the image they belong to, in continuous coordinates (pixel ``i`` covers
``[i, i + 1)``). The model runs under ``torch.inference_mode()`` on ``models.device`` in
``models.dtype``; results are on ``models.device`` (scores and boxes in float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_convert, clip_boxes_to_image

from cmsf.checks import check_unit
from cmsf.loading import Models, check_models
from cmsf.inputs import Images, as_image_list

@dataclass(frozen=True)
class Proposals:
    """Class-agnostic box proposals in one image.

    Attributes:
        boxes: ``Tensor[K, 4]`` float32, pixel (x1, y1, x2, y2) of the image, clipped to it.
        scores: ``Tensor[K]`` float32 objectness in [0, 1], highest first.
    """

    boxes: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _owl_boxes_to_pixels(boxes: Tensor, height: int, width: int) -> Tensor:
    """OWLv2 boxes → pixel (x1, y1, x2, y2) of the input image.

    Args:
        boxes: ``Tensor[N, 4]`` normalised (cx, cy, w, h) as OWLv2 predicts them: relative to the
            square the processor padded the image to (bottom/right padding to side max(H, W))
            before resizing.
        height, width: the input image's size.

    Returns:
        ``Tensor[N, 4]`` float32: the corners scaled by max(H, W), clipped to [0, W] × [0, H].
    """
    side = float(max(height, width))
    corners = box_convert(boxes.to(torch.float32), in_fmt="cxcywh", out_fmt="xyxy") * side
    return clip_boxes_to_image(corners, (height, width))


_FULL_FRAME = 0.98  # a box spanning ≥ 98 % of the frame's width or height is "the whole frame"


def _select_proposals(
    boxes: Tensor,
    scores: Tensor,
    height: int,
    width: int,
    threshold: float,
    drop_full_frame: bool,
    keep_best_if_none: bool,
) -> Proposals:
    """Choose among one image's pixel boxes ``Tensor[N, 4]`` (clipped to the image) and
    objectness ``Tensor[N]``: boxes of zero width or height (e.g. predicted inside OWLv2's
    padding and clipped away) are never proposals; see :func:`propose_boxes` for the rest."""
    box_width, box_height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    non_empty = (box_width > 0) & (box_height > 0)
    usable = non_empty
    if drop_full_frame:
        usable = usable & (box_width < _FULL_FRAME * width) & (box_height < _FULL_FRAME * height)
    keep = usable & (scores >= threshold)
    if keep_best_if_none and not bool(keep.any()) and bool(non_empty.any()):
        # the best usable box; the best box at all when every box spans the frame (as the
        # authors' code falls back to its top detection)
        candidates = usable if bool(usable.any()) else non_empty
        masked = torch.where(candidates, scores, torch.full_like(scores, -1.0))
        keep = torch.zeros_like(keep)
        keep[masked.argmax()] = True
    index = torch.nonzero(keep).flatten()
    order = index[torch.sort(scores[index], descending=True, stable=True).indices]
    return Proposals(boxes[order], scores[order])


def propose_boxes(
    images: Images,
    models: Models,
    threshold: float = 0.5,
    drop_full_frame: bool = True,
    keep_best_if_none: bool = True,
) -> list[Proposals]:
    """Class-agnostic box proposals from OWLv2's objectness head (the OWOD step of OWOD-BIND).

    One batched forward of OWLv2's vision tower (its text tower is never run); every patch
    token predicts a box (box head) and an objectness logit (objectness head).

    Args:
        images: a list of ``Tensor[3, H, W]`` uint8 or PIL images (sizes may differ), or one
            ``Tensor[B, 3, H, W]`` uint8.
        models: the loaded models (uses ``models.owlv2``).
        threshold: keep boxes with objectness = sigmoid(logit) ≥ threshold (τ_BB, 0.5 in the
            paper), in [0, 1].
        drop_full_frame: drop boxes that span the frame, defined as the authors' code does:
            width ≥ 0.98·W *or* height ≥ 0.98·H (after clipping to the image; the authors
            compare both sides with the image height, which is the same on AVSBench's square
            frames).
        keep_best_if_none: when no box passes, keep the single box of highest objectness among
            the usable ones (among all non-empty boxes if every box spans the frame, as the
            authors' code falls back to its top detection), so that every frame has a proposal.

    Returns:
        one :class:`Proposals` per image, in that image's pixels (OWLv2's processor pads to a
        square at the bottom/right, so normalised boxes scale by max(H, W)), highest objectness
        first. Boxes that clip to zero width or height (predicted in the padding) are dropped.
        A higher threshold gives a subset. No NMS is applied.
    """
    models = check_models(models)
    image_list = as_image_list(images)
    threshold = check_unit(threshold, "threshold")
    model, processor = models.owlv2
    device = models.device
    with torch.inference_mode():
        pixel_values = processor(images=[im.to(device) for im in image_list], return_tensors="pt")["pixel_values"]
        feature_map, _ = model.image_embedder(pixel_values=pixel_values.to(device=device, dtype=models.dtype))
        features = feature_map.reshape(feature_map.shape[0], -1, feature_map.shape[-1])
        objectness = torch.sigmoid(model.objectness_predictor(features).float())
        boxes = model.box_predictor(features, feature_map).float()
        results = []
        for i, image in enumerate(image_list):
            height, width = int(image.shape[1]), int(image.shape[2])
            pixel_boxes = _owl_boxes_to_pixels(boxes[i], height, width)
            results.append(
                _select_proposals(
                    pixel_boxes, objectness[i], height, width, threshold, drop_full_frame, keep_best_if_none
                )
            )
    return results

