"""The class decision for semantic segmentation (AVSBench-semantic, 70 classes + background).

BIND pipelines (:func:`label_masks`): a kept mask gets the class on which the picture and the
sound agree in the binder's joint space. With ``v`` the mask's crop embedding, ``a`` the audio
segment's embedding and ``t_c`` the text embedding of class c's prompt (:func:`class_prompts`)::

    p_vision(c | mask) = softmax_c(vision_scale · logit(v, t_c))
    p_audio(c)         = softmax_c(audio_scale · logit(a, t_c))
    score(mask, c)     = p_vision(c | mask) · p_audio(c)

(logits as the binder defines them, :class:`cmsf.stages.binding.TextEmbeddings`). The mask's
class is the arg-max of ``score`` (the lowest index on a tie), background (0) when that score is
below ``threshold``. With ImageBind the audio logits are large (audio norm 20 times the trained
text scale), so ``p_audio`` is close to one-hot: the sound picks the class and the picture's
probability of that class is the score; ``audio_scale`` below 1 softens it.

AT pipelines (:func:`prompts_for_tags`): each AudioSet tag gives a grounding prompt (its raw label,
as the paper ran it, or the vocabulary's visual noun) and an AVSS class through the reviewed
vocabulary (:mod:`cmsf.io.vocabulary`); masks grounded from a prompt take its class.

A frame's labelled masks become one class map (:func:`class_map`): where masks overlap, the mask
with the higher score wins the pixel (the lower mask index on equal scores); background masks
(class 0) claim nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from cmsf.io.vocabulary import AVSS_CLASS_NAMES, audioset_vocabulary
from cmsf.stages.binding import TextEmbeddings

CLASS_PHRASES: tuple[str, ...] = (
    "an accordion", "an airplane", "an axe", "a baby", "a bassoon", "a bell", "a bird", "a boat",
    "a boy", "a bus", "a car", "a cat", "a cello", "a clarinet", "a hair clipper", "a clock",
    "a dog", "a donkey", "a drum", "a duck", "an elephant", "an emergency vehicle", "an erhu",
    "a flute", "frying food", "a girl", "a goose", "a guitar", "a gun", "a guzheng",
    "a hair dryer", "a handpan", "a harmonica", "a harp", "a helicopter", "a hen", "a horse",
    "a keyboard", "a leopard", "a lion", "a man", "a marimba", "a missile or rocket",
    "a motorcycle", "a lawn mower", "a parrot", "a piano", "a pig", "a pipa", "a saw",
    "a saxophone", "a sheep", "a sitar", "a suona", "a squirrel", "a tabla", "a tank", "a tiger",
    "a tractor", "a train", "a trombone", "a truck", "a trumpet", "a tuba", "a ukulele",
    "a utility terrain vehicle", "a vacuum cleaner", "a violin", "a wolf", "a woman",
)  # fmt: skip
"""Each AVSS class (in :data:`AVSS_CLASS_NAMES` order) as English words with their article: the
hyphenated dataset names spelt out ("emergency-car" → "an emergency vehicle", "utv" → "a utility
terrain vehicle", "sorna" → "a suona", the usual spelling of the Chinese horn), "clipper" and
"mower" as the hair clipper and lawn mower AVSBench's videos show."""

DEFAULT_CLASS_TEMPLATE = "a photo of {}."
"""CLIP's zero-shot prompt ("A photo of a {label}."), which the CLIP paper (Radford et al. 2021,
§3.1.4) reports as a good default, 1.3 points better than the bare label on ImageNet; ImageBind's
text tower is OpenCLIP's. Chosen a priori, not tuned on AVSS (no split of it was looked at). Any
template with one ``{}`` can be used."""

TAG_PROMPT_MODES = ("raw", "vocabulary")
"""``"raw"``: the AudioSet label itself is the grounding prompt (the paper's AT-GDINO-SAM);
``"vocabulary"``: the vocabulary's visual noun (tags without one give no prompt)."""


def class_prompts(template: str = DEFAULT_CLASS_TEMPLATE) -> list[str]:
    """The 70 class prompts, ``template`` filled with :data:`CLASS_PHRASES` (class k at k − 1)."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"template: expected a string with exactly one '{{}}', got {template!r}")
    return [template.format(phrase) for phrase in CLASS_PHRASES]


class TagPrompts(NamedTuple):
    """Grounding prompts from audio tags and the AVSS class each gives its masks.

    Attributes:
        prompts: distinct prompts, in the order their first tag came.
        class_indices: per prompt, the AVSS class index 1 … 70, or 0 (no class: its masks are
            background in the class map).
    """

    prompts: list[str]
    class_indices: list[int]


def prompts_for_tags(labels: Sequence[str], mode: str = "raw") -> TagPrompts:
    """AudioSet tags (most probable first) → grounding prompts and their AVSS classes.

    Each tag's class is the vocabulary's. With ``mode="raw"`` the prompt is the label; with
    ``"vocabulary"`` it is the label's noun, tags without a noun are dropped, and tags sharing a
    noun ("Dog", "Bark" → "dog") give one prompt, whose class is that of the first of them that
    has one (0 if none has).

    Raises:
        ValueError: ``mode`` not in :data:`TAG_PROMPT_MODES`, a label that is not AudioSet's.
    """
    if mode not in TAG_PROMPT_MODES:
        raise ValueError(f"mode: expected one of {', '.join(TAG_PROMPT_MODES)}, got {mode!r}")
    vocabulary = audioset_vocabulary()
    prompts: list[str] = []
    classes: list[int] = []
    for label in labels:
        entry = vocabulary.get(label)
        if entry is None:
            raise ValueError(f"labels: {label!r} is not an AudioSet label")
        prompt = label if mode == "raw" else entry.noun
        if prompt is None:
            continue
        if prompt in prompts:
            at = prompts.index(prompt)
            classes[at] = classes[at] or entry.class_index
            continue
        prompts.append(prompt)
        classes.append(entry.class_index)
    return TagPrompts(prompts, classes)


@dataclass(frozen=True)
class MaskLabels:
    """The class decision for a frame's K masks.

    Attributes:
        classes: ``Tensor[K]`` int64, the class index 1 … C of each mask, 0 for background.
        scores: ``Tensor[K]`` float32, the arg-max class's score (kept for background masks too).
        probabilities: ``Tensor[K, C]`` float32, ``p_vision · p_audio`` for every class
            (column c − 1 is class c).
    """

    classes: Tensor
    scores: Tensor
    probabilities: Tensor


def label_masks(
    visual: Tensor,
    audio: Tensor,
    text: TextEmbeddings,
    *,
    threshold: float = 0.0,
    vision_scale: float = 1.0,
    audio_scale: float = 1.0,
) -> MaskLabels:
    """Each mask's class where picture and sound agree (the module docstring's rule).

    Args:
        visual: ``Tensor[K, D]`` the masks' crop embeddings (``Binder.embed_vision``), K ≥ 0.
        audio: ``Tensor[D]`` the segment's audio embedding (a row of ``Binder.embed_audio``).
        text: the C class prompts' embeddings (``Binder.embed_text(class_prompts())``).
        threshold: in [0, 1]; a mask whose best score is below it is background.
        vision_scale, audio_scale: positive factors of the logits before each softmax (1: the
            binder's own).

    Returns:
        :class:`MaskLabels` on ``visual``'s device.
    """
    _check_label_inputs(visual, audio, text, threshold, vision_scale, audio_scale)
    audio = audio.to(visual.device)
    p_vision = torch.softmax(vision_scale * text.vision_logits(visual), dim=-1)  # [K, C]
    p_audio = torch.softmax(audio_scale * text.audio_logits(audio), dim=-1)  # [C]
    probabilities = (p_vision * p_audio).float()
    if probabilities.shape[0] == 0:
        empty = torch.zeros(0, device=visual.device)
        return MaskLabels(empty.long(), empty.float(), probabilities)
    scores, best = probabilities.max(dim=-1)  # the first maximum on a tie: the lowest class
    classes = torch.where(scores >= threshold, best + 1, torch.zeros_like(best))
    return MaskLabels(classes.long(), scores, probabilities)


def _check_label_inputs(
    visual: Tensor, audio: Tensor, text: TextEmbeddings, threshold: float, vision_scale: float, audio_scale: float
) -> None:
    if not isinstance(visual, Tensor) or visual.ndim != 2:
        raise ValueError(f"visual: expected Tensor[K, D], got {getattr(visual, 'shape', type(visual).__name__)}")
    dim = text.vision.shape[1]
    if visual.shape[1] != dim or not isinstance(audio, Tensor) or tuple(audio.shape) != (text.audio.shape[1],):
        raise ValueError(
            f"visual, audio: expected Tensor[K, {dim}] and Tensor[{text.audio.shape[1]}] for these text embeddings, "
            f"got {tuple(visual.shape)} and {tuple(getattr(audio, 'shape', ()))}"
        )
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold: expected a number in [0, 1], got {threshold!r}")
    for name, value in (("vision_scale", vision_scale), ("audio_scale", audio_scale)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a positive number, got {value!r}")


def class_map(masks: Tensor, classes: Tensor, scores: Tensor) -> Tensor:
    """A frame's labelled masks → its class map.

    Overlaps: a pixel takes the class of the mask with the highest score among those covering it
    with a class (class > 0); on equal scores, the lowest mask index. Pixels no such mask covers
    are background (0). Computed by painting the masks in increasing (score, −index) order, so
    that the winner is painted last: O(K·H·W) time, one ``[H, W]`` map of memory.

    Args:
        masks: ``Tensor[K, H, W]`` bool.
        classes: ``Tensor[K]`` int64, 0 (background) … C.
        scores: ``Tensor[K]`` float, finite.

    Returns:
        ``Tensor[H, W]`` int64 on ``masks``' device.
    """
    if not isinstance(masks, Tensor) or masks.ndim != 3 or masks.dtype != torch.bool:
        raise ValueError(f"masks: expected Tensor[K, H, W] bool, got {getattr(masks, 'shape', type(masks).__name__)}")
    count = masks.shape[0]
    if tuple(classes.shape) != (count,) or tuple(scores.shape) != (count,):
        raise ValueError(
            f"classes, scores: expected Tensor[{count}] each, got {tuple(classes.shape)}, {tuple(scores.shape)}"
        )
    if classes.is_floating_point() or bool((classes < 0).any()):
        raise ValueError("classes: expected non-negative integer class indices")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores: expected finite scores")
    out = torch.zeros(masks.shape[1:], dtype=torch.int64, device=masks.device)
    values = scores.double().tolist()
    order = sorted(range(count), key=lambda k: (values[k], -k))
    for k in order:
        if int(classes[k]) > 0:
            out[masks[k]] = int(classes[k])
    return out


def avss_class_name(index: int) -> Optional[str]:
    """The AVSS class name of index 1 … 70; ``None`` for 0 (background)."""
    if not isinstance(index, int) or not 0 <= index <= len(AVSS_CLASS_NAMES):
        raise ValueError(f"index: expected an AVSS class index 0 … {len(AVSS_CLASS_NAMES)}, got {index!r}")
    return AVSS_CLASS_NAMES[index - 1] if index else None
