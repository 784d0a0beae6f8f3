"""A 3×3 sweep of OWOD-BIND's τ_BB × τ_BIND (``cmsf.runs.sweep.run_sweep``) against one run of the
same videos at the grid's middle setting (``cmsf.runs.evaluate.evaluate``), on the miniature AVSBench
of the tests (3 S4 test videos of 5 frames of 224×224).

Both are whole dataset runs from an empty run folder, with the models already loaded: the run
reads each video, runs the models, writes and re-reads the masks and scores them; the sweep
reads each video, runs the models once at the grid's lowest τ_BB, writes the cache, scores the 9
settings from it and writes the best setting's masks and evidence. Thresholds come from the
models' own scores on the first video (counts as in ``bench/workload.py``): τ_BB keeping about 12, 8 and 5
proposals per frame, τ_BIND about 3, 2 and 1 kept proposals per frame; the single run uses the
middle of both. The smoke run (``--benchmark-disable``) does both once on one video.

Each round runs two single runs, at the grid's middle and at its loosest setting (untimed by
pytest-benchmark, timed by us), and then the sweep (timed). ``extra_info``: ``one_run_s`` (the
middle setting), ``loosest_run_s``, ``sweep_s`` (medians over rounds), ``ratio`` = sweep_s /
one_run_s (the issue's goal: below 2), ``ratio_to_loosest_run`` (the sweep's models do the work of
the loosest run: the rest is its overhead), the grid and the cache's bytes per video. On CUDA with
the paper's architectures the ratio is asserted below 2; elsewhere it is recorded.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.harness import Case, synchronize
from bench.workload import KEPT_PER_FRAME, PROPOSALS_PER_FRAME
from cmsf.io import avsbench
from cmsf.pipelines.per_frame import owod_bind
from cmsf.pipelines.settings import make_settings
from cmsf.runs.evaluate import evaluate
from cmsf.runs.sweep import run_sweep
from cmsf.stages.proposals import propose_boxes
from tests.avsbench_fixture import make_avsbench

RATIO_GOAL = 2.0


def _keeping(values: list[float], count: int) -> float:
    """The midpoint between the ``count``-th and the next largest of ``values``: keeps ``count``."""
    ordered = sorted(values, reverse=True)
    count = min(max(count, 1), len(ordered) - 1)
    return min(max((ordered[count - 1] + ordered[count]) / 2, 0.0), 1.0)


def _grid(root: Path, models: Any) -> dict[str, list[float]]:
    """τ_BB and τ_BIND values (lowest first) from the float32 models' scores on the first video."""
    clip = avsbench.load_video(root, "s4", avsbench.list_videos(root, "s4", "test")[0])
    frames = clip.num_frames
    objectness = torch.cat([p.scores for p in propose_boxes(clip.frames, models, threshold=0.0)]).tolist()
    proposals = (PROPOSALS_PER_FRAME + 4, PROPOSALS_PER_FRAME, PROPOSALS_PER_FRAME - 3)
    boxes = [_keeping(objectness, n * frames) for n in proposals]
    probe = owod_bind(clip.frames, clip.waveform, clip.sample_rate, models, box_threshold=boxes[1], bind_threshold=0.0)
    bind_scores = torch.cat([f.bind_scores for f in probe.frames]).tolist()
    binds = [_keeping(bind_scores, n * frames) for n in (KEPT_PER_FRAME + 1, KEPT_PER_FRAME, KEPT_PER_FRAME - 1)]
    return {"box_threshold": sorted(boxes), "bind_threshold": sorted(binds)}


def test_sweep_3x3_against_one_run(benchmark, case: Case, models, tmp_path: Path) -> None:
    root = make_avsbench(tmp_path / "avsbench").root
    grid = _grid(root, models)
    limit = 1 if benchmark.disabled else None  # the smoke run (--benchmark-disable): one video, once
    common: dict[str, Any] = {"limit": limit}
    middle = {key: values[1] for key, values in grid.items()}
    loosest = {key: values[0] for key, values in grid.items()}
    counter = itertools.count()
    one_run_s: list[float] = []
    loosest_run_s: list[float] = []
    sweep_s: list[float] = []
    summaries: list[dict[str, Any]] = []

    def single_runs() -> tuple[tuple, dict]:
        for settings, times in ((middle, one_run_s), (loosest, loosest_run_s)):
            out = tmp_path / f"run{next(counter)}"
            synchronize(case.device)
            start = time.perf_counter()
            evaluate(root, "s4", out, pipeline="owod-bind", settings=make_settings("owod-bind", settings), models=models, **common)
            synchronize(case.device)
            times.append(time.perf_counter() - start)
        return (tmp_path / f"sweep{next(counter)}",), {}

    def sweep(out: Path) -> None:
        start = time.perf_counter()
        summaries.append(run_sweep(root, "s4", out, pipeline="owod-bind", grid=grid, models=models, **common))
        synchronize(case.device)
        sweep_s.append(time.perf_counter() - start)

    benchmark.pedantic(sweep, setup=single_runs, rounds=3, iterations=1, warmup_rounds=0)
    ratio = statistics.median(sweep_s) / statistics.median(one_run_s)
    summary = summaries[-1]
    benchmark.extra_info.update(
        {
            "one_run_s": statistics.median(one_run_s),
            "sweep_s": statistics.median(sweep_s),
            "ratio": ratio,
            "loosest_run_s": statistics.median(loosest_run_s),
            "ratio_to_loosest_run": statistics.median(sweep_s) / statistics.median(loosest_run_s),
            "grid": grid,
            "rows": summary["sweep"]["rows"],
            "videos": summary["videos"],
            "cache_bytes_per_video": summary["sweep"]["cache_bytes_per_video"],
        }
    )
    assert summary["sweep"]["rows"] == 9 and summary["computed"] == summary["videos"] == (limit or 3)
    if case.is_cuda and case.preset == "paper-random":
        assert ratio < RATIO_GOAL, f"a 3×3 sweep took {ratio:.2f}× one run (goal < {RATIO_GOAL})"
