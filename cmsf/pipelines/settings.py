"""The pipelines' settings as typed objects: one frozen dataclass per pipeline, its fields the
paper's settings with their defaults, each checked once when the object is built.

- build: ``OwodBindSettings(bind_threshold=0.6)``; a bad value is a ``ValueError`` naming the
  setting (:meth:`PipelineSettings.__post_init__`); from a pipeline's name and a mapping of
  overrides: :func:`make_settings`;
- parse from text (``--set``, ``--sweep``): :meth:`PipelineSettings.parse`;
- vary (sweeps): ``dataclasses.replace(settings, bind_threshold=0.5)`` checks the new object
  again; :meth:`PipelineSettings.varied` also names an unknown key in the error;
- record (``run.json``, ``summary.json``, evidence, the sweep cache): ``dataclasses.asdict(settings)``,
  the fields in declaration order;
- sweep: each field's ``metadata["sweep"]`` says how a sweep gets its values (:data:`FREE`,
  :data:`LOWEST`, :data:`RERUN`; :func:`sweep_rules`).

The objects are immutable and picklable (segment-many's Ray workers receive them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Mapping, Optional, TypeVar, Union, get_type_hints

from cmsf.checks import check_positive_int, check_range, check_unit
from cmsf.models.loading import Models
from cmsf.ops import BIND_MODES
from cmsf.stages.binding import CROP_BACKGROUNDS, check_bind_mode
from cmsf.stages.proposals import MAX_PROPOSALS, PROPOSAL_NMS_THRESHOLD

__all__ = [
    "FREE",
    "LOWEST",
    "RERUN",
    "SETTINGS",
    "AtGdinoSamSettings",
    "AtSam3Settings",
    "OwodBindSettings",
    "OwodBindTrackedSettings",
    "PipelineSettings",
    "SamBindSettings",
    "SamBindTrackedSettings",
    "TaggedSettings",
    "TrackedSettings",
    "chosen_settings",
    "make_settings",
    "resolve_settings",
    "settings_for",
    "settings_type",
    "sweep_rules",
]

FREE = "free"
"""A setting of the selection stage alone: a sweep takes any value of it from the cache."""
LOWEST = "lowest"
"""A score threshold of a model stage: a sweep runs the models once at the grid's lowest value and
selects each higher value from those candidates (exactly what a run with it computes)."""
RERUN = "rerun"
"""Any other setting: a sweep runs the model stage once per value."""

S = TypeVar("S", bound="PipelineSettings")
Check = Callable[[Any, str, Any], None]
"""A field's check: ``check(value, name, settings)`` raises a ValueError starting with ``name``."""


def _unit(value: Any, name: str, settings: Any) -> None:
    check_unit(value, name)


def _positive_int(value: Any, name: str, settings: Any) -> None:
    check_positive_int(value, name)


def _one_of(choices: tuple[Optional[str], ...]) -> Check:
    def check(value: Any, name: str, settings: Any) -> None:
        if value not in choices:
            names = ", ".join(str(choice) for choice in choices if choice is not None)
            raise ValueError(f"{name}: expected one of {names}, got {value!r}")

    return check


def _bind_threshold(value: Any, name: str, settings: Any) -> None:
    check_range(value, name, -1.0 if settings.bind_mode == "cosine" else 0.0, 1.0)


def _setting(default: Any, check: Check, sweep: str = RERUN, *, first: bool = False) -> Any:
    """A field with its default, its check and how a sweep gets its values (``metadata``);
    ``first``: checked before the others (a setting the others' ranges depend on)."""
    return field(default=default, metadata={"check": check, "sweep": sweep, "first": first})


@dataclass(frozen=True)
class PipelineSettings:
    """What every pipeline's settings share: the checks, parsing from text, variation and the
    sweep rules of their fields. ``pipeline`` is the name of :data:`cmsf.pipelines.per_frame.PIPELINES`
    they belong to."""

    pipeline: ClassVar[str] = ""

    def __post_init__(self) -> None:
        """Check every field (those marked ``first``, e.g. ``bind_mode``, before the others).

        Raises:
            ValueError: a bad value; the message starts with the setting's name.
        """
        for item in sorted(fields(self), key=lambda f: not f.metadata.get("first", False)):
            item.metadata["check"](getattr(self, item.name), item.name, self)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every setting's default (the paper's), in field order."""
        return asdict(cls())

    @classmethod
    def _check_keys(cls, keys: Any) -> None:
        names = {item.name for item in fields(cls)}
        unknown = [key for key in keys if key not in names]
        if unknown:
            accepted = ", ".join(f"{k} (default {v!r})" for k, v in cls.defaults().items()) or "none"
            raise ValueError(f"{unknown[0]}: {cls.pipeline} has no setting {unknown[0]!r}; it accepts: {accepted}")

    @classmethod
    def of(cls: type[S], overrides: Mapping[str, Any]) -> S:
        """The defaults with ``overrides`` ({setting: value}), checked.

        Raises:
            ValueError: an unknown setting (the message lists the valid ones with their
                defaults) or a bad value; the message starts with the setting's name.
        """
        cls._check_keys(overrides)
        return cls(**overrides)

    @classmethod
    def parse_value(cls, key: str, text: str) -> Any:
        """One setting given as text, typed after its field: an ``int`` field's value becomes an
        int, a ``float`` field's a finite float; other values stay strings. Not range-checked.

        Raises:
            ValueError: an unknown setting, or a number that does not parse or is not finite; the
                message starts with the setting's name.
        """
        cls._check_keys([key])
        kind = get_type_hints(cls)[key]
        if kind is int:
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{key}: expected an integer, got {text!r}") from None
        if kind is float:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{key}: expected a number, got {text!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"{key}: expected a finite number, got {text!r}")
            return value
        return text

    @classmethod
    def parse(cls: type[S], values: Mapping[str, str]) -> S:
        """Settings given as text (``{"bind_threshold": "0.6"}``, from a command line or a file):
        each typed (:meth:`parse_value`), then the defaults with them, checked (:meth:`of`).

        Raises:
            ValueError: an unknown setting, a value that does not parse or a bad one; the
                message starts with the setting's name.
        """
        return cls.of({key: cls.parse_value(key, text) for key, text in values.items()})

    def varied(self: S, changes: Mapping[str, Any]) -> S:
        """``dataclasses.replace(self, **changes)`` (checked again), an unknown key named.

        Raises:
            ValueError: as :meth:`of`.
        """
        self._check_keys(changes)
        return replace(self, **changes)

    def changed(self) -> dict[str, Any]:
        """The settings whose value differs from the default, in field order."""
        defaults = self.defaults()
        return {key: value for key, value in asdict(self).items() if value != defaults[key]}


def sweep_rules(settings: Union[PipelineSettings, type[PipelineSettings]]) -> dict[str, str]:
    """How a sweep gets each setting of ``settings`` (an object or its class): {name: :data:`FREE`,
    :data:`LOWEST` or :data:`RERUN`}, in field order."""
    return {item.name: item.metadata["sweep"] for item in fields(settings)}


@dataclass(frozen=True)
class OwodBindSettings(PipelineSettings):
    """OWOD-BIND's settings (:func:`cmsf.pipelines.per_frame.owod_bind`).

    Attributes:
        box_threshold: τ_BB, the proposals' objectness threshold, in [0, 1] (the paper's 0.5;
            the authors' published MAVL config uses 0.15). Sweeps: lowest.
        bind_threshold: τ_BIND, in [0, 1] ([-1, 1] with ``bind_mode="cosine"``). Sweeps: free.
        bind_mode: how binder scores are read, one of :data:`cmsf.ops.BIND_MODES`, or None for
            the binder's own (softmax for ImageBind, calibrated for PE-AV). Sweeps: free.
        proposal_nms_threshold: IoU of OWLv2's proposal NMS, in [0, 1] (1.0: off).
        max_proposals: at most this many proposals per frame, a positive integer.
        crop_background: outside a proposal's mask in its crop, one of
            :data:`cmsf.stages.binding.CROP_BACKGROUNDS` (``"blur"``: the authors' code).
    """

    pipeline: ClassVar[str] = "owod-bind"

    box_threshold: float = _setting(0.5, _unit, LOWEST)
    bind_threshold: float = _setting(0.7, _bind_threshold, FREE)
    bind_mode: Optional[str] = _setting(None, _one_of((*BIND_MODES, None)), FREE, first=True)
    proposal_nms_threshold: float = _setting(PROPOSAL_NMS_THRESHOLD, _unit)
    max_proposals: int = _setting(MAX_PROPOSALS, _positive_int)
    crop_background: str = _setting("blur", _one_of(CROP_BACKGROUNDS))


@dataclass(frozen=True)
class SamBindSettings(PipelineSettings):
    """SAM-BIND's settings (:func:`cmsf.pipelines.per_frame.sam_bind`).

    Attributes:
        nms_threshold: mask IoU of the NMS over SAM's automatic masks, in [0, 1] (the paper's
            0.5; segment-anything's own default is 0.7).
        bind_threshold, bind_mode: as :class:`OwodBindSettings`. Sweeps: free.
        points_per_side: SAM's point grid is ``points_per_side``², a positive integer.
        pred_iou_threshold: SAM's predicted-IoU filter, in [0, 1] (0: off). Sweeps: lowest.
        stability_score_threshold: SAM's stability filter, in [0, 1] (0: off).
        crop_background: as :class:`OwodBindSettings`.
    """

    pipeline: ClassVar[str] = "sam-bind"

    nms_threshold: float = _setting(0.5, _unit)
    bind_threshold: float = _setting(0.7, _bind_threshold, FREE)
    bind_mode: Optional[str] = _setting(None, _one_of((*BIND_MODES, None)), FREE, first=True)
    points_per_side: int = _setting(32, _positive_int)
    pred_iou_threshold: float = _setting(0.88, _unit, LOWEST)
    stability_score_threshold: float = _setting(0.95, _unit)
    crop_background: str = _setting("blur", _one_of(CROP_BACKGROUNDS))


@dataclass(frozen=True)
class TaggedSettings(PipelineSettings):
    """What the AT pipelines share: ``tag_threshold``, τ_AT, the AST tags' probability threshold,
    in [0, 1] (the paper's 0.5). A sweep reruns the stages after tagging once per value; the tags
    themselves are cached at the lowest."""

    tag_threshold: float = _setting(0.5, _unit)


@dataclass(frozen=True)
class AtGdinoSamSettings(TaggedSettings):
    """AT-GDINO-SAM's settings (:func:`cmsf.pipelines.per_frame.at_gdino_sam`).

    Attributes:
        tag_threshold: see :class:`TaggedSettings`.
        box_threshold: GroundingDINO's box score threshold, in [0, 1] (0.35). Sweeps: lowest.
        text_threshold: GroundingDINO's sub-phrase threshold, in [0, 1] (0.25); it only shapes
            the matched phrases, which the pipeline does not keep. Sweeps: free.
    """

    pipeline: ClassVar[str] = "at-gdino-sam"

    box_threshold: float = _setting(0.35, _unit, LOWEST)
    text_threshold: float = _setting(0.25, _unit, FREE)


@dataclass(frozen=True)
class AtSam3Settings(TaggedSettings):
    """AT-SAM3's settings (:func:`cmsf.pipelines.per_frame.at_sam3`).

    Attributes:
        tag_threshold: see :class:`TaggedSettings`.
        instance_threshold: SAM 3's instance score threshold, in [0, 1] (0.5). A sweep reruns
            SAM 3: it filters scores in the model's dtype, which a float32 selection cannot
            redo exactly in bfloat16.
        mask_threshold: SAM 3's mask probability threshold, in [0, 1] (0.5).
    """

    pipeline: ClassVar[str] = "at-sam3"

    instance_threshold: float = _setting(0.5, _unit)
    mask_threshold: float = _setting(0.5, _unit)


def _non_negative_int(value: Any, name: str, settings: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected an integer ≥ 0, got {value!r}")


@dataclass(frozen=True)
class TrackedSettings(PipelineSettings):
    """What the tracked pipelines (:mod:`cmsf.pipelines.tracked`) add to their per-frame
    pipeline's settings. Every per-frame setting decides the seeds, which the tracker then follows,
    so a sweep reruns the models for each of them; the two below select from one model pass.

    Attributes:
        track_merge_iou: two tracks merge when their masks overlap with IoU ≥ this at both their
            seed frames, in [0, 1] (0.5).
        temporal_window: a track's bind scores are averaged over ± this many frames, an integer
            ≥ 0 (1). Sweeps: free.
        track_threshold: τ_BIND for tracks: the averaged score a track needs to sound at a frame,
            in [0, 1] ([-1, 1] with ``bind_mode="cosine"``) (0.7). Sweeps: free.
    """

    track_merge_iou: float = _setting(0.5, _unit)
    temporal_window: int = _setting(1, _non_negative_int, FREE)
    track_threshold: float = _setting(0.7, _bind_threshold, FREE)


@dataclass(frozen=True)
class OwodBindTrackedSettings(TrackedSettings, OwodBindSettings):
    """``owod-bind-tracked``'s settings (:func:`cmsf.pipelines.tracked.owod_bind_tracked`):
    :class:`OwodBindSettings`' (each rerunning the models in a sweep), then
    :class:`TrackedSettings`'."""

    pipeline: ClassVar[str] = "owod-bind-tracked"

    box_threshold: float = _setting(0.5, _unit)
    bind_threshold: float = _setting(0.7, _bind_threshold)
    bind_mode: Optional[str] = _setting(None, _one_of((*BIND_MODES, None)), first=True)


@dataclass(frozen=True)
class SamBindTrackedSettings(TrackedSettings, SamBindSettings):
    """``sam-bind-tracked``'s settings (:func:`cmsf.pipelines.tracked.sam_bind_tracked`):
    :class:`SamBindSettings`' (each rerunning the models in a sweep), then
    :class:`TrackedSettings`'."""

    pipeline: ClassVar[str] = "sam-bind-tracked"

    bind_threshold: float = _setting(0.7, _bind_threshold)
    bind_mode: Optional[str] = _setting(None, _one_of((*BIND_MODES, None)), first=True)
    pred_iou_threshold: float = _setting(0.88, _unit)


SETTINGS: dict[str, type[PipelineSettings]] = {
    cls.pipeline: cls
    for cls in (
        OwodBindSettings, SamBindSettings, AtGdinoSamSettings, AtSam3Settings, OwodBindTrackedSettings,
        SamBindTrackedSettings,
    )
}
"""Each pipeline's settings class, by the pipeline's name."""

BIND_SETTINGS = (OwodBindSettings, SamBindSettings)
"""The settings of the BIND pipelines (those with ``bind_threshold`` and ``bind_mode``)."""


def settings_type(pipeline: str) -> type[PipelineSettings]:
    """The settings class of ``pipeline``.

    Raises:
        ValueError: an unknown pipeline.
    """
    if not isinstance(pipeline, str) or pipeline not in SETTINGS:
        got = repr(pipeline) if isinstance(pipeline, str) else f"a {type(pipeline).__name__}"
        raise ValueError(f"pipeline: expected one of {', '.join(SETTINGS)}, got {got}")
    return SETTINGS[pipeline]


def make_settings(pipeline: str, overrides: Optional[Mapping[str, Any]] = None) -> PipelineSettings:
    """``pipeline``'s settings: its defaults with ``overrides`` ({setting: value}), checked
    (:meth:`PipelineSettings.of`).

    Raises:
        ValueError: an unknown pipeline or setting, or a bad value.
    """
    return settings_type(pipeline).of(overrides or {})


def settings_for(pipeline: str, settings: Optional[PipelineSettings]) -> PipelineSettings:
    """``settings`` checked to be ``pipeline``'s (None: its defaults), at a public boundary.

    Raises:
        ValueError: an unknown pipeline, or settings of another class (another pipeline's, a dict).
    """
    cls = settings_type(pipeline)
    if settings is None:
        return cls()
    if type(settings) is not cls:
        raise ValueError(
            f"settings: expected {cls.__name__} (the settings of {pipeline}) or None, got a {type(settings).__name__}"
        )
    return settings


def chosen_settings(keywords: PipelineSettings, settings: Optional[PipelineSettings]) -> PipelineSettings:
    """What a one-video pipeline function runs with: ``settings`` when given (checked to be its
    pipeline's by :func:`settings_for`; the keyword arguments, ``keywords``, must then be left at
    their defaults), else ``keywords``.

    Raises:
        ValueError: both given (the message lists the keyword arguments that were set), or
            ``settings`` of another pipeline.
    """
    if settings is None:
        return keywords
    if keywords != type(keywords)():
        given = ", ".join(f"{key}={value!r}" for key, value in keywords.changed().items())
        raise ValueError(f"settings: give the settings either as settings= or as keyword arguments, not both ({given})")
    return settings_for(keywords.pipeline, settings)


def resolve_settings(settings: PipelineSettings, models: Models) -> PipelineSettings:
    """``settings`` with ``bind_mode`` resolved for ``models``' binder (None: its own mode) and
    checked against it, without loading any model (:func:`~cmsf.stages.binding.check_bind_mode`):
    the settings a run records and runs with. A new object; settings without a bind mode are
    returned as they are.

    Raises:
        ValueError: a bind mode the binder cannot give.
    """
    if isinstance(settings, BIND_SETTINGS):
        return replace(settings, bind_mode=check_bind_mode(models, settings.bind_mode))
    return settings

