"""The names cmsf offers as choices, as plain constants: model presets, pipelines, precisions,
AVSBench subsets, and the help text of a sweep's free keys.

Importing this module imports nothing heavy (no torch, no transformers), so that the ``cmsf``
command can build its options and answer ``--help``, ``--version`` and usage errors at once.
:mod:`cmsf.models.loading` (presets), :mod:`cmsf.checks` (precisions) and :mod:`cmsf.io.avsbench`
(subsets) take theirs from here; the tests check that the pipelines' names and the sweep help
match :data:`cmsf.pipelines.catalog.PIPELINES` and :func:`cmsf.runs.sweep.free_keys_help`.
"""

from __future__ import annotations

PRESETS = ("paper", "tiny", "paper-random", "2025", "2025-random")
"""Known presets of :func:`cmsf.models.loading.load_models`."""

PIPELINE_NAMES = ("owod-bind", "sam-bind", "at-gdino-sam", "at-sam3", "owod-bind-tracked", "sam-bind-tracked")
"""The pipelines of :data:`cmsf.pipelines.catalog.PIPELINES` (per-frame, then tracked), in that order."""

DTYPE_NAMES = ("float32", "bfloat16")
"""The model precisions of :data:`cmsf.checks.DTYPES`, by name."""

SUBSETS = ("s4", "ms3")
"""AVSBench's subsets (:mod:`cmsf.io.avsbench`)."""

SWEEP_HELP = (
    "Free keys (scored from the cache, the models run once): owod-bind: box_threshold (≥ the lowest swept), "
    "bind_threshold, bind_mode; sam-bind: pred_iou_threshold (≥ the lowest swept), bind_threshold, bind_mode; "
    "at-gdino-sam: box_threshold (≥ the lowest swept), text_threshold; owod-bind-tracked: temporal_window, "
    "track_threshold; sam-bind-tracked: temporal_window, track_threshold. The AT pipelines' tag_threshold reruns "
    "GroundingDINO and SAM (SAM 3) only: AST tags are cached; any other key reruns the models once per value "
    "(a tracked pipeline's: the per-frame candidates, the tracker and the binder)."
)
"""``cmsf eval --sweep``'s help: :func:`cmsf.runs.sweep.free_keys_help` (from the settings' sweep
metadata) as text, which the tests check equal."""
