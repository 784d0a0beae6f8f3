"""A sweep's model passes and its per-video candidates caches: which runs of a pipeline's model
stage serve which rows of a grid (:func:`model_passes`, :class:`SweepPlan`), what a video's cache
lacks (:func:`pass_request`), and each video's cache read or completed by the dataset runner
(:class:`VideoCaches`), for the S4 / MS3 sweeps (:mod:`cmsf.runs.sweep`) and the AVSS ones
(:mod:`cmsf.runs.avss_sweep`).
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from cmsf.models.loading import Models
from cmsf.pipelines.passes import PassRequest
from cmsf.pipelines.settings import LOWEST, RERUN, PipelineSettings, settings_type, sweep_rules
from cmsf.runs.cache import (
    CacheIndex,
    CachePart,
    TagCache,
    VideoCache,
    cache_path,
    read_cache,
    read_cache_index,
    write_cache,
)
from cmsf.runs.records import run_record
from cmsf.runs.runner import Job, JobOutcome, run_passes

__all__ = [
    "ModelPass",
    "SweepPlan",
    "VideoCaches",
    "covering_part",
    "covers",
    "model_passes",
    "pass_request",
    "read_covered",
    "store_candidates",
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


@dataclass(frozen=True)
class SweepPlan:
    """A sweep's grid checked and planned: its ``rows`` (settings resolved for the models), the
    model ``passes`` they need, the lowest ``tag_threshold`` of a tagged pipeline's rows (where
    its tags are computed), the ``grid`` (each key's values, a repeated one once) and the
    ``fixed`` settings (those of the base that differ from the defaults)."""

    pipeline: str
    grid: dict[str, list[Any]]
    fixed: dict[str, Any]
    rows: list[PipelineSettings]
    passes: list[ModelPass]
    lowest_tag: Optional[float]


def covering_part(cache: Optional[VideoCache], needed: PipelineSettings) -> Optional[CachePart]:
    """The first cached model pass that covers ``needed`` (:func:`covers`), or None."""
    if cache is None:
        return None
    return next((part for part in cache.parts if covers(part.compute, needed)), None)


def _add_part(cache: VideoCache, part: CachePart) -> None:
    """Add ``part``, dropping the parts it makes redundant (those it covers)."""
    cache.parts = [old for old in cache.parts if not covers(part.compute, old.compute)] + [part]


def pass_request(index: Optional[CacheIndex], plan: SweepPlan) -> Optional[PassRequest]:
    """What the models must compute for a video whose cache holds ``index``
    (:func:`~cmsf.runs.cache.read_cache_index`; None: no cache) to cover every pass of ``plan``:
    the passes no cached part covers, with the tags cached at a threshold ≤ the grid's lowest
    (else they are computed at that); None when the cache covers them all."""
    computed = index.computed if index is not None else []
    missing = tuple(p.compute for p in plan.passes if not any(covers(have, p.compute) for have in computed))
    if not missing:
        return None
    tags = index.tags if index is not None else None
    usable = tags is not None and plan.lowest_tag is not None and tags.tag_threshold <= plan.lowest_tag
    return PassRequest(missing, plan.lowest_tag, tags.frames if usable and tags is not None else None)


def read_covered(path: Path, identity: dict[str, Any], settings: type[PipelineSettings]) -> VideoCache:
    """The cache at ``path``, whose index said it covers the grid.

    Raises:
        ValueError: its candidates cannot be read (damaged behind a readable header): the file is
            removed, so that a rerun computes the video again.
    """
    cache = read_cache(path, identity, settings)
    if cache is None:
        path.unlink(missing_ok=True)
        raise ValueError(f"its cache {path} could not be read (removed: a rerun computes the video again)")
    return cache


def store_candidates(path: Path, identity: dict[str, Any], outcome: JobOutcome, plan: SweepPlan, models: Models) -> VideoCache:
    """The video's cache (read again from ``path``, or a new one) with the parts and tags the
    runner computed for it (``outcome``, of :func:`~cmsf.runs.runner.run_passes`) added; written
    back atomically. Returns it."""
    assert outcome.clip is not None and outcome.candidates is not None
    cache = read_cache(path, identity, settings_type(plan.pipeline))
    if cache is None:
        height, width = outcome.clip.frames.shape[-2:]
        cache = VideoCache(identity, (int(height), int(width)), outcome.clip.num_frames, sources=models.sources())
    if outcome.candidates.tags is not None:
        assert plan.lowest_tag is not None
        cache.tags = TagCache(plan.lowest_tag, outcome.candidates.tags)
    for compute, output in outcome.candidates.parts:
        _add_part(cache, CachePart.of(compute, output))
    write_cache(path, cache)
    return cache


class VideoCaches:
    """Each video's candidates cache for a sweep's ``plan``, in the order of ``loaders``: read when
    its file covers every pass of the plan (its header says so), else completed by the dataset
    runner (:func:`~cmsf.runs.runner.run_passes`: the passes it lacks, batched across videos, read
    ahead on threads) and written back. Used as a context (the runner stops on exit); call
    :meth:`get` once per video, in order; ``computed`` counts the videos a model ran on.

    Args:
        loaders: each video's key → a call that reads it (a :class:`~cmsf.runs.runner.Job`'s load).
        out_dir: the run folder (the caches are ``out_dir/cache/{key}.npz``).
        runner: keyword arguments of :func:`~cmsf.runs.runner.run_passes` (``frames_per_batch``, ``workers``).
    """

    def __init__(
        self,
        loaders: Mapping[str, Callable[[], Any]],
        out_dir: Path,
        plan: SweepPlan,
        models: Models,
        runner: Mapping[str, Any],
    ) -> None:
        self.plan, self.models, self.computed = plan, models, 0
        self.identity = run_record("cache", plan.pipeline, models)
        self.paths = {key: cache_path(out_dir / "cache", key) for key in loaders}
        self.settings = settings_type(plan.pipeline)
        self.requests: dict[str, PassRequest] = {}
        for key in loaders:  # from the files' headers: a covered video's candidates are read once, to score it
            request = pass_request(read_cache_index(self.paths[key], self.identity, self.settings), plan)
            if request is not None:
                self.requests[key] = request
        jobs = [Job(key, load, self.requests[key]) for key, load in loaders.items() if key in self.requests]
        self._outcomes = closing(run_passes(plan.pipeline, jobs, models, **runner))

    def __enter__(self) -> VideoCaches:
        self._iterator = self._outcomes.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._outcomes.__exit__(*exc)

    def get(self, key: str) -> VideoCache:
        """The cache of video ``key``, the next video in order.

        Raises:
            ValueError, OSError: the video's failure (reading it, a model, its cache); the next
                video can still be asked for.
        """
        if key not in self.requests:
            return read_covered(self.paths[key], self.identity, self.settings)
        outcome = next(self._iterator)
        if outcome.error is not None:
            raise outcome.error
        cache = store_candidates(self.paths[key], self.identity, outcome, self.plan, self.models)
        self.computed += 1
        return cache
