"""The ``cmsf`` command: segment and eval, end to end (tiny preset, offline) and with a stand-in
pipeline where a test is about bookkeeping (scoring, resuming, atomic writes) rather than models."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from avsbench_fixture import FRAMES, SIZE, make_avsbench, tone, write_png, write_predictions, write_video, write_wav
from click.testing import CliRunner
from PIL import Image
from stand_ins import as_stages

from cmsf.cli import commands as cli
from cmsf.cli import options as cli_options
from cmsf.io import avsbench
from cmsf.io.avsbench import VideoEntry
from cmsf.io.files import TEMP_SUFFIX
from cmsf.models import loading
from cmsf.models.loading import load_models
from cmsf.pipelines.per_frame import PIPELINE_STAGES, PIPELINES
from cmsf.pipelines.settings import OwodBindSettings, SamBindSettings, make_settings
from cmsf.runs import evaluate as evaluate_module
from cmsf.runs.evaluate import MAX_LISTED, missing_predictions_message


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_avsbench(tmp_path_factory.mktemp("avsbench"))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 3 s, 10 fps, 96×128 video with a mono 22.05 kHz track."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(30)]
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", fps=10, frames=frames, audio_seconds=3)


def run(*args: str):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=True)


def no_temporaries(folder: Path) -> bool:
    return not list(folder.rglob(f"*{TEMP_SUFFIX}"))


# ---------------------------------------------------------------- a stand-in pipeline


class FakeResult:
    def __init__(self, masks: torch.Tensor):
        self.masks = masks

    def to_json(self):
        return {"pipeline": "fake", "mask_pixels": [int(m.sum()) for m in self.masks]}


class FakePipeline:
    """Predicts the left ``fraction`` of every frame; records the first pixel of each video.

    ``cmsf segment`` calls it on its video (``PIPELINES[name]``), ``cmsf eval`` on each video of a
    batch through the dataset runner (``PIPELINE_STAGES[name]``, see ``stand_ins.as_stages``).
    ``fail_on_call``: the n-th video seen raises (a bug in a pipeline), when it is seen again too."""

    def __init__(self, fraction: float = 0.5, fail_on_call: int | None = None):
        self.fraction = fraction
        self.calls: list[int] = []
        self.fail_on_call = fail_on_call
        self._failing: int | None = None

    def __call__(self, frames, waveform, sample_rate, models, *, settings=None, **keyword_settings):
        first = int(frames[0, 0, 0, 0])
        self.calls.append(first)
        if self.fail_on_call is not None and (len(self.calls) == self.fail_on_call or first == self._failing):
            self._failing = first
            raise RuntimeError("simulated crash")
        masks = torch.zeros(frames.shape[0], *frames.shape[-2:], dtype=torch.bool)
        masks[..., : int(frames.shape[-1] * self.fraction)] = True
        return FakeResult(masks)

    def install(self, monkeypatch, name: str = "owod-bind") -> None:
        monkeypatch.setitem(PIPELINES, name, self)
        monkeypatch.setitem(PIPELINE_STAGES, name, as_stages(self))


def FakeModels():
    """Real, lazily loaded tiny models: the stand-in pipeline never touches them."""
    return load_models("tiny", device="cpu")


@pytest.fixture
def fake(monkeypatch):
    pipeline = FakePipeline()
    loads = []
    pipeline.install(monkeypatch)

    built = []

    def load(preset, device=None, dtype=None, **overrides):
        loads.append(preset)
        built.append(FakeModels())
        return built[-1]

    monkeypatch.setattr(loading, "load_models", load)
    pipeline.loads = loads  # the presets asked for (lazy models built)
    pipeline.models = built
    return pipeline


# ---------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["segment"], ["eval"]])
def test_help_says_what_and_shows_an_example(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "cmsf " in result.output


# ---------------------------------------------------------------- segment


def test_segment_tiny_end_to_end(video, tmp_path):
    out = tmp_path / "out"
    result = run("segment", video, "--pipeline", "owod-bind", "--preset", "tiny", "--out", out)
    assert result.exit_code == 0, result.output
    assert "3 frames" in result.stdout and str(out) in result.stdout
    evidence = json.loads((out / "evidence.json").read_text())
    assert len(evidence["frames"]) == 3 and evidence["frame_size"] == [96, 128]
    assert evidence["pipeline"] == "owod-bind" and evidence["preset"] == "tiny"
    assert [frame["time_s"] for frame in evidence["frames"]] == pytest.approx([0.9, 1.9, 2.9])
    assert [frame["index"] for frame in evidence["frames"]] == [0, 1, 2]
    for t in range(3):
        with Image.open(out / f"mask_{t:04d}.png") as mask:
            assert mask.mode == "L" and mask.size == (128, 96)
            array = np.asarray(mask)
        assert set(np.unique(array).tolist()) <= {0, 255}
        assert evidence["frames"][t]["mask"] == f"mask_{t:04d}.png"
        assert evidence["frames"][t]["coverage"] == pytest.approx((array > 0).mean())
        with Image.open(out / f"overlay_{t:04d}.png") as overlay:
            assert overlay.mode == "RGB" and overlay.size == (128, 96)
    assert no_temporaries(out)


DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.mp4"


def test_shipped_demo_clip():
    assert DEMO.stat().st_size < 500 * 1024
    from cmsf.io.media import read_video

    clip = read_video(DEMO)
    assert clip.frames.shape == (5, 3, 224, 224) and clip.waveform.shape == (1, 80_000)
    assert float(clip.waveform.abs().max()) > 0.1  # it speaks


def test_segment_demo_as_a_subprocess(tmp_path):
    """The README's offline smoke run, as a real process (the console script when installed)."""
    out = tmp_path / "out"
    script = shutil.which("cmsf")
    command = [script] if script else [sys.executable, "-m", "cmsf.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [*command, "segment", str(DEMO), "--pipeline", "owod-bind", "--preset", "tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("5 frames")
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.glob("mask_*.png")) == [f"mask_{t:04d}.png" for t in range(5)]
    assert len(list(out.glob("overlay_*.png"))) == 5
    assert json.loads((out / "evidence.json").read_text())["frame_size"] == [224, 224]


def test_module_entry_point_reports_usage_errors_with_status_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cmsf.cli", "segment", str(tmp_path / "none.mp4"), "-p", "owod-bind", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "none.mp4" in done.stderr and "Traceback" not in done.stderr


def test_segment_frame_folder_with_audio(fake, tmp_path):
    folder = tmp_path / "frames"
    for k in (1, 2, 10):
        write_png(folder / f"f_{k}.png", np.full((20, 30, 3), k, np.uint8))
    audio = write_wav(tmp_path / "a.wav", tone(3.0, 16_000))
    out = tmp_path / "out"
    result = run("segment", folder, "--audio", audio, "-p", "owod-bind", "--out", out)
    assert result.exit_code == 0, result.output
    assert fake.calls == [1]  # one video, frames in natural order: f_1 first
    assert fake.loads == ["paper"]
    mask = np.asarray(Image.open(out / "mask_0002.png"))
    assert mask.shape == (20, 30) and (mask[:, :15] == 255).all() and (mask[:, 15:] == 0).all()
    overlay = np.asarray(Image.open(out / "overlay_0002.png"))
    assert overlay[0, 0].tolist() == [132, 5, 5] and overlay[0, 20].tolist() == [10, 10, 10]
    assert "50.0% of pixels" in result.stdout


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["missing.mp4", "-p", "owod-bind"], 2, "missing.mp4"),
        (["{video}", "-p", "nope"], 2, "nope"),
        (["{video}"], 2, "--pipeline"),
        (["{video}", "-p", "owod-bind", "--num-frames", "3", "--fps", "2"], 2, "at most one"),
        (["{video}", "-p", "owod-bind", "--num-frames", "0"], 2, "--num-frames"),
        (["{video}", "-p", "owod-bind", "--set", "tau=0.3"], 2, "bind_threshold"),
        (["{video}", "-p", "owod-bind", "--set", "bind_threshold=high"], 2, "expected a number"),
        (["{video}", "-p", "owod-bind", "--audio", "{video}"], 2, "--audio"),
        (["{video}", "-p", "owod-bind", "--preset", "huge"], 2, "huge"),
        (["{video}", "-p", "owod-bind", "--dtype", "float16"], 2, "float16"),
        (["{video}", "-p", "owod-bind", "--device", "warp-drive"], 2, "warp-drive"),
    ],
)
def test_segment_usage_errors(video, tmp_path, args, code, needle):
    args = [a.replace("{video}", str(video)) for a in args]
    result = run("segment", *args, "--out", tmp_path / "out")
    assert result.exit_code == code, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_segment_data_errors(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 50)
    result = run("segment", broken, "-p", "owod-bind", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "broken.mp4" in result.output and "not a readable" in result.output
    silent = write_video(tmp_path / "silent.mp4", audio=False)
    result = run("segment", silent, "-p", "owod-bind", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "silent.mp4" in result.output and "no audio track" in result.output
    folder = tmp_path / "frames"
    write_png(folder / "f_1.png", np.zeros((4, 4, 3), np.uint8))
    result = run("segment", folder, "-p", "owod-bind", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "Invalid value for --audio" in result.output, result.output  # a usage error
    assert "no audio was found" in result.output and str(folder) in result.output
    assert not (tmp_path / "o").exists()
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- eval --pred-dir


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_perfect_predictions_score_one(mini, tmp_path):
    preds = tmp_path / "pred_masks"
    for video in mini.split("s4", "test"):
        write_predictions(preds, video, video.gt)
    result = run("eval", "--root", mini.root, "--subset", "s4", "--pred-dir", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["miou"] == pytest.approx(1.0, abs=1e-6) and summary["fscore"] == pytest.approx(1.0, abs=1e-6)
    assert summary["videos"] == 3 and summary["subset"] == "s4" and summary["split"] == "test"
    assert summary["pipeline"] is None and summary["preset"] is None
    rows = _read_csv(tmp_path / "o" / "per_video.csv")
    assert [(r["video"], r["category"]) for r in rows] == [("s4_a", "dog"), ("s4_b", "guitar"), ("s4_c", "dog")]
    assert "mIoU 1.0000  F-score 1.0000" in result.stdout


def _empty_prediction_fscore(gt: np.ndarray) -> float:
    """By hand: an all-empty prediction is 0 everywhere; at threshold 0 every pixel counts as
    positive (pred >= 0), so P = |GT| / N and R = 1; at every other threshold nothing is positive
    and F = 0. The video's F-score is the mean over non-empty frames of 1.3·P / (0.3·P + 1)."""
    values = []
    for frame in gt:
        if frame.any():
            p = frame.sum() / frame.size
            values.append(1.3 * p / (0.3 * p + 1))
    return float(np.mean(values))


def test_eval_empty_and_half_right_predictions(mini, tmp_path):
    videos = mini.split("s4", "test")
    empty_dir, half_dir = tmp_path / "empty", tmp_path / "half"
    for video in videos:
        write_predictions(empty_dir, video, np.zeros_like(video.gt))
        if video.name == "s4_a":
            half = video.gt.copy()
            for k in range(FRAMES):  # keep the top half of each box's rows: IoU 1/2, P 1, R 1/2
                rows = np.nonzero(half[k].any(axis=1))[0]
                half[k, rows[len(rows) // 2] :] = False
            write_predictions(half_dir, video, half)
        else:
            write_predictions(half_dir, video, video.gt)

    result = run("eval", "--root", mini.root, "--subset", "s4", "--pred-dir", empty_dir, "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    rows = {r["video"]: r for r in _read_csv(tmp_path / "e" / "per_video.csv")}
    # IoU of an empty prediction: 0 on frames with an object, ~1 on frames without (s4_c frame 3)
    assert float(rows["s4_a"]["miou"]) == 0.0 and float(rows["s4_b"]["miou"]) == 0.0
    assert float(rows["s4_c"]["miou"]) == pytest.approx(1 / 5, abs=1e-6)
    for video in videos:
        assert float(rows[video.name]["fscore"]) == pytest.approx(_empty_prediction_fscore(video.gt), rel=1e-5)
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["miou"] == pytest.approx((0 + 0 + 0.2) / 3, abs=1e-6)

    result = run("eval", "--root", mini.root, "--subset", "s4", "--pred-dir", half_dir, "--out", tmp_path / "h")
    assert result.exit_code == 0, result.output
    rows = {r["video"]: r for r in _read_csv(tmp_path / "h" / "per_video.csv")}
    assert float(rows["s4_a"]["miou"]) == pytest.approx(0.5, abs=1e-6)
    assert float(rows["s4_a"]["fscore"]) == pytest.approx(1.3 * 0.5 / (0.3 + 0.5), rel=1e-5)
    summary = json.loads((tmp_path / "h" / "summary.json").read_text())
    assert summary["miou"] == pytest.approx((0.5 + 1 + 1) / 3, abs=1e-6)
    assert summary["fscore"] == pytest.approx((0.8125 + 1 + 1) / 3, rel=1e-5)


def test_eval_ms3_pred_dir_and_train_split_with_one_mask(mini, tmp_path):
    for video in mini.videos["ms3"]:
        write_predictions(tmp_path / "ms3", video, video.gt)
    result = run("eval", "--root", mini.root, "--subset", "MS3", "--pred-dir", tmp_path / "ms3", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    rows = _read_csv(tmp_path / "o" / "per_video.csv")
    assert list(rows[0]) == ["video", "miou", "fscore", "fscore_per_frame", "iou_pooled"] and len(rows) == 2
    # S4 train: one ground-truth mask, scored against prediction 0 only
    video = mini.split("s4", "train")[0]
    preds = np.zeros((FRAMES, SIZE, SIZE), bool)
    preds[0] = video.gt[0]
    write_predictions(tmp_path / "s4", video, preds)
    result = run("eval", "--root", mini.root, "--subset", "s4", "--split", "train", "--pred-dir", tmp_path / "s4", "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["miou"] == pytest.approx(1.0, abs=1e-6)


def test_eval_lists_missing_predictions(mini, tmp_path):
    videos = mini.split("s4", "test")
    write_predictions(tmp_path, videos[0], videos[0].gt)
    (tmp_path / "dog" / "s4_a" / "s4_a_4.png").unlink()
    result = run("eval", "--root", mini.root, "--subset", "s4", "--pred-dir", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert "11 prediction file(s) missing" in result.output  # s4_a_4 + 5 of s4_b + 5 of s4_c
    assert "s4_a_4.png" in result.output and "s4_c_4.png" in result.output
    assert not (tmp_path / "o" / "summary.json").exists()


def test_eval_missing_list_is_capped(mini, tmp_path):
    # no predictions at all for 3 videos: 15 files, all listed; 25 files: 20 listed and a count
    result = run("eval", "--root", mini.root, "--subset", "s4", "--pred-dir", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "15 prediction file(s) missing" in result.output
    assert result.output.count(".png") == 15 + 1  # every path, and the layout's {video}_{k}.png
    many = [VideoEntry(f"v{i}", "test") for i in range(5)]
    message = missing_predictions_message(avsbench.missing_pred_masks(tmp_path, "ms3", many), tmp_path, "ms3")
    assert message.count(".png") == MAX_LISTED + 1  # 20 paths + the layout's {video}_{k}.png
    assert "and 5 more" in message


def test_eval_refuses_or_resizes_other_sizes(mini, tmp_path):
    for video in mini.split("ms3", "test"):
        big = video.gt.repeat(2, axis=1).repeat(2, axis=2)  # 448×448: nearest resizing recovers the GT
        write_predictions(tmp_path, video, big)
    result = run("eval", "--root", mini.root, "--subset", "ms3", "--pred-dir", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "ms3_a_0.png" in result.output and "(448, 448)" in result.output
    result = run("eval", "--root", mini.root, "--subset", "ms3", "--pred-dir", tmp_path, "--resize-pred", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["miou"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--subset", "s4"], 2, "exactly one"),
        (["--subset", "s4", "-p", "owod-bind", "--pred-dir", "."], 2, "exactly one"),
        (["--subset", "s5", "--pred-dir", "."], 2, "s5"),
        (["--subset", "s4", "--pred-dir", ".", "--preset", "tiny"], 2, "--preset"),
        (["--subset", "s4", "--split", "dev", "--pred-dir", "."], 2, "Invalid value for --split: 'dev' has no videos"),
        (["--subset", "s4", "--split", "Val", "--pred-dir", "."], 2, "it has test, train, val"),
        (["--subset", "ms3", "--split", "Val", "-p", "owod-bind"], 2, "Invalid value for --split: 'Val'"),
    ],
)
def test_eval_usage_and_data_errors(mini, tmp_path, args, code, needle):
    result = run("eval", "--root", mini.root, *args, "--out", tmp_path / "o")
    assert result.exit_code == code, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_eval_bad_root(tmp_path):
    result = run("eval", "--root", tmp_path, "--subset", "ms3", "--pred-dir", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "ms3_meta_data.csv" in result.output


# ---------------------------------------------------------------- eval --pipeline: resume, atomicity


def test_eval_resumes_only_incomplete_videos(mini, tmp_path, fake):
    out = tmp_path / "run"
    preds = out / "pred_masks"
    s4_a, s4_b, s4_c = (VideoEntry(n, "test", c) for n, c in (("s4_a", "dog"), ("s4_b", "guitar"), ("s4_c", "dog")))
    done = torch.zeros(FRAMES, SIZE, SIZE, dtype=torch.bool)
    done[:, :10] = True  # a pattern the stand-in pipeline never produces
    avsbench.write_pred_masks(preds, "s4", s4_a, done)
    partial = avsbench.write_pred_masks(preds, "s4", s4_b, done)
    for path in partial[3:]:
        path.unlink()  # s4_b was interrupted after 3 of its 5 masks

    result = run("eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--out", out)
    assert result.exit_code == 0, result.output
    assert len(fake.calls) == 2 and fake.loads == ["paper"]  # s4_b and s4_c, models loaded once
    assert torch.equal(avsbench.read_pred_masks(preds, "s4", s4_a), done)  # untouched
    assert not torch.equal(avsbench.read_pred_masks(preds, "s4", s4_b), done)  # recomputed
    assert avsbench.is_complete(preds, "s4", s4_c)
    assert (out / "evidence" / "guitar" / "s4_b.json").is_file()
    first = json.loads((out / "summary.json").read_text())
    assert first["computed"] == 2 and first["reused"] == 1 and first["pipeline"] == "owod-bind"

    # a second run finds everything done: nothing is computed (its lazy models stay unloaded), the
    # scores are the same
    result = run("eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--out", out)
    assert result.exit_code == 0, result.output
    assert len(fake.calls) == 2 and fake.loads == ["paper", "paper"]
    second = json.loads((out / "summary.json").read_text())
    assert (second["miou"], second["fscore"], second["computed"]) == (first["miou"], first["fscore"], 0)
    assert second["device"] is None

    # the same folder with other settings is refused
    result = run("eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--set", "bind_threshold=0.5", "--out", out)
    assert result.exit_code == 1 and "another run" in result.output


def test_interrupted_eval_leaves_no_half_written_file(mini, tmp_path, monkeypatch, fake):
    out = tmp_path / "run"
    import cmsf.io.media

    real_encode = cmsf.io.media.encode_png
    written = []

    def flaky_encode(array):
        written.append(1)
        if len(written) == 8:  # the 3rd mask of the 2nd video
            raise KeyboardInterrupt
        return real_encode(array)

    monkeypatch.setattr(cmsf.io.media, "encode_png", flaky_encode)
    result = run("eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--out", out)
    assert result.exit_code != 0
    preds = out / "pred_masks"
    assert avsbench.is_complete(preds, "s4", VideoEntry("s4_a", "test", "dog"))
    assert sorted(p.name for p in (preds / "guitar" / "s4_b").iterdir()) == ["s4_b_0.png", "s4_b_1.png"]
    assert no_temporaries(out) and not (out / "summary.json").exists()

    monkeypatch.setattr(cmsf.io.media, "encode_png", real_encode)
    result = run("eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--out", out)
    assert result.exit_code == 0, result.output
    assert len(fake.calls) == 4  # s4_a, s4_b (interrupted); then only s4_b again and s4_c
    summary = json.loads((out / "summary.json").read_text())
    assert summary["computed"] == 2 and summary["reused"] == 1


def test_eval_pipeline_crash_is_resumable(mini, tmp_path, monkeypatch):
    crashing = FakePipeline(fail_on_call=2)
    crashing.install(monkeypatch)
    monkeypatch.setattr(loading, "load_models", lambda *a, **k: FakeModels())
    out = tmp_path / "run"
    result = run("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--out", out)
    assert isinstance(result.exception, RuntimeError)  # a bug in a pipeline is not hidden
    assert avsbench.is_complete(out / "pred_masks", "ms3", VideoEntry("ms3_a", "test"))
    assert not (out / "pred_masks" / "ms3_b").exists()
    crashing.fail_on_call = None
    result = run("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--out", out)
    # one video per batch on the CPU: a, then b crashes (raised, a saved); only b on the rerun
    a, b = crashing.calls[:2]
    assert result.exit_code == 0 and crashing.calls == [a, b, b]


# ---------------------------------------------------------------- eval --pipeline: the real thing


def test_eval_tiny_end_to_end_matches_pred_dir_scoring(mini, tmp_path):
    out = tmp_path / "run"
    result = run("eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--preset", "tiny", "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 3 and summary["computed"] == 3 and summary["preset"] == "tiny"
    assert 0.0 <= summary["miou"] <= 1.0 and 0.0 <= summary["fscore"] <= 1.0
    for path in (out / "pred_masks").rglob("*.png"):
        with Image.open(path) as mask:
            assert mask.size == (SIZE, SIZE) and mask.mode == "L"
    assert len(list((out / "pred_masks").rglob("*.png"))) == 15
    assert "mIoU" in result.stdout
    # the saved masks score the same when scored as any other method's
    rescored = run("eval", "--root", mini.root, "--subset", "s4", "--pred-dir", out, "--out", tmp_path / "again")
    assert rescored.exit_code == 0, rescored.output
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert (again["miou"], again["fscore"]) == (summary["miou"], summary["fscore"])


def test_eval_limit(mini, tmp_path):
    for video in mini.split("s4", "test"):
        write_predictions(tmp_path / "p", video, video.gt)
    result = run("eval", "--root", mini.root, "--subset", "s4", "--pred-dir", tmp_path / "p", "--limit", "2", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["videos"] == 2 and summary["limit"] == 2


def test_model_that_cannot_load_is_a_data_error(video, tmp_path, monkeypatch):
    from cmsf.models.loading import ModelLoadError

    def unloadable(*args, **kwargs):
        raise ModelLoadError("could not load the SAM segmenter (component 'sam') from 'x'")

    monkeypatch.setitem(PIPELINES, "sam-bind", unloadable)
    result = run("segment", video, "-p", "sam-bind", "--preset", "tiny", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "component 'sam'" in result.output and "--model" in result.output
    assert "Traceback" not in result.output


def test_segment_with_mavl_records_it_and_names_a_missing_or_foreign_checkpoint(video, tmp_path):
    out = tmp_path / "mavl"
    result = run("segment", video, "-p", "owod-bind", "--preset", "tiny", "--model", "mavl=random", "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "evidence.json").read_text())["models"]["mavl"] == "random weights, tiny mavl config"
    missing = tmp_path / "MDef_DETR_minus_language_r101_epoch10.pth"
    result = run("segment", video, "-p", "owod-bind", "--preset", "tiny", "--model", f"mavl={missing}", "--out", tmp_path / "o")
    assert result.exit_code == 2 and str(missing) in result.output and "--model" in result.output
    foreign = tmp_path / "notes.pth"
    foreign.write_text("not a checkpoint")
    result = run("segment", video, "-p", "owod-bind", "--preset", "tiny", "--model", f"mavl={foreign}", "--out", tmp_path / "o")
    assert result.exit_code == 1 and str(foreign) in result.output and "mvits_for_class_agnostic_od" in result.output
    assert "Traceback" not in result.output


def test_segment_avsbench_frame_folder_finds_its_wav(mini, fake, tmp_path):
    folder = mini.root / "Multi-sources/ms3_data/visual_frames/ms3_b"
    result = run("segment", folder, "-p", "owod-bind", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    evidence = json.loads((tmp_path / "o" / "evidence.json").read_text())
    assert len(evidence["frames"]) == 5 and "audio_wav/test/ms3_b.wav" in evidence["source"]
    assert evidence["audio_seconds"] == pytest.approx(5.0)


def test_progress_lines_without_a_terminal(mini, tmp_path, monkeypatch):
    for video in mini.split("s4", "test"):
        write_predictions(tmp_path / "p", video, video.gt)
    monkeypatch.setattr(cli_options, "LOG_EVERY", 2)
    result = run("eval", "--root", mini.root, "--subset", "s4", "--pred-dir", tmp_path / "p", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "scoring: 2/3 videos" in result.stderr and "scoring: 3/3 videos" in result.stderr
    assert "scoring" not in result.stdout  # stdout holds only the figures


def test_pipeline_settings_types():
    settings = cli_options.pipeline_settings("sam-bind", ["points_per_side=8", "bind_threshold=0.6", "bind_mode=softmax"])
    assert settings == SamBindSettings(points_per_side=8, bind_threshold=0.6, bind_mode="softmax")
    assert isinstance(settings.points_per_side, int)
    with pytest.raises(click.BadParameter, match="expected an integer"):
        cli_options.pipeline_settings("sam-bind", ["points_per_side=8.5"])
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        cli_options.pipeline_settings("sam-bind", ["points_per_side"])
    assert make_settings("owod-bind", {"bind_threshold": 0.5}).bind_threshold == 0.5
    assert make_settings("owod-bind", {}).box_threshold == 0.5  # the paper's tau_BB


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_non_finite_setting_is_a_usage_error(video, tmp_path, value):
    with pytest.raises(click.BadParameter, match="bind_threshold: expected a finite number"):
        cli_options.pipeline_settings("owod-bind", [f"bind_threshold={value}"])
    result = run("segment", video, "-p", "owod-bind", "--preset", "tiny", "--set", f"bind_threshold={value}", "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert "--set" in result.output and "bind_threshold" in result.output and "JSON" not in result.output
    assert not (tmp_path / "o").exists()


def test_setting_values_are_checked_before_anything_runs():
    assert cli_options.pipeline_settings("sam-bind", ["bind_mode=cosine", "bind_threshold=-0.5"]).bind_threshold == -0.5
    for values, needle in [
        (["bind_mode=cos"], "bind_mode: expected one of softmax, cosine"),
        (["bind_threshold=-0.5"], "bind_threshold: expected a number in [0, 1]"),
        (["bind_mode=cosine", "bind_threshold=1.5"], "bind_threshold: expected a number in [-1, 1]"),
        (["box_threshold=1.2"], "box_threshold"),
        (["nms_threshold=-0.1"], "nms_threshold"),
        (["pred_iou_threshold=2"], "pred_iou_threshold"),
        (["stability_score_threshold=-1"], "stability_score_threshold"),
        (["points_per_side=0"], "points_per_side: expected a positive integer"),
    ]:
        pipeline = "owod-bind" if values[0].startswith("box_threshold") else "sam-bind"
        with pytest.raises(click.BadParameter, match=re.escape(needle)):
            cli_options.pipeline_settings(pipeline, values)
    for key in ("tag_threshold", "text_threshold", "box_threshold"):
        with pytest.raises(click.BadParameter, match=key):
            cli_options.pipeline_settings("at-gdino-sam", [f"{key}=1.01"])


@pytest.mark.parametrize(
    "args, needle",
    [(["--set", "bind_mode=cos"], "bind_mode"), (["--set", "bind_threshold=7"], "bind_threshold"), (["--model", "samm=x"], "samm")],
)
def test_eval_bad_settings_fail_before_run_json_and_do_not_lock_out(mini, tmp_path, fake, args, needle):
    out = tmp_path / "run"
    result = run("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", *args, "--out", out)
    assert result.exit_code == 2, result.output
    assert args[0] in result.output and needle in result.output and "Traceback" not in result.output
    assert fake.calls == [] and fake.loads == [] and not (out / "run.json").exists()
    result = run("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--out", out)
    assert result.exit_code == 0, result.output


def test_segment_unknown_model_component_is_a_usage_error(video, tmp_path, fake):
    result = run("segment", video, "-p", "owod-bind", "--model", "samm=x", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--model" in result.output and "samm" in result.output
    assert fake.loads == [] and not (tmp_path / "o").exists()


def test_run_json_without_predictions_is_overwritten(mini, tmp_path, fake):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"pipeline": "sam-bind", "subset": "s4"}))
    result = run("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["pipeline"] == "owod-bind"


@pytest.mark.parametrize("text", ["[]", "3", "not json"])
def test_run_json_that_is_not_an_object_is_unreadable(mini, tmp_path, fake, text):
    out = tmp_path / "run"
    result = run("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--out", out)
    assert result.exit_code == 0, result.output
    (out / "run.json").write_text(text)
    result = run("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--out", out)
    assert result.exit_code == 1, result.output
    assert "run.json: unreadable" in result.output and "delete it" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("mode", ["pipeline", "pred-dir"])
def test_eval_missing_ground_truth_is_found_before_any_model_runs(tmp_path, fake, mode):
    mini = make_avsbench(tmp_path / "avs")
    gt = mini.root / "Single-source/s4_data/gt_masks/test"
    shutil.rmtree(gt / "guitar" / "s4_b")
    (gt / "dog" / "s4_c" / "s4_c_2.png").unlink()  # a gap: _1 and _3 … _5 exist
    for video in mini.split("s4", "test"):
        write_predictions(tmp_path / "p", video, video.gt)
    how = ["-p", "owod-bind"] if mode == "pipeline" else ["--pred-dir", tmp_path / "p"]
    out = tmp_path / "o"
    result = run("eval", "--root", mini.root, "--subset", "s4", *how, "--out", out)
    assert result.exit_code == 1, result.output
    assert "2 ground-truth file(s) missing" in result.output
    assert "s4_b_1.png" in result.output and "s4_c_2.png" in result.output and "Traceback" not in result.output
    assert fake.calls == [] and all(models.loaded == () for models in fake.models)  # lazy models, none loaded
    assert not (out / "pred_masks").exists() and not (out / "summary.json").exists()


def test_cuda_device_without_cuda_is_a_usage_error(video, mini, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = run("segment", video, "-p", "owod-bind", "--preset", "tiny", "--device", "cuda", "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert "--device" in result.output and "CUDA is not available" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
    result = run("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--preset", "tiny", "--device", "cuda", "--out", tmp_path / "e")
    assert result.exit_code == 2, result.output
    assert "--device" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "e" / "pred_masks").exists()


def test_segment_removes_outputs_of_a_longer_earlier_run(video, tmp_path, fake):
    out = tmp_path / "out"
    result = run("segment", video, "-p", "owod-bind", "--num-frames", "5", "--out", out)
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("mask_*.png"))) == 5
    keep = ["mask_5.png", "mask_00004.png", "overlay_0004.jpg", "mask_0004.png.bak", "notes_0004.png", "my_mask_0004.png"]
    for name in keep:
        (out / name).write_bytes(b"x")
    result = run("segment", video, "-p", "owod-bind", "--num-frames", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("mask_????.png")) == ["mask_0000.png", "mask_0001.png"]
    assert sorted(p.name for p in out.glob("overlay_????.png")) == ["overlay_0000.png", "overlay_0001.png"]
    assert all((out / name).exists() for name in keep)  # not cmsf's exact naming: left alone
    assert [f["mask"] for f in json.loads((out / "evidence.json").read_text())["frames"]] == ["mask_0000.png", "mask_0001.png"]


def test_segment_says_what_it_replaces_and_refuses_another_commands_run_folder(video, tmp_path, fake):
    out = tmp_path / "out"
    result = run("segment", video, "-p", "owod-bind", "--num-frames", "3", "--out", out)
    assert result.exit_code == 0 and "earlier output" not in result.stderr, result.output
    result = run("segment", video, "-p", "owod-bind", "--num-frames", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"{out} holds an earlier output (evidence.json, 3 masks, 3 overlays): this run's replaces it" in result.stderr
    for kind, record in [("eval", {"kind": "eval", "subset": "s4"}), ("segment-many", {"pipeline": "owod-bind", "num_frames": None})]:
        folder = tmp_path / kind
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")
        result = run("segment", video, "-p", "owod-bind", "--out", folder)
        assert result.exit_code == 1 and f"holds a `cmsf {kind}` run" in result.output, result.output
        assert sorted(p.name for p in folder.iterdir()) == ["run.json"]


def test_segment_refuses_the_input_frame_folder_as_out(tmp_path, fake):
    folder = tmp_path / "frames"
    for k in (1, 2):
        write_png(folder / f"f_{k}.png", np.full((20, 30, 3), k, np.uint8))
    audio = write_wav(tmp_path / "a.wav", tone(2.0, 16_000))
    for out in (folder, tmp_path / "frames" / ".." / "frames"):
        result = run("segment", folder, "--audio", audio, "-p", "owod-bind", "--out", out)
        assert result.exit_code == 2, result.output
        assert "--out" in result.output and "input frame folder" in result.output
        assert sorted(p.name for p in folder.iterdir()) == ["f_1.png", "f_2.png"] and fake.calls == []
    result = run("segment", folder, "--audio", audio, "-p", "owod-bind", "--out", folder / "out")
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- settings the binder cannot give; the run's models


@pytest.mark.parametrize("command", ["segment", "eval", "eval-sweep", "segment-many"])
def test_a_bind_mode_the_binder_cannot_give_is_a_usage_error_before_anything_is_read(
    mini, video, tmp_path, fake, command
):
    """ImageBind has no calibrated match logit: asking for it is refused naming the option, before
    any input is read or anything written, and without loading a model."""
    out = tmp_path / "o"
    eval_args = ["eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--out", out]
    args = {
        "segment": ["segment", video, "-p", "owod-bind", "--set", "bind_mode=calibrated", "--out", out],
        "eval": [*eval_args, "--set", "bind_mode=calibrated"],
        "eval-sweep": [*eval_args, "--sweep", "bind_mode=softmax,calibrated"],
        "segment-many": ["segment-many", video, "-p", "owod-bind", "--set", "bind_mode=calibrated", "--out", out],
    }[command]
    result = run(*args)
    assert result.exit_code == 2, result.output
    option = "--sweep" if command == "eval-sweep" else "--set"
    assert option in result.output and "'calibrated' needs a binder" in result.output
    assert fake.calls == [] and all(models.loaded == () for models in fake.models)
    assert not out.exists()


def test_evaluate_records_the_models_it_was_given(mini, tmp_path):
    """run.json and summary.json name the preset, dtype and sources of the models that ran (read
    from them, nothing passed beside them)."""
    from cmsf.runs.evaluate import evaluate

    models = load_models("tiny", device="cpu")
    summary = evaluate(mini.root, "ms3", tmp_path / "run", pipeline="owod-bind", models=models, limit=1)
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (recorded["preset"], recorded["dtype"], recorded["models"]) == ("tiny", "float32", models.sources())
    assert (summary["preset"], summary["dtype"], summary["device"]) == ("tiny", "float32", "cpu")
    with pytest.raises(ValueError, match="models"):
        evaluate(mini.root, "ms3", tmp_path / "other", pipeline="owod-bind")
    # the binder's own mode is recorded by name, so naming it is the same run (resumed, not refused)
    assert recorded["settings"]["bind_mode"] == "softmax" and summary["settings"]["bind_mode"] == "softmax"
    again = evaluate(mini.root, "ms3", tmp_path / "run", pipeline="owod-bind", settings=OwodBindSettings(bind_mode="softmax"),
                     models=models, limit=1)  # fmt: skip
    assert again["computed"] == 0 and again["reused"] == 1


def test_eval_frames_per_batch_reaches_the_runner_and_needs_a_pipeline(mini, tmp_path, fake, monkeypatch):
    seen = []
    original = evaluate_module.evaluate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("frames_per_batch"))
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", spy)
    result = run("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--frames-per-batch", 1,
                 "--out", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen == [1]
    result = run("eval", "--root", mini.root, "--subset", "ms3", "--pred-dir", tmp_path / "run",
                 "--frames-per-batch", 1, "--out", tmp_path / "scored")  # fmt: skip
    assert result.exit_code == 2 and "--frames-per-batch" in result.output
