"""``cmsf models --check``: load each component a run would use and run its stage once on a
synthetic input (a seeded random 480×640 frame, one second of seeded random audio), timing the load
and the forward and, on CUDA, the peak GPU memory of both."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from cmsf.models.loading import Models
from cmsf.stages.binding import binder_of
from cmsf.stages.concepts import segment_concepts
from cmsf.stages.grounding import ground
from cmsf.stages.proposals import propose_boxes
from cmsf.stages.segmentation import sam_masks
from cmsf.stages.tagging import tag_audio

__all__ = ["CheckResult", "check_component", "synthetic_inputs"]

_SIDE = (480, 640)  # height, width: an AVSBench-like frame
_RATE = 16000  # Hz


@dataclass(frozen=True)
class CheckResult:
    """One component's check: ``error`` (empty when it loaded and ran), ``load_seconds``,
    ``forward_seconds`` (None when it did not get there) and ``peak_bytes`` (the peak GPU memory
    allocated during its load and forward, the components loaded before it included; None on a
    device other than CUDA)."""

    component: str
    error: str
    load_seconds: Optional[float]
    forward_seconds: Optional[float]
    peak_bytes: Optional[int]

    @property
    def ok(self) -> bool:
        return not self.error


def synthetic_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random frame ``Tensor[3, 480, 640]`` uint8 and one second of seeded random audio
    ``Tensor[16000]`` float32 (16 kHz, amplitude about 0.1)."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, *_SIDE), dtype=torch.uint8, generator=generator)
    return image, 0.1 * torch.randn(_RATE, generator=generator)


def _stage(name: str, models: Models) -> Callable[[], object]:
    """One forward of component ``name`` through its stage."""
    image, audio = synthetic_inputs()
    box = torch.tensor([[100.0, 80.0, 400.0, 360.0]])
    stages: dict[str, Callable[[], object]] = {
        "ast": lambda: tag_audio([audio], _RATE, models),
        "grounding_dino": lambda: ground([image], [["dog"]], models),
        "sam": lambda: sam_masks([image], models, boxes=[box]),
        "owlv2": lambda: propose_boxes([image], models),
        "mavl": lambda: propose_boxes([image], models),
        "sam3": lambda: segment_concepts([image], [["dog"]], models),
    }
    if name in stages:
        return stages[name]
    binder = binder_of(models)  # imagebind or binder
    return lambda: (binder.embed_vision([image]), binder.embed_audio([audio], _RATE))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_component(models: Models, name: str) -> CheckResult:
    """Load component ``name`` of ``models`` (timed) and run its stage once on
    :func:`synthetic_inputs` (timed). A failure of either is returned as ``error`` (the exception's
    type and message), not raised."""
    device = models.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    load_seconds = forward_seconds = None
    try:
        start = time.perf_counter()
        models.get(name)
        _synchronize(device)
        load_seconds = time.perf_counter() - start
        run = _stage(name, models)
        start = time.perf_counter()
        with torch.inference_mode():
            run()
        _synchronize(device)
        forward_seconds = time.perf_counter() - start
        error = ""
    except Exception as failure:  # noqa: BLE001 - every failure is reported on its row
        error = f"{type(failure).__name__}: {failure}"
    peak = int(torch.cuda.max_memory_allocated(device)) if cuda else None
    return CheckResult(name, error, load_seconds, forward_seconds, peak)
