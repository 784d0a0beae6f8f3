"""Checking an input path before anything reads it: every file cmsf reads (a video, a wav, a
frame, a mask) goes through :func:`check_file` first, so that what cannot be a readable file is
refused with one message naming it, before a reader opens it.

- A path the system cannot look up (a symlink loop, a name too long, a NUL byte, no permission)
  is a ``ValueError`` naming the path and the reason; a missing one a ``FileNotFoundError``.
- A FIFO, socket or device is refused by its type (``stat.S_ISREG``) before it is opened: opening
  a FIFO for reading blocks until a writer comes, which could hang a run forever.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def shown(path: Path) -> str:
    """``path`` as a message shows it: as is, or quoted with escapes when it holds control
    characters (a NUL byte, a newline) that would garble a one-line message."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def stat_input(path: Path, what: str) -> os.stat_result:
    """``os.stat(path)`` (following symlinks), its errors as messages naming ``path``.

    Raises:
        FileNotFoundError: no such path (``"{path}: no such {what}"``).
        ValueError: a path that cannot be looked up: a symlink loop, a name too long, a NUL
            byte, a component that is not a folder, no permission.
    """
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{shown(path)}: no such {what}") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"{shown(path)}: cannot be looked up ({reason}); expected a {what}") from None
    except ValueError as error:  # embedded null byte
        raise ValueError(f"{shown(path)}: not a usable path ({error}); expected a {what}") from None


def kind_of(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words ("a FIFO (named pipe)", "a folder", …)."""
    if stat.S_ISDIR(mode):
        return "a folder"
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def check_file(path: Path, what: str = "file") -> Path:
    """``path`` when it names a regular file (a symlink to one included); refused otherwise,
    before it is opened.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, a FIFO, a socket, a device, or a path that cannot be looked up
            (:func:`stat_input`); the message names the path and what was expected.
    """
    mode = stat_input(path, what).st_mode
    if not stat.S_ISREG(mode):
        raise ValueError(f"{shown(path)}: {kind_of(mode)}, not a regular file; expected a {what}")
    return path
