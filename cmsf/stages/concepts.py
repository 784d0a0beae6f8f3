"""Text-concept segmentation with SAM 3: the segmentation step of AT-SAM3 (images + concept
prompts, e.g. each frame's audio tags → the instance masks of every concept, with their scores).

SAM 3 (``Sam3Model``) finds all instances of a short noun phrase in an image. Each image is
encoded once (``get_vision_features``) and each distinct prompt once (``get_text_features`` on
the tokens ``Sam3Processor`` makes: padded to 32); every (image, prompt) pair then goes through
the detector and mask decoder with those features, in batches, and the processor's
``post_process_instance_segmentation`` turns the outputs into masks at the image's size. The
result equals ``processor(images=image, text=prompt)`` → ``model(**inputs)`` →
``post_process_instance_segmentation`` for each pair.

Conventions (as in the rest of cmsf): images are a list of ``Tensor[3, H, W]`` uint8 or PIL
images, or one ``Tensor[B, 3, H, W]`` uint8; boxes are ``Tensor[K, 4]`` float32 in pixel
(x1, y1, x2, y2) of their image. The model runs under ``torch.inference_mode()`` on
``models.device`` in ``models.dtype``; results are on ``models.device``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from cmsf.checks import check_unit
from cmsf.io.inputs import Images, Prompts, as_image_list, as_prompt_lists
from cmsf.models.loading import Models, check_models

__all__ = ["ConceptMasks", "segment_concepts"]

PAIRS_PER_FORWARD = 16
"""(image, prompt) pairs per forward of SAM 3's detector and mask decoder."""


@dataclass(frozen=True)
class ConceptMasks:
    """SAM 3's instances in one image.

    Attributes:
        masks: ``Tensor[K, H, W]`` bool at the image's resolution.
        scores: ``Tensor[K]`` float32 in [0, 1], SAM 3's instance score (its query score times
            its presence score), highest first.
        boxes: ``Tensor[K, 4]`` float32 pixel (x1, y1, x2, y2) of the image.
        labels: ``K`` prompts, the concept each instance was found for.
        prompt_indices: ``Tensor[K]`` int64, the index of ``labels[k]`` in this image's prompts.
    """

    masks: Tensor
    scores: Tensor
    boxes: Tensor
    labels: list[str]
    prompt_indices: Tensor

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def _empty(image: Tensor, device: torch.device) -> ConceptMasks:
    height, width = int(image.shape[1]), int(image.shape[2])
    return ConceptMasks(
        masks=torch.zeros(0, height, width, dtype=torch.bool, device=device),
        scores=torch.zeros(0, device=device),
        boxes=torch.zeros(0, 4, device=device),
        labels=[],
        prompt_indices=torch.zeros(0, dtype=torch.int64, device=device),
    )


def _select(output: Any, index: Tensor) -> Any:
    """The rows ``index`` of a transformers output whose tensors (or tuples of tensors) are
    batch-first; other fields are dropped."""
    fields = {}
    for key, value in output.items():
        if isinstance(value, Tensor):
            fields[key] = value[index]
        elif isinstance(value, (tuple, list)) and value and all(isinstance(v, Tensor) for v in value):
            fields[key] = tuple(v[index] for v in value)
    return type(output)(**fields)


def segment_concepts(
    images: Images,
    prompts: Prompts,
    models: Models,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> list[ConceptMasks]:
    """SAM 3's instance masks of text concepts in each image.

    Args:
        images: a list of ``Tensor[3, H, W]`` uint8 or PIL images (sizes may differ), or one
            ``Tensor[B, 3, H, W]`` uint8.
        prompts: one list of concepts for every image, or one list per image (e.g. each frame's
            audio tags); whitespace is collapsed. An image with no prompts gets an empty
            :class:`ConceptMasks` and is not run through the model.
        models: the loaded models (uses ``models.sam3``).
        threshold: keep instances whose score is > this, in [0, 1] (``post_process_instance_
            segmentation``'s ``threshold``; the transformers SAM 3 examples use 0.5).
        mask_threshold: a pixel belongs to an instance where its mask probability is > this, in
            [0, 1] (the processor's default 0.5).

    Returns:
        one :class:`ConceptMasks` per image: the instances of all its prompts, highest score
        first (ties in prompt order).
    """
    models = check_models(models)
    image_list = as_image_list(images)
    per_image = as_prompt_lists(prompts, len(image_list))
    threshold = check_unit(threshold, "threshold")
    mask_threshold = check_unit(mask_threshold, "mask_threshold")
    device = models.device
    results = [_empty(image, device) for image in image_list]
    needed = [i for i, concepts in enumerate(per_image) if concepts]
    if not needed:
        return results

    model, processor = models.sam3
    distinct = list(dict.fromkeys(concept for i in needed for concept in per_image[i]))
    pairs = [(slot, i, j) for slot, i in enumerate(needed) for j in range(len(per_image[i]))]
    found: dict[int, list[tuple[int, dict[str, Tensor]]]] = {i: [] for i in needed}
    with torch.inference_mode():
        images = [image_list[i].to(device) for i in needed]  # channels first, said so: no warning for 1×1 frames
        pixel_values = processor(images=images, input_data_format="channels_first", return_tensors="pt")["pixel_values"]
        vision = model.get_vision_features(pixel_values.to(device=device, dtype=models.dtype))
        tokens = processor(text=distinct, return_tensors="pt")
        input_ids = tokens["input_ids"].to(device)
        attention_mask = tokens["attention_mask"].to(device)
        text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        text_features = text.pooler_output  # [P, 32, hidden]: what forward reads from text_embeds
        for start in range(0, len(pairs), PAIRS_PER_FORWARD):
            chunk = pairs[start : start + PAIRS_PER_FORWARD]
            image_rows = torch.tensor([slot for slot, _, _ in chunk], device=device)
            text_rows = torch.tensor([distinct.index(per_image[i][j]) for _, i, j in chunk], device=device)
            outputs = model(
                vision_embeds=_select(vision, image_rows),
                text_embeds=BaseModelOutputWithPooling(pooler_output=text_features[text_rows]),
                attention_mask=attention_mask[text_rows],
            )
            sizes = [(int(image_list[i].shape[1]), int(image_list[i].shape[2])) for _, i, _ in chunk]
            rows = processor.post_process_instance_segmentation(
                outputs, threshold=threshold, mask_threshold=mask_threshold, target_sizes=sizes
            )
            for (_, i, j), row in zip(chunk, rows):
                found[i].append((j, row))
    for i, parts in found.items():
        height, width = int(image_list[i].shape[1]), int(image_list[i].shape[2])
        scores = torch.cat([row["scores"].float() for _, row in parts])
        order = torch.sort(scores, descending=True, stable=True).indices
        indices = torch.cat([torch.full((len(row["scores"]),), j, dtype=torch.int64) for j, row in parts]).to(device)
        indices = indices[order]
        results[i] = ConceptMasks(
            # a prompt without instances comes back with masks at the model's resolution, (0, h, w)
            masks=torch.cat([row["masks"].bool().reshape(-1, height, width) for _, row in parts])[order],
            scores=scores[order],
            boxes=torch.cat([row["boxes"].float() for _, row in parts])[order],
            labels=[per_image[i][j] for j in indices.tolist()],
            prompt_indices=indices,
        )
    return results
