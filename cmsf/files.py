"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Every write goes to a temporary file in the destination's own folder, named
``.{name}.{random}.cmsf-tmp``, which is flushed, ``fsync``-ed and then moved over the
destination with :func:`os.replace` (atomic on POSIX and Windows when both paths are on the same
file system, which a sibling always is). If anything fails before the move, the temporary file is
removed and the previous content of the destination, if any, is left untouched.

A process killed between creating the temporary file and the move can leave a
``*.cmsf-tmp`` file behind, never a truncated destination; :func:`remove_stale_temporaries`
cleans such leftovers up.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import IO, Any, Iterator, Union

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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
