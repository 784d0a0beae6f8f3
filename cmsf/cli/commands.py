"""The ``cmsf`` command: the click group and its commands, ``cmsf segment`` (one video), ``cmsf
segment-many`` (many, locally or on Ray), ``cmsf eval`` (AVSBench S4 / MS3, or a sweep of settings)
and ``cmsf report`` (a run's report.html). Each command parses its options, calls the library and
maps errors to exit codes; what several commands share (their common options, ``KEY=VALUE``
parsing, the error mapping, progress on stderr) is :mod:`cmsf.cli.options`.

Exit status: 0 on success, 2 for a usage error (a bad option or argument: more frames than the video
has, a --model path that does not exist, an --out that cannot be written), 1 for a data error (an
unreadable input, a missing file, a model that cannot be loaded, an --out another run holds); both
print one clear message naming the culprit, never a traceback. Progress, warnings (one line each)
and messages go to stderr; results (the summary line, the scores) to stdout.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Optional

import click

from cmsf.cli.model_listing import component_block, missing_message
from cmsf.cli.options import (
    check_bind_modes,
    check_sampling,
    data_errors,
    device_option,
    dtype_option,
    frames_per_batch_option,
    info,
    media_warnings_on_stderr,
    model_option,
    model_overrides_of,
    models_of,
    only_with,
    out_option,
    parse_pairs,
    pipeline_option,
    pipeline_settings,
    preset_option,
    progress,
    require_pipeline,
    set_option,
    sigterm_as_interrupt,
    sweep_grid,
    video_run_options,
)  # fmt: skip
from cmsf.names import PIPELINE_NAMES, SUBSETS, SWEEP_HELP

# Each command imports the library (torch, transformers) when it runs, not here: --help, --version
# and usage errors answer without it (tests/test_cli.py checks that they leave torch unimported).

# ------------------------------------------------------------------------------------ the group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cmsf", prog_name="cmsf")
def main() -> None:
    """Training-free audio-visual segmentation (Cross-Modality Semantic Filtering).

    Segments the objects that are sounding in a video, one mask per frame, by chaining
    off-the-shelf foundation models (OWOD-BIND, SAM-BIND, AT-GDINO-SAM, AT-SAM3, and the tracked
    OWOD-BIND / SAM-BIND), and scores the results on AVSBench S4 / MS3 / AVSS.

    \b
    Examples:
      cmsf segment clip.mp4 --pipeline owod-bind --out out/
      cmsf eval --root AVSBench --subset s4 --pipeline owod-bind --out runs/s4
    """
    # media warnings go to stderr, one line each: media_warnings_on_stderr(), once a command runs
    click.get_current_context().with_resource(sigterm_as_interrupt())  # `kill PID` stops a run as Ctrl-C does


# ------------------------------------------------------------------------------------ segment


@main.command(short_help="Segment the sounding objects of one video.")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@video_run_options
@click.option(
    "--audio",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The audio file of a frame folder (found automatically when the folder holds one .wav, "
    "or sits in AVSBench's layout).",
)
@set_option
@model_option
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
    prints a summary line. They replace an earlier output there as one set, once all are written
    (an interrupted run leaves the old set; stderr says what is replaced); other files in --out are
    left alone. The run folder of `cmsf eval` or `cmsf segment-many` is refused.

    \b
    Examples:
      cmsf segment examples/demo.mp4 --pipeline owod-bind --out out/
      cmsf segment examples/demo.mp4 -p owod-bind --preset tiny --out /tmp/smoke   # offline
      cmsf segment frames/ --audio sound.wav -p at-gdino-sam --out out/ --device cuda
    """
    pipeline = require_pipeline(pipeline)
    check_sampling(num_frames, fps)
    if input_path.is_dir() and (num_frames is not None or fps is not None):
        raise click.BadParameter("--num-frames / --fps apply to a video file; a frame folder's frames are all used.", param_hint="INPUT")
    if input_path.is_file() and audio is not None:
        raise click.BadParameter("--audio goes with a folder of frames; a video file brings its own audio track.", param_hint="--audio")
    if input_path.is_dir() and out_dir.resolve() == input_path.resolve():
        message = "is the input frame folder; its masks and overlays would be read as frames next time. Use another folder."
        raise click.BadParameter(message, param_hint="--out")
    from cmsf.io.media import find_audio_for_frames, load_clip
    from cmsf.pipelines.settings import resolve_settings
    from cmsf.runs.evaluate import run_pipeline
    from cmsf.runs.outputs import SegmentOutput, existing_outputs
    from cmsf.runs.records import run_record

    if input_path.is_dir() and audio is None and find_audio_for_frames(input_path) is None:
        message = (f"{input_path} is a folder of frames and no audio was found for it (no single .wav in it, "
                   f"{input_path.name}.wav next to it, or AVSBench's audio_wav layout); pass its audio file")  # fmt: skip
        raise click.BadParameter(message, param_hint="--audio")
    media_warnings_on_stderr()
    thresholds = pipeline_settings(pipeline, settings, preset)
    started = time.perf_counter()
    models = models_of(preset, device, dtype, model_overrides)  # lazy: nothing loads before the pipeline runs
    check_bind_modes(models, [thresholds])
    with data_errors(), SegmentOutput(out_dir) as output:  # --out created, checked, locked up front
        earlier = existing_outputs(out_dir)
        if earlier:
            info(f"{out_dir} holds an earlier output ({earlier}): this run's replaces it once written")
        clip = load_clip(input_path, audio=audio, num_frames=num_frames, fps=fps)
        height, width = clip.frames.shape[-2:]
        info(f"read {clip.num_frames} frames of {width}×{height} and {clip.duration:.2f} s of audio from {input_path}")
        info(f"running {pipeline} ({preset} models on {models.device}, {dtype})…")
        with data_errors(f"{input_path}: "):
            result = run_pipeline(pipeline, clip, models, thresholds)
        run = run_record("evidence", pipeline, models, resolve_settings(thresholds, models), input=str(input_path))
        evidence = output.write(clip, result, run, started=started, progress=progress)
    coverage = [frame["coverage"] for frame in evidence["frames"]]
    mean = 100 * sum(coverage) / len(coverage)
    nonempty = sum(1 for c in coverage if c > 0)
    click.echo(
        f"{clip.num_frames} frames ({nonempty} with a mask), {mean:.1f}% of pixels covered on average, "
        f"{evidence['elapsed_s']:.1f} s → {out_dir}"
    )


# ------------------------------------------------------------------------------------ eval


@main.command(name="eval", short_help="Evaluate on AVSBench S4 / MS3 / AVSS (mIoU, F-score).")
@click.option(
    "--root",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The AVSBench folder (holding Single-source/ and Multi-sources/; for avss the release "
    "holding metadata.csv and label2idx.json).",
)
@click.option("--subset", required=True, type=click.Choice((*SUBSETS, "avss"), case_sensitive=False),
              help="s4, ms3 or avss (AVSBench-semantic).")
@click.option("--split", default="test", show_default=True, help="The csv's split to evaluate (train, val, test).")
@pipeline_option
@click.option(
    "--pred-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Score existing predictions instead of running a pipeline: a pred_masks folder in "
    "AVSBench's layout (or the folder holding it), written by any method.",
)
@out_option
@preset_option
@device_option
@dtype_option
@set_option
@model_option
@click.option(
    "--resize-pred",
    is_flag=True,
    help="Resize predictions whose size differs from the ground truth's (nearest neighbour) "
    "instead of refusing them.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Only the first N videos of the split (smoke runs)."
)
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2,...", help="Score every combination of "
              "these values (repeatable) from one model pass per video, cached in OUT/cache. " + SWEEP_HELP)
@click.option("--label-threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="AVSS with a BIND pipeline: a kept mask whose best class score (picture × sound) is "
              "below this is dropped as background. [default: 0, every kept mask gets a class]")
@frames_per_batch_option
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
    sweeps: tuple[str, ...],
    label_threshold: Optional[float],
    frames_per_batch: Optional[int],
) -> None:
    """Evaluate on AVSBench S4, MS3 or AVSS with the benchmark's mIoU and F-score.

    With --pipeline: runs it on every video of the split (models loaded once), saves the
    predicted masks as AVSBench's test script does, then scores them:

    \b
      OUT/pred_masks/{category}/{video}/{video}_{k}.png   (S4)
      OUT/pred_masks/{video}/{video}_{k}.png              (MS3)

    with k = 0 … 4 (predictions are numbered from 0, AVSBench's frames and ground truth from 1),
    and each video's evidence as OUT/evidence/…/{video}.json. Resumable: a video whose 5 masks
    exist is not recomputed, only scored (every file is written atomically, so an interrupted
    run leaves no half-written file; OUT/run.json refuses a resume with other settings). OUT is
    locked while a run lasts: a second run into it is refused.

    With --pred-dir: scores masks made by anything, in that layout, without loading a model; any
    non-zero pixel is foreground; a prediction of another size than its ground truth is refused
    unless --resize-pred. Missing files are an error that lists them.

    Writes OUT/per_video.csv (video, category for S4, miou, fscore, fscore_per_frame,
    iou_pooled) and OUT/summary.json (miou, fscore: means over videos; "variants": other ways of
    averaging frames; videos, subset, split, pipeline, preset, …) and prints the figures.

    With --subset avss (AVSBench-semantic, ROOT = the release): predictions are colour masks
    OUT/pred_masks/{uid}/{uid}_{k}.png, k = 0 … 9, in the AVSS palette; the official mIoU and
    F-score are per-class means over all 71 classes, with v1 videos padded to 10 frames as the
    reference does; OUT/per_class.csv is added and summary.json's "variants" holds the means over
    the classes present, over annotated frames only, without background, and the binary view
    (foreground = any class). A pipeline's kept masks get their classes by the class decision
    (BIND: picture and sound against the class prompts; AT: the AudioSet vocabulary of each tag).

    With --sweep (and --pipeline): writes OUT/sweep.csv (one row per setting, the best marked)
    and the run of the best setting; a later sweep on OUT reuses the cache. Tune on val, report
    test: a sweep on the test split is an oracle figure, not a result. With --subset avss, a BIND
    pipeline's label_threshold (the class decision's) can be swept too: --sweep label_threshold=0,0.1.

    \b
    Examples:
      cmsf eval --root AVSBench --subset s4 --pipeline owod-bind --out runs/s4-owod
      cmsf eval --root AVSBench --subset ms3 --pred-dir other/pred_masks --out runs/other
      cmsf eval --root AVSS --subset avss --pred-dir other/pred_masks --resize-pred --out runs/avss
      cmsf eval --root AVSBench --subset s4 -p owod-bind --preset tiny --limit 2 --out /tmp/smoke
      cmsf eval --root AVSBench --subset s4 --split val -p owod-bind --sweep bind_threshold=0.5,0.6,0.7 --out runs/val
    """
    subset = subset.lower()
    if (pipeline is None) == (pred_dir is None):
        raise click.UsageError("give exactly one of --pipeline (run it) and --pred-dir (score existing masks)")
    if subset != "avss" or pred_dir is not None:
        only_with("--subset avss and --pipeline", {"--label-threshold": (label_threshold, None)})
    if pred_dir is not None:
        only_with("--pipeline (--pred-dir loads no model)", {
            "--preset": (preset, "paper"), "--device": (device, None), "--dtype": (dtype, "float32"),
            "--set": (settings, ()), "--model": (model_overrides, ()), "--sweep": (sweeps, ()),
            "--frames-per-batch": (frames_per_batch, None),
        })  # fmt: skip
    from cmsf.runs.evaluate import evaluate, scores_line
    from cmsf.runs.sweep import run_sweep, sweep_lines, sweep_rows

    media_warnings_on_stderr()
    labels = None  # AVSS: the class decision's label_threshold is swept beside the pipeline's keys
    if subset == "avss" and pipeline is not None:
        from cmsf.runs.avss_sweep import split_label_sweep

        try:
            pipeline_sweeps, labels = split_label_sweep(sweeps)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--sweep") from None
        sweeps = tuple(pipeline_sweeps)
    swept = parse_pairs(sweeps, "--sweep")  # the swept keys get no tiny default (a sweep gives them)
    thresholds = pipeline_settings(pipeline, settings, preset, swept) if pipeline is not None else None
    grid = sweep_grid(thresholds, sweeps, settings) if sweeps and thresholds is not None else {}
    models = None
    if pipeline is not None:  # lazy: nothing loads unless a video needs computing
        models = models_of(preset, device, dtype, model_overrides)
        assert thresholds is not None
        check_bind_modes(models, [thresholds])
        check_bind_modes(models, sweep_rows(thresholds, grid) if grid else [], "--sweep")
    run_args: dict[str, Any] = dict(  # what a sweep and a plain run share
        split=split, pipeline=pipeline, settings=thresholds, models=models, limit=limit, progress=progress, log=info,
        frames_per_batch=frames_per_batch,
    )  # fmt: skip
    split_option = {"split": "--split"}  # a split the csv does not have is a usage error
    if subset == "avss":
        if sweeps or labels is not None:
            from cmsf.runs.avss_sweep import run_avss_sweep

            with data_errors(options={**split_option, "label_threshold": "--sweep", "pipeline": "--pipeline"}):
                summary = run_avss_sweep(root, out_dir, grid=grid, labels=labels, label_threshold=label_threshold,
                                         **run_args)  # fmt: skip
            click.echo("\n".join(sweep_lines(summary)))
            return
        from cmsf.runs.avss_eval import avss_scores_line, evaluate_avss

        with data_errors(options=split_option):
            summary = evaluate_avss(root, out_dir, pred_dir=pred_dir, resize_pred=resize_pred,
                                    label_threshold=label_threshold or 0.0, **run_args)  # fmt: skip
        click.echo(avss_scores_line(summary))
        return
    if sweeps:
        with data_errors(options=split_option):
            summary = run_sweep(root, subset, out_dir, grid=grid, **run_args)
        click.echo("\n".join(sweep_lines(summary)))
        return
    with data_errors(options=split_option):
        summary = evaluate(root, subset, out_dir, pred_dir=pred_dir, resize_pred=resize_pred, **run_args)
    click.echo(scores_line(summary))


@main.command(short_help="Write RUN_DIR/report.html: figures, videos, sweep.")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The AVSBench folder, for the frame strips. [default: the run's]")
def report(run_dir: Path, root: Optional[Path]) -> None:
    """Write RUN_DIR/report.html for a `cmsf eval` run: its settings and figures, a sortable
    table of videos, the best and worst videos as frame / ground truth / prediction strips, a
    histogram of per-video IoU and the sweep's curves or heat map. One self-contained file.

    \b
    Example:
      cmsf report runs/s4-owod
    """
    from cmsf.runs.report_avss import write_report

    media_warnings_on_stderr()
    with data_errors():
        path = write_report(run_dir, root=root, log=info)
    click.echo(f"{path}")


# ------------------------------------------------------------------------------------ segment-many


@main.command(name="segment-many", short_help="Segment many videos into one folder (resumable; local or Ray).")
@click.argument("inputs", metavar="[INPUT]...", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--manifest",
    "manifests",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A list of inputs: one path per line, or a .csv with a 'path' column (and 'audio' for "
    "frame folders); paths relative to its folder. Repeatable: every manifest's inputs are used, after the INPUTs.",
)
@video_run_options
@set_option
@model_option
@frames_per_batch_option
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="torch CPU threads per worker (CPU results depend on it in the last bits). [default: local: torch's, ray: 1]",
)
@click.option(
    "--engine",
    type=click.Choice(("local", "ray")),
    default="local",
    show_default=True,
    help='local: this machine; ray: Ray Data (pip install "cmsf[ray]").',
)
@click.option("--ray-address", help="Ray: join this cluster, e.g. 10.0.0.1:6379. [default: a local Ray instance]")
@click.option("--workers", type=click.IntRange(min=1), help="Ray: model actors. [default: as the cluster allows]")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), help="Ray: GPUs per actor. [default: 1 with GPUs]")
def segment_many_command(
    inputs: tuple[Path, ...], manifests: tuple[Path, ...], pipeline: Optional[str], out_dir: Path, preset: str,
    device: Optional[str], dtype: str, num_frames: Optional[int], fps: Optional[float], settings: tuple[str, ...],
    model_overrides: tuple[str, ...], frames_per_batch: Optional[int], threads: Optional[int], engine: str,
    ray_address: Optional[str], workers: Optional[int], gpus_per_worker: Optional[float],
) -> None:  # fmt: skip
    """Segment many videos: each INPUT (a video file, or a folder of frames with its audio found
    as `cmsf segment` finds it) and each path of every --manifest gets OUT/<name>/ holding what `cmsf
    segment` writes; <name> is the input's stem and a hash of its absolute path (see README).

    Resumable: an input whose OUT/<name>/evidence.json exists is skipped, so rerun the command
    after an interruption. An input that cannot be read or segmented is listed in
    OUT/failures.csv (path, name, error) while the rest go on, and the exit status is then 1.

    \b
    Examples:
      cmsf segment-many clips/*.mp4 -p owod-bind --out out/
      cmsf segment-many --manifest clips.csv -p owod-bind --out out/ --engine ray
      cmsf segment-many --manifest clips.txt -p owod-bind --out out/ --engine ray --ray-address 10.0.0.1:6379
    """
    pipeline = require_pipeline(pipeline)
    if not inputs and not manifests:
        raise click.UsageError("no input: give INPUT arguments, --manifest, or both.")
    check_sampling(num_frames, fps)
    if engine == "local":
        only_with("--engine ray", {
            "--ray-address": (ray_address, None), "--workers": (workers, None), "--gpus-per-worker": (gpus_per_worker, None),
        })  # fmt: skip
    from cmsf.runs.distributed import require_ray, run_ray
    from cmsf.runs.many import Engine, RunSpec, plan_jobs, run_local, segment_many, summary_line

    media_warnings_on_stderr()
    spec = RunSpec(out_dir, pipeline, pipeline_settings(pipeline, settings, preset), preset, device, dtype,
                   model_overrides_of(model_overrides), num_frames, fps, frames_per_batch, threads)  # fmt: skip
    # lazy models (on the CPU for Ray, whose workers hold the real ones): the --set check loads nothing
    models = models_of(preset, "cpu" if engine == "ray" else device, dtype, model_overrides)
    check_bind_modes(models, [spec.settings])
    with data_errors():
        jobs = plan_jobs(inputs, manifests)
    if engine == "ray":
        try:
            require_ray()
        except ImportError as error:
            raise click.UsageError(str(error)) from None
        run: Engine = functools.partial(run_ray, address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker)
    else:
        run = functools.partial(run_local, models=models)
    with data_errors():
        summary = segment_many(spec, jobs, run, progress=progress, log=info)
    click.echo(summary_line(summary, out_dir))
    if summary["failed"]:
        raise click.ClickException(f"{summary['failed']} of {len(jobs)} inputs failed; see {summary['failures']}")



# ------------------------------------------------------------------------------------ models


@main.command(name="models", short_help="List (and with --check, load and try) the models a run would use.")
@click.option("--pipeline", "-p", "pipelines", multiple=True, type=click.Choice(PIPELINE_NAMES),
              help="Only the components of this pipeline (repeatable). [default: all six]")  # fmt: skip
@preset_option
@model_option
@device_option
@dtype_option
@click.option("--check", is_flag=True, help="Load each component and run one forward on a synthetic input.")
def models_command(
    pipelines: tuple[str, ...], preset: str, model_overrides: tuple[str, ...], device: Optional[str], dtype: str,
    check: bool,
) -> None:  # fmt: skip
    """For a preset and --model overrides, list each component the pipeline(s) would load: its
    source, family and class, dtype, parameter count, and where its weights are (built in code, a
    local path, the Hugging Face cache) or that they must be downloaded. Nothing is loaded or
    downloaded unless --check: then each is loaded on --device and runs one forward on a synthetic
    frame / second of audio, with its time and peak GPU memory (CUDA only).

    Exit status 0 only when every component can load (with --check: loaded and ran); otherwise 1,
    naming what is missing and how to get it.

    \b
    Examples:
      cmsf models --preset 2025
      cmsf models --preset paper --pipeline owod-bind --check --device cuda
    """
    from huggingface_hub import constants as hub_constants

    from cmsf.models.inventory import PIPELINE_COMPONENTS, describe_models
    from cmsf.runs.model_check import check_component

    models = models_of(preset, device, dtype, model_overrides)
    offline = hub_constants.HF_HUB_OFFLINE
    with data_errors():
        rows = describe_models(models, pipelines or tuple(PIPELINE_COMPONENTS))
    failed = []
    for row in rows:
        result = check_component(models, row.component) if check else None
        if result is not None and not result.ok:
            failed.append(f"{row.component}: {result.error}")
        click.echo("\n".join(component_block(row, offline, result)))
    info(f"{preset} models on {models.device}, {dtype}: {len(rows)} components")
    if check and failed:
        raise click.ClickException(f"{len(failed)} of {len(rows)} components failed: " + "; ".join(failed))
    if not check and missing_message(rows):
        raise click.ClickException(missing_message(rows))
