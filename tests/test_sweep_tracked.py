"""Sweeps of the tracked pipelines (cmsf.runs.sweep, cmsf.runs.cache_tracks) on the miniature
AVSBench: the tracks are cached once per model pass, every row equals a separate ``cmsf eval
--set`` run (figures, masks, evidence), a later sweep of the free keys loads no model, and a track
part of a cache file reads back exactly (or not at all, when its header does not fit its members)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from avsbench_fixture import make_avsbench
from test_sweep import _identity, check_rows_against_separate_runs, eval_args, read_csv, run

from cmsf import load_models
from cmsf.io import avsbench
from cmsf.io.media import read_mask
from cmsf.models import loading
from cmsf.pipelines.settings import OwodBindTrackedSettings, SamBindTrackedSettings
from cmsf.pipelines.tracked import VideoTracks
from cmsf.runs.cache import (
    CachePart,
    VideoCache,
    cache_path,
    encode_cache,
    read_cache,
    read_cache_index,
    write_cache,
)
from cmsf.runs.evaluate import split_entries
from cmsf.runs.sweep import FREE, RERUN, select_cached, sweep_rows, sweep_rule
from cmsf.runs.sweep_passes import covers, model_passes
from cmsf.stages.binding import BindScoring

KEYS = ("bind_threshold", "track_threshold", "temporal_window")


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_avsbench(tmp_path_factory.mktemp("avsbench"))


@pytest.fixture(scope="module")
def tiny():
    return load_models("tiny", device="cpu")


@pytest.fixture
def shared_models(monkeypatch, tiny):
    """``cmsf eval`` gets the module's tiny models (deterministic, so equal to a fresh load)."""
    monkeypatch.setattr(loading, "load_models", lambda *args, **kwargs: tiny)


@pytest.fixture
def one_thread():
    """One CPU thread: batch-invariant kernels, so a sweep's rows equal separate runs bit for bit
    (see tests/test_sweep.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tracked_rules_free_keys_and_passes():
    for settings in (OwodBindTrackedSettings, SamBindTrackedSettings):
        assert sweep_rule(settings.pipeline, "temporal_window") == FREE
        assert sweep_rule(settings.pipeline, "track_threshold") == FREE
        assert sweep_rule(settings.pipeline, "bind_threshold") == RERUN  # it decides the seeds
        assert sweep_rule(settings.pipeline, "track_merge_iou") == RERUN
    rows = sweep_rows(
        OwodBindTrackedSettings(),
        {"bind_threshold": [0.1, 0.2], "track_threshold": [0.3, 0.9], "temporal_window": [0, 3]},
    )
    passes = model_passes(rows)
    assert [p.rows for p in passes] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all(covers(p.compute, rows[i]) for p in passes for i in p.rows)
    assert not covers(passes[0].compute, rows[4])
    assert not covers(OwodBindTrackedSettings(box_threshold=0.3), OwodBindTrackedSettings(box_threshold=0.4))


def test_owod_bind_tracked_sweep_rows_equal_separate_runs_masks_and_evidence(
    mini, tmp_path, shared_models, tiny, monkeypatch, one_thread
):
    sweep_dir = tmp_path / "sweep"
    grid = ("--sweep", "bind_threshold=0.1,0.12", "--sweep", "track_threshold=0.14,0.15", "--sweep", "temporal_window=0,2")
    first = run(*eval_args(mini, "owod-bind-tracked", sweep_dir, "--limit", 2, *grid))
    assert first.exit_code == 0, first.output
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["sweep"]["rows"] == 8 and summary["sweep"]["model_passes_per_video"] == 2
    assert summary["computed"] == 2
    rows = check_rows_against_separate_runs(mini, "owod-bind-tracked", sweep_dir, tmp_path, {}, KEYS, 2)
    identity = _identity(sweep_dir)
    masks_of_rows = set()
    for entry in split_entries(mini.root, "s4", "test", 2):  # every row's masks, not only the best's
        cache = read_cache(cache_path(sweep_dir / "cache", entry.key), identity, OwodBindTrackedSettings)
        for index in range(len(rows)):
            single = tmp_path / f"single{index}"
            settings = OwodBindTrackedSettings.of(json.loads((single / "summary.json").read_text())["settings"])
            masks = select_cached("owod-bind-tracked", cache, settings).masks
            for frame, png in enumerate(avsbench.pred_mask_paths(single / "pred_masks", "s4", entry)):
                assert torch.equal(masks[frame], read_mask(png)), (entry.key, index, frame)
            masks_of_rows.add((entry.key, np.packbits(masks.numpy()).tobytes()))
    assert len(masks_of_rows) > 2 * 2  # the free keys change the masks: the checks above could fail
    best = next(index for index, row in enumerate(rows) if row["best"])
    for evidence in (sweep_dir / "evidence").rglob("*.json"):  # the best row's tracks as a run's
        twin = tmp_path / f"single{best}" / "evidence" / evidence.relative_to(sweep_dir / "evidence")
        assert json.loads(evidence.read_text()) == json.loads(twin.read_text())
    (path, *_) = sorted((sweep_dir / "cache").rglob("*.npz"))
    cache = read_cache(path, _identity(sweep_dir), OwodBindTrackedSettings)
    assert [part.compute.bind_threshold for part in cache.parts] == [0.1, 0.12]
    assert all(part.tracks is not None and part.frames == [] for part in cache.parts)
    assert run("report", sweep_dir).exit_code == 0  # the best row's strips show its tracks
    assert "tracks 1" in (sweep_dir / "report.html").read_text()


def test_a_later_sweep_of_free_keys_reads_the_cached_tracks_without_a_model(mini, tmp_path, shared_models, one_thread, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    sets = ("--set", "bind_threshold=0.1")
    first = run(*eval_args(mini, "owod-bind-tracked", sweep_dir, "--limit", 1, *sets, "--sweep", "track_threshold=0.2"))
    assert first.exit_code == 0, first.output
    lazy = load_models("tiny", device="cpu")
    monkeypatch.setattr(loading, "load_models", lambda *args, **kwargs: lazy)
    grid = ("--sweep", "track_threshold=0.13,0.145,0.15", "--sweep", "temporal_window=0,1,4")
    second = run(*eval_args(mini, "owod-bind-tracked", sweep_dir, "--limit", 1, *sets, *grid))
    assert second.exit_code == 0, second.output
    assert lazy.loaded == (), f"a model was loaded: {lazy.loaded}"
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["computed"] == 0 and summary["sweep"]["rows"] == 9
    assert len(read_csv(sweep_dir / "sweep.csv")) == 9


def test_sam_bind_tracked_sweep_rows_equal_separate_runs(mini, tmp_path, shared_models, one_thread):
    fixed = {"points_per_side": "2", "stability_score_threshold": "0.0", "bind_threshold": "0.0"}
    sets = [f"--set={k}={v}" for k, v in fixed.items()]
    sweep_dir = tmp_path / "sweep"
    grid = ("--sweep", "track_threshold=0.0,0.4,0.6", "--sweep", "temporal_window=0,2")
    result = run(*eval_args(mini, "sam-bind-tracked", sweep_dir, "--limit", 1, *sets, *grid))
    assert result.exit_code == 0, result.output
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["sweep"]["model_passes_per_video"] == 1 and summary["computed"] == 1
    check_rows_against_separate_runs(mini, "sam-bind-tracked", sweep_dir, tmp_path, fixed, KEYS[1:], 1)


# ---------------------------------------------------------------- the track part of a cache file
def _tracks(count: int, frames: int, height: int, width: int, dim: int, seed: int) -> VideoTracks:
    generator = torch.Generator().manual_seed(seed)
    return VideoTracks(
        frames=[],
        seeds=[(k % frames, k) for k in range(count)],
        seed_scores=[float("nan") if k == 0 else 0.1 * k + 1 / 3 for k in range(count)],
        merged=[[(frames - 1, 9)] if k == 1 else [] for k in range(count)],
        masks=torch.rand(count, frames, height, width, generator=generator) > 0.6,
        object_scores=torch.rand(count, frames, generator=generator),
        visual=torch.randn(count, frames, dim, generator=generator),
        audio=torch.randn(frames, dim, generator=generator),
        scoring=BindScoring("softmax", 14.285714, None),
    )


def _assert_same_tracks(got: VideoTracks, expected: VideoTracks) -> None:
    assert got.seeds == expected.seeds and got.merged == expected.merged
    assert np.array_equal(np.array(got.seed_scores), np.array(expected.seed_scores), equal_nan=True)
    for name in ("masks", "object_scores", "visual", "audio"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name
    assert got.scoring == expected.scoring


@pytest.mark.parametrize("count, dim", [(3, 8), (0, 8), (2, 0)])
def test_a_track_part_reads_back_exactly(tmp_path, count, dim):
    frames, height, width = 4, 5, 7  # 35 pixels: packed bits end inside a byte
    tracks = _tracks(count, frames, height, width, dim, seed=count)
    if dim == 0:  # no crop embedded in the pass's batch: the audio keeps its width
        tracks.audio = torch.randn(frames, 8)
    identity = {"pipeline": "owod-bind-tracked"}
    compute = OwodBindTrackedSettings(bind_threshold=0.2)
    cache = VideoCache(identity, (height, width), frames, [CachePart(compute, [], tracks)], sources={"a": "b"})
    path = tmp_path / "v.npz"
    write_cache(path, cache)
    back = read_cache(path, identity, OwodBindTrackedSettings)
    assert back is not None and back.parts[0].compute == compute and back.parts[0].frames == []
    _assert_same_tracks(back.parts[0].tracks, tracks)
    assert read_cache_index(path, identity, OwodBindTrackedSettings).computed == [compute]


def test_a_track_part_whose_header_does_not_fit_its_members_is_not_read(tmp_path):
    tracks = _tracks(2, 3, 4, 4, 8, seed=0)
    identity = {"pipeline": "owod-bind-tracked"}
    cache = VideoCache(identity, (4, 4), 3, [CachePart(OwodBindTrackedSettings(), [], tracks)])
    data = encode_cache(cache)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = json.loads(np.load(io.BytesIO(members["header.npy"])).tobytes().decode())
    for damage in ({"tracks": 3}, {"seeds": [[0, 0]]}, {"tracks": -1}):
        bad = json.loads(json.dumps(header))
        bad["parts"][0].update(damage)
        path = tmp_path / "bad.npz"
        arrays = {name.removesuffix(".npy"): np.load(io.BytesIO(raw)) for name, raw in members.items()}
        arrays["header"] = np.frombuffer(json.dumps(bad).encode(), dtype=np.uint8)
        with path.open("wb") as handle:
            np.savez_compressed(handle, **arrays)
        assert read_cache(path, identity, OwodBindTrackedSettings) is None, damage
        assert read_cache_index(path, identity, OwodBindTrackedSettings) is None, damage


def test_tracks_of_another_frame_count_are_refused_when_written():
    cache = VideoCache({}, (4, 4), 5, [CachePart(OwodBindTrackedSettings(), [], _tracks(1, 3, 4, 4, 8, seed=0))])
    with pytest.raises(ValueError, match="cache part 0: expected tracks over 5 frames"):
        encode_cache(cache)
