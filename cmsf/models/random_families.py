"""Seeded-random models of any family in the family table, built in code (no download): the
2025 families (SAM-HQ, SAM 2 / 2.1, EdgeTAM, MM-GroundingDINO, SAM 3, PE-AV), SAM 2.1's and
EdgeTAM's video models (the ``tracker``) as well as the paper's.

Each family has a ``"tiny"`` config (CPU tests: a few thousand to a few hundred thousand
parameters) and a ``"full"`` one (the architecture of the published checkpoint named in
:data:`FULL_CHECKPOINTS`, for speed benchmarks with random weights), held as data by its entry
of :data:`cmsf.models.families.FAMILY_TABLE` (:mod:`cmsf.models.random_configs`).
"""

from __future__ import annotations

from typing import Any, Mapping

import transformers
from torch import nn

from cmsf.models.families import FAMILY_TABLE, Family, families_of, family_named
from cmsf.models.random_configs import tiny_clip_tokenizer

__all__ = [
    "FAMILY_SEEDS",
    "FULL_CHECKPOINTS",
    "RANDOM_FAMILIES",
    "family_config",
    "family_processor",
    "soften_family",
    "tiny_clip_tokenizer",
]

RANDOM_FAMILIES: Mapping[str, tuple[str, ...]] = {
    component: tuple(f.name for f in families_of(component) if f.random is not None)
    for component in dict.fromkeys(f.component for f in FAMILY_TABLE)
    if any(f.random is not None for f in families_of(component))
}
"""The families with seeded-random configs, per component (their config ``model_type``)."""

FAMILY_SEEDS = {"sam3": 1011, "binder": 1012, "tracker": 1013}
"""Seeds of the components that :data:`cmsf.models.random_models.SEEDS` does not cover."""

FULL_CHECKPOINTS: Mapping[str, str] = {f.name: f.random.checkpoint for f in FAMILY_TABLE if f.random is not None}
"""The checkpoint whose architecture each ``"full"`` config reproduces."""


def _random_family(component: str, family: str) -> Family:
    if family not in RANDOM_FAMILIES.get(component, ()):
        raise ValueError(f"family: {component} has no random {family!r} config; expected one of {RANDOM_FAMILIES}")
    return family_named(component, family)


def family_config(component: str, family: str, size: str) -> transformers.PretrainedConfig:
    """The config of a randomly initialised ``family`` (a config ``model_type``) of
    ``component``: ``size="tiny"`` (CPU tests) or ``"full"`` (the architecture of
    :data:`FULL_CHECKPOINTS`\\ [family])."""
    return _random_family(component, family).random.config(size)


def family_processor(component: str, family: str, size: str, config: transformers.PretrainedConfig) -> Any:
    """The processor of a random ``family`` model, built in code to match ``config``: the
    family's image processor (SAM-family segmenters), a ``GroundingDinoProcessor``
    (MM-GroundingDINO), a ``Sam3Processor`` (SAM 3), a ``PeAudioVideoProcessor`` (PE-AV), a
    ``Sam2VideoProcessor`` (the trackers)."""
    return _random_family(component, family).random.processor(config, size == "tiny")


def soften_family(family: str, model: nn.Module) -> None:
    """A random model of ``family`` made usable where it needs it
    (:attr:`cmsf.models.families.RandomBuild.soften`): random PE-AV starts with a zero
    audio-video logit scale (every match probability exactly 0.5, whatever the inputs) and gets
    a scale of 10 (bias 0), so that the calibrated scores differ between proposals; a random SAM 2
    or EdgeTAM video model gets a bias of 2 on its object-score head, so that tracked objects stay
    present."""
    for entry in FAMILY_TABLE:
        if entry.name == family and entry.random is not None and entry.random.soften is not None:
            entry.random.soften(model)
