"""What a new user runs first: the README's offline smoke run of each pipeline on
``examples/demo.mp4`` shows a mask, and a Python user saves a result as ``cmsf segment`` does
(:func:`cmsf.save_segmentation`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cmsf import load_models, owod_bind, save_segmentation
from cmsf.cli import commands as cli
from cmsf.cli.options import TINY_NOTE, TINY_SETTINGS
from cmsf.io import media
from cmsf.names import PIPELINE_NAMES
from cmsf.pipelines.settings import settings_type

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.mp4"


@pytest.mark.parametrize("pipeline", PIPELINE_NAMES)
def test_the_readme_smoke_run_writes_a_mask(pipeline: str, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli.main, ["segment", str(DEMO), "--pipeline", pipeline, "--preset", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert TINY_NOTE in result.stderr
    evidence = json.loads((out / "evidence.json").read_text())
    covered = [frame["coverage"] for frame in evidence["frames"]]
    assert any(0 < c for c in covered), covered
    assert not all(c > 0.99 for c in covered), covered  # not the whole frame everywhere
    assert any(media.read_mask(out / frame["mask"]).any() for frame in evidence["frames"])
    nonempty = sum(c > 0 for c in covered)
    assert f"5 frames ({nonempty} with a mask)" in result.stdout
    assert {key: evidence["settings"][key] for key in TINY_SETTINGS[pipeline]} == TINY_SETTINGS[pipeline]


def test_tiny_defaults_are_the_commands_only(tmp_path: Path) -> None:
    """--set wins over a tiny default; another preset gets none; the library keeps the paper's."""
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli.main, ["segment", str(DEMO), "-p", "owod-bind", "--preset", "tiny",
                                           "--set", "bind_threshold=0.99", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "evidence.json").read_text())["settings"]
    assert settings["bind_threshold"] == 0.99 and settings["box_threshold"] == TINY_SETTINGS["owod-bind"]["box_threshold"]
    library = settings_type("owod-bind")()
    assert library.bind_threshold == 0.7 and library.box_threshold == 0.5
    for pipeline, overrides in TINY_SETTINGS.items():
        assert set(overrides) <= set(asdict(settings_type(pipeline)()))


@pytest.fixture(scope="module")
def demo_result():
    clip = media.load_clip(DEMO)
    models = load_models("tiny", device="cpu")
    return clip, owod_bind(clip.frames, clip.waveform, clip.sample_rate, models, **TINY_SETTINGS["owod-bind"])


def test_save_segmentation_writes_what_segment_writes(demo_result, tmp_path: Path) -> None:
    clip, result = demo_result
    evidence = save_segmentation(result, clip, tmp_path / "py")
    command = CliRunner().invoke(cli.main, ["segment", str(DEMO), "-p", "owod-bind", "--preset", "tiny", "--out", str(tmp_path / "cli")])
    assert command.exit_code == 0, command.output
    written = json.loads((tmp_path / "py" / "evidence.json").read_text())
    by_command = json.loads((tmp_path / "cli" / "evidence.json").read_text())
    assert written == evidence and written["frames"] == by_command["frames"] and written["settings"] == by_command["settings"]
    assert written["preset"] is None and by_command["preset"] == "tiny"
    for t in range(clip.num_frames):
        for name in (f"mask_{t:04d}.png", f"overlay_{t:04d}.png"):
            assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()


def test_save_segmentation_of_frames_alone_and_bad_frames(demo_result, tmp_path: Path) -> None:
    clip, result = demo_result
    evidence = save_segmentation(result, clip.frames, str(tmp_path / "frames"))
    assert evidence["sample_rate"] is None and evidence["audio_seconds"] is None and evidence["source"] is None
    assert [frame["time_s"] for frame in evidence["frames"]] == [None] * clip.num_frames
    assert torch.equal(media.read_mask(tmp_path / "frames" / "mask_0003.png"), result.masks[3])
    with pytest.raises(ValueError, match=r"frames: expected Tensor\[5, 3, 224, 224\]"):
        save_segmentation(result, clip.frames[:4], tmp_path / "bad")
    with pytest.raises(ValueError, match="frames: expected a Clip or Tensor"):
        save_segmentation(result, clip.frames.float(), tmp_path / "bad")
    with pytest.raises(ValueError, match="frames: expected a Clip or Tensor"):
        save_segmentation(result, [clip.frames[0]], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


ROOT = DEMO.parent.parent


def _fenced_bash(text: str, heading: str) -> list[str]:
    """The commands of the ```bash blocks of README.md's section ``heading`` (comments dropped)."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```bash\n")[1:]
    lines = [line.split("  #", 1)[0].strip() for block in blocks for line in block.split("```", 1)[0].splitlines()]
    return [line for line in lines if line]


def test_ci_runs_exactly_the_readme_install_and_test_commands() -> None:
    readme = _fenced_bash((ROOT / "README.md").read_text(encoding="utf-8"), "Install and test")
    assert readme == ["bash scripts/install.sh", "python -m pytest tests bench --benchmark-disable -q"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line for line in ci if line and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert commands == readme
    script = (ROOT / "scripts" / "install.sh").read_text(encoding="utf-8")
    for step in ("torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0", 'pip install -e ".[test]"',
                 "pip install --no-deps imagebind-unofficial==0.1.1", "apt-get install -y -qq chromium",
                 "https://download.pytorch.org/whl/cpu"):  # fmt: skip
        assert step in script


def test_install_script_refuses_an_unknown_option() -> None:
    import subprocess

    done = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--gpu"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage: bash scripts/install.sh [--cpu]" in done.stderr


def test_the_pipelines_document_their_arguments_and_result() -> None:
    from cmsf.pipelines.per_frame import PIPELINES

    for pipeline, function in PIPELINES.items():
        doc = function.__doc__ or ""
        assert "Args:" in doc and "Returns:" in doc and "Raises:" in doc, pipeline
        for argument in ("frames:", "waveform:", "sample_rate:", "models:", "settings:"):
            assert argument in doc, (pipeline, argument)
        assert "Tensor[T, H, W]" in doc and settings_type(pipeline).__name__ in doc
