"""Models with seeded random weights, built in code: the ``tiny`` preset (CPU tests, smoke runs)
and ``paper-random`` (the paper checkpoints' architectures, for speed benchmarks).

For each Hugging Face component of the paper, its family's random config and processor from the
family table (:func:`random_config`, :func:`random_processor`; the data is in
:mod:`cmsf.models.random_configs`); :func:`build_random` draws the weights from a fixed seed per
component (:data:`SEEDS`) without touching the caller's random state, so a preset is
deterministic whatever order its components are first used in. GroundingDINO's random presets
get a small character-level BERT tokenizer built in code
(:func:`cmsf.models.random_configs.tiny_bert_tokenizer`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import transformers
from torch import nn

from cmsf.models.families import default_family

# One fixed seed per component: random presets are deterministic and independent of the order
# in which components are first used.
SEEDS = {"ast": 1001, "grounding_dino": 1002, "sam": 1003, "owlv2": 1004, "imagebind": 1005, "mavl": 1006}

TINY_IMAGEBIND_SIZES = dict(
    vision_embed_dim=32,
    vision_num_blocks=1,
    vision_num_heads=2,
    audio_embed_dim=32,
    audio_num_blocks=1,
    audio_num_heads=2,
    text_embed_dim=32,
    text_num_blocks=1,
    text_num_heads=2,
    out_embed_dim=16,
)
HUGE_IMAGEBIND_SIZES = dict(
    vision_embed_dim=1280,
    vision_num_blocks=32,
    vision_num_heads=16,
    audio_embed_dim=768,
    audio_num_blocks=12,
    audio_num_heads=12,
    text_embed_dim=1024,
    text_num_blocks=24,
    text_num_heads=16,
    out_embed_dim=1024,
)


def random_config(name: str, size: str) -> transformers.PretrainedConfig:
    """The config of a randomly initialised component of the paper's family: ``size="tiny"``
    (CPU tests) or ``"paper"`` (the paper checkpoints' architectures)."""
    return default_family(name).random.config(size)


def random_processor(name: str, size: str, config: transformers.PretrainedConfig) -> Any:
    """Processors built in code (no download) that match the component's config."""
    return default_family(name).random.processor(config, size == "tiny")


def _forked_rng(device: torch.device) -> Any:
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    return torch.random.fork_rng(devices=devices)


def build_random(build: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
    """Build a module with weights drawn from ``seed``, on ``device``, without touching the
    caller's random state."""
    with _forked_rng(device):
        torch.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        with torch.device(device):
            return build()


def soften_tiny(name: str, model: nn.Module) -> None:
    """The tiny random model of component ``name``'s family made to give the tests something to
    threshold, where it needs it (:attr:`cmsf.models.families.RandomBuild.soften_tiny`: tiny
    OWLv2's objectness and box heads)."""
    soften = default_family(name).random.soften_tiny
    if soften is not None:
        soften(model)
