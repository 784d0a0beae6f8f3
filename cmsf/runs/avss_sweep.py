"""Threshold sweeps on AVSBench-semantic (``cmsf eval --subset avss --sweep``), from the cache.

A per-frame pipeline's model pass runs once per video, as an S4 / MS3 sweep's does
(:mod:`cmsf.runs.sweep`: the same plan, cache files and dataset runner), and every row of the
grid, the pipeline's free keys times the class decision's ``label_threshold``
(:func:`cmsf.pipelines.semantic.semantic_frames`), is selected, labelled and scored from the cache
with no model:

- BIND pipelines: the class decision needs each kept mask's crop embedding and its segment's
  audio embedding, both in the cached candidates (the same masked crops and segments the class
  decision of a plain run embeds again), and the 70 class prompts' text embeddings, computed once
  per run folder and kept in ``class_texts.npz`` (with the identity of the models);
- AT pipelines: a kept mask's class is its tag's (the phrase each candidate was grounded to,
  cached with it).

So a row equals a separate ``cmsf eval --subset avss --set … --label-threshold …`` run where the
models' kernels are batch-invariant (CPU, one thread): the sweep reads a kept mask's embedding
from the batch of every candidate, a plain run embeds the kept masks again in their own batch.

A sweep's folder holds what :mod:`cmsf.runs.avss_eval` writes for the best row (``pred_masks/``,
``evidence/`` with ``labels``, ``per_video.csv``, ``per_class.csv``, ``summary.json`` with a
``"sweep"`` entry), the cache, ``class_texts.npz`` (BIND pipelines) and ``sweep.csv``: one row
per setting, the swept keys, ``miou``, ``fscore`` (official), the AVSS variants, ``best``. A
sweep on the test split is an oracle figure (:data:`cmsf.runs.sweep.ORACLE_NOTE`).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from cmsf.checks import check_unit
from cmsf.io import avss
from cmsf.io.files import RUN_NAME, atomic_write_bytes, atomic_write_json, atomic_write_text, claim_folder
from cmsf.models.loading import Models
from cmsf.pipelines.per_frame import PIPELINE_STAGES, select_frames
from cmsf.pipelines.results import FrameCandidates, SegmentationResult
from cmsf.pipelines.semantic import BIND_PIPELINES, SemanticFrames, class_texts, labelled_frames, tagged_labels
from cmsf.pipelines.settings import PipelineSettings, TaggedSettings, resolve_settings, settings_for
from cmsf.runs.avss_eval import CLASS_COLUMNS, VIDEO_COLUMNS, avss_extras, padded_classes, table_csv, video_row
from cmsf.runs.cache import VideoCache, cache_path, read_cache
from cmsf.runs.evaluate import VideoError, claim_run_folder, report_failures
from cmsf.runs.progress import Progress, no_log, no_progress
from cmsf.runs.records import run_record, run_summary
from cmsf.runs.sweep import ORACLE_NOTE, best_row, sweep_rows
from cmsf.runs.sweep_passes import SweepPlan, VideoCaches, covering_part, model_passes
from cmsf.semantic_metrics import DEFAULT_BATCH_SIZE, SemanticTotals
from cmsf.stages.binding import TextEmbeddings
from cmsf.stages.labelling import DEFAULT_CLASS_TEMPLATE, label_masks

LABEL_KEY = "label_threshold"
"""The class decision's key in a sweep's grid (``--sweep label_threshold=…``)."""

TEXTS_NAME = "class_texts.npz"
"""The class prompts' text embeddings of a BIND pipeline's sweep, in its run folder."""


def split_label_sweep(values: Sequence[str]) -> tuple[list[str], Optional[list[float]]]:
    """``--sweep KEY=V1,V2`` options → (those of the pipeline's keys, the ``label_threshold``
    values or None when it is not swept; a repeated value once).

    Raises:
        ValueError: a ``label_threshold`` value that is not a number in [0, 1] (the message starts
            with ``label_threshold``).
    """
    rest, labels = [], None
    for value in values:
        key, _, text = value.partition("=")
        if key.strip() != LABEL_KEY:
            rest.append(value)
            continue
        try:
            parsed = [float(item) for item in text.split(",")]
        except ValueError:
            raise ValueError(f"{LABEL_KEY}: expected comma-separated numbers in [0, 1], got {text!r}") from None
        labels = list(dict.fromkeys([*(labels or []), *(check_unit(v, LABEL_KEY) for v in parsed)]))
    return rest, labels


@dataclass(frozen=True)
class AvssRow:
    """One row of an AVSS grid: the pipeline's settings and the class decision's threshold."""

    settings: PipelineSettings
    label_threshold: float

    def values(self, keys: Sequence[str]) -> dict[str, Any]:
        """The row's value of each swept key."""
        return {key: self.label_threshold if key == LABEL_KEY else getattr(self.settings, key) for key in keys}


@dataclass(frozen=True)
class AvssPlan:
    """An AVSS sweep planned: the pipeline's :class:`~cmsf.runs.sweep.SweepPlan` (its rows, model
    passes, tags), the label thresholds, the rows of the grid (pipeline rows outer, label
    thresholds inner) and the swept keys in that order."""

    sweep: SweepPlan
    labels: list[float]
    rows: list[AvssRow]
    keys: list[str]


def plan_avss_sweep(
    pipeline: str,
    grid: Mapping[str, Sequence[Any]],
    labels: Optional[Sequence[float]],
    settings: Optional[PipelineSettings],
    models: Models,
    label_threshold: Optional[float] = None,
) -> AvssPlan:
    """Check and plan an AVSS sweep (nothing is read or loaded): ``grid`` the pipeline's swept
    keys (may be empty when ``labels`` are swept), ``labels`` the swept label thresholds (None:
    ``label_threshold``, default 0).

    Raises:
        ValueError: a pipeline without model passes (the tracked ones), nothing swept, a label
            threshold both fixed and swept or out of [0, 1], a bad grid
            (:func:`~cmsf.runs.sweep.sweep_rows`).
    """
    if pipeline not in PIPELINE_STAGES:
        raise ValueError(f"pipeline: an AVSS sweep runs {', '.join(PIPELINE_STAGES)}; {pipeline} is not swept yet")
    if labels is not None and label_threshold is not None:
        raise ValueError(f"{LABEL_KEY}: given both as a fixed setting and swept; give it once")
    if not grid and not labels:
        raise ValueError("sweep: expected at least one KEY=V1,V2,... to sweep")
    if labels is not None and pipeline not in BIND_PIPELINES:
        raise ValueError(f"{LABEL_KEY}: only the BIND pipelines' class decision has a threshold; {pipeline}'s masks "
                         "take their tags' classes")  # fmt: skip
    base = settings_for(pipeline, settings)
    rows = [resolve_settings(row, models) for row in (sweep_rows(base, grid) if grid else [base])]
    thresholds = [check_unit(t, LABEL_KEY) for t in dict.fromkeys(labels or [label_threshold or 0.0])]
    tagged = [row.tag_threshold for row in rows if isinstance(row, TaggedSettings)]
    fixed = {**base.changed(), **({} if labels or not label_threshold else {LABEL_KEY: label_threshold})}
    grid_values = {key: list(dict.fromkeys(values)) for key, values in grid.items()}
    plan = SweepPlan(pipeline, grid_values, fixed, rows, model_passes(rows), min(tagged) if tagged else None)
    keys = [*grid_values, *([LABEL_KEY] if labels else [])]
    return AvssPlan(plan, thresholds, [AvssRow(r, t) for r, t in itertools.product(rows, thresholds)], keys)


# ------------------------------------------------------------------------------ the class texts
def _texts_bytes(identity: Mapping[str, Any], text: TextEmbeddings) -> bytes:
    header = {"identity": identity, "template": DEFAULT_CLASS_TEMPLATE, "vision_scale": text.vision_scale,
              "vision_bias": text.vision_bias, "audio_scale": text.audio_scale, "audio_bias": text.audio_bias}  # fmt: skip
    encoded = np.frombuffer(json.dumps(header, allow_nan=False).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, header=encoded, vision=text.vision.float().cpu().numpy(), audio=text.audio.float().cpu().numpy())
    return buffer.getvalue()


def _read_texts(path: Path, identity: Mapping[str, Any]) -> Optional[TextEmbeddings]:
    """The class texts at ``path``, or None when absent, unreadable or of other models."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(bytes(archive["header"]).decode("utf-8"))
            if header.get("identity") != identity or header.get("template") != DEFAULT_CLASS_TEMPLATE:
                return None
            vision, audio = torch.from_numpy(archive["vision"]), torch.from_numpy(archive["audio"])
            scales = [float(header[k]) for k in ("vision_scale", "vision_bias", "audio_scale", "audio_bias")]
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error):
        return None
    if vision.ndim != 2 or audio.ndim != 2 or vision.dtype != torch.float32 or audio.dtype != torch.float32:
        return None
    return TextEmbeddings(vision, audio, *scales)


def cached_class_texts(out_dir: Path, identity: Mapping[str, Any], models: Models) -> TextEmbeddings:
    """The class prompts' text embeddings (:func:`~cmsf.pipelines.semantic.class_texts`) from
    ``out_dir/class_texts.npz``, or computed by ``models``' binder and written there atomically
    (float32, as computed: the same values a plain run labels with)."""
    path = out_dir / TEXTS_NAME
    text = _read_texts(path, identity)
    if text is None:
        text = class_texts(models)
        text = replace(text, vision=text.vision.float().cpu(), audio=text.audio.float().cpu())
        atomic_write_bytes(path, _texts_bytes(identity, text))
    return text


# ------------------------------------------------------------------------------ a row of a cached video
def _select_with_rows(
    pipeline: str, frames: Sequence[FrameCandidates], settings: PipelineSettings, cache: VideoCache
) -> tuple[SegmentationResult, list[Tensor]]:
    """The result of ``settings`` on the cached ``frames`` and, per frame, the index among the
    frame's candidates of each proposal its evidence lists (``Tensor[K'] int64``). The selection
    runs on the candidates with every box replaced by its index (no selection reads the boxes:
    they are only carried), then the boxes are put back."""
    marked = [
        replace(frame, boxes=torch.arange(frame.boxes.shape[0], dtype=torch.float32)[:, None].repeat(1, 4))
        for frame in frames
    ]  # fmt: skip
    result = select_frames(pipeline, marked, settings, cache.frame_size, cache.sources)
    rows = []
    for frame, evidence in zip(frames, result.frames):
        index = evidence.boxes[:, 0].long()
        evidence.boxes = frame.boxes[index]
        rows.append(index)
    return result, rows


def cached_semantic(
    pipeline: str, cache: VideoCache, row: AvssRow, text: Optional[TextEmbeddings]
) -> tuple[SegmentationResult, SemanticFrames]:
    """A row's result and class decision on a cached video, with no model: the kept masks'
    cached crop embeddings and their frame's audio embedding against ``text`` (BIND pipelines,
    :func:`~cmsf.stages.labelling.label_masks` at ``row.label_threshold``), or the tags' classes
    (AT pipelines).

    Raises:
        ValueError: no cached pass covers the row's settings.
    """
    part = covering_part(cache, row.settings)
    if part is None:
        raise ValueError(f"settings: no cached model pass covers {asdict(row.settings)}")
    result, rows = _select_with_rows(pipeline, part.frames, row.settings, cache)
    labels = []
    for frame, evidence, index in zip(part.frames, result.frames, rows):
        if pipeline not in BIND_PIPELINES:
            labels.append(tagged_labels(evidence))
            continue
        assert frame.visual is not None and frame.audio is not None and text is not None
        decided = label_masks(frame.visual[index[evidence.kept.bool()]], frame.audio, text,
                              threshold=row.label_threshold)  # fmt: skip
        labels.append((decided.classes.cpu(), decided.scores.float().cpu()))
    return result, labelled_frames(result.frames, labels)


# ------------------------------------------------------------------------------ the run
@dataclass
class _Grid:
    """Every row's running totals and per-video rows."""

    totals: list[SemanticTotals]
    videos: list[list[dict[str, Any]]] = field(default_factory=list)


def run_avss_sweep(
    root: Path,
    out_dir: Path,
    *,
    pipeline: str,
    grid: Mapping[str, Sequence[Any]],
    labels: Optional[Sequence[float]] = None,
    label_threshold: Optional[float] = None,
    split: str = "test",
    settings: Optional[PipelineSettings] = None,
    models: Models,
    limit: Optional[int] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    frames_per_batch: Optional[int] = None,
    workers: Optional[int] = None,
    progress: Progress = no_progress,
    log: Callable[[str], None] = no_log,
) -> dict[str, Any]:
    """Score every row of ``grid`` × ``labels`` on an AVSS split from one model pass per video.

    Args:
        grid, settings: the pipeline's swept keys and fixed settings, as
            :func:`cmsf.runs.sweep.run_sweep`'s (``grid`` may be empty when ``labels`` is given).
        labels: the class decision's thresholds to sweep; ``label_threshold`` the fixed one
            (None: 0) when they are not swept.
        root, split, limit, batch_size, frames_per_batch, workers, progress, log, models: as
            :func:`cmsf.runs.avss_eval.evaluate_avss` (the models are lazy: a sweep whose every
            video and class text is cached loads none).

    Returns:
        the best row's summary (as :func:`~cmsf.runs.avss_eval.evaluate_avss` writes it, with a
        ``"sweep"`` entry), also written as ``out_dir/summary.json`` beside ``sweep.csv``.

    Raises:
        ValueError: a bad grid (:func:`plan_avss_sweep`), before anything is read or written.
        FileNotFoundError: a file of the split missing (all listed), before any model runs.
        RunConflictError: the run folder belongs to another run.
        VideoError: videos whose data is refused, listed in ``errors.json`` after every other
            video's cache is saved.
    """
    started = time.perf_counter()
    plan = plan_avss_sweep(pipeline, grid, labels, settings, models, label_threshold)
    names = avss.read_classes(root)
    videos = avss.list_videos(root, split)[:limit]
    missing = avss.missing_files(root, videos, media=True)
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) or video folder(s) of {avss.METADATA_NAME} missing:\n"
                                f"{avss.describe_missing(missing)}")  # fmt: skip
    with claim_folder(out_dir):
        record = _claim(out_dir, plan, models, root, split)
        log(f"AVSS {split}: {len(videos)} videos × {len(plan.rows)} settings of {pipeline} "
            f"({len(plan.sweep.passes)} model pass(es) per video, cached in {out_dir / 'cache'})")  # fmt: skip
        identity = run_record("cache", pipeline, models)
        scored, computed = _score_grid(root, videos, out_dir, plan, models,
                                       {"frames_per_batch": frames_per_batch, "workers": workers},
                                       progress, batch_size)  # fmt: skip
        figures = [totals.summary() for totals in scored.totals]
        best = best_row(figures)
        _write_best(videos, out_dir, plan, plan.rows[best], identity, models, progress)
        context = {"root": root, "split": split, "limit": limit, "started": started, "batch_size": batch_size}
        summary = _summary(videos, scored.videos[best], figures[best], plan, best, models, computed, out_dir, context)
        atomic_write_text(out_dir / "sweep.csv", avss_sweep_csv(plan, figures, best, split == "test"))
        classes = [{"index": c, "name": names[c], **row} for c, row in enumerate(scored.totals[best].per_class())]
        atomic_write_text(out_dir / "per_video.csv", table_csv(scored.videos[best], VIDEO_COLUMNS))
        atomic_write_text(out_dir / "per_class.csv", table_csv(classes, CLASS_COLUMNS))
        atomic_write_json(out_dir / "summary.json", summary)
        best_row_settings = plan.rows[best]
        atomic_write_json(out_dir / RUN_NAME, {**record, "settings": asdict(best_row_settings.settings),
                                               LABEL_KEY: best_row_settings.label_threshold})  # fmt: skip
        return summary


def _claim(out_dir: Path, plan: AvssPlan, models: Models, root: Path, split: str) -> dict[str, Any]:
    """Claim ``out_dir`` for the sweep (as :func:`cmsf.runs.sweep.run_sweep` claims its own) and
    record it in ``run.json``: its grid (the label thresholds included when swept), fixed settings
    and, until the grid is scored, no best settings. Returns that record."""
    sweep = plan.sweep
    claimed = claim_run_folder(
        out_dir, run_record("sweep", sweep.pipeline, models, subset="avss", split=split, sweep=True), root
    )
    grid = {**sweep.grid, **({LABEL_KEY: plan.labels} if LABEL_KEY in plan.keys else {})}
    context = {"subset": "avss", "split": split, "sweep": True, "root": claimed["root"]}
    result = run_record("sweep-result", sweep.pipeline, models, **context, grid=grid, fixed=sweep.fixed)
    record = {"kind": claimed["kind"], **result}
    atomic_write_json(out_dir / RUN_NAME, record)
    return record


def _score_grid(
    root: Path,
    videos: Sequence[avss.AvssVideo],
    out_dir: Path,
    plan: AvssPlan,
    models: Models,
    runner: Mapping[str, Any],
    progress: Progress,
    batch_size: int,
) -> tuple[_Grid, int]:
    """Every row on every video, in split order (a video's cache read, or completed by the
    dataset runner and written back). Returns the rows' scores and how many videos a model ran on.

    Raises:
        VideoError: the videos whose data is refused, after every other one is cached.
    """
    sweep = plan.sweep
    loaders = {video.uid: partial(avss.load_video, root, video) for video in videos}
    identity = run_record("cache", sweep.pipeline, models)
    text = cached_class_texts(out_dir, identity, models) if sweep.pipeline in BIND_PIPELINES else None
    scored = _Grid([SemanticTotals(avss.NUM_CLASSES, batch_size) for _ in plan.rows], [[] for _ in plan.rows])
    failures: dict[str, str] = {}
    with VideoCaches(loaders, out_dir, sweep, models, runner) as caches:
        for video in progress(videos, f"sweep of {len(plan.rows)}", "video"):
            try:
                _score_video(root, video, caches.get(video.uid), plan, text, scored)
            except (ValueError, OSError) as error:  # the video's failure: the others go on
                failures[video.uid] = str(error) or type(error).__name__
    report_failures(out_dir, failures, len(videos))
    return scored, caches.computed


def _score_video(
    root: Path, video: avss.AvssVideo, cache: VideoCache, plan: AvssPlan, text: Optional[TextEmbeddings], scored: _Grid
) -> None:
    """Add the video's figures under every row (its class maps scored as the written PNGs of a
    plain run are: the padding frames background, no off-palette pixel)."""
    gt, annotated, off_gt = avss.load_ground_truth(root, video)
    for index, row in enumerate(plan.rows):
        _, semantic = cached_semantic(plan.sweep.pipeline, cache, row, text)
        figures = scored.totals[index].add(padded_classes(semantic.maps, video), gt, annotated)
        scored.videos[index].append(video_row(video, figures, off_gt, 0))


def _write_best(
    videos: Sequence[avss.AvssVideo],
    out_dir: Path,
    plan: AvssPlan,
    best: AvssRow,
    identity: dict[str, Any],
    models: Models,
    progress: Progress,
) -> None:
    """The best row's class maps (``pred_masks``) and evidence with ``labels`` of every video."""
    pipeline = plan.sweep.pipeline
    text = cached_class_texts(out_dir, identity, models) if pipeline in BIND_PIPELINES else None
    for video in progress(videos, "best setting", "video"):
        path = cache_path(out_dir / "cache", video.uid)
        cache = read_cache(path, identity, type(best.settings))
        if cache is None:
            raise VideoError(f"video {video.uid}: its cache {path} vanished")
        result, semantic = cached_semantic(pipeline, cache, best, text)
        evidence = {**result.to_json(), "labels": {"classes": semantic.classes, "scores": semantic.scores}}
        atomic_write_json(out_dir / "evidence" / f"{video.uid}.json", evidence)
        avss.write_predictions(out_dir / "pred_masks", video, padded_classes(semantic.maps, video))


def avss_sweep_csv(plan: AvssPlan, figures: Sequence[Mapping[str, Any]], best: int, test_tuned: bool) -> str:
    """The text of ``sweep.csv``: the swept keys, ``miou``, ``fscore``, the variants (full
    precision) and ``best`` (empty but on the best row: ``best``, or tuned on the test split
    ``oracle (test-tuned, not a result)``)."""
    variants = list(figures[0]["variants"]) if figures else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*plan.keys, "miou", "fscore", *variants, "best"])
    mark = "oracle (test-tuned, not a result)" if test_tuned else "best"
    for index, (row, figure) in enumerate(zip(plan.rows, figures)):
        values = [repr(figure["miou"]), repr(figure["fscore"]), *(repr(figure["variants"][v]) for v in variants)]
        writer.writerow([*row.values(plan.keys).values(), *values, mark if index == best else ""])
    return buffer.getvalue()


def _summary(
    videos: Sequence[avss.AvssVideo],
    rows: Sequence[Mapping[str, Any]],
    figures: Mapping[str, Any],
    plan: AvssPlan,
    best: int,
    models: Models,
    computed: int,
    out_dir: Path,
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """The sweep's ``summary.json``: the best row's as :func:`~cmsf.runs.avss_eval.evaluate_avss`
    writes it, with the ``"sweep"`` entry last."""
    split, count = context["split"], len(plan.rows)
    best_values = plan.rows[best].values(plan.keys)
    options = " ".join(f"--label-threshold {v}" if k == LABEL_KEY else f"--set {k}={v}" for k, v in best_values.items())
    note = (ORACLE_NOTE.format(rows=count) if split == "test"
            else f"best of {count} settings on the {split} split; report it on test with {options}")  # fmt: skip
    cache_bytes = sum(cache_path(out_dir / "cache", v.uid).stat().st_size for v in videos)
    grid = {**plan.sweep.grid, **({LABEL_KEY: plan.labels} if LABEL_KEY in plan.keys else {})}
    sweep = {"grid": grid, "fixed": plan.sweep.fixed, "rows": count, "best": best_values,
             "best_by": "miou, then fscore, then grid order", "test_tuned": split == "test", "note": note,
             "model_passes_per_video": len(plan.sweep.passes), "cache_bytes": cache_bytes,
             "cache_bytes_per_video": round(cache_bytes / len(videos)) if videos else 0}  # fmt: skip
    scores = {**figures, "videos": len(rows)}
    summary = run_summary(
        scores, subset="avss", split=split, pipeline=plan.sweep.pipeline, models=models,
        settings=plan.rows[best].settings, root=context["root"], pred_dir=out_dir / "pred_masks",
        limit=context["limit"], computed=computed, started=context["started"],
    )  # fmt: skip
    extra = avss_extras(plan.rows[best].label_threshold, context["batch_size"], rows)
    return {**summary, **extra, "sweep": sweep}

