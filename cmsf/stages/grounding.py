"""Open-vocabulary detection with GroundingDINO: the GDINO step of AT-GDINO-SAM (images + text
prompts → boxes, scores, the prompt each box belongs to).

Conventions (as in the rest of cmsf): images are a list of ``Tensor[3, H, W]`` uint8 or PIL
images, or one ``Tensor[B, 3, H, W]`` uint8; boxes are ``Tensor[K, 4]`` float32 in pixel
(x1, y1, x2, y2) of the image they belong to, in continuous coordinates (pixel ``i`` covers
``[i, i + 1)``). The model runs under ``torch.inference_mode()`` on ``models.device`` in
``models.dtype``; results are on ``models.device`` (scores and boxes in float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor
from torchvision.ops import clip_boxes_to_image

from cmsf.checks import check_unit
from cmsf.io.inputs import Images, Prompts, as_image_list, as_prompt_lists, collapse_whitespace
from cmsf.models.families import BERT_PHRASE_TOKENS, PhraseTokens, loaded_family
from cmsf.models.loading import Models, check_models


@dataclass(frozen=True)
class Detections:
    """Detections in one image.

    Attributes:
        boxes: ``Tensor[K, 4]`` float32, pixel (x1, y1, x2, y2) of the image, clipped to it.
        scores: ``Tensor[K]`` float32 in [0, 1], highest first.
        labels: ``K`` prompts, per box the prompt (as cleaned by :func:`ground`: lowercase,
            no ".") that contains the box's most probable token.
        phrases: ``K`` phrases as GroundingDINO matches them: the decoded prompt tokens whose
            probability exceeds ``text_threshold`` (may be part of a prompt, span several, or be
            ``""``).
        prompt_indices: ``Tensor[K]`` int64, per box the index of ``labels[k]`` in this image's
            prompts.
    """

    boxes: Tensor
    scores: Tensor
    labels: list[str]
    phrases: list[str]
    prompt_indices: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def grounding_phrase(prompt: str) -> str:
    """GroundingDINO's prompt convention: lowercase phrases separated by ". ". The phrase
    delimiters "." and "?" cannot occur inside a phrase and are replaced by spaces (AudioSet's
    "Bee, wasp, etc." becomes "bee, wasp, etc"); whitespace is collapsed."""
    return collapse_whitespace(prompt.lower().replace(".", " ").replace("?", " "))


def _chunk_prompts(phrases: list[str], tokenizer, max_tokens: int) -> list[tuple[int, list[str]]]:
    """Greedily split ``phrases`` into consecutive groups whose prompt "p1. p2. … pn." fits in
    ``max_tokens`` tokens with [CLS] and [SEP]. Returns ``(index of first phrase, group)``."""
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in phrases]
    groups: list[tuple[int, list[str]]] = []
    start, used = 0, 2
    for i, (phrase, length) in enumerate(zip(phrases, lengths)):
        if length + 3 > max_tokens:
            raise ValueError(f"prompts: {phrase!r} takes {length} tokens, more than GroundingDINO's {max_tokens - 3}")
        if i > start and used + length + 1 > max_tokens:
            groups.append((start, phrases[start:i]))
            start, used = i, 2
        used += length + 1
    if phrases:
        groups.append((start, phrases[start:]))
    return groups


def _phrase_index_of_tokens(input_ids: Tensor, tokens: PhraseTokens = BERT_PHRASE_TOKENS) -> Tensor:
    """``Tensor[R, N]`` int64: for each token, the index of the phrase it belongs to (phrases are
    separated by ".", the text starts with [CLS]); -1 for [CLS], [SEP], delimiters, padding.
    ``tokens``: the ids of those (the grounding family's, :class:`cmsf.models.families.PhraseTokens`)."""
    delimiter = torch.isin(input_ids, torch.tensor(tokens.delimiters, device=input_ids.device))
    special = delimiter | (input_ids == tokens.cls) | (input_ids == tokens.sep) | (input_ids == tokens.pad)
    phrase = torch.cumsum(delimiter.long(), dim=1) - delimiter.long()
    return torch.where(special, torch.full_like(phrase, -1), phrase)


class _GroundingOutputs(NamedTuple):
    logits: Tensor  # [R, Q, T] text-token logits (-inf past the text)
    pred_boxes: Tensor  # [R, Q, 4] normalised (cx, cy, w, h) of the unpadded image


class _GroundingRow(NamedTuple):
    boxes: Tensor  # [K, 4] float32 pixels, clipped
    scores: Tensor  # [K] float32
    phrase_indices: Tensor  # [K] int64 index of the phrase (within the row's prompt)
    phrases: list[str]  # [K] decoded tokens above text_threshold


def _postprocess_grounding(
    processor,
    outputs: _GroundingOutputs,
    input_ids: Tensor,
    sizes: Sequence[tuple[int, int]],
    box_threshold: float,
    text_threshold: float,
    tokens: PhraseTokens = BERT_PHRASE_TOKENS,
) -> list[_GroundingRow]:
    """Per batch row ``r``: boxes and scores from the processor's
    ``post_process_grounded_object_detection`` with ``target_sizes`` = ``sizes[r]`` = (H, W) of
    that row's image (GroundingDINO's normalised boxes are relative to the unpadded image, so
    they scale by (W, H)), clipped to the image; the phrase of each box's most probable prompt
    token; and the box's phrase in GroundingDINO's sense (the prompt tokens with probability
    > ``text_threshold``, without [CLS], [SEP], delimiters or padding: ``tokens``)."""
    results = processor.post_process_grounded_object_detection(
        outputs,
        input_ids=input_ids,
        threshold=box_threshold,
        text_threshold=text_threshold,
        target_sizes=[(int(h), int(w)) for h, w in sizes],
    )
    input_ids = input_ids.to(outputs.logits.device)
    token_phrase = _phrase_index_of_tokens(input_ids, tokens)
    num_tokens = token_phrase.shape[1]
    probabilities = torch.sigmoid(outputs.logits)
    rows = []
    for r, result in enumerate(results):
        height, width = sizes[r]
        keep = probabilities[r].max(dim=-1).values > box_threshold  # the processor's own selection
        kept = probabilities[r][keep][:, :num_tokens]  # [K, N]
        valid = token_phrase[r] >= 0
        best_token = torch.where(valid[None, :], kept, torch.full_like(kept, -1.0)).argmax(dim=-1)
        phrase_indices = token_phrase[r][best_token]
        above = ((kept > text_threshold) & valid[None, :]).cpu()
        ids = input_ids[r].tolist()
        phrases = [
            processor.tokenizer.decode([ids[t] for t in torch.nonzero(row).flatten().tolist()]).strip()
            for row in above
        ]
        boxes = clip_boxes_to_image(result["boxes"].to(device=kept.device, dtype=torch.float32), (height, width))
        if boxes.shape[0] != kept.shape[0]:  # pragma: no cover - guards against a processor change
            raise RuntimeError("GroundingDINO post-processing kept a different set of boxes than expected")
        rows.append(_GroundingRow(boxes.reshape(-1, 4), result["scores"].to(torch.float32), phrase_indices, phrases))
    return rows


def _empty_detections(device: torch.device) -> Detections:
    return Detections(
        boxes=torch.zeros(0, 4, device=device),
        scores=torch.zeros(0, device=device),
        labels=[],
        phrases=[],
        prompt_indices=torch.zeros(0, dtype=torch.int64, device=device),
    )


def ground(
    images: Images,
    prompts: Prompts,
    models: Models,
    box_threshold: float = 0.35,
    text_threshold: float = 0.25,
) -> list[Detections]:
    """Boxes for text prompts in each image (GroundingDINO; the GDINO step of AT-GDINO-SAM).

    Args:
        images: a list of ``Tensor[3, H, W]`` uint8 or PIL images (sizes may differ), or one
            ``Tensor[B, 3, H, W]`` uint8.
        prompts: one list of phrases for every image, or one list per image (e.g. each frame's
            audio tags). Each phrase is lowercased and its "." / "?" removed (they delimit
            phrases in GroundingDINO's "a. b. c." prompt, built here). An image with no prompts
            gets empty :class:`Detections` and is not run through the model. Phrases that do not
            fit GroundingDINO's ``max_text_len`` (256 tokens) in one prompt are split over
            several prompts, each run on the image (one batched forward per image size).
        models: the loaded models (uses ``models.grounding_dino``).
        box_threshold: keep boxes whose best token probability is > this, in [0, 1].
        text_threshold: tokens with probability > this form a box's matched phrase, in [0, 1].

    Returns:
        one :class:`Detections` per image: boxes in that image's pixels (the processor's
        ``post_process_grounded_object_detection`` with ``target_sizes=(H, W)``), clipped to the
        image, highest score first.

    Note:
        Images of one size run in one forward, each size in its own: GroundingDINO's processor
        would pad images of different sizes to a common size, and the padded pixels would pass
        through the backbone, making an image's detections depend on the others in the call.
        An image's detections are those of the image run with the other images of its size
        (the same as alone up to float rounding of batched matrix products).
    """
    models = check_models(models)
    image_list = as_image_list(images)
    per_image = as_prompt_lists(prompts, len(image_list), grounding_phrase)
    box_threshold = check_unit(box_threshold, "box_threshold")
    text_threshold = check_unit(text_threshold, "text_threshold")
    device = models.device
    if not any(per_image):
        return [_empty_detections(device) for _ in image_list]

    model, processor = models.grounding_dino
    tokens = loaded_family("grounding_dino", model).phrase_tokens
    max_tokens = int(getattr(model.config, "max_text_len", 256))
    chunks = [(i, _chunk_prompts(phrases, processor.tokenizer, max_tokens)) for i, phrases in enumerate(per_image)]
    rows = [(i, start, group) for i, groups in chunks for start, group in groups]  # (image, first phrase, phrases)
    sizes = [(int(image_list[i].shape[1]), int(image_list[i].shape[2])) for i, _, _ in rows]
    # the processor pads the images of one call to a common size and the padding goes through
    # the backbone: one forward per image size, so an image's boxes do not depend on the others
    by_size: dict[tuple[int, int], list[int]] = {}
    for r, size in enumerate(sizes):
        by_size.setdefault(size, []).append(r)
    row_results: list[Any] = [None] * len(rows)
    with torch.inference_mode():
        for size, members in by_size.items():
            inputs = processor(
                images=[image_list[rows[r][0]].to(device) for r in members],
                text=[". ".join(rows[r][2]) + "." for r in members],
                input_data_format="channels_first", return_tensors="pt", padding="longest",  # 1×1: not ambiguous
            )  # fmt: skip
            inputs = {k: v.to(device) for k, v in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(models.dtype)
            raw = model(**inputs)
            # post-processing walks the boxes one by one: do it on the CPU after one transfer
            outputs = _GroundingOutputs(raw.logits.float().cpu(), raw.pred_boxes.float().cpu())
            results = _postprocess_grounding(
                processor, outputs, inputs["input_ids"].cpu(), [size] * len(members), box_threshold, text_threshold,
                tokens,
            )
            for r, result in zip(members, results):
                row_results[r] = result

    collected: list[list[tuple[int, _GroundingRow]]] = [[] for _ in image_list]
    for (i, start, _), row in zip(rows, row_results):
        collected[i].append((start, row))
    detections = []
    for i, parts in enumerate(collected):
        if not parts:
            detections.append(_empty_detections(device))
            continue
        boxes = torch.cat([row.boxes for _, row in parts]).to(device)
        scores = torch.cat([row.scores for _, row in parts]).to(device)
        indices = torch.cat([row.phrase_indices + start for start, row in parts]).to(device=device, dtype=torch.int64)
        phrases = [phrase for _, row in parts for phrase in row.phrases]
        order = torch.sort(scores, descending=True, stable=True).indices
        indices = indices[order]
        detections.append(
            Detections(
                boxes=boxes[order],
                scores=scores[order],
                labels=[per_image[i][j] for j in indices.tolist()],
                phrases=[phrases[j] for j in order.tolist()],
                prompt_indices=indices,
            )
        )
    return detections

