"""AudioSet's 527 class names, shipped as package data (``cmsf/data/audioset_labels.txt``).

They are the labels of AST's AudioSet head (``id2label``) and the text prompts AT-GDINO-SAM
grounds; the random presets give their AST the same names.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

AUDIOSET_NUM_LABELS = 527


@lru_cache(maxsize=1)
def _audioset_labels() -> tuple[str, ...]:
    text = resources.files("cmsf").joinpath("data/audioset_labels.txt").read_text(encoding="utf-8")
    labels = tuple(line for line in text.splitlines() if line)
    if len(labels) != AUDIOSET_NUM_LABELS:  # pragma: no cover - guards the shipped file
        raise RuntimeError(f"cmsf/data/audioset_labels.txt: expected {AUDIOSET_NUM_LABELS} labels, got {len(labels)}")
    return labels


def audioset_labels() -> list[str]:
    """The 527 AudioSet class names in class-index order (``class_labels_indices.csv``:
    index 0 ``"Speech"`` … index 526 ``"Field recording"``), as AST's ``id2label`` has them."""
    return list(_audioset_labels())
