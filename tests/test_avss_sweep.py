"""AVSS sweeps from the cache (cmsf.runs.avss_sweep) on the miniature AVSS release, tiny models:
every row (the pipeline's free keys × the class decision's label_threshold) equals a separate
``cmsf eval --subset avss --set … --label-threshold …`` run, figure by figure, and a later sweep
on the same folder loads no model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from avss_fixture import make_avss
from click.testing import CliRunner

from cmsf import load_models
from cmsf.cli import commands as cli
from cmsf.io import avss
from cmsf.models import loading
from cmsf.pipelines.settings import OwodBindSettings
from cmsf.runs.avss_sweep import AvssRow, cached_semantic, plan_avss_sweep, split_label_sweep
from cmsf.runs.cache import read_cache
from cmsf.runs.records import run_record
from cmsf.runs.sweep import select_cached

LIMIT = 2


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory):
    return make_avss(tmp_path_factory.mktemp("avss") / "release")


@pytest.fixture(scope="module")
def tiny():
    return load_models("tiny", device="cpu")


@pytest.fixture
def shared_models(monkeypatch, tiny):
    """``cmsf eval`` gets the module's tiny models (deterministic: equal to a fresh load)."""
    monkeypatch.setattr(loading, "load_models", lambda *args, **kwargs: tiny)


@pytest.fixture
def one_thread():
    """Row = separate run, bit for bit, needs batch-invariant kernels (see tests/test_sweep.py):
    the sweep reads a kept mask's embedding from the batch of every candidate, a separate run
    embeds the kept masks again in their own batch. One CPU thread is batch-invariant."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(*args: object):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)


def eval_args(release, pipeline: str, out: Path, *extra: object) -> tuple[object, ...]:
    return ("eval", "--root", release.root, "--subset", "avss", "-p", pipeline, "--preset", "tiny",
            "--limit", LIMIT, "--out", out, *extra)  # fmt: skip


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def assert_row_equals_run(row: dict[str, str], summary: dict) -> None:
    expected = {"miou": summary["miou"], "fscore": summary["fscore"], **summary["variants"]}
    assert set(expected) <= set(row)
    for name, value in expected.items():
        assert float(row[name]) == value, name


def check_rows(release, pipeline: str, sweep_dir: Path, tmp_path: Path, keys: tuple[str, ...]) -> list[dict]:
    """Each row of sweep.csv against a separate run with its settings; the best row's masks and
    per_class.csv are the sweep folder's."""
    rows = read_csv(sweep_dir / "sweep.csv")
    for index, row in enumerate(rows):
        options = [f"--label-threshold={row[k]}" if k == "label_threshold" else f"--set={k}={row[k]}" for k in keys]
        out = tmp_path / f"single{index}"
        result = run(*eval_args(release, pipeline, out, *options))
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert_row_equals_run(row, summary)
        record = json.loads((out / "run.json").read_text())  # the plain run's record (run_record "avss-eval")
        assert list(record)[:9] == ["kind", "subset", "split", "pipeline", "preset", "dtype", "settings", "models",
                                    "label_threshold"]  # fmt: skip
        assert record["root"] == summary["root"] == str(release.root.resolve())
        assert summary["pred_dir"] == str((out / "pred_masks").resolve())
        if row["best"]:
            for name in ("per_video.csv", "per_class.csv"):
                assert (out / name).read_text() == (sweep_dir / name).read_text(), name
            for video in avss.list_videos(release.root, "test")[:LIMIT]:
                mine = avss.read_predictions(sweep_dir / "pred_masks", video)[0]
                assert torch.equal(mine, avss.read_predictions(out / "pred_masks", video)[0])
                evidence = json.loads((sweep_dir / "evidence" / f"{video.uid}.json").read_text())
                single = json.loads((out / "evidence" / f"{video.uid}.json").read_text())
                assert evidence["labels"] == single["labels"] and evidence["frames"] == single["frames"]
    return rows


def test_owod_bind_rows_equal_separate_runs_and_a_later_sweep_loads_no_model(
    release, tmp_path, shared_models, monkeypatch, one_thread
) -> None:
    sweep_dir = tmp_path / "sweep"
    first = run(*eval_args(release, "owod-bind", sweep_dir, "--sweep", "bind_threshold=0.05"))
    assert first.exit_code == 0, first.output
    assert "oracle" in first.output and "WARNING" in first.output
    assert (sweep_dir / "class_texts.npz").is_file()
    scores = sorted(s for path in (sweep_dir / "evidence").glob("*.json")
                    for frame in json.loads(path.read_text())["labels"]["scores"] for s in frame)  # fmt: skip
    assert len(scores) >= 4, "the tiny run keeps some masks"
    middle = scores[len(scores) // 2]  # drops about half the kept masks

    lazy = load_models("tiny", device="cpu")  # a second sweep: cache and class texts cover it
    monkeypatch.setattr(loading, "load_models", lambda *args, **kwargs: lazy)
    grid = ("--sweep", "bind_threshold=0.05,0.1", "--sweep", f"label_threshold=0,{middle!r}")
    second = run(*eval_args(release, "owod-bind", sweep_dir, *grid))
    assert second.exit_code == 0, second.output
    assert lazy.loaded == ()
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["computed"] == 0 and summary["reused"] == LIMIT and summary["subset"] == "avss"
    assert summary["sweep"]["rows"] == 4 and summary["sweep"]["test_tuned"] is True
    assert summary["sweep"]["grid"] == {"bind_threshold": [0.05, 0.1], "label_threshold": [0.0, middle]}
    assert Path(summary["root"]).is_absolute() and Path(summary["pred_dir"]).is_absolute()
    rows = read_csv(sweep_dir / "sweep.csv")
    assert [(float(r["bind_threshold"]), float(r["label_threshold"])) for r in rows] == [
        (0.05, 0.0), (0.05, middle), (0.1, 0.0), (0.1, middle)
    ]  # fmt: skip
    assert {"miou_present", "miou_no_bg", "binary_miou"} <= set(rows[0])
    assert len({r["miou"] for r in rows}) > 1, "the grid changes the figures"
    best = next(r for r in rows if r["best"])
    assert "oracle" in best["best"] and summary["label_threshold"] == float(best["label_threshold"])
    record = json.loads((sweep_dir / "run.json").read_text())
    assert record["label_threshold"] == float(best["label_threshold"]) and Path(record["root"]).is_absolute()

    assert run("report", sweep_dir).exit_code == 0  # the grid as a heat map, under the oracle warning
    text = (sweep_dir / "report.html").read_text()
    assert 'class="banner oracle"' in text and "miou heat map" in text and "<h2>Per class</h2>" in text

    monkeypatch.setattr(loading, "load_models", lambda *args, **kwargs: lazy)  # the separate runs
    check_rows(release, "owod-bind", sweep_dir, tmp_path, ("bind_threshold", "label_threshold"))


def test_at_gdino_sam_rows_equal_separate_runs(release, tmp_path, shared_models, one_thread) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run(*eval_args(release, "at-gdino-sam", sweep_dir, "--split", "test", "--sweep",
                            "box_threshold=0.99995,0.99998,0.99999"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (sweep_dir / "class_texts.npz").exists()  # the tags' classes: no text tower
    rows = check_rows(release, "at-gdino-sam", sweep_dir, tmp_path, ("box_threshold",))
    assert len(rows) == 3


def test_selection_from_the_cache_keeps_the_candidates_rows(release, tmp_path, shared_models) -> None:
    sweep_dir = tmp_path / "sweep"
    assert run(*eval_args(release, "owod-bind", sweep_dir, "--sweep", "bind_threshold=0.05")).exit_code == 0
    identity = run_record("cache", "owod-bind", loading.load_models("tiny"))
    video = avss.list_videos(release.root, "test")[0]
    cache = read_cache(sweep_dir / "cache" / f"{video.uid}.npz", identity, OwodBindSettings)
    assert cache is not None
    for settings in (OwodBindSettings(box_threshold=0.7135, bind_threshold=0.05),
                     OwodBindSettings(box_threshold=0.75, bind_threshold=0.2)):  # fmt: skip
        plain = select_cached("owod-bind", cache, settings)
        result, semantic = cached_semantic("owod-bind", cache, AvssRow(settings, 0.0), _texts(sweep_dir))
        for mine, theirs in zip(result.frames, plain.frames):
            assert torch.equal(mine.boxes, theirs.boxes) and torch.equal(mine.kept, theirs.kept)
            assert torch.equal(mine.masks, theirs.masks) and torch.equal(mine.bind_scores, theirs.bind_scores)
        assert [len(c) for c in semantic.classes] == [int(f.kept.sum()) for f in plain.frames]


def _texts(sweep_dir: Path):
    from cmsf.runs.avss_sweep import _read_texts

    return _read_texts(sweep_dir / "class_texts.npz", run_record("cache", "owod-bind", loading.load_models("tiny")))


def test_label_sweep_parsing_and_refusals(tiny) -> None:
    rest, labels = split_label_sweep(["bind_threshold=0.5", "label_threshold=0.1,0.2,0.1"])
    assert rest == ["bind_threshold=0.5"] and labels == [0.1, 0.2]
    assert split_label_sweep(["box_threshold=0.5"]) == (["box_threshold=0.5"], None)
    with pytest.raises(ValueError, match="^label_threshold"):
        split_label_sweep(["label_threshold=0.1,2"])
    with pytest.raises(ValueError, match="^label_threshold"):
        split_label_sweep(["label_threshold=x"])
    with pytest.raises(ValueError, match="^label_threshold: given both"):
        plan_avss_sweep("owod-bind", {}, [0.1], None, tiny, label_threshold=0.2)
    with pytest.raises(ValueError, match="^label_threshold: only the BIND"):
        plan_avss_sweep("at-gdino-sam", {}, [0.1], None, tiny)
    with pytest.raises(ValueError, match="^pipeline: .*not swept yet"):
        plan_avss_sweep("owod-bind-tracked", {}, [0.1], None, tiny)
    with pytest.raises(ValueError, match="^sweep: expected at least one"):
        plan_avss_sweep("owod-bind", {}, None, None, tiny)
    plan = plan_avss_sweep("owod-bind", {"bind_threshold": [0.5, 0.6]}, [0.0, 0.3], None, tiny)
    assert [(r.settings.bind_threshold, r.label_threshold) for r in plan.rows] == [
        (0.5, 0.0), (0.5, 0.3), (0.6, 0.0), (0.6, 0.3)
    ]  # fmt: skip
    assert plan.keys == ["bind_threshold", "label_threshold"] and len(plan.sweep.passes) == 1
    fixed = plan_avss_sweep("owod-bind", {"bind_threshold": [0.5, 0.6]}, None, None, tiny, label_threshold=0.2)
    assert [r.label_threshold for r in fixed.rows] == [0.2, 0.2] and fixed.keys == ["bind_threshold"]
    assert fixed.sweep.fixed == {"label_threshold": 0.2}


def test_usage_errors_before_anything_runs(release, tmp_path) -> None:
    args = ("eval", "--root", release.root, "--subset", "avss", "--preset", "tiny", "--out", tmp_path / "o")
    result = run(*args, "-p", "owod-bind", "--sweep", "label_threshold=0.1,3")
    assert result.exit_code == 2 and "--sweep" in result.output and "label_threshold" in result.output
    result = run(*args, "-p", "owod-bind", "--sweep", "label_threshold=0.1", "--label-threshold", "0.2")
    assert result.exit_code == 2 and "given both" in result.output
    result = run(*args, "-p", "owod-bind-tracked", "--sweep", "track_threshold=0.1,0.2")  # S4 / MS3 only, yet
    assert result.exit_code == 2 and "--pipeline" in result.output and "not swept yet" in result.output
    assert not (tmp_path / "o").exists()
