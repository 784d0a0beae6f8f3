"""What a run records: :func:`run_record` builds every record of what produced a run's outputs
(``run.json`` of ``cmsf eval``, its sweeps and ``cmsf segment-many``, the run part of an
``evidence.json``, the identity of a sweep's cache files), :func:`run_summary` the
``summary.json`` of ``cmsf eval`` and its sweeps.

Each record is a layout (:data:`RECORD_LAYOUTS`: which entries, in which order) over the same
values: the pipeline, the models' preset, dtype and every component's source
(:meth:`cmsf.models.loading.Models.record`), the device, the settings as
``dataclasses.asdict``, and what the caller adds (subset, split, input, frame sampling, …). The
orders are those the files have always had, so that files written before compare equal.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Optional

from cmsf.models.loading import Models
from cmsf.pipelines.settings import PipelineSettings

RECORD_LAYOUTS: dict[str, tuple[str, ...]] = {
    "eval": ("subset", "split", "pipeline", "preset", "dtype", "settings", "models"),
    "avss-eval": ("subset", "split", "pipeline", "preset", "dtype", "settings", "models", "label_threshold"),
    "sweep": ("subset", "split", "pipeline", "preset", "dtype", "models", "sweep"),
    "sweep-result": (
        "subset", "split", "pipeline", "preset", "dtype", "models", "sweep", "root", "grid", "fixed", "settings"
    ),  # fmt: skip
    "segment-many": ("pipeline", "preset", "dtype", "models", "settings", "num_frames", "fps"),
    "evidence": ("input", "pipeline", "preset", "device", "dtype", "settings"),
    "cache": ("pipeline", "preset", "dtype", "models"),
}
"""The entries of each record, in order:

- ``eval``: ``run.json`` of a ``cmsf eval`` run (a resume must match it); ``avss-eval`` that of
  ``cmsf eval --subset avss``, with the class decision's ``label_threshold``;
- ``sweep``: what a sweep's ``run.json`` must match on a resume (``"sweep": True``), and
  ``sweep-result`` what it holds: that, the data root (resolved, checked by
  :func:`cmsf.runs.evaluate.claim_run_folder`), the grid, the fixed settings and the best row's
  settings (None until the grid is scored);
- ``segment-many``: ``run.json`` of ``cmsf segment-many`` (with its frame sampling);
- ``evidence``: the run of one video in its ``evidence.json`` (``cmsf segment``, segment-many);
- ``cache``: the identity of a sweep's cache files (a file of another is recomputed)."""


def run_record(
    layout: str, pipeline: str, models: Models, settings: Optional[PipelineSettings] = None, **context: Any
) -> dict[str, Any]:
    """The record ``layout`` (a key of :data:`RECORD_LAYOUTS`) of a run of ``pipeline`` on
    ``models`` (nothing is loaded) with ``settings`` (recorded as ``dataclasses.asdict``, None as
    None); ``context`` gives the other entries the layout names (``subset``, ``split``, ``input``,
    ``num_frames``, ``fps``, ``sweep``, ``root``, ``grid``, ``fixed``, ``label_threshold``) and may
    replace ``settings``.

    Raises:
        ValueError: an unknown layout, or an entry of it neither computed nor in ``context``.
    """
    if layout not in RECORD_LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(RECORD_LAYOUTS)}, got {layout!r}")
    values = {
        "pipeline": pipeline,
        **models.record(),
        "device": str(models.device),
        "settings": None if settings is None else asdict(settings),
        **context,
    }
    missing = [key for key in RECORD_LAYOUTS[layout] if key not in values]
    if missing:
        raise ValueError(f"context: the {layout} record needs {', '.join(missing)}")
    return {key: values[key] for key in RECORD_LAYOUTS[layout]}


def run_summary(
    scores: Mapping[str, Any],
    *,
    subset: str,
    split: str,
    pipeline: Optional[str],
    models: Optional[Models],
    settings: Optional[PipelineSettings],
    root: Path,
    pred_dir: Path,
    limit: Optional[int],
    computed: int,
    started: float,
    sweep: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """The ``summary.json`` of an evaluation: ``scores`` (``miou``, ``fscore``: means over
    videos; ``variants``; ``videos``, how many were scored), what produced them (the models'
    preset and dtype, the settings as ``dataclasses.asdict``: None when predictions were only
    scored, ``models`` None; the device when a video was computed) and how: ``computed`` videos
    segmented now, the rest reused, ``elapsed_s`` since ``started`` (``time.perf_counter()``);
    a sweep's ``sweep`` entry last. ``root`` and ``pred_dir`` are recorded absolute."""
    record = models.record() if models is not None else None
    summary = {
        "miou": scores["miou"],
        "fscore": scores["fscore"],
        "variants": scores["variants"],
        "videos": scores["videos"],
        "subset": subset,
        "split": split,
        "pipeline": pipeline,
        "preset": record["preset"] if record else None,
        "dtype": record["dtype"] if record else None,
        "device": str(models.device) if models is not None and computed else None,
        "settings": asdict(settings) if settings is not None else None,
        "root": str(Path(root).resolve()),  # absolute: cmsf report finds it from anywhere
        "pred_dir": str(Path(pred_dir).resolve()),
        "limit": limit,
        "computed": computed,
        "reused": scores["videos"] - computed,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    if sweep is not None:
        summary["sweep"] = dict(sweep)
    return summary
