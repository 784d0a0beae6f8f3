"""``cmsf segment-many`` with the local engine: inputs and manifests, output names, the same files
as ``cmsf segment`` (byte for byte), resume, failures.csv, run.json, usage errors (tiny preset)."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from corpus_fixture import found, make_corpus, output_files
from stand_ins import as_stages

from cmsf.cli import commands as cli
from cmsf.cli.options import TINY_SETTINGS
from cmsf.io import files
from cmsf.io.files import LOCK_NAME, TEMP_SUFFIX
from cmsf.io.media import load_clip
from cmsf.models.loading import COMPONENTS, component_sources, load_models
from cmsf.pipelines.per_frame import PIPELINE_STAGES, PipelineStages, prepare_video, run_videos
from cmsf.pipelines.settings import OwodBindSettings, make_settings
from cmsf.runs import many
from cmsf.runs.outputs import write_segmentation


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def models():
    return load_models("tiny", device="cpu")


def run(*args) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=True)


def read_failures(out: Path) -> list[dict[str, str]]:
    with open(out / "failures.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- names and manifests


def test_output_names_are_stable_unique_and_safe(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    name = many.output_name(tmp_path / "a" / "clip.mp4")
    assert name.startswith("clip-") and len(name) == len("clip-") + many.HASH_DIGITS
    monkeypatch.chdir(tmp_path)
    assert many.output_name(Path("a/../a/clip.mp4")) == name  # the resolved path counts, not its spelling
    assert many.output_name(tmp_path / "b" / "clip.mp4") != name
    assert many.output_name(tmp_path / "a" / "clip.mp4", tmp_path / "x.wav") != name
    assert many.output_name(tmp_path / "a" / "my clip (1).mov").startswith("my_clip_1-")
    assert many.output_name(tmp_path / "a" / "...mp4").startswith("video-")
    folder = tmp_path / "v1.2"
    folder.mkdir()
    assert many.output_name(folder).startswith("v1.2-")  # a folder keeps its whole name


def test_text_manifest(tmp_path):
    manifest = tmp_path / "lists" / "clips.txt"
    manifest.parent.mkdir()
    manifest.write_text("# a comment\n\nx.mp4\n  ../y.mp4  \n/abs/z.mp4\n", encoding="utf-8")
    assert many.read_manifest(manifest) == [
        (manifest.parent / "x.mp4", None),
        (manifest.parent / "../y.mp4", None),
        (Path("/abs/z.mp4"), None),
    ]


def test_csv_manifest_with_audio_column(tmp_path):
    manifest = tmp_path / "clips.CSV"
    manifest.write_text("\ufeffid, path ,audio\n1,x.mp4,\n2,frames,frames/sound.wav\n\n", encoding="utf-8")
    assert many.read_manifest(manifest) == [
        (tmp_path / "x.mp4", None),
        (tmp_path / "frames", tmp_path / "frames/sound.wav"),
    ]


@pytest.mark.parametrize(
    "name, data, needle",
    [
        ("m.csv", "file\nx.mp4\n".encode(), "'path' column"),
        ("m.csv", "path,audio\n,a.wav\n".encode(), "line 2: empty 'path'"),
        ("m.txt", b"\xff\xfex.mp4\n", "not UTF-8"),
    ],
)
def test_bad_manifest_is_a_value_error_naming_it(tmp_path, name, data, needle):
    manifest = tmp_path / name
    manifest.write_bytes(data)
    with pytest.raises(ValueError, match=needle) as error:
        many.read_manifest(manifest)
    assert str(manifest) in str(error.value)


def test_plan_jobs_keeps_order_and_runs_an_input_once(tmp_path, monkeypatch):
    manifest = tmp_path / "m.txt"
    manifest.write_text("b/clip.mp4\na/clip.mp4\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    jobs = many.plan_jobs([Path("a/clip.mp4")], manifest)
    assert [job.path for job in jobs] == [tmp_path / "a/clip.mp4", tmp_path / "b/clip.mp4"]
    assert len({job.name for job in jobs}) == 2
    monkeypatch.setattr(many, "HASH_DIGITS", 0)  # every clip.mp4 gets the name "clip-"
    with pytest.raises(ValueError, match="also that of"):
        many.plan_jobs([Path("a/clip.mp4")], manifest)


def test_every_manifest_is_used_after_the_inputs(corpus, tmp_path, monkeypatch):
    """``--manifest a.csv --manifest b.txt``: the INPUTs, then a.csv's, then b.txt's (each once)."""
    first, second = tmp_path / "a.csv", tmp_path / "b.txt"
    first.write_text(f"path,audio\n{corpus.videos[1]},\n", encoding="utf-8")
    second.write_text(f"{corpus.videos[2]}\n{corpus.videos[0]}\n", encoding="utf-8")
    planned = []

    def stop(spec, jobs, run, **kwargs):
        planned.extend(job.path for job in jobs)
        raise ValueError("planned")

    monkeypatch.setattr(many, "segment_many", stop)
    result = run("segment-many", corpus.videos[0], "--manifest", first, "--manifest", second, "-p", "owod-bind",
                 "--preset", "tiny", "--out", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 1 and "planned" in result.output
    assert planned == [Path(corpus.videos[k]).resolve() for k in (0, 1, 2)]
    assert many.plan_jobs([], [first, second]) == many.plan_jobs([], [first]) + many.plan_jobs([], second)


# ---------------------------------------------------------------- the local engine, end to end


def alone(corpus_path: Path, models, out: Path, pipeline: str = "owod-bind", settings: dict | None = None) -> None:
    """What ``cmsf segment --preset tiny`` writes for one input: the pipeline on it alone (with the
    command's tiny defaults under ``settings``)."""
    clip = load_clip(corpus_path)
    video = prepare_video(clip.frames, clip.waveform, clip.sample_rate)
    result = run_videos(pipeline, [video], models, make_settings(pipeline, {**TINY_SETTINGS[pipeline], **(settings or {})}))[0]
    run_info = {"input": str(corpus_path), "pipeline": pipeline, "preset": "tiny", "device": "cpu",
                "dtype": "float32", "settings": asdict(result.settings)}  # fmt: skip
    write_segmentation(out, clip, result, run_info, started=time.perf_counter())


def test_local_engine_writes_what_segment_writes_and_records_failures(corpus, models, tmp_path):
    out = tmp_path / "out"
    manifest = tmp_path / "m.csv"
    rows = [corpus.folder, corpus.broken, corpus.silent, "missing.mp4"]
    manifest.write_text("path,audio\n" + "".join(f"{row},\n" for row in rows), encoding="utf-8")
    result = run("segment-many", *corpus.videos, "--manifest", manifest, "-p", "owod-bind", "--preset", "tiny",
                 "--device", "cpu", "--frames-per-batch", "4", "--out", out)  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "4 segmented, 0 already done, 3 failed" in result.stdout and "videos/s" in result.stdout
    assert "3 of 7 inputs failed" in result.stderr and "failures.csv" in result.stderr
    failures = read_failures(out)
    assert [row["path"] for row in failures] == [str(corpus.broken), str(corpus.silent), str(tmp_path / "missing.mp4")]
    assert "not a readable" in failures[0]["error"] and "no audio track" in failures[1]["error"]
    assert "no such file" in failures[2]["error"]
    assert failures[0]["name"] == many.output_name(corpus.broken)

    names = [many.output_name(p) for p in corpus.good]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(names)
    reference = tmp_path / "reference"
    for path, name in zip(corpus.good, names):
        alone(path, models, reference / name)
        evidence = json.loads((out / name / "evidence.json").read_text())
        expected = json.loads((reference / name / "evidence.json").read_text())
        assert evidence["input"] == str(path) and found(evidence) == found(expected)
    assert output_files(out) == output_files(reference)  # masks and overlays, byte for byte
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["kind"] == "segment-many" and run_json["pipeline"] == "owod-bind" and run_json["preset"] == "tiny"
    assert run_json["num_frames"] is None
    assert not list(out.rglob(f"*{TEMP_SUFFIX}"))


def test_videos_of_different_frame_sizes_in_one_batch_write_what_each_alone_writes(corpus, models, tmp_path):
    """AT-GDINO-SAM on a 48×64 video and a 40×56 frame folder in one batch (GroundingDINO's
    processor would pad one to the other's size)."""
    out = tmp_path / "out"
    inputs = [corpus.videos[0], corpus.folder]
    result = run("segment-many", *inputs, "-p", "at-gdino-sam", "--preset", "tiny", "--device", "cpu",
                 "--set", "tag_threshold=0.57", "--frames-per-batch", "4", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    reference = tmp_path / "reference"
    for path in inputs:
        name = many.output_name(path)
        alone(path, models, reference / name, "at-gdino-sam", {"tag_threshold": 0.57})
        evidence = json.loads((out / name / "evidence.json").read_text())
        expected = json.loads((reference / name / "evidence.json").read_text())
        assert any(frame["boxes"] for frame in expected["frames"])
        assert found(evidence) == found(expected)
    assert output_files(out) == output_files(reference)


def test_resume_skips_complete_videos_and_retries_the_rest(corpus, tmp_path):
    out = tmp_path / "out"
    args = ["segment-many", *corpus.videos, corpus.broken, "-p", "owod-bind", "--preset", "tiny", "--out", out]
    assert run(*args).exit_code == 1
    names = [many.output_name(p) for p in corpus.videos]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    # an interrupted write: masks of one video without its evidence, and a temporary file
    (out / names[1] / "evidence.json").unlink()
    (out / names[1] / "mask_0000.png").write_bytes(b"half")
    (out / names[1] / f".mask_0000.png.1234abcd{TEMP_SUFFIX}").write_bytes(b"half")
    (out / names[1] / ".cmsf-new-dead0001").mkdir()  # a killed writer's staging folder
    (out / names[1] / ".cmsf-new-dead0001" / "mask_0000.png").write_bytes(b"half")
    (out / f".failures.csv.1234abcd{TEMP_SUFFIX}").write_bytes(b"half")
    result = run(*args)
    assert result.exit_code == 1
    assert "1 segmented, 2 already done, 1 failed" in result.stdout
    assert "4 videos: 2 already done, 2 to segment" in result.stderr
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert {p for p in before if after[p] != before[p]} == {p for p in before if p.parent.name == names[1]}
    assert (out / names[1] / "mask_0000.png").read_bytes() != b"half"
    assert not list(out.rglob(f"*{TEMP_SUFFIX}")) and not list(out.glob("*/.cmsf-new-*"))
    assert [row["path"] for row in read_failures(out)] == [str(corpus.broken)]
    # nothing failing any more: failures.csv of the earlier run goes away, exit status 0
    result = run("segment-many", *corpus.videos, "-p", "owod-bind", "--preset", "tiny", "--out", out)
    assert result.exit_code == 0, result.output
    assert "0 segmented, 3 already done, 0 failed" in result.stdout and "nothing to do" in result.stdout
    assert not (out / "failures.csv").exists()
    # another setting: refused, nothing touched
    result = run(*args[:-2], "--set", "bind_threshold=0.6", "--out", out)
    assert result.exit_code == 1 and "another run" in result.output and "bind_threshold" in result.output


def test_a_video_the_pipeline_refuses_fails_alone(corpus, models, tmp_path, monkeypatch):
    jobs = many.plan_jobs(corpus.videos)
    spec = many.RunSpec(tmp_path / "out", "owod-bind", OwodBindSettings(), preset="tiny", frames_per_batch=6)
    stages = PIPELINE_STAGES["owod-bind"]
    refused = load_clip(corpus.videos[1]).frames[0]
    batches = []

    def candidates(videos, models, settings):
        batches.append(len(videos))
        if any(torch.equal(video.images[0], refused) for video in videos):
            raise RuntimeError("simulated failure")
        return stages.candidates(videos, models, settings)

    monkeypatch.setitem(PIPELINE_STAGES, "owod-bind", PipelineStages(candidates, stages.select))
    summary = many.segment_many(spec, jobs, partial(many.run_local, models=models))
    assert batches == [3, 1, 1, 1]  # one batch of the 3 videos, then each alone
    assert (summary["segmented"], summary["failed"]) == (2, 1)
    assert read_failures(spec.out_dir) == [
        {"path": str(corpus.videos[1]), "name": jobs[1].name, "error": "RuntimeError: simulated failure"}
    ]
    assert [many.is_complete(spec.out_dir, job) for job in jobs] == [True, False, True]


def stand_in_owod_bind(monkeypatch) -> None:
    """owod-bind replaced by a stand-in without models (each frame's mask: its pixels brighter
    than the frame's mean), for tests of the bookkeeping."""

    def run(frames, waveform, sample_rate, models):
        gray = frames.float().mean(dim=1)
        return SimpleNamespace(masks=gray > gray.mean(dim=(1, 2), keepdim=True))

    monkeypatch.setitem(PIPELINE_STAGES, "owod-bind", as_stages(run))


def test_a_lock_left_in_a_video_folder_does_not_block_it(corpus, models, tmp_path, monkeypatch):
    """Each video's folder is written without a lock of its own (DIR's excludes other runs), so
    the lock a worker killed on another host left in one does not stop it from being redone."""
    stand_in_owod_bind(monkeypatch)
    jobs = many.plan_jobs(corpus.videos[:2])
    spec = many.RunSpec(tmp_path / "out", "owod-bind", OwodBindSettings(), preset="tiny")
    engine = partial(many.run_local, models=models)
    assert many.segment_many(spec, jobs, engine)["segmented"] == 2
    folder = spec.out_dir / jobs[1].name
    (folder / "evidence.json").unlink()
    holder = {"pid": 4242, "host": "gpu-node-7", "started": "2026-12-01 10:00:00 UTC", "command": "ray::MapWorker"}
    (folder / LOCK_NAME).write_text(json.dumps(holder), encoding="utf-8")
    claimed = []
    acquire = files._acquire_lock
    monkeypatch.setattr(files, "_acquire_lock", lambda path: claimed.append(path) or acquire(path))
    summary = many.segment_many(spec, jobs, engine)
    assert (summary["segmented"], summary["failed"]) == (1, 0) and many.is_complete(spec.out_dir, jobs[1])
    assert claimed == [spec.out_dir]  # one lock for the run, none per video


def test_start_up_does_not_walk_the_folders_of_finished_videos(corpus, models, tmp_path, monkeypatch):
    stand_in_owod_bind(monkeypatch)
    jobs = many.plan_jobs(corpus.videos)
    spec = many.RunSpec(tmp_path / "out", "owod-bind", OwodBindSettings(), preset="tiny")
    many.segment_many(spec, jobs[:2], partial(many.run_local, models=models))
    finished = [spec.out_dir / job.name for job in jobs[:2]]
    listed: list[Path] = []
    scandir, listdir = os.scandir, os.listdir
    monkeypatch.setattr(os, "scandir", lambda path=".": listed.append(Path(path)) or scandir(path))
    monkeypatch.setattr(os, "listdir", lambda path=".": listed.append(Path(path)) or listdir(path))
    summary = many.segment_many(spec, jobs, partial(many.run_local, models=models))
    assert (summary["done_before"], summary["segmented"]) == (2, 1)
    assert spec.out_dir in listed  # its own temporaries are looked for
    assert not [path for path in listed if any(path == f or f in path.parents for f in finished)]


def test_failures_csv_grows_as_failures_happen_and_is_whole_at_the_end(tmp_path, monkeypatch):
    """Each failure is a row a reader finds at once; the file is written atomically only at the
    first failure and at the end (not rewritten per failure: linear, not quadratic)."""
    jobs = many.plan_jobs([tmp_path / f"v{k}.mp4" for k in range(7)])
    spec = many.RunSpec(tmp_path / "out", "owod-bind", OwodBindSettings(), preset="tiny")
    seen: list[list[str]] = []

    def engine(spec, todo):
        for k, job in enumerate(todo):
            path = spec.out_dir / "failures.csv"
            seen.append([row["name"] for row in read_failures(spec.out_dir)] if path.exists() else [])
            yield many.Outcome(job, f"error, {k}" if k % 3 else None, frames=2)

    writes = []
    atomic_write_text = many.atomic_write_text
    monkeypatch.setattr(many, "atomic_write_text", lambda path, text: writes.append(path) or atomic_write_text(path, text))
    summary = many.segment_many(spec, jobs, engine)
    failed = [job.name for k, job in enumerate(jobs) if k % 3]
    assert seen == [[], [], failed[:1], failed[:2], failed[:2], failed[:3], failed[:4]]
    assert (summary["segmented"], summary["failed"]) == (3, 4)
    assert read_failures(spec.out_dir) == [
        {"path": str(job.path), "name": job.name, "error": f"error, {k}"} for k, job in enumerate(jobs) if k % 3
    ]
    assert [path.name for path in writes].count("failures.csv") == 2
    assert not list(spec.out_dir.glob(f"*{TEMP_SUFFIX}"))

    def all_good(spec, todo):
        yield from (many.Outcome(job, None, frames=2) for job in todo)

    assert many.segment_many(spec, jobs, all_good)["failures"] is None
    assert not (spec.out_dir / "failures.csv").exists()


def test_run_json_records_every_component_source_with_local_paths_absolute(tmp_path, monkeypatch):
    (tmp_path / "weights" / "sam").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    jobs = many.plan_jobs([tmp_path / "v.mp4"])

    def no_work(spec, todo):
        for job in todo:  # an output, so that run.json has something to protect
            (spec.out_dir / job.name).mkdir()
            (spec.out_dir / job.name / "evidence.json").write_text("{}", encoding="utf-8")
            yield many.Outcome(job, None, frames=1)

    relative = many.RunSpec(tmp_path / "out", "owod-bind", OwodBindSettings(), preset="tiny", models={"sam": "./weights/sam"})
    many.segment_many(relative, jobs, no_work)
    recorded = json.loads((tmp_path / "out" / "run.json").read_text())["models"]
    assert set(recorded) == set(COMPONENTS) and recorded == component_sources("tiny", sam=str(tmp_path / "weights/sam"))
    assert recorded["sam"] == repr(str(tmp_path / "weights" / "sam"))
    assert "random weights" in recorded["owlv2"]  # the preset's own, recorded too
    # the same folder spelled absolutely: the same run
    absolute = replace(relative, models={"sam": str(tmp_path / "weights" / "sam")})
    assert many.segment_many(absolute, jobs, no_work)["done_before"] == 1
    # a preset whose source changed since (here: the record of an older one) is another run
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    run_json["models"]["owlv2"] = "'google/owlv2-base-patch16-ensemble'"
    (tmp_path / "out" / "run.json").write_text(json.dumps(run_json), encoding="utf-8")
    with pytest.raises(ValueError, match="another run.*owlv2"):
        many.segment_many(absolute, jobs, no_work)


def test_summary_line_says_what_happened():
    summary = {"segmented": 0, "done_before": 1, "failed": 1, "elapsed_s": 0.4, "videos_per_s": 0.0}
    line = many.summary_line(summary, Path("out"))
    assert line == "0 segmented, 1 already done, 1 failed (0.4 s, every video tried failed) → out"
    assert many.summary_line({**summary, "failed": 0}, Path("out")).endswith("(0.4 s, nothing to do) → out")
    assert "(0.4 s, 2.5 videos/s)" in many.summary_line({**summary, "segmented": 1, "videos_per_s": 2.5}, Path("out"))


@pytest.mark.parametrize("kind", ["eval", None])  # None: an eval run.json written before kinds were recorded
def test_segment_many_refuses_a_folder_of_cmsf_eval(corpus, tmp_path, kind):
    out = tmp_path / "run"
    (out / "pred_masks" / "s4_a").mkdir(parents=True)
    record = {"subset": "s4", "split": "test", "pipeline": "owod-bind", "preset": "tiny", "settings": {}}
    if kind is not None:
        record = {"kind": kind, **record}
    (out / "run.json").write_text(json.dumps(record), encoding="utf-8")
    result = run("segment-many", corpus.videos[0], "-p", "owod-bind", "--preset", "tiny", "--out", out)
    assert result.exit_code == 1 and "`cmsf eval` run" in result.output and "another --out" in result.output
    assert json.loads((out / "run.json").read_text()) == record
    assert sorted(p.name for p in out.iterdir()) == ["pred_masks", "run.json"]


def test_a_model_that_cannot_load_stops_the_run(corpus, tmp_path):
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    result = run("segment-many", *corpus.videos, "-p", "owod-bind", "--preset", "tiny", "--model", f"owlv2={empty}",
                 "--out", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 1 and "owlv2" in result.output and "--model COMPONENT=PATH" in result.output
    assert not (tmp_path / "out" / "failures.csv").exists()
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- usage


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-p", "owod-bind"], "no input"),
        (["{video}"], "--pipeline"),
        (["{video}", "-p", "owod-bind", "--workers", "2"], "--workers: only with --engine ray"),
        (["{video}", "-p", "owod-bind", "--ray-address", "x:1"], "--ray-address: only with --engine ray"),
        (["{video}", "-p", "owod-bind", "--num-frames", "3", "--fps", "2"], "at most one"),
        (["{video}", "-p", "owod-bind", "--set", "tau=1"], "bind_threshold"),
        (["{video}", "-p", "owod-bind", "--frames-per-batch", "0"], "--frames-per-batch"),
        (["{video}", "missing.mp4", "-p", "owod-bind"], "missing.mp4"),
    ],
)
def test_usage_errors(corpus, tmp_path, args, needle):
    result = run("segment-many", *[a.replace("{video}", str(corpus.videos[0])) for a in args], "--out", tmp_path / "o")
    assert result.exit_code == 2 and needle in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_ray_engine_without_ray_says_how_to_install_it(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = run("segment-many", corpus.videos[0], "-p", "owod-bind", "--engine", "ray", "--out", tmp_path / "o")
    assert result.exit_code == 2 and 'pip install "cmsf[ray]"' in result.output
    assert not (tmp_path / "o").exists()


def test_help_shows_examples():
    result = run("segment-many", "--help")
    assert result.exit_code == 0 and "cmsf segment-many" in result.output and "--manifest" in result.output
