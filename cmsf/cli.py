"""The ``cmsf`` command: ``cmsf segment`` (one video) and ``cmsf eval`` (AVSBench S4 / MS3).

Exit status: 0 on success, 2 for a usage error (a bad option or argument), 1 for a data error (an
unreadable input, a missing file, a model that cannot be loaded); both print one clear message
naming the culprit, never a traceback. Progress bars and progress messages go to stderr; results
(the summary line, the scores) to stdout.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import click
import torch

from cmsf import avsbench
from cmsf.io import atomic_write_json, atomic_write_text, remove_stale_temporaries
from cmsf.media import Clip, load_clip, overlay_mask, write_png_image, write_png_mask
from cmsf.metrics import dataset_scores, fscore, miou
from cmsf.models import COMPONENTS, PRESETS, ModelLoadError, load_models
from cmsf.ops import BIND_MODES
from cmsf.pipelines import PIPELINE_NAMES, PIPELINES

DTYPES = ("float32", "bfloat16")
MAX_LISTED = 20
"""How many missing files an error lists before it gives a count of the rest."""


# ------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def _data_errors(context: str = "") -> Iterator[None]:
    """Turn the errors bad data raises (ValueError, OSError, ModelLoadError) into a click error:
    exit status 1, one line, no traceback."""
    try:
        yield
    except click.ClickException:
        raise
    except (ValueError, OSError, ModelLoadError) as error:
        message = str(error) or type(error).__name__
        if isinstance(error, ModelLoadError):
            message += " On the command line, a local copy is passed as --model COMPONENT=PATH."
        raise click.ClickException(f"{context}{message}") from None


LOG_EVERY = 25
"""Without a terminal, long loops log one progress line per this many items instead of a bar."""


def _progress(items: Sequence[Any], desc: str, unit: str) -> Iterator[Any]:
    """Iterate ``items`` with progress on stderr: a tqdm bar on a terminal; otherwise (a log
    file, a batch job) a line every :data:`LOG_EVERY` items and at the end, when there are more
    than :data:`LOG_EVERY` of them."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
        return
    total = len(items)
    started = time.perf_counter()
    for index, item in enumerate(items, start=1):
        yield item
        if total > LOG_EVERY and (index % LOG_EVERY == 0 or index == total):
            elapsed = time.perf_counter() - started
            left = elapsed / index * (total - index)
            _info(f"{desc}: {index}/{total} {unit}s, {elapsed:.0f} s elapsed, about {left:.0f} s left")


def _info(message: str) -> None:
    click.echo(message, err=True)


def _parse_pairs(values: Sequence[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        pairs[key.strip()] = rest.strip()
    return pairs


def _keyword_defaults(pipeline: str) -> dict[str, Any]:
    """The pipeline function's keyword-only settings and their defaults."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(PIPELINES[pipeline]).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


def pipeline_settings(pipeline: str, values: Sequence[str]) -> dict[str, Any]:
    """Parse ``--set KEY=VALUE`` options against the pipeline's keyword arguments.

    A value whose default is an integer is parsed as an int, one whose default is a float as a
    float; other values stay strings. Unknown keys and bad numbers are usage errors listing what
    the pipeline accepts.
    """
    accepted = _keyword_defaults(pipeline)
    settings: dict[str, Any] = {}
    for key, raw in _parse_pairs(values, "--set").items():
        if key not in accepted:
            known = ", ".join(f"{k} (default {v!r})" for k, v in accepted.items()) or "none"
            raise click.BadParameter(f"{pipeline} has no setting {key!r}; it accepts: {known}", param_hint="--set")
        default = accepted[key]
        if isinstance(default, int) and not isinstance(default, bool):
            try:
                settings[key] = int(raw)
            except ValueError:
                raise click.BadParameter(f"{key}: expected an integer, got {raw!r}", param_hint="--set") from None
        elif isinstance(default, float):
            try:
                settings[key] = float(raw)
            except ValueError:
                raise click.BadParameter(f"{key}: expected a number, got {raw!r}", param_hint="--set") from None
            if not math.isfinite(settings[key]):
                raise click.BadParameter(f"{key}: expected a finite number, got {raw!r}", param_hint="--set")
        else:
            settings[key] = raw
    check_settings(pipeline, settings)
    return settings


UNIT_SETTINGS = (
    "box_threshold",
    "bind_threshold",
    "tag_threshold",
    "text_threshold",
    "nms_threshold",
    "pred_iou_threshold",
    "stability_score_threshold",
)
"""Settings that are a number in [0, 1] (``bind_threshold`` in [-1, 1] with ``bind_mode=cosine``)."""


def check_settings(pipeline: str, settings: dict[str, Any]) -> None:
    """Check the values of ``--set`` settings before anything is computed or written: the
    thresholds of :data:`UNIT_SETTINGS` in range, ``bind_mode`` one of
    :data:`cmsf.ops.BIND_MODES`, ``points_per_side`` a positive integer. A bad value is a usage
    error naming ``--set`` and the key."""
    mode = effective_settings(pipeline, settings).get("bind_mode")
    if "bind_mode" in settings and settings["bind_mode"] not in BIND_MODES:
        raise click.BadParameter(
            f"bind_mode: expected one of {', '.join(BIND_MODES)}, got {settings['bind_mode']!r}", param_hint="--set"
        )
    for key, value in settings.items():
        if key in UNIT_SETTINGS:
            low = -1.0 if key == "bind_threshold" and mode == "cosine" else 0.0
            if not low <= value <= 1.0:
                where = f" with bind_mode {mode}" if key == "bind_threshold" else ""
                raise click.BadParameter(f"{key}: expected a number in [{low:g}, 1]{where}, got {value!r}", param_hint="--set")
        elif key == "points_per_side" and value <= 0:
            raise click.BadParameter(f"{key}: expected a positive integer, got {value!r}", param_hint="--set")


def effective_settings(pipeline: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """All of the pipeline's keyword settings: its defaults, updated with ``overrides``."""
    return {**_keyword_defaults(pipeline), **overrides}


def model_overrides_of(values: Sequence[str]) -> dict[str, str]:
    """Parse ``--model COMPONENT=SOURCE`` options; an unknown component is a usage error."""
    overrides = _parse_pairs(values, "--model")
    unknown = [name for name in overrides if name not in COMPONENTS]
    if unknown:
        raise click.BadParameter(
            f"unknown component {unknown[0]!r}; expected one of {', '.join(COMPONENTS)}", param_hint="--model"
        )
    return overrides


def _models(preset: str, device: Optional[str], dtype: str, model_overrides: Sequence[str]) -> Any:
    """Load the preset's models once for the whole command (each component loads on first use)."""
    overrides = model_overrides_of(model_overrides)
    try:
        return load_models(preset, device=device, dtype=dtype, **overrides)
    except ValueError as error:
        message = str(error) or type(error).__name__
        if message.startswith("device:"):  # load_models names its argument; the option is --device
            detail = message.removeprefix("device:").strip()
            raise click.BadParameter(detail, param_hint="--device") from None
        raise click.UsageError(message) from None


def _run_pipeline(pipeline: str, clip: Clip, models: Any, settings: dict[str, Any], what: str) -> Any:
    """Run one pipeline on one clip and check its masks are ``Tensor[T, H, W]`` bool at frame size."""
    function = PIPELINES[pipeline]
    with _data_errors(f"{what}: "), torch.no_grad():
        result = function(clip.frames, clip.waveform, clip.sample_rate, models, **settings)
    masks = result.masks
    expected = (clip.num_frames, *clip.frames.shape[-2:])
    if not isinstance(masks, torch.Tensor) or tuple(masks.shape) != expected:
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise click.ClickException(f"{what}: {pipeline} returned masks of shape {shape}, expected {expected}")
    return result


# ------------------------------------------------------------------------------------ the group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cmsf", prog_name="cmsf")
def main() -> None:
    """Training-free audio-visual segmentation (Cross-Modality Semantic Filtering).

    Segments the objects that are sounding in a video, one mask per frame, by chaining
    off-the-shelf foundation models (OWOD-BIND, SAM-BIND, AT-GDINO-SAM), and scores the
    results on AVSBench S4 / MS3.

    \b
    Examples:
      cmsf segment clip.mp4 --pipeline owod-bind --out out/
      cmsf eval --root AVSBench --subset s4 --pipeline owod-bind --out runs/s4
    """


_pipeline_option = click.option(
    "--pipeline",
    "-p",
    type=click.Choice(PIPELINE_NAMES),
    help="Which CMSF pipeline: owod-bind (the paper's best), sam-bind or at-gdino-sam.",
)
_preset_option = click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="paper",
    show_default=True,
    help="Model weights: paper (the paper's checkpoints, downloaded once and cached), tiny (tiny "
    "random models, offline, for smoke tests) or paper-random (full-size random, for timing).",
)
_device_option = click.option(
    "--device", default=None, help="Torch device, e.g. cpu, cuda, cuda:1. [default: cuda if available, else cpu]"
)
_dtype_option = click.option(
    "--dtype", type=click.Choice(DTYPES), default="float32", show_default=True, help="Model precision."
)
_set_option = click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A pipeline threshold, e.g. --set bind_threshold=0.6 (repeatable; defaults are the paper's).",
)
_model_option = click.option(
    "--model",
    "model_overrides",
    multiple=True,
    metavar="COMPONENT=SOURCE",
    help="Use another checkpoint for a component (ast, grounding_dino, sam, owlv2: a hub id or a "
    "local save_pretrained folder; imagebind: a .pth path), e.g. --model sam=facebook/sam-vit-base.",
)


# ------------------------------------------------------------------------------------ segment


@main.command(short_help="Segment the sounding objects of one video.")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@_pipeline_option
@click.option(
    "--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder."
)
@_preset_option
@_device_option
@_dtype_option
@click.option(
    "--num-frames", type=click.IntRange(min=1), default=None, help="Video files: N frames, one per N equal spans."
)
@click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Video files: F frames per second of audio. [default: 1, as AVSBench]",
)
@click.option(
    "--audio",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The audio file of a frame folder (found automatically when the folder holds one .wav, "
    "or sits in AVSBench's layout).",
)
@_set_option
@_model_option
def segment(
    input_path: Path,
    pipeline: Optional[str],
    out_dir: Path,
    preset: str,
    device: Optional[str],
    dtype: str,
    num_frames: Optional[int],
    fps: Optional[float],
    audio: Optional[Path],
    settings: tuple[str, ...],
    model_overrides: tuple[str, ...],
) -> None:
    """Segment the sounding objects of one video.

    INPUT is a video file with an audio track (mp4, mkv, webm, mov, …) or a folder of frames
    (png / jpg, in natural order: x_2 before x_10) with its audio (--audio). By default a video
    gives one frame per second of audio: the frame shown at 15/16 of each second, as AVSBench
    samples its clips (change with --num-frames or --fps); audio second t goes with frame t.

    Writes to --out: mask_0000.png … (0/255, frame size), overlay_0000.png … (the mask in red
    over the frame) and evidence.json (the pipeline's proposals, scores and kept indices), then
    prints a summary line.

    \b
    Examples:
      cmsf segment examples/demo.mp4 --pipeline owod-bind --out out/
      cmsf segment examples/demo.mp4 -p owod-bind --preset tiny --out /tmp/smoke   # offline
      cmsf segment frames/ --audio sound.wav -p at-gdino-sam --out out/ --device cuda
    """
    if pipeline is None:
        raise click.UsageError("Missing option '--pipeline' / '-p' (one of " + ", ".join(PIPELINE_NAMES) + ").")
    if num_frames is not None and fps is not None:
        raise click.UsageError("--num-frames and --fps: give at most one of them.")
    if input_path.is_dir() and (num_frames is not None or fps is not None):
        raise click.BadParameter("--num-frames / --fps apply to a video file; a frame folder's frames are all used.", param_hint="INPUT")
    if input_path.is_file() and audio is not None:
        raise click.BadParameter("--audio goes with a folder of frames; a video file brings its own audio track.", param_hint="--audio")
    if input_path.is_dir() and out_dir.resolve() == input_path.resolve():
        raise click.BadParameter(
            "is the input frame folder; its masks and overlays would be read as frames next time. "
            "Use another folder.",
            param_hint="--out",
        )
    thresholds = pipeline_settings(pipeline, settings)
    model_overrides_of(model_overrides)
    started = time.perf_counter()

    with _data_errors():
        clip = load_clip(input_path, audio=audio, num_frames=num_frames, fps=fps)
    height, width = clip.frames.shape[-2:]
    _info(f"read {clip.num_frames} frames of {width}×{height} and {clip.duration:.2f} s of audio from {input_path}")
    models = _models(preset, device, dtype, model_overrides)
    _info(f"running {pipeline} ({preset} models on {models.device}, {dtype})…")
    result = _run_pipeline(pipeline, clip, models, thresholds, str(input_path))

    masks = result.masks.detach().cpu().bool()
    with _data_errors():
        out_dir.mkdir(parents=True, exist_ok=True)
        for t in _progress(range(clip.num_frames), "writing", "frame"):
            write_png_mask(out_dir / f"mask_{t:04d}.png", masks[t])
            write_png_image(out_dir / f"overlay_{t:04d}.png", overlay_mask(clip.frames[t], masks[t]))
        _remove_stale_outputs(out_dir, clip.num_frames)
        elapsed = time.perf_counter() - started
        coverage = [float(m.float().mean()) for m in masks]
        evidence = {
            "input": str(input_path),
            "source": clip.source,
            "pipeline": pipeline,
            "preset": preset,
            "device": str(models.device),
            "dtype": dtype,
            "settings": effective_settings(pipeline, thresholds),
            "frames": clip.num_frames,
            "frame_size": [int(height), int(width)],
            "frame_times_s": list(clip.frame_times) if clip.frame_times is not None else None,
            "sample_rate": clip.sample_rate,
            "audio_seconds": clip.duration,
            "coverage": coverage,
            "masks": [f"mask_{t:04d}.png" for t in range(clip.num_frames)],
            "overlays": [f"overlay_{t:04d}.png" for t in range(clip.num_frames)],
            "elapsed_s": round(elapsed, 3),
            "result": result.to_json(),
        }
        atomic_write_json(out_dir / "evidence.json", evidence)
    mean = 100 * sum(coverage) / len(coverage)
    nonempty = sum(1 for c in coverage if c > 0)
    click.echo(
        f"{clip.num_frames} frames ({nonempty} with a mask), {mean:.1f}% of pixels covered on average, "
        f"{elapsed:.1f} s → {out_dir}"
    )


_OUTPUT_NAME = re.compile(r"(mask|overlay)_(\d{4,})\.png")


def _remove_stale_outputs(out_dir: Path, num_frames: int) -> list[Path]:
    """Delete the ``mask_{t:04d}.png`` / ``overlay_{t:04d}.png`` of an earlier, longer run (t ≥
    ``num_frames``) from ``out_dir``; only files named exactly as cmsf names them are touched."""
    removed = []
    for path in sorted(out_dir.iterdir()):
        match = _OUTPUT_NAME.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        index = int(match.group(2))
        if index >= num_frames and path.name == f"{match.group(1)}_{index:04d}.png":
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# ------------------------------------------------------------------------------------ eval


def _listing(paths: Sequence[Path]) -> str:
    return avsbench.list_paths(paths, MAX_LISTED, lines=True)


def _missing_message(missing: list[Path], pred_dir: Path, subset: str) -> str:
    layout = "{category}/{video}/{video}_{k}.png" if subset == "s4" else "{video}/{video}_{k}.png"
    return (
        f"{len(missing)} prediction file(s) missing under {pred_dir} (expected AVSBench's layout "
        f"{layout}, k = 0 … 4):\n{_listing(missing)}"
    )


def _missing_gt_message(missing: list[Path]) -> str:
    return (
        f"{len(missing)} ground-truth file(s) missing (AVSBench's gt_masks/…/{{video}}_{{k}}.png, "
        f"numbered consecutively from 1):\n{_listing(missing)}"
    )


def score_videos(
    root: Path,
    subset: str,
    entries: Sequence[avsbench.VideoEntry],
    pred_dir: Path,
    *,
    resize: bool = False,
) -> list[dict[str, Any]]:
    """Score every video's predictions against its ground truth (AVSBench's protocol).

    Prediction k is compared with ground truth ``k + 1`` for the K masks the video has (5, or 1
    for S4 train). Returns one row per video: ``{"video", "category", "miou", "fscore"}``.
    """
    rows = []
    for entry in _progress(entries, "scoring", "video"):
        gt = avsbench.load_gt_masks(root, subset, entry)
        pred = avsbench.read_pred_masks(pred_dir, subset, entry, tuple(gt.shape[1:]), resize=resize)
        pred = pred[: gt.shape[0]]
        rows.append(
            {"video": entry.name, "category": entry.category, "miou": miou(pred, gt), "fscore": fscore(pred, gt)}
        )
    return rows


def _per_video_csv(rows: list[dict[str, Any]], subset: str) -> str:
    buffer = io.StringIO()
    columns = ["video", "category", "miou", "fscore"] if subset == "s4" else ["video", "miou", "fscore"]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "miou": repr(row["miou"]), "fscore": repr(row["fscore"])})
    return buffer.getvalue()


def _check_run_config(out_dir: Path, config: dict[str, Any]) -> None:
    """Refuse to mix predictions of different runs in one folder; record this run's settings."""
    import json

    path = out_dir / "run.json"
    predictions = out_dir / "pred_masks"
    has_predictions = predictions.is_dir() and any(p.is_file() for p in predictions.rglob("*.png"))
    if path.is_file() and has_predictions:
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise click.ClickException(f"{path}: unreadable ({error}); delete it to start over") from None
        if not isinstance(previous, dict):
            raise click.ClickException(
                f"{path}: unreadable (expected a JSON object, got {type(previous).__name__}); delete it to start over"
            )
        changed = {k: (previous.get(k), v) for k, v in config.items() if previous.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
            raise click.ClickException(
                f"{out_dir} holds predictions of another run ({detail}); use another --out, or delete "
                f"{out_dir / 'pred_masks'} and {path} to start over"
            )
    atomic_write_json(path, config)


@main.command(name="eval", short_help="Evaluate on AVSBench S4 / MS3 (mIoU, F-score).")
@click.option(
    "--root",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The AVSBench folder (holding Single-source/ and Multi-sources/).",
)
@click.option("--subset", required=True, type=click.Choice(avsbench.SUBSETS, case_sensitive=False), help="s4 or ms3.")
@click.option("--split", default="test", show_default=True, help="The csv's split to evaluate (train, val, test).")
@_pipeline_option
@click.option(
    "--pred-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Score existing predictions instead of running a pipeline: a pred_masks folder in "
    "AVSBench's layout (or the folder holding it), written by any method.",
)
@click.option(
    "--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder."
)
@_preset_option
@_device_option
@_dtype_option
@_set_option
@_model_option
@click.option(
    "--resize-pred",
    is_flag=True,
    help="Resize predictions whose size differs from the ground truth's (nearest neighbour) "
    "instead of refusing them.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Only the first N videos of the split (smoke runs)."
)
def eval_command(
    root: Path,
    subset: str,
    split: str,
    pipeline: Optional[str],
    pred_dir: Optional[Path],
    out_dir: Path,
    preset: str,
    device: Optional[str],
    dtype: str,
    settings: tuple[str, ...],
    model_overrides: tuple[str, ...],
    resize_pred: bool,
    limit: Optional[int],
) -> None:
    """Evaluate on AVSBench S4 or MS3 with the benchmark's mIoU and F-score.

    With --pipeline: runs it on every video of the split (models loaded once), saves the
    predicted masks as AVSBench's test script does, then scores them:

    \b
      OUT/pred_masks/{category}/{video}/{video}_{k}.png   (S4)
      OUT/pred_masks/{video}/{video}_{k}.png              (MS3)

    with k = 0 … 4 (predictions are numbered from 0, AVSBench's frames and ground truth from 1),
    and each video's evidence as OUT/evidence/…/{video}.json. Resumable: a video whose 5 masks exist is not recomputed, only scored (every file is written
    atomically, so an interrupted run leaves no half-written file; OUT/run.json refuses a resume
    with other settings).

    With --pred-dir: scores masks made by anything, in that layout, without loading a model; any
    non-zero pixel is foreground; a prediction of another size than its ground truth is refused
    unless --resize-pred. Missing files are an error that lists them.

    Writes OUT/per_video.csv (video, category for S4, miou, fscore) and OUT/summary.json (miou,
    fscore: means over videos; videos, subset, split, pipeline, preset, …) and prints the figures.

    \b
    Examples:
      cmsf eval --root AVSBench --subset s4 --pipeline owod-bind --out runs/s4-owod
      cmsf eval --root AVSBench --subset ms3 --pred-dir other/pred_masks --out runs/other
      cmsf eval --root AVSBench --subset s4 -p owod-bind --preset tiny --limit 2 --out /tmp/smoke
    """
    subset = subset.lower()
    if (pipeline is None) == (pred_dir is None):
        raise click.UsageError("give exactly one of --pipeline (run it) and --pred-dir (score existing masks)")
    if pred_dir is not None:
        given = [
            name
            for name, value, default in (
                ("--preset", preset, "paper"),
                ("--device", device, None),
                ("--dtype", dtype, "float32"),
                ("--set", settings, ()),
                ("--model", model_overrides, ()),
            )
            if value != default
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only with --pipeline (--pred-dir loads no model)")
    thresholds = pipeline_settings(pipeline, settings) if pipeline is not None else {}
    model_overrides_of(model_overrides)
    started = time.perf_counter()

    with _data_errors():
        entries = avsbench.list_videos(root, subset, split)
    if limit is not None:
        entries = entries[:limit]
    with _data_errors():
        missing_gt = avsbench.missing_gt_masks(root, subset, entries)
    if missing_gt:  # before any model is loaded or any video computed
        raise click.ClickException(_missing_gt_message(missing_gt))
    computed = 0
    models = None
    if pipeline is not None:
        predictions = out_dir / "pred_masks"
        config = {
            "subset": subset,
            "split": split,
            "pipeline": pipeline,
            "preset": preset,
            "dtype": dtype,
            "settings": effective_settings(pipeline, thresholds),
            "models": dict(sorted(model_overrides_of(model_overrides).items())),
        }
        with _data_errors():
            out_dir.mkdir(parents=True, exist_ok=True)
            _check_run_config(out_dir, config)
            remove_stale_temporaries(out_dir)
        todo = [e for e in entries if not avsbench.is_complete(predictions, subset, e)]
        _info(
            f"{subset.upper()} {split}: {len(entries)} videos, {len(entries) - len(todo)} already done, "
            f"{len(todo)} to segment with {pipeline}"
        )
        if todo:
            models = _models(preset, device, dtype, model_overrides)
        for entry in _progress(todo, pipeline, "video"):
            with _data_errors(f"video {entry.key}: "):
                clip = avsbench.load_video(root, subset, entry)
            result = _run_pipeline(pipeline, clip, models, thresholds, f"video {entry.key}")
            with _data_errors(f"video {entry.key}: "):
                atomic_write_json(out_dir / "evidence" / f"{entry.key}.json", result.to_json())
                avsbench.write_pred_masks(predictions, subset, entry, result.masks.detach().cpu().bool())
            computed += 1
    else:
        predictions = avsbench.resolve_pred_dir(pred_dir)
        missing = avsbench.missing_pred_masks(predictions, subset, entries)
        if missing:
            raise click.ClickException(_missing_message(missing, predictions, subset))

    with _data_errors():
        rows = score_videos(root, subset, entries, predictions, resize=resize_pred)
        scores = dataset_scores((row["miou"], row["fscore"]) for row in rows)
        summary = {
            "miou": scores.miou,
            "fscore": scores.fscore,
            "videos": scores.videos,
            "subset": subset,
            "split": split,
            "pipeline": pipeline,
            "preset": preset if pipeline is not None else None,
            "dtype": dtype if pipeline is not None else None,
            "device": str(models.device) if models is not None else None,
            "settings": effective_settings(pipeline, thresholds) if pipeline is not None else None,
            "root": str(root),
            "pred_dir": str(predictions),
            "limit": limit,
            "computed": computed,
            "reused": len(entries) - computed,
            "elapsed_s": round(time.perf_counter() - started, 3),
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "per_video.csv", _per_video_csv(rows, subset))
        atomic_write_json(out_dir / "summary.json", summary)
    click.echo(
        f"{subset.upper()} {split}, {scores.videos} videos: mIoU {scores.miou:.4f}  F-score {scores.fscore:.4f}"
    )


if __name__ == "__main__":  # python -m cmsf.cli
    main()
