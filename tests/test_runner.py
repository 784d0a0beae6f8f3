"""The dataset runner (cmsf.runs.runner.run_jobs): results equal to each video run alone, batches as
asked, job order, errors kept with their video, early stop; and ``cmsf eval`` (which runs on it)
against the library pipeline called on each video."""

from __future__ import annotations

import threading
import traceback
import weakref
from contextlib import closing
from types import SimpleNamespace

import pytest
import torch
from avsbench_fixture import make_avsbench
from click.testing import CliRunner
from stand_ins import as_stages

from cmsf.cli import commands as cli
from cmsf.cli.options import TINY_SETTINGS
from cmsf.io import avsbench
from cmsf.io.decoding import Clip
from cmsf.models.loading import ModelLoadError, load_models
from cmsf.pipelines.per_frame import PIPELINE_STAGES, PIPELINES, PipelineStages, prepare_video, run_videos
from cmsf.pipelines.settings import AtGdinoSamSettings, AtSam3Settings, OwodBindSettings, SamBindSettings
from cmsf.runs import runner
from cmsf.runs.runner import Job, default_frames_per_batch, default_workers, run_jobs

RATE = 16000
SETTINGS = {
    "owod-bind": OwodBindSettings(bind_threshold=0.3),
    "sam-bind": SamBindSettings(points_per_side=2, bind_threshold=0.3),
    "at-gdino-sam": AtGdinoSamSettings(tag_threshold=0.57),  # ~5 of the tiny AST's near-uniform tags
    "at-sam3": AtSam3Settings(tag_threshold=0.57, instance_threshold=0.0),  # every instance: masks to compare
}


@pytest.fixture(scope="module")
def models():
    return load_models("tiny", device="cpu")


def make_clip(seed: int, frames: int = 3, size: tuple[int, int] = (48, 64), seconds: float = 1.5) -> Clip:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (frames, 3, *size), dtype=torch.uint8, generator=generator)
    images[:, :, 8:30, 10 + seed : 40 + seed] = torch.tensor([240, 40, 40], dtype=torch.uint8)[None, :, None, None]
    waveform = 0.1 * torch.randn(1, int(seconds * RATE), generator=generator)
    return Clip(frames=images, waveform=waveform, sample_rate=RATE, source=f"clip {seed}")


def jobs_of(clips: list[Clip]) -> list[Job]:
    return [Job(f"v{i}", lambda clip=clip: clip) for i, clip in enumerate(clips)]


def alone(pipeline: str, clip: Clip, models, settings):
    return run_videos(pipeline, [prepare_video(clip.frames, clip.waveform, clip.sample_rate)], models, settings)[0]


@pytest.mark.parametrize("pipeline", tuple(PIPELINES))
def test_batched_results_equal_each_video_alone(models, pipeline):
    """Masks, boxes and kept proposals equal; scores equal to float rounding (≤ 1e-6)."""
    clips = [make_clip(seed, frames=2 + seed % 3) for seed in range(3)]
    settings = SETTINGS[pipeline]
    outcomes = list(run_jobs(pipeline, jobs_of(clips), models, settings, frames_per_batch=7, workers=2))
    assert [o.key for o in outcomes] == [f"v{i}" for i in range(len(clips))] and all(o.ok for o in outcomes)
    for outcome, clip in zip(outcomes, clips):
        single = alone(pipeline, clip, models, settings)
        assert outcome.clip is clip
        assert torch.equal(outcome.result.masks, single.masks)
        for batched, one in zip(outcome.result.frames, single.frames):
            assert torch.equal(batched.boxes, one.boxes) and torch.equal(batched.kept, one.kept)
            torch.testing.assert_close(batched.proposal_scores, one.proposal_scores, rtol=0, atol=1e-6)
            if one.bind_scores is not None:
                torch.testing.assert_close(batched.bind_scores, one.bind_scores, rtol=0, atol=1e-6)
            assert [label for label, _ in batched.tags] == [label for label, _ in one.tags]
            for (_, p), (_, q) in zip(batched.tags, one.tags):
                assert abs(p - q) <= 1e-6
            assert batched.phrases == one.phrases


@pytest.mark.parametrize("pipeline", tuple(PIPELINES))
def test_videos_of_different_frame_sizes_in_one_batch_equal_each_alone(models, pipeline):
    """A batch holding videos of two frame sizes: no stage pads one video's frames to another's
    size (GroundingDINO's processor would, so it runs one forward per size)."""
    clips = [make_clip(0, frames=2, size=(48, 64)), make_clip(1, frames=2, size=(96, 40))]
    settings = SETTINGS[pipeline]
    outcomes = list(run_jobs(pipeline, jobs_of(clips), models, settings, frames_per_batch=4, workers=0))
    assert all(o.ok for o in outcomes)
    for outcome, clip in zip(outcomes, clips):
        single = alone(pipeline, clip, models, settings)
        assert torch.equal(outcome.result.masks, single.masks)
        for batched, one in zip(outcome.result.frames, single.frames):
            assert torch.equal(batched.boxes, one.boxes) and torch.equal(batched.kept, one.kept)
            assert batched.phrases == one.phrases
            torch.testing.assert_close(batched.proposal_scores, one.proposal_scores, rtol=0, atol=1e-6)


def test_one_frame_per_batch_is_bit_identical_to_the_pipeline_call(models):
    clips = [make_clip(seed) for seed in range(2)]
    outcomes = list(run_jobs("owod-bind", jobs_of(clips), models, SETTINGS["owod-bind"], frames_per_batch=1))
    for outcome, clip in zip(outcomes, clips):
        direct = PIPELINES["owod-bind"](clip.frames, clip.waveform, RATE, models, settings=SETTINGS["owod-bind"])
        assert torch.equal(outcome.result.masks, direct.masks)
        for a, b in zip(outcome.result.frames, direct.frames):
            assert torch.equal(a.bind_scores, b.bind_scores) and torch.equal(a.proposal_scores, b.proposal_scores)


def recording_stage(monkeypatch, pipeline: str = "owod-bind") -> list[list[int]]:
    """Wrap the pipeline's model stage to record each batch's frame counts."""
    batches: list[list[int]] = []
    real = PIPELINE_STAGES[pipeline]

    def candidates(videos, models, settings):
        batches.append([len(video.images) for video in videos])
        return real.candidates(videos, models, settings)

    monkeypatch.setitem(PIPELINE_STAGES, pipeline, PipelineStages(candidates, real.select))
    return batches


def test_batches_hold_at_most_frames_per_batch_in_job_order(models, monkeypatch):
    batches = recording_stage(monkeypatch)
    frames = [3, 3, 3, 12, 2, 5, 1]
    clips = [make_clip(i, frames=n, size=(32, 32), seconds=0.5) for i, n in enumerate(frames)]
    outcomes = list(run_jobs("owod-bind", jobs_of(clips), models, frames_per_batch=7, workers=0))
    assert [o.index for o in outcomes] == list(range(len(frames))) and all(o.ok for o in outcomes)
    # in job order, as many as fit in 7 frames; a longer video alone
    assert batches == [[3, 3], [3], [12], [2, 5], [1]]


def test_errors_stay_with_their_video(models, monkeypatch):
    batches = recording_stage(monkeypatch)
    counting = PIPELINE_STAGES["owod-bind"]

    def refuses_two_frames(videos, models, settings):  # a model stage failing on one video of a batch
        if any(len(video.images) == 2 for video in videos):
            batches.append([len(video.images) for video in videos])
            raise ValueError("the model refuses 2-frame videos")
        return counting.candidates(videos, models, settings)

    monkeypatch.setitem(PIPELINE_STAGES, "owod-bind", PipelineStages(refuses_two_frames, counting.select))
    good = [make_clip(seed) for seed in range(3)]
    refused = make_clip(7, frames=2)
    short_audio = make_clip(9, seconds=0.03)  # 10 ms per segment: shorter than one fbank window

    def unreadable() -> Clip:
        raise FileNotFoundError("v_missing.wav: no such file")

    jobs = [
        Job("a", lambda: good[0]),
        Job("missing", unreadable),
        Job("b", lambda: good[1]),
        Job("refused", lambda: refused),
        Job("short", lambda: short_audio),
        Job("not a clip", lambda: "frames.png"),
        Job("c", lambda: good[2]),
    ]
    outcomes = list(run_jobs("owod-bind", jobs, models, SETTINGS["owod-bind"], frames_per_batch=100))
    # the four readable videos in one batch, which failed; then each alone
    assert batches == [[3, 3, 2, 3], [3], [3], [2], [3]]
    assert [o.key for o in outcomes] == ["a", "missing", "b", "refused", "short", "not a clip", "c"]
    by_key = {o.key: o for o in outcomes}
    assert by_key["missing"].stage == "load" and isinstance(by_key["missing"].error, FileNotFoundError)
    assert by_key["not a clip"].stage == "load" and "expected a cmsf Clip" in str(by_key["not a clip"].error)
    # a segment too short for the audio models is refused with the inputs, before any model runs
    assert by_key["short"].stage == "load" and "at least 25 ms" in str(by_key["short"].error)
    assert by_key["short"].clip is short_audio and by_key["short"].result is None
    assert by_key["refused"].stage == "segment" and "refuses 2-frame" in str(by_key["refused"].error)
    for key, clip in zip("abc", good):
        assert by_key[key].ok and by_key[key].stage is None and by_key[key].clip is clip
        assert by_key[key].result.masks.shape == (3, 48, 64)


def test_a_component_that_cannot_load_stops_the_run(models, monkeypatch):
    def unloadable(videos, models, settings):
        raise ModelLoadError("could not load the OWLv2 proposer (component 'owlv2')")

    monkeypatch.setitem(PIPELINE_STAGES, "owod-bind", PipelineStages(unloadable, PIPELINE_STAGES["owod-bind"].select))
    with pytest.raises(ModelLoadError, match="owlv2"):
        list(run_jobs("owod-bind", jobs_of([make_clip(0), make_clip(1)]), models))


def test_closing_early_stops_reading(models):
    loaded = []
    lock = threading.Lock()

    def load(seed: int) -> Clip:
        with lock:
            loaded.append(seed)
        return make_clip(seed, frames=1, size=(32, 32), seconds=0.1)

    jobs = (Job(str(seed), lambda seed=seed: load(seed)) for seed in range(10_000))
    with closing(run_jobs("owod-bind", jobs, models, frames_per_batch=2, workers=2)) as outcomes:
        first = next(outcomes)
    assert first.key == "0" and first.ok
    assert len(loaded) <= 8  # read ahead about two batches, never the whole (lazy) job list


def test_arguments_are_checked_before_any_job_is_read(models):
    never = [Job("x", lambda: pytest.fail("read"))]
    for kwargs, needle in (
        ({"frames_per_batch": 0}, "frames_per_batch"),
        ({"workers": -1}, "workers"),
        ({"workers": 1.5}, "workers"),
    ):
        with pytest.raises(ValueError, match=needle):
            run_jobs("owod-bind", never, models, **kwargs)
    with pytest.raises(ValueError, match="pipeline"):
        run_jobs("owod-bond", never, models)
    with pytest.raises(ValueError, match="bind_threshold"):
        run_jobs("owod-bind", never, models, OwodBindSettings(bind_threshold=2.0))
    with pytest.raises(ValueError, match="models"):
        run_jobs("owod-bind", never, object())
    with pytest.raises(ValueError, match="bind_mode: 'calibrated' needs"):  # ImageBind has no calibrated logit
        run_jobs("owod-bind", never, models, OwodBindSettings(bind_mode="calibrated"))
    with pytest.raises(ValueError, match="Job"):
        list(run_jobs("owod-bind", ["x"], models))
    with pytest.raises(ValueError, match="pipeline: expected one of .*, got a list"):
        run_jobs(never, "owod-bind", {}, models)  # the order of run_jobs before it matched run_videos'
    assert default_frames_per_batch("cpu") < default_frames_per_batch("cuda")
    assert 0 < default_workers("cpu") <= default_workers("cuda")


# ---------------------------------------------------------------- cmsf eval runs on the runner


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_avsbench(tmp_path_factory.mktemp("avsbench"))


def test_eval_masks_equal_the_pipeline_on_each_video_alone(mini, models, tmp_path, monkeypatch):
    monkeypatch.setitem(runner.FRAMES_PER_BATCH, "cpu", 15)  # the 3 videos in one batch
    batches = recording_stage(monkeypatch)
    out = tmp_path / "run"
    args = ["eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--preset", "tiny", "--device", "cpu"]
    result = CliRunner().invoke(cli.main, [str(a) for a in [*args, "--set", "bind_threshold=0.3", "--out", out]])
    assert result.exit_code == 0, result.output
    assert batches == [[5, 5, 5]]
    entries = avsbench.list_videos(mini.root, "s4", "test")
    for entry in entries:
        clip = avsbench.load_video(mini.root, "s4", entry)
        settings = {**TINY_SETTINGS["owod-bind"], "bind_threshold": 0.3}  # what the command runs with --preset tiny
        direct = PIPELINES["owod-bind"](clip.frames, clip.waveform, clip.sample_rate, models, **settings)
        assert torch.equal(avsbench.read_pred_masks(out / "pred_masks", "s4", entry), direct.masks)


def test_eval_saves_every_readable_video_and_names_the_others(mini, tmp_path):
    broken = make_avsbench(tmp_path / "avs")
    wav = avsbench.audio_path(broken.root, "s4", avsbench.list_videos(broken.root, "s4", "test")[1])
    wav.write_bytes(b"not a wav")
    out = tmp_path / "run"
    args = ["eval", "--root", broken.root, "--subset", "s4", "-p", "owod-bind", "--preset", "tiny", "--out", out]
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert "1 of 3 video(s) failed" in result.output and "s4_b" in result.output and "Traceback" not in result.output
    done = [e.name for e in avsbench.list_videos(broken.root, "s4", "test") if avsbench.is_complete(out / "pred_masks", "s4", e)]
    assert done == ["s4_a", "s4_c"] and (out / "errors.json").is_file() and not (out / "summary.json").exists()
    # repaired, a rerun computes only the failed video and clears errors.json
    mini_wav = avsbench.audio_path(mini.root, "s4", avsbench.list_videos(mini.root, "s4", "test")[1])
    wav.write_bytes(mini_wav.read_bytes())
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert not (out / "errors.json").exists()
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["computed"] == 1 and summary["reused"] == 2


def test_a_failed_batch_is_freed_before_its_videos_are_retried(models, monkeypatch):
    """The batch's error (and the tensors its traceback's frames hold) is gone before the videos
    run again alone; each video's error keeps its type, message and traceback lines, not the
    batch error as context nor its frames' tensors."""
    first_attempt: list[weakref.ref] = []
    retries_saw_it_alive: list[bool] = []
    failed_video: list[weakref.ref] = []

    def run(frames, waveform, sample_rate, models):
        activations = torch.ones(1000)
        if not first_attempt:
            first_attempt.append(weakref.ref(activations))
            raise RuntimeError("CUDA out of memory (stand-in)")
        retries_saw_it_alive.append(first_attempt[0]() is not None)
        if frames.shape[0] == 2:
            failed_video.append(weakref.ref(activations))
            raise ValueError("this video is refused")
        return SimpleNamespace(masks=torch.zeros(frames.shape[0], *frames.shape[-2:], dtype=torch.bool))

    monkeypatch.setitem(PIPELINE_STAGES, "owod-bind", as_stages(run))
    clips = [make_clip(0, frames=3), make_clip(1, frames=2), make_clip(2, frames=3)]
    outcomes = list(run_jobs("owod-bind", jobs_of(clips), models, frames_per_batch=100, workers=0))
    assert retries_saw_it_alive == [False, False, False]
    assert [o.ok for o in outcomes] == [True, False, True]
    error = outcomes[1].error
    assert type(error) is ValueError and str(error) == "this video is refused" and outcomes[1].stage == "segment"
    assert error.__context__ is None and error.__cause__ is None
    assert failed_video[0]() is None  # the outcome keeps the error, not its frames' tensors
    assert "in run" in "".join(traceback.format_exception(error))
