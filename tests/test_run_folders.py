"""Run folders (issue 15): one owner at a time (cmsf.io.files.claim_folder), writability checked up
front, and a segment output replaced as one set (cmsf.runs.outputs.SegmentOutput): old or new, never
a mix, and never a file that is not cmsf's own touched."""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cmsf.io import files, media
from cmsf.io.decoding import Clip
from cmsf.io.files import LOCK_NAME, FolderInUseError, UnwritableFolderError, claim_folder, deferred_interrupts
from cmsf.runs import evaluate, many, outputs, progress, sweep
from cmsf.runs.outputs import SegmentOutput, write_segmentation

FILES_PY = Path(files.__file__)


def _lock_of(folder: Path) -> dict:
    return json.loads((folder / LOCK_NAME).read_text())


# ---------------------------------------------------------------------------- claim_folder


def test_claim_creates_checks_locks_and_cleans_up(tmp_path):
    folder = tmp_path / "a" / "b" / "out"
    with claim_folder(folder) as claimed:
        assert claimed == folder and folder.is_dir()
        holder = _lock_of(folder)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["started"].endswith("UTC") and holder["command"]
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # the write probe is gone
    assert not (tmp_path / "a").exists()  # created by the claim and left empty: removed again

    with claim_folder(folder):
        (folder / "result.txt").write_text("kept")
    assert sorted(p.name for p in folder.iterdir()) == ["result.txt"]  # the lock is gone, the result stays


def test_a_second_claim_is_refused_naming_folder_and_owner(tmp_path):
    with claim_folder(tmp_path / "out"):
        with pytest.raises(FolderInUseError) as raised:
            with claim_folder(tmp_path / "out"):
                pass  # pragma: no cover
        message = str(raised.value)
        assert str(tmp_path / "out") in message and f"pid {os.getpid()}" in message
        assert socket.gethostname() in message and LOCK_NAME in message
        assert (tmp_path / "out" / LOCK_NAME).exists()  # the refused claim leaves the owner's lock alone
    with claim_folder(tmp_path / "out"):  # released: free again
        pass


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_on_error_and_interrupt(tmp_path, error):
    with pytest.raises(error):
        with claim_folder(tmp_path):
            raise error()
    assert not (tmp_path / LOCK_NAME).exists()
    with claim_folder(tmp_path):
        pass


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    "holder, taken_over",
    [
        ({"pid": "dead"}, True),  # same host, pid gone
        ({"pid": "live", "process_start": "1"}, True),  # same host, pid reused by a later process
        ({"pid": "live"}, False),  # same host, alive
        ({"pid": "dead", "host": "elsewhere.example"}, False),  # another host: cannot be checked
        (None, True),  # empty: its creator died before writing it (no process holds it)
    ],
)
def test_a_stale_lock_is_taken_over_and_a_live_one_respected(tmp_path, holder, taken_over):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        text = ""
        if holder is not None:
            holder = {"host": socket.gethostname(), "started": "then", "command": "cmsf eval", **holder}
            holder["pid"] = sleeper.pid if holder["pid"] == "live" else _dead_pid()
            text = json.dumps(holder)
        (tmp_path / LOCK_NAME).write_text(text)
        if taken_over:
            with claim_folder(tmp_path):
                assert _lock_of(tmp_path)["pid"] == os.getpid()
            assert not (tmp_path / LOCK_NAME).exists()
        else:
            with pytest.raises(FolderInUseError, match=rf"pid {holder['pid']} on host {holder['host']}, since then: cmsf eval"):
                with claim_folder(tmp_path):
                    pass  # pragma: no cover
            assert json.loads((tmp_path / LOCK_NAME).read_text()) == holder  # untouched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_another_process_holding_the_folder_is_refused_until_it_is_killed(tmp_path):
    """A real second process (files.py loaded on its own: it imports nothing of cmsf) holds the
    folder; killed with SIGKILL it leaves its lock file behind, which the next claim takes over."""
    script = (
        "import importlib.util, sys, time\n"
        "spec = importlib.util.spec_from_file_location('cmsf_files', sys.argv[1])\n"
        "files = importlib.util.module_from_spec(spec); spec.loader.exec_module(files)\n"
        "with files.claim_folder(sys.argv[2]):\n"
        "    print('claimed', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(FILES_PY), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "claimed"
        with pytest.raises(FolderInUseError, match=rf"pid {child.pid} on host"):
            with claim_folder(tmp_path):
                pass  # pragma: no cover
    finally:
        child.kill()
        child.wait()
    assert _lock_of(tmp_path)["pid"] == child.pid  # killed outright: the file stays …
    with claim_folder(tmp_path):  # … and is taken over (no process holds it, the pid is gone)
        assert _lock_of(tmp_path)["pid"] == os.getpid()


def test_unwritable_folders_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UnwritableFolderError, match=r"file\.txt/out: cannot be created \(.*\)"):
        with claim_folder(blocker / "out"):
            pass  # pragma: no cover
    with pytest.raises(UnwritableFolderError, match=r"file\.txt: not a folder"):
        with claim_folder(blocker):
            pass  # pragma: no cover

    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(files.os, "open", read_only)
    folder = tmp_path / "ro"
    folder.mkdir()
    with pytest.raises(UnwritableFolderError) as raised:
        with claim_folder(folder):
            pass  # pragma: no cover
    assert str(raised.value) == f"{folder}: cannot write files here (Permission denied)"
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UnwritableFolderError, match=r"ro: cannot write files here \(Permission denied\)"):
            with claim_folder(folder):
                pass  # pragma: no cover
        with pytest.raises(UnwritableFolderError, match=r"cannot be created \(Permission denied\)"):
            with claim_folder(folder / "sub"):
                pass  # pragma: no cover
    finally:
        folder.chmod(0o755)


def test_deferred_interrupts_deliver_after_the_block():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            signal.raise_signal(signal.SIGINT)
            done.append("finished")  # not interrupted half-way
    assert done == ["finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    with deferred_interrupts():
        pass  # nothing received: nothing delivered


# ---------------------------------------------------------------------------- SegmentOutput


class _Result:
    def __init__(self, masks: torch.Tensor) -> None:
        self.masks = masks

    def to_json(self) -> dict:
        return {"pixels": [int(m.sum()) for m in self.masks]}


def _write_run(out: Path, frames: int, value: int) -> dict:
    """A segment output of ``frames`` frames whose masks all hold ``value`` > 0 in their first
    ``value`` columns (so each run's files differ)."""
    clip = Clip(torch.full((frames, 3, 6, 8), value, dtype=torch.uint8), torch.zeros(1, 16_000 * frames), 16_000, "x.mp4")
    masks = torch.zeros(frames, 6, 8, dtype=torch.bool)
    masks[..., :value] = True
    run = {"input": "x.mp4", "pipeline": "p", "preset": "tiny", "device": "cpu", "dtype": "float32", "settings": {"v": value}}
    return write_segmentation(out, clip, _Result(masks), run, started=time.perf_counter())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


USER_FILES = {
    "notes.txt": b"mine",
    "mask_5.png": b"not cmsf's name",
    "mask_00004.png": b"not cmsf's name",
    "overlay_0004.jpg": b"mine",
    "evidence.json.bak": b"mine",
    "sub/mask_0001.png": b"in a subfolder: mine",
}


def _add_user_files(out: Path) -> None:
    for name, data in USER_FILES.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)


def test_a_new_run_replaces_the_old_set_and_leaves_the_rest(tmp_path):
    out = tmp_path / "out"
    _write_run(out, 5, 3)
    _add_user_files(out)
    evidence = _write_run(out, 2, 5)
    names = sorted(p.name for p in out.iterdir() if p.is_file() and outputs.is_output_name(p.name))
    assert names == ["evidence.json", "mask_0000.png", "mask_0001.png", "overlay_0000.png", "overlay_0001.png"]
    assert json.loads((out / "evidence.json").read_text()) == evidence and evidence["settings"] == {"v": 5}
    assert media.read_mask(out / "mask_0001.png")[:, :5].all() and not media.read_mask(out / "mask_0001.png")[:, 5:].any()
    snapshot = _snapshot(out)
    assert all(snapshot[name] == data for name, data in USER_FILES.items())
    assert sorted(p.name for p in out.iterdir()) == sorted({*names, "notes.txt", "mask_5.png", "mask_00004.png", "overlay_0004.jpg", "evidence.json.bak", "sub"})


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_an_interrupted_run_leaves_the_old_set_untouched(tmp_path, monkeypatch, error):
    out = tmp_path / "out"
    _write_run(out, 4, 3)
    _add_user_files(out)
    before = _snapshot(out)
    real_encode = media.encode_png
    calls = []

    def failing_encode(array):
        calls.append(1)
        if len(calls) == 3:  # the new run's second mask
            raise error("interrupted")
        return real_encode(array)

    monkeypatch.setattr(media, "encode_png", failing_encode)
    with pytest.raises(error):
        _write_run(out, 6, 5)
    assert _snapshot(out) == before  # old masks, overlays, evidence and the user's files, byte for byte
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no staging, no lock


def test_a_failure_while_swapping_never_leaves_old_evidence_beside_new_masks(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _write_run(out, 3, 3)
    real_replace = os.replace
    calls = []

    def failing_replace(source, target):  # os.replace is also what every atomic write ends with
        if Path(target).parent == out != Path(source).parent:  # a move out of the staging folder
            calls.append(target)
            if len(calls) == 3:
                raise OSError(5, "Input/output error")
        return real_replace(source, target)

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(OSError):
        _write_run(out, 3, 5)
    assert not (out / "evidence.json").exists()  # no complete set, and nothing claims there is one
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    evidence = _write_run(out, 3, 5)  # the next run puts a whole set back
    assert json.loads((out / "evidence.json").read_text()) == evidence
    assert sorted(p.name for p in out.iterdir()) == ["evidence.json", *(f"{k}_{t:04d}.png" for k in ("mask", "overlay") for t in range(3))]


def test_ctrl_c_during_the_swap_waits_for_it(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _write_run(out, 4, 3)
    real_replace = os.replace
    calls = []

    def interrupting_replace(source, target):
        if Path(target).parent == out != Path(source).parent:  # the first move out of the staging folder
            calls.append(target)
            if len(calls) == 1:
                signal.raise_signal(signal.SIGINT)
        return real_replace(source, target)

    monkeypatch.setattr(outputs.os, "replace", interrupting_replace)
    with pytest.raises(KeyboardInterrupt):
        _write_run(out, 2, 5)
    evidence = json.loads((out / "evidence.json").read_text())  # the new set, whole
    assert evidence["settings"] == {"v": 5} and [frame["mask"] for frame in evidence["frames"]] == ["mask_0000.png", "mask_0001.png"]
    assert sorted(p.name for p in out.iterdir()) == ["evidence.json", "mask_0000.png", "mask_0001.png", "overlay_0000.png", "overlay_0001.png"]


def test_leftovers_of_a_killed_run_are_removed_but_nothing_else(tmp_path):
    out = tmp_path / "out"
    _write_run(out, 2, 3)
    staging = out / ".cmsf-new-dead0001"
    staging.mkdir()
    (staging / "mask_0000.png").write_bytes(b"half a run")
    (staging / ".mask_0001.png.abcd1234.cmsf-tmp").write_bytes(b"half a file")
    odd = out / ".cmsf-new-dead0002"
    odd.mkdir()
    (odd / "mask_0000.png").write_bytes(b"cmsf's")
    (odd / "mine.txt").write_bytes(b"someone put this here")
    (out / ".evidence.json.abcd1234.cmsf-tmp").write_bytes(b"half")
    (out / ".hidden-user-file").write_bytes(b"mine")
    _write_run(out, 2, 5)
    assert not staging.exists() and not (out / ".evidence.json.abcd1234.cmsf-tmp").exists()
    assert sorted(p.name for p in odd.iterdir()) == ["mine.txt"]  # only cmsf's file went
    assert (out / ".hidden-user-file").read_bytes() == b"mine"


def test_something_in_the_way_is_refused_before_anything_moves(tmp_path):
    out = tmp_path / "out"
    _write_run(out, 2, 3)
    before = _snapshot(out)
    (out / "mask_0002.png").mkdir()
    with pytest.raises(ValueError, match=r"mask_0002\.png: in the way of cmsf's output"):
        _write_run(out, 3, 5)
    assert _snapshot(out) == before


def test_segment_output_is_owned_while_open(tmp_path):
    with SegmentOutput(tmp_path / "out") as output:
        with pytest.raises(FolderInUseError):
            _write_run(tmp_path / "out", 1, 1)
        assert output.out_dir == tmp_path / "out"
    with pytest.raises(RuntimeError, match="inside its with block"):
        output.write(None, None, {}, started=0.0)  # type: ignore[arg-type]
    assert len(_write_run(tmp_path / "out", 1, 1)["frames"]) == 1


# ---------------------------------------------------------------------------- shared names


def test_run_records_and_no_op_reporters_have_one_home():
    """record_run / RunConflictError live in cmsf.io.files (evaluate re-exports them); every
    default progress / log is cmsf.runs.progress's no-op."""
    assert evaluate.record_run is files.record_run and evaluate.RunConflictError is files.RunConflictError
    defaults = [
        (outputs.replace_segmentation, "progress", progress.no_progress),
        (outputs.write_segmentation, "progress", progress.no_progress),
        (outputs.SegmentOutput.write, "progress", progress.no_progress),
        (many.segment_many, "progress", progress.no_progress),
        (many.segment_many, "log", progress.no_log),
        (evaluate.evaluate, "progress", progress.no_progress),
        (evaluate.evaluate, "log", progress.no_log),
        (sweep.run_sweep, "progress", progress.no_progress),
        (sweep.run_sweep, "log", progress.no_log),
    ]
    for function, name, default in defaults:
        assert inspect.signature(function).parameters[name].default is default, (function.__qualname__, name)
    assert list(progress.no_progress(range(3), "x", "item")) == [0, 1, 2] and progress.no_log("x") is None


@pytest.mark.parametrize("previous", [{"kind": "segment-many", "pipeline": "owod-bind"}, {"pipeline": "owod-bind", "num_frames": None}])
def test_eval_refuses_a_folder_of_segment_many(tmp_path, previous):
    """Whether or not outputs exist, and for a run.json written before kinds were recorded."""
    (tmp_path / "run.json").write_text(json.dumps(previous), encoding="utf-8")
    config = {"subset": "s4", "split": "test", "pipeline": "owod-bind"}
    with pytest.raises(files.RunConflictError, match="holds a `cmsf segment-many` run.*not one of `cmsf eval`"):
        evaluate.claim_run_folder(tmp_path, config)
    assert json.loads((tmp_path / "run.json").read_text()) == previous
    assert evaluate.claim_run_folder(tmp_path / "new", config) == {"kind": "eval", **config}
    assert json.loads((tmp_path / "new" / "run.json").read_text()) == {"kind": "eval", **config}


def test_record_run_of_the_same_kind_compares_settings_only_when_outputs_exist(tmp_path):
    path = tmp_path / "run.json"
    files.record_run(path, {"pipeline": "a"}, kind="segment-many", outputs_exist=False, outputs="videos")
    files.record_run(path, {"pipeline": "b"}, kind="segment-many", outputs_exist=False, outputs="videos")
    assert json.loads(path.read_text()) == {"kind": "segment-many", "pipeline": "b"}
    with pytest.raises(files.RunConflictError, match="another run .*pipeline: this run 'a', the folder's run 'b'"):
        files.record_run(path, {"pipeline": "a"}, kind="segment-many", outputs_exist=True, outputs="videos")
    assert files.recorded_kind({"pipeline": "a"}) is None


def test_a_refused_resume_names_only_the_settings_that_differ(tmp_path):
    path = tmp_path / "run.json"
    before = {"pipeline": "owod-bind", "settings": {"box_threshold": 0.5, "bind_threshold": 0.3, "bind_mode": "softmax"},
              "models": {"sam": "facebook/sam-vit-huge", "owlv2": "google/owlv2"}}  # fmt: skip
    files.record_run(path, before, kind="eval", outputs_exist=False, outputs="predictions")
    now = {**before, "settings": {**before["settings"], "bind_threshold": 0.4}, "models": {"sam": "facebook/sam-vit-huge"}}
    with pytest.raises(files.RunConflictError) as refused:
        files.record_run(path, now, kind="eval", outputs_exist=True, outputs="predictions")
    message = str(refused.value)
    assert "settings.bind_threshold: this run 0.4, the folder's run 0.3" in message
    assert "models.owlv2: this run not recorded, the folder's run 'google/owlv2'" in message
    assert "box_threshold" not in message and "bind_mode" not in message and "sam-vit-huge" not in message
    assert files.record_differences(before, before) == []
