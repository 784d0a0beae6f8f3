"""The AudioSet → AVSS vocabulary: for each of AudioSet's 527 labels a visual noun and an AVSS class.

``cmsf/data/audioset_vocabulary.csv`` (UTF-8, a header, one row per AudioSet label in class-index
order) has the columns:

- ``label``: the AudioSet label exactly as :func:`cmsf.io.audioset.audioset_labels` has it;
- ``noun``: what to look for in the picture, a short noun phrase for a grounding model
  ("Male speech, man speaking" → "man", "Chainsaw" → "chainsaw", "Bark" → "dog"); empty when the
  sound has no visible source (wind, silence, reverberation, music genres);
- ``avss_class``: one of the 70 AVSS class names (:data:`AVSS_CLASS_NAMES`) or empty;
- ``reason``: why the class is empty (required then, empty otherwise), in four kinds:
  ``no visible source: …``, ``genre or mood: …``, ``no AVSS class: …`` (a visible source that
  none of the 70 classes names) and ``ambiguous: …`` (a source that could be several classes,
  e.g. "Speech": man, woman, boy, girl or baby);
- ``note``: optional, where a mapping is approximate (e.g. "Steelpan" → ``handpan``, AudioSet
  having no handpan label).

Each row was written and checked by hand against AudioSet's ontology and AVSBench's class list.
152 labels have a class, 375 none. Eighteen AVSS classes are named by no AudioSet label, so an
audio tagger can never give them: bassoon, boy, donkey, elephant, erhu, girl, leopard, lion,
missile-rocket, parrot, pipa, sorna, tank, tiger, tractor, tuba, utv, wolf ("Roaring cats (lions,
tigers)" is ambiguous between lion, tiger and leopard; "Child speech" between boy and girl).

The AVSS class names are those of AVSBench-semantic's ``label2idx.json`` (OpenNLPLab/AVSBench,
the ``avss`` release): 71 names with 1-based indices, ``background`` first; class k of a mask is
the name with index k + 1, so :data:`AVSS_CLASS_NAMES`\\ [k − 1] is class k (1 … 70) and 0 is
background.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from importlib import resources
from typing import NamedTuple, Optional

from cmsf.io.audioset import audioset_labels

AVSS_CLASS_NAMES: tuple[str, ...] = (
    "accordion", "airplane", "axe", "baby", "bassoon", "bell", "bird", "boat", "boy", "bus", "car",
    "cat", "cello", "clarinet", "clipper", "clock", "dog", "donkey", "drum", "duck", "elephant",
    "emergency-car", "erhu", "flute", "frying-food", "girl", "goose", "guitar", "gun", "guzheng",
    "hair-dryer", "handpan", "harmonica", "harp", "helicopter", "hen", "horse", "keyboard", "leopard",
    "lion", "man", "marimba", "missile-rocket", "motorcycle", "mower", "parrot", "piano", "pig",
    "pipa", "saw", "saxophone", "sheep", "sitar", "sorna", "squirrel", "tabla", "tank", "tiger",
    "tractor", "train", "trombone", "truck", "trumpet", "tuba", "ukulele", "utv", "vacuum-cleaner",
    "violin", "wolf", "woman",
)  # fmt: skip
"""The 70 AVSS classes in index order: class k (1 … 70) is ``AVSS_CLASS_NAMES[k - 1]``; 0 is background."""

VOCABULARY_COLUMNS = ("label", "noun", "avss_class", "reason", "note")
REASON_KINDS = ("no visible source", "genre or mood", "no AVSS class", "ambiguous")
"""How a ``reason`` starts (followed by ``": "`` and the particulars)."""


class VocabularyEntry(NamedTuple):
    """One AudioSet label's row of the vocabulary.

    Attributes:
        label: the AudioSet label.
        noun: the visual noun for grounding, or ``None`` when the sound has no visible source.
        avss_class: the AVSS class name, or ``None``.
        class_index: the AVSS class index 1 … 70, or 0 (background) when ``avss_class`` is None.
        reason: why there is no class (``""`` when there is one).
        note: a remark on an approximate mapping, or ``""``.
    """

    label: str
    noun: Optional[str]
    avss_class: Optional[str]
    class_index: int
    reason: str
    note: str


def read_vocabulary(text: str, source: str = "vocabulary") -> dict[str, VocabularyEntry]:
    """Parse and check a vocabulary CSV (the format of the module docstring).

    Args:
        text: the CSV's content.
        source: how errors name the file.

    Returns:
        AudioSet label → :class:`VocabularyEntry`, in AudioSet's class-index order.

    Raises:
        ValueError: naming ``source`` and the row: other columns, a label that is not AudioSet's or
            appears twice, a missing label, a class not among the 70, a class with a reason or no
            noun, no class and no reason, a reason of no known kind.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != VOCABULARY_COLUMNS:
        raise ValueError(f"{source}: expected the header {','.join(VOCABULARY_COLUMNS)}, got {header!r}")
    known = set(audioset_labels())
    classes = {name: k + 1 for k, name in enumerate(AVSS_CLASS_NAMES)}
    entries: dict[str, VocabularyEntry] = {}
    for line, row in enumerate(reader, start=2):
        where = f"{source}, line {line}"
        if len(row) != len(VOCABULARY_COLUMNS):
            raise ValueError(f"{where}: expected {len(VOCABULARY_COLUMNS)} columns, got {len(row)}")
        label, noun, avss_class, reason, note = (cell.strip() for cell in row)
        if label not in known:
            raise ValueError(f"{where}: {label!r} is not an AudioSet label")
        if label in entries:
            raise ValueError(f"{where}: {label!r} appears twice")
        if avss_class and avss_class not in classes:
            raise ValueError(f"{where}: avss_class {avss_class!r} is not one of the 70 AVSS classes")
        if avss_class and (reason or not noun):
            raise ValueError(f"{where}: a row with a class needs a noun and no reason ({label!r})")
        if not avss_class and not reason.startswith(tuple(f"{kind}: " for kind in REASON_KINDS)):
            raise ValueError(f"{where}: no class for {label!r}: expected a reason starting with one of {REASON_KINDS}")
        index = classes.get(avss_class, 0)
        entries[label] = VocabularyEntry(label, noun or None, avss_class or None, index, reason, note)
    missing = [label for label in audioset_labels() if label not in entries]
    if missing:
        raise ValueError(f"{source}: {len(missing)} AudioSet labels are missing, e.g. {missing[0]!r}")
    return {label: entries[label] for label in audioset_labels()}


@lru_cache(maxsize=1)
def _shipped() -> dict[str, VocabularyEntry]:
    path = resources.files("cmsf").joinpath("data/audioset_vocabulary.csv")
    return read_vocabulary(path.read_text(encoding="utf-8"), "cmsf/data/audioset_vocabulary.csv")


def audioset_vocabulary() -> dict[str, VocabularyEntry]:
    """The vocabulary shipped with cmsf (``cmsf/data/audioset_vocabulary.csv``, read and checked
    once per process): AudioSet label → :class:`VocabularyEntry`, in AudioSet's order."""
    return dict(_shipped())
