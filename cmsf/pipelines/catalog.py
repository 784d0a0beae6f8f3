"""Every pipeline by name, per-frame (:mod:`cmsf.pipelines.per_frame`) and tracked
(:mod:`cmsf.pipelines.tracked`), and the calls the runs and the command make for any of them:
settings (defaults, typing from text, checks, the bind mode resolved) and running a batch of
videos.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import asdict
from typing import Any, Callable, Mapping, Sequence

from cmsf.models.loading import Models
from cmsf.pipelines import per_frame
from cmsf.pipelines.results import SegmentationResult, VideoInput
from cmsf.pipelines.tracked import (
    TRACK_SETTING_NAMES,
    TRACKED_FUNCTIONS,
    TRACKED_PIPELINES,
    TrackSettings,
    check_tracked_settings,
    default_tracked_settings,
    run_tracked_videos,
)

__all__ = [
    "PIPELINES",
    "check_settings",
    "default_settings",
    "parse_settings",
    "resolve_settings",
    "run_videos",
    "type_settings",
]

PIPELINES: Mapping[str, Callable[..., SegmentationResult]] = ChainMap(TRACKED_FUNCTIONS, per_frame.PIPELINES)
"""Every pipeline by name (the per-frame ones first): each runs one video (``frames, waveform,
sample_rate, models``) with its keyword-only settings. A live view of
:data:`cmsf.pipelines.per_frame.PIPELINES` and :data:`cmsf.pipelines.tracked.TRACKED_FUNCTIONS`."""


def _tracked_name(pipeline: object) -> bool:
    """Whether ``pipeline`` names a tracked pipeline (anything else goes to the per-frame
    functions, which name what is wrong with it)."""
    return isinstance(pipeline, str) and pipeline in TRACKED_PIPELINES


def default_settings(pipeline: str) -> dict[str, Any]:
    """The settings of ``PIPELINES[pipeline]`` and their defaults."""
    if _tracked_name(pipeline):
        return default_tracked_settings(pipeline)
    return per_frame.default_settings(pipeline)


def _tracked(frame: Mapping[str, Any], track: TrackSettings) -> dict[str, Any]:
    return {**frame, **asdict(track)}


def check_settings(pipeline: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """All settings of ``pipeline``, its defaults updated with ``overrides``, checked
    (:func:`cmsf.pipelines.per_frame.check_settings`,
    :func:`cmsf.pipelines.tracked.check_tracked_settings`)."""
    if _tracked_name(pipeline):
        return _tracked(*check_tracked_settings(pipeline, overrides))
    return per_frame.check_settings(pipeline, overrides)


def resolve_settings(pipeline: str, overrides: Mapping[str, Any], models: Models) -> dict[str, Any]:
    """:func:`check_settings` with ``bind_mode`` resolved for ``models``' binder, without loading
    it: the settings a run records and runs with."""
    if _tracked_name(pipeline):
        return _tracked(*check_tracked_settings(pipeline, overrides, models))
    return per_frame.resolve_settings(pipeline, overrides, models)


def type_settings(pipeline: str, values: Mapping[str, str]) -> dict[str, Any]:
    """Settings given as text typed after their defaults, not range-checked
    (:func:`cmsf.pipelines.per_frame.type_settings`; a tracked pipeline's own settings after
    :class:`~cmsf.pipelines.tracked.TrackSettings`)."""
    if not _tracked_name(pipeline):
        return per_frame.type_settings(pipeline, values)
    base = TRACKED_PIPELINES[pipeline]
    typed = per_frame.type_settings(base, {k: v for k, v in values.items() if k not in TRACK_SETTING_NAMES})
    defaults = asdict(TrackSettings())
    for key, text in values.items():
        if key in TRACK_SETTING_NAMES:
            kind = int if isinstance(defaults[key], int) else float
            try:
                typed[key] = kind(text)
            except ValueError:
                expected = "an integer" if kind is int else "a number"
                raise ValueError(f"{key}: expected {expected}, got {text!r}") from None
    return typed


def parse_settings(pipeline: str, values: Mapping[str, str]) -> dict[str, Any]:
    """Settings given as text, typed (:func:`type_settings`) and checked (:func:`check_settings`);
    returns only those given."""
    settings = type_settings(pipeline, values)
    check_settings(pipeline, settings)
    return settings


def run_videos(
    pipeline: str, videos: Sequence[VideoInput], models: Models, settings: Mapping[str, Any]
) -> list[SegmentationResult]:
    """Run ``pipeline`` on several videos at once (every model sees all their frames in one
    batch); each result is what the pipeline gives for its video alone."""
    if _tracked_name(pipeline):
        return run_tracked_videos(pipeline, videos, models, settings)
    return per_frame.run_videos(pipeline, videos, models, settings)
