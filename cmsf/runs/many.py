"""``cmsf segment-many``: one pipeline over many videos into one folder, resumable, a failing input
recorded while the rest go on; the inputs (arguments, manifests), the output names, the
completeness rule, ``failures.csv``, and the local engine. The Ray Data engine is
:mod:`cmsf.runs.distributed`; both segment through :func:`segment_jobs` (the dataset runner,
:mod:`cmsf.runs.runner`, plus the writing of each video's files).

An output folder ``DIR`` holds::

    run.json        the run's kind ("segment-many"), pipeline, settings, every component's
                    source and frame sampling (a resume with other ones is refused, as `cmsf
                    eval` does; so is a folder of another kind of run, `cmsf eval`'s)
    <name>/         what `cmsf segment` writes for one input: mask_0000.png …, overlay_0000.png …,
                    evidence.json
    failures.csv    path, name, error of each input that failed in the latest run (absent when
                    none did); a row is added as each failure happens

**Names.** Input ``…/clip.mp4`` (or frame folder ``…/clip``) goes to ``DIR/clip-<16 hex>``: its
stem (characters other than letters, digits, ``.``, ``_``, ``-`` replaced by ``_``, at most 60)
and the first 16 hex digits of the SHA-1 of its resolved absolute path (plus, for a frame folder
given with an explicit audio file, that file's resolved path). A name depends on that input only,
so it stays the same when the list of inputs grows or is reordered, and two inputs that share a
file name get different folders. An input listed twice (the same resolved path) runs once.

**Complete.** A video is done when ``DIR/<name>/evidence.json`` exists: it is written after
(and, with a replaced output, moved in after) all the masks and overlays it lists, each file
atomically, so it exists only beside a complete set. A resumed run skips done videos and
retries everything else, failures included; delete a video's ``evidence.json`` to have it
recomputed.

**One writer.** :func:`segment_many` holds ``DIR``'s lock (:func:`cmsf.io.files.claim_folder`)
while it runs; each video's folder is written by one worker of that run, staged and swapped in
as one set (:func:`cmsf.runs.outputs.replace_segmentation`) without a lock of its own. Start-up looks
at ``DIR``'s own entries and each job's ``evidence.json`` only, never inside a finished video's
folder (a corpus of millions of videos starts in the time those checks take); what a killed
writer left in a video's folder is removed when that video is written.

**Same outputs.** A video's masks do not depend on the engine, on the other videos in its batch or
on an interruption, with one caveat of floating point: on the same device, with the same torch
thread count (``RunSpec.threads``), the models' last bits can still depend on the batch a video
was computed in (:mod:`cmsf.runs.runner`), and so, very rarely, can a pixel near a threshold;
``frames_per_batch=1`` computes each video alone, bit-identical whatever the engine or resume.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, Any, Callable, Generic, Iterable, Iterator, Mapping, Optional, Sequence, TypeVar, Union

import torch

from cmsf.io.files import RUN_NAME, atomic_write_text, claim_folder, named_error, record_run
from cmsf.io.media import Clip, load_clip
from cmsf.io.paths import check_file
from cmsf.models.loading import Models, load_models
from cmsf.pipelines.settings import PipelineSettings, settings_for
from cmsf.runs.outputs import EVIDENCE_NAME, remove_leftovers, replace_segmentation
from cmsf.runs.progress import Log, Progress, no_log, no_progress
from cmsf.runs.runner import Job, run_jobs

T = TypeVar("T")

FAILURES_NAME = "failures.csv"
RUN_KIND = "segment-many"
"""``run.json``'s ``kind`` in a segment-many folder (``cmsf eval``'s is ``"eval"``; each refuses the other's
folder, :func:`cmsf.io.files.record_run`)."""
HASH_DIGITS = 16
"""Hex digits of the path hash in an output name (64 bits: among 2 M inputs that share a stem,
the chance of two equal names is about 1e-7, and a clash is refused, not overwritten)."""
STEM_CHARACTERS = 60


@dataclass(frozen=True)
class VideoJob:
    """One input of segment-many.

    Attributes:
        path: a video file or a folder of frames, absolute.
        audio: a frame folder's audio file (absolute), or None to find it as ``cmsf segment``
            does (:func:`cmsf.io.media.find_audio_for_frames`).
        name: the output folder's name under ``DIR`` (:func:`output_name`).
    """

    path: Path
    audio: Optional[Path]
    name: str


@dataclass(frozen=True)
class Outcome:
    """What became of one job: ``error`` is None when its outputs were written (``frames`` of
    them), else the reason it failed."""

    job: VideoJob
    error: Optional[str] = None
    frames: int = 0


@dataclass(frozen=True)
class RunSpec:
    """Everything an engine needs to segment a job, the same on every worker (picklable).

    Attributes:
        out_dir: ``DIR``.
        pipeline: a name of :data:`cmsf.pipelines.per_frame.PIPELINES`; settings: its settings
            (:data:`cmsf.pipelines.settings.SETTINGS`; picklable, as the Ray workers need).
        preset, device, dtype, models: the arguments of :func:`cmsf.models.loading.load_models`
            (``models``: the component overrides); device None is CUDA when the worker has it.
        num_frames, fps: frame sampling of video files (:func:`cmsf.io.media.load_clip`); frame
            folders use all their frames.
        frames_per_batch: the most frames per model batch (:func:`cmsf.runs.runner.run_jobs`; None:
            its default for the device, :func:`cmsf.runs.runner.default_frames_per_batch`).
        threads: torch's CPU threads in each worker (the local engine's process, each Ray
            actor), None for torch's default (local) or the CPUs an actor reserves (Ray, 1).
            Results computed on the CPU depend on it in their last bits (reductions are split
            across threads), and so, rarely, can a mask pixel: two runs give the same bytes on
            the same device with the same thread count, whichever engine ran them.
    """

    out_dir: Path
    pipeline: str
    settings: PipelineSettings
    preset: str = "paper"
    device: Optional[str] = None
    dtype: str = "float32"
    models: Mapping[str, str] = field(default_factory=dict)
    num_frames: Optional[int] = None
    fps: Optional[float] = None
    frames_per_batch: Optional[int] = None
    threads: Optional[int] = None

    def record(self) -> dict[str, Any]:
        """What ``run.json`` records (and a resume must match): the pipeline, settings, frame
        sampling, and the models' preset, dtype and every component's source (the preset's, or
        its override, local paths absolute: :meth:`cmsf.models.loading.Models.record`); not the device,
        engine, batch size or threads, which change at most the last bits of a computation."""
        models = load_models(self.preset, device="cpu", dtype=self.dtype, **self.models)  # lazy
        return {
            "pipeline": self.pipeline,
            **models.record(),
            "settings": asdict(self.settings),
            "num_frames": self.num_frames,
            "fps": self.fps,
        }


Engine = Callable[[RunSpec, Sequence[VideoJob]], Iterator[Outcome]]
"""An engine segments jobs and yields each one's :class:`Outcome` as it finishes (any order)."""


# ---------------------------------------------------------------- inputs and names


def output_name(path: Path, audio: Optional[Path] = None) -> str:
    """The output folder name of an input: ``<stem>-<16 hex>`` (see the module docstring). A path
    the system cannot resolve (a symlink loop, a name too long, a NUL byte) is named from its
    absolute path as given; such an input fails when it is read, named in ``failures.csv``."""
    resolved, is_folder = _resolved(Path(path))
    key = str(resolved) if audio is None else f"{resolved}\n{_resolved(Path(audio))[0]}"
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_DIGITS]
    stem = resolved.name if is_folder else resolved.stem
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip("._-").rstrip("._")[:STEM_CHARACTERS] or "video"
    return f"{safe}-{digest}"


def _resolved(path: Path) -> tuple[Path, bool]:
    """``path`` resolved, and whether it is a folder; a path that cannot be resolved or looked up
    (``OSError``: a loop, a name too long; ``RuntimeError``: a loop, Python 3.11; ``ValueError``: a
    NUL byte) is taken absolute as given, not a folder."""
    try:
        resolved = path.resolve()
        return resolved, resolved.is_dir()
    except (OSError, RuntimeError, ValueError):
        return path.absolute(), False


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def read_manifest(path: Path) -> list[tuple[Path, Optional[Path]]]:
    """The inputs a manifest lists, as ``(path, audio or None)``.

    A ``.csv`` file (any case) is a CSV with a header holding a ``path`` column and optionally an
    ``audio`` column (the audio file of a frame folder; an empty cell finds it automatically).
    Any other file lists one path per line; blank lines and lines starting with ``#`` are
    skipped. Relative paths are relative to the manifest's folder.

    Raises:
        FileNotFoundError: no such manifest.
        ValueError: not UTF-8, a CSV without a ``path`` column, a CSV row with an empty path, or
            no input at all (blank lines, comments or a header only); the message names the
            manifest (and the line).
    """
    path = check_file(Path(path), "manifest file")  # a FIFO is refused, not waited on
    base = path.resolve().parent
    text = _text(path)
    entries: list[tuple[Path, Optional[Path]]] = []
    if path.suffix.lower() != ".csv":
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append((base / line, None))
        return _some(path, entries)
    try:
        reader = csv.DictReader(io.StringIO(text))
        columns = [name.strip() for name in reader.fieldnames or []]
        if "path" not in columns:
            raise ValueError(f"{path}: expected a CSV with a 'path' column (and optionally 'audio'), got {columns}")
        reader.fieldnames = columns
        for row in reader:
            if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                continue  # a blank line
            video = (row.get("path") or "").strip()
            if not video:
                raise ValueError(f"{path}: line {reader.line_num}: empty 'path'")
            audio = (row.get("audio") or "").strip()
            entries.append((base / video, base / audio if audio else None))
    except csv.Error as error:
        raise ValueError(f"{path}: not a readable CSV ({error})") from None
    return _some(path, entries)


def _some(path: Path, entries: list[tuple[Path, Optional[Path]]]) -> list[tuple[Path, Optional[Path]]]:
    """``entries``, refused when there is none: a manifest listing nothing is more likely the
    wrong file than a corpus of no videos."""
    if not entries:
        raise ValueError(f"{path}: lists no input (expected one path per line, or a CSV row per input)")
    return entries


def plan_jobs(inputs: Sequence[Path], manifests: Union[Path, Sequence[Path], None] = None) -> list[VideoJob]:
    """The jobs of the command-line ``inputs`` (relative to the working folder) followed by
    those of each of ``manifests`` (one path or several; :func:`read_manifest`), in order, each
    input once.

    An input that does not exist is kept: it fails when it is read (``failures.csv``), like any
    unreadable input, so one bad line does not stop a corpus run.

    Raises:
        ValueError: two different inputs with the same output name (a hash collision, see
            :data:`HASH_DIGITS`), or a bad manifest (:func:`read_manifest`).
    """
    entries: list[tuple[Path, Optional[Path]]] = [(Path(p), None) for p in inputs]
    if isinstance(manifests, (str, os.PathLike)):
        manifests = [Path(manifests)]
    for manifest in manifests or ():
        entries += read_manifest(Path(manifest))
    jobs: dict[str, VideoJob] = {}
    for video, audio in entries:
        job = VideoJob(
            path=_resolved(video)[0],  # one bad path fails alone, when it is read (failures.csv)
            audio=_resolved(audio)[0] if audio is not None else None,
            name=output_name(video, audio),
        )
        known = jobs.get(job.name)
        if known is not None and (known.path, known.audio) != (job.path, job.audio):
            raise ValueError(f"{job.path}: its output name {job.name} is also that of {known.path}; rename one")
        jobs.setdefault(job.name, job)
    return list(jobs.values())


def is_complete(out_dir: Path, job: VideoJob) -> bool:
    """Whether ``job``'s outputs are complete: ``out_dir/<name>/evidence.json`` exists."""
    return (out_dir / job.name / EVIDENCE_NAME).is_file()


def load_job(spec: RunSpec, job: VideoJob) -> Clip:
    """Read one job's input (:func:`cmsf.io.media.load_clip`); the spec's ``num_frames`` / ``fps``
    apply to video files only."""
    try:
        video_file = not job.path.is_dir()
    except OSError:  # a name too long: load_clip names the path and the reason
        video_file = True
    return load_clip(
        job.path,
        audio=job.audio,
        num_frames=spec.num_frames if video_file else None,
        fps=spec.fps if video_file else None,
    )


def describe(error: BaseException) -> str:
    """One line for ``failures.csv``: the message of a data error (it names the file), the type
    and message of anything else."""
    message = str(error).strip() or type(error).__name__
    if not isinstance(error, (ValueError, OSError)):
        message = f"{type(error).__name__}: {message}"
    return " ".join(message.split())


# ---------------------------------------------------------------- segmenting (both engines)


def segment_jobs(
    spec: RunSpec,
    jobs: Sequence[tuple[VideoJob, Callable[[], Clip]]],
    models: Models,
    *,
    workers: Optional[int] = None,
) -> Iterator[Outcome]:
    """Segment ``jobs`` (each with the function that reads its clip) with the dataset runner
    (:func:`cmsf.runs.runner.run_jobs`: clips read on ``workers`` threads while the models work,
    model batches of at most ``spec.frames_per_batch`` frames, a failing batch retried video by
    video) and write each video's outputs to ``spec.out_dir/<name>/`` as soon as its batch is
    done (:func:`cmsf.runs.outputs.replace_segmentation`: staged, then swapped in as one set, with
    ``evidence.json`` last). The folders are not claimed one by one: the caller holds the lock of
    ``spec.out_dir`` (:func:`segment_many`), which keeps any other run out of them.

    Yields each job's :class:`Outcome`, in job order. Any exception reading, segmenting or
    writing a video is that video's failure: the rest go on.

    Raises:
        ModelLoadError: a model cannot be loaded (every video would fail alike).
    """
    run = {
        "pipeline": spec.pipeline,
        "preset": spec.preset,
        "device": str(models.device),
        "dtype": spec.dtype,
        "settings": asdict(spec.settings),
    }
    named = {job.name: job for job, _ in jobs}
    runner_jobs = [Job(job.name, load) for job, load in jobs]
    started = time.perf_counter()
    outcomes = run_jobs(
        spec.pipeline, runner_jobs, models, spec.settings, frames_per_batch=spec.frames_per_batch, workers=workers
    )
    with closing(outcomes):
        for outcome in outcomes:
            job = named[outcome.key]
            if outcome.error is not None:
                done = Outcome(job, describe(outcome.error))
            else:
                assert outcome.clip is not None and outcome.result is not None
                try:  # elapsed_s in the evidence: since the previous video was written
                    replace_segmentation(
                        spec.out_dir / job.name, outcome.clip, outcome.result, {**run, "input": str(job.path)},
                        started=started,
                    )  # fmt: skip
                    done = Outcome(job, None, outcome.clip.num_frames)
                except Exception as error:  # noqa: BLE001 - one video's failure, recorded
                    done = Outcome(job, describe(error))
            started = time.perf_counter()
            yield done


def run_local(
    spec: RunSpec, jobs: Sequence[VideoJob], models: Models, *, workers: Optional[int] = None
) -> Iterator[Outcome]:
    """The local engine: :func:`segment_jobs` on this machine, each job read with
    :func:`load_job`; torch's thread count is ``spec.threads`` while the run lasts."""
    threads = torch.get_num_threads()
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    try:
        yield from segment_jobs(spec, [(job, partial(load_job, spec, job)) for job in jobs], models, workers=workers)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- the run


FAILURES_COLUMNS = ("path", "name", "error")


def _failure_rows(failures: Iterable[Outcome]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([str(outcome.job.path), outcome.job.name, outcome.error] for outcome in failures)
    return buffer.getvalue()


def write_failures(out_dir: Path, failures: Sequence[Outcome]) -> Optional[Path]:
    """Write ``out_dir/failures.csv`` (path, name, error; atomically), or remove it when there
    is no failure. Returns its path, or None."""
    path = out_dir / FAILURES_NAME
    if not failures:
        path.unlink(missing_ok=True)
        return None
    return atomic_write_text(path, ",".join(FAILURES_COLUMNS) + "\n" + _failure_rows(failures))


class _FailureLog:
    """``DIR/failures.csv`` while a run lasts, in time linear in the failures: the first failure
    replaces an earlier run's file (atomically: header and row), each later one is appended and
    flushed as it happens, so a reader finds every failure so far (a row being appended at that
    instant may be cut short). :meth:`finish` rewrites it whole, atomically (:func:`write_failures`),
    or removes an earlier run's file when nothing failed."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.failures: list[Outcome] = []
        self._file: Optional[IO[str]] = None

    def add(self, outcome: Outcome) -> None:
        self.failures.append(outcome)
        if self._file is None:
            path = write_failures(self.out_dir, self.failures)
            assert path is not None
            self._file = open(path, "a", encoding="utf-8", newline="")
        else:
            try:
                self._file.write(_failure_rows([outcome]))
                self._file.flush()
            except OSError as error:  # a full disk: say which file
                raise named_error(error, self.out_dir / FAILURES_NAME) from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self) -> Optional[Path]:
        self.close()
        return write_failures(self.out_dir, self.failures)


class _Counted(Generic[T]):
    """An iterator with a known length, for a progress bar."""

    def __init__(self, items: Iterator[T], count: int) -> None:
        self._items, self._count = items, count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[T]:
        return self._items


def segment_many(
    spec: RunSpec,
    jobs: Sequence[VideoJob],
    engine: Engine,
    *,
    progress: Progress = no_progress,
    log: Log = no_log,
) -> dict[str, Any]:
    """Run ``engine`` on the jobs whose outputs are not complete, recording failures.

    Checks the settings, records the run in ``DIR/run.json`` (a resume with another pipeline,
    other settings, models or frame sampling is refused), skips complete videos (see the module
    docstring), then keeps ``DIR/failures.csv`` up to date as failures happen (the first replaces
    an earlier run's file, the others are appended) and rewrites it whole at the end, or removes
    an earlier one when nothing failed.

    Returns:
        ``{"videos", "done_before", "segmented", "failed", "frames", "elapsed_s",
        "videos_per_s", "failures" (the path of failures.csv or None)}``.

    Raises:
        ValueError: settings of another pipeline; ``RunConflictError`` (a ValueError): ``DIR`` holds another
            run's outputs; ``UnwritableFolderError`` / ``FolderInUseError``
            (:func:`cmsf.io.files.claim_folder`): ``DIR`` cannot be written, or another run holds it.
    """
    spec = replace(spec, settings=settings_for(spec.pipeline, spec.settings))
    started = time.perf_counter()
    out_dir = spec.out_dir
    with claim_folder(out_dir):  # created, writable and locked: a second run into it is refused
        has_outputs = any(out_dir.glob(f"*/{EVIDENCE_NAME}"))
        record_run(out_dir / RUN_NAME, spec.record(), kind=RUN_KIND, outputs_exist=has_outputs, outputs="video outputs")
        remove_leftovers(out_dir)  # DIR's own temporaries; a video's folder is cleaned when it is written
        todo = [job for job in jobs if not is_complete(out_dir, job)]
        log(f"{len(jobs)} videos: {len(jobs) - len(todo)} already done, {len(todo)} to segment with {spec.pipeline}")
        failures = _FailureLog(out_dir)
        segmented = frames = 0
        try:
            if todo:
                for outcome in progress(_Counted(engine(spec, todo), len(todo)), spec.pipeline, "video"):
                    if outcome.error is None:
                        segmented += 1
                        frames += outcome.frames
                    else:
                        failures.add(outcome)
            failures_path = failures.finish()
        finally:
            failures.close()
        elapsed = time.perf_counter() - started
        return {
            "videos": len(jobs),
            "done_before": len(jobs) - len(todo),
            "segmented": segmented,
            "failed": len(failures.failures),
            "frames": frames,
            "elapsed_s": round(elapsed, 3),
            "videos_per_s": round(segmented / elapsed, 4) if elapsed > 0 else None,
            "failures": str(failures_path) if failures_path is not None else None,
        }


def summary_line(summary: Mapping[str, Any], out_dir: Path) -> str:
    """A :func:`segment_many` summary in one line: ``"12 segmented, 3 already done, 1 failed
    (40.2 s, 0.299 videos/s) → out"``; instead of the rate, ``"every video tried failed"`` when none
    was segmented, ``"nothing to do"`` when none was tried."""
    if summary["segmented"]:
        rate = f"{summary['videos_per_s']:.3g} videos/s"
    else:
        rate = "every video tried failed" if summary["failed"] else "nothing to do"
    return (
        f"{summary['segmented']} segmented, {summary['done_before']} already done, {summary['failed']} failed "
        f"({summary['elapsed_s']:.1f} s, {rate}) → {out_dir}"
    )
