"""``cmsf segment-many --engine ray`` with a tracked pipeline on a local Ray instance: the same
masks, overlays and evidence (tracks included) as the local engine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import ray
from click.testing import CliRunner
from corpus_fixture import make_corpus, output_files

import cmsf
from cmsf.cli import commands as cli

TREE = str(Path(cmsf.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def local_ray():
    path = os.pathsep.join(p for p in (TREE, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=True)


def test_ray_engine_equals_the_local_engine_with_tracks(local_ray, tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    inputs = corpus.videos[:2]
    common = ["-p", "owod-bind-tracked", "--preset", "tiny", "--device", "cpu", "--frames-per-batch", "4",
              "--threads", "1", "--set", "bind_threshold=0.1", "--set", "track_threshold=0.3"]  # fmt: skip
    local = run("segment-many", *inputs, *common, "--out", tmp_path / "local")
    assert local.exit_code == 0, local.output
    distributed = run("segment-many", *inputs, *common, "--engine", "ray", "--workers", "1", "--out", tmp_path / "ray")
    assert distributed.exit_code == 0, distributed.output
    assert output_files(tmp_path / "ray") == output_files(tmp_path / "local")
    for folder in ("local", "ray"):
        results = [json.loads(p.read_text()) for p in sorted((tmp_path / folder).glob("*/evidence.json"))]
        assert len(results) == 2 and all("tracks" in result for result in results)
    local_results = sorted((tmp_path / "local").glob("*/evidence.json"))
    ray_results = sorted((tmp_path / "ray").glob("*/evidence.json"))
    for a, b in zip(local_results, ray_results):
        local_evidence, ray_evidence = json.loads(a.read_text()), json.loads(b.read_text())
        assert (local_evidence["frames"], local_evidence["tracks"]) == (ray_evidence["frames"], ray_evidence["tracks"])
