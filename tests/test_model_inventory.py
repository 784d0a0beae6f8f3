"""``cmsf models`` and :func:`cmsf.models.inventory.describe_models`: what a run would load,
where it is, and (``--check``) that it loads and runs; offline with an empty cache it says what is
missing and how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import constants as hub_constants

from cmsf.cli import commands as cli
from cmsf.models.inventory import PIPELINE_COMPONENTS, describe_models
from cmsf.models.loading import load_models
from cmsf.pipelines.catalog import PIPELINES
from cmsf.runs.model_check import check_component
from tests.hub_checkpoints import HUB_CHECKPOINTS, save_hub_like


def run(*args: str):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture
def empty_cache(monkeypatch, tmp_path) -> Path:
    """An empty Hugging Face cache and torch hub folder, offline, in an empty working folder."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "hub"


def test_every_pipeline_names_its_components():
    assert set(PIPELINE_COMPONENTS) == set(PIPELINES)


def test_the_tiny_rows_count_the_parameters_of_the_loaded_models():
    models = load_models("tiny", device="cpu")
    rows = describe_models(models)
    assert [r.component for r in rows] == ["owlv2", "sam", "imagebind", "ast", "grounding_dino", "sam3", "tracker"]
    assert models.loaded == ()  # listing loads nothing
    for row in rows:
        loaded = models.get(row.component)
        module = loaded if isinstance(loaded, torch.nn.Module) else loaded.model
        assert row.parameters == sum(p.numel() for p in module.parameters())
        assert row.available and row.dtype == "float32" and row.remedy == ""
    by_name = {r.component: r for r in rows}
    assert by_name["sam"].pipelines == ("owod-bind", "sam-bind", "at-gdino-sam", "owod-bind-tracked", "sam-bind-tracked")
    assert by_name["sam"].family == "sam" and by_name["sam"].model_class == "SamModel"
    assert by_name["tracker"].pipelines == ("owod-bind-tracked", "sam-bind-tracked")
    assert by_name["tracker"].family == "sam2_video" and by_name["tracker"].model_class == "Sam2VideoModel"
    assert [r.component for r in describe_models(models, ["at-sam3"])] == ["ast", "sam3"]
    with pytest.raises(ValueError, match="pipelines:"):
        describe_models(models, ["owod"])


def test_mavl_replaces_owlv2_as_the_proposer():
    rows = describe_models(load_models("tiny", device="cpu", mavl="random"), ["owod-bind"])
    assert [r.component for r in rows] == ["mavl", "sam", "imagebind"]


def test_offline_with_an_empty_cache_everything_is_missing_with_a_remedy(empty_cache):
    rows = describe_models(load_models("paper", device="cpu"))
    assert rows and not any(r.available for r in rows)
    for row in rows:
        assert row.location == "must be downloaded" and row.remedy
    by_name = {r.component: r for r in rows}
    assert "hf download facebook/sam-vit-huge" in by_name["sam"].remedy and by_name["sam"].download_bytes is None
    assert "accept its licence" in by_name["sam3"].remedy and "HF_TOKEN" in by_name["sam3"].remedy
    assert ".checkpoints" in by_name["imagebind"].remedy and by_name["imagebind"].download_bytes == 4_500_000_000
    result = run("models", "--preset", "paper", "--pipeline", "at-sam3")
    assert result.exit_code == 1
    assert "must be downloaded (size unknown offline)" in result.stdout
    assert "2 of 2 components cannot load" in result.stderr and "--model ast=PATH" in result.stderr


def _cache(hub: Path, hub_id: str, folder_of: callable) -> Path:
    """A snapshot of ``hub_id`` in the Hugging Face cache layout (refs/main → snapshots/REV)."""
    repo = hub / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    return folder_of(snapshot)


def test_a_cached_video_checkpoint_is_listed_as_its_image_class_and_checked(empty_cache):
    entry = next(e for e in HUB_CHECKPOINTS if e.hub_id == "facebook/sam2.1-hiera-large")
    snapshot = _cache(empty_cache, entry.hub_id, lambda folder: save_hub_like(entry, folder))
    models = load_models("2025", device="cpu")
    (row,) = [r for r in describe_models(models, ["sam-bind"]) if r.component == "sam"]
    assert row.available and row.location == str(snapshot)
    assert (row.family, row.model_class) == ("sam2_video", "Sam2Model")
    assert row.parameters == sum(p.numel() for p in models.sam.model.parameters())
    result = check_component(models, "sam")
    assert result.ok and result.forward_seconds is not None and result.peak_bytes is None


def test_check_reports_a_failure_instead_of_raising(empty_cache):
    result = check_component(load_models("paper", device="cpu"), "ast")
    assert not result.ok and "ModelLoadError" in result.error and result.load_seconds is None


def test_models_check_with_the_tiny_preset_exits_0():
    result = run("models", "--preset", "tiny", "--check")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("check:   loaded in") == 7
    assert "peak GPU memory n/a (not CUDA)" in result.stdout


def test_the_paper_random_listing_counts_the_papers_architectures():
    result = run("models", "--preset", "paper-random", "--pipeline", "at-gdino-sam")
    assert result.exit_code == 0, result.output
    assert "sam (SamModel), float32, 641.1 M parameters" in result.stdout  # ViT-H
    assert "grounding-dino (GroundingDinoForObjectDetection), float32, 172.3 M parameters" in result.stdout


def test_a_bad_pipeline_is_a_usage_error():
    assert run("models", "--pipeline", "owod").exit_code == 2
