"""``cmsf segment-many --engine ray`` on a local Ray instance (2 CPUs, tiny preset): the same
outputs as the local engine byte for byte, an interrupted run resumed to them, a corrupt input in
failures.csv. Ray is part of the test install (the ``ray`` extra): without it this module fails,
it is never skipped."""

from __future__ import annotations

import csv
import functools
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import ray
import torch
from click.testing import CliRunner
from corpus_fixture import found, make_corpus, output_files

import cmsf
from cmsf.cli import commands as cli
from cmsf.cli.options import TINY_SETTINGS
from cmsf.io.files import TEMP_SUFFIX
from cmsf.io.media import load_clip
from cmsf.pipelines.settings import OwodBindSettings, make_settings
from cmsf.runs.distributed import Segmenter, actor_pool, clip_from_bytes, clip_to_bytes, run_ray, videos_per_call
from cmsf.runs.many import RunSpec, is_complete, plan_jobs, segment_many

TREE = str(Path(cmsf.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module; its workers import the cmsf under test. It declares
    one (logical) GPU so that the GPU layout runs too (decoding tasks, then actors asking for a
    GPU), on the CPU (``--device cpu``)."""
    path = os.pathsep.join(p for p in (TREE, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # fmt: skip
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=True)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def evidence_results(out: Path) -> dict[str, dict]:
    return {p.parent.name: found(json.loads(p.read_text())) for p in sorted(out.glob("*/evidence.json"))}


@pytest.mark.parametrize("which", ["video", "folder"])
def test_decoded_clips_cross_the_object_store_unchanged(corpus, which):
    clip = load_clip(corpus.videos[0] if which == "video" else corpus.folder)
    back = clip_from_bytes(clip_to_bytes(clip))
    assert torch.equal(back.frames, clip.frames) and back.frames.dtype == torch.uint8
    assert torch.equal(back.waveform, clip.waveform) and back.waveform.dtype == clip.waveform.dtype
    assert (back.sample_rate, back.source, back.frame_times) == (clip.sample_rate, clip.source, clip.frame_times)


def test_an_actor_whose_models_cannot_load_answers_fatal_rows(corpus, tmp_path):
    """(In this process: the actor class itself.) No video is blamed, nothing is written."""
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    spec = RunSpec(tmp_path / "out", "owod-bind", OwodBindSettings(), preset="tiny", device="cpu", models={"owlv2": str(empty)})
    jobs = plan_jobs(corpus.videos[:2])
    rows = {key: np.asarray([getattr(job, key) if key == "name" else str(getattr(job, key) or "") for job in jobs],
                            dtype=object) for key in ("name", "path", "audio")}  # fmt: skip
    answer = Segmenter(spec)(rows)
    assert answer["fatal"].tolist() == [True, True] and answer["name"].tolist() == [job.name for job in jobs]
    assert all("owlv2" in error for error in answer["error"])
    assert not any(is_complete(spec.out_dir, job) for job in jobs)


@pytest.mark.parametrize(
    "frames_per_batch, num_frames, fps, expected",
    [(64, None, None, 6), (64, 5, None, 13), (64, None, 2.0, 3), (10, None, None, 1), (2, 8, None, 1)],
)
def test_an_actor_call_holds_about_one_model_batch(frames_per_batch, num_frames, fps, expected):
    spec = RunSpec(Path("out"), "owod-bind", OwodBindSettings(), frames_per_batch=frames_per_batch, num_frames=num_frames, fps=fps)
    assert videos_per_call(spec) == expected


def fake_ray(resources: dict[str, float]) -> SimpleNamespace:
    return SimpleNamespace(
        cluster_resources=lambda: resources, data=SimpleNamespace(ActorPoolStrategy=lambda **sizes: sizes)
    )


def test_actor_pool_follows_the_cluster_and_refuses_what_a_local_instance_lacks():
    gpu_cluster, cpu_cluster = fake_ray({"CPU": 16.0, "GPU": 2.0}), fake_ray({"CPU": 4.0})
    assert actor_pool(gpu_cluster, None, None, 1) == ({"min_size": 1, "max_size": 2}, 1.0)
    assert actor_pool(gpu_cluster, None, 0.5, 1) == ({"min_size": 1, "max_size": 4}, 0.5)
    assert actor_pool(gpu_cluster, 3, 0.0, 1) == ({"size": 3}, 0.0)
    assert actor_pool(cpu_cluster, None, None, 2) == ({"min_size": 1, "max_size": 2}, 0.0)
    assert actor_pool(cpu_cluster, None, 1.0, 8) == ({"min_size": 1, "max_size": 1}, 1.0)  # a cluster may grow
    with pytest.raises(ValueError, match="threads: each Ray actor reserves 8 CPUs"):
        actor_pool(cpu_cluster, None, None, 8, fixed_cluster=True)
    with pytest.raises(ValueError, match="gpus_per_worker"):
        actor_pool(cpu_cluster, None, 1.0, 1, fixed_cluster=True)


def test_ray_run_interrupted_then_resumed_equals_the_local_engine(local_ray, corpus, tmp_path):
    inputs = [corpus.videos[0], corpus.broken, corpus.videos[1], corpus.videos[2], corpus.folder]
    common = ["-p", "owod-bind", "--preset", "tiny", "--device", "cpu", "--frames-per-batch", "2", "--threads", "1"]
    local = run("segment-many", *inputs, *common, "--out", tmp_path / "local")
    assert local.exit_code == 1, local.output

    # a Ray run on two of the inputs, stopped by Ctrl-C at its first result; then the traces of a
    # kill during a write: a finished video's evidence.json gone, a mask half-written, a
    # temporary file left
    out = tmp_path / "ray"
    spec = RunSpec(out, "owod-bind", make_settings("owod-bind", TINY_SETTINGS["owod-bind"]), preset="tiny", device="cpu",
                   frames_per_batch=2, threads=1)  # the settings of the command with --preset tiny
    jobs = plan_jobs(inputs)

    def interrupt_at_the_first(items, description, unit):
        for item in items:
            yield item
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine = functools.partial(run_ray, workers=1, gpus_per_worker=0)  # CPU layout: actors decode
        segment_many(spec, [jobs[0], jobs[2]], engine, progress=interrupt_at_the_first)
    complete = [job for job in jobs if is_complete(out, job)]
    assert 1 <= len(complete) <= 2
    killed = out / complete[0].name
    (killed / "evidence.json").unlink()
    (killed / "mask_0001.png").write_bytes(b"half")
    (killed / f".mask_0000.png.0123abcd{TEMP_SUFFIX}").write_bytes(b"half")
    done = len(complete) - 1

    # resumed through the command, GPU layout (a GPU per actor by default, the cluster having
    # one): decoding in CPU tasks, decoded clips through the object store
    resumed = run("segment-many", *inputs, *common, "--engine", "ray", "--out", out)
    assert resumed.exit_code == 1, resumed.output
    assert f"{len(corpus.good) - done} segmented, {done} already done, 1 failed" in resumed.stdout
    assert output_files(out) == output_files(tmp_path / "local")  # masks and overlays, byte for byte
    assert len(output_files(out)) == 2 * 2 * len(corpus.good)
    assert evidence_results(out) == evidence_results(tmp_path / "local")
    assert not list(out.rglob(f"*{TEMP_SUFFIX}"))
    assert read_csv(out / "failures.csv") == read_csv(tmp_path / "local" / "failures.csv")
    assert [row["path"] for row in read_csv(out / "failures.csv")] == [str(corpus.broken)]
