"""The dataset run behind ``cmsf eval``: a pipeline over an AVSBench split (resumable), or the
predictions of any method, scored with AVSBench's metrics; ``per_video.csv`` and
``summary.json`` written into the run folder.

A run folder holds::

    run.json          the run's settings (a resume with other settings is refused)
    pred_masks/…      the predicted masks, in AVSBench's layout (see cmsf.io.avsbench)
    evidence/….json   each video's evidence (proposals, scores, kept)
    errors.json       the videos that could not be segmented and why (only while some fail)
    per_video.csv     video, [category,] miou, fscore, fscore_per_frame, iou_pooled
    summary.json      miou, fscore (means over videos), "variants" (other ways of averaging
                      frames, see cmsf.metrics) and what produced them

A run owns its folder while it lasts (:func:`cmsf.io.files.claim_folder`: created, checked for
writing and locked before any model loads; a second run into it is refused). Videos are
segmented by the dataset runner (:mod:`cmsf.runs.runner`: reading in background threads, several
videos per model batch). Every file is written atomically; a video whose masks all exist is not
recomputed. Progress is reported through the callables passed in (``progress`` wraps a loop,
``log`` prints a line), so the library itself never prints.
"""

from __future__ import annotations

import csv
import io
import json
import time
from contextlib import closing
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from cmsf.io import avsbench
from cmsf.io.files import (
    RUN_NAME,
    RunConflictError,  # also re-exported: it was defined here
    atomic_write_json,
    atomic_write_text,
    claim_folder,
    record_run,
    remove_stale_temporaries,
)
from cmsf.io.media import Clip
from cmsf.metrics import VariantTotals, VideoScores, dataset_scores, score_video
from cmsf.models.loading import Models
from cmsf.pipelines.per_frame import PIPELINES
from cmsf.pipelines.results import SegmentationResult
from cmsf.pipelines.settings import PipelineSettings, resolve_settings, settings_for
from cmsf.runs.progress import Progress, no_log, no_progress
from cmsf.runs.runner import Job, run_jobs

MAX_LISTED = 20
"""How many missing files an error lists before it gives a count of the rest."""


class VideoError(ValueError):
    """Reading or segmenting videos failed on their data; the message names each video."""


def run_pipeline(pipeline: str, clip: Clip, models: Models, settings: PipelineSettings) -> SegmentationResult:
    """Run ``PIPELINES[pipeline]`` on ``clip`` with ``settings`` and check that its masks are
    ``Tensor[T, H, W]`` at the clip's frame size.

    Raises:
        ValueError: the pipeline's masks have another shape.
    """
    result = PIPELINES[pipeline](clip.frames, clip.waveform, clip.sample_rate, models, settings=settings)
    masks = result.masks
    expected = (clip.num_frames, *clip.frames.shape[-2:])
    if not isinstance(masks, torch.Tensor) or tuple(masks.shape) != expected:
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"{pipeline} returned masks of shape {shape}, expected {expected}")
    return result


def missing_predictions_message(missing: Sequence[Path], pred_dir: Path, subset: str) -> str:
    layout = "{category}/{video}/{video}_{k}.png" if subset == "s4" else "{video}/{video}_{k}.png"
    return (
        f"{len(missing)} prediction file(s) missing under {pred_dir} (expected AVSBench's layout "
        f"{layout}, k = 0 … 4):\n{avsbench.list_paths(missing, MAX_LISTED, lines=True)}"
    )


def missing_gt_message(missing: Sequence[Path]) -> str:
    return (
        f"{len(missing)} ground-truth file(s) missing (AVSBench's gt_masks/…/{{video}}_{{k}}.png, "
        f"numbered consecutively from 1):\n{avsbench.list_paths(missing, MAX_LISTED, lines=True)}"
    )


def score_videos(
    root: Path,
    subset: str,
    entries: Sequence[avsbench.VideoEntry],
    pred_dir: Path,
    *,
    resize: bool = False,
    progress: Progress = no_progress,
) -> tuple[list[dict[str, Any]], dict[str, Optional[float]]]:
    """Score every video's predictions against its ground truth (AVSBench's protocol).

    Prediction k is compared with ground truth ``k + 1`` for the K masks the video has (5, or 1
    for S4 train). Returns one row per video (:func:`video_row`) and the split's variants
    (:meth:`cmsf.metrics.VariantTotals.variants`).
    """
    rows = []
    totals = VariantTotals()
    for entry in progress(entries, "scoring", "video"):
        gt = avsbench.load_gt_masks(root, subset, entry)
        pred = avsbench.read_pred_masks(pred_dir, subset, entry, tuple(gt.shape[1:]), resize=resize)
        scores = score_video(pred[: gt.shape[0]], gt)
        totals.add(scores)
        rows.append(video_row(entry, scores))
    return rows, totals.variants()


def video_row(entry: avsbench.VideoEntry, scores: VideoScores) -> dict[str, Any]:
    """One video's row of ``per_video.csv``: ``{"video", "category", "miou", "fscore",
    "fscore_per_frame", "iou_pooled"}`` (see :class:`cmsf.metrics.VideoScores`)."""
    return {
        "video": entry.name,
        "category": entry.category,
        "miou": scores.miou,
        "fscore": scores.fscore,
        "fscore_per_frame": scores.fscore_per_frame,
        "iou_pooled": scores.iou_pooled,
    }


PER_VIDEO_FIGURES = ("miou", "fscore", "fscore_per_frame", "iou_pooled")
"""The figures of each row of ``per_video.csv``, after video (and category for S4)."""


def per_video_csv(rows: Sequence[Mapping[str, Any]], subset: str) -> str:
    """The text of ``per_video.csv``: video, (category for S4,) :data:`PER_VIDEO_FIGURES` at full
    precision; an undefined figure (``fscore_per_frame`` of a video whose targets are all empty)
    is an empty cell."""
    buffer = io.StringIO()
    columns = (["video", "category"] if subset == "s4" else ["video"]) + list(PER_VIDEO_FIGURES)
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        figures = {k: "" if row.get(k) is None else repr(row[k]) for k in PER_VIDEO_FIGURES}
        writer.writerow({**row, **figures})
    return buffer.getvalue()


def claim_run_folder(out_dir: Path, config: Mapping[str, Any], root: Optional[Path] = None) -> dict[str, Any]:
    """Refuse to mix predictions of different runs in one folder, or to write into another kind of
    run's folder (``cmsf segment-many``'s); record this run's settings in ``out_dir/run.json``
    (:func:`cmsf.io.files.record_run`, kind ``"eval"``), and ``root`` resolved when given
    (:func:`check_root`). Returns the record.

    Raises:
        RunConflictError: ``run.json`` records another kind of run; or names other settings, or
            cannot be read, while predictions exist; or another data root while predictions or
            cached candidates exist.
    """
    predictions = out_dir / "pred_masks"
    has_predictions = predictions.is_dir() and any(p.is_file() for p in predictions.rglob("*.png"))
    extra: dict[str, Any] = {}
    if root is not None:
        extra["root"] = check_root(out_dir, root, has_predictions)
    return record_run(
        out_dir / RUN_NAME, config, kind="eval", outputs_exist=has_predictions, outputs=f"predictions ({predictions})",
        extra=extra,
    )  # fmt: skip


def check_root(out_dir: Path, root: Path, has_predictions: bool) -> str:
    """``root`` resolved, refused when ``out_dir/run.json`` records another AVSBench root while
    predictions or cached candidates (``out_dir/cache``) exist: they were computed from other
    data, and a rerun would reuse them without a word. A record without a root (older versions)
    cannot be told and is accepted.

    Raises:
        RunConflictError: another root, naming both.
    """
    resolved = str(Path(root).resolve())
    if not (out_dir / RUN_NAME).is_file():  # none yet (or not a file: record_run replaces it, unread)
        return resolved
    try:
        previous = json.loads((out_dir / RUN_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return resolved  # none yet, or unreadable: record_run decides
    recorded = previous.get("root") if isinstance(previous, dict) else None
    cache = out_dir / "cache"
    outputs = has_predictions or (cache.is_dir() and any(cache.rglob("*.npz")))
    if isinstance(recorded, str) and recorded != resolved and outputs:
        raise RunConflictError(
            f"{out_dir} holds predictions or cached candidates computed from the AVSBench root {recorded}, "
            f"not {resolved} (--root); use another --out, or delete them and {out_dir / RUN_NAME} to start over"
        )
    return resolved


def segment_videos(
    root: Path,
    subset: str,
    entries: Sequence[avsbench.VideoEntry],
    out_dir: Path,
    pipeline: str,
    settings: PipelineSettings,
    models: Models,
    *,
    progress: Progress = no_progress,
    frames_per_batch: Optional[int] = None,
    workers: Optional[int] = None,
) -> None:
    """Run ``pipeline`` on every video of ``entries`` with the dataset runner
    (:func:`cmsf.runs.runner.run_jobs`: videos read on ``workers`` threads, several videos per model
    batch of at most ``frames_per_batch`` frames), writing each video's masks under
    ``out_dir/pred_masks`` and its evidence as ``out_dir/evidence/{key}.json``, each atomically,
    as soon as its batch is done.

    A video whose data is refused (reading it, or the pipeline, raises ``ValueError`` /
    ``OSError``) does not stop the others: every other video is segmented and saved, the
    failures are listed in ``out_dir/errors.json`` ({key: message}), and then a
    :class:`VideoError` names them (a rerun resumes with just those). Any other exception (a
    bug, out of memory) is raised at once; the videos before it are saved.

    Raises:
        VideoError: one or more videos could not be read or were refused by the pipeline.
    """
    jobs = [Job(entry.key, partial(avsbench.load_video, root, subset, entry)) for entry in entries]
    failures: dict[str, str] = {}
    outcomes = run_jobs(pipeline, jobs, models, settings, frames_per_batch=frames_per_batch, workers=workers)
    with closing(outcomes):
        for entry in progress(entries, pipeline, "video"):
            outcome = next(outcomes)
            try:
                if outcome.error is not None:
                    raise outcome.error
                assert outcome.result is not None
                atomic_write_json(out_dir / "evidence" / f"{entry.key}.json", outcome.result.to_json())
                avsbench.write_pred_masks(out_dir / "pred_masks", subset, entry, outcome.result.masks.bool())
            except (ValueError, OSError) as error:
                failures[entry.key] = str(error) or type(error).__name__
    report_failures(out_dir, failures, len(entries))


def report_failures(out_dir: Path, failures: Mapping[str, str], total: int) -> None:
    """After a run over ``total`` videos: list ``failures`` ({video key: message}) in
    ``out_dir/errors.json`` and raise a :class:`VideoError` naming them, or, with none, remove an
    ``errors.json`` an earlier run left.

    Raises:
        VideoError: one or more videos failed (the others are saved; a rerun computes only them).
    """
    errors_path = out_dir / "errors.json"
    if failures:
        atomic_write_json(errors_path, dict(failures))
        listed = "\n".join(f"  {key}: {message}" for key, message in list(failures.items())[:MAX_LISTED])
        more = f"\n  … and {len(failures) - MAX_LISTED} more" if len(failures) > MAX_LISTED else ""
        raise VideoError(
            f"{len(failures)} of {total} video(s) failed (all listed in {errors_path}); the other "
            f"{total - len(failures)} are saved, and a rerun computes only the failed ones:\n{listed}{more}"
        )
    errors_path.unlink(missing_ok=True)


def evaluate(
    root: Path,
    subset: str,
    out_dir: Path,
    *,
    split: str = "test",
    pipeline: Optional[str] = None,
    pred_dir: Optional[Path] = None,
    settings: Optional[PipelineSettings] = None,
    models: Optional[Models] = None,
    resize_pred: bool = False,
    limit: Optional[int] = None,
    frames_per_batch: Optional[int] = None,
    workers: Optional[int] = None,
    progress: Progress = no_progress,
    log: Callable[[str], None] = no_log,
) -> dict[str, Any]:
    """Evaluate on an AVSBench split: run ``pipeline`` (resumable) or score ``pred_dir``.

    Args:
        root: the AVSBench folder; subset ``"s4"`` / ``"ms3"``; split of its csv.
        out_dir: the run folder (see the module docstring).
        pipeline: a name of :data:`cmsf.pipelines.per_frame.PIPELINES`, run with ``settings`` (its
            :data:`cmsf.pipelines.settings.SETTINGS` object, None: the defaults) on ``models``
            (:func:`~cmsf.models.loading.load_models`: lazy, so nothing loads unless a video needs
            computing). ``run.json`` records the subset, split, pipeline, all settings and the
            models' preset, dtype and every component's source (:meth:`~cmsf.models.loading.Models.record`), and a
            resume must match them.
        pred_dir: instead of a pipeline, a ``pred_masks`` folder (or the run folder holding one)
            of any method; ``resize_pred`` resizes predictions of another size than the ground
            truth (nearest neighbour) instead of refusing them.
        limit: only the first ``limit`` videos of the split.
        frames_per_batch, workers: of the dataset runner (:func:`cmsf.runs.runner.run_jobs`); the
            masks do not depend on them beyond floating-point rounding (see :mod:`cmsf.runs.runner`).
        progress, log: how to report progress (see :data:`Progress`) and messages.

    Returns:
        the summary, also written as ``out_dir/summary.json`` next to ``per_video.csv``.

    Raises:
        FileNotFoundError: ground truth or predictions missing (all listed), before any model runs.
        UnwritableFolderError: ``out_dir`` cannot be created or written, before any model runs.
        FolderInUseError: another run is writing into ``out_dir`` now (it holds its lock).
        RunConflictError: the run folder belongs to another run (other settings).
        VideoError: videos whose data is refused (after every other video is saved; see
            :func:`segment_videos`).
    """
    if (pipeline is None) == (pred_dir is None):
        raise ValueError("pipeline, pred_dir: give exactly one")
    record: Optional[dict[str, Any]] = None  # the models' preset, dtype, sources and the settings, with a pipeline
    if pipeline is not None:
        if models is None:
            raise ValueError("models: expected the Models to run the pipeline with (see load_models)")
        settings = resolve_settings(settings_for(pipeline, settings), models)  # checked before anything is read
        record = {**models.record(), "settings": asdict(settings)}
    started = time.perf_counter()
    entries = avsbench.list_videos(root, subset, split)
    if limit is not None:
        entries = entries[:limit]
    missing_gt = avsbench.missing_gt_masks(root, subset, entries)
    if missing_gt:  # before any model is loaded or any video computed
        raise FileNotFoundError(missing_gt_message(missing_gt))
    with claim_folder(out_dir):  # created, writable, ours until the end: before any model loads
        computed = 0
        if pipeline is not None:
            assert models is not None and record is not None
            run_config = {
                "subset": subset,
                "split": split,
                "pipeline": pipeline,
                "preset": record["preset"],
                "dtype": record["dtype"],
                "settings": record["settings"],
                "models": record["models"],
            }
            claim_run_folder(out_dir, run_config, root)
            remove_stale_temporaries(out_dir)
            predictions = out_dir / "pred_masks"
            todo = [e for e in entries if not avsbench.is_complete(predictions, subset, e)]
            log(
                f"{subset.upper()} {split}: {len(entries)} videos, {len(entries) - len(todo)} already done, "
                f"{len(todo)} to segment with {pipeline}"
            )
            if todo:
                segment_videos(
                    root, subset, todo, out_dir, pipeline, settings, models,
                    progress=progress, frames_per_batch=frames_per_batch, workers=workers,
                )  # fmt: skip
                computed = len(todo)
        else:
            predictions = avsbench.resolve_pred_dir(pred_dir)
            missing = avsbench.missing_pred_masks(predictions, subset, entries)
            if missing:
                raise FileNotFoundError(missing_predictions_message(missing, predictions, subset))

        rows, variants = score_videos(root, subset, entries, predictions, resize=resize_pred, progress=progress)
        scores = dataset_scores((row["miou"], row["fscore"]) for row in rows)
        summary = {
            "miou": scores.miou,
            "fscore": scores.fscore,
            "variants": variants,
            "videos": scores.videos,
            "subset": subset,
            "split": split,
            "pipeline": pipeline,
            "preset": record["preset"] if record else None,
            "dtype": record["dtype"] if record else None,
            "device": str(models.device) if record and computed else None,
            "settings": record["settings"] if record else None,
            "root": str(Path(root).resolve()),  # absolute: cmsf report finds it from anywhere
            "pred_dir": str(Path(predictions).resolve()),
            "limit": limit,
            "computed": computed,
            "reused": len(entries) - computed,
            "elapsed_s": round(time.perf_counter() - started, 3),
        }
        atomic_write_text(out_dir / "per_video.csv", per_video_csv(rows, subset))
        atomic_write_json(out_dir / "summary.json", summary)
        return summary


def scores_line(summary: Mapping[str, Any]) -> str:
    """The scores of an :func:`evaluate` summary in one line:
    ``"S4 test, 4932 videos: mIoU 0.5812  F-score 0.6723"``."""
    return (
        f"{summary['subset'].upper()} {summary['split']}, {summary['videos']} videos: mIoU {summary['miou']:.4f}  "
        f"F-score {summary['fscore']:.4f}"
    )
