"""`cmsf eval --subset avss`: prediction folders and the tiny pipelines, end to end (offline)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from avss_fixture import CLASS_NAMES, make_avss, write_predictions
from avss_reference import official_figures
from click.testing import CliRunner
from PIL import Image
from stand_ins import as_stages

from cmsf.cli import commands as cli
from cmsf.io import avss
from cmsf.models.loading import load_models
from cmsf.pipelines.per_frame import PIPELINE_STAGES
from cmsf.runs.avss_eval import evaluate_avss
from cmsf.runs.evaluate import VideoError


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory):
    return make_avss(tmp_path_factory.mktemp("avss") / "release")


def run(*args: object):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=True)


def test_pred_dir_on_the_command_line(release, tmp_path: Path) -> None:
    pred = write_predictions(tmp_path / "pred", release.split("test"), size=(240, 360))
    result = run("eval", "--root", release.root, "--subset", "avss", "--pred-dir", pred, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "--resize-pred" in result.output
    result = run("eval", "--root", release.root, "--subset", "AVSS", "--pred-dir", pred, "--resize-pred",
                 "--out", tmp_path / "o")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    official = official_figures(release.root, "test", pred)
    assert abs(summary["miou"] - official["miou"]) <= 1e-6 and abs(summary["fscore"] - official["fscore"]) <= 1e-6
    assert f"mIoU {summary['miou']:.4f}" in result.output and summary["label_threshold"] is None


def test_usage_errors(release, tmp_path: Path) -> None:
    result = run("eval", "--root", release.root, "--subset", "avss", "--split", "nope", "--pred-dir", tmp_path,
                 "--out", tmp_path / "o")  # fmt: skip
    assert result.exit_code != 0 and "'nope' has no videos" in result.output
    result = run("eval", "--root", release.root, "--subset", "avss", "-p", "owod-bind-tracked", "--preset", "tiny",
                 "--sweep", "bind_threshold=0.5,0.6", "--out", tmp_path / "o")  # fmt: skip
    assert result.exit_code == 2 and "--pipeline" in result.output and "not swept yet" in result.output
    result = run("eval", "--root", tmp_path, "--subset", "avss", "--pred-dir", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "label2idx.json" in result.output
    result = run("eval", "--root", release.root, "--subset", "avss", "--pred-dir", tmp_path, "--label-threshold",
                 "0.2", "--out", tmp_path / "o")  # fmt: skip
    assert result.exit_code == 2 and "--label-threshold: only with --subset avss and --pipeline" in result.output


TINY_RUNS = {  # tiny random models: OWLv2's ~20 proposals' softmax stays far below 0.7, so keep some
    "owod-bind": ["--set", "bind_threshold=0.05"],
    "sam-bind": [],  # the tiny SAM's automatic masks: none on these frames, so no class
    "at-gdino-sam": [],
    "owod-bind-tracked": [],  # labelled frame by frame as a BIND pipeline; no track sounds here
}


@pytest.mark.parametrize("pipeline", list(TINY_RUNS))
def test_tiny_pipeline_writes_palette_masks_that_rescore_the_same(release, tmp_path: Path, pipeline: str) -> None:
    out = tmp_path / "run"
    result = run("eval", "--root", release.root, "--subset", "avss", "-p", pipeline, "--preset", "tiny",
                 *TINY_RUNS[pipeline], "--limit", "3", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["computed"] == 3 and "binary view" in result.output and summary["label_threshold"] == 0.0
    colours = {tuple(c) for c in avss.palette().tolist()}
    seen: set[int] = set()
    for video in avss.list_videos(release.root, "test")[:3]:
        seen |= set(avss.read_predictions(out / "pred_masks", video)[0].unique().tolist())
        paths = avss.pred_paths(out / "pred_masks", video)
        assert all(p.is_file() for p in paths)
        for k, path in enumerate(paths):
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
            assert rgb.shape == (224, 224, 3)
            assert {tuple(c) for c in rgb.reshape(-1, 3).tolist()} <= colours
            if k >= video.num_frames:
                assert not rgb.any()  # padding frames: background
    assert pipeline in ("sam-bind", "owod-bind-tracked") or seen - {0}, "some mask got a class"
    again = run("eval", "--root", release.root, "--subset", "avss", "--pred-dir", out, "--limit", "3",
                "--out", tmp_path / "again")  # fmt: skip
    assert again.exit_code == 0, again.output
    rescored = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert (rescored["miou"], rescored["fscore"], rescored["variants"]) == (
        summary["miou"], summary["fscore"], summary["variants"])  # fmt: skip
    resumed = run("eval", "--root", release.root, "--subset", "avss", "-p", pipeline, "--preset", "tiny",
                  *TINY_RUNS[pipeline], "--limit", "3", "--out", out)  # fmt: skip
    assert resumed.exit_code == 0 and json.loads((out / "summary.json").read_text())["computed"] == 0
    if pipeline == "owod-bind":  # another class decision is another run
        other = run("eval", "--root", release.root, "--subset", "avss", "-p", pipeline, "--preset", "tiny",
                    *TINY_RUNS[pipeline], "--label-threshold", "0.5", "--limit", "3", "--out", out)  # fmt: skip
        assert other.exit_code != 0 and "label_threshold" in other.output
        none = run("eval", "--root", release.root, "--subset", "avss", "-p", pipeline, "--preset", "tiny",
                   *TINY_RUNS[pipeline], "--label-threshold", "1", "--limit", "3", "--out", tmp_path / "none")
        assert none.exit_code == 0, none.output  # no score reaches 1: every mask dropped
        for video in avss.list_videos(release.root, "test")[:3]:
            assert not avss.read_predictions(tmp_path / "none" / "pred_masks", video)[0].any()


def test_report_of_an_avss_run(release, tmp_path: Path) -> None:
    pred = write_predictions(tmp_path / "pred", release.split("test"))
    scored = run("eval", "--root", release.root, "--subset", "avss", "--pred-dir", pred, "--out", tmp_path / "o")
    assert scored.exit_code == 0, scored.output
    result = run("report", tmp_path / "o")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "o" / "report.html").read_text()
    assert "AVSBench-semantic test" in page and "Per class" in page and "miou_present" in page
    with open(tmp_path / "o" / "per_class.csv") as f:
        seen = [r["name"] for r in csv.DictReader(f) if int(r["frames"])]
    unseen = [n for n in CLASS_NAMES if n not in seen]
    assert seen and unseen and all(f"<td>{n}</td>" in page for n in seen)
    assert not any(f"<td>{n}</td>" in page for n in unseen)  # classes never seen are left out
    assert page.count("<h3>") == 4 and page.count("data:image/jpeg") == 3 * (5 + 10 + 10 + 10)
    moved = run("report", tmp_path / "o", "--root", tmp_path)
    assert moved.exit_code == 0 and "pictures unavailable" in (tmp_path / "o" / "report.html").read_text()


class HalfPipeline:
    """A stand-in: the left half of every frame is foreground; the video whose first pixel is
    ``bad`` raises a ValueError (its data refused)."""

    def __init__(self) -> None:
        self.bad: int | None = None
        self.seen: list[int] = []

    def __call__(self, frames, waveform, sample_rate, models):
        first = int(frames[0, 0, 0, 0])
        self.seen.append(first)
        if first == self.bad:
            raise ValueError("simulated unreadable video")
        masks = torch.zeros(frames.shape[0], *frames.shape[-2:], dtype=torch.bool)
        masks[..., : frames.shape[-1] // 2] = True
        return SimpleNamespace(masks=masks)


def test_a_failing_video_is_listed_and_the_others_saved(release, tmp_path: Path, monkeypatch) -> None:
    stand_in = HalfPipeline()
    monkeypatch.setitem(PIPELINE_STAGES, "owod-bind", as_stages(stand_in))
    videos = avss.list_videos(release.root, "test")
    stand_in.bad = int(avss.load_video(release.root, videos[2]).frames[0, 0, 0, 0])
    models = load_models("tiny", device="cpu")  # lazy: the stand-in never loads them
    with pytest.raises(VideoError, match="1 of 5"):
        evaluate_avss(release.root, tmp_path / "o", pipeline="owod-bind", models=models)
    assert list(json.loads((tmp_path / "o" / "errors.json").read_text())) == [videos[2].uid]
    done = [v.uid for v in videos if avss.is_complete(tmp_path / "o" / "pred_masks", v)]
    assert done == [v.uid for k, v in enumerate(videos) if k != 2]
    stand_in.bad, stand_in.seen = None, []
    summary = evaluate_avss(release.root, tmp_path / "o", pipeline="owod-bind", models=models)
    assert len(stand_in.seen) == 1 and summary["computed"] == 1 and summary["videos"] == 5
    assert not (tmp_path / "o" / "errors.json").exists()
    pred, _ = avss.read_predictions(tmp_path / "o" / "pred_masks", videos[0])
    # every kept mask gets a class (threshold 0): the left half is one class per frame, the rest background
    assert all(len(pred[k, :, :112].unique()) == 1 and int(pred[k, 0, 0]) > 0 for k in range(5))
    assert pred[:5, :, 112:].eq(0).all() and pred[5:].eq(0).all()
    evidence = json.loads((tmp_path / "o" / "evidence" / f"{videos[0].uid}.json").read_text())
    assert [c[0] for c in evidence["labels"]["classes"]] == [int(pred[k, 0, 0]) for k in range(5)]
    assert summary["variants"]["binary_miou"] == pytest.approx(
        evaluate_avss(release.root, tmp_path / "again", pred_dir=tmp_path / "o")["variants"]["binary_miou"], abs=0)


def test_label_threshold_checked_before_anything_runs(release, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label_threshold"):
        evaluate_avss(release.root, tmp_path / "o", pipeline="owod-bind", models=load_models("tiny", device="cpu"),
                      label_threshold=1.5)  # fmt: skip
    assert not (tmp_path / "o").exists()
