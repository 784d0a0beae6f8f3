"""ImageBind's vision, audio and text encoders, readable top to bottom, loading Meta's checkpoint.

OWOD-BIND and SAM-BIND score image crops against a sound in ImageBind's joint embedding space
(Girdhar et al., *ImageBind: One Embedding Space To Bind Them All*, CVPR 2023). This module is a
re-implementation of the ImageBind towers cmsf needs, numerically equal to Meta's
``imagebind.models.imagebind_model.ImageBindModel`` (facebookresearch/ImageBind) for the
``vision``, ``audio`` and ``text`` modalities, and of the input preparation of Meta's
``imagebind/data.py``. The text tower and tokenizer are in :mod:`cmsf.models.imagebind_text`,
the blocks all towers share in :mod:`cmsf.models.imagebind_blocks`.

Structure (module and parameter names follow Meta's, so ``imagebind_huge.pth`` loads as is)::

    image [B, 3, 224, 224]                          log-mel clips [B·clips, 1, 128, 204]
      │ repeat as a 2-frame video, Conv3d (2,14,14)   │ Conv2d 16×16 stride 10, LayerNorm
      │ → 16×16 = 256 patch tokens                    │ → 12×19 = 228 patch tokens
      │ + cls token, + learnable position embedding   │ + cls token, + learnable position embedding
      │ LayerNorm (ε 1e-6)                            │
      │ ViT blocks (pre-norm, MHA, GELU MLP ×4)       │ ViT blocks, each attention with one extra
      │                                               │ learnt key/value token (``bias_k/bias_v``)
      │ LayerNorm, cls token, Linear (no bias)        │ LayerNorm, cls token, Linear (no bias)
      ▼ L2-normalise                                  ▼ L2-normalise, × 20, mean over clips
    Tensor[B, out_embed_dim]                        Tensor[B, out_embed_dim]

``load_imagebind`` builds the model (ViT-H vision tower, ViT-B audio tower, 1024-d joint space
by default, as ``imagebind_huge``) and loads Meta's weights; ``imagebind_vision_inputs`` and
``imagebind_audio_inputs`` turn images and waveforms into the model's inputs exactly as Meta's
``load_and_transform_vision_data`` / ``load_and_transform_audio_data`` do.

Attention is computed with ``torch.nn.functional.scaled_dot_product_attention`` (Meta uses
``nn.MultiheadAttention``; the computation is the same), so fused kernels are used on GPU and
``bfloat16`` works.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Mapping, Optional, Union

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor, nn

from cmsf.checks import resolve_device, resolve_dtype
from cmsf.io.inputs import Images, as_image_list, as_waveform, check_sample_rate, resample
from cmsf.io.inputs import mixdown as _mixdown
from cmsf.models.imagebind_blocks import (
    LogitScale,
    Normalize,
    PatchStem,
    RepeatAsVideo,
    Tokenizer,
    Transformer,
    head,
)
from cmsf.models.imagebind_text import check_tokens, text_tower
from cmsf.models.resampling import pil_resize_center_crop, resize_center_crop, resize_is_large

CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
CHECKPOINT_FILENAME = "imagebind_huge.pth"

IMAGE_SIZE = 224  # pixels: the vision tower's input is Tensor[B, 3, 224, 224]
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's RGB mean, for pixel values in [0, 1]
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

AUDIO_SAMPLE_RATE = 16000  # Hz
AUDIO_NUM_MEL_BINS = 128
AUDIO_TARGET_LEN = 204  # fbank frames (10 ms apart) per clip, zero-padded or cut
AUDIO_CLIP_DURATION = 2  # seconds per clip
AUDIO_CLIPS_PER_ITEM = 3
AUDIO_MEAN = -4.268  # of the log-mel fbank, over Meta's training set
AUDIO_STD = 9.138
AUDIO_LOGIT_SCALE = 20.0  # audio embeddings are L2-normalised then multiplied by this

# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class ImageBind(nn.Module):
    """ImageBind's vision, audio and text towers (``imagebind_huge`` sizes by default).

    The keyword arguments are those of Meta's ``ImageBindModel`` for these modalities. The
    parameters are randomly initialised: use ``load_imagebind`` for the trained weights. Use
    ``embed_vision`` / ``embed_audio`` / ``embed_text`` (``forward`` is not defined).

    Args:
        vision_embed_dim, vision_num_blocks, vision_num_heads: the vision ViT (ViT-H/14:
            1280, 32, 16). Its input is fixed at 224×224 pixels (16×16 patches of 14 pixels).
        audio_embed_dim, audio_num_blocks, audio_num_heads: the audio ViT (ViT-B: 768, 12, 12).
        text_embed_dim, text_num_blocks, text_num_heads: the causal text transformer (OpenCLIP
            ViT-H's: 1024, 24, 16; Meta's ``ImageBindModel`` defaults are 768, 12, 12).
        out_embed_dim: size of the joint embedding space (1024).
        audio_kernel_size, audio_stride: the audio patch convolution (16, stride 10).
        audio_num_mel_bins, audio_target_len: the log-mel input size (128 bins × 204 frames).
    """

    def __init__(
        self,
        *,
        vision_embed_dim: int = 1280,
        vision_num_blocks: int = 32,
        vision_num_heads: int = 16,
        audio_embed_dim: int = 768,
        audio_num_blocks: int = 12,
        audio_num_heads: int = 12,
        text_embed_dim: int = 1024,
        text_num_blocks: int = 24,
        text_num_heads: int = 16,
        out_embed_dim: int = 1024,
        audio_kernel_size: int = 16,
        audio_stride: int = 10,
        audio_num_mel_bins: int = AUDIO_NUM_MEL_BINS,
        audio_target_len: int = AUDIO_TARGET_LEN,
    ) -> None:
        super().__init__()
        for name, value in [
            ("vision_embed_dim", vision_embed_dim), ("vision_num_blocks", vision_num_blocks),
            ("vision_num_heads", vision_num_heads), ("audio_embed_dim", audio_embed_dim),
            ("audio_num_blocks", audio_num_blocks), ("audio_num_heads", audio_num_heads),
            ("text_embed_dim", text_embed_dim), ("text_num_blocks", text_num_blocks),
            ("text_num_heads", text_num_heads), ("out_embed_dim", out_embed_dim),
            ("audio_kernel_size", audio_kernel_size), ("audio_stride", audio_stride),
            ("audio_num_mel_bins", audio_num_mel_bins), ("audio_target_len", audio_target_len),
        ]:  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if audio_kernel_size > min(audio_num_mel_bins, audio_target_len):
            raise ValueError(
                f"audio_kernel_size: {audio_kernel_size} exceeds the log-mel input "
                f"{audio_num_mel_bins}×{audio_target_len}"
            )
        self.out_embed_dim = out_embed_dim
        self.audio_input_shape = (1, audio_num_mel_bins, audio_target_len)

        vision, audio = _tokenizers(
            vision_embed_dim, audio_embed_dim, audio_kernel_size, audio_stride, audio_num_mel_bins, audio_target_len
        )
        self.modality_preprocessors = nn.ModuleDict({"vision": vision, "audio": audio})
        self.modality_trunks = nn.ModuleDict(
            {
                "vision": Transformer(
                    vision_embed_dim, vision_num_blocks, vision_num_heads, pre_norm=True, bias_kv=False
                ),
                "audio": Transformer(
                    audio_embed_dim, audio_num_blocks, audio_num_heads, pre_norm=False, bias_kv=True
                ),
            }
        )
        self.modality_heads = nn.ModuleDict(
            {"vision": head(vision_embed_dim, out_embed_dim), "audio": head(audio_embed_dim, out_embed_dim)}
        )
        self.modality_postprocessors = nn.ModuleDict(
            {"vision": Normalize(), "audio": nn.Sequential(Normalize(), LogitScale(AUDIO_LOGIT_SCALE))}
        )
        text = text_tower(text_embed_dim, text_num_blocks, text_num_heads, out_embed_dim)
        self.modality_preprocessors["text"] = text.preprocessor
        self.modality_trunks["text"] = text.trunk
        self.modality_heads["text"] = text.head
        self.modality_postprocessors["text"] = text.postprocessor

    @property
    def device(self) -> torch.device:
        return self.modality_preprocessors["vision"].cls_token.device

    @property
    def dtype(self) -> torch.dtype:
        return self.modality_preprocessors["vision"].cls_token.dtype

    def _embed(self, modality: str, x: Tensor) -> Tensor:
        x = self.modality_preprocessors[modality](x.to(device=self.device, dtype=self.dtype))
        x = self.modality_trunks[modality](x)
        x = self.modality_heads[modality](x).float()
        return self.modality_postprocessors[modality](x)

    @torch.no_grad()
    def embed_vision(self, pixel_values: Tensor) -> Tensor:
        """Image embeddings, as Meta's ``ImageBindModel({"vision": pixel_values})["vision"]``.

        Args:
            pixel_values: ``Tensor[B, 3, 224, 224]`` normalised images (``imagebind_vision_inputs``);
                moved to the model's device and dtype.

        Returns:
            ``Tensor[B, out_embed_dim]`` float32 on the model's device, L2-normalised.
        """
        _check_shape(pixel_values, "pixel_values", (3, IMAGE_SIZE, IMAGE_SIZE), "B, 3, 224, 224")
        return self._embed("vision", pixel_values)

    @torch.no_grad()
    def embed_audio(self, features: Tensor) -> Tensor:
        """Audio embeddings, as Meta's ``ImageBindModel({"audio": features})["audio"]``.

        Each clip is embedded, L2-normalised and multiplied by the fixed logit scale 20; the
        clips of one item are then averaged (so the result's norm is at most 20, and exactly 20
        for a single clip). This is where Meta's forward averages: after its postprocessor.

        Args:
            features: ``Tensor[B, clips, 1, mel_bins, target_len]`` normalised log-mel clips
                (``imagebind_audio_inputs`` gives one item ``[3, 1, 128, 204]``; stack items for
                a batch); moved to the model's device and dtype.

        Returns:
            ``Tensor[B, out_embed_dim]`` float32 on the model's device.
        """
        _, mel_bins, frames = self.audio_input_shape
        _check_shape(features, "features", self.audio_input_shape, f"B, clips, 1, {mel_bins}, {frames}", clips=True)
        batch, clips = features.shape[:2]
        x = self._embed("audio", features.flatten(0, 1))
        return x.reshape(batch, clips, -1).mean(dim=1)

    @torch.no_grad()
    def embed_text(self, tokens: Tensor) -> Tensor:
        """Text embeddings, as Meta's ``ImageBindModel({"text": tokens})["text"]``.

        The end-of-text token's output, L2-normalised and multiplied by the trained text logit
        scale (``modality_postprocessors.text.1.log_logit_scale``: the norm of every result), so
        that ``embed_vision(x) @ embed_text(t).T`` are the logits Meta's zero-shot classifier uses.

        Args:
            tokens: ``Tensor[N, 77]`` integer token ids (:func:`cmsf.imagebind_text_inputs`);
                moved to the model's device.

        Returns:
            ``Tensor[N, out_embed_dim]`` float32 on the model's device.
        """
        preprocessor = self.modality_preprocessors["text"]
        check_tokens(tokens, preprocessor.token_embedding.num_embeddings)
        tokens = tokens.to(device=self.device, dtype=torch.int64)
        x = self.modality_trunks["text"](preprocessor(tokens))
        return self.modality_postprocessors["text"](self.modality_heads["text"](x, tokens).float())


def _tokenizers(
    vision_dim: int, audio_dim: int, kernel_size: int, stride: int, mel_bins: int, target_len: int
) -> tuple[Tokenizer, Tokenizer]:
    """The vision and audio preprocessors (patch stems, cls tokens, position embeddings)."""
    # Vision: the image is a 2-frame video cut into 2×14×14 tubelets → 1 × 16 × 16 patches.
    patch = 14
    vision_stem = PatchStem(
        nn.Sequential(
            RepeatAsVideo(2),
            nn.Conv3d(3, vision_dim, kernel_size=(2, patch, patch), stride=(2, patch, patch), bias=False),
        )
    )
    # Audio: overlapping 16×16 patches every 10 bins/frames → 12 × 19 patches for 128 × 204.
    audio_stem = PatchStem(
        nn.Conv2d(1, audio_dim, kernel_size=kernel_size, stride=stride, bias=False),
        norm_layer=nn.LayerNorm(audio_dim),  # eps 1e-5, as Meta's
    )
    audio_patches = ((mel_bins - kernel_size) // stride + 1) * ((target_len - kernel_size) // stride + 1)
    return (
        Tokenizer(vision_stem, (IMAGE_SIZE // patch) ** 2, vision_dim),
        Tokenizer(audio_stem, audio_patches, audio_dim),
    )


def _check_shape(x: Tensor, name: str, tail: tuple, expected: str, clips: bool = False) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected Tensor[{expected}], got {type(x).__name__}")
    rank = len(tail) + (2 if clips else 1)
    if x.ndim != rank or tuple(x.shape[-len(tail) :]) != tuple(tail) or 0 in x.shape[: rank - len(tail)]:
        raise ValueError(f"{name}: expected Tensor[{expected}], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")


# ---------------------------------------------------------------------------------------------
# Loading Meta's checkpoint
# ---------------------------------------------------------------------------------------------

_OWN_PREFIXES = tuple(
    f"{part}.{modality}."
    for part in ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")
    for modality in ("vision", "audio", "text")
)
_RECOMPUTED = ("modality_preprocessors.text.mask",)  # Meta's fixed causal mask: the blocks are causal


def default_checkpoint_path() -> str:
    """Where ``load_imagebind()`` downloads the official checkpoint when it finds none
    (:func:`checkpoint_candidates`): ``<torch hub dir>/checkpoints/imagebind_huge.pth``
    (``torch.hub.get_dir()``, by default ``~/.cache/torch/hub``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", CHECKPOINT_FILENAME)


def checkpoint_candidates() -> list[str]:
    """Where ``load_imagebind()`` looks for the official checkpoint, in order:
    ``.checkpoints/imagebind_huge.pth`` in the working folder (where Meta's own
    ``imagebind_huge(pretrained=True)`` downloads it), then :func:`default_checkpoint_path`."""
    return [os.path.abspath(os.path.join(".checkpoints", CHECKPOINT_FILENAME)), default_checkpoint_path()]


def find_checkpoint() -> Optional[str]:
    """The first of :func:`checkpoint_candidates` that is a file, or None (nothing downloaded)."""
    return next((path for path in checkpoint_candidates() if os.path.isfile(path)), None)


def _download_checkpoint() -> str:
    found = find_checkpoint()
    if found is not None:
        return found
    path = default_checkpoint_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(CHECKPOINT_URL, path, progress=True)
    except Exception as error:  # network, HTTP, disk: the remedy is the same
        raise RuntimeError(
            f"could not download the ImageBind checkpoint from {CHECKPOINT_URL} to {path} "
            f"({type(error).__name__}: {error}). Download it on a machine with internet access and "
            f"either copy it to {path} or to .checkpoints/{CHECKPOINT_FILENAME} in the working folder, or pass "
            f"its path: load_imagebind(checkpoint='/path/to/{CHECKPOINT_FILENAME}')"
        ) from error
    return path


def _load_state(path: str) -> object:
    """``torch.load`` of a weights-only file, memory-mapped where the format allows (the zip format
    of torch ≥ 1.6), so that the other modalities' tensors are never read."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint: no such file {path!r}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except Exception as error:  # noqa: BLE001 - pickle, zip, EOF errors: not a checkpoint; one line
        first = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:100]  # torch's first sentence
        reason = f"{type(error).__name__}: {first}" if first else f"{type(error).__name__}, empty or cut short"
        raise ValueError(
            f"checkpoint: {path} is not a state dict that torch.load reads with weights_only=True ({reason}); "
            "expected ImageBind's .pth (e.g. imagebind_huge.pth)"
        ) from None


def load_imagebind(
    checkpoint: Union[str, "os.PathLike[str]", Mapping[str, Tensor], None] = None,
    *,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
    **sizes: int,
) -> ImageBind:
    """Build ``ImageBind(**sizes)`` and load Meta's weights into it.

    Args:
        checkpoint: a state dict in Meta's format (``ImageBindModel.state_dict()``, e.g. the
            official ``imagebind_huge.pth``): a file path, or the dict itself. ``None``: the
            official checkpoint: the first file of ``checkpoint_candidates()``
            (``./.checkpoints/imagebind_huge.pth``, then ``default_checkpoint_path()``), else
            downloaded from ``CHECKPOINT_URL`` (4.5 GB) to ``default_checkpoint_path()``.
        device: where the model lives; CUDA if available when ``None``.
        dtype: ``torch.float32`` (default) or ``torch.bfloat16`` for the weights and compute;
            the output scaling is done in float32 either way.
        **sizes: ``ImageBind``'s keyword arguments (``imagebind_huge`` when none are given).

    Returns:
        the model in eval mode, with ``requires_grad`` off.

    Raises:
        ValueError: a vision/audio/text parameter of the model is missing from the checkpoint or
            has another shape there, or the checkpoint has vision/audio/text parameters the model
            lacks (other sizes); the message names the parameter. Parameters of the other
            modalities (depth, thermal, imu) and Meta's fixed causal text mask are ignored.
        RuntimeError: the download failed (the message says how to provide the file instead).
    """
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)

    if checkpoint is None:
        checkpoint = _download_checkpoint()
    if isinstance(checkpoint, Mapping):
        state = checkpoint
    else:
        state = _load_state(os.fspath(checkpoint))
        if not isinstance(state, Mapping):
            raise ValueError(f"checkpoint: expected a state dict in {checkpoint}, got {type(state).__name__}")

    with torch.device("meta"):  # no memory, no random init: every tensor comes from the checkpoint
        model = ImageBind(**sizes)
    expected = model.state_dict()
    unexpected = [k for k in state if k.startswith(_OWN_PREFIXES) and k not in expected and k not in _RECOMPUTED]
    if unexpected:
        raise ValueError(
            f"checkpoint: unexpected parameter {unexpected[0]!r} ({len(unexpected)} in all): the checkpoint "
            f"was made for other ImageBind sizes than {sizes or 'imagebind_huge'}"
        )
    loaded = {}
    for key, like in expected.items():
        if key not in state:
            missing = [k for k in expected if k not in state]
            raise ValueError(
                f"checkpoint: parameter {key!r} is missing ({len(missing)} missing in all); "
                f"expected a state dict of Meta's ImageBindModel"
            )
        value = state[key]
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(like.shape):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(
                f"checkpoint: parameter {key!r} has shape {got}, expected {tuple(like.shape)} "
                f"for ImageBind sizes {sizes or 'imagebind_huge'}"
            )
        keep_float32 = key.startswith("modality_postprocessors.")  # the logit scale
        loaded[key] = value.to(device=device, dtype=torch.float32 if keep_float32 else dtype, copy=True)
    model.load_state_dict(loaded, strict=True, assign=True)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


RESAMPLERS = ("auto", "pil", "torch")
"""How :func:`imagebind_vision_inputs` resizes: all three give the same pixels, bit for bit."""


def imagebind_vision_inputs(images: Images, *, resampler: str = "auto") -> Tensor:
    """Images → the vision tower's input, exactly as Meta's ``load_and_transform_vision_data``.

    Meta's transform works on the PIL image: ``Resize(224, bicubic)`` (shorter side to 224
    pixels, the longer one to ``int(224 · long / short)``, PIL's bicubic filter, which
    antialiases when shrinking), ``CenterCrop(224)``, ``ToTensor`` (÷ 255), ``Normalize`` with
    CLIP's mean and std.

    Args:
        images: a list of PIL images or ``Tensor[3, H, W]`` uint8 (any sizes, one device), or one
            ``Tensor[B, 3, H, W]`` uint8 (see ``cmsf.io.inputs.as_image_list``).
        resampler: how the resize and crop are computed; every choice gives the same pixels, bit
            for bit (``tests/test_resampling.py``):

            - ``"pil"``: Meta's own way, each image converted to PIL and resized whole (on the
              CPU, the resizes of a batch on a thread pool: PIL releases the GIL);
            - ``"torch"``: :func:`cmsf.models.resampling.resize_center_crop`, Pillow's arithmetic in
              batched integer tensor ops on the images' device, computing only the 224 × 224
              pixels the centre crop keeps;
            - ``"auto"`` (default): ``"torch"`` for images on a GPU (no copy to the host) and, on
              the CPU, for thin images whose full resize would be over 4 × the crop (a 1-pixel
              sliver is resized to 224 × 50 176 by PIL); ``"pil"`` for the others on the CPU,
              where PIL's C loops are faster.

    Returns:
        ``Tensor[B, 3, 224, 224]`` float32 on the images' device (the CPU for PIL images).
    """
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler: expected one of {', '.join(RESAMPLERS)}, got {resampler!r}")
    image_list = as_image_list(images)
    devices = {image.device for image in image_list}
    if len(devices) > 1:
        raise ValueError(f"images: expected images on one device, got {sorted(map(str, devices))}")
    device = image_list[0].device
    out = torch.empty(len(image_list), 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    for start in range(0, len(image_list), _IMAGES_PER_CHUNK):  # cache-sized steps, linear in N
        chunk = image_list[start : start + _IMAGES_PER_CHUNK]
        out[start : start + len(chunk)] = _normalise(_resize_and_crop(chunk, resampler))
    return out


_IMAGES_PER_CHUNK = 64
"""Images :func:`imagebind_vision_inputs` resizes and normalises at a time: on the CPU, larger
steps leave the caches and cost more per image."""


def _resize_and_crop(images: list[Tensor], resampler: str) -> Tensor:
    """Meta's resize and centre crop of ``images`` (one device) by ``resampler``: ``Tensor[N, 3,
    224, 224]`` uint8 on their device."""
    device = images[0].device
    if resampler == "torch" or (resampler == "auto" and device.type != "cpu"):
        return resize_center_crop(images, IMAGE_SIZE)
    pixels = torch.empty(len(images), 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8, device=device)
    thin = [
        i for i, image in enumerate(images)
        if resampler == "auto" and resize_is_large(image.shape[1], image.shape[2], IMAGE_SIZE)
    ]  # fmt: skip
    if thin:
        pixels[thin] = resize_center_crop([images[i] for i in thin], IMAGE_SIZE)
    wide = [i for i in range(len(images)) if i not in set(thin)]
    if wide:
        pixels[wide] = pil_resize_center_crop([images[i].cpu() for i in wide], IMAGE_SIZE).to(device)
    return pixels


def _normalise(pixels: Tensor) -> Tensor:
    """``ToTensor`` (÷ 255) then ``Normalize(IMAGE_MEAN, IMAGE_STD)`` of ``Tensor[N, 3, H, W]``
    uint8, as a look-up of the 256 values each channel can take, computed with the same float32
    operations in the same order (so the same bits) in one pass instead of four."""
    mean = torch.tensor(IMAGE_MEAN, device=pixels.device).view(3, 1)
    std = torch.tensor(IMAGE_STD, device=pixels.device).view(3, 1)
    table = torch.arange(256, dtype=torch.float32, device=pixels.device).view(1, 256).div(255).sub(mean).div(std)
    return torch.stack([torch.take(table[c], pixels[:, c].long()) for c in range(3)], dim=1)


def audio_clip_bounds(num_samples: int, sample_rate: int = AUDIO_SAMPLE_RATE) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of the 3 clips of 2 s that Meta's audio loader reads.

    Meta uses pytorchvideo's ``ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=3)``
    on the waveform's duration ``d = num_samples / sample_rate`` (a float): clip ``i`` starts at
    ``i · max(d − 2, 0) / 2`` seconds (exact fractions) and ends 2 s later, and samples
    ``int(start · rate)`` to ``int(end · rate)`` are read. Audio longer than 2 s thus gives three
    evenly spaced clips, overlapping when shorter than 6 s, the last ending at the end. Audio of
    2 s or less gives three times the range ``[0, 2 s)``: the whole waveform, three times.

    Returns:
        three ``(start, end)`` pairs; ``end`` may exceed ``num_samples`` (the slice stops there).
    """
    duration = num_samples / sample_rate
    clip = Fraction(AUDIO_CLIP_DURATION)
    last_start = Fraction(max(duration - clip, 0))
    step = Fraction(last_start, max(AUDIO_CLIPS_PER_ITEM - 1, 1))
    bounds = []
    for i in range(AUDIO_CLIPS_PER_ITEM):
        start = step * i
        bounds.append((int(start * sample_rate), int((start + clip) * sample_rate)))
    return bounds


def imagebind_audio_inputs(waveform: Tensor, sample_rate: int, *, mixdown: bool = False) -> Tensor:
    """One waveform → the audio tower's input, as Meta's ``load_and_transform_audio_data``.

    Steps (Meta's, in order):

    1. resample to 16 kHz (``torchaudio.functional.resample``), in float32;
    2. cut three 2-second clips spread evenly over the audio (``audio_clip_bounds``);
    3. per clip: subtract the clip's mean (over all channels) *in place*, then a Kaldi log-mel
       fbank of the **first channel** (``torchaudio.compliance.kaldi.fbank``: 25 ms Hanning
       windows every 10 ms, 128 mel bins, HTK-compatible, no dither, no energy), zero-padded
       or cut to 204 frames, normalised with mean −4.268 and std 9.138.

    As in Meta's loader, the mean removal writes into the (copied) waveform, so when clips
    overlap (audio shorter than 6 s) a later clip sees samples from which an earlier clip's
    mean was already removed. This is reproduced exactly.

    Short audio (2 s or less, e.g. one second of AVSBench): Meta's loader does not repeat or
    loop the sound. All three clips are the whole waveform (the same fbank three times, up to
    rounding from the repeated mean removal); a 1 s waveform gives 98 fbank frames, the other
    106 frames are zeros in the log-mel domain (before normalisation, so they become
    4.268 / 9.138 ≈ 0.467). Averaging the three equal clip embeddings gives the embedding of one.

    Args:
        waveform: ``Tensor[C, S]`` or ``Tensor[S]`` float, at least 25 ms long at 16 kHz.
        sample_rate: of ``waveform``, in Hz.
        mixdown: average the channels first instead of using the first channel only (Meta's
            behaviour, the default).

    Returns:
        ``Tensor[3, 1, 128, 204]`` float32 on the waveform's device; stack items for
        ``ImageBind.embed_audio``.
    """
    waveform = as_waveform(waveform)
    sample_rate = check_sample_rate(sample_rate)
    if mixdown:
        waveform = _mixdown(waveform).unsqueeze(0)
    # float32 as torchaudio.load gives Meta; a private copy, since mean removal works in place
    waveform = resample(waveform.float(), sample_rate, AUDIO_SAMPLE_RATE).to(torch.float32, copy=True)
    window = AUDIO_SAMPLE_RATE * 25 // 1000
    if waveform.shape[1] < window:
        raise ValueError(
            f"waveform: {waveform.shape[1]} samples at {AUDIO_SAMPLE_RATE} Hz is shorter than one "
            f"25 ms fbank window ({window} samples)"
        )
    clips = []
    for start, end in audio_clip_bounds(waveform.shape[1]):
        clip = waveform[:, start:end]  # a view: the in-place mean removal reaches `waveform`
        clip -= clip.mean()
        fbank = kaldi.fbank(
            clip,
            htk_compat=True,
            sample_frequency=AUDIO_SAMPLE_RATE,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=AUDIO_NUM_MEL_BINS,
            dither=0.0,
            frame_length=25,
            frame_shift=10,
        ).T  # [128, frames], first channel
        frames = fbank.shape[1]
        if frames < AUDIO_TARGET_LEN:
            fbank = F.pad(fbank, (0, AUDIO_TARGET_LEN - frames), value=0.0)
        else:
            fbank = fbank[:, :AUDIO_TARGET_LEN]
        clips.append((fbank - AUDIO_MEAN) / AUDIO_STD)
    return torch.stack(clips).unsqueeze(1)
