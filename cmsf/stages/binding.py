"""The BIND step's inputs: masked crops of the proposals (the frame inside the mask, OpenCV's
Gaussian blur of it outside, as the authors' code), and the binder's embeddings of them next to
those of the audio segments (scored against each other by :func:`cmsf.ops.bind_filter`).

The binder (:func:`binder_of`, the ``binder`` component) is ImageBind (the paper's) or PE-AV
(Meta's Perception Encoder audio-visual, ``PeAudioVideoModel``); both answer one interface,
:class:`Binder`: ``embed_vision(crops) → Tensor[N, D]``, ``embed_audio(segments, sample_rate) →
Tensor[T, D]``, ``embed_text(texts) → TextEmbeddings`` (class names in the space of each), and
how their dot products become scores (:class:`BindScoring`). Every crop of a video goes through the vision tower in one
batch (in chunks of :data:`CROPS_PER_FORWARD`), every audio segment through the audio tower in
another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from cmsf.io.inputs import mixdown, resample
from cmsf.models.families import families_of, family_named
from cmsf.models.imagebind import ImageBind, imagebind_audio_inputs, imagebind_vision_inputs
from cmsf.models.imagebind_text import imagebind_text_inputs
from cmsf.models.loading import Component, Models, check_models
from cmsf.ops import mirror_index

CROPS_PER_FORWARD = 256
"""Crops per forward of ImageBind's vision tower."""


CROP_BACKGROUNDS = ("blur", "black")
"""What :func:`masked_crops` puts outside a proposal's mask: ``"blur"`` (the authors'
OWOD-BIND code) or ``"black"`` (the ImageBind-SAM demo's)."""

BLUR_KERNEL_SIZE = 21
"""The authors' ``cv2.GaussianBlur(frame, (21, 21), 0)``: σ from the kernel size,
0.3·((21 − 1)·0.5 − 1) + 0.8 = 3.5."""


def _fixed_point_taps(size: int) -> list[int]:
    """OpenCV's 8-bit ``GaussianBlur`` kernel: ``getGaussianKernel(size, 0)`` (σ from the
    size, 0.3·((size − 1)·0.5 − 1) + 0.8, for sizes above 7) in fixed point with 8 fraction
    bits, rounded from the outside in with the error carried inwards and the centre tap taking
    the remainder, so that the taps sum to exactly 256 (21 taps: 0 2 2 4 6 11 15 20 25 28 30 …)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    weights = [math.exp(-((i - (size - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(size)]
    total = math.fsum(weights)
    taps = [0] * size
    carried = 0.0
    for i in range(size // 2):
        value = weights[i] / total * 256 + carried
        taps[i] = taps[size - 1 - i] = math.floor(value + 0.5)
        carried = value - taps[i]
    taps[size // 2] = 256 - 2 * sum(taps[: size // 2])
    return taps


def blurred_region(image: Tensor, top: int, left: int, bottom: int, right: int) -> Tensor:
    """Rows ``top:bottom`` and columns ``left:right`` of OpenCV's
    ``GaussianBlur(image, (21, 21), 0)`` on uint8 (σ = 3.5, border ``BORDER_REFLECT_101``),
    computed from the region and a 10-pixel mirrored margin only, on ``image``'s device.

    OpenCV blurs 8-bit images in fixed point (:func:`_fixed_point_taps`: 8 fraction bits per
    pass, the result rounded half up); this does the same integer sums, so it is bit-exact with
    OpenCV (tests/test_crops.py checks it against a direct computation and, where installed,
    OpenCV itself). The sums run in float32, which holds them exactly: every partial sum is an
    integer below 256 · 256 · 255 < 2**24, and element-wise operations never use TF32.

    Args:
        image (Tensor[3, H, W]): uint8.
        top, left, bottom, right: the region, ``0 ≤ top < bottom ≤ H``, ``0 ≤ left < right ≤ W``.

    Returns:
        ``Tensor[3, bottom − top, right − left]`` uint8.
    """
    height, width = image.shape[-2:]
    taps = _fixed_point_taps(BLUR_KERNEL_SIZE)
    radius = BLUR_KERNEL_SIZE // 2
    device = image.device
    rows = mirror_index(torch.arange(top - radius, bottom + radius, device=device), int(height))
    cols = mirror_index(torch.arange(left - radius, right + radius, device=device), int(width))
    pixels = image.index_select(1, rows).index_select(2, cols).to(torch.float32)
    out_height, out_width = bottom - top, right - left
    across = torch.zeros(3, out_height + 2 * radius, out_width, dtype=torch.float32, device=device)
    for i, tap in enumerate(taps):  # the horizontal pass, then the vertical one
        if tap:
            across.add_(pixels[:, :, i : i + out_width], alpha=tap)
    down = torch.zeros(3, out_height, out_width, dtype=torch.float32, device=device)
    for i, tap in enumerate(taps):
        if tap:
            down.add_(across[:, i : i + out_height, :], alpha=tap)
    return torch.floor((down + 2**15) / 2**16).clamp(0, 255).to(torch.uint8)


def masked_crops(image: Tensor, boxes: Tensor, masks: Tensor, background: str = "blur") -> list[Tensor]:
    """Cut each proposal out of ``image``, the frame's pixels inside its mask and
    ``background`` outside.

    ``"blur"`` (default) is what the authors' OWOD-BIND code does: blur the whole frame with
    OpenCV's ``GaussianBlur(frame, (21, 21), 0)`` (σ = 3.5, reflected border), keep the frame
    inside the mask and the blur outside, then ``PIL.Image.crop(box)``; the blur is computed
    here in torch on the image's device (:func:`blurred_region`, bit-exact with OpenCV's
    8-bit fixed point), over the rectangle the boxes cover only. ``"black"`` sets the outside to 0, as the
    ImageBind-SAM demo does. The crop spans columns ``round(x1) .. round(x2) - 1`` and rows
    ``round(y1) .. round(y2) - 1`` (Python's round, as PIL uses), clipped to the image and at
    least one pixel wide and high.

    Args:
        image (Tensor[3, H, W]): uint8.
        boxes (Tensor[K, 4]): pixel (x1, y1, x2, y2) of ``image``.
        masks (Tensor[K, H, W]): bool.
        background: ``"blur"`` or ``"black"`` (:data:`CROP_BACKGROUNDS`).

    Returns:
        K ``Tensor[3, h, w]`` uint8 crops, on ``image``'s device.
    """
    if background not in CROP_BACKGROUNDS:
        raise ValueError(f"background: expected one of {', '.join(CROP_BACKGROUNDS)}, got {background!r}")
    height, width = image.shape[-2:]
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"boxes and masks: expected one mask per box, got {boxes.shape[0]} and {masks.shape[0]}")
    masks = masks.to(image.device)
    regions = []
    for x1, y1, x2, y2 in boxes.tolist():
        left = min(max(round(x1), 0), width - 1)
        top = min(max(round(y1), 0), height - 1)
        right = max(min(round(x2), width), left + 1)
        bottom = max(min(round(y2), height), top + 1)
        regions.append((top, left, bottom, right))
    if not regions:
        return []
    if background == "blur":  # one blur over the rectangle that holds every box
        outer = (min(r[0] for r in regions), min(r[1] for r in regions), max(r[2] for r in regions), max(r[3] for r in regions))
        blurred = blurred_region(image, *outer)
    crops = []
    for k, (top, left, bottom, right) in enumerate(regions):
        inside = masks[k, top:bottom, left:right].unsqueeze(0)
        frame = image[:, top:bottom, left:right]
        if background == "blur":
            outside = blurred[:, top - outer[0] : bottom - outer[0], left - outer[1] : right - outer[1]]
        else:
            outside = torch.zeros_like(frame)
        crops.append(torch.where(inside, frame, outside))
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


@dataclass(frozen=True)
class BindScoring:
    """How a binder's dot products become the BIND step's scores (:func:`cmsf.ops.bind_filter`).

    Attributes:
        default_mode: the mode the binder is meant to be read with: ``"softmax"`` for ImageBind
            (the authors' OWOD-BIND code), ``"calibrated"`` for PE-AV (its trained audio-video
            match logit, a probability per proposal).
        logit_scale, logit_bias: the calibrated match logit is ``logit_scale · ⟨a, v⟩ +
            logit_bias`` (PE-AV's ``audio_video_logit_scale`` / ``_bias``); ``None`` for ImageBind,
            whose audio embedding already carries its fixed logit scale and which has no bias.
    """

    default_mode: str
    logit_scale: Optional[float] = None
    logit_bias: Optional[float] = None

    def mode(self, bind_mode: Optional[str]) -> str:
        """``bind_mode`` itself, or :attr:`default_mode` for ``None``; ``"calibrated"`` is refused
        (naming ``bind_mode``) for a binder without a calibrated match logit."""
        mode = self.default_mode if bind_mode is None else bind_mode
        if mode == "calibrated" and self.logit_bias is None:
            raise ValueError(_uncalibrated(self.default_mode))
        return mode


DEFAULT_BIND_MODES = {family.name: family.binder.bind_mode for family in families_of("binder")}
"""The mode each binder (:attr:`cmsf.models.loading.Models.binder_kind`) is read with by default
(its entry of :data:`cmsf.models.families.FAMILY_TABLE`): ImageBind ``"softmax"``, PE-AV
``"calibrated"``."""


def _uncalibrated(default_mode: str) -> str:
    return (
        "bind_mode: 'calibrated' needs a binder with a calibrated match logit (PE-AV); this binder "
        f"is read with {default_mode!r}"
    )


def check_bind_mode(models: Models, bind_mode: Optional[str]) -> str:
    """The mode ``bind_mode`` resolves to with ``models``' binder (None: the binder's own,
    :data:`DEFAULT_BIND_MODES`), checked without loading any model, so that a mode the binder
    cannot give is refused before any video is read.

    Raises:
        ValueError: ``"calibrated"`` with ImageBind (no calibrated match logit); the message
            starts with ``bind_mode``.
    """
    binder = family_named("binder", models.binder_kind).binder
    mode = binder.bind_mode if bind_mode is None else bind_mode
    if mode == "calibrated" and not binder.calibrated:
        raise ValueError(_uncalibrated(binder.bind_mode))
    return mode


@dataclass(frozen=True)
class TextEmbeddings:
    """Texts (class prompts) embedded by a binder, once for each tower they are compared with.

    The logits of an embedding ``e`` of the vision (audio) tower against text ``c`` are
    ``vision_scale · ⟨e, vision[c]⟩ + vision_bias`` (``audio_…`` likewise), the model's own:

    - ImageBind: one text tower for both, ``vision`` and ``audio`` are the same
      ``embed_text`` output (L2-normalised × the trained text logit scale), scales 1, biases 0:
      the products Meta's own demo feeds to its softmax (``vision @ text.T``, ``audio @ text.T``);
    - PE-AV: the text model's first token of its last hidden state (as ``PeAudioVideoModel.forward``),
      through ``video_model.text_video_head`` (``vision``) and ``audio_model.text_audio_head``
      (``audio``), with ``text_video_logit_scale``/``_bias`` and ``text_audio_logit_scale``/``_bias``:
      ``forward``'s ``logits_video_text`` and ``logits_audio_text``.

    Attributes:
        vision, audio: ``Tensor[C, D]`` float32, row c for text c.
        vision_scale, vision_bias, audio_scale, audio_bias: floats.
    """

    vision: Tensor
    audio: Tensor
    vision_scale: float = 1.0
    vision_bias: float = 0.0
    audio_scale: float = 1.0
    audio_bias: float = 0.0

    def vision_logits(self, visual: Tensor) -> Tensor:
        """``visual (Tensor[K, D])`` from ``embed_vision`` → ``Tensor[K, C]`` float32 logits."""
        return self.vision_scale * (visual.float() @ self.vision.to(visual.device).T) + self.vision_bias

    def audio_logits(self, audio: Tensor) -> Tensor:
        """``audio (Tensor[..., D])`` from ``embed_audio`` → ``Tensor[..., C]`` float32 logits."""
        return self.audio_scale * (audio.float() @ self.audio.to(audio.device).T) + self.audio_bias


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise ValueError(f"texts: expected a non-empty sequence of strings, got {texts!r:.80}")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"texts: item {i} is {text!r:.40}, expected a non-blank string")
    return list(texts)


class Binder:
    """The audio-visual binder of the BIND step (the interface both binders answer).

    Attributes:
        name: ``"imagebind"`` or ``"pe_audio_video"``.
        scoring: how its dot products become scores (:class:`BindScoring`).
    """

    name: str
    scoring: BindScoring

    def embed_vision(self, crops: Sequence[Tensor]) -> Tensor:
        """Image crops (``Tensor[3, h, w]`` uint8, sizes may differ) → ``Tensor[N, D]`` float32."""
        raise NotImplementedError

    def embed_audio(self, segments: Sequence[Tensor], sample_rate: int) -> Tensor:
        """Audio segments (``Tensor[C, S]`` or ``Tensor[S]`` float at ``sample_rate`` Hz) →
        ``Tensor[T, D]`` float32."""
        raise NotImplementedError

    def embed_text(self, texts: Sequence[str]) -> TextEmbeddings:
        """C non-blank texts (e.g. class prompts) → their :class:`TextEmbeddings` against the
        vision and the audio tower."""
        raise NotImplementedError


class ImageBindBinder(Binder):
    """ImageBind: :func:`embed_crops` and :func:`embed_audio_segments` (Meta-exact preprocessing);
    read with a softmax over the proposals, as the authors' code does."""

    name = "imagebind"
    scoring = BindScoring("softmax")

    def __init__(self, models: Models) -> None:
        self._models = models

    def embed_vision(self, crops: Sequence[Tensor]) -> Tensor:
        return embed_crops(crops, self._models)

    def embed_audio(self, segments: Sequence[Tensor], sample_rate: int) -> Tensor:
        return embed_audio_segments(segments, sample_rate, self._models)

    def embed_text(self, texts: Sequence[str]) -> TextEmbeddings:
        """Meta's tokens (:func:`cmsf.imagebind_text_inputs`) → ``ImageBind.embed_text``, the
        same rows against both towers."""
        embedded = self._models.imagebind.embed_text(imagebind_text_inputs(_check_texts(texts)))
        return TextEmbeddings(vision=embedded, audio=embedded)


class PeAvBinder(Binder):
    """PE-AV (``PeAudioVideoModel``): each crop is a one-frame video for the video tower
    (``video_model.video_encoder`` → ``video_head``; frames prepared by its video processor),
    each audio segment goes through the audio tower (``audio_model.audio_encoder`` →
    ``audio_head``; mixed down to mono, resampled to its feature extractor's rate, prepared by
    that feature extractor). These are the embeddings ``PeAudioVideoModel.forward`` multiplies
    into ``logits_audio_video = scale · a @ v.T + bias``; the calibrated score of a proposal is
    ``sigmoid`` of that logit. Returned un-normalised, as the model uses them."""

    name = "pe_audio_video"

    def __init__(self, component: Component, device: torch.device, dtype: torch.dtype) -> None:
        self._model, self._processor = component
        self._device = device
        self._dtype = dtype
        self.scoring = BindScoring(
            "calibrated",
            logit_scale=float(self._model.audio_video_logit_scale.float()),
            logit_bias=float(self._model.audio_video_logit_bias.float()),
        )

    @property
    def embed_dim(self) -> int:
        return int(self._model.video_model.video_head.proj.out_features)

    def embed_vision(self, crops: Sequence[Tensor]) -> Tensor:
        if len(crops) == 0:
            return torch.zeros(0, self.embed_dim, device=self._device)
        videos = [crop[None].to(self._device) for crop in crops]  # each crop: a video of one frame
        video = self._model.video_model
        with torch.inference_mode():
            prepared = self._processor.video_processor(
                videos=videos, input_data_format="channels_first", return_tensors="pt"
            )
            pixels = prepared["pixel_values_videos"].to(device=self._device, dtype=self._dtype)
            parts = []
            for chunk in pixels.split(CROPS_PER_FORWARD):
                pooled = video.video_encoder(pixel_values_videos=chunk).pooler_output
                parts.append(video.video_head(pooled).float())
        return torch.cat(parts)

    def embed_audio(self, segments: Sequence[Tensor], sample_rate: int) -> Tensor:
        extractor = self._processor.feature_extractor
        rate = int(extractor.sampling_rate)
        waves = [
            resample(mixdown(_as_channels(segment).detach().float().cpu()), sample_rate, rate).numpy()
            for segment in segments
        ]
        audio = self._model.audio_model
        with torch.inference_mode():
            prepared = extractor(waves, sampling_rate=rate, return_tensors="pt")
            values = prepared["input_values"].to(device=self._device, dtype=self._dtype)
            mask = prepared["padding_mask"].to(self._device)
            pooled = audio.audio_encoder(input_values=values, padding_mask=mask).pooler_output
            return audio.audio_head(pooled).float()


    def embed_text(self, texts: Sequence[str]) -> TextEmbeddings:
        """The processor's tokenizer (padded to the longest, cut at its maximum length) → the text
        model (``text_model``, shared by both towers) → the first token of its last hidden state
        → ``text_video_head`` and ``text_audio_head``, as ``PeAudioVideoModel.forward`` computes
        ``text_video_embeds`` / ``text_audio_embeds``. (transformers 5.24's own
        ``get_text_audio_embeds`` / ``get_text_video_embeds`` fail: they call a
        ``get_text_embeds`` the sub-models lack, and ``PeAudioModel.get_text_audio_embeds`` reads
        hidden states it does not ask for.)"""
        tokens = self._processor.tokenizer(_check_texts(texts), padding=True, truncation=True, return_tensors="pt")
        model = self._model
        with torch.inference_mode():
            out = model.text_model(
                input_ids=tokens["input_ids"].to(self._device),
                attention_mask=tokens["attention_mask"].to(self._device),
                output_hidden_states=True,
            )
            first = out.hidden_states[-1][:, 0]
            vision = model.video_model.text_video_head(first).float()
            audio = model.audio_model.text_audio_head(first).float()
        video_model, audio_model = model.video_model, model.audio_model
        return TextEmbeddings(
            vision=vision,
            audio=audio,
            vision_scale=float(video_model.text_video_logit_scale.float()),
            vision_bias=float(video_model.text_video_logit_bias.float()),
            audio_scale=float(audio_model.text_audio_logit_scale.float()),
            audio_bias=float(audio_model.text_audio_logit_bias.float()),
        )


def _as_channels(segment: Tensor) -> Tensor:
    return segment[None] if segment.ndim == 1 else segment


def binder_of(models: Models) -> Binder:
    """The ``binder`` component of ``models`` behind the :class:`Binder` interface: an
    :class:`ImageBindBinder` or a :class:`PeAvBinder`."""
    models = check_models(models)
    loaded: Union[nn.Module, Any] = models.binder
    if isinstance(loaded, ImageBind):
        return ImageBindBinder(models)
    return PeAvBinder(loaded, models.device, models.dtype)
