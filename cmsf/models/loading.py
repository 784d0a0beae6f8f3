"""Loading the foundation models: :func:`load_models` returns a :class:`Models` whose
components (AST, GroundingDINO, SAM, OWLv2, ImageBind, SAM 3, the binder, the video tracker, and
MAVL when asked for) are each loaded on first use and then kept, so a pipeline that never grounds
text never loads GroundingDINO and one ``Models`` serves every frame and video.

Where a component comes from is a preset (``paper``: the paper's checkpoints, :data:`PAPER_SOURCES`;
``2025``: the strongest current parts, :data:`SOURCES_2025`; ``tiny`` / ``paper-random`` /
``2025-random``: seeded random weights, :mod:`cmsf.models.random_models` and :mod:`cmsf.models.random_families`)
or an override (a hub id or a local ``save_pretrained`` folder; for ImageBind a checkpoint; for
MAVL, which no preset includes, the authors' checkpoint file or ``"random"``). A
Hugging Face component's family is read from its checkpoint's config (``model_type``) and loaded
with that family's own model and processor classes (its entry of the family table,
:data:`cmsf.models.families.FAMILY_TABLE`); a family the component does not accept, or a
component that cannot be loaded, raises :class:`ModelLoadError` naming it, its source and what
to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Optional, Union

import torch
import transformers
from torch import nn

from cmsf.checks import dtype_name, resolve_device, resolve_dtype
from cmsf.models.families import (
    COMPONENT_TITLES,
    FAMILY_TABLE,
    Family,
    accepted_names,
    accepted_types,
    default_family,
    families_of,
    family_named,
    family_of,
    load_processor,
    loaded_family,
)
from cmsf.models.hub import gated_remedy, is_gated, quiet_type_mismatch
from cmsf.models.imagebind import ImageBind, load_imagebind
from cmsf.models.mavl import MAVL, PAPER_MAVL, TINY_MAVL, load_mavl
from cmsf.models.random_families import FAMILY_SEEDS
from cmsf.models.random_models import HUGE_IMAGEBIND_SIZES, SEEDS, TINY_IMAGEBIND_SIZES, build_random
from cmsf.models.sources import HUB_ID, check_local_source, resolved_source
from cmsf.names import PRESETS

__all__ = [
    "COMPONENTS",
    "FAMILIES",
    "PAPER_SOURCES",
    "SOURCES_2025",
    "PRESETS",
    "Component",
    "ModelLoadError",
    "Models",
    "check_models",
    "component_sources",
    "load_models",
]

COMPONENTS = ("ast", "grounding_dino", "sam", "owlv2", "imagebind", "sam3", "binder", "mavl", "tracker")
"""Component names, as used by :class:`Models` properties and :func:`load_models` overrides."""

FAMILIES: Mapping[str, tuple[str, ...]] = {f.component: accepted_types(f.component) for f in FAMILY_TABLE}
"""The config ``model_type`` values each Hugging Face component accepts (:data:`cmsf.models.families.FAMILY_TABLE`;
video checkpoints of an image family, as the hub ships SAM 2.1, EdgeTAM and SAM 3, load into its
image classes); the ``binder`` also accepts :data:`IMAGEBIND_BINDER` (the ``imagebind`` component)."""

IMAGEBIND_BINDER = "imagebind"
"""The ``binder`` source that means ImageBind (the paper's binder: the ``imagebind`` component)."""

PAPER_SOURCES: Mapping[str, Optional[str]] = {
    "ast": "MIT/ast-finetuned-audioset-10-10-0.4593",
    "grounding_dino": "IDEA-Research/grounding-dino-tiny",
    "sam": "facebook/sam-vit-huge",
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "imagebind": None,  # None: the official imagebind_huge checkpoint (see cmsf.models.imagebind.load_imagebind)
    "sam3": "facebook/sam3",  # not the paper's: only AT-SAM3 uses it
    "binder": IMAGEBIND_BINDER,
    "tracker": "facebook/sam2.1-hiera-large",  # not the paper's: only the tracked pipelines use it
}
"""The checkpoints of the ``"paper"`` preset (Hugging Face hub ids; ImageBind: official download).
SAM 3 (used only by the AT-SAM3 variant, not the paper's) is ``facebook/sam3``; the binder is
ImageBind; the ``tracker`` (only the tracked pipelines use it) is SAM 2.1 Hiera-L's video model."""

SOURCES_2025: Mapping[str, Optional[str]] = {
    **PAPER_SOURCES,
    "grounding_dino": "openmmlab-community/mm_grounding_dino_large_all",
    "sam": "facebook/sam2.1-hiera-large",
    "binder": "facebook/pe-av-large",
}
"""The checkpoints of the ``"2025"`` preset: the paper's recipe with the strongest current parts
(README, "The 2025 preset"): SAM 2.1 Hiera-L segments, MM-GroundingDINO Swin-L grounds, PE-AV
large binds; AST, OWLv2 and SAM 3 as in :data:`PAPER_SOURCES`."""


class ModelLoadError(RuntimeError):
    """A component could not be loaded; the message names the component, its source, and how
    to make it available."""


class BadCheckpointError(ModelLoadError):
    """A local file given for a component is there but is not what it expects (not a checkpoint,
    a damaged one); the message names the file and what was expected, and nothing about fetching."""


class Component(NamedTuple):
    """One loaded Hugging Face component: the model (eval mode, on ``Models.device`` in
    ``Models.dtype``) and the processor that prepares its inputs."""

    model: nn.Module
    processor: Any


@dataclass(frozen=True)
class _Spec:
    """Where a component comes from: ``kind`` is ``"pretrained"`` (``source`` is a hub id, a
    local directory, or for ImageBind a checkpoint path / None for the official download),
    ``"random"`` (``size`` is ``"tiny"``, ``"paper"`` or ``"full"``, ``family`` the config
    ``model_type``; ImageBind: ``sizes``), ``"component"`` (the component is the one named
    ``source``: an ImageBind binder is the ``imagebind`` component), or ``"absent"`` (MAVL when
    not asked for)."""

    kind: str
    source: Optional[str] = None
    size: Optional[str] = None
    sizes: Optional[tuple[tuple[str, int], ...]] = None
    family: Optional[str] = None

    def describe(self) -> str:
        if self.kind == "absent":
            return "not used"
        if self.kind == "component":
            return f"{family_named('binder', self.source).title} (the {self.source} component)"
        if self.kind == "random":
            if self.sizes is not None:
                return f"random weights, sizes {dict(self.sizes)}"
            family = f" {self.family}" if self.family is not None else ""
            return f"random weights, {self.size}{family} config"
        return "official ImageBind checkpoint" if self.source is None else repr(resolved_source(self.source))


def _preset_specs(preset: str) -> dict[str, _Spec]:
    if preset in ("paper", "2025"):
        sources = PAPER_SOURCES if preset == "paper" else SOURCES_2025
        return {**{name: _override_spec(name, source, preset) for name, source in sources.items()}, "mavl": _Spec("absent")}
    size = "tiny" if preset == "tiny" else "paper"
    family_size = "tiny" if preset == "tiny" else "full"
    specs = {
        name: _Spec("random", size=size, family=default_family(name).name)
        for name in ("ast", "grounding_dino", "sam", "owlv2")
    }
    sizes = TINY_IMAGEBIND_SIZES if preset == "tiny" else HUGE_IMAGEBIND_SIZES
    specs["imagebind"] = _Spec("random", sizes=tuple(sizes.items()))
    specs["sam3"] = _Spec("random", size=family_size, family="sam3")
    specs["tracker"] = _Spec("random", size=family_size, family=default_family("tracker").name)
    specs["binder"] = _Spec("component", IMAGEBIND_BINDER)
    if preset == "2025-random":
        specs["sam"] = _Spec("random", size="full", family="sam2")
        specs["grounding_dino"] = _Spec("random", size="full", family="mm-grounding-dino")
        specs["binder"] = _Spec("random", size="full", family="pe_audio_video")
    specs["mavl"] = _Spec("absent")
    return specs


def check_sources(sources: Mapping[str, str]) -> dict[str, str]:
    """Component overrides given as text (``{"sam": "facebook/sam2.1-hiera-large"}``, from a
    command line or a file), checked before anything loads: each name one of :data:`COMPONENTS`,
    each source that looks like a local path existing (:func:`check_local_source`). Returns them
    as given (``~`` unexpanded; :func:`load_models` expands it), for ``load_models(preset,
    **sources)``.

    Raises:
        ValueError: an unknown component (``"unknown component 'x'; expected one of …"``), or a
            local path where nothing is (the message starts with ``"{name}={source}:"``).
    """
    unknown = [name for name in sources if name not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown component {unknown[0]!r}; expected one of {', '.join(COMPONENTS)}")
    for name, source in sources.items():
        try:
            check_local_source(name, source)
        except ValueError as error:  # "sam: the local path … does not exist"
            raise ValueError(f"{name}={source}:{str(error).partition(':')[2]}") from None
    return dict(sources)


def _override_spec(name: str, value: Any, preset: str) -> _Spec:
    own = _OWN_OVERRIDES.get(name)
    if own is not None:
        return own(value, preset)
    if value in [family.name for family in families_of(name) if family.model_class is None]:
        return _Spec("component", value)  # the binder "imagebind": the imagebind component
    return _source_spec(name, value, "a hub id or a local directory (str or path)")


def _source_spec(name: str, value: Any, expected: str) -> _Spec:
    """A component loaded from ``value``: a hub id or a local path (``expected`` says what else
    ``name`` would take)."""
    if isinstance(value, (str, os.PathLike)):
        source = os.fspath(value)
        if not source:
            raise ValueError(f"{name}: expected a hub id or a local path, got an empty string")
        return _Spec("pretrained", check_local_source(name, source))
    raise ValueError(f"{name}: expected {expected}, got {type(value).__name__}")


def _imagebind_spec(value: Any, preset: str) -> _Spec:
    """``imagebind=``: a checkpoint path, None (the official download) or a dict of sizes."""
    if value is None:
        return _Spec("pretrained", None)
    if isinstance(value, Mapping):
        return _Spec("random", sizes=tuple(dict(value).items()))
    return _source_spec("imagebind", value, "a checkpoint path, None (official download), or a dict of ImageBind sizes")


# ---------------------------------------------------------------- MAVL (asked for, never in a preset)
def _mavl_spec(value: Any, preset: str) -> _Spec:
    """``mavl=``: a checkpoint path, ``"random"`` (the preset's size) or ``None`` (not used)."""
    if value is None:
        return _Spec("absent")
    if isinstance(value, (str, os.PathLike)):
        source = os.fspath(value)
        if source == "random":
            return _Spec("random", size="tiny" if preset == "tiny" else "paper", family="mavl")
        if source and not os.path.isfile(os.path.expanduser(source)):
            raise ValueError(
                f"mavl: no file at {source!r}; expected the authors' MDef_DETR_minus_language_r101_epoch10.pth, "
                "downloaded by hand from the link in the README of github.com/mmaaz60/mvits_for_class_agnostic_od"
            )
        if source:
            return _Spec("pretrained", os.path.expanduser(source))
    raise ValueError(
        "mavl: expected the path of the authors' MDef_DETR_minus_language_r101_epoch10.pth, 'random' "
        f"(seeded random weights of the preset's size) or None, got {value!r}"
    )


def _mavl_load_error(spec: _Spec, error: BaseException) -> ModelLoadError:
    if spec.kind == "absent":
        return ModelLoadError(
            "the MAVL proposer (component 'mavl') was not asked for: pass load_models(..., "
            "mavl='/path/to/MDef_DETR_minus_language_r101_epoch10.pth') (or mavl='random'), "
            "--model mavl=PATH on the command line"
        )
    return ModelLoadError(
        f"could not load the MAVL proposer (component 'mavl') from {spec.describe()}: {error}. Expected the "
        "authors' MDef-DETR minus-language checkpoint MDef_DETR_minus_language_r101_epoch10.pth (a torch file "
        "holding {'model': state_dict, ...}), downloaded by hand from the link in the README of "
        "github.com/mmaaz60/mvits_for_class_agnostic_od."
    )


_OWN_OVERRIDES = {"mavl": _mavl_spec, "imagebind": _imagebind_spec}
"""The components that are no Hugging Face model, and how an override of each is read."""


def _family_error(name: str, spec: _Spec, found: str) -> ModelLoadError:
    accepted = accepted_names(name)
    return ModelLoadError(
        f"could not load the {COMPONENT_TITLES[name]} (component {name!r}) from {spec.describe()}: its config "
        f"says model_type {found!r}, and component {name!r} accepts {', '.join(repr(f) for f in accepted)}. "
        f"Pass a checkpoint of one of those families (e.g. load_models(..., {name}='/path/to/dir'))."
    )


_OWN_REMEDIES = {
    "imagebind": (
        "pass a local checkpoint: load_models(..., imagebind='/path/to/imagebind_huge.pth'), or run once "
        "with internet access so that the official checkpoint is downloaded and cached"
    ),
}
"""How to get a component that is no Hugging Face model, when it could not be loaded."""


def _load_error(name: str, spec: _Spec, error: BaseException) -> ModelLoadError:
    title = COMPONENT_TITLES[name]
    if isinstance(error, ValueError) and spec.source is not None and os.path.isfile(resolved_source(spec.source)):
        return BadCheckpointError(f"could not load the {title} (component {name!r}) from {spec.describe()}: {error}")
    how = _OWN_REMEDIES.get(name) or (
        "run once with internet access so that it is cached by Hugging Face (the cache lives under "
        "HF_HOME, default ~/.cache/huggingface), set HF_HOME to a cache that already holds it, or pass a "
        f"local directory saved with save_pretrained (model and processor): load_models(..., {name}='/path/to/dir')"
    )
    if name not in _OWN_REMEDIES and spec.source is not None and HUB_ID.fullmatch(spec.source) and is_gated(error):
        how = gated_remedy(spec.source)
    return ModelLoadError(
        f"could not load the {title} (component {name!r}) from {spec.describe()}: "
        f"{type(error).__name__}: {error}. To get it: {how}."
    )


class Models:
    """The foundation models of cmsf, each loaded on first use and then kept.

    Create with :func:`load_models`. Components (properties; the first access loads): ``ast``,
    ``grounding_dino``, ``sam``, ``owlv2``, ``sam3``: a :class:`Component` of the model and
    processor classes of the family its checkpoint's config names (its entry of
    :data:`cmsf.models.families.FAMILY_TABLE`; the paper's: ``ASTForAudioClassification``,
    ``GroundingDinoForObjectDetection``, ``SamModel``, ``Owlv2ForObjectDetection`` of which only
    the vision tower and the objectness and box heads are used, ``Sam3Model``); :meth:`family`
    tells which. ``imagebind``: the :class:`cmsf.models.imagebind.ImageBind` module itself.
    ``binder``: the audio-visual binder of the BIND step, the ImageBind module (the same object as
    ``imagebind``) or a :class:`Component` (PE-AV), which :func:`cmsf.stages.binding.binder_of`
    wraps in one interface. ``mavl``: the :class:`cmsf.models.mavl.MAVL` module itself, only when
    :func:`load_models` was given ``mavl=`` (:attr:`proposer` is then ``"mavl"``). ``tracker``: a
    :class:`Component` of a video family's own classes (``Sam2VideoModel`` or
    ``EdgeTamVideoModel``, with ``Sam2VideoProcessor``), the video tracker of
    :func:`cmsf.stages.tracking.track_masks`.

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
        """A description of where component ``name`` comes from (hub id, path, or random); a local
        path is given absolute and resolved, so a record of it does not depend on the folder the
        run was started from."""
        return self._specs[self._check_name(name)].describe()

    def spec(self, name: str) -> _Spec:
        """Where component ``name`` comes from, as given (nothing is loaded): ``kind``
        (``"pretrained"``, ``"random"``, ``"component"``, ``"absent"``), ``source``, ``size``,
        ``sizes`` and ``family``."""
        return self._specs[self._check_name(name)]

    def sources(self) -> dict[str, str]:
        """:meth:`source` of every component, by name (nothing is loaded)."""
        return {name: self.source(name) for name in COMPONENTS}

    def record(self) -> dict[str, Any]:
        """What a run's ``run.json`` records of its models (nothing is loaded): ``{"preset",
        "dtype" (its name), "models": every component's source}``."""
        return {"preset": self._preset, "dtype": dtype_name(self._dtype), "models": self.sources()}

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

    @property
    def sam3(self) -> Component:
        return self.get("sam3")

    @property
    def binder(self) -> Union[nn.Module, Component]:
        return self.get("binder")

    @property
    def mavl(self) -> MAVL:
        return self.get("mavl")

    @property
    def tracker(self) -> Component:
        return self.get("tracker")

    @property
    def proposer(self) -> str:
        """The class-agnostic proposer of :func:`cmsf.stages.proposals.propose_boxes` (and so of
        OWOD-BIND): ``"mavl"`` when :func:`load_models` was given ``mavl=``, else ``"owlv2"``."""
        return "owlv2" if self._specs["mavl"].kind == "absent" else "mavl"

    @property
    def binder_kind(self) -> str:
        """Which binder the BIND step uses, known without loading it: ``"imagebind"`` (the
        ``imagebind`` component) or ``"pe_audio_video"`` (PE-AV: the only family the ``binder``
        component loads besides ImageBind)."""
        spec = self._specs["binder"]
        return spec.source if spec.kind == "component" else default_family("binder").name

    def family(self, name: str) -> str:
        """The family of component ``name``: its entry's name in the family table, the config's
        own ``model_type`` (a hub video checkpoint of SAM 2.1 loaded as the segmenter: ``"sam2"``;
        ``"imagebind"`` for ImageBind and an ImageBind binder). Loads the component."""
        loaded = self.get(name)
        if isinstance(loaded, ImageBind):
            return IMAGEBIND_BINDER
        return loaded_family(name, loaded.model).name

    def get(self, name: str) -> Any:
        """Component ``name`` (one of :data:`COMPONENTS`), loading it on first use."""
        name = self._check_name(name)
        if name not in self._loaded:
            with torch.inference_mode(False):
                self._loaded[name] = self._load(name)
        return self._loaded[name]

    def load(self, *names: str) -> "Models":
        """Load the named components now (when none is named: all of them, MAVL only when it was
        asked for); returns ``self``. Useful to keep loading time out of a benchmark."""
        for name in names or [n for n in COMPONENTS if self._specs[n].kind != "absent"]:
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
        own = {"imagebind": self._load_imagebind, "mavl": self._load_mavl}.get(name)
        if own is not None:
            return own(spec)
        if spec.kind == "component":
            return self.get(spec.source)
        if spec.kind == "random":
            return self._load_random(name, spec)
        try:
            model_type = str(transformers.AutoConfig.from_pretrained(spec.source).model_type)
        except Exception as error:  # noqa: BLE001 - every failure becomes one clear error
            raise _load_error(name, spec, error) from error
        family = family_of(name, model_type)
        if family is None or family.model_class is None:
            raise _family_error(name, spec, model_type)
        try:
            with quiet_type_mismatch(model_type):  # a video checkpoint into its image class: expected
                model = getattr(transformers, family.model_class).from_pretrained(spec.source, dtype=self._dtype)
            # the image config keeps the folder's model_type ('sam2_video') as an attribute: name its own
            model.config.model_type = type(model.config).model_type
            processor = load_processor(family, spec.source)
        except Exception as error:  # noqa: BLE001
            raise _load_error(name, spec, error) from error
        return Component(self._finish(model), processor)

    def _load_random(self, name: str, spec: _Spec) -> Component:
        family: Family = family_named(name, spec.family) if spec.family else default_family(name)
        build, tiny = family.random, spec.size == "tiny"
        config = build.config(spec.size)
        model_class = getattr(transformers, family.model_class)
        model = build_random(lambda: model_class(config), SEEDS.get(name, FAMILY_SEEDS.get(name)), self._device)
        for soften in (build.soften, build.soften_tiny if tiny else None):
            if soften is not None:
                soften(model)
        return Component(self._finish(model), build.processor(config, tiny))

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

    def _load_mavl(self, spec: _Spec) -> nn.Module:
        if spec.kind == "random":
            config = TINY_MAVL if spec.size == "tiny" else PAPER_MAVL
            return self._finish(build_random(lambda: MAVL(config), SEEDS["mavl"], self._device))
        if spec.kind == "absent":
            raise _mavl_load_error(spec, LookupError())
        try:
            model = load_mavl(spec.source)
        except Exception as error:  # noqa: BLE001 - every failure becomes one clear error
            raise _mavl_load_error(spec, error) from error
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
            ``"2025"``: the strongest current parts (:data:`SOURCES_2025`: SAM 2.1 Hiera-L,
            MM-GroundingDINO Swin-L, PE-AV large as the binder); ``"2025-random"``: their
            architectures with seeded random weights, for speed benchmarks. Every preset's
            ``sam3`` is SAM 3 (``facebook/sam3``; random in the random presets).
        device: where the models run; default CUDA when available, else CPU.
        dtype: ``torch.float32`` (default) or ``torch.bfloat16`` (or the strings
            ``"float32"``/``"bfloat16"``); anything else is a ``ValueError``.
        **overrides: per component (``ast``, ``grounding_dino``, ``sam``, ``owlv2``,
            ``imagebind``, ``sam3``, ``binder``), a hub id or a local directory saved with
            ``save_pretrained`` (the model and its processor, loaded with ``from_pretrained``),
            e.g. ``load_models("paper", sam="facebook/sam-vit-base")``. The checkpoint's config
            names its family, which must be one the component accepts (:data:`FAMILIES`: ``sam``
            takes SAM, SAM-HQ, SAM 2 / 2.1 and EdgeTAM; ``grounding_dino`` GroundingDINO and
            MM-GroundingDINO; ``binder`` PE-AV, or ``"imagebind"`` for ImageBind; ``tracker``
            SAM 2 / 2.1 video checkpoints, ``model_type`` ``sam2_video``, and EdgeTAM's
            ``edgetam_video``, default ``facebook/sam2.1-hiera-large``); each family
            is loaded with its own model and processor classes. For ``imagebind``: a
            checkpoint path, ``None`` for the official download, or a dict of ``ImageBind``
            sizes to build with seeded random weights. ``mavl`` (no preset includes it): the
            path of the authors' ``MDef_DETR_minus_language_r101_epoch10.pth`` (downloaded by
            hand, see :mod:`cmsf.models.mavl`), or ``"random"`` for seeded random weights of the
            preset's size (``tiny``: :data:`cmsf.models.mavl.TINY_MAVL`, otherwise the paper's
            architecture); with it, :func:`cmsf.stages.proposals.propose_boxes` and OWOD-BIND propose
            with MAVL instead of OWLv2 (:attr:`Models.proposer`).

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
        specs[name] = _override_spec(name, value, preset)
    return Models(specs, resolve_device(device), resolve_dtype(dtype), preset)


def check_models(models: Any) -> Models:
    """``models`` itself after checking it is a :class:`Models` (what every stage takes)."""
    if not isinstance(models, Models):
        raise ValueError(f"models: expected a cmsf.models.loading.Models (see load_models), got {type(models).__name__}")
    return models


def component_sources(preset: str, **overrides: Any) -> dict[str, str]:
    """Where each component of ``load_models(preset, **overrides)`` comes from
    (:meth:`Models.sources`), without loading or downloading anything."""
    return load_models(preset, device="cpu", **overrides).sources()
