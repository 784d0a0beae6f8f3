"""The names cmsf offers as choices, as plain constants: model presets, pipelines, precisions,
AVSBench subsets and how a sweep treats each setting.

Importing this module imports nothing heavy (no torch, no transformers), so that the ``cmsf``
command can build its options and answer ``--help``, ``--version`` and usage errors at once.
The modules that implement each name import it from here (:mod:`cmsf.models.loading` its
presets, :mod:`cmsf.pipelines.per_frame` its pipelines, :mod:`cmsf.checks` its precisions,
:mod:`cmsf.io.avsbench` its subsets, :mod:`cmsf.runs.sweep` its rules); the tests check that
each table here matches what it names.
"""

from __future__ import annotations

PRESETS = ("paper", "tiny", "paper-random", "2025", "2025-random")
"""Known presets of :func:`cmsf.models.loading.load_models`."""

PIPELINE_NAMES = ("owod-bind", "sam-bind", "at-gdino-sam", "at-sam3")
"""The pipelines of :data:`cmsf.pipelines.per_frame.PIPELINES`, in that order."""

DTYPE_NAMES = ("float32", "bfloat16")
"""The model precisions of :data:`cmsf.checks.DTYPES`, by name."""

SUBSETS = ("s4", "ms3")
"""AVSBench's subsets (:mod:`cmsf.io.avsbench`)."""

FREE = "free"
LOWEST = "lowest"
RERUN = "rerun"

SWEEP_RULES: dict[str, dict[str, str]] = {
    "owod-bind": {"box_threshold": LOWEST, "bind_threshold": FREE, "bind_mode": FREE},
    "sam-bind": {"pred_iou_threshold": LOWEST, "bind_threshold": FREE, "bind_mode": FREE},
    "at-gdino-sam": {"box_threshold": LOWEST, "text_threshold": FREE},
}
"""Per pipeline, how each setting is swept: :data:`FREE` (selection only), :data:`LOWEST` (the
models run at the grid's lowest value) or, for any key not listed, :data:`RERUN`.
AT-GDINO-SAM's ``text_threshold`` is free because it only shapes GroundingDINO's matched
sub-phrases, which the pipeline does not keep (boxes, scores and tags do not depend on it).
``bind_mode`` is free because the cache keeps the binder's scoring (mode, logit scale and bias).
OWOD-BIND's ``proposal_nms_threshold``, ``max_proposals`` and ``crop_background`` and AT-SAM3's
``instance_threshold`` rerun: the first three change the proposals or the crops; SAM 3's score
filter is applied in the model's dtype, which a selection from float32 scores cannot repeat
exactly in bfloat16. See :mod:`cmsf.runs.sweep`."""


def free_keys_help() -> str:
    """One paragraph saying which keys each pipeline sweeps without rerunning its models."""
    parts = []
    for pipeline, rules in SWEEP_RULES.items():
        keys = [f"{key} (≥ the lowest swept)" if rule == LOWEST else key for key, rule in rules.items()]
        parts.append(f"{pipeline}: {', '.join(keys)}")
    return (
        "Free keys (scored from the cache, the models run once): " + "; ".join(parts) + ". "
        "The AT pipelines' tag_threshold reruns GroundingDINO and SAM (SAM 3) only: AST tags are "
        "cached; any other key reruns the models once per value."
    )
