"""Where a component comes from, given as text: a Hugging Face hub id (``org/name``) or a local
path (a ``save_pretrained`` folder, a checkpoint file), told apart and checked before anything
loads (:func:`check_local_source`), and written down the same way whatever folder a run starts
from (:func:`resolved_source`).
"""

from __future__ import annotations

import os
import re

__all__ = ["HUB_ID", "check_local_source", "resolved_source"]

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""A Hugging Face hub id: ``org/name``."""


def resolved_source(source: str) -> str:
    """``source`` as an absolute, resolved path when it names an existing local file or folder
    (``./sam``, ``~/sam`` and ``/home/me/sam`` are one source), else as given (a hub id)."""
    expanded = os.path.expanduser(source)
    return os.path.realpath(expanded) if os.path.exists(expanded) else source


def check_local_source(name: str, source: str) -> str:
    """``source`` of component ``name``, with ``~`` expanded, after checking that it exists when
    it looks like a local path: absolute, starting with ``./``, ``../`` or ``~``, or holding a
    path separator without being a hub id ``org/name``. Anything else is left to the loader (a
    hub id, or a relative path that happens to look like one).

    Raises:
        ValueError: it looks like a local path and nothing is there; the message starts with
            ``"{name}:"``.
    """
    expanded = os.path.expanduser(source)
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    local = (
        os.path.isabs(expanded)
        or source.startswith(("~", *(f"{dots}{sep}" for dots in (".", "..") for sep in separators)))
        or (any(sep in source for sep in separators) and not HUB_ID.fullmatch(source))
    )
    if not local:
        return source
    if not os.path.exists(expanded):
        raise ValueError(
            f"{name}: the local path {source!r} does not exist (a hub id looks like 'org/name')"
        )
    return expanded
