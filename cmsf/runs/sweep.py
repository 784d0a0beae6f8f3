"""Threshold sweeps from cached evidence, behind ``cmsf eval --sweep``: a pipeline's models run
once per video, at the loosest settings a grid needs, their candidates are cached in the run
folder (:mod:`cmsf.runs.cache`), and every setting of the grid is selected and scored from the cache
(a tracked pipeline's pass: its tracks, :mod:`cmsf.runs.cache_tracks`, selected by :func:`tracked_result`).

Which settings a sweep gets for free is the ``"sweep"`` metadata of each field of the pipeline's
settings (:func:`cmsf.pipelines.settings.sweep_rules`):

- ``free``: applied by the selection stage alone (any value, from the cache);
- ``lowest``: a score threshold of a model stage: the models run once at the lowest value of
  the grid, and each higher value selects from those candidates exactly what a run with it
  computes (score filters commute with the stage's other rules: see the ``select_*`` functions
  of :mod:`cmsf.pipelines.per_frame`);
- anything else reruns the model stage once per value (AT-GDINO-SAM's ``tag_threshold`` reruns
  only GroundingDINO and SAM: its AST tags are cached at the lowest tag threshold).

A sweep's run folder holds what a run of :func:`cmsf.runs.evaluate.evaluate` holds, for the best
setting of the grid (``pred_masks/``, ``evidence/``, ``per_video.csv``, ``summary.json`` with a
``"sweep"`` entry), plus::

    cache/{video key}.npz   the candidates of each video (see cmsf.runs.cache)
    sweep.csv               one row per setting: the swept keys, miou, fscore, the variants,
                            best (marks the best row: highest miou, then fscore, then grid order)

A later sweep on the same folder (same subset, split, pipeline, preset, dtype and models) reuses
every cached video its grid is covered by, without loading a model (which videos need the models
is read from the cache files' headers, :func:`~cmsf.runs.cache.read_cache_index`).

The videos that need the models run on the dataset runner, as a plain ``cmsf eval``'s
(:func:`cmsf.runs.runner.run_passes`: background reading, batches of ``frames_per_batch`` frames
across videos, a failing batch retried video by video, a refused video listed in ``errors.json``),
which yields each video's candidates of the passes its cache lacks; they are cached, and every row
is selected from the cache.

A row's figures equal a separate run's bit for bit where the models' kernels are batch-invariant
(CPU, one thread): the loosest pass decodes more SAM boxes and embeds more crops at once than a
stricter run, and other kernels may round a mask logit at 0 the other way for another batch size.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from cmsf.io import avsbench
from cmsf.io.files import RUN_NAME, atomic_write_json, atomic_write_text, claim_folder, remove_stale_temporaries
from cmsf.metrics import VARIANTS, VariantTotals, VideoScores, dataset_scores, score_video
from cmsf.models.loading import Models
from cmsf.pipelines.per_frame import select_frames
from cmsf.pipelines.results import SegmentationResult
from cmsf.pipelines.settings import (
    FREE,
    LOWEST,
    RERUN,
    SETTINGS,
    PipelineSettings,
    TaggedSettings,
    TrackedSettings,
    resolve_settings,
    settings_for,
    settings_type,
    sweep_rules,
)
from cmsf.pipelines.tracked import tracked_result
from cmsf.runs.cache import (
    VideoCache,
    cache_path,
    read_cache,
)
from cmsf.runs.evaluate import (
    VideoError,
    claim_run_folder,
    report_failures,
    split_entries,
    video_row,
    write_scores,
)
from cmsf.runs.progress import Progress, no_log, no_progress
from cmsf.runs.records import run_record, run_summary
from cmsf.runs.sweep_passes import SweepPlan, VideoCaches, covering_part, model_passes

ORACLE_NOTE = (
    "tuned on the test split: the best row is an oracle figure (the best of {rows} settings, chosen "
    "on the data it is scored on), not a result; tune on val and report test with --set"
)


def sweep_rule(pipeline: str, key: str) -> str:
    """How ``key`` of ``pipeline`` is swept: :data:`FREE`, :data:`LOWEST` or :data:`RERUN` (the
    metadata of the field of its settings; an unknown pipeline or key reruns: always exact)."""
    return sweep_rules(SETTINGS[pipeline]).get(key, RERUN) if pipeline in SETTINGS else RERUN


def free_keys_help() -> str:
    """One paragraph saying which keys each pipeline sweeps without rerunning its models."""
    parts = []
    for pipeline, settings in SETTINGS.items():
        rules = sweep_rules(settings)
        keys = [f"{key} (≥ the lowest swept)" for key, rule in rules.items() if rule == LOWEST]
        keys += [key for key, rule in rules.items() if rule == FREE]
        if keys:
            parts.append(f"{pipeline}: {', '.join(keys)}")
    return (
        "Free keys (scored from the cache, the models run once): " + "; ".join(parts) + ". "
        "The AT pipelines' tag_threshold reruns GroundingDINO and SAM (SAM 3) only: AST tags are "
        "cached; any other key reruns the models once per value (a tracked pipeline's: the per-frame "
        "candidates, the tracker and the binder)."
    )


# ------------------------------------------------------------------------------ the grid
def parse_sweep(pipeline: str, values: Mapping[str, str]) -> dict[str, list[Any]]:
    """Sweep values given as text (``{"bind_threshold": "0.5,0.6,0.7"}``), typed after the
    fields of the pipeline's settings (:meth:`cmsf.pipelines.settings.PipelineSettings.parse_value`);
    repeated values are dropped. Ranges are checked with the rest of each setting by :func:`sweep_rows`.

    Raises:
        ValueError: an unknown pipeline or key, an empty value or one that does not parse; the
            message starts with the key.
    """
    settings = settings_type(pipeline)
    grid: dict[str, list[Any]] = {}
    for key, text in values.items():
        items = [item.strip() for item in text.split(",")]
        if not all(items):
            raise ValueError(f"{key}: expected comma-separated values (V1,V2,...), got {text!r}")
        typed = [settings.parse_value(key, item) for item in items]
        grid[key] = list(dict.fromkeys(typed))
    return grid


def sweep_rows(fixed: PipelineSettings, grid: Mapping[str, Sequence[Any]]) -> list[PipelineSettings]:
    """Every setting of ``grid`` (the product of its values, first key outermost; a repeated value
    counts once), each ``fixed`` with the swept keys replaced (``dataclasses.replace``: checked again).

    Raises:
        ValueError: an empty grid or value list, a key both swept and fixed (a setting of
            ``fixed`` that is not its default), an unknown key or a value the settings refuse
            (the message starts with its key).
    """
    changed = fixed.changed()
    if not grid:
        raise ValueError("sweep: expected at least one KEY=V1,V2,... to sweep")
    grid = {key: list(dict.fromkeys(values)) for key, values in grid.items()}  # a repeated value once
    for key, values in grid.items():
        if key in changed:
            raise ValueError(f"{key}: given both as a fixed setting and swept; give it once")
        if not values:
            raise ValueError(f"{key}: expected at least one value to sweep")
    keys = list(grid)
    return [
        fixed.varied(dict(zip(keys, combination)))
        for combination in itertools.product(*(grid[key] for key in keys))
    ]


def plan_sweep(
    pipeline: str, grid: Mapping[str, Sequence[Any]], settings: Optional[PipelineSettings], models: Models
) -> SweepPlan:
    """Check and plan a sweep (see :func:`run_sweep`); nothing is read or loaded.

    Raises:
        ValueError: a bad grid (:func:`sweep_rows`), settings of another pipeline, a bind mode the
            binder cannot give.
    """
    base = settings_for(pipeline, settings)
    rows = [resolve_settings(row, models) for row in sweep_rows(base, grid)]
    tagged = [row.tag_threshold for row in rows if isinstance(row, TaggedSettings)]
    grid_values = {key: list(dict.fromkeys(values)) for key, values in grid.items()}
    return SweepPlan(pipeline, grid_values, base.changed(), rows, model_passes(rows), min(tagged) if tagged else None)


# ------------------------------------------------------------------------------ the cache of a video
def select_cached(pipeline: str, cache: VideoCache, settings: PipelineSettings) -> SegmentationResult:
    """The result of ``pipeline`` with ``settings`` on a cached video (no model runs).

    Raises:
        ValueError: no cached pass covers ``settings``.
    """
    part = covering_part(cache, settings)
    if part is None:
        raise ValueError(f"settings: no cached model pass covers {asdict(settings)}")
    if part.tracks is not None:
        assert isinstance(settings, TrackedSettings)
        return tracked_result(part.tracks, settings, cache.frame_size, cache.sources)
    return select_frames(pipeline, part.frames, settings, cache.frame_size, cache.sources)


# ------------------------------------------------------------------------------ the run
@dataclass
class _RowScores:
    """A grid row's scores so far: per-video rows and the split's running totals."""

    videos: list[dict[str, Any]] = field(default_factory=list)
    totals: VariantTotals = field(default_factory=VariantTotals)

    def figures(self) -> dict[str, Any]:
        scores = dataset_scores((row["miou"], row["fscore"]) for row in self.videos)
        return {"miou": scores.miou, "fscore": scores.fscore, **self.totals.variants()}


def best_row(figures: Sequence[Mapping[str, Any]]) -> int:
    """The index of the best row: highest ``miou``, then ``fscore``, then the first in grid order."""
    return max(range(len(figures)), key=lambda i: (figures[i]["miou"], figures[i]["fscore"]))


def sweep_csv(
    grid: Mapping[str, Sequence[Any]],
    rows: Sequence[PipelineSettings],
    figures: Sequence[Mapping[str, Any]],
    best: int,
    test_tuned: bool,
) -> str:
    """The text of ``sweep.csv``: the swept keys, miou, fscore, the variants (full precision, an
    undefined one empty), and ``best``: empty but on the best row, which says ``best`` or, tuned
    on the test split, ``oracle (test-tuned, not a result)``."""
    buffer = io.StringIO()
    figure_names = ["miou", "fscore", *VARIANTS]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*grid, *figure_names, "best"])
    mark = "oracle (test-tuned, not a result)" if test_tuned else "best"
    for index, (row, figure) in enumerate(zip(rows, figures)):
        values = ["" if figure[name] is None else repr(figure[name]) for name in figure_names]
        writer.writerow([*(getattr(row, key) for key in grid), *values, mark if index == best else ""])
    return buffer.getvalue()


def sweep_lines(summary: Mapping[str, Any]) -> list[str]:
    """What ``cmsf eval --sweep`` prints: the best row's figures, and the protocol note (a
    warning when the sweep was tuned on the test split)."""
    sweep = summary["sweep"]
    best = " ".join(f"{key}={value}" for key, value in sweep["best"].items())
    return [
        f"{summary['subset'].upper()} {summary['split']}, {summary['videos']} videos, {sweep['rows']} settings; "
        f"best {best}: mIoU {summary['miou']:.4f}  F-score {summary['fscore']:.4f}",
        ("WARNING: " if sweep["test_tuned"] else "") + sweep["note"],
    ]


def _set_options(settings: Mapping[str, Any]) -> str:
    return " ".join(f"--set {key}={value}" for key, value in settings.items())


def run_sweep(
    root: Path,
    subset: str,
    out_dir: Path,
    *,
    pipeline: str,
    grid: Mapping[str, Sequence[Any]],
    split: str = "test",
    settings: Optional[PipelineSettings] = None,
    models: Models,
    limit: Optional[int] = None,
    frames_per_batch: Optional[int] = None,
    workers: Optional[int] = None,
    progress: Progress = no_progress,
    log: Callable[[str], None] = no_log,
) -> dict[str, Any]:
    """Score every setting of ``grid`` on an AVSBench split from one model pass per video.

    Args:
        root, subset, split, limit, frames_per_batch, workers, progress, log, models: as
            :func:`cmsf.runs.evaluate.evaluate` (the models are lazy: a sweep whose every video
            is cached loads none). The videos whose cache lacks a pass are run by the dataset
            runner (:func:`cmsf.runs.runner.run_passes`: read in background threads, several
            videos per model batch, a failing batch retried video by video), as a plain run's.
        pipeline: a name of :data:`cmsf.pipelines.catalog.PIPELINES` (per-frame or tracked).
        grid: the values of each swept key (e.g. from :func:`parse_sweep`); ``settings`` the
            pipeline's settings the grid varies (None: the defaults; a swept key must be left at
            its default). See :func:`sweep_rows`. ``run.json`` and ``summary.json`` record the
            settings that differ from the defaults as ``fixed``.

    Returns:
        the summary of the best row (as :func:`~cmsf.runs.evaluate.evaluate` writes it, with a
        ``"sweep"`` entry: grid, best, ``test_tuned``, a ``note``, cache size), also written as
        ``out_dir/summary.json`` next to ``sweep.csv`` and the best row's ``per_video.csv``,
        ``pred_masks`` and ``evidence``.

    Raises:
        ValueError: a bad grid (:func:`sweep_rows`), before anything is read or written.
        FileNotFoundError: ground truth missing (all listed), before any model runs.
        UnwritableFolderError, FolderInUseError: ``out_dir`` cannot be written, or another run
            is writing into it now (see :func:`cmsf.io.files.claim_folder`).
        RunConflictError: the run folder belongs to another run.
        VideoError: videos whose data is refused, listed in ``errors.json`` after every other
            video's cache is saved (no ``sweep.csv`` from part of a split; a rerun computes only them).
    """
    started = time.perf_counter()
    plan = plan_sweep(pipeline, grid, settings, models)  # checked before anything is read
    entries = split_entries(root, subset, split, limit)
    with claim_folder(out_dir):  # created, writable, ours until the end: before any model loads
        record = _claim_sweep_folder(out_dir, plan, models, root, subset, split)
        log(
            f"{subset.upper()} {split}: {len(entries)} videos × {len(plan.rows)} settings of {pipeline} "
            f"({len(plan.passes)} model pass(es) per video, cached in {out_dir / 'cache'})"
        )
        runner = {"frames_per_batch": frames_per_batch, "workers": workers}
        scored, computed = _score_grid(root, subset, entries, out_dir, plan, models, runner, progress)
        figures = [row_scores.figures() for row_scores in scored]
        best = best_row(figures)
        _write_best_predictions(root, subset, entries, out_dir, plan, plan.rows[best], models, progress)
        context = {"root": root, "subset": subset, "split": split, "limit": limit, "started": started}
        summary = _sweep_summary(entries, out_dir, plan, figures, best, models, computed, context)
        atomic_write_text(out_dir / "sweep.csv", sweep_csv(plan.grid, plan.rows, figures, best, split == "test"))
        write_scores(out_dir, scored[best].videos, subset, summary)
        atomic_write_json(out_dir / RUN_NAME, {**record, "settings": asdict(plan.rows[best])})
        return summary


def _claim_sweep_folder(
    out_dir: Path, plan: SweepPlan, models: Models, root: Path, subset: str, split: str
) -> dict[str, Any]:
    """Claim ``out_dir`` for the sweep (a plain run's predictions, or those of other models or
    data, are refused: :func:`~cmsf.runs.evaluate.claim_run_folder`) and record it in ``run.json``
    with its grid, fixed settings and, until the grid is scored, no best settings. Returns that record."""
    claimed = claim_run_folder(
        out_dir, run_record("sweep", plan.pipeline, models, subset=subset, split=split, sweep=True), root
    )
    context = {"subset": subset, "split": split, "sweep": True, "root": claimed["root"]}
    result = run_record("sweep-result", plan.pipeline, models, **context, grid=plan.grid, fixed=plan.fixed)
    record = {"kind": claimed["kind"], **result}
    atomic_write_json(out_dir / RUN_NAME, record)
    remove_stale_temporaries(out_dir)
    return record


def _score_grid(
    root: Path,
    subset: str,
    entries: Sequence[avsbench.VideoEntry],
    out_dir: Path,
    plan: SweepPlan,
    models: Models,
    runner: Mapping[str, Any],
    progress: Progress,
) -> tuple[list[_RowScores], int]:
    """Score every row of the grid on every video, in split order: a video's cache read, or
    completed by the dataset runner (the passes it lacks) and written back. Returns the rows'
    scores and how many videos a model ran on.

    Raises:
        VideoError: videos whose data is refused (reading, a model, their cache), after every
            other video is cached (:func:`~cmsf.runs.evaluate.report_failures`).
    """
    loaders = {entry.key: partial(avsbench.load_video, root, subset, entry) for entry in entries}
    scored = [_RowScores() for _ in plan.rows]
    failures: dict[str, str] = {}
    with VideoCaches(loaders, out_dir, plan, models, runner) as caches:
        for entry in progress(entries, f"sweep of {len(plan.rows)}", "video"):
            try:
                _score_video(root, subset, entry, caches.get(entry.key), plan, scored)
            except (ValueError, OSError) as error:  # the video's failure: the others go on
                failures[entry.key] = str(error) or type(error).__name__
    report_failures(out_dir, failures, len(entries))  # no sweep.csv from part of a split
    return scored, caches.computed


def _score_video(
    root: Path, subset: str, entry: avsbench.VideoEntry, cache: VideoCache, plan: SweepPlan, scored: list[_RowScores]
) -> None:
    """Add the video's scores under every row of the grid (settings that give the same masks
    are scored once)."""
    gt = avsbench.load_gt_masks(root, subset, entry)
    scored_masks: dict[bytes, VideoScores] = {}
    for index, row in enumerate(plan.rows):
        masks = select_cached(plan.pipeline, cache, row).masks[: gt.shape[0]]
        key = np.packbits(masks.numpy()).tobytes() + bytes(str(tuple(masks.shape)), "ascii")
        if key not in scored_masks:
            scored_masks[key] = score_video(masks, gt)
        scored[index].videos.append(video_row(entry, scored_masks[key]))
        scored[index].totals.add(scored_masks[key])


def _write_best_predictions(
    root: Path,
    subset: str,
    entries: Sequence[avsbench.VideoEntry],
    out_dir: Path,
    plan: SweepPlan,
    best: PipelineSettings,
    models: Models,
    progress: Progress,
) -> None:
    """The best row's masks (``pred_masks``) and evidence of every video, selected from its cache."""
    identity = run_record("cache", plan.pipeline, models)
    for entry in progress(entries, "best setting", "video"):
        path = cache_path(out_dir / "cache", entry.key)
        cache = read_cache(path, identity, type(best))
        if cache is None:
            raise VideoError(f"video {entry.key}: its cache {path} vanished")
        result = select_cached(plan.pipeline, cache, best)
        atomic_write_json(out_dir / "evidence" / f"{entry.key}.json", result.to_json())
        avsbench.write_pred_masks(out_dir / "pred_masks", subset, entry, result.masks)


def _sweep_summary(
    entries: Sequence[avsbench.VideoEntry],
    out_dir: Path,
    plan: SweepPlan,
    figures: Sequence[Mapping[str, Any]],
    best: int,
    models: Models,
    computed: int,
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """The sweep's ``summary.json``: the best row's figures as an evaluation's
    (:func:`~cmsf.runs.records.run_summary`), with the ``"sweep"`` entry."""
    split = context["split"]
    test_tuned = split == "test"
    cache_bytes = sum(cache_path(out_dir / "cache", e.key).stat().st_size for e in entries)
    best_settings = {key: getattr(plan.rows[best], key) for key in plan.grid}
    rows = len(plan.rows)
    note = (
        ORACLE_NOTE.format(rows=rows)
        if test_tuned
        else f"best of {rows} settings on the {split} split; report it on test with {_set_options(best_settings)}"
    )
    sweep = {
        "grid": plan.grid,
        "fixed": plan.fixed,
        "rows": rows,
        "best": best_settings,
        "best_by": "miou, then fscore, then grid order",
        "test_tuned": test_tuned,
        "note": note,
        "model_passes_per_video": len(plan.passes),
        "cache_bytes": cache_bytes,
        "cache_bytes_per_video": round(cache_bytes / len(entries)) if entries else 0,
    }
    scores = {
        "miou": figures[best]["miou"],
        "fscore": figures[best]["fscore"],
        "variants": {name: figures[best][name] for name in VARIANTS},
        "videos": len(entries),
    }
    return run_summary(
        scores, subset=context["subset"], split=split, pipeline=plan.pipeline, models=models,
        settings=plan.rows[best], root=context["root"], pred_dir=out_dir / "pred_masks", limit=context["limit"],
        computed=computed, started=context["started"],
        sweep=sweep,
    )  # fmt: skip
