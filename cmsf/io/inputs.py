"""The forms cmsf's functions accept, checked in one place: images, waveforms, masks, text
prompts; and the audio helpers every stage shares (mixdown, resampling, cutting a waveform into
segments).

- images: a list of ``Tensor[3, H, W]`` uint8 or PIL images (sizes may differ), or one
  ``Tensor[B, 3, H, W]`` uint8;
- waveforms: ``Tensor[C, S]`` or ``Tensor[S]`` float, with an explicit ``sample_rate`` in Hz;
- masks: ``Tensor[H, W]``, any non-zero value foreground;
- prompts: one list of strings for every image, or one list of strings per image.

Bad input is a ``ValueError`` naming the argument and saying what was expected.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torchaudio.functional as AF
from PIL import Image
from torch import Tensor

from cmsf.checks import check_positive_int

ImageLike = Union[Tensor, Image.Image]
Images = Union[Tensor, Sequence[ImageLike]]
Waveforms = Union[Tensor, Sequence[Tensor]]
Prompts = Union[Sequence[str], Sequence[Sequence[str]]]


def as_image_list(images: Images, name: str = "images") -> list[Tensor]:
    """Normalise ``images`` to a non-empty list of ``Tensor[3, H, W]`` uint8 (CPU or not).

    Args:
        images: a list of ``Tensor[3, H, W]`` uint8 or PIL images, or one ``Tensor[B, 3, H, W]``
            uint8 (a single ``Tensor[3, H, W]`` is refused: wrap it in a list).
        name: the argument's name, used in error messages.

    Raises:
        ValueError: empty batch, wrong rank or channel count, or a non-uint8 tensor.
    """
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(
                f"{name}: expected a list of Tensor[3, H, W] or one Tensor[B, 3, H, W] uint8, "
                f"got a tensor of shape {tuple(images.shape)}"
            )
        images = list(images.unbind(0))
    elif not isinstance(images, (list, tuple)):
        raise ValueError(
            f"{name}: expected a list of Tensor[3, H, W] uint8 / PIL images or a Tensor[B, 3, H, W] "
            f"uint8, got {type(images).__name__}"
        )
    if len(images) == 0:
        raise ValueError(f"{name}: empty batch, expected at least one image")
    return [_as_image(image, f"{name}[{i}]") for i, image in enumerate(images)]


def _as_image(image: ImageLike, name: str) -> Tensor:
    if isinstance(image, Tensor):
        _check_device(image, name, "pixels")
        if image.dtype != torch.uint8:
            raise ValueError(f"{name}: expected a uint8 image tensor, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"{name}: expected Tensor[3, H, W] (RGB), got shape {tuple(image.shape)}")
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"{name}: empty image of shape {tuple(image.shape)}")
        return image
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{name}: empty image of size {image.size} (W, H)")
        return torch.from_numpy(pil_to_rgb(image, name)).permute(2, 0, 1).contiguous()
    raise ValueError(f"{name}: expected Tensor[3, H, W] uint8 or a PIL image, got {type(image).__name__}")


_PIL_RGB_MODES = frozenset({"1", "L", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
"""PIL modes :func:`pil_to_rgb` hands to PIL's own ``convert("RGB")``."""

_SIXTEEN_BIT_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    """A PIL image as ``uint8 [H, W, 3]`` RGB, one rule per mode wherever the image comes from (a
    file, :func:`cmsf.io.media.read_image`, or a PIL image passed directly):

    - ``1``, ``L``, ``P``, ``PA``, ``LA``, ``RGB``, ``RGBA``, ``RGBX``, ``CMYK``, ``YCbCr`` (and
      premultiplied ``La`` / ``RGBa``): PIL's ``convert("RGB")``.
    - 16-bit grey (``I;16``, ``I;16B``, ``I;16L``): the high byte, ``v >> 8``, repeated to three
      channels (PIL's own ``convert`` would clip every value above 255 to white).
    - ``I`` (32-bit integer grey): as 16-bit when every value lies in 0…65535; otherwise refused.
    - ``F`` and any other mode: refused (range unknown).

    Raises:
        ValueError: a refused mode; the message starts with ``name`` and names the mode.
    """
    mode = image.mode
    if mode in _PIL_RGB_MODES:
        return np.array(image.convert("RGB"), dtype=np.uint8)
    if mode in _SIXTEEN_BIT_GREY_MODES or mode == "I":
        grey = np.asarray(image).astype(np.int64)
        if mode == "I" and grey.size and (int(grey.min()) < 0 or int(grey.max()) > 65535):
            raise ValueError(
                f"{name}: a 32-bit integer image (PIL mode I) with values {int(grey.min())}…"
                f"{int(grey.max())}, outside 0…65535; expected an 8- or 16-bit image"
            )
        return np.repeat((grey >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    raise ValueError(
        f"{name}: an image of PIL mode {mode} "
        f"({'floating point, range unknown' if mode == 'F' else 'not supported'}); "
        "expected a 1-, 8- or 16-bit grey, palette, RGB(A) or CMYK image"
    )


def check_sample_rate(sample_rate: int, name: str = "sample_rate") -> int:
    """Return ``sample_rate`` as an int after checking it is a positive whole number of Hz.

    Any integer type is accepted (``int``, ``numpy.int64``, …), and so is a real number with a
    whole value (``16000.0``, ``numpy.float32(16000)``); ``bool``, NaN, infinities, fractions of a
    hertz and non-numbers are a ValueError naming ``name``.
    """
    if _whole_number(sample_rate) is None or sample_rate <= 0:
        raise ValueError(f"{name}: expected a positive integer in Hz, got {sample_rate!r}")
    return int(sample_rate)


def _whole_number(value: Any) -> Optional[int]:
    """``value`` as an int when it is an integer (any integral type, not bool) or a finite real
    number with a whole value; None otherwise (NaN, ±inf, 2.5, "16000", True, …)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    as_float = float(value)
    if not math.isfinite(as_float) or not as_float.is_integer():
        return None
    return int(as_float)


def as_waveform(waveform: Tensor, name: str = "waveform") -> Tensor:
    """Check one waveform and return it as ``Tensor[C, S]`` floating point.

    Accepts ``Tensor[S]`` (mono) or ``Tensor[C, S]``; refuses integer dtypes, empty audio, a
    tensor on the meta device, more channels than samples (channels last, ``[S, C]``: named by
    its shape), non-finite samples and samples above :data:`MAX_AMPLITUDE` in magnitude.
    """
    if not isinstance(waveform, Tensor):
        raise ValueError(f"{name}: expected a Tensor[C, S] or Tensor[S], got {type(waveform).__name__}")
    if not waveform.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point waveform, got dtype {waveform.dtype}")
    _check_device(waveform, name, "samples")
    if waveform.ndim == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.ndim != 2:
        raise ValueError(f"{name}: expected Tensor[C, S] or Tensor[S], got shape {tuple(waveform.shape)}")
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise ValueError(f"{name}: empty audio of shape {tuple(waveform.shape)}")
    if waveform.shape[0] > waveform.shape[1]:
        raise ValueError(
            f"{name}: shape {tuple(waveform.shape)} reads as {waveform.shape[0]} channels of "
            f"{waveform.shape[1]} samples; expected Tensor[C, S], channels first (channels last? pass "
            f"{name}.T)"
        )
    if not bool(torch.isfinite(waveform).all()):
        raise ValueError(f"{name}: contains NaN or infinite samples")
    peak = float(waveform.abs().max())
    if peak > MAX_AMPLITUDE:
        raise ValueError(
            f"{name}: peak amplitude {peak:.3g}; expected samples of at most {MAX_AMPLITUDE:g} in magnitude "
            "(float audio lies in [-1, 1]; the audio models' filterbanks overflow far above that)"
        )
    return waveform


MAX_AMPLITUDE = 1e6
"""The largest sample magnitude :func:`as_waveform` accepts. Float audio lies in [-1, 1] (integer
audio scaled as is, ±32768, passes too); far above, the squared spectra of the audio models'
filterbanks overflow float32 into NaN embeddings."""


def _check_device(tensor: Tensor, name: str, what: str) -> None:
    """Refuse a tensor on the meta device: it has a shape but no values to compute with."""
    if tensor.device.type == "meta":
        raise ValueError(f"{name}: a tensor on the meta device holds no {what}; expected one on the CPU or a GPU")


def as_waveform_list(waveforms: Waveforms, name: str = "waveforms") -> list[Tensor]:
    """Normalise a batch of audio segments to a non-empty list of ``Tensor[C, S]`` float.

    Args:
        waveforms: a list of ``Tensor[C, S]`` / ``Tensor[S]``, or one ``Tensor[B, C, S]`` /
            ``Tensor[B, S]``. Items of a list may differ in length and channel count.
    """
    if isinstance(waveforms, Tensor):
        if waveforms.ndim not in (2, 3):
            raise ValueError(
                f"{name}: expected a list of Tensor[C, S] / Tensor[S] or one Tensor[B, C, S] / "
                f"Tensor[B, S], got a tensor of shape {tuple(waveforms.shape)}"
            )
        waveforms = list(waveforms.unbind(0))
    elif not isinstance(waveforms, (list, tuple)):
        raise ValueError(
            f"{name}: expected a list of Tensor[C, S] or a Tensor[B, C, S], got {type(waveforms).__name__}"
        )
    if len(waveforms) == 0:
        raise ValueError(f"{name}: empty batch, expected at least one audio segment")
    return [as_waveform(w, f"{name}[{i}]") for i, w in enumerate(waveforms)]


def mixdown(waveform: Tensor) -> Tensor:
    """``Tensor[C, S]`` → ``Tensor[S]``: the mean over channels."""
    return waveform.mean(dim=0)


def resample(waveform: Tensor, sample_rate: int, target_rate: int) -> Tensor:
    """Resample ``waveform (Tensor[..., S])`` from ``sample_rate`` to ``target_rate`` Hz.

    Uses ``torchaudio.functional.resample`` (windowed sinc, its defaults); a no-op when the rates
    are equal. Computed in float32 at least (float64 stays float64).
    """
    sample_rate = check_sample_rate(sample_rate)
    target_rate = check_sample_rate(target_rate, "target_rate")
    if sample_rate == target_rate:
        return waveform

    work = waveform if waveform.dtype == torch.float64 else waveform.float()
    return AF.resample(work, sample_rate, target_rate)


def split_segments(waveform: Tensor, num_segments: int, name: str = "waveform") -> list[Tensor]:
    """Cut ``waveform (Tensor[C, S] or Tensor[S])`` into ``num_segments`` equal consecutive slices.

    Segment ``t`` covers samples ``[t * S // T, (t + 1) * S // T)``: when S is not a multiple of T
    the slices differ in length by at most one sample, and together they cover the whole waveform.
    This is how a video's audio is paired with its T frames (AVSBench: 5 frames, 5 s, one second
    each).

    Returns:
        a list of T ``Tensor[C, S_t]`` views.
    """
    waveform = as_waveform(waveform, name)
    num_segments = check_positive_int(num_segments, "num_segments")
    total = waveform.shape[-1]
    if total < num_segments:
        raise ValueError(
            f"{name}: {total} samples cannot be cut into {num_segments} non-empty segments"
        )
    bounds = [t * total // num_segments for t in range(num_segments + 1)]
    return [waveform[:, bounds[t] : bounds[t + 1]] for t in range(num_segments)]


def as_mask(mask: Tensor, name: str = "mask") -> Tensor:
    """Check one mask and return it as ``Tensor[H, W]`` bool on the CPU (non-zero = foreground)."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name}: expected Tensor[H, W], got {type(mask).__name__}")
    if mask.ndim != 2 or mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty Tensor[H, W], got shape {tuple(mask.shape)}")
    return (mask.detach().cpu() != 0)



def collapse_whitespace(text: str) -> str:
    """``text`` with runs of whitespace made one space and the ends stripped."""
    return " ".join(text.split())


def as_prompt(prompt: Any, name: str, normalise: Callable[[str], str] = collapse_whitespace) -> str:
    """Check one text prompt and return ``normalise(prompt)``.

    Raises:
        ValueError: ``prompt`` is not a string, or nothing is left of it after ``normalise``.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"{name}: expected a string, got {type(prompt).__name__}")
    normalised = normalise(prompt)
    if not normalised:
        raise ValueError(f"{name}: empty prompt {prompt!r}")
    return normalised


def as_prompt_lists(
    prompts: Any, count: int, normalise: Callable[[str], str] = collapse_whitespace
) -> list[list[str]]:
    """Normalise ``prompts`` to one list of prompts per image (``count`` images).

    Args:
        prompts: one list of strings for every image, or a list with one list of strings per
            image (an image's list may be empty).
        count: the number of images.
        normalise: applied to each prompt (see :func:`as_prompt`).

    Returns:
        ``count`` lists of normalised prompts (new lists: the shared form is copied per image).

    Raises:
        ValueError: naming ``prompts`` (or ``prompts[i][j]``): a string or a non-list, a mixture
            of strings and lists, a number of lists other than ``count``, a prompt that is not a
            string or is empty after ``normalise``.
    """
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise ValueError(
            "prompts: expected a list of strings (the same prompts for every image) or a list with one "
            f"list of strings per image, got {type(prompts).__name__}"
        )
    if all(isinstance(p, str) for p in prompts):
        shared = [as_prompt(p, f"prompts[{i}]", normalise) for i, p in enumerate(prompts)]
        return [list(shared) for _ in range(count)]
    if not all(isinstance(p, (list, tuple)) for p in prompts):
        raise ValueError("prompts: expected a list of strings or a list of lists of strings, not a mixture")
    if len(prompts) != count:
        raise ValueError(f"prompts: expected one list of prompts per image ({count}), got {len(prompts)} lists")
    return [[as_prompt(p, f"prompts[{i}][{j}]", normalise) for j, p in enumerate(per)] for i, per in enumerate(prompts)]
