"""The Ray Data engine of ``cmsf segment-many``: decoding in CPU tasks (in the actors on CPU-only
runs), the pipeline in an actor pool that loads the models once per actor, outputs written by the
actors. Ray is an optional dependency (``pip install "cmsf[ray]"``), imported only here and only
when this engine runs.

The jobs to do (after the resume check, :func:`cmsf.runs.many.segment_many`) become a dataset of
``{name, path, audio}`` rows (``ray.data.from_items``), then:

1. with GPU actors, ``map(decode_row)``: a CPU task reads each input (:func:`cmsf.runs.many.load_job`)
   and passes the decoded clip on as one binary column (frames uint8, waveform float32, their
   metadata: an uncompressed ``.npz``), or the reason it could not be read;
2. ``map_batches(Segmenter, batch_size=…, compute=ActorPoolStrategy(…), num_gpus=…,
   num_cpus=threads)``: each actor loads the models once (lazily, on first use) and runs
   :func:`cmsf.runs.many.segment_jobs` (the dataset runner) on each call's videos (about one model
   batch of frames, :func:`videos_per_call`), writing every video's files into
   ``DIR/<name>/``; it returns one small row per video (name, error, frames), which the driver
   streams for its progress bar and ``failures.csv``.

**Where decoding happens.** With GPU actors, decoded frames travel through Ray's object store
from the CPU tasks to the actors. That lets decoding run on any node's CPUs while the GPUs stay
busy, and it is cheap at the rates cmsf samples (one frame per second: a 10 s clip at 1080p is
about 60 MB, at AVSBench's 224 px about 1 MB); Ray Data streams with backpressure, so only the
blocks in flight occupy the object store (spilled to disk beyond its size), never the corpus.
Decoding inside the actors would save that copy but leave the GPU idle while an actor decodes.
On a CPU-only run the actors are the CPUs' work anyway, so each decodes its own batch: no copy
through the object store, and no decoding task competing with the actors for CPUs (on a 2-CPU
machine, two tasks waiting for CPUs held by actors would stall).

**Threads.** An actor runs torch with ``RunSpec.threads`` CPU threads (default 1) and reserves
as many CPUs; CPU results depend on the thread count in their last bits, so the local engine
gives the same bytes when run with the same count (``--threads``).

**Resume and failures** are the driver's (:mod:`cmsf.runs.many`): a crashed or interrupted run leaves
complete video folders (``evidence.json`` written last) and nothing half-written; a rerun skips
them. An input that cannot be read or segmented comes back as a row with its error; only a model
that cannot be loaded stops the run.

**Clusters.** Without an address, :func:`run_ray` starts a local Ray instance (or attaches to the
one ``RAY_ADDRESS`` names) and shuts it down at the end; with ``address`` it joins a running
cluster (``ray start --head`` on one node, ``ray start --address=HEAD:6379`` on the others).
Every node needs cmsf installed and must see the inputs and ``DIR`` at the same paths (a shared
file system).
"""

from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from cmsf.io.media import Clip
from cmsf.models.loading import ModelLoadError, Models, load_models
from cmsf.runs.many import Outcome, RunSpec, VideoJob, describe, load_job, segment_jobs
from cmsf.runs.runner import default_frames_per_batch

RAY_INSTALL = 'pip install "cmsf[ray]"'
MAX_BLOCKS = 10_000
"""The most blocks the job list is cut into (each block is one decoding task's input)."""
CLIP_SECONDS = 10
"""The clip length :func:`videos_per_call` assumes when the frame count is not fixed (VGGSound's
and AudioSet's clips last 10 s)."""


def require_ray() -> ModuleType:
    """Import Ray (with Ray Data) for the Ray engine.

    Raises:
        ImportError: Ray is not installed; the message says how to install it.
    """
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only Ray core
    except ImportError as error:
        raise ImportError(
            f"the ray engine needs Ray Data, which cannot be imported ({error}); install it with: {RAY_INSTALL}"
        ) from None
    return ray


# ---------------------------------------------------------------- decoded clips as bytes


def clip_to_bytes(clip: Clip) -> bytes:
    """A clip as an uncompressed ``.npz``: ``frames`` (uint8 [T, 3, H, W]), ``waveform``
    (float32 [C, S]), ``sample_rate``, ``source`` and, for a video file, ``frame_times``."""
    arrays = {
        "frames": clip.frames.detach().cpu().numpy(),
        "waveform": clip.waveform.detach().cpu().numpy(),
        "sample_rate": np.asarray(clip.sample_rate, dtype=np.int64),
        "source": np.asarray(clip.source),
    }
    if clip.frame_times is not None:
        arrays["frame_times"] = np.asarray(clip.frame_times, dtype=np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def clip_from_bytes(data: bytes) -> Clip:
    """The clip :func:`clip_to_bytes` encoded, equal to it value for value."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return Clip(
            frames=torch.from_numpy(arrays["frames"].copy()),
            waveform=torch.from_numpy(arrays["waveform"].copy()),
            sample_rate=int(arrays["sample_rate"]),
            source=str(arrays["source"]),
            frame_times=tuple(float(t) for t in arrays["frame_times"]) if "frame_times" in arrays.files else None,
        )


# ---------------------------------------------------------------- the two steps


def _job(row: dict[str, Any]) -> VideoJob:
    audio = str(row["audio"])
    return VideoJob(path=Path(str(row["path"])), audio=Path(audio) if audio else None, name=str(row["name"]))


def decode_row(row: dict[str, Any], *, spec: RunSpec) -> dict[str, Any]:
    """The decoding step (a CPU task): one ``{name, path, audio}`` row gains ``clip`` (the clip
    as bytes, see :func:`clip_to_bytes`) and ``error`` (empty, or why the input cannot be read)."""
    try:
        clip = clip_to_bytes(load_job(spec, _job(row)))
    except Exception as error:  # noqa: BLE001 - an unreadable input fails alone, recorded
        return {**row, "clip": b"", "error": describe(error)}
    return {**row, "clip": clip, "error": ""}


class Segmenter:
    """The model step (a Ray actor): loads the models once and segments each batch of rows with
    :func:`cmsf.runs.many.segment_jobs` (the dataset runner, writing the outputs), returning ``{name,
    error, frames, fatal}`` per row. Rows carry their decoded clip (``clip``, ``error``: from
    :func:`decode_row`) or, on a CPU-only run, only ``{name, path, audio}``: the actor's reading
    threads then decode them while its models work.

    Models that cannot be loaded (:class:`~cmsf.models.loading.ModelLoadError`, or a device this node
    lacks) are no video's fault: every row of the call comes back with ``fatal`` set and the
    message, which :func:`run_ray` raises (Ray would pass an exception on without its cause)."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.models: Optional[Models] = None
        self.fatal: Optional[str] = None
        torch.set_num_threads(spec.threads or 1)  # this actor's own process
        try:
            self.models = load_models(spec.preset, device=spec.device, dtype=spec.dtype, **dict(spec.models))
        except (ModelLoadError, ValueError) as error:
            self.fatal = str(error)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [str(name) for name in batch["name"]]
        outcomes: list[Outcome] = []
        jobs: list[tuple[VideoJob, Callable[[], Clip]]] = []
        for index in range(len(names)):
            row = {key: column[index] for key, column in batch.items()}
            job = _job(row)
            if "clip" not in row:
                jobs.append((job, partial(load_job, self.spec, job)))
            elif row["error"]:
                outcomes.append(Outcome(job, str(row["error"])))
            else:
                jobs.append((job, partial(clip_from_bytes, bytes(row["clip"]))))
        if self.fatal is None and self.models is not None:
            try:
                outcomes += segment_jobs(self.spec, jobs, self.models)
            except ModelLoadError as error:
                self.fatal = str(error)
        if self.fatal is not None:
            return _rows(names, [self.fatal] * len(names), [0] * len(names), fatal=True)
        return _rows([o.job.name for o in outcomes], [o.error or "" for o in outcomes], [o.frames for o in outcomes])


def _rows(names: list[str], errors: list[str], frames: list[int], *, fatal: bool = False) -> dict[str, np.ndarray]:
    return {
        "name": np.asarray(names, dtype=object),
        "error": np.asarray(errors, dtype=object),
        "frames": np.asarray(frames, dtype=np.int64),
        "fatal": np.full(len(names), fatal),
    }


# ---------------------------------------------------------------- the engine


def videos_per_call(spec: RunSpec) -> int:
    """Videos per actor call: about one model batch, ``spec.frames_per_batch`` frames over the
    frames a video gives (``spec.num_frames``, else :data:`CLIP_SECONDS` × ``spec.fps`` (1)),
    at least 1. Small calls spread a corpus evenly over the actors and stream results; the
    runner in the actor still fills each model batch from the call's videos."""
    assert spec.frames_per_batch is not None
    frames = spec.num_frames or max(1, round(CLIP_SECONDS * (spec.fps or 1.0)))
    return max(1, round(spec.frames_per_batch / frames))


def actor_pool(
    ray: ModuleType,
    workers: Optional[int],
    gpus_per_worker: Optional[float],
    cpus_per_worker: int,
    *,
    fixed_cluster: bool = False,
) -> tuple[Any, float]:
    """The actor pool of the model step and the GPUs each actor asks for.

    ``gpus_per_worker`` None: 1 when the cluster has a GPU, else 0. ``workers`` None: an
    autoscaling pool from 1 to what the cluster holds (its GPUs / ``gpus_per_worker``, or on a
    CPU-only run its CPUs / ``cpus_per_worker``); else exactly ``workers`` actors.

    Raises:
        ValueError: on a ``fixed_cluster`` (a local instance, which cannot grow), an actor would
            ask for more CPUs or GPUs than it has: Ray would wait for them forever.
    """
    resources = ray.cluster_resources()
    gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if resources.get("GPU", 0) >= 1 else 0.0)
    if fixed_cluster:
        if cpus_per_worker > resources.get("CPU", 0):
            raise ValueError(
                f"threads: each Ray actor reserves {cpus_per_worker} CPUs (one per thread); this Ray "
                f"instance has {resources.get('CPU', 0):g}"
            )
        if gpus > resources.get("GPU", 0):
            have = resources.get("GPU", 0)
            raise ValueError(f"gpus_per_worker: {gpus:g} GPUs per actor; this Ray instance has {have:g}")
    if workers is not None:
        return ray.data.ActorPoolStrategy(size=workers), gpus
    if gpus > 0:
        most = int(resources.get("GPU", 0) // gpus)
    else:
        most = int(resources.get("CPU", 1) // cpus_per_worker)
    return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, most)), gpus


def run_ray(
    spec: RunSpec,
    jobs: Sequence[VideoJob],
    *,
    address: Optional[str] = None,
    workers: Optional[int] = None,
    gpus_per_worker: Optional[float] = None,
) -> Iterator[Outcome]:
    """The Ray engine (an :data:`cmsf.runs.many.Engine` once the options are bound): segments
    ``jobs`` on a Ray cluster and yields each :class:`~cmsf.runs.many.Outcome` as its row comes back.

    Args:
        address: a cluster to join (``ray start --head`` prints it, e.g. ``10.0.0.1:6379``);
            None starts a local instance, shut down at the end. When Ray is already initialised
            in this process, that instance is used.
        workers: model actors (see :func:`actor_pool`); gpus_per_worker: GPUs each asks for.

    Raises:
        ImportError: Ray is not installed (see :func:`require_ray`).
        ModelLoadError: an actor could not load the models (its message: a component that
            cannot be loaded, or a device its node lacks).
    """
    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address is None:
            options["include_dashboard"] = False
        ray.init(address=address, **options)
    context = ray.data.DataContext.get_current()
    progress_bars = context.enable_progress_bars
    context.enable_progress_bars = False  # the driver shows its own, in videos
    try:
        by_name = {job.name: job for job in jobs}
        rows = [{"name": job.name, "path": str(job.path), "audio": str(job.audio or "")} for job in jobs]
        local = started_here and address is None and not os.environ.get("RAY_ADDRESS")
        compute, gpus = actor_pool(ray, workers, gpus_per_worker, spec.threads or 1, fixed_cluster=local)
        frames_per_batch = spec.frames_per_batch or default_frames_per_batch("cuda" if gpus else "cpu")
        spec = replace(spec, frames_per_batch=frames_per_batch)
        per_call = videos_per_call(spec)
        blocks = max(1, min(len(rows), math.ceil(len(rows) / per_call), MAX_BLOCKS))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks)
        if gpus > 0:  # decoding in CPU tasks, apart from the GPU actors
            dataset = dataset.map(decode_row, fn_kwargs={"spec": spec}, num_cpus=1)
        dataset = dataset.map_batches(
            Segmenter,
            fn_constructor_kwargs={"spec": spec},
            batch_size=per_call,
            batch_format="numpy",
            compute=compute,
            num_cpus=spec.threads or 1,
            num_gpus=gpus or None,
        )
        results = iter(dataset.iter_rows())
        try:
            for row in results:
                error = str(row["error"])
                if row["fatal"]:
                    raise ModelLoadError(error)
                yield Outcome(by_name[str(row["name"])], error or None, int(row["frames"]))
        finally:
            getattr(results, "close", lambda: None)()  # stops the execution (its actors) now, not at GC
    finally:
        context.enable_progress_bars = progress_bars
        if started_here:
            ray.shutdown()
