"""``cmsf eval --subset avss``: a pipeline over an AVSBench-semantic split (resumable), or the
colour masks of any method, scored with the AVSS reference's per-class metrics
(:mod:`cmsf.semantic_metrics`).

A run folder holds (beside what :mod:`cmsf.runs.evaluate` describes for S4 / MS3)::

    pred_masks/{uid}/{uid}_{k}.png   k = 0 … 9, palette colours (cmsf.io.avss)
    per_video.csv    uid, label, a_obj, frames, miou, fscore, binary_miou, binary_fscore,
                     off_palette_gt, off_palette_pred
    per_class.csv    index, name, iou, fscore, frames, and the same over annotated frames
    summary.json     miou, fscore (official), variants, label_threshold, videos, …
    errors.json      the videos that could not be read or segmented (only while some fail)

A pipeline's kept masks get their classes by the class decision
(:mod:`cmsf.pipelines.semantic`: BIND pipelines where the picture and the sound agree with a
class prompt, AT pipelines through the AudioSet vocabulary of their tags; a mask without a class
is dropped), each frame becomes a class map (overlaps to the higher-scoring mask), and the padding
frames (5 … 9 of a v1 video) are background. Each video's evidence records the class and score
of every kept mask (``labels``). Scoring the written folder again with ``pred_dir`` gives the
run's own figures.
"""

from __future__ import annotations

import csv
import io
import time
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from cmsf.checks import check_unit
from cmsf.io import avss
from cmsf.io.files import atomic_write_json, atomic_write_text, claim_folder, remove_stale_temporaries
from cmsf.models.loading import Models
from cmsf.pipelines.semantic import BIND_PIPELINES, class_texts, semantic_frames
from cmsf.pipelines.settings import BIND_SETTINGS, PipelineSettings, resolve_settings, settings_for
from cmsf.runs.evaluate import claim_run_folder, report_failures
from cmsf.runs.progress import Progress, no_log, no_progress
from cmsf.runs.records import run_record, run_summary
from cmsf.runs.runner import Job, run_jobs
from cmsf.semantic_metrics import DEFAULT_BATCH_SIZE, SemanticTotals, VideoFigures

VIDEO_COLUMNS = ("uid", "label", "a_obj", "frames", "miou", "fscore", "binary_miou", "binary_fscore",
                 "off_palette_gt", "off_palette_pred")  # fmt: skip
CLASS_COLUMNS = ("index", "name", "iou", "fscore", "frames", "iou_annotated", "fscore_annotated", "frames_annotated")


@dataclass(frozen=True)
class PipelineRun:
    """What :func:`evaluate_avss` runs a pipeline with (see its arguments)."""

    split: str
    pipeline: str
    settings: PipelineSettings
    models: Models
    progress: Progress = no_progress
    frames_per_batch: Optional[int] = None
    workers: Optional[int] = None
    label_threshold: float = 0.0


def padded_classes(maps: torch.Tensor, video: avss.AvssVideo) -> torch.Tensor:
    """A pipeline's class maps ``Tensor[T, H, W]`` (T = the video's 5 or 10 frames) →
    ``Tensor[10, H, W]`` int64, the padding frames background."""
    if maps.ndim != 3 or maps.shape[0] != video.num_frames:
        raise ValueError(f"class maps of video {video.uid}: expected Tensor[{video.num_frames}, H, W], "
                         f"got {tuple(maps.shape)}")  # fmt: skip
    classes = torch.zeros(avss.MAX_FRAMES, *maps.shape[1:], dtype=torch.int64)
    classes[: video.num_frames] = maps.long()
    return classes


def score_split(
    root: Path,
    videos: Sequence[avss.AvssVideo],
    pred_dir: Path,
    *,
    resize: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = no_progress,
) -> tuple[SemanticTotals, list[dict[str, Any]], dict[str, str]]:
    """Score every video's predictions (in order, batches of ``batch_size`` as the reference).

    Returns ``(totals, rows of per_video.csv, failures {uid: message})``: a video whose ground
    truth or predictions cannot be read is a failure; the others are scored.
    """
    totals = SemanticTotals(avss.NUM_CLASSES, batch_size)
    rows, failures = [], {}
    for video in progress(videos, "scoring", "video"):
        try:
            gt, annotated, off_gt = avss.load_ground_truth(root, video)
            pred, off_pred = avss.read_predictions(pred_dir, video, resize=resize)
        except (ValueError, OSError) as error:
            failures[video.uid] = str(error) or type(error).__name__
            continue
        figures = totals.add(pred, gt, annotated)
        rows.append(video_row(video, figures, off_gt, off_pred))
    return totals, rows, failures


def video_row(video: avss.AvssVideo, figures: VideoFigures, off_gt: int, off_pred: int) -> dict[str, Any]:
    """One row of ``per_video.csv`` (see :data:`VIDEO_COLUMNS`)."""
    return {
        "uid": video.uid, "label": video.label, "a_obj": video.a_obj, "frames": figures.frames,
        "miou": figures.miou, "fscore": figures.fscore, "binary_miou": figures.binary_miou,
        "binary_fscore": figures.binary_fscore, "off_palette_gt": off_gt, "off_palette_pred": off_pred,
    }  # fmt: skip


def table_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as CSV text with ``columns``; floats at full precision, None as an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else repr(row[k]) if isinstance(row[k], float) else row[k]
                         for k in columns})  # fmt: skip
    return buffer.getvalue()


def segment_split(
    root: Path,
    videos: Sequence[avss.AvssVideo],
    out_dir: Path,
    run: PipelineRun,
) -> dict[str, str]:
    """Run the pipeline on each video's real frames (224 × 224), decide each kept mask's class
    (:func:`cmsf.pipelines.semantic.semantic_frames`, the frames read again for it) and write
    its 10 class maps and its evidence (with ``labels``) under ``out_dir``, each atomically as
    soon as its batch is done. Returns the failures {uid: message} (read or pipeline errors,
    ``ValueError`` / ``OSError``); every other video is saved."""
    jobs = [Job(v.uid, partial(avss.load_video, root, v)) for v in videos]
    text = class_texts(run.models) if run.pipeline in BIND_PIPELINES else None  # once a run
    background = run.settings.crop_background if isinstance(run.settings, BIND_SETTINGS) else "blur"
    failures: dict[str, str] = {}
    outcomes = run_jobs(run.pipeline, jobs, run.models, run.settings, frames_per_batch=run.frames_per_batch,
                        workers=run.workers)  # fmt: skip
    with closing(outcomes):
        for video in run.progress(videos, run.pipeline, "video"):
            outcome = next(outcomes)
            try:
                if outcome.error is not None:
                    raise outcome.error
                assert outcome.result is not None
                clip = avss.load_video(root, video)
                semantic = semantic_frames(run.pipeline, clip.frames, clip.waveform, clip.sample_rate, outcome.result,
                                           run.models, text=text, threshold=run.label_threshold,
                                           crop_background=background)  # fmt: skip
                evidence = {**outcome.result.to_json(), "labels": {"classes": semantic.classes,
                                                                   "scores": semantic.scores}}  # fmt: skip
                atomic_write_json(out_dir / "evidence" / f"{video.uid}.json", evidence)
                avss.write_predictions(out_dir / "pred_masks", video, padded_classes(semantic.maps, video))
            except (ValueError, OSError) as error:
                failures[video.uid] = str(error) or type(error).__name__
    return failures


def _check_files(root: Path, videos: Sequence[avss.AvssVideo], pred_dir: Optional[Path]) -> None:
    missing = avss.missing_files(root, videos, media=pred_dir is None)
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) or video folder(s) of {avss.METADATA_NAME} missing:\n"
                                f"{avss.describe_missing(missing)}")  # fmt: skip
    if pred_dir is not None:
        missing = avss.missing_preds(pred_dir, videos)
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} prediction file(s) missing under {pred_dir} (expected {{uid}}/{{uid}}_{{k}}.png, "
                f"k = 0 … 9; a v1 video may leave out 5 … 9):\n{avss.describe_missing(missing)}"
            )


def _run_pipeline(
    root: Path, videos: Sequence[avss.AvssVideo], out_dir: Path, run: PipelineRun, log: Callable[[str], None]
) -> tuple[int, dict[str, str]]:
    """Claim ``out_dir`` for ``run`` (run.json) and segment the videos whose predictions are not
    all there; returns how many were computed and the failures."""
    config = run_record("avss-eval", run.pipeline, run.models, run.settings, subset="avss", split=run.split,
                        label_threshold=run.label_threshold)  # fmt: skip
    claim_run_folder(out_dir, config, root)
    remove_stale_temporaries(out_dir)
    todo = [v for v in videos if not avss.is_complete(out_dir / "pred_masks", v)]
    log(f"AVSS {run.split}: {len(videos)} videos, {len(videos) - len(todo)} already done, "
        f"{len(todo)} to segment with {run.pipeline}")  # fmt: skip
    if not todo:
        return 0, {}
    return len(todo), segment_split(root, todo, out_dir, run)


def evaluate_avss(
    root: Path,
    out_dir: Path,
    *,
    split: str = "test",
    pipeline: Optional[str] = None,
    pred_dir: Optional[Path] = None,
    settings: Optional[PipelineSettings] = None,
    models: Optional[Models] = None,
    resize_pred: bool = False,
    limit: Optional[int] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    label_threshold: float = 0.0,
    frames_per_batch: Optional[int] = None,
    workers: Optional[int] = None,
    progress: Progress = no_progress,
    log: Callable[[str], None] = no_log,
) -> dict[str, Any]:
    """Evaluate on an AVSS split: run ``pipeline`` (resumable) or score ``pred_dir``'s colour masks.

    Arguments as :func:`cmsf.runs.evaluate.evaluate`; ``batch_size``: videos per reference batch
    (only float32 rounding depends on it); ``label_threshold``: the class decision's threshold
    for BIND pipelines (:func:`cmsf.pipelines.semantic.semantic_frames`), recorded in run.json.
    Missing files (a uid without its folder, masks, frames, audio, predictions) are refused
    before anything is read, all listed. A video that
    cannot be read or segmented does not stop the others: all are listed in ``errors.json`` and
    a :class:`~cmsf.runs.evaluate.VideoError` is raised, with no summary of part of the split.

    Returns:
        the summary, also written as ``out_dir/summary.json`` beside ``per_video.csv`` and
        ``per_class.csv``.
    """
    if (pipeline is None) == (pred_dir is None):
        raise ValueError("pipeline, pred_dir: give exactly one")
    if pipeline is not None and models is None:
        raise ValueError("models: expected the Models to run the pipeline with (see load_models)")
    if pipeline is not None:
        settings = resolve_settings(settings_for(pipeline, settings), models)  # checked before anything is read
    label_threshold = check_unit(label_threshold, "label_threshold")
    started = time.perf_counter()
    names = avss.read_classes(root)
    videos = avss.list_videos(root, split)[:limit]
    predictions = out_dir / "pred_masks" if pred_dir is None else avss.resolve_pred_dir(pred_dir)
    _check_files(root, videos, None if pred_dir is None else predictions)
    with claim_folder(out_dir):
        computed, failures = 0, {}
        if pipeline is not None:
            assert models is not None and settings is not None
            run = PipelineRun(
                split, pipeline, settings, models, progress, frames_per_batch, workers, label_threshold
            )
            computed, failures = _run_pipeline(root, videos, out_dir, run, log)
        scored = [v for v in videos if v.uid not in failures]
        totals, rows, read_failures = score_split(root, scored, predictions, resize=resize_pred,
                                                  batch_size=batch_size, progress=progress)  # fmt: skip
        report_failures(out_dir, {**failures, **read_failures}, len(videos))
        summary = run_summary(
            {**totals.summary(), "videos": len(rows)}, subset="avss", split=split, pipeline=pipeline,
            models=models if pipeline is not None else None, settings=settings if pipeline is not None else None,
            root=root, pred_dir=predictions, limit=limit, computed=computed, started=started,
        )  # fmt: skip
        summary.update(avss_extras(label_threshold if pipeline is not None else None, batch_size, rows))
        classes = [{"index": c, "name": names[c], **row} for c, row in enumerate(totals.per_class())]
        atomic_write_text(out_dir / "per_video.csv", table_csv(rows, VIDEO_COLUMNS))
        atomic_write_text(out_dir / "per_class.csv", table_csv(classes, CLASS_COLUMNS))
        atomic_write_json(out_dir / "summary.json", summary)
        return summary


def avss_extras(label_threshold: Optional[float], batch_size: int, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What an AVSS ``summary.json`` holds beyond :func:`~cmsf.runs.records.run_summary`'s: the
    class decision's threshold (None without a pipeline), the reference's batch size (videos per
    batch) and the off-palette pixels of the ground truth and the predictions (``rows`` of
    ``per_video.csv``)."""
    return {
        "label_threshold": label_threshold,
        "batch_size": batch_size,
        "off_palette_pixels": {"gt": sum(r["off_palette_gt"] for r in rows),
                               "pred": sum(r["off_palette_pred"] for r in rows)},
    }  # fmt: skip


def avss_scores_line(summary: Mapping[str, Any]) -> str:
    """``"AVSS test, 12 videos: mIoU 0.2051  F-score 0.2300 (classes present: …; binary view: …)"``."""
    variants = summary["variants"]
    return (
        f"AVSS {summary['split']}, {summary['videos']} videos: mIoU {summary['miou']:.4f}  F-score "
        f"{summary['fscore']:.4f} (classes present: {variants['miou_present']:.4f} / {variants['fscore_present']:.4f}; "
        f"binary view: {variants['binary_miou']:.4f} / {variants['binary_fscore']:.4f})"
    )
