"""Running a pipeline over many videos: :func:`run_jobs` reads videos in background threads while
the models work, runs each model on the frames of several videos at once, and yields each video's
result (or the error that stopped it) in job order, as soon as its batch is done.

A :class:`Job` is a key and a function that reads the video (a :class:`~cmsf.io.decoding.Clip`), so
the runner knows nothing about where videos come from: ``cmsf eval`` makes one job per AVSBench
video (:func:`cmsf.io.avsbench.load_video`), ``cmsf segment-many`` one per file.

:func:`run_jobs` yields each video's result (model stage, then selection); :func:`run_passes`
yields the model stage's output alone, each video's candidates at the settings its job asks for
(:class:`~cmsf.pipelines.passes.PassRequest`), from which ``cmsf eval --sweep`` selects every
setting of its grid. Both read, batch and handle errors alike (one loop, :func:`_run`, with the
batch's model work as its step).

How it runs:

- **reading** (``job.load()``, PyAV decoding, PNG and wav reading, :func:`~cmsf.pipelines.per_frame.prepare_video`)
  happens on ``workers`` threads: PyAV, PIL and torch release the GIL while they decode, so the
  reading overlaps the model work of the calling thread (threads rather than processes: no
  pickling of clips or of the jobs' readers, and the decoders do not hold the GIL). At most about two batches of frames
  are read ahead, so memory stays bounded however many jobs there are.
- **batching**: videos are taken in job order into batches of at most ``frames_per_batch``
  frames (a video longer than that forms a batch of its own); each batch goes through the
  pipeline's model stage once (:data:`cmsf.pipelines.per_frame.PIPELINE_STAGES`: every model sees all
  frames, crops and audio segments of the batch together), then each video through its
  selection stage.
- **errors stay with their video**: a job whose ``load`` raises is yielded with that error; when a
  batch's model stage raises, each of its videos is run again alone, so that only the video at
  fault gets the error and the others their results (a batch that runs out of GPU memory is
  thus retried video by video, once the memory the failed batch held is freed). An outcome's
  error keeps its type, message and traceback lines but not its frames' variables (tensors).
  A :class:`~cmsf.models.loading.ModelLoadError` (a component that cannot be loaded) is raised, not
  recorded: it is no video's fault. ``KeyboardInterrupt`` and other ``BaseException`` s are not
  caught.

Results equal those of the pipeline called on each video alone (:func:`cmsf.pipelines.per_frame.run_videos`
with one video) except for floating-point rounding: a model's output for one item can differ in
the last bits with the batch it was computed in (kernels pick other blockings for other batch
sizes), so a score within about 1e-6 of a threshold, or a SAM logit within rounding of 0, can fall
the other way. ``frames_per_batch=1`` runs every video alone: bit-identical to the per-video call.
"""

from __future__ import annotations

import gc
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import torch

from cmsf.checks import check_positive_int
from cmsf.io.decoding import Clip
from cmsf.models.loading import ModelLoadError, Models, check_models
from cmsf.pipelines.catalog import run_videos
from cmsf.pipelines.passes import PassCandidates, PassRequest, candidates_of_passes
from cmsf.pipelines.results import SegmentationResult, VideoInput, prepare_video
from cmsf.pipelines.settings import PipelineSettings, resolve_settings, settings_for, settings_type

FRAMES_PER_BATCH = {"cpu": 5, "cuda": 64}
"""Default frames per model batch by device type (:func:`default_frames_per_batch`)."""

WORKERS = {"cpu": 1, "cuda": 2}
"""Default reading threads by device type (:func:`default_workers`)."""


def default_frames_per_batch(device: Union[str, torch.device]) -> int:
    """Frames per batch of :func:`run_jobs` when none is given: 5 on the CPU (one AVSBench video:
    batching across videos does not pay there, measured 10–20 % slower with the tiny models on 2
    cores) and 64 on CUDA (13 AVSBench videos; SAM's image encoder and ImageBind's vision tower
    run in fixed chunks inside the stages, so the batch mostly sets how many frames OWLv2 sees at
    once and how much per-call work is amortised). Not tuned on a GPU yet:
    ``bench/test_bench_runner.py`` records throughput and peak memory per batch size."""
    kind = torch.device(device).type
    return FRAMES_PER_BATCH.get(kind, FRAMES_PER_BATCH["cpu"])


def default_workers(device: Union[str, torch.device]) -> int:
    """Reading threads of :func:`run_jobs` when none is given: 2 on CUDA (decoding overlaps the
    GPU's work), 1 on the CPU (the models and the reading share the cores; a second thread cost
    ~5 % with the tiny models on 2 cores, one still hides a slow decode)."""
    kind = torch.device(device).type
    return WORKERS.get(kind, WORKERS["cpu"])


@dataclass(frozen=True)
class Job:
    """One video to segment: ``key`` names it (in outcomes and messages), ``load()`` reads it.

    ``load`` runs on a reading thread; it must return a :class:`~cmsf.io.decoding.Clip` and may raise
    (the error becomes the job's outcome)."""

    key: str
    load: Callable[[], Clip]
    request: Optional[PassRequest] = None
    """For :func:`run_passes`: the model passes this video needs (unused by :func:`run_jobs`)."""


@dataclass
class JobOutcome:
    """What became of one job.

    Attributes:
        job: the job.
        index: its position in the jobs given to :func:`run_jobs`.
        clip: the clip ``job.load()`` returned (``None`` if loading failed).
        result: the pipeline's result (:func:`run_jobs`; ``None`` on error); ``result.masks`` is
            ``Tensor[T, H, W]`` bool at the clip's frame size, on the CPU.
        candidates: the model stage's output for the job's passes (:func:`run_passes`; ``None``
            on error).
        error: the exception that stopped the job, or ``None``. Its type, message and
            traceback lines are kept, the local variables of its traceback's frames are cleared
            (as ``traceback.clear_frames`` does): keeping outcomes does not keep the tensors of
            a failed run alive.
        stage: where it stopped: ``"load"`` (reading or checking the clip) or ``"segment"`` (the
            pipeline); ``None`` on success.
        load_seconds: wall time of ``job.load()`` and the input checks, on its reading thread.
    """

    job: Job
    index: int
    clip: Optional[Clip] = None
    result: Optional[SegmentationResult] = None
    candidates: Optional[PassCandidates] = None
    error: Optional[Exception] = None
    stage: Optional[str] = None
    load_seconds: float = 0.0

    @property
    def key(self) -> str:
        return self.job.key

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Loaded:
    """A job after its reading step: the clip and the checked pipeline input, or the error."""

    outcome: JobOutcome
    video: Optional[VideoInput] = None

    @property
    def frames(self) -> int:
        return 0 if self.video is None else len(self.video.images)


def _load(job: Job, index: int) -> _Loaded:
    started = time.perf_counter()
    outcome = JobOutcome(job=job, index=index)
    try:
        clip = job.load()
        if not isinstance(clip, Clip):
            raise ValueError(f"job {job.key!r}: load() returned {type(clip).__name__}, expected a cmsf Clip")
        outcome.clip = clip
        video = prepare_video(clip.frames, clip.waveform, clip.sample_rate)
    except Exception as error:  # noqa: BLE001 - the job's outcome carries it
        outcome.error, outcome.stage = _detached(error), "load"
        video = None
    outcome.load_seconds = time.perf_counter() - started
    return _Loaded(outcome, video)


def _detached(error: Exception) -> Exception:
    """``error`` with the local variables of its traceback's frames (and of the errors chained
    to it) cleared, so that an outcome can keep it without keeping the activations, clips and
    batches those frames referenced alive. Its type, message and traceback lines stay, except
    the line of the runner's frame that caught it (still running, so it cannot be cleared)."""
    seen: set[int] = set()
    chained: Optional[BaseException] = error
    while chained is not None and id(chained) not in seen:
        seen.add(id(chained))
        entry = chained.__traceback__
        while entry is not None:
            try:
                entry.tb_frame.clear()
            except RuntimeError:  # a frame still running: the one that caught the error
                if entry is chained.__traceback__:
                    chained.__traceback__ = entry.tb_next
            entry = entry.tb_next
        chained = chained.__cause__ or chained.__context__
    return error


Step = Callable[[Sequence[_Loaded]], None]
"""A batch's model work: fills each item's outcome (``result`` or ``candidates``), or raises."""


def _results_step(pipeline: str, models: Models, settings: PipelineSettings, batch: Sequence[_Loaded]) -> None:
    """:func:`run_jobs`' step: the pipeline's results."""
    results = run_videos(pipeline, [item.video for item in batch], models, settings)
    for item, result in zip(batch, results):
        item.outcome.result = result


def _passes_step(pipeline: str, models: Models, batch: Sequence[_Loaded]) -> None:
    """:func:`run_passes`' step: the candidates of each job's passes."""
    requests = [item.outcome.job.request for item in batch]
    found = candidates_of_passes(pipeline, [item.video for item in batch], requests, models)
    for item, candidates in zip(batch, found):
        item.outcome.candidates = candidates


def _segment(step: Step, batch: Sequence[_Loaded], models: Models) -> None:
    """Run ``step`` on ``batch``, filling each outcome's output or error; a failing batch of
    several videos is run again video by video, so the error lands on its video.

    The retries run after the failed batch's error is dropped (not inside its ``except``): its
    traceback holds the batch's activations, which must be freed (``gc.collect``, then CUDA's
    cache emptied) before the videos run again, or an out-of-memory batch would likely run out
    of memory again on each video; and the videos' errors do not carry the batch's as context.
    """
    batch_failed = False
    try:
        step(batch)
    except ModelLoadError:
        raise  # about the models, not the videos: every job would fail the same way
    except Exception as error:  # noqa: BLE001
        if len(batch) == 1:
            batch[0].outcome.error, batch[0].outcome.stage = _detached(error), "segment"
            return
        batch_failed = True  # the error, its traceback and their frames go at the end of this block
    if batch_failed:
        gc.collect()  # frames in reference cycles (a re-raised error's) hold tensors too
        if models.device.type == "cuda":
            torch.cuda.empty_cache()
        for item in batch:
            _segment(step, [item], models)


def _batching(models: Models, frames_per_batch: Optional[int], workers: Optional[int]) -> tuple[int, int]:
    """``frames_per_batch`` and ``workers`` checked, their defaults for ``models.device`` filled in."""
    if frames_per_batch is None:
        frames_per_batch = default_frames_per_batch(models.device)
    frames_per_batch = check_positive_int(frames_per_batch, "frames_per_batch")
    if workers is None:
        workers = default_workers(models.device)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected an integer ≥ 0, got {workers!r}")
    return frames_per_batch, workers


def run_jobs(
    pipeline: str,
    jobs: Iterable[Job],
    models: Models,
    settings: Optional[PipelineSettings] = None,
    *,
    frames_per_batch: Optional[int] = None,
    workers: Optional[int] = None,
) -> Iterator[JobOutcome]:
    """Run ``pipeline`` on every job's video; yield one :class:`JobOutcome` per job, in job order.

    The arguments come in the order of :func:`cmsf.pipelines.per_frame.run_videos` (pipeline, inputs,
    models, settings).

    Args:
        pipeline: a name of :data:`cmsf.pipelines.per_frame.PIPELINES`.
        jobs: the videos (any iterable, consumed lazily: a generator of a million jobs is fine).
        models: the loaded models; their device and dtype are the run's.
        settings: the pipeline's settings (:data:`cmsf.pipelines.settings.SETTINGS`, e.g.
            ``OwodBindSettings(bind_threshold=0.6)``); None: its defaults.
        frames_per_batch: at most this many frames per model batch (a longer video runs alone);
            default :func:`default_frames_per_batch` of ``models.device``. ``1`` runs each video
            alone (bit-identical to calling the pipeline on it).
        workers: reading threads, default :func:`default_workers` of ``models.device``; ``0``
            reads each video in the calling thread when its batch is assembled (no overlap, for
            debugging and comparison).

    Yields:
        each job's outcome as soon as its batch is done: a result, or the error of its reading
        (``stage="load"``) or of its pipeline run (``stage="segment"``). Errors never stop the
        other jobs; the caller decides what to do with them.

    Raises:
        ValueError: an unknown pipeline, settings of another pipeline, a bind mode the binder
            cannot give, bad ``models``, ``frames_per_batch`` or ``workers`` (when called, before any job
            is read).

    Close the iterator (``contextlib.closing``, or exhaust it) to stop early: the videos not yet
    being read are cancelled, and the reading threads (daemon threads) finish the one they are
    reading in the background without the caller waiting for them, so a read that never ends
    (a file that blocks) cannot hold up Ctrl-C, SIGTERM or the process' exit.
    """
    settings = settings_for(pipeline, settings)  # also refuses an unknown pipeline
    models = check_models(models)
    settings = resolve_settings(settings, models)  # a bind mode the binder cannot give
    frames_per_batch, workers = _batching(models, frames_per_batch, workers)
    step = partial(_results_step, pipeline, models, settings)
    return _run(step, iter(jobs), models, frames_per_batch, workers)


def run_passes(
    pipeline: str,
    jobs: Iterable[Job],
    models: Models,
    *,
    frames_per_batch: Optional[int] = None,
    workers: Optional[int] = None,
) -> Iterator[JobOutcome]:
    """:func:`run_jobs` for the model stage alone: each job's ``request``
    (:class:`~cmsf.pipelines.passes.PassRequest`: the settings its candidates are wanted at) is run
    by :func:`~cmsf.pipelines.passes.candidates_of_passes` over each batch, and each outcome's
    ``candidates`` holds the video's candidates of every pass it asked for (``result`` is None; a
    tracked pipeline's: its tracks).
    Reading, batching, errors and closing are those of :func:`run_jobs`; a threshold sweep
    (:mod:`cmsf.runs.sweep`) selects its rows from these candidates.

    Raises:
        ValueError: an unknown pipeline, bad ``models``, ``frames_per_batch`` or ``workers`` (when
            called), a job without a request or with settings of another pipeline (when it is read).
    """
    expected = settings_type(pipeline)  # refuses an unknown pipeline
    models = check_models(models)
    frames_per_batch, workers = _batching(models, frames_per_batch, workers)
    checked = (_with_request(job, expected) for job in jobs)
    return _run(partial(_passes_step, pipeline, models), checked, models, frames_per_batch, workers)


def _with_request(job: Job, expected: type[PipelineSettings]) -> Job:
    if isinstance(job, Job) and (
        job.request is None or not all(isinstance(p, expected) for p in job.request.passes)
    ):
        raise ValueError(f"jobs: job {job.key!r} needs a PassRequest of {expected.__name__} passes")
    return job


def _run(step: Step, jobs: Iterator[Job], models: Models, frames_per_batch: int, workers: int) -> Iterator[JobOutcome]:
    pool = _Readers(workers) if workers else None
    ahead: deque[Union[Future, _Loaded]] = deque()  # read (or being read) in job order
    counter = _Counter()

    def read_ahead() -> None:
        # keep about two batches of frames in flight, at least one video per worker
        per_video = counter.mean_frames()
        if pool is None:
            wanted = 1
        elif per_video is None:  # nothing read yet: one video per worker until sizes are known
            wanted = workers
        else:
            wanted = max(workers, math.ceil(2 * frames_per_batch / per_video))
        while len(ahead) < wanted:
            job = next(jobs, None)
            if job is None:
                return
            if not isinstance(job, Job):
                raise ValueError(f"jobs: expected cmsf.runs.runner.Job items, got {type(job).__name__}")
            index = counter.submitted
            counter.submitted += 1
            ahead.append(pool.submit(_load, job, index) if pool else _load(job, index))

    def take() -> _Loaded:
        item = ahead.popleft()
        loaded = item.result() if isinstance(item, Future) else item
        counter.record(loaded.frames)
        read_ahead()
        return loaded

    finished = False
    try:
        read_ahead()
        pending: Optional[_Loaded] = None
        while ahead or pending is not None:
            batch: list[_Loaded] = []
            failed: list[_Loaded] = []
            frames = 0
            while ahead or pending is not None:
                item = pending if pending is not None else take()
                pending = None
                if item.video is None:
                    failed.append(item)
                    continue
                if batch and frames + item.frames > frames_per_batch:
                    pending = item  # starts the next batch
                    break
                batch.append(item)
                frames += item.frames
                if frames >= frames_per_batch:
                    break
            if batch:
                _segment(step, batch, models)
            for item in sorted(batch + failed, key=lambda loaded: loaded.outcome.index):
                yield item.outcome
        finished = True
    finally:
        for item in ahead:
            if isinstance(item, Future):
                item.cancel()  # not started yet: never read
        if pool is not None:
            pool.shutdown(wait=finished)  # stopped early (closed, Ctrl-C, SIGTERM): wait for no reader


_Task = tuple[Future, Callable[..., Any], tuple[Any, ...]]
"""A reading task: the future to fill, the function and its arguments."""


class _Readers:
    """The reading threads of :func:`run_jobs`: ``workers`` daemon threads taking ``(future,
    function, args)`` tasks in order. Unlike :class:`~concurrent.futures.ThreadPoolExecutor`,
    whose threads the interpreter joins before it exits, a reader blocked for good (a file that
    never delivers, a network share that hangs) holds up neither a stopped run nor the process'
    exit: Ctrl-C and SIGTERM end the run at once, and the run's cleanup (its folder's lock) runs."""

    def __init__(self, workers: int) -> None:
        self._tasks: queue.SimpleQueue[Optional[_Task]] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"cmsf-read_{i}", daemon=True) for i in range(workers)
        ]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._tasks.put((future, function, args))
        return future

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, function, args = task
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it started
            try:
                result = function(*args)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(error)
            else:
                future.set_result(result)
            del task, future, args  # no reference to the last clip while waiting for the next

    def shutdown(self, *, wait: bool) -> None:
        """Stop the threads once their current task is done; ``wait``: join them (a run that
        ended normally, when no task is left), else return at once."""
        for _ in self._threads:
            self._tasks.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


class _Counter:
    """Jobs submitted so far and the mean frame count of the videos read (for read-ahead)."""

    def __init__(self) -> None:
        self.submitted = 0
        self._videos = 0
        self._frames = 0

    def record(self, frames: int) -> None:
        if frames:
            self._videos += 1
            self._frames += frames

    def mean_frames(self) -> Optional[float]:
        return self._frames / self._videos if self._videos else None
