"""What the ``cmsf`` commands share: the options more than one command takes, the parsing of
their ``KEY=VALUE`` values (``--set``, ``--sweep``, ``--model``) into the library's checked
arguments, the checks of option combinations common to several commands, the mapping of errors
to exit codes, and progress and messages on stderr.

:mod:`cmsf.cli.commands` holds the click group and the commands, and only those; everything here is
used by more than one of them. Exit status: 2 for a usage error (``click.UsageError`` /
``click.BadParameter``), 1 for a data error (``click.ClickException``); see :mod:`cmsf.cli.commands`.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Iterable, Iterator, Mapping, Optional, Sequence

import click
from tqdm import tqdm

from cmsf.io.files import FolderInUseError, UnwritableFolderError
from cmsf.names import DTYPE_NAMES, PIPELINE_NAMES, PRESETS

if TYPE_CHECKING:
    from cmsf.models.loading import Models
    from cmsf.pipelines.settings import PipelineSettings

# The library (torch, transformers) is imported inside the functions that use it, so that the
# options can be built and --help, --version and usage errors answered without it.

# ------------------------------------------------------------------------------------ errors and stderr


_OPTIONS = {"num_frames": "--num-frames", "fps": "--fps"}  # a ValueError "num_frames: …" is about --num-frames


@contextlib.contextmanager
def data_errors(context: str = "", options: Mapping[str, str] = {}) -> Iterator[None]:  # noqa: B006 (read only)
    """Turn the errors bad data raises (ValueError, OSError, ModelLoadError, a folder in use) into a click
    error: exit 1, one line, no traceback; those about --num-frames, --fps, --out, and a ValueError
    ``"name: …"`` about an argument ``options`` maps to the command's option (``{"split":
    "--split"}``): a usage error (2) naming the option."""
    from cmsf.models.loading import BadCheckpointError, ModelLoadError

    try:
        yield
    except click.ClickException:
        raise
    except UnwritableFolderError as error:
        raise click.BadParameter(str(error), param_hint="--out") from None
    except (ValueError, OSError, ModelLoadError, FolderInUseError) as error:
        message = str(error) or type(error).__name__
        argument, colon, detail = message.partition(":")
        named = {**_OPTIONS, **options}
        if isinstance(error, ValueError) and colon and argument in named:
            raise click.BadParameter(detail.strip(), param_hint=named[argument]) from None
        if isinstance(error, ModelLoadError) and not isinstance(error, BadCheckpointError):
            message += " On the command line, a local copy is passed as --model COMPONENT=PATH."
        raise click.ClickException(f"{context}{message}") from None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM (``kill PID``, a scheduler stopping the job) is handled as
    Ctrl-C: a ``KeyboardInterrupt`` in the main thread, so the run stops the same way (click
    prints ``Aborted!``, exit 1; a folder's lock is released, renames that belong together are
    finished first, :func:`cmsf.io.files.deferred_interrupts`). Outside the main thread, or
    without SIGTERM, it does nothing."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def interrupt(number: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


LOG_EVERY = 25
"""Without a terminal, long loops log one progress line per this many items instead of a bar."""


def progress(items: Collection[Any], desc: str, unit: str) -> Iterator[Any]:
    """Iterate ``items`` with progress and rate on stderr: a tqdm bar on a terminal; otherwise (a
    log file, a batch job) a line every :data:`LOG_EVERY` items and at the end, when there are
    more than :data:`LOG_EVERY` of them."""
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
        return
    total = len(items)
    started = time.perf_counter()
    for index, item in enumerate(items, start=1):
        yield item
        if total > LOG_EVERY and (index % LOG_EVERY == 0 or index == total):
            elapsed = time.perf_counter() - started
            left = elapsed / index * (total - index)
            rate = f"{index / max(elapsed, 1e-9):.3g} {unit}s/s"
            info(f"{desc}: {index}/{total} {unit}s, {rate}, {elapsed:.0f} s elapsed, about {left:.0f} s left")


def info(message: str) -> None:
    """One line on stderr (stdout holds only results)."""
    click.echo(message, err=True)


def media_warnings_on_stderr() -> None:
    """For the rest of the running command, each media warning (a short track, a variable frame
    rate, …; :func:`cmsf.io.decoding.media_warnings_to`) is one line on stderr. Called by each
    command once its options are checked, so that ``--help`` and usage errors import no torch."""
    from cmsf.io.decoding import media_warnings_to

    click.get_current_context().with_resource(media_warnings_to(info))


# ------------------------------------------------------------------------------------ option values


def parse_pairs(values: Sequence[str], option: str) -> dict[str, str]:
    """``KEY=VALUE`` values of a repeatable ``option`` as a dict (spaces around either side
    stripped; a later key wins); anything else is a usage error naming the option."""
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        pairs[key.strip()] = rest.strip()
    return pairs


TINY_SETTINGS: dict[str, dict[str, Any]] = {
    "owod-bind": {"box_threshold": 0.7135, "bind_threshold": 0.1351},
    "sam-bind": {"points_per_side": 8, "pred_iou_threshold": 0.0, "stability_score_threshold": 0.0},
    "at-gdino-sam": {"tag_threshold": 0.5734, "box_threshold": 0.99998},
    "at-sam3": {"tag_threshold": 0.5734, "instance_threshold": 0.2513},
    "owod-bind-tracked": {"box_threshold": 0.7135, "bind_threshold": 0.1351, "track_threshold": 0.1435},
    "sam-bind-tracked": {"points_per_side": 8, "pred_iou_threshold": 0.0, "stability_score_threshold": 0.0, "track_threshold": 0.3},
}
"""The command's defaults for ``--preset tiny`` (under any ``--set``): the tiny models have random
weights, so the paper's thresholds select nothing (OWOD-BIND, SAM-BIND, AT-SAM3) or everything
(AT-GDINO-SAM). Chosen as the benchmarks choose theirs (``bench/workload.py``): from the tiny
models' own scores on ``examples/demo.mp4``, in the widest gap near about 8 proposals and 2 kept
per frame (OWOD-BIND), 3 tags per second and 3 boxes per frame (AT-GDINO-SAM), 2 instances per
frame (AT-SAM3); SAM-BIND's automatic masks get an 8 × 8 grid with the quality filters off. The
tracked pipelines seed as their per-frame counterparts do; a track sounds at a smoothed score of
0.1435 (OWOD-BIND: its 7 tracks' softmax scores on the demo lie in 0.138–0.151) or 0.3 (SAM-BIND's
3 tracks). The library's defaults stay the paper's."""

TINY_NOTE = "note: the tiny models have random weights; their masks show that the pipeline runs, not what is sounding"


def pipeline_settings(
    pipeline: str, values: Sequence[str], preset: str = "paper", swept: Collection[str] = ()
) -> PipelineSettings:
    """The pipeline's settings with ``--set KEY=VALUE`` options
    (:meth:`cmsf.pipelines.settings.PipelineSettings.parse`: typed after the fields, checked) over
    the command's defaults for ``preset`` (:data:`TINY_SETTINGS` for ``tiny``, saying on stderr
    that its models are random, except the ``swept`` keys, which a sweep gives; none otherwise):
    the settings a command runs with, built here only. Anything wrong is a usage error naming
    ``--set``."""
    from cmsf.pipelines.settings import settings_type

    given = parse_pairs(values, "--set")
    if preset == "tiny":
        info(TINY_NOTE)
        tiny = {key: str(value) for key, value in TINY_SETTINGS.get(pipeline, {}).items() if key not in swept}
        given = {**tiny, **given}
    try:
        return settings_type(pipeline).parse(given)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--set") from None


def sweep_grid(fixed: PipelineSettings, values: Sequence[str], set_values: Sequence[str] = ()) -> dict[str, list[Any]]:
    """Parse ``--sweep KEY=V1,V2`` options (:func:`cmsf.runs.sweep.parse_sweep`) and check every setting
    of the grid, ``fixed`` (from the ``--set`` options ``set_values``) with the swept keys replaced,
    up front (:func:`cmsf.runs.sweep.sweep_rows`); a key both set and swept, a key swept twice, or
    anything else wrong, is a usage error naming ``--sweep``."""
    from cmsf.runs.sweep import parse_sweep, sweep_rows

    keys = [value.partition("=")[0].strip() for value in values]
    repeated = next((key for key in keys if keys.count(key) > 1), None)
    if repeated is not None:  # a later one would silently replace the earlier values
        message = f"{repeated} is given more than once; list all its values in one --sweep {repeated}=V1,V2,..."
        raise click.BadParameter(message, param_hint="--sweep")
    try:
        grid = parse_sweep(fixed.pipeline, parse_pairs(values, "--sweep"))
        given = parse_pairs(set_values, "--set")
        for key in grid:
            if key in given:
                raise ValueError(f"{key}: given both as a fixed setting and swept; give it once")
        sweep_rows(fixed, grid)
        return grid
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--sweep") from None


def model_overrides_of(values: Sequence[str]) -> dict[str, str]:
    """Parse ``--model COMPONENT=SOURCE`` options (:func:`cmsf.models.loading.check_sources`); an unknown
    component, or a local path that does not exist, is a usage error."""
    from cmsf.models.loading import check_sources

    try:
        return check_sources(parse_pairs(values, "--model"))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--model") from None


def models_of(preset: str, device: Optional[str], dtype: str, model_overrides: Sequence[str]) -> Models:
    """The models of ``--preset``, ``--device``, ``--dtype`` and ``--model`` options, loaded once for
    the whole command (each component loads on first use); a bad one is a usage error."""
    from cmsf.models.loading import load_models

    overrides = model_overrides_of(model_overrides)
    try:
        return load_models(preset, device=device, dtype=dtype, **overrides)
    except ValueError as error:
        message = str(error) or type(error).__name__
        if message.startswith("device:"):  # load_models names its argument; the option is --device
            detail = message.removeprefix("device:").strip()
            raise click.BadParameter(detail, param_hint="--device") from None
        raise click.UsageError(message) from None


def check_bind_modes(models: Models, rows: Iterable[PipelineSettings], option: str = "--set") -> None:
    """The bind mode of each settings of ``rows`` (None: the binder's own) checked against ``models``'
    binder without loading it (:func:`cmsf.pipelines.settings.resolve_settings`); one it cannot give is a
    usage error naming ``option``."""
    from cmsf.pipelines.settings import resolve_settings

    for row in rows:
        try:
            resolve_settings(row, models)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint=option) from None


# ------------------------------------------------------------------------------------ option combinations


def require_pipeline(pipeline: Optional[str]) -> str:
    """``--pipeline``, which the commands that segment video files need (a usage error without it)."""
    if pipeline is None:
        raise click.UsageError("Missing option '--pipeline' / '-p' (one of " + ", ".join(PIPELINE_NAMES) + ").")
    return pipeline


def check_sampling(num_frames: Optional[int], fps: Optional[float]) -> None:
    """At most one of ``--num-frames`` and ``--fps`` (a usage error otherwise)."""
    if num_frames is not None and fps is not None:
        raise click.UsageError("--num-frames and --fps: give at most one of them.")


def only_with(requirement: str, options: Mapping[str, tuple[Any, Any]]) -> None:
    """A usage error naming every option of ``options`` (``name: (value, default)``) whose value
    is not its default: they are used only with ``requirement``, which the command lacks."""
    given = [name for name, (value, default) in options.items() if value != default]
    if given:
        raise click.UsageError(f"{', '.join(given)}: only with {requirement}")


# ------------------------------------------------------------------------------------ shared options


pipeline_option = click.option(
    "--pipeline",
    "-p",
    type=click.Choice(PIPELINE_NAMES),
    help="Which CMSF pipeline: owod-bind (the paper's best), sam-bind, at-gdino-sam, at-sam3 (audio tags as SAM 3 "
    "concepts), or owod-bind-tracked / sam-bind-tracked (candidates tracked through the video with SAM 2).",
)
preset_option = click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="paper",
    show_default=True,
    help="Model weights: paper (the paper's checkpoints, downloaded once and cached), 2025 (SAM 2.1, "
    "MM-GroundingDINO, PE-AV), tiny (tiny random models, offline, for smoke tests), or paper-random / "
    "2025-random (full-size random, for timing).",
)
device_option = click.option(
    "--device", default=None, help="Torch device, e.g. cpu, cuda, cuda:1. [default: cuda if available, else cpu]"
)
dtype_option = click.option(
    "--dtype", type=click.Choice(DTYPE_NAMES), default="float32", show_default=True, help="Model precision."
)
set_option = click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A pipeline threshold, e.g. --set bind_threshold=0.6 (repeatable; defaults are the paper's).",
)
model_option = click.option(
    "--model",
    "model_overrides",
    multiple=True,
    metavar="COMPONENT=SOURCE",
    help="Use another checkpoint for a component (ast, grounding_dino, sam, owlv2, sam3, binder, tracker: a hub id or "
    "a local save_pretrained folder, its family read from its config; binder=imagebind for ImageBind; "
    "imagebind: a .pth path), e.g. --model sam=facebook/sam2.1-hiera-large; --model mavl=PATH (the authors' "
    "MDef_DETR_minus_language_r101_epoch10.pth, or 'random') makes OWOD-BIND propose with MAVL instead of OWLv2.",
)
out_option = click.option(
    "--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder."
)
frames_per_batch_option = click.option(
    "--frames-per-batch",
    type=click.IntRange(min=1),
    help="The most frames per model batch, across videos (1: each video alone, bit-identical to segmenting it "
    "alone). [default: 5 on CPU, 64 on CUDA]",
)
num_frames_option = click.option(
    "--num-frames", type=click.IntRange(min=1), default=None, help="Video files: N frames, one per N equal spans."
)
fps_option = click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Video files: F frames per second of audio. [default: 1, as AVSBench]",
)


def video_run_options(command: Any) -> Any:
    """--pipeline, --out, --preset, --device, --dtype, --num-frames, --fps: the options of the
    commands that segment video files (segment, segment-many)."""
    options = (pipeline_option, out_option, preset_option, device_option, dtype_option)
    for option in reversed((*options, num_frames_option, fps_option)):
        command = option(command)
    return command
