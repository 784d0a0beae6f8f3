"""Model passes on the dataset runner (cmsf.pipelines.passes, cmsf.runs.runner.run_passes) and the
sweep that runs on them: each pass of each video equals the model stage run on that video alone
with those settings, batches span videos, errors stay with their video, a sweep batched across
videos writes what one video a batch writes; and the one builder of run records
(cmsf.runs.records.run_record)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from avsbench_fixture import make_avsbench
from click.testing import CliRunner

from cmsf.cli import commands as cli
from cmsf.io.decoding import Clip
from cmsf.models import loading
from cmsf.models.loading import load_models
from cmsf.pipelines.passes import PassRequest, candidates_of_passes, tags_at
from cmsf.pipelines.per_frame import PIPELINE_STAGES, PIPELINES, PipelineStages, prepare_video, tag_videos
from cmsf.pipelines.settings import AtGdinoSamSettings, AtSam3Settings, OwodBindSettings, SamBindSettings
from cmsf.runs import sweep_passes
from cmsf.runs.cache import read_cache, read_cache_index
from cmsf.runs.records import RECORD_LAYOUTS, run_record
from cmsf.runs.runner import Job, run_passes

RATE = 16000
PASSES = {  # two passes per pipeline: the second stricter, or rerun (other points / tag threshold)
    "owod-bind": (OwodBindSettings(box_threshold=0.1), OwodBindSettings(box_threshold=0.3)),
    "sam-bind": (SamBindSettings(points_per_side=2), SamBindSettings(points_per_side=3)),
    "at-gdino-sam": (AtGdinoSamSettings(tag_threshold=0.57, box_threshold=0.0), AtGdinoSamSettings(tag_threshold=0.58)),
    "at-sam3": (AtSam3Settings(tag_threshold=0.57, instance_threshold=0.0), AtSam3Settings(tag_threshold=0.58)),
}
TAG_THRESHOLD = 0.57


@pytest.fixture(scope="module")
def models():
    return load_models("tiny", device="cpu")


@pytest.fixture
def one_thread():
    """Exact comparisons across batch sizes need batch-invariant kernels: one CPU thread (see
    tests/test_sweep.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_clip(seed: int, frames: int = 3, size: tuple[int, int] = (48, 64), seconds: float = 1.5) -> Clip:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (frames, 3, *size), dtype=torch.uint8, generator=generator)
    images[:, :, 8:30, 10 + seed : 40 + seed] = torch.tensor([240, 40, 40], dtype=torch.uint8)[None, :, None, None]
    waveform = 0.1 * torch.randn(1, int(seconds * RATE), generator=generator)
    return Clip(frames=images, waveform=waveform, sample_rate=RATE, source=f"clip {seed}")


def video_of(clip: Clip):
    return prepare_video(clip.frames, clip.waveform, clip.sample_rate)


def assert_same_candidates(got, expected) -> None:
    """Equal boxes, masks, phrases and tag labels; scores, embeddings and tag probabilities equal to
    float rounding (≤ 1e-6: a batch of other videos can change the last bits, see cmsf.runs.runner)."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks)
        for name in ("proposal_scores", "visual", "audio"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None), name
            if x is not None:
                torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
        assert [label for label, _ in a.tags] == [label for label, _ in b.tags]
        assert all(abs(p - q) <= 1e-6 for (_, p), (_, q) in zip(a.tags, b.tags))
        assert a.phrases == b.phrases and a.scoring == b.scoring


def request_of(pipeline: str, *passes) -> PassRequest:
    return PassRequest(tuple(passes), TAG_THRESHOLD if pipeline.startswith("at-") else None)


@pytest.mark.parametrize("pipeline", tuple(PIPELINES))
def test_each_pass_of_each_video_equals_the_model_stage_on_it_alone(models, pipeline):
    first, second = PASSES[pipeline]
    clips = [make_clip(seed, frames=2 + seed % 2) for seed in range(3)]
    requests = [request_of(pipeline, first, second), request_of(pipeline, second), request_of(pipeline, first)]
    found = candidates_of_passes(pipeline, [video_of(c) for c in clips], requests, models)
    for clip, request, got in zip(clips, requests, found):
        assert [compute for compute, _ in got.parts] == list(request.passes)
        for compute, frames in got.parts:
            assert_same_candidates(frames, PIPELINE_STAGES[pipeline].candidates([video_of(clip)], models, compute)[0])
        if pipeline.startswith("at-"):  # the tags computed at the request's threshold, for the cache
            alone = tag_videos([video_of(clip)], models, TAG_THRESHOLD)
            assert [[label for label, _ in frame] for frame in got.tags] == [[label for label, _ in frame] for frame in alone]
        else:
            assert got.tags is None


@pytest.mark.parametrize("pipeline", ["at-gdino-sam", "at-sam3"])
def test_given_tags_are_used_and_not_computed_again(models, pipeline, monkeypatch, one_thread):
    clip = make_clip(4)
    tags = tag_videos([video_of(clip)], models, TAG_THRESHOLD)
    _, stricter = PASSES[pipeline]
    calls = []
    monkeypatch.setattr("cmsf.pipelines.passes.tag_videos", lambda *a: calls.append(a) or [])
    (got,) = candidates_of_passes(pipeline, [video_of(clip)], [PassRequest((stricter,), TAG_THRESHOLD, tags)], models)
    assert calls == [] and got.tags is None
    assert [frame.tags for frame in got.parts[0][1]] == [tags_at(frame, stricter.tag_threshold) for frame in tags]
    assert_same_candidates(got.parts[0][1], PIPELINE_STAGES[pipeline].candidates([video_of(clip)], models, stricter)[0])


def recording_stage(monkeypatch, pipeline: str = "owod-bind") -> list[list[int]]:
    """Wrap the pipeline's model stage to record each call's frame counts."""
    batches: list[list[int]] = []
    real = PIPELINE_STAGES[pipeline]

    def candidates(videos, models, settings):
        batches.append([len(video.images) for video in videos])
        return real.candidates(videos, models, settings)

    monkeypatch.setitem(PIPELINE_STAGES, pipeline, PipelineStages(candidates, real.select))
    return batches


def test_run_passes_batches_across_videos_and_keeps_errors_with_their_video(models, monkeypatch):
    batches = recording_stage(monkeypatch)
    counting = PIPELINE_STAGES["owod-bind"]

    def refuses_two_frames(videos, models, settings):  # a model stage failing on one video of a batch
        if any(len(video.images) == 2 for video in videos):
            batches.append([len(video.images) for video in videos])
            raise ValueError("the model refuses 2-frame videos")
        return counting.candidates(videos, models, settings)

    monkeypatch.setitem(PIPELINE_STAGES, "owod-bind", PipelineStages(refuses_two_frames, counting.select))
    first, second = PASSES["owod-bind"]
    good = [make_clip(seed) for seed in range(3)]
    refused = make_clip(7, frames=2)

    def unreadable() -> Clip:
        raise FileNotFoundError("v_missing.wav: no such file")

    both, one = PassRequest((first, second)), PassRequest((second,))
    jobs = [
        Job("a", lambda: good[0], both),
        Job("missing", unreadable, both),
        Job("b", lambda: good[1], one),
        Job("refused", lambda: refused, both),
        Job("c", lambda: good[2], both),
    ]
    outcomes = list(run_passes("owod-bind", jobs, models, frames_per_batch=7, workers=1))
    assert [o.key for o in outcomes] == ["a", "missing", "b", "refused", "c"]
    by_key = {o.key: o for o in outcomes}
    assert by_key["missing"].stage == "load" and isinstance(by_key["missing"].error, FileNotFoundError)
    assert by_key["refused"].stage == "segment" and "refuses 2-frame" in str(by_key["refused"].error)
    assert by_key["refused"].candidates is None
    for key, request in (("a", both), ("b", one), ("c", both)):
        outcome = by_key[key]
        assert outcome.ok and outcome.result is None
        assert [compute for compute, _ in outcome.candidates.parts] == list(request.passes)
    # a, b in one batch (6 frames): pass `first` for a alone, `second` for both; then refused + c,
    # which fails, and each again alone
    assert batches == [[3], [3, 3], [2, 3], [2], [3], [3]]


def test_run_passes_checks_its_arguments(models):
    with pytest.raises(ValueError, match="pipeline"):
        run_passes("nonsense", [], models)
    with pytest.raises(ValueError, match="frames_per_batch"):
        run_passes("owod-bind", [], models, frames_per_batch=0)
    clip = make_clip(0)
    with pytest.raises(ValueError, match="job 'v' needs a PassRequest of OwodBindSettings"):
        list(run_passes("owod-bind", [Job("v", lambda: clip)], models))
    with pytest.raises(ValueError, match="job 'v' needs a PassRequest of OwodBindSettings"):
        list(run_passes("owod-bind", [Job("v", lambda: clip, PassRequest((SamBindSettings(),)))], models))


# ---------------------------------------------------------------- cmsf eval --sweep on the runner
@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_avsbench(tmp_path_factory.mktemp("avsbench"))


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)


def test_a_sweep_batched_across_videos_writes_what_one_video_a_batch_writes(mini, tmp_path, models, monkeypatch, one_thread):
    monkeypatch.setattr(loading, "load_models", lambda *a, **k: models)
    batches = recording_stage(monkeypatch)
    grid = ("--sweep", "box_threshold=0.1,0.3", "--sweep", "bind_threshold=0.3,0.6")
    outs = {}
    for frames_per_batch in (15, 1):
        out = outs[frames_per_batch] = tmp_path / f"fpb{frames_per_batch}"
        result = run("eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--preset", "tiny", "--out", out,
                     "--frames-per-batch", frames_per_batch, *grid)  # fmt: skip
        assert result.exit_code == 0, result.output
    assert batches == [[5, 5, 5], [5], [5], [5]]  # one model pass (box_threshold 0.1): 3 videos at once, then alone
    batched, alone = outs[15], outs[1]
    for name in ("sweep.csv", "per_video.csv"):
        assert (batched / name).read_bytes() == (alone / name).read_bytes(), name
    pngs = sorted(p.relative_to(batched) for p in (batched / "pred_masks").rglob("*.png"))
    assert len(pngs) == 15 and all((batched / p).read_bytes() == (alone / p).read_bytes() for p in pngs)
    # the cached candidates: equal but for the last bits of scores (OWLv2 over 15 frames or 5, see cmsf.runs.runner)
    identity = {key: json.loads((batched / "run.json").read_text())[key] for key in ("pipeline", "preset", "dtype", "models")}
    caches = sorted(p.relative_to(batched) for p in (batched / "cache").rglob("*.npz"))
    assert len(caches) == 3
    for path in caches:
        one, other = (read_cache(folder / path, identity, OwodBindSettings) for folder in (batched, alone))
        loosest = OwodBindSettings(box_threshold=0.1, bind_threshold=0.3, bind_mode="softmax")  # the first row's, lowest τ_BB
        assert [part.compute for part in one.parts] == [part.compute for part in other.parts] == [loosest]
        for a, b in zip(one.parts[0].frames, other.parts[0].frames):
            assert torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks)
            for name in ("proposal_scores", "visual", "audio"):
                torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-6)


def test_eval_sweep_takes_frames_per_batch(mini, tmp_path, models, monkeypatch):
    monkeypatch.setattr(loading, "load_models", lambda *a, **k: models)
    seen = []
    original = sweep_passes.run_passes  # where a sweep's videos are run from

    def spy(*args, **kwargs):
        seen.append(kwargs.get("frames_per_batch"))
        return original(*args, **kwargs)

    monkeypatch.setattr(sweep_passes, "run_passes", spy)
    result = run("eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--preset", "tiny", "--limit", 1,
                 "--frames-per-batch", 2, "--sweep", "bind_threshold=0.3,0.6", "--out", tmp_path / "o")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen == [2]


# ---------------------------------------------------------------- run records
def test_run_records_have_their_layouts(models, tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "load_models", lambda *a, **k: models)
    settings = OwodBindSettings(bind_threshold=0.4)
    common = {"pipeline": "owod-bind", **models.record()}
    context = {"subset": "s4", "split": "val", "num_frames": 5, "fps": None, "input": "x.mp4", "sweep": True,
               "root": "/data/AVSBench", "grid": {"box_threshold": [0.1]}, "fixed": {}, "label_threshold": 0.2}  # fmt: skip
    values = {**common, "device": "cpu", "settings": asdict(settings), **context}
    for layout, keys in RECORD_LAYOUTS.items():
        record = run_record(layout, "owod-bind", models, settings, **context)
        assert list(record) == list(keys) and record == {key: values[key] for key in keys}, layout
    assert run_record("sweep-result", "owod-bind", models, **context)["settings"] is None
    with pytest.raises(ValueError, match="layout: expected one of eval"):
        run_record("nonsense", "owod-bind", models)
    with pytest.raises(ValueError, match="the eval record needs subset, split"):
        run_record("eval", "owod-bind", models, settings)
    # cmsf eval's run.json is the eval layout, its summary names the same models
    run("eval", "--root", make_avsbench(tmp_path / "avs").root, "--subset", "s4", "-p", "owod-bind", "--preset", "tiny",
        "--limit", 1, "--set", "bind_threshold=0.4", "--set", "bind_mode=softmax", "--out", tmp_path / "o")  # fmt: skip
    written = json.loads((tmp_path / "o" / "run.json").read_text())
    assert written["settings"]["bind_threshold"] == 0.4 and written["settings"]["bind_mode"] == "softmax"
    expected = run_record("eval", "owod-bind", models, OwodBindSettings.of(written["settings"]), subset="s4", split="test")
    root = str((tmp_path / "avs").resolve())  # recorded after the layout (claim_run_folder checks it)
    assert written == {"kind": "eval", **expected, "root": root} and list(written)[1:-1] == list(expected)
    assert Path(json.loads((tmp_path / "o" / "summary.json").read_text())["pred_dir"]) == tmp_path / "o" / "pred_masks"


def _damage_member(path: Path, member: str) -> None:
    """Flip a byte near the end of ``member``'s compressed data in the archive at ``path``: its
    ``.npy`` header still reads, its data does not (a bad CRC or deflate stream)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    offset = info.header_offset  # the local file header: 30 bytes, then the name and the extra field
    name_length = int.from_bytes(data[offset + 26 : offset + 28], "little")
    extra_length = int.from_bytes(data[offset + 28 : offset + 30], "little")
    start = offset + 30 + name_length + extra_length
    data[start + info.compress_size - 8] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_cache_damaged_behind_its_header_fails_its_video_once(mini, tmp_path, models, monkeypatch):
    """The sweep plans from the caches' headers (read_cache_index); a file whose header reads but
    whose candidates do not fails its video, is removed, and the rerun computes that video."""
    monkeypatch.setattr(loading, "load_models", lambda *a, **k: models)
    out = tmp_path / "sweep"
    args = ("eval", "--root", mini.root, "--subset", "s4", "-p", "owod-bind", "--preset", "tiny", "--limit", 2,
            "--sweep", "bind_threshold=0.3,0.6", "--out", out)  # fmt: skip
    assert run(*args).exit_code == 0
    identity = {key: json.loads((out / "run.json").read_text())[key] for key in ("pipeline", "preset", "dtype", "models")}
    first = sorted((out / "cache").rglob("*.npz"))[0]
    _damage_member(first, "p0_masks.npy")
    index = read_cache_index(first, identity, OwodBindSettings)
    assert index is not None and len(index.computed) == 1 and index.tags is None
    assert read_cache(first, identity, OwodBindSettings) is None
    result = run(*args)
    assert result.exit_code == 1 and "1 of 2 video(s) failed" in result.output and "could not be read" in result.output
    assert not first.exists()
    result = run(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["computed"] == 1 and summary["reused"] == 1
