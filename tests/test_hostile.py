"""Hostile inputs and faults of a second matrix (issue 23): symlink loops, FIFOs and bad names
among the inputs, reading threads that never return, SIGTERM, damaged caches and run folders,
a full disk, a changed --root, and the library's boundary checks. Each test fails without its
fix; the signal tests run the command in a subprocess with a timeout, so a hang fails the test
instead of blocking the suite.
"""

from __future__ import annotations

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
from cmsf.io import avsbench
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
    def blocked(*args):
        print("reading-blocked", file=sys.stderr, flush=True)
        with open(os.environ["CMSF_BLOCK_READS"], "rb"):  # a FIFO nobody writes: blocks for good
            pass
    many.load_job = blocked
    avsbench.load_video = blocked
cli.main(sys.argv[3:], prog_name="cmsf")
"""


def _command(*args: object) -> list[str]:
    return [sys.executable, "-c", _STAND_IN_CLI, str(REPO), str(TESTS), *[str(a) for a in args]]


def _environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(
        tmp_path_factory.mktemp("video") / "clip.mkv", seconds=2, fps=5, acodec="pcm_s16le", audio_rate=16_000
    )


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
@pytest.mark.parametrize("command", ["segment-many", "eval"])
def test_a_reader_blocked_for_good_does_not_hold_up_ctrl_c_or_sigterm(tmp_path, video, number, command):
    from avsbench_fixture import make_avsbench

    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    if command == "eval":
        root = make_avsbench(tmp_path / "avsbench").root
        arguments = ("eval", "--root", root, "--subset", "ms3", "-p", "owod-bind", "--out", out)
    else:
        arguments = ("segment-many", video, "-p", "owod-bind", "--out", out)
    child = subprocess.Popen(
        _command(*arguments),
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


# ---------------------------------------------------------------------------- bad manifest entries


def _cli(*args: object):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.fixture
def stand_in(monkeypatch):
    """owod-bind as a stand-in (the left half of every frame), models lazy and never loaded."""
    import torch
    from stand_ins import as_stages

    from cmsf.models import loading
    from cmsf.pipelines.per_frame import PIPELINE_STAGES

    class Result:
        def __init__(self, masks: torch.Tensor) -> None:
            self.masks = masks

    def left_half(frames, waveform, sample_rate, models, **settings):
        masks = torch.zeros(frames.shape[0], *frames.shape[-2:], dtype=torch.bool)
        masks[..., : frames.shape[-1] // 2] = True
        return Result(masks)

    monkeypatch.setitem(PIPELINE_STAGES, "owod-bind", as_stages(left_half))
    real_load_models = loading.load_models  # the command imports it from there when it runs
    monkeypatch.setattr(loading, "load_models", lambda *args, **kwargs: real_load_models("tiny", device="cpu"))


def _loop(folder: Path) -> Path:
    (folder / "loop-b.mp4").symlink_to(folder / "loop-a.mp4")
    (folder / "loop-a.mp4").symlink_to(folder / "loop-b.mp4")
    return folder / "loop-a.mp4"


BAD_ENTRIES = {
    "symlink loop": (_loop, "Too many levels of symbolic links"),
    "name too long": (lambda folder: folder / ("x" * 300 + ".mp4"), "File name too long"),
    "loop in a parent": (lambda folder: _loop(folder) / "inside.mp4", "cannot be looked up"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_a_manifest_path_that_cannot_be_resolved_fails_alone_in_failures_csv(tmp_path, video, stand_in, case):
    make, reason = BAD_ENTRIES[case]
    bad = make(tmp_path)
    out = tmp_path / "out"
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{bad}\n{video}\n", encoding="utf-8")
    result = _cli("segment-many", "--manifest", manifest, "-p", "owod-bind", "--out", out)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [row] = _failures(out)
    assert reason in row and str(bad)[:100] in row
    assert len(list(out.glob("clip-*/evidence.json"))) == 1


def test_a_nul_byte_in_a_manifest_line_fails_alone(tmp_path, video, stand_in):
    manifest = tmp_path / "list.csv"
    manifest.write_text(f'path\n"bad\x00name.mp4"\n{video}\n', encoding="utf-8")
    out = tmp_path / "out"
    result = _cli("segment-many", "--manifest", manifest, "-p", "owod-bind", "--out", out)
    assert result.exit_code == 1, result.output
    [row] = _failures(out)
    assert "null byte" in row and "bad" in row
    assert len(list(out.glob("clip-*/evidence.json"))) == 1


@pytest.mark.parametrize(
    "name, text",
    [("list.txt", ""), ("list.txt", "# only a comment\n\n"), ("list.csv", "path,audio\n"), ("list.csv", "path\n\n")],
)
def test_a_manifest_listing_nothing_is_an_error_and_creates_no_out(tmp_path, stand_in, name, text):
    manifest = tmp_path / name
    manifest.write_text(text, encoding="utf-8")
    result = _cli("segment-many", "--manifest", manifest, "-p", "owod-bind", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "lists no input" in result.output and str(manifest) in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stem", ["--help", "-x", "-", "-.-a"])
def test_output_names_never_begin_with_a_dash(tmp_path, stem):
    from cmsf.runs.many import output_name

    name = output_name(tmp_path / f"{stem}.mp4")
    assert not name.startswith("-") and not name.startswith(".")


def test_a_folder_without_frames_is_told_so_not_asked_for_audio(tmp_path):
    from cmsf.io.media import load_clip

    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "notes.txt").write_text("no frames here")
    with pytest.raises(ValueError, match="no frames in this folder"):
        load_clip(folder)


def test_repeated_metadata_rows_are_scored_once_with_a_warning(tmp_path):
    from avsbench_fixture import make_avsbench

    from cmsf.io import avsbench
    from cmsf.io.decoding import MediaWarning

    mini = make_avsbench(tmp_path)
    csv_path = mini.root / "Single-source" / "s4_meta_data.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([*lines, lines[1], lines[2], lines[1]]) + "\n")
    with pytest.warns(MediaWarning, match=r"3 repeated row\(s\).*dog/s4_a"):
        entries = avsbench.list_videos(mini.root, "s4", "test")
    assert [e.key for e in entries] == ["dog/s4_a", "guitar/s4_b", "dog/s4_c"]


# ---------------------------------------------------------------------------- damaged caches


def _cache_file(tmp_path: Path) -> tuple[Path, dict]:
    import torch

    from cmsf.pipelines.results import FrameCandidates
    from cmsf.pipelines.settings import OwodBindSettings
    from cmsf.runs.cache import CachePart, VideoCache, write_cache

    identity = {"pipeline": "owod-bind", "preset": "tiny"}
    frames = [
        FrameCandidates(torch.tensor([[0.0, 0.0, 4.0, 4.0]] * k), torch.linspace(1, 0, k), torch.rand(k, 6, 10) > 0.5,
                        visual=torch.randn(k, 8), audio=torch.randn(8))
        for k in (2, 0, 3)
    ]  # fmt: skip
    path = tmp_path / "video.npz"
    write_cache(path, VideoCache(identity, (6, 10), 3, [CachePart(OwodBindSettings(bind_threshold=0.5), frames)]))
    return path, identity


def _npy(shape: tuple, dtype: str, payload: bytes) -> bytes:
    import io as _io

    import numpy as np

    buffer = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def _replace_member(path: Path, name: str, data: bytes, *, declared: int | None = None) -> None:
    """Rewrite the npz ``path`` with member ``name`` replaced by ``data`` (its zip entry's declared
    uncompressed size set to ``declared`` when given)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    if declared is not None:  # patch the sizes in the local and central headers
        raw = bytearray(path.read_bytes())
        size = len(data).to_bytes(4, "little")
        for start in _all(raw, name.encode()):
            for offset in (start - 8, start - 30 + 22, start - 46 + 24):  # local: -8; central: -22
                if 0 <= offset and raw[offset : offset + 4] == size:
                    raw[offset : offset + 4] = declared.to_bytes(4, "little")
        path.write_bytes(bytes(raw))


def _all(data: bytearray, needle: bytes) -> list[int]:
    found, start = [], data.find(needle)
    while start >= 0:
        found.append(start)
        start = data.find(needle, start + 1)
    return found


DAMAGES = {
    "boxes claim 1.35 TiB": ("p0_boxes.npy", lambda: _npy((90_000_000_000, 4), "<f4", b"\0" * 80)),
    "masks claim a huge frame": ("p0_masks.npy", lambda: _npy((5, 10**12), "|u1", b"\0" * 64)),
    "audio as objects": ("p0_audio.npy", lambda: _npy((3, 8), "|O", b"\0" * 24)),
    "scores of another dtype": ("p0_scores.npy", lambda: _npy((5,), "<f8", b"\0" * 40)),
    "header claims a huge array": ("header.npy", lambda: _npy((2**40,), "|u1", b"{}")),
}


@pytest.mark.parametrize("case", sorted(DAMAGES))
def test_a_cache_whose_headers_claim_absurd_sizes_is_recomputed_not_allocated(tmp_path, case):
    import tracemalloc

    from cmsf.pipelines.settings import OwodBindSettings
    from cmsf.runs.cache import read_cache

    path, identity = _cache_file(tmp_path)
    assert read_cache(path, identity, OwodBindSettings) is not None
    name, data = DAMAGES[case]
    _replace_member(path, name, data())
    tracemalloc.start()
    try:
        assert read_cache(path, identity, OwodBindSettings) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # nothing near the claimed size was allocated


def test_a_cache_member_declaring_more_than_deflate_can_give_is_refused(tmp_path):
    from cmsf.pipelines.settings import OwodBindSettings
    from cmsf.runs.cache import member_shapes, read_cache

    path, identity = _cache_file(tmp_path)
    shape = member_shapes(path)["p0_visual"]
    _replace_member(path, "p0_visual.npy", _npy((10**9, 8), "<f4", b"\0" * 64), declared=2**31)
    assert read_cache(path, identity, OwodBindSettings) is None
    assert shape == (5, 8)


def test_a_cache_frame_size_or_counts_at_odds_with_its_arrays_is_recomputed(tmp_path):
    import json as _json

    import numpy as np

    from cmsf.pipelines.settings import OwodBindSettings
    from cmsf.runs.cache import read_cache

    for change in ({"frame_size": [100000, 100000]}, {"frames": 10**9}, {"counts": [2, -1, 4]}, {"counts": [2, 0]}):
        path, identity = _cache_file(tmp_path)
        with np.load(path) as archive:
            header = _json.loads(bytes(archive["header"]).decode())
        if "counts" in change:
            header["parts"][0]["counts"] = change["counts"]
        else:
            header.update(change)
        text = _json.dumps(header).encode()
        _replace_member(path, "header.npy", _npy((len(text),), "|u1", text))
        assert read_cache(path, identity, OwodBindSettings) is None, change


# ---------------------------------------------------------------------------- damaged run records (report)


def _run_folder(folder: Path, summary: dict) -> Path:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    (folder / "per_video.csv").write_text(
        "video,category,miou,fscore\nv1,dog,0.5,0.4\nv2,cat,0.7,0.6\n", encoding="utf-8"
    )
    (folder / "sweep.csv").write_text(
        "bind_threshold,miou,fscore,best\n0.5,0.5,0.4,*\n0.6,0.4,0.3,\n", encoding="utf-8"
    )
    return folder


GOOD_SUMMARY = {
    "miou": 0.6, "fscore": 0.5, "subset": "s4", "split": "test", "pipeline": "owod-bind", "preset": "tiny",
    "settings": {"bind_threshold": 0.5}, "variants": {"miou_per_frame": 0.6},
    "sweep": {"note": "tuned on test", "test_tuned": True, "cache_bytes_per_video": 1024, "model_passes_per_video": 1},
}  # fmt: skip
WRONG = {
    "a JSON object": [[1, 2], "x", 3],
    "a string": [[1], {"a": 1}, 2],
    "a number": ["x", [1], True],
    "true or false": ["yes", 1],
}


def _wrong_summaries():
    from cmsf.runs.summaries import SUMMARY_FIELDS, SWEEP_FIELDS

    for field, expected in SUMMARY_FIELDS.items():
        for value in WRONG[expected]:
            yield field, {**GOOD_SUMMARY, field: value}
    for field, expected in SWEEP_FIELDS.items():
        for value in WRONG[expected]:
            yield f"sweep.{field}", {**GOOD_SUMMARY, "sweep": {**GOOD_SUMMARY["sweep"], field: value}}
    yield "variants.miou_per_frame", {**GOOD_SUMMARY, "variants": {"miou_per_frame": "high"}}


def test_report_of_a_summary_with_wrong_typed_fields_is_one_line_naming_file_and_field(tmp_path):
    result = _cli("report", _run_folder(tmp_path / "good", GOOD_SUMMARY))
    assert result.exit_code == 0, result.output
    for index, (field, summary) in enumerate(_wrong_summaries()):
        folder = _run_folder(tmp_path / f"run{index}", summary)
        result = _cli("report", folder)
        assert result.exit_code == 1 and not isinstance(result.exception, (TypeError, AttributeError)), (
            field,
            result.output,
        )
        assert str(folder / "summary.json") in result.output and repr(field) in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["per_video.csv", "sweep.csv"])
@pytest.mark.parametrize(
    "content", [b"video,miou,fscore\n\xff\xfe,0.5,0.4\n", b"video,miou,fscore\nv1,0.5,0.4,extra,cells\n"]
)
def test_report_of_an_unreadable_csv_names_the_file(tmp_path, name, content):
    folder = _run_folder(tmp_path / "run", GOOD_SUMMARY)
    (folder / name).write_bytes(content.replace(b"video,", b"bind_threshold,") if name == "sweep.csv" else content)
    result = _cli("report", folder)
    assert result.exit_code == 1 and str(folder / name) in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- run folders: disk full, lock, root


def _fail_when_writing(monkeypatch, fragment: str) -> None:
    """``os.fsync`` raises ENOSPC (no file named, as the kernel reports it) for a file whose name
    holds ``fragment``: a disk that fills up while that file is written."""
    import errno

    real = os.fsync

    def fsync(fd: int) -> None:
        if fragment in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("mode", ["w", "wb"])
def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch, mode):
    from cmsf.io.files import atomic_open

    target = tmp_path / "deep" / "summary.json"
    _fail_when_writing(monkeypatch, "summary.json")
    with pytest.raises(OSError, match="No space left on device") as caught:
        with atomic_open(target, mode) as handle:
            handle.write("x" if mode == "w" else b"x")
    assert caught.value.errno == 28 and caught.value.filename == str(target) and str(target) in str(caught.value)
    assert list(target.parent.iterdir()) == []  # no temporary left


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("fragment", ["mask_0001.png", "evidence.json"])
def test_a_full_disk_during_segment_many_names_the_file(tmp_path, video, stand_in, monkeypatch, fragment):
    out = tmp_path / "out"
    _fail_when_writing(monkeypatch, fragment)
    result = _cli("segment-many", video, "-p", "owod-bind", "--out", out)
    assert result.exit_code == 1, result.output
    [row] = _failures(out)
    assert "No space left on device" in row and fragment in row and str(out) in row


@pytest.mark.parametrize("kind", ["folder", "symlink", "fifo"])
def test_something_else_named_like_the_lock_is_refused_naming_it(tmp_path, video, stand_in, kind):
    out = tmp_path / "out"
    out.mkdir()
    lock = out / LOCK_NAME
    if kind == "folder":
        lock.mkdir()
    elif kind == "symlink":
        lock.symlink_to(tmp_path / "elsewhere")
    else:
        os.mkfifo(lock)
    result = _cli("segment-many", video, "-p", "owod-bind", "--out", out)
    assert result.exit_code == 2, result.output
    assert str(lock) in result.output and "remove it" in result.output
    assert "cannot write files here" not in result.output


def test_an_eval_rerun_with_another_root_is_refused_naming_both(tmp_path, stand_in):
    import shutil

    from avsbench_fixture import make_avsbench

    first = make_avsbench(tmp_path / "a").root
    second = tmp_path / "b"
    shutil.copytree(first, second)
    out = tmp_path / "run"
    command = ["eval", "--subset", "ms3", "-p", "owod-bind", "--out", out]
    assert _cli(*command, "--root", first).exit_code == 0
    assert _cli(*command, "--root", first).exit_code == 0  # the same root resumes
    result = _cli(*command, "--root", second)
    assert result.exit_code == 1, result.output
    assert (
        str(first.resolve()) in result.output and str(second.resolve()) in result.output and "--root" in result.output
    )


def test_a_sweep_cache_of_another_root_is_refused(tmp_path):
    import json

    from cmsf.io.files import RunConflictError
    from cmsf.runs import evaluate

    out = tmp_path / "run"
    config = {"subset": "s4", "split": "val", "pipeline": "owod-bind", "sweep": True}
    evaluate.claim_run_folder(out, config, tmp_path / "a")
    assert json.loads((out / "run.json").read_text())["root"] == str((tmp_path / "a").resolve())
    evaluate.claim_run_folder(out, config, tmp_path / "b")  # nothing computed yet: the new root is recorded
    (out / "cache" / "dog").mkdir(parents=True)
    (out / "cache" / "dog" / "v.npz").write_bytes(b"")
    with pytest.raises(RunConflictError, match="AVSBench root .*/b, not .*/a"):
        evaluate.claim_run_folder(out, config, tmp_path / "a")


def test_a_repeated_sweep_key_is_a_usage_error(tmp_path, stand_in):
    result = _cli("eval", "--root", tmp_path, "--subset", "s4", "-p", "owod-bind", "--out", tmp_path / "o",
                  "--sweep", "bind_threshold=0.5,0.6", "--sweep", "bind_threshold = 0.7")  # fmt: skip
    assert (
        result.exit_code == 2
        and "bind_threshold is given more than once" in result.output
        and "--sweep" in result.output
    )


# ---------------------------------------------------------------------------- the library's boundary


@pytest.fixture(scope="module")
def tiny():
    from cmsf.models.loading import load_models

    return load_models("tiny", device="cpu")


def _frames(count: int = 2, size: int = 8):
    import torch

    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("pipeline", ["owod-bind", "sam-bind", "at-gdino-sam", "at-sam3"])
@pytest.mark.parametrize("models", [None, "tiny", object()])
def test_models_that_are_not_models_are_a_value_error_naming_models(pipeline, models):
    import torch

    from cmsf.pipelines.per_frame import PIPELINES

    with pytest.raises(ValueError, match=r"^models: expected a cmsf.models.loading.Models"):
        PIPELINES[pipeline](_frames(), torch.zeros(1, 32000), 16000, models)


@pytest.mark.parametrize(
    "waveform, message",
    [
        (
            lambda torch: torch.zeros(1, 32000, device="meta"),
            r"^waveform: a tensor on the meta device holds no samples",
        ),
        (
            lambda torch: torch.zeros(32000, 2),
            r"^waveform: shape \(32000, 2\) reads as 32000 channels of 2 samples.*waveform\.T",
        ),
        (lambda torch: torch.zeros(3000, 200), r"^waveform: shape \(3000, 200\) reads as 3000 channels"),
        (lambda torch: torch.full((1, 32000), 1e30), r"^waveform: peak amplitude 1e\+30"),
        (lambda torch: torch.full((2, 32000), -3e7), r"^waveform: peak amplitude 3e\+07"),
    ],
)
def test_waveforms_refused_at_the_boundary_name_what_is_wrong(tiny, waveform, message):
    import torch

    from cmsf.pipelines.per_frame import PIPELINES

    with pytest.raises(ValueError, match=message):
        PIPELINES["owod-bind"](_frames(), waveform(torch), 16000, tiny)


def test_int16_scaled_float_audio_is_still_accepted():
    import torch

    from cmsf.io.inputs import as_waveform

    assert as_waveform(torch.full((2, 100), 32768.0)).shape == (2, 100)


def test_frames_on_the_meta_device_are_refused_naming_them(tiny):
    import torch

    from cmsf.pipelines.per_frame import PIPELINES

    with pytest.raises(ValueError, match=r"^frames\[0\]: a tensor on the meta device holds no pixels"):
        PIPELINES["sam-bind"](_frames().to("meta"), torch.zeros(1, 32000), 16000, tiny)


@pytest.mark.parametrize(
    "samples, rate, frames", [(5 * 100, 16000, 5), (5 * 399, 16000, 5), (5 * 1099, 44100, 5), (10, 8000, 1)]
)
def test_too_short_audio_segments_are_refused_before_any_model_runs(tiny, monkeypatch, samples, rate, frames):
    import torch

    from cmsf.pipelines import per_frame

    ran = []
    monkeypatch.setitem(
        per_frame.PIPELINE_STAGES, "owod-bind", per_frame.PipelineStages(lambda *a: ran.append(a), None)
    )
    with pytest.raises(ValueError) as caught:
        per_frame.owod_bind(_frames(frames), torch.zeros(1, samples), rate, tiny)
    message = str(caught.value)
    assert message.startswith(f"waveform: {samples} samples at {rate} Hz") and "at least 25 ms" in message
    assert ran == []  # checked before any model


@pytest.mark.parametrize("samples, rate", [(5 * 400, 16000), (5 * 1100, 44100), (5 * 200, 8000)])
def test_segments_of_one_window_are_accepted(samples, rate):
    import torch

    from cmsf.pipelines.results import prepare_video

    assert len(prepare_video(_frames(5), torch.zeros(1, samples), rate).segments) == 5


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_a_sixteen_bit_pil_image_gives_the_pixels_of_its_png(tmp_path, mode):
    import numpy as np
    from PIL import Image

    from cmsf.io.inputs import as_image_list
    from cmsf.io.media import read_image

    values = np.array([[0, 255, 256, 4095], [40000, 65535, 1000, 300]], dtype=np.uint16)
    as_i = Image.fromarray(values.astype(np.int32))
    as_i.convert("I;16").save(tmp_path / "frame.png")  # a 16-bit grey PNG
    image = as_i if mode == "I" else as_i.convert(mode)
    direct = as_image_list([image])[0]
    assert direct.equal(read_image(tmp_path / "frame.png"))
    assert direct[0].tolist() == (values >> 8).tolist()  # not clipped at 255


@pytest.mark.parametrize("content", [b"not a checkpoint", b"", "pickle"])
def test_a_bad_imagebind_checkpoint_is_one_line_naming_the_file(tmp_path, content):
    import click
    import torch

    from cmsf.cli.options import data_errors
    from cmsf.models.loading import BadCheckpointError, load_models

    path = tmp_path / "imagebind.pth"
    if content == "pickle":
        torch.save({"x": _Unsafe()}, path)
    else:
        path.write_bytes(content)
    models = load_models("tiny", device="cpu", binder="imagebind", imagebind=str(path))
    with pytest.raises(BadCheckpointError) as caught:
        models.binder  # noqa: B018 - loads it
    with pytest.raises(click.ClickException) as shown:
        with data_errors():
            raise caught.value
    message = shown.value.format_message()
    assert "\n" not in message and str(path) in message and "expected ImageBind's .pth" in message
    assert (
        "Please file an issue" not in message
        and "weights_only=False" not in message
        and "--model COMPONENT" not in message
    )


class _Unsafe:
    def __reduce__(self):
        return (print, ("a checkpoint should not run code",))


def test_one_pixel_frames_print_no_transformers_warnings(tiny, capfd):
    import logging

    import torch

    from cmsf.pipelines.per_frame import PIPELINES

    logging.getLogger("transformers").handlers  # noqa: B018
    for pipeline in PIPELINES:
        result = PIPELINES[pipeline](_frames(2, size=1), torch.randn(1, 32000) * 0.1, 16000, tiny)
        assert result.masks.shape == (2, 1, 1)
    assert "channel dimension is ambiguous" not in capfd.readouterr().err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_avsbench_fails_its_video_alone_in_eval(tmp_path, stand_in):
    import json

    from avsbench_fixture import make_avsbench

    mini = make_avsbench(tmp_path / "avsbench")
    frame = mini.root / "Multi-sources" / "ms3_data" / "visual_frames" / "ms3_a" / "ms3_a.mp4_3.png"
    frame.unlink()
    os.mkfifo(frame)
    out = tmp_path / "run"
    result = _cli("eval", "--root", mini.root, "--subset", "ms3", "-p", "owod-bind", "--out", out)
    assert result.exit_code == 1 and "1 of 2 video(s) failed" in result.output, result.output
    errors = json.loads((out / "errors.json").read_text())
    assert list(errors) == ["ms3_a"] and "FIFO" in errors["ms3_a"] and str(frame) in errors["ms3_a"]
    assert len(list((out / "pred_masks" / "ms3_b").glob("*.png"))) == 5


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_an_entry_of_a_frame_folder_named_like_a_frame_must_be_a_file(tmp_path, kind):
    import numpy as np
    from avsbench_fixture import write_png

    from cmsf.io.media import list_frame_files

    folder = tmp_path / "frames"
    write_png(folder / "f_1.png", np.zeros((4, 4, 3), dtype=np.uint8))
    odd = folder / "f_2.png"
    os.mkfifo(odd) if kind == "fifo" else odd.mkdir()
    with pytest.raises(ValueError, match=f"f_2.png: a {'FIFO' if kind == 'fifo' else 'folder'}"):
        list_frame_files(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_run_json_that_is_a_fifo_is_not_read(tmp_path):
    from cmsf.runs import evaluate

    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "run.json")
    record = evaluate.claim_run_folder(out, {"subset": "s4"}, tmp_path)  # would block reading the FIFO
    assert record["root"] == str(tmp_path.resolve()) and (out / "run.json").is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("where", ["manifest", "audio", "segment input", "frame in a folder"])
def test_a_fifo_anywhere_an_input_is_read_is_refused_without_hanging(tmp_path, video, where):
    import numpy as np
    from avsbench_fixture import tone, write_png, write_wav

    fifo = tmp_path / ("list.txt" if where == "manifest" else "sound.wav" if where == "audio" else "f_2.png")
    frames = tmp_path / "frames"
    write_png(frames / "f_1.png", np.zeros((8, 8, 3), dtype=np.uint8))
    if where == "frame in a folder":
        fifo = frames / "f_2.png"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    arguments = {
        "manifest": ("segment-many", "--manifest", fifo, "-p", "owod-bind", "--out", out),
        "audio": ("segment", frames, "--audio", fifo, "-p", "owod-bind", "--out", out),
        "segment input": ("segment", fifo, "-p", "owod-bind", "--out", out),
        "frame in a folder": ("segment", frames, "--audio", write_wav(tmp_path / "a.wav", tone(2.0, 16000)),
                              "-p", "owod-bind", "--out", out),
    }[where]  # fmt: skip
    child = subprocess.run(_command(*arguments), env=_environment(), capture_output=True, text=True, timeout=120)
    assert child.returncode == 1, child.stderr
    assert "FIFO" in child.stderr and str(fifo) in child.stderr and "Traceback" not in child.stderr
    assert not (out / LOCK_NAME).exists()
