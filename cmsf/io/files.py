"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Every write goes to a temporary file in the destination's own folder, named
``.{name}.{random}.cmsf-tmp``, which is flushed, ``fsync``-ed and then moved over the
destination with :func:`os.replace` (atomic on POSIX and Windows when both paths are on the same
file system, which a sibling always is). If anything fails before the move, the temporary file is
removed and the previous content of the destination, if any, is left untouched.

A process killed between creating the temporary file and the move can leave a
``*.cmsf-tmp`` file behind, never a truncated destination; :func:`remove_stale_temporaries`
cleans such leftovers up.

A run's output folder has one owner at a time: :func:`claim_folder` creates the folder, checks
that files can be written in it, and holds its lock (:data:`LOCK_NAME`) while the run lasts (see
there for the semantics). :func:`deferred_interrupts` holds SIGINT / SIGTERM back while a few
renames that belong together are made. :func:`record_run` records in its ``run.json``
(:data:`RUN_NAME`) what produced a run folder's outputs, and refuses to mix those of another run.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Optional, Union

from cmsf.io.paths import kind_of

try:  # POSIX; elsewhere the lock falls back to O_EXCL creation alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, "os.PathLike[str]"]

TEMP_SUFFIX = ".cmsf-tmp"


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", *, fsync: bool = True) -> Iterator[IO[Any]]:
    """Open ``path`` for writing such that it appears complete or not at all.

    Usage::

        with atomic_open("out/summary.json", "w") as f:
            f.write(text)

    Args:
        path: the destination; its parent folders are created when missing.
        mode: ``"wb"`` (default) or ``"w"`` (text, UTF-8, ``\\n`` newlines).
        fsync: flush the data to disk before the move (default True), so that a power loss
            cannot leave an empty file under the destination's name either.

    The temporary file is created with mode 0o666 minus the process umask, like any new file.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode: expected 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        if mode == "wb":
            handle: IO[Any] = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise named_error(error, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def named_error(error: OSError, path: Path) -> OSError:
    """``error`` when it names a file already (a failed rename names both), else the same error
    (type and errno) naming ``path``: a full disk's ``[Errno 28] No space left on device``, raised
    by a write or ``fsync``, names no file, and the message must say which one was being written."""
    if error.filename is not None:
        return error
    if error.errno is not None:
        named = OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))
        if type(named) is type(error):
            return named
    return type(error)(f"{path}: {error}")


def atomic_write_bytes(path: PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a :class:`~pathlib.Path`."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w", fsync=fsync) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: PathLike, obj: Any, *, fsync: bool = True) -> Path:
    """Serialise ``obj`` as indented JSON (strict: NaN and infinity are refused) and write it to
    ``path`` atomically; returns ``path``.

    Serialisation happens before the file is touched, so an object that cannot be serialised
    leaves the previous file in place.
    """
    text = json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text, fsync=fsync)


def remove_stale_temporaries(folder: PathLike) -> list[Path]:
    """Delete the ``.*.cmsf-tmp`` files that interrupted atomic writes left under ``folder``
    (recursively). Only files matching that pattern are touched. Returns the removed paths."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for tmp in folder.rglob(f".*{TEMP_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# ------------------------------------------------------------------------------ run folders

LOCK_NAME = ".cmsf-lock"
"""The file :func:`claim_folder` keeps in a folder while a run owns it: one line of JSON naming
the owner (``pid``, ``host``, ``started``, ``command``)."""

_FRESH_LOCK_SECONDS = 10.0
"""Without kernel locks, an empty lock file younger than this is taken to be in creation."""


class FolderInUseError(RuntimeError):
    """Another run owns the folder (it holds its :data:`LOCK_NAME`); the message names the folder
    and the owner."""


class UnwritableFolderError(ValueError):
    """A folder cannot be created, or files cannot be written in it; the message names the folder
    and the reason."""


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _process_start(pid: int) -> Optional[str]:
    """When process ``pid`` started (clock ticks since boot, Linux's ``/proc/PID/stat`` field 22),
    to tell it from a later process given the same pid; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def _lock_record() -> bytes:
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "process_start": _process_start(os.getpid()),
        "command": command if len(command) <= 300 else command[:299] + "…",
    }
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _read_holder(path: Path) -> Optional[dict[str, Any]]:
    """The owner a lock file names, or None when it is empty or not a JSON object."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _holder_alive(holder: dict[str, Any]) -> bool:
    """Whether the process a lock names may still be running: on another host that cannot be told
    (yes); on this host its pid must exist and, when both start times are known, be the same
    process (not a later one that got the pid)."""
    if holder.get("host") != socket.gethostname() or os.name == "nt":
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        pass
    recorded, current = holder.get("process_start"), _process_start(pid)
    return recorded is None or current is None or recorded == current


def _in_use(folder: Path, holder: Optional[dict[str, Any]]) -> FolderInUseError:
    if holder is None:
        owner = "a process that is taking the lock now"
    else:
        pid = holder.get("pid")
        owner = f"pid {pid} on host {holder.get('host')}"
        if pid == os.getpid() and holder.get("host") == socket.gethostname():
            owner += ", this very process"
        if holder.get("started"):
            owner += f", since {holder['started']}"
        if holder.get("command"):
            owner += f": {holder['command']}"
    return FolderInUseError(
        f"{folder} is in use by another cmsf run ({owner}); wait for it to end or write elsewhere. "
        f"If no such run is alive, delete {folder / LOCK_NAME}"
    )


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here, mine = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _kernel_lock(fd: int) -> Optional[bool]:
    """``flock`` ``fd`` without waiting: True when taken, False when another open file holds it,
    None when the file system (or the platform) has no such locks."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP: e.g. NFS without a lock daemon
        return None
    return True


def _acquire_lock(folder: Path) -> int:
    """Take ``folder``'s lock file; returns its open descriptor (closing it releases the lock).

    The file is created with ``O_EXCL`` and held with ``flock`` (released by the kernel when the
    process ends, however it ends). An existing file is taken over when no process holds it
    and the owner it names is dead: on this host, its pid is gone or belongs to a later
    process. An owner on another host cannot be checked, so its lock is respected.
    """
    path = folder / LOCK_NAME
    record = _lock_record()
    for _ in range(50):
        try:
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            _check_lock_file(folder, path)
            try:
                fd, created = os.open(path, os.O_RDWR), False
            except FileNotFoundError:  # released in between: try again
                continue
        owned = False  # whether the file is ours to remove if something fails below
        try:
            locked = _kernel_lock(fd)
            if locked is False:
                holder = None
                for _ in range(20):  # its owner may be writing it right now
                    holder = _read_holder(path)
                    if holder is not None:
                        break
                    time.sleep(0.025)
                raise _in_use(folder, holder)
            if not _names(path, fd):  # its owner released it between our open and flock
                os.close(fd)
                continue
            if not created:
                holder = _read_holder(path)
                if holder is None and locked is None:
                    fresh = time.time() - os.fstat(fd).st_mtime < _FRESH_LOCK_SECONDS
                    if fresh:
                        raise _in_use(folder, None)
                elif holder is not None and _holder_alive(holder):
                    raise _in_use(folder, holder)
                if locked is None:  # stale, and no kernel lock to serialise a take-over: start over
                    os.close(fd)
                    path.unlink(missing_ok=True)
                    continue
                os.ftruncate(fd, 0)
            owned = True
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                if owned and _names(path, fd):
                    path.unlink()
                os.close(fd)
            raise
    raise FolderInUseError(f"{folder}: its lock {path} kept changing hands; try again")


def _check_lock_file(folder: Path, path: Path) -> None:
    """Refuse a ``path`` that is not a regular file (a folder, a symlink, a FIFO named like the lock):
    not a lock another run holds, but something in the way that only a person can remove."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:  # released in between
        return
    if not stat.S_ISREG(mode):
        raise UnwritableFolderError(
            f"{folder}: {path} is {kind_of(mode)}, where cmsf keeps its lock file; remove it or use another folder"
        )


def _release_lock(folder: Path, fd: int) -> None:
    path = folder / LOCK_NAME
    try:
        if _names(path, fd):
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the folders created, outermost first."""
    if folder.exists() and not folder.is_dir():
        raise UnwritableFolderError(f"{folder}: not a folder")
    missing = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        missing.append(parent)
    missing.reverse()
    for index, path in enumerate(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise UnwritableFolderError(f"{folder}: cannot be created ({path} is not a folder)") from None
        except OSError as error:
            _remove_empty(missing[:index])
            raise UnwritableFolderError(f"{folder}: cannot be created ({_reason(error)})") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (outermost first) from the innermost out, stopping at one not empty."""
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            return


def _check_writable(folder: Path) -> None:
    """Write, move and delete a probe file in ``folder`` (as every output is written); named as a
    temporary, so that :func:`remove_stale_temporaries` cleans it up after a kill."""
    probe = folder / f".cmsf-probe-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        atomic_write_bytes(probe, b"a write test of cmsf, removed at once\n", fsync=False)
        probe.unlink()
    except OSError as error:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        raise UnwritableFolderError(f"{folder}: cannot write files here ({_reason(error)})") from None


@contextlib.contextmanager
def claim_folder(folder: PathLike) -> Iterator[Path]:
    """Own ``folder`` for one run: create it (and missing parents), check that files can be
    written there, and hold its lock while the block runs.

    Usage::

        with claim_folder(out_dir):
            ...  # every write into out_dir

    The lock is ``folder/.cmsf-lock`` (:data:`LOCK_NAME`), created with ``O_EXCL`` and held with
    ``flock``; it names its owner (pid, host, start time, command). On leaving the block,
    whichever way (an exception, Ctrl-C), the lock file is removed and the folders this call
    created are removed again if they are still empty. A process killed outright leaves the
    file behind; the next claim takes it over when no process holds it and, on this host, the
    pid it names is gone (or now belongs to a later process). An owner on another host cannot be
    checked: its lock is respected until it ends or the file is deleted by hand. On file systems
    without ``flock`` (NFS without a lock daemon) the pid check alone decides; on Windows, where
    a pid cannot be probed safely, a lock left behind is deleted by hand.

    Raises:
        UnwritableFolderError: the folder cannot be created, or a file cannot be written, moved
            or deleted in it; before anything is written.
        FolderInUseError: another run owns it (the message names it and how to recover).
    """
    folder = Path(folder)
    created = _make_folder(folder)
    try:
        try:
            fd = _acquire_lock(folder)
        except OSError as error:
            raise UnwritableFolderError(f"{folder}: cannot write files here ({_reason(error)})") from None
        try:
            _check_writable(folder)
            yield folder
        finally:
            _release_lock(folder, fd)
    finally:
        _remove_empty(created)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) and SIGTERM back while the block runs and deliver them after it, so
    that a few file moves that belong together are made all or none. Only the main thread can
    handle signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    numbers = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    previous = {number: signal.signal(number, lambda got, frame: received.append(got)) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


# ------------------------------------------------------------------------------ run records

RUN_NAME = "run.json"
"""The file in a run folder that records what produced its outputs (:func:`record_run`)."""


class RunConflictError(ValueError):
    """The run folder holds outputs of another run (other settings), or an unreadable run.json."""


def recorded_kind(record: Mapping[str, Any]) -> Optional[str]:
    """The kind of run a ``run.json`` record names: its ``"kind"`` (``"eval"``, ``"segment-many"``),
    or, in one written before cmsf recorded kinds, ``"eval"`` when it names a ``subset`` and
    ``split`` (``cmsf eval`` and its sweeps) and ``"segment-many"`` when it names ``num_frames``;
    None when it cannot be told."""
    kind = record.get("kind")
    if isinstance(kind, str):
        return kind
    if "subset" in record and "split" in record:
        return "eval"
    return "segment-many" if "num_frames" in record else None


class _Missing:
    def __repr__(self) -> str:
        return "not recorded"


_MISSING: Any = _Missing()
"""A key one record has and the other lacks."""


def record_differences(this: Mapping[str, Any], recorded: Mapping[str, Any], prefix: str = "") -> list[str]:
    """One line per key whose value differs between the record of ``this`` run and the ``recorded``
    one, nested mappings (``settings``, ``models``) key by key, e.g. ``"settings.bind_threshold:
    this run 0.4, the folder's run 0.3"``; equal keys are not named. A key only one side has is
    "not recorded" on the other."""
    lines = []
    for key in [*this, *(k for k in recorded if k not in this)]:
        new, old = this.get(key, _MISSING), recorded.get(key, _MISSING)
        if isinstance(new, Mapping) and isinstance(old, Mapping):
            lines += record_differences(new, old, f"{prefix}{key}.")
        elif new != old:
            lines.append(f"{prefix}{key}: this run {new!r}, the folder's run {old!r}")
    return lines


def record_run(
    path: Path,
    config: Mapping[str, Any],
    *,
    kind: str,
    outputs_exist: bool,
    outputs: str,
    extra: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Record a run's settings in ``path`` (a ``run.json``) as ``{"kind": kind, **config}``,
    refusing to mix the outputs of different runs in one folder. Nothing is written when ``path``
    records another kind of run (:func:`recorded_kind`: e.g. ``cmsf eval`` into a folder of
    ``cmsf segment-many``), or when ``outputs_exist`` and ``path`` names other settings or cannot
    be read. ``outputs`` names the outputs in the message ("predictions"). ``extra`` is recorded
    after ``config`` but not compared (its caller checks it: an eval's data root, which older
    records lack). Returns the record.

    Raises:
        RunConflictError: ``path`` records another kind of run; or names other settings, or
            cannot be read, while outputs exist.
    """
    record = {"kind": kind, **config, **(extra or {})}
    readable, previous = False, None
    if path.is_file():
        try:
            readable, previous = True, json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            if outputs_exist:
                raise RunConflictError(f"{path}: unreadable ({error}); delete it to start over") from None
    if isinstance(previous, dict):
        other = recorded_kind(previous)
        if other is not None and other != kind:
            raise RunConflictError(
                f"{path.parent} holds a `cmsf {other}` run ({path} says so), not one of `cmsf {kind}`; "
                f"use another --out"
            )
    if readable and outputs_exist:
        if not isinstance(previous, dict):
            raise RunConflictError(
                f"{path}: unreadable (expected a JSON object, got {type(previous).__name__}); delete it to start over"
            )
        changed = record_differences(config, {k: previous.get(k, _MISSING) for k in config})
        if changed:
            detail = "; ".join(changed)
            raise RunConflictError(
                f"{path.parent} holds {outputs} of another run ({detail}); use another --out, or delete "
                f"them and {path} to start over"
            )
    atomic_write_json(path, record)
    return record
