"""The tracked pipelines through the command: ``cmsf segment`` on the demo clip with tracks in its
evidence, ``cmsf eval`` on the miniature S4 split with a saved SAM 2.1 video checkpoint as
``--model tracker=DIR``, the runner's batches equal to the library on each video alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from avsbench_fixture import make_avsbench
from click.testing import CliRunner

from cmsf.cli import commands as cli
from cmsf.models.random_families import FAMILY_SEEDS, family_config, family_processor, soften_family
from cmsf.models.random_models import build_random
from cmsf.runs.track_pictures import TRACK_COLORS, draw_tracks

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.mp4"
LOOSE = ("--set", "bind_threshold=0.1", "--set", "track_threshold=0.3", "--set", "temporal_window=2")


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture(scope="module")
def tracker_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sam2_video")
    config = family_config("tracker", "sam2_video", "tiny")
    model = build_random(lambda: transformers.Sam2VideoModel(config), FAMILY_SEEDS["tracker"], torch.device("cpu"))
    soften_family("sam2_video", model)
    model.save_pretrained(folder)
    family_processor("tracker", "sam2_video", "tiny", config).save_pretrained(folder)
    return folder


def test_segment_demo_owod_bind_tracked_writes_tracks(tmp_path):
    out = tmp_path / "out"
    result = run("segment", DEMO, "-p", "owod-bind-tracked", "--preset", "tiny", "--out", out, *LOOSE)
    assert result.exit_code == 0, result.output
    evidence = json.loads((out / "evidence.json").read_text())
    assert evidence["pipeline"] == "owod-bind-tracked"
    assert evidence["settings"]["temporal_window"] == 2 and evidence["settings"]["track_threshold"] == 0.3
    tracks = evidence["tracks"]
    assert tracks and all(len(track["boxes"]) == len(evidence["frames"]) for track in tracks)
    for frame in evidence["frames"]:
        assert len(frame["boxes"]) == len(tracks)
    assert len(list(out.glob("mask_*.png"))) == len(evidence["frames"])


def test_segment_refuses_an_unknown_tracked_setting(tmp_path):
    args = ("segment", DEMO, "-p", "sam-bind-tracked", "--preset", "tiny", "--out", tmp_path)
    result = run(*args, "--set", "box_threshold=0.3")
    assert result.exit_code == 2 and "box_threshold" in result.output


def test_eval_s4_with_a_saved_tracker(tmp_path, tracker_folder):
    mini = make_avsbench(tmp_path / "avsbench")
    out = tmp_path / "run"
    result = run(
        "eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind-tracked", "--preset", "tiny",
        "--model", f"tracker={tracker_folder}", "--out", out, *LOOSE,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 3 and summary["computed"] == 3
    assert str(tracker_folder) in json.loads((out / "run.json").read_text())["models"]["tracker"]
    assert summary["settings"]["track_threshold"] == 0.3
    evidence = [json.loads(path.read_text()) for path in sorted((out / "evidence").rglob("*.json"))]
    assert len(evidence) == 3 and all("tracks" in document.get("result", document) for document in evidence)
    assert 0.0 <= summary["miou"] <= 1.0
    assert len(list((out / "pred_masks").rglob("*.png"))) == 15
    report = run("report", out)
    assert report.exit_code == 0, report.output
    page = (out / "report.html").read_text()
    assert '<td class="label">tracks</td>' in page


def test_draw_tracks_thick_where_sounding_thin_where_silent_none_where_absent():
    frame = torch.zeros(3, 40, 80, dtype=torch.uint8)
    tracks = [
        {"boxes": [[10, 10, 30, 30], [10, 10, 30, 30]], "sounding": [True, False]},
        {"boxes": [[0, 0, 0, 0], [40, 5, 70, 35]], "sounding": [False, True]},
    ]
    first = draw_tracks(frame, tracks, 0, (20, 40))  # evidence at half the size: boxes scale by 2
    color = torch.tensor(TRACK_COLORS[0], dtype=torch.uint8)
    assert torch.equal(first[:, 20, 20], color) and torch.equal(first[:, 22, 22], color)  # 3 px from (20, 20)
    assert not first[:, 30, 30].any() and not first[:, :, 60:].any()  # inside, and the absent track
    second = draw_tracks(frame, tracks, 1, (40, 80))
    assert torch.equal(second[:, 10, 10], color) and not second[:, 11, 11].any()  # 1 px: silent
    assert torch.equal(second[:, 5, 40], torch.tensor(TRACK_COLORS[1], dtype=torch.uint8))


def test_segment_many_batches_tracked_videos_as_each_alone(tmp_path):
    """Two clips in one batch (the runner's run_videos): each gets the tracks and masks that
    cmsf segment gives it alone."""
    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for clip in clips:
        clip.write_bytes(DEMO.read_bytes())
    out = tmp_path / "many"
    result = run("segment-many", *clips, "-p", "owod-bind-tracked", "--preset", "tiny", "--device", "cpu",
                 "--frames-per-batch", "10", "--out", out, *LOOSE)  # fmt: skip
    assert result.exit_code == 0, result.output
    alone = run("segment", clips[0], "-p", "owod-bind-tracked", "--preset", "tiny", "--device", "cpu",
                "--out", tmp_path / "alone", *LOOSE)  # fmt: skip
    assert alone.exit_code == 0, alone.output
    expected = json.loads((tmp_path / "alone" / "evidence.json").read_text())
    for name in ("a", "b"):
        got = json.loads(next((out).glob(f"{name}*/evidence.json")).read_text())
        assert [(t["seed_frame"], t["seed_candidate"], t["merged"]) for t in got["tracks"]] == [
            (t["seed_frame"], t["seed_candidate"], t["merged"]) for t in expected["tracks"]
        ]
        assert [t["boxes"] for t in got["tracks"]] == [t["boxes"] for t in expected["tracks"]]
        for track, reference in zip(got["tracks"], expected["tracks"]):
            assert track["bind_scores"] == pytest.approx(reference["bind_scores"], abs=1e-4)
        assert [f["mask_pixels"] for f in got["frames"]] == [f["mask_pixels"] for f in expected["frames"]]
