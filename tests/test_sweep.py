"""Sweeps from cached evidence (cmsf.runs.sweep, cmsf.runs.cache) and the metric variants of ``cmsf eval``,
on the miniature AVSBench: every sweep row equals a separate ``cmsf eval --set`` run, a later sweep
reuses the cache without loading a model, and the variants equal direct computations."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from avsbench_fixture import make_avsbench, write_predictions
from click.testing import CliRunner

from cmsf import load_models
from cmsf.cli import commands as cli
from cmsf.io import avsbench
from cmsf.io.media import read_mask
from cmsf.metrics import VARIANTS, VariantTotals, score_video
from cmsf.models import loading
from cmsf.pipelines.per_frame import FrameCandidates
from cmsf.pipelines.settings import OwodBindSettings, SamBindSettings, make_settings
from cmsf.runs.cache import CachePart, TagCache, VideoCache, encode_cache, read_cache, write_cache
from cmsf.runs.sweep import FREE, LOWEST, RERUN, sweep_rows, sweep_rule
from cmsf.runs.sweep_passes import covers, model_passes
from cmsf.stages.binding import BindScoring

FIGURES = ("miou", "fscore", *VARIANTS)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_avsbench(tmp_path_factory.mktemp("avsbench"))


@pytest.fixture(scope="module")
def tiny():
    return load_models("tiny", device="cpu")


@pytest.fixture
def shared_models(monkeypatch, tiny):
    """``cmsf eval`` gets the module's tiny models (deterministic, so equal to a fresh load)
    instead of building them on every command; ``loads`` lists the presets asked for."""
    loads = []

    def load(preset, device=None, dtype=None, **overrides):
        loads.append(preset)
        return tiny

    monkeypatch.setattr(loading, "load_models", load)
    return loads


@pytest.fixture
def one_thread():
    """Bit-for-bit comparisons of a sweep with separate runs need batch-invariant kernels: a
    separate run decodes fewer SAM boxes (embeds fewer crops) at once than the sweep's loosest
    pass, and multi-threaded CPU matmuls (like GPU kernels) may round a mask logit at 0 the other
    way for another batch size (1 pixel in 250 000 seen with 2 threads). One thread is
    batch-invariant here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_models(monkeypatch):
    """``cmsf eval`` gets lazy tiny models; the test fails if any of their components loads."""
    lazy = load_models("tiny", device="cpu")
    monkeypatch.setattr(loading, "load_models", lambda *args, **kwargs: lazy)
    yield
    assert lazy.loaded == (), f"a model was loaded: {lazy.loaded}"


def run(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)
    return result


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def eval_args(mini, pipeline, out, *extra):
    return ("eval", "--root", mini.root, "--subset", "s4", "-p", pipeline, "--preset", "tiny", "--out", out, *extra)


def assert_row_equals_run(row: dict[str, str], summary: dict) -> None:
    """A sweep.csv row and a separate run's summary.json agree exactly, figure by figure."""
    expected = {"miou": summary["miou"], "fscore": summary["fscore"], **summary["variants"]}
    for name in FIGURES:
        value = None if row[name] == "" else float(row[name])
        assert value == expected[name], name


def check_rows_against_separate_runs(mini, pipeline, sweep_dir, tmp_path, fixed, keys, limit):
    rows = read_csv(sweep_dir / "sweep.csv")
    for index, row in enumerate(rows):
        sets = [f"--set={k}={v}" for k, v in {**fixed, **{k: row[k] for k in keys}}.items()]
        out = tmp_path / f"single{index}"
        result = run(*eval_args(mini, pipeline, out, "--limit", limit, *sets))
        assert result.exit_code == 0, result.output
        assert_row_equals_run(row, json.loads((out / "summary.json").read_text()))
        if row["best"]:  # the sweep folder holds the best row's run: same masks, same per_video.csv
            assert (out / "per_video.csv").read_text() == (sweep_dir / "per_video.csv").read_text()
            for png in (out / "pred_masks").rglob("*.png"):
                twin = sweep_dir / "pred_masks" / png.relative_to(out / "pred_masks")
                assert torch.equal(read_mask(png), read_mask(twin))
    return rows


# ---------------------------------------------------------------- OWOD-BIND: τ_BB × τ_BIND from one pass
def test_owod_bind_sweep_rows_equal_separate_runs_and_a_later_sweep_loads_no_model(
    mini, tmp_path, shared_models, tiny, monkeypatch, one_thread
):
    sweep_dir = tmp_path / "sweep"
    first = run(*eval_args(mini, "owod-bind", sweep_dir, "--limit", 1, "--sweep", "box_threshold=0.5"))
    assert first.exit_code == 0, first.output
    assert shared_models == ["tiny"]
    assert "oracle" in first.output and "WARNING" in first.output  # the test split: test-tuned
    cached = sorted((sweep_dir / "cache").rglob("*.npz"))
    assert len(cached) == 1
    scores = torch.cat([f.proposal_scores for p in cached for f in read_cache(p, _identity(sweep_dir), OwodBindSettings).parts[0].frames])
    middle, high = (float(scores.quantile(q)) for q in (0.4, 0.8))  # from the proposals cached at 0.5

    # a second sweep on the same folder: every setting is covered by the cache, no model loads
    lazy = load_models("tiny", device="cpu")
    monkeypatch.setattr(loading, "load_models", lambda *a, **k: lazy)
    grid = ("--sweep", f"box_threshold={middle!r},{high!r}", "--sweep", "bind_threshold=0.3,0.6")
    second = run(*eval_args(mini, "owod-bind", sweep_dir, "--limit", 1, *grid))
    assert second.exit_code == 0, second.output
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["computed"] == 0 and summary["reused"] == 1 and summary["device"] is None
    assert lazy.loaded == ()
    assert summary["sweep"]["rows"] == 4 and summary["sweep"]["test_tuned"] is True
    assert "oracle" in summary["sweep"]["note"]
    rows = read_csv(sweep_dir / "sweep.csv")
    assert [(float(r["box_threshold"]), float(r["bind_threshold"])) for r in rows] == [
        (middle, 0.3), (middle, 0.6), (high, 0.3), (high, 0.6)
    ]
    marks = [r["best"] for r in rows]
    assert sum(1 for m in marks if m) == 1 and "oracle" in next(m for m in marks if m)
    best = max(rows, key=lambda r: (float(r["miou"]), float(r["fscore"])))
    assert best["best"]
    assert summary["sweep"]["best"] == {"box_threshold": float(best["box_threshold"]), "bind_threshold": float(best["bind_threshold"])}

    # its report shows the grid as a heat map, under the oracle warning
    assert run("report", sweep_dir).exit_code == 0
    text = (sweep_dir / "report.html").read_text()
    assert 'class="banner oracle"' in text and "miou heat map" in text

    # each row equals a separate run with those settings, exactly
    monkeypatch.setattr(loading, "load_models", lambda *a, **k: tiny)
    check_rows_against_separate_runs(mini, "owod-bind", sweep_dir, tmp_path, {}, ("box_threshold", "bind_threshold"), 1)


def _identity(run_dir: Path) -> dict:
    """The identity a sweep's cache files carry: what its run.json says computed them."""
    run = json.loads((run_dir / "run.json").read_text())
    return {key: run[key] for key in ("pipeline", "preset", "dtype", "models")}


# ---------------------------------------------------------------- SAM-BIND: pred_iou_threshold is free
def test_sam_bind_pred_iou_threshold_is_free(mini, tmp_path, shared_models, one_thread):
    fixed = {"points_per_side": "2", "stability_score_threshold": "0.0"}
    sets = [f"--set={k}={v}" for k, v in fixed.items()]
    sweep_dir = tmp_path / "sweep"
    first = run(*eval_args(mini, "sam-bind", sweep_dir, "--limit", 1, *sets, "--sweep", "pred_iou_threshold=0.0"))
    assert first.exit_code == 0, first.output
    (path,) = (sweep_dir / "cache").rglob("*.npz")
    scores = torch.cat([f.proposal_scores for f in read_cache(path, _identity(sweep_dir), SamBindSettings).parts[0].frames])
    lowest, second = scores.sort().values[:2].tolist()  # random SAM predicts IoUs above 1 too
    middle = min((lowest + second) / 2, 0.999)
    assert lowest < middle  # the threshold drops a mask
    grid = ("--sweep", f"pred_iou_threshold=0.0,{middle!r}", "--sweep", "bind_threshold=0.0,0.4")
    second = run(*eval_args(mini, "sam-bind", sweep_dir, "--limit", 1, *sets, *grid))
    assert second.exit_code == 0, second.output
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["computed"] == 0 and summary["device"] is None  # the second sweep came from the cache
    check_rows_against_separate_runs(mini, "sam-bind", sweep_dir, tmp_path, fixed, ("pred_iou_threshold", "bind_threshold"), 1)


# ---------------------------------------------------------------- AT-GDINO-SAM: tags cached, grounding rerun
def test_at_gdino_sam_tag_threshold_reruns_grounding_only(mini, tmp_path, shared_models, monkeypatch, one_thread):
    import cmsf.pipelines.per_frame

    calls = {"tag": 0, "ground": 0}
    for name in ("tag_audio", "ground"):
        original = getattr(cmsf.pipelines.per_frame, name)

        def counted(*args, _original=original, _name=name.split("_")[0], **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(cmsf.pipelines.per_frame, name, counted)
    sweep_dir = tmp_path / "sweep"
    grid = ("--sweep", "tag_threshold=0.58,0.57", "--sweep", "box_threshold=0.0,0.9", "--sweep", "text_threshold=0.25,0.5")
    result = run(*eval_args(mini, "at-gdino-sam", sweep_dir, "--limit", 1, "--split", "val", *grid))
    assert result.exit_code == 0, result.output
    # one video: AST once (at the lowest tag threshold), GroundingDINO + SAM once per tag threshold
    assert calls == {"tag": 1, "ground": 2}
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["sweep"]["model_passes_per_video"] == 2 and summary["sweep"]["test_tuned"] is False
    assert "report it on test with --set tag_threshold=" in summary["sweep"]["note"]
    assert "oracle" not in result.output and "WARNING" not in result.output
    rows = read_csv(sweep_dir / "sweep.csv")
    assert len(rows) == 8 and sum(1 for r in rows if r["best"] == "best") == 1
    # text_threshold changes nothing the pipeline keeps
    by_setting = {(r["tag_threshold"], r["box_threshold"], r["text_threshold"]): r for r in rows}
    for (tag, box, text), row in by_setting.items():
        assert [row[f] for f in FIGURES] == [by_setting[(tag, box, "0.25")][f] for f in FIGURES]
    # a later sweep with a new tag threshold (above the cached lowest) grounds again, AST does not run
    again = run(*eval_args(mini, "at-gdino-sam", sweep_dir, "--limit", 1, "--split", "val", "--sweep", "tag_threshold=0.575"))
    assert again.exit_code == 0, again.output
    assert calls == {"tag": 1, "ground": 3}
    some = [r for r in rows if r["text_threshold"] == "0.25"]
    for index, row in enumerate(some):
        sets = [f"--set=tag_threshold={row['tag_threshold']}", f"--set=box_threshold={row['box_threshold']}"]
        out = tmp_path / f"single{index}"
        single = run(*eval_args(mini, "at-gdino-sam", out, "--limit", 1, "--split", "val", *sets))
        assert single.exit_code == 0, single.output
        assert_row_equals_run(row, json.loads((out / "summary.json").read_text()))


def test_at_sam3_sweep_caches_the_tags_and_equals_separate_runs(mini, tmp_path, shared_models, one_thread):
    sweep_dir = tmp_path / "sweep"
    grid = ("--sweep", "tag_threshold=0.58,0.57", "--set", "instance_threshold=0.0")
    result = run(*eval_args(mini, "at-sam3", sweep_dir, "--limit", 1, *grid))
    assert result.exit_code == 0, result.output
    assert json.loads((sweep_dir / "summary.json").read_text())["sweep"]["model_passes_per_video"] == 2
    check_rows_against_separate_runs(mini, "at-sam3", sweep_dir, tmp_path, {"instance_threshold": "0.0"}, ("tag_threshold",), 1)


# ---------------------------------------------------------------- the grid, the rules, the cache
def test_model_passes_group_by_the_keys_that_rerun():
    rows = sweep_rows(OwodBindSettings(), {"box_threshold": [0.4, 0.2], "bind_threshold": [0.5, 0.7]})
    (only,) = model_passes(rows)
    assert only.compute.box_threshold == 0.2 and only.rows == [0, 1, 2, 3]
    rows = sweep_rows(SamBindSettings(points_per_side=4), {"nms_threshold": [0.5, 0.7], "pred_iou_threshold": [0.8, 0.5]})
    passes = model_passes(rows)
    assert [(p.compute.nms_threshold, p.compute.pred_iou_threshold, p.rows) for p in passes] == [
        (0.5, 0.5, [0, 1]), (0.7, 0.5, [2, 3])
    ]
    assert all(p.compute.points_per_side == 4 for p in passes)
    assert sweep_rule("owod-bind", "box_threshold") == LOWEST and sweep_rule("sam-bind", "bind_mode") == FREE
    assert sweep_rule("sam-bind", "stability_score_threshold") == RERUN
    assert sweep_rule("owod-bind", "crop_background") == RERUN and sweep_rule("at-sam3", "instance_threshold") == RERUN
    assert sweep_rule("a-future-pipeline", "anything") == RERUN  # unknown keys rerun: always exact


def test_covers():
    computed = make_settings("owod-bind", {"box_threshold": 0.3})
    assert covers(computed, make_settings("owod-bind", {"box_threshold": 0.5, "bind_threshold": 0.1}))
    assert not covers(computed, make_settings("owod-bind", {"box_threshold": 0.2}))
    computed = make_settings("at-gdino-sam", {"tag_threshold": 0.4, "box_threshold": 0.1})
    assert covers(computed, make_settings("at-gdino-sam", {"tag_threshold": 0.4, "text_threshold": 0.9}))
    assert not covers(computed, make_settings("at-gdino-sam", {"tag_threshold": 0.5}))


def _random_candidates(generator, height, width, dim, count):
    return FrameCandidates(
        scoring=None if dim is None else BindScoring("calibrated", logit_scale=10.25, logit_bias=-3.125),
        boxes=torch.rand(count, 4, generator=generator) * 9,
        proposal_scores=torch.rand(count, generator=generator),
        masks=torch.rand(count, height, width, generator=generator) > 0.5,
        visual=None if dim is None else torch.randn(count, dim, generator=generator),
        audio=None if dim is None else torch.randn(dim, generator=generator),
        tags=[("Dog", 0.625), ("Bark, yelp", 0.5)] if dim is None else [],
        phrases=["dog"] * count if dim is None else [],
    )


@pytest.mark.parametrize("dim", [7, None])
def test_cache_round_trip_is_exact(tmp_path, dim):
    generator = torch.Generator().manual_seed(dim or 0)
    height, width = 5, 11  # H·W not a multiple of 8: the packed bits have a tail
    frames = [_random_candidates(generator, height, width, dim, count) for count in (3, 0, 2)]
    tags = TagCache(0.25, [[("Dog", 0.625)], [], [("Music", 0.3), ("Dog", 0.2500001)]])
    sources = {"sam": "tiny", "binder": "tiny"}
    part = CachePart(OwodBindSettings(box_threshold=0.1), frames)
    cache = VideoCache({"pipeline": "p"}, (height, width), 3, [part], tags, sources=sources)
    path = tmp_path / "guitar" / "v.npz"
    size = write_cache(path, cache)
    assert size == path.stat().st_size == len(encode_cache(cache))
    back = read_cache(path, {"pipeline": "p"}, OwodBindSettings)
    assert back is not None and back.frame_size == (height, width) and back.num_frames == 3
    assert back.tags == tags and back.parts[0].compute == OwodBindSettings(box_threshold=0.1)
    assert back.sources == sources
    for a, b in zip(frames, back.parts[0].frames):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.proposal_scores, b.proposal_scores)
        assert torch.equal(a.masks, b.masks) and a.tags == b.tags and a.phrases == b.phrases
        assert a.scoring == b.scoring
        if dim is None:
            assert b.visual is None and b.audio is None
        else:
            assert torch.equal(a.visual, b.visual) and torch.equal(a.audio, b.audio)
    assert read_cache(path, {"pipeline": "other"}, OwodBindSettings) is None  # another identity is not used
    path.write_bytes(path.read_bytes()[:100])
    assert read_cache(path, {"pipeline": "p"}, OwodBindSettings) is None  # a damaged file is recomputed, not an error


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--sweep", "bind_threshold=0.5,x"), "bind_threshold: expected a number"),
        (("--sweep", "bind_threshold=0.5,,0.7"), "comma-separated"),
        (("--sweep", "bind_threshold=0.5,1.5"), "bind_threshold"),
        (("--sweep", "nonsense=1,2"), "no setting 'nonsense'"),
        (("--set", "bind_threshold=0.5", "--sweep", "bind_threshold=0.5,0.6"), "both as a fixed setting and swept"),
        (("--sweep", "bind_threshold"), "KEY=VALUE"),
    ],
)
def test_bad_sweeps_are_usage_errors_before_anything_runs(mini, tmp_path, no_models, args, needle):
    out = tmp_path / "o"
    result = run(*eval_args(mini, "owod-bind", out, *args))
    assert result.exit_code == 2 and needle in result.output and "--sweep" in result.output
    assert not out.exists()


def test_sweep_needs_a_pipeline_and_refuses_a_plain_run_folder(mini, tmp_path, no_models):
    result = run("eval", "--root", mini.root, "--subset", "s4", "--pred-dir", tmp_path, "--sweep", "a=1", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--sweep" in result.output
    plain = tmp_path / "plain"
    (plain / "pred_masks").mkdir(parents=True)
    (plain / "pred_masks" / "x.png").write_bytes(b"")
    (plain / "run.json").write_text(json.dumps({"subset": "s4", "split": "test", "pipeline": "owod-bind", "preset": "tiny",
                                                "dtype": "float32", "models": {}, "settings": {}}))
    result = run(*eval_args(mini, "owod-bind", plain, "--sweep", "bind_threshold=0.5,0.6"))
    assert result.exit_code == 1 and "another run" in result.output


def test_help_says_which_keys_are_free():
    result = run("eval", "--help")
    text = " ".join(result.output.split())
    assert "--sweep" in text and "Free keys" in text and "bind_threshold" in text and "tag_threshold reruns" in text


# ---------------------------------------------------------------- the variants of cmsf eval --pred-dir
def test_pred_dir_variants_equal_direct_computation(mini, tmp_path):
    videos = mini.split("s4", "test")
    totals = VariantTotals()
    expected_rows = {}
    for index, video in enumerate(videos):
        pred = np.roll(video.gt, shift=6 * index, axis=2)  # shifted ground truth: partly right
        pred[1] = False  # a frame with nothing predicted
        write_predictions(tmp_path / "p", video, pred)
        scores = score_video(torch.from_numpy(pred), torch.from_numpy(video.gt))
        totals.add(scores)
        expected_rows[video.name] = scores
    result = run("eval", "--root", mini.root, "--subset", "s4", "--pred-dir", tmp_path / "p", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["variants"] == totals.variants()
    assert list(summary["variants"]) == list(VARIANTS)
    rows = read_csv(tmp_path / "o" / "per_video.csv")
    assert list(rows[0]) == ["video", "category", "miou", "fscore", "fscore_per_frame", "iou_pooled"]
    for row in rows:
        scores = expected_rows[row["video"]]
        assert float(row["miou"]) == scores.miou and float(row["fscore"]) == scores.fscore
        assert float(row["fscore_per_frame"]) == scores.fscore_per_frame
        assert float(row["iou_pooled"]) == scores.iou_pooled


def test_a_sweep_caches_every_readable_video_and_names_the_others(tmp_path, shared_models):
    """As a plain eval: one unreadable video does not stop the others (their caches are saved);
    it is listed in errors.json, no sweep.csv is written from part of the split, and a rerun
    after the repair computes only that video."""
    broken = make_avsbench(tmp_path / "avs")
    entries = avsbench.list_videos(broken.root, "s4", "test")
    wav = avsbench.audio_path(broken.root, "s4", entries[1])
    good = wav.read_bytes()
    wav.write_bytes(b"not a wav")
    out = tmp_path / "sweep"
    args = eval_args(broken, "owod-bind", out, "--sweep", "bind_threshold=0.3,0.7")
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "1 of 3 video(s) failed" in result.output and entries[1].name in result.output
    assert json.loads((out / "errors.json").read_text()).keys() == {entries[1].key}
    assert sorted(p.stem for p in (out / "cache").rglob("*.npz")) == [entries[0].name, entries[2].name]
    assert not (out / "sweep.csv").exists() and not (out / "summary.json").exists()
    wav.write_bytes(good)
    result = run(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["computed"] == 1 and summary["reused"] == 2 and not (out / "errors.json").exists()
