"""Threshold sweeps from cached evidence, behind ``cmsf eval --sweep``: a pipeline's models run
once per video, at the loosest settings a grid needs, their candidates are cached in the run
folder (:mod:`cmsf.runs.cache`), and every setting of the grid is selected and scored from the cache.

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
every cached video its grid is covered by, without loading a model.

A row's figures equal a separate run's bit for bit where the models' kernels are batch-invariant
(CPU, one thread): the loosest pass decodes more SAM boxes and embeds more crops at once than a
stricter run, and other kernels may round a mask logit at 0 the other way for another batch size.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from cmsf.io import avsbench
from cmsf.io.files import RUN_NAME, atomic_write_json, atomic_write_text, claim_folder, remove_stale_temporaries
from cmsf.metrics import VARIANTS, VariantTotals, VideoScores, dataset_scores, score_video
from cmsf.models.loading import Models
from cmsf.pipelines.per_frame import (
    PIPELINE_STAGES,
    find_tagged_concepts,
    ground_tagged_frames,
    select_frames,
    tag_videos,
)
from cmsf.pipelines.results import FrameCandidates, SegmentationResult, VideoInput, prepare_video
from cmsf.pipelines.settings import (
    FREE,
    LOWEST,
    RERUN,
    SETTINGS,
    PipelineSettings,
    TaggedSettings,
    resolve_settings,
    settings_for,
    settings_type,
    sweep_rules,
)
from cmsf.runs.cache import CachePart, TagCache, VideoCache, cache_path, read_cache, write_cache
from cmsf.runs.evaluate import (
    VideoError,
    claim_run_folder,
    missing_gt_message,
    per_video_csv,
    report_failures,
    video_row,
)
from cmsf.runs.progress import Progress, no_log, no_progress

TAGGED_STAGES: dict[str, Callable[..., list[list[FrameCandidates]]]] = {
    "at-gdino-sam": ground_tagged_frames,
    "at-sam3": find_tagged_concepts,
}
"""Pipelines whose model stage starts with AST tagging (their settings are
:class:`~cmsf.pipelines.settings.TaggedSettings`): the rest of the stage, given each frame's tags.
The tags are cached at the grid's lowest ``tag_threshold``."""

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
        "cached; any other key reruns the models once per value."
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


@dataclass(frozen=True)
class ModelPass:
    """One run of a pipeline's model stage that serves several settings of a grid: ``compute``
    (settings, :data:`LOWEST` keys at their lowest among ``rows``) and the indices of the
    grid's ``rows`` selected from its candidates."""

    compute: PipelineSettings
    rows: list[int]


def model_passes(rows: Sequence[PipelineSettings]) -> list[ModelPass]:
    """The model passes a grid needs (``rows``: settings of one pipeline): one per distinct
    combination of its :data:`RERUN` keys."""
    if not rows:
        return []
    rules = sweep_rules(rows[0])
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        signature = tuple((key, repr(value)) for key, value in asdict(row).items() if rules[key] == RERUN)
        groups.setdefault(signature, []).append(index)
    passes = []
    for indices in groups.values():
        lowest = {key: min(getattr(rows[i], key) for i in indices) for key, rule in rules.items() if rule == LOWEST}
        passes.append(ModelPass(replace(rows[indices[0]], **lowest), indices))
    return passes


def covers(computed: PipelineSettings, needed: PipelineSettings) -> bool:
    """Whether candidates computed with ``computed`` settings select exactly what a run with
    ``needed`` settings (of the same pipeline) computes."""
    if type(computed) is not type(needed):
        return False
    for item in fields(needed):
        rule, have, want = item.metadata["sweep"], getattr(computed, item.name), getattr(needed, item.name)
        if rule == LOWEST and not have <= want:
            return False
        if rule == RERUN and have != want:
            return False
    return True


# ------------------------------------------------------------------------------ the cache of a video
def covering_part(cache: Optional[VideoCache], needed: PipelineSettings) -> Optional[CachePart]:
    """The first cached model pass that covers ``needed`` (:func:`covers`), or None."""
    if cache is None:
        return None
    return next((part for part in cache.parts if covers(part.compute, needed)), None)


def _tags_at(tags: Sequence[tuple[str, float]], threshold: float) -> list[tuple[str, float]]:
    """The tags with probability ≥ ``threshold``, compared in float32 as :func:`~cmsf.stages.tagging.tag_audio` does."""
    probabilities = torch.tensor([p for _, p in tags], dtype=torch.float32)
    return [tag for tag, passes in zip(tags, (probabilities >= threshold).tolist()) if passes]


def _compute_part(
    pipeline: str,
    video: VideoInput,
    models: Models,
    compute: PipelineSettings,
    cache: VideoCache,
    lowest_tag: Optional[float],
) -> CachePart:
    """Run the model stage for one pass (for a tagged pipeline: the tags from the cache when it
    has them at ``lowest_tag`` or lower, else AST at ``lowest_tag``, cached)."""
    if pipeline not in TAGGED_STAGES:
        return CachePart(compute, PIPELINE_STAGES[pipeline].candidates([video], models, compute)[0])
    assert lowest_tag is not None and isinstance(compute, TaggedSettings)
    if cache.tags is None or cache.tags.tag_threshold > lowest_tag:
        cache.tags = TagCache(lowest_tag, tag_videos([video], models, lowest_tag))
    tags = [_tags_at(frame, compute.tag_threshold) for frame in cache.tags.frames]
    return CachePart(compute, TAGGED_STAGES[pipeline]([video], tags, models, compute)[0])


def _add_part(cache: VideoCache, part: CachePart) -> None:
    """Add ``part``, dropping the parts it makes redundant (those it covers)."""
    cache.parts = [old for old in cache.parts if not covers(part.compute, old.compute)] + [part]


def _video_cache(
    root: Path,
    subset: str,
    entry: avsbench.VideoEntry,
    path: Path,
    pipeline: str,
    identity: dict[str, Any],
    passes: Sequence[ModelPass],
    models: Models,
    lowest_tag: Optional[float],
) -> tuple[VideoCache, bool]:
    """The video's cache with every pass of ``passes`` covered: read from ``path``, completed by
    the model passes it lacks (then written back atomically). Returns it and whether a model ran."""
    cache = read_cache(path, identity, settings_type(pipeline))
    missing = [p for p in passes if covering_part(cache, p.compute) is None]
    if cache is not None and not missing:
        return cache, False
    clip = avsbench.load_video(root, subset, entry)
    video = prepare_video(clip.frames, clip.waveform, clip.sample_rate)
    if cache is None:
        cache = VideoCache(identity, video.frame_size, len(video.images), sources=models.sources())
    for model_pass in missing:
        _add_part(cache, _compute_part(pipeline, video, models, model_pass.compute, cache, lowest_tag))
    write_cache(path, cache)
    return cache, True


def select_cached(pipeline: str, cache: VideoCache, settings: PipelineSettings) -> SegmentationResult:
    """The result of ``pipeline`` with ``settings`` on a cached video (no model runs).

    Raises:
        ValueError: no cached pass covers ``settings``.
    """
    part = covering_part(cache, settings)
    if part is None:
        raise ValueError(f"settings: no cached model pass covers {asdict(settings)}")
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
    progress: Progress = no_progress,
    log: Callable[[str], None] = no_log,
) -> dict[str, Any]:
    """Score every setting of ``grid`` on an AVSBench split from one model pass per video.

    Args:
        root, subset, split, limit, progress, log, models: as :func:`cmsf.runs.evaluate.evaluate`
            (the models are lazy: a sweep whose every video is cached loads none).
        pipeline: a name of :data:`cmsf.pipelines.per_frame.PIPELINES`.
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
    base = settings_for(pipeline, settings)
    fixed = base.changed()
    rows = [resolve_settings(row, models) for row in sweep_rows(base, grid)]  # checked before anything is read
    passes = model_passes(rows)
    tagged = [row.tag_threshold for row in rows if isinstance(row, TaggedSettings)]
    lowest_tag = min(tagged) if tagged else None
    entries = avsbench.list_videos(root, subset, split)[:limit]
    missing_gt = avsbench.missing_gt_masks(root, subset, entries)
    if missing_gt:
        raise FileNotFoundError(missing_gt_message(missing_gt))

    with claim_folder(out_dir):  # created, writable, ours until the end: before any model loads
        identity = {"pipeline": pipeline, **models.record()}
        config = {"subset": subset, "split": split, **identity, "sweep": True}
        config = claim_run_folder(out_dir, config, root)  # refuses predictions of a plain run, other models or data
        grid_json = {key: list(dict.fromkeys(values)) for key, values in grid.items()}
        atomic_write_json(out_dir / RUN_NAME, {**config, "grid": grid_json, "fixed": fixed, "settings": None})
        remove_stale_temporaries(out_dir)
        log(
            f"{subset.upper()} {split}: {len(entries)} videos × {len(rows)} settings of {pipeline} "
            f"({len(passes)} model pass(es) per video, cached in {out_dir / 'cache'})"
        )

        scored = [_RowScores() for _ in rows]
        computed = 0
        failures: dict[str, str] = {}
        for entry in progress(entries, f"sweep of {len(rows)}", "video"):
            try:
                path = cache_path(out_dir / "cache", entry.key)
                cache, ran = _video_cache(root, subset, entry, path, pipeline, identity, passes, models, lowest_tag)
                computed += ran
                gt = avsbench.load_gt_masks(root, subset, entry)
                scored_masks: dict[bytes, VideoScores] = {}  # settings that give the same masks are scored once
                for index, row in enumerate(rows):
                    masks = select_cached(pipeline, cache, row).masks[: gt.shape[0]]
                    key = np.packbits(masks.numpy()).tobytes() + bytes(str(tuple(masks.shape)), "ascii")
                    if key not in scored_masks:
                        scored_masks[key] = score_video(masks, gt)
                    scored[index].videos.append(video_row(entry, scored_masks[key]))
                    scored[index].totals.add(scored_masks[key])
            except (ValueError, OSError) as error:  # the video's failure: the others go on
                failures[entry.key] = str(error) or type(error).__name__
        report_failures(out_dir, failures, len(entries))  # no sweep.csv from part of a split

        figures = [row_scores.figures() for row_scores in scored]
        best = best_row(figures)
        test_tuned = split == "test"
        for entry in progress(entries, "best setting", "video"):
            cache = read_cache(cache_path(out_dir / "cache", entry.key), identity, type(base))
            if cache is None:
                raise VideoError(f"video {entry.key}: its cache {cache_path(out_dir / 'cache', entry.key)} vanished")
            result = select_cached(pipeline, cache, rows[best])
            atomic_write_json(out_dir / "evidence" / f"{entry.key}.json", result.to_json())
            avsbench.write_pred_masks(out_dir / "pred_masks", subset, entry, result.masks)

        cache_bytes = sum(cache_path(out_dir / "cache", e.key).stat().st_size for e in entries)
        best_settings = {key: getattr(rows[best], key) for key in grid}
        note = (
            ORACLE_NOTE.format(rows=len(rows))
            if test_tuned
            else f"best of {len(rows)} settings on the {split} split; report it on test with {_set_options(best_settings)}"
        )
        summary = {
            "miou": figures[best]["miou"],
            "fscore": figures[best]["fscore"],
            "variants": {name: figures[best][name] for name in VARIANTS},
            "videos": len(entries),
            "subset": subset,
            "split": split,
            "pipeline": pipeline,
            "preset": identity["preset"],
            "dtype": identity["dtype"],
            "device": str(models.device) if computed else None,
            "settings": asdict(rows[best]),
            "root": str(Path(root).resolve()),  # absolute: cmsf report finds it from anywhere
            "pred_dir": str((out_dir / "pred_masks").resolve()),
            "limit": limit,
            "computed": computed,
            "reused": len(entries) - computed,
            "elapsed_s": round(time.perf_counter() - started, 3),
            "sweep": {
                "grid": grid_json,
                "fixed": fixed,
                "rows": len(rows),
                "best": best_settings,
                "best_by": "miou, then fscore, then grid order",
                "test_tuned": test_tuned,
                "note": note,
                "model_passes_per_video": len(passes),
                "cache_bytes": cache_bytes,
                "cache_bytes_per_video": round(cache_bytes / len(entries)) if entries else 0,
            },
        }
        atomic_write_text(out_dir / "sweep.csv", sweep_csv(grid, rows, figures, best, test_tuned))
        atomic_write_text(out_dir / "per_video.csv", per_video_csv(scored[best].videos, subset))
        atomic_write_json(out_dir / "summary.json", summary)
        atomic_write_json(out_dir / RUN_NAME, {**config, "grid": grid_json, "fixed": fixed, "settings": asdict(rows[best])})
        return summary
