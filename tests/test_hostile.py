"""Hostile inputs and faults of a second matrix (issue 23): symlink loops, FIFOs and bad names
among the inputs, reading threads that never return, SIGTERM, damaged caches and run folders,
a full disk, a changed --root, and the library's boundary checks. Each test fails without its
fix; the signal tests run the command in a subprocess with a timeout, so a hang fails the test
instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from avsbench_fixture import write_video
from click.testing import CliRunner

from cmsf.cli import commands as cli
from cmsf.io.files import LOCK_NAME

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# A `cmsf` command whose owod-bind is a stand-in (the left half of every frame) and whose models
# are the lazy tiny ones (never loaded); ``CMSF_BLOCK_READS=1`` makes every video read block in
# opening a FIFO (what a reader thread stuck on a bad input does), announcing it on stderr.
_STAND_IN_CLI = r"""
import os, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import torch
from stand_ins import as_stages
from cmsf.cli import commands as cli, options
from cmsf.models import loading
from cmsf.pipelines import per_frame
from cmsf.runs import many

class Result:
    def __init__(self, masks):
        self.masks = masks

def left_half(frames, waveform, sample_rate, models, **settings):
    masks = torch.zeros(frames.shape[0], *frames.shape[-2:], dtype=torch.bool)
    masks[..., : frames.shape[-1] // 2] = True
    return Result(masks)

per_frame.PIPELINE_STAGES["owod-bind"] = as_stages(left_half)
options.load_models = lambda *a, **k: loading.load_models("tiny", device="cpu")
if os.environ.get("CMSF_BLOCK_READS"):
    def blocked(spec, job):
        print("reading-blocked", file=sys.stderr, flush=True)
        with open(os.environ["CMSF_BLOCK_READS"], "rb"):  # a FIFO nobody writes: blocks for good
            pass
    many.load_job = blocked
cli.main(sys.argv[3:], prog_name="cmsf")
"""


def _command(*args: object) -> list[str]:
    return [sys.executable, "-c", _STAND_IN_CLI, str(REPO), str(TESTS), *[str(a) for a in args]]


def _environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mkv", seconds=2, fps=5, acodec="pcm_s16le", audio_rate=16_000)


def _failures(out: Path) -> list[str]:
    return (out / "failures.csv").read_text(encoding="utf-8").splitlines()[1:]


# ---------------------------------------------------------------------------- FIFOs and reader threads


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_among_the_inputs_is_refused_unread_and_the_others_go_on(tmp_path, video):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    child = subprocess.run(
        _command("segment-many", fifo, video, "-p", "owod-bind", "--out", out),
        env=_environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 1, child.stderr
    assert "Traceback" not in child.stderr
    [row] = _failures(out)
    assert str(fifo) in row and "FIFO" in row and "not a regular file" in row
    assert len(list(out.glob("clip-*/evidence.json"))) == 1  # the good video was segmented
    assert not (out / LOCK_NAME).exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_reader_blocked_for_good_does_not_hold_up_ctrl_c_or_sigterm(tmp_path, video, number):
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    child = subprocess.Popen(
        _command("segment-many", video, "-p", "owod-bind", "--out", out),
        env=_environment(CMSF_BLOCK_READS=str(fifo)), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stderr is not None
        for line in child.stderr:  # wait until a reader is blocked
            if "reading-blocked" in line:
                break
        time.sleep(0.3)  # the main thread now waits for that reader
        child.send_signal(number)
        _, rest = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 1, rest
    assert "Aborted!" in rest and "Traceback" not in rest
    assert not (out / LOCK_NAME).exists()  # the lock went with the run
