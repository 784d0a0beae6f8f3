"""Loading the foundation models: :func:`load_models` returns a :class:`Models` whose
components (AST, GroundingDINO, SAM, OWLv2, ImageBind) are each loaded on first use and then
kept, so a pipeline that never grounds text never loads GroundingDINO and one ``Models`` serves
every frame and video.

Where a component comes from is a preset (``paper``: the paper's checkpoints, :data:`PAPER_SOURCES`;
``tiny`` / ``paper-random``: seeded random weights, :mod:`cmsf.random_models`) or an override (a
hub id or a local ``save_pretrained`` folder; for ImageBind a checkpoint). A component that
cannot be loaded raises :class:`ModelLoadError` naming it, its source and how to get it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Optional, Union

import torch
import transformers as tf
from torch import nn

from cmsf.checks import resolve_device, resolve_dtype
from cmsf.imagebind import ImageBind, load_imagebind
from cmsf.random_models import (
    HUGE_IMAGEBIND_SIZES,
    SEEDS,
    TINY_IMAGEBIND_SIZES,
    build_random,
    random_config,
    random_processor,
    soften_tiny,
)

__all__ = [
    "COMPONENTS",
    "PAPER_SOURCES",
    "PRESETS",
    "Component",
    "ModelLoadError",
    "Models",
    "check_models",
    "load_models",
]

PRESETS = ("paper", "tiny", "paper-random")
"""Known presets of :func:`load_models`."""

COMPONENTS = ("ast", "grounding_dino", "sam", "owlv2", "imagebind")
"""Component names, as used by :class:`Models` properties and :func:`load_models` overrides."""

PAPER_SOURCES: Mapping[str, Optional[str]] = {
    "ast": "MIT/ast-finetuned-audioset-10-10-0.4593",
    "grounding_dino": "IDEA-Research/grounding-dino-tiny",
    "sam": "facebook/sam-vit-huge",
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "imagebind": None,  # None: the official imagebind_huge checkpoint (see cmsf.imagebind.load_imagebind)
}
"""The checkpoints of the ``"paper"`` preset (Hugging Face hub ids; ImageBind: official download)."""

_COMPONENT_TITLES = {
    "ast": "AST audio tagger",
    "grounding_dino": "GroundingDINO detector",
    "sam": "SAM segmenter",
    "owlv2": "OWLv2 proposer",
    "imagebind": "ImageBind",
}


class ModelLoadError(RuntimeError):
    """A component could not be loaded; the message names the component, its source, and how
    to make it available."""


class Component(NamedTuple):
    """One loaded Hugging Face component: the model (eval mode, on ``Models.device`` in
    ``Models.dtype``) and the processor that prepares its inputs."""

    model: nn.Module
    processor: Any


@dataclass(frozen=True)
class _Spec:
    """Where a component comes from: ``kind`` is ``"pretrained"`` (``source`` is a hub id, a
    local directory, or for ImageBind a checkpoint path / None for the official download) or
    ``"random"`` (``size`` is ``"tiny"`` or ``"paper"``; ImageBind: ``sizes``)."""

    kind: str
    source: Optional[str] = None
    size: Optional[str] = None
    sizes: Optional[tuple[tuple[str, int], ...]] = None

    def describe(self) -> str:
        if self.kind == "random":
            if self.sizes is not None:
                return f"random weights, sizes {dict(self.sizes)}"
            return f"random weights, {self.size} config"
        return "official ImageBind checkpoint" if self.source is None else repr(self.source)


def _preset_specs(preset: str) -> dict[str, _Spec]:
    if preset == "paper":
        return {name: _Spec("pretrained", source) for name, source in PAPER_SOURCES.items()}
    size = "tiny" if preset == "tiny" else "paper"
    specs = {name: _Spec("random", size=size) for name in COMPONENTS if name != "imagebind"}
    sizes = TINY_IMAGEBIND_SIZES if preset == "tiny" else HUGE_IMAGEBIND_SIZES
    specs["imagebind"] = _Spec("random", sizes=tuple(sizes.items()))
    return specs


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""A Hugging Face hub id: ``org/name``."""


def check_local_source(name: str, source: str) -> str:
    """``source`` of component ``name``, with ``~`` expanded, after checking that it exists when
    it looks like a local path: absolute, starting with ``./``, ``../`` or ``~``, or holding a
    path separator without being a hub id ``org/name``. Anything else is left to the loader (a
    hub id, or a relative path that happens to look like one).

    Raises:
        ValueError: it looks like a local path and nothing is there; the message starts with
            ``"{name}:"``.
    """
    expanded = os.path.expanduser(source)
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    local = (
        os.path.isabs(expanded)
        or source.startswith(("~", *(f"{dots}{sep}" for dots in (".", "..") for sep in separators)))
        or (any(sep in source for sep in separators) and not _HUB_ID.fullmatch(source))
    )
    if not local:
        return source
    if not os.path.exists(expanded):
        raise ValueError(
            f"{name}: the local path {source!r} does not exist (a hub id looks like 'org/name')"
        )
    return expanded


def _override_spec(name: str, value: Any) -> _Spec:
    if name == "imagebind":
        if value is None:
            return _Spec("pretrained", None)
        if isinstance(value, Mapping):
            return _Spec("random", sizes=tuple(dict(value).items()))
    if isinstance(value, (str, os.PathLike)):
        source = os.fspath(value)
        if not source:
            raise ValueError(f"{name}: expected a hub id or a local path, got an empty string")
        return _Spec("pretrained", check_local_source(name, source))
    expected = "a hub id or a local directory (str or path)"
    if name == "imagebind":
        expected = "a checkpoint path, None (official download), or a dict of ImageBind sizes"
    raise ValueError(f"{name}: expected {expected}, got {type(value).__name__}")


_MODEL_CLASSES = {
    "ast": "ASTForAudioClassification",
    "grounding_dino": "GroundingDinoForObjectDetection",
    "sam": "SamModel",
    "owlv2": "Owlv2ForObjectDetection",
}


def _pretrained_processor(name: str, source: str) -> Any:
    if name == "ast":
        return tf.ASTFeatureExtractor.from_pretrained(source)
    if name == "sam":
        return tf.SamImageProcessor.from_pretrained(source)
    if name == "owlv2":
        return tf.Owlv2ImageProcessor.from_pretrained(source)
    if name == "grounding_dino":
        return tf.GroundingDinoProcessor(
            image_processor=tf.GroundingDinoImageProcessor.from_pretrained(source),
            tokenizer=tf.AutoTokenizer.from_pretrained(source),
        )
    raise AssertionError(name)  # pragma: no cover



def _load_error(name: str, spec: _Spec, error: BaseException) -> ModelLoadError:
    title = _COMPONENT_TITLES[name]
    if name == "imagebind":
        how = (
            "pass a local checkpoint: load_models(..., imagebind='/path/to/imagebind_huge.pth'), or run once "
            "with internet access so that the official checkpoint is downloaded and cached"
        )
    else:
        how = (
            "run once with internet access so that it is cached by Hugging Face (the cache lives under "
            "HF_HOME, default ~/.cache/huggingface), set HF_HOME to a cache that already holds it, or pass a "
            f"local directory saved with save_pretrained (model and processor): load_models(..., {name}='/path/to/dir')"
        )
    return ModelLoadError(
        f"could not load the {title} (component {name!r}) from {spec.describe()}: "
        f"{type(error).__name__}: {error}. To get it: {how}."
    )



class Models:
    """The foundation models of cmsf, each loaded on first use and then kept.

    Create with :func:`load_models`. Components (properties; the first access loads):

    - ``ast``: :class:`Component` (``ASTForAudioClassification``, ``ASTFeatureExtractor``)
    - ``grounding_dino``: :class:`Component` (``GroundingDinoForObjectDetection``,
      ``GroundingDinoProcessor``)
    - ``sam``: :class:`Component` (``SamModel``, ``SamImageProcessor``)
    - ``owlv2``: :class:`Component` (``Owlv2ForObjectDetection``, ``Owlv2ImageProcessor``; only
      the vision tower and the objectness and box heads are used)
    - ``imagebind``: the ``cmsf.imagebind.ImageBind`` module itself

    Every model is in eval mode on :attr:`device` in :attr:`dtype`. :attr:`loaded` lists the
    components loaded so far. A component that cannot be loaded raises :class:`ModelLoadError`
    at its first access.
    """

    def __init__(self, specs: Mapping[str, _Spec], device: torch.device, dtype: torch.dtype, preset: str) -> None:
        self._specs = dict(specs)
        self._device = device
        self._dtype = dtype
        self._preset = preset
        self._loaded: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        """Where every model lives and where the stages return their tensors."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """The models' parameter dtype: ``torch.float32`` or ``torch.bfloat16``."""
        return self._dtype

    @property
    def preset(self) -> str:
        return self._preset

    @property
    def loaded(self) -> tuple[str, ...]:
        """Names of the components loaded so far, in load order."""
        return tuple(self._loaded)

    def source(self, name: str) -> str:
        """A description of where component ``name`` comes from (hub id, path, or random)."""
        return self._specs[self._check_name(name)].describe()

    @property
    def ast(self) -> Component:
        return self.get("ast")

    @property
    def grounding_dino(self) -> Component:
        return self.get("grounding_dino")

    @property
    def sam(self) -> Component:
        return self.get("sam")

    @property
    def owlv2(self) -> Component:
        return self.get("owlv2")

    @property
    def imagebind(self) -> nn.Module:
        return self.get("imagebind")

    def get(self, name: str) -> Any:
        """Component ``name`` (one of :data:`COMPONENTS`), loading it on first use."""
        name = self._check_name(name)
        if name not in self._loaded:
            with torch.inference_mode(False):
                self._loaded[name] = self._load(name)
        return self._loaded[name]

    def load(self, *names: str) -> "Models":
        """Load the named components now (all of them when none is named); returns ``self``.
        Useful to keep loading time out of a benchmark."""
        for name in names or COMPONENTS:
            self.get(name)
        return self

    def _check_name(self, name: str) -> str:
        if name not in COMPONENTS:
            raise ValueError(f"name: expected one of {COMPONENTS}, got {name!r}")
        return name

    def _finish(self, model: nn.Module) -> nn.Module:
        model = model.to(device=self._device, dtype=self._dtype)
        model.eval()
        model.requires_grad_(False)
        return model

    def _load(self, name: str) -> Any:
        spec = self._specs[name]
        if name == "imagebind":
            return self._load_imagebind(spec)
        model_class = getattr(tf, _MODEL_CLASSES[name])
        if spec.kind == "random":
            config = random_config(name, spec.size)
            model = build_random(lambda: model_class(config), SEEDS[name], self._device)
            if spec.size == "tiny":
                soften_tiny(name, model)
            return Component(self._finish(model), random_processor(name, spec.size, config))
        try:
            model = model_class.from_pretrained(spec.source, dtype=self._dtype)
            processor = _pretrained_processor(name, spec.source)
        except Exception as error:  # noqa: BLE001 - every failure becomes one clear error
            raise _load_error(name, spec, error) from error
        return Component(self._finish(model), processor)

    def _load_imagebind(self, spec: _Spec) -> nn.Module:
        if spec.kind == "random":
            sizes = dict(spec.sizes or ())
            model = build_random(lambda: ImageBind(**sizes), SEEDS["imagebind"], self._device)
            return self._finish(model)
        try:
            model = load_imagebind(spec.source, device=self._device, dtype=self._dtype)
        except Exception as error:  # noqa: BLE001
            raise _load_error("imagebind", spec, error) from error
        return self._finish(model)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}={self._specs[name].describe()}{' (loaded)' if name in self._loaded else ''}" for name in COMPONENTS
        )
        return f"Models(preset={self._preset!r}, device={str(self._device)!r}, dtype={self._dtype}, {parts})"


def load_models(
    preset: str = "paper",
    device: Union[str, torch.device, None] = None,
    dtype: Union[str, torch.dtype, None] = None,
    **overrides: Any,
) -> Models:
    """The foundation models of a preset, loaded lazily (nothing is loaded until first use).

    Args:
        preset: ``"paper"``: the paper's checkpoints (:data:`PAPER_SOURCES`) from the Hugging
            Face hub, cached as transformers caches them (``HF_HOME``); ImageBind's official
            ``imagebind_huge`` checkpoint. ``"tiny"``: the same model classes built from tiny
            configs with seeded random weights and processors built in code: no download,
            deterministic, for tests (AST keeps the 527 AudioSet label names).
            ``"paper-random"``: the paper's full architectures (AST base, GroundingDINO Swin-T +
            BERT-base, SAM ViT-H, OWLv2 B/16 at 960 px, ImageBind huge) with seeded random weights
            and no download, for speed benchmarks. GroundingDINO of both random presets uses a
            small character-level WordPiece tokenizer built in code, so prompts take more tokens
            than with BERT's real vocabulary.
        device: where the models run; default CUDA when available, else CPU.
        dtype: ``torch.float32`` (default) or ``torch.bfloat16`` (or the strings
            ``"float32"``/``"bfloat16"``); anything else is a ``ValueError``.
        **overrides: per component (``ast``, ``grounding_dino``, ``sam``, ``owlv2``,
            ``imagebind``), a hub id or a local directory saved with ``save_pretrained`` (the
            model and its processor, loaded with ``from_pretrained``), e.g.
            ``load_models("paper", sam="facebook/sam-vit-base")``. For ``imagebind``: a
            checkpoint path, ``None`` for the official download, or a dict of ``ImageBind``
            sizes to build with seeded random weights.

    Raises:
        ValueError: unknown preset or component, bad device, a dtype other than float32 /
            bfloat16, or an override that looks like a local path (see
            :func:`check_local_source`) where nothing is; the message starts with the argument.
            (:class:`ModelLoadError` is raised later, when a component that cannot be loaded is
            first used.)
    """
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {PRESETS}, got {preset!r}")
    unknown = sorted(set(overrides) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"unknown component(s) {unknown}: expected overrides among {COMPONENTS}")
    specs = _preset_specs(preset)
    for name, value in overrides.items():
        specs[name] = _override_spec(name, value)
    return Models(specs, resolve_device(device), resolve_dtype(dtype), preset)



def check_models(models: Any) -> Models:
    """``models`` itself after checking it is a :class:`Models` (what every stage takes)."""
    if not isinstance(models, Models):
        raise ValueError(f"models: expected a cmsf.loading.Models (see load_models), got {type(models).__name__}")
    return models

