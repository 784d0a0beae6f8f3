"""Checkpoints as the Hugging Face hub ships them: video checkpoints loaded into image classes,
gated repositories, and what the local hub cache holds.

Every SAM 2 / 2.1 checkpoint on the hub (``facebook/sam2.1-hiera-*``) is saved by transformers'
conversion script as ``Sam2VideoModel`` (config ``model_type`` ``"sam2_video"``) with a
``Sam2VideoProcessor``; EdgeTAM (``yonigozlan/EdgeTAM-hf``) as ``EdgeTamVideoModel``
(``"edgetam_video"``); SAM 3 (``facebook/sam3``) as ``Sam3VideoModel`` (``"sam3_video"``) with a
``Sam3VideoProcessor``. transformers loads the image classes (``Sam2Model``, ``EdgeTamModel``,
``Sam3Model``) from these folders on purpose: the image model's weights are a subset of the video
model's (``Sam3Model.base_model_prefix = "detector_model"``), and the image processor is the one
the video processor holds. :data:`VIDEO_FAMILIES` says which image family each video family loads
as; :func:`quiet_type_mismatch` silences the one warning transformers prints for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator, Optional

from huggingface_hub import scan_cache_dir, try_to_load_from_cache
from huggingface_hub.errors import GatedRepoError

from cmsf.models.families import FAMILY_TABLE

__all__ = [
    "KNOWN_GATED",
    "VIDEO_FAMILIES",
    "CacheEntry",
    "cache_entry",
    "gated_remedy",
    "image_family",
    "is_gated",
    "quiet_type_mismatch",
]

VIDEO_FAMILIES = {t: f.name for f in FAMILY_TABLE for t in f.model_types if t != f.name}
"""The video families (config ``model_type``) of hub checkpoints, and the image family each is
loaded as (its model and image processor classes), from the family table: ``sam2_video`` →
``sam2``, ``edgetam_video`` → ``edgetam``, ``sam3_video`` → ``sam3``."""

KNOWN_GATED = frozenset({"facebook/sam3"})
"""Hub ids cmsf names that are gated (a licence to accept on the model page before a download)."""

_CONFIG_LOGGER = "transformers.configuration_utils"
_MISMATCH = "You are using a model of type `"


def image_family(family: str) -> str:
    """The image family ``family`` is loaded as: itself, or for a video family
    (:data:`VIDEO_FAMILIES`) its image family (``"sam2_video"`` → ``"sam2"``)."""
    return VIDEO_FAMILIES.get(family, family)


class _DropTypeMismatch(logging.Filter):
    """Drops transformers' "model of type `sam2_video` to instantiate a model of type `sam2`"
    warning, and only it."""

    def __init__(self, family: str) -> None:
        super().__init__()
        self._start = f"{_MISMATCH}{family}` to instantiate"

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self._start)


@contextlib.contextmanager
def quiet_type_mismatch(family: str) -> Iterator[None]:
    """Within the block, transformers' warning about loading a ``family`` checkpoint into another
    model type is dropped (a filter on the ``transformers.configuration_utils`` logger, removed on
    exit); every other message is kept. Used only for :data:`VIDEO_FAMILIES`, where the mismatch
    is expected."""
    if family not in VIDEO_FAMILIES:
        yield
        return
    logger = logging.getLogger(_CONFIG_LOGGER)
    drop = _DropTypeMismatch(family)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_gated(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from) says the hub refused a gated repository:
    huggingface_hub's ``GatedRepoError``, an HTTP 401 / 403, or transformers' "gated repo"
    message."""
    for item in _chain(error):
        if isinstance(item, GatedRepoError):
            return True
        response = getattr(item, "response", None)
        if getattr(response, "status_code", None) in (401, 403):
            return True
        text = str(item).lower()
        if "gated repo" in text or "is gated" in text or "401 client error" in text:
            return True
    return False


def gated_remedy(source: str) -> str:
    """What to do when the hub refuses the gated repository ``source`` (a hub id)."""
    return (
        f"{source} is a gated repository: accept its licence on its model page "
        f"(https://huggingface.co/{source}) with your Hugging Face account, then log in on this machine "
        "(`hf auth login`) or set the HF_TOKEN environment variable to an access token of that account"
    )


@dataclass(frozen=True)
class CacheEntry:
    """What the Hugging Face cache holds of a hub id: ``path`` (the cached snapshot folder, None
    when nothing is cached) and ``size_bytes`` (of the cached repository on disk, None when
    unknown)."""

    path: Optional[str]
    size_bytes: Optional[int]


def cache_entry(repo_id: str, cache_dir: Optional[str] = None) -> CacheEntry:
    """Where the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``, or ``cache_dir``) holds
    ``repo_id``'s ``config.json``, and the repository's size on disk; nothing is downloaded.
    ``CacheEntry(None, None)`` when it is not cached."""
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir)
    if not isinstance(found, str):
        return CacheEntry(None, None)
    size: Optional[int] = None
    try:
        for repo in scan_cache_dir(cache_dir).repos:
            if repo.repo_id == repo_id and repo.repo_type == "model":
                size = int(repo.size_on_disk)
    except Exception:  # noqa: BLE001 - a cache that cannot be scanned still has the path
        size = None
    return CacheEntry(os.path.dirname(found), size)
