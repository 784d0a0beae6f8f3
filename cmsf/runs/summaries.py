"""Reading a ``cmsf eval`` run folder's records for a report: ``summary.json`` (every field the
report reads checked for its type, :func:`check_summary`) and its CSV files (``per_video.csv``,
``sweep.csv``); every error names the file (and the field or line), none is a traceback.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, Sequence


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (a run's ``summary.json``).

    Raises:
        FileNotFoundError: no such file; ValueError: not UTF-8 JSON, or not an object."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (expected the folder of a `cmsf eval` run)")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: unreadable ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


_OBJECT, _TEXT, _NUMBER, _FLAG = "a JSON object", "a string", "a number", "true or false"
SUMMARY_FIELDS = {
    **dict.fromkeys(("settings", "sweep", "variants"), _OBJECT),
    **dict.fromkeys(("pipeline", "preset", "device", "dtype", "subset", "split", "pred_dir", "root"), _TEXT),
    **dict.fromkeys(("miou", "fscore", "elapsed_s", "computed", "reused"), _NUMBER),
}
"""The type each ``summary.json`` field the report reads must have (or be null / absent)."""
SWEEP_FIELDS = {"note": _TEXT, "test_tuned": _FLAG, "cache_bytes_per_video": _NUMBER, "model_passes_per_video": _NUMBER}
_CHECKS = {
    _OBJECT: lambda v: isinstance(v, dict),
    _TEXT: lambda v: isinstance(v, str),
    _NUMBER: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    _FLAG: lambda v: isinstance(v, bool),
}


def _fits(value: Any, expected: str) -> bool:
    return value is None or _CHECKS[expected](value)


def check_summary(path: Path, summary: Mapping[str, Any]) -> Mapping[str, Any]:
    """``summary`` (read from ``path``) when every field the report reads has its type
    (:data:`SUMMARY_FIELDS`, the sweep's :data:`SWEEP_FIELDS`, numbers as variants); else a
    ``ValueError`` naming the file and the first wrong field."""
    wrong = [(k, t) for k, t in SUMMARY_FIELDS.items() if not _fits(summary.get(k), t)]
    sweep, variants = summary.get("sweep"), summary.get("variants")
    if isinstance(sweep, dict):
        wrong += [(f"sweep.{k}", t) for k, t in SWEEP_FIELDS.items() if not _fits(sweep.get(k), t)]
    if isinstance(variants, dict):
        wrong += [(f"variants.{k}", _NUMBER) for k, v in variants.items() if not _fits(v, _NUMBER)]
    if wrong:
        field, expected = wrong[0]
        value = summary
        for part in field.split("."):
            value = value[part]
        shown = json.dumps(value, ensure_ascii=False)
        raise ValueError(f"{path}: field {field!r} is {shown[:60]}, expected {expected} (or null)")
    return summary


def read_rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """The rows of the CSV file ``path`` (a short row's missing cells are ``""``).

    Raises:
        FileNotFoundError: no such file; ValueError: not UTF-8, not a CSV, a row longer than the
            header, or a column of ``required`` missing."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (expected the folder of a `cmsf eval` run)")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, restval="")
            rows = list(reader)
            if any(None in row for row in rows):
                raise ValueError(f"{path}: a row with more cells than the header's {len(reader.fieldnames or [])}")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise ValueError(f"{path}: not a readable CSV ({error})") from None
    if rows and any(column not in rows[0] for column in required):
        raise ValueError(f"{path}: expected the columns {', '.join(required)}")
    return rows
