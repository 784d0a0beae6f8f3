"""The text of ``cmsf models``: one block per component (:class:`cmsf.models.inventory.ModelRow`,
with its :class:`cmsf.runs.model_check.CheckResult` under ``--check``) and a closing line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # annotations only: the command's module imports no torch (see cmsf/cli/commands.py)
    from cmsf.models.inventory import ModelRow
    from cmsf.runs.model_check import CheckResult

__all__ = ["component_block", "missing_message", "size_text"]


def size_text(size: Optional[int]) -> str:
    """Bytes as ``"2.6 GB"`` / ``"350 MB"`` (decimal units, as the hub shows them)."""
    if size is None:
        return "size unknown"
    if size >= 10**9:
        return f"{size / 10**9:.1f} GB"
    return f"{size / 10**6:.0f} MB"


def _parameters(count: Optional[int]) -> str:
    if count is None:
        return "parameters unknown until downloaded"
    return f"{count / 1e6:.1f} M parameters" if count >= 10**5 else f"{count} parameters"


def _weights(row: ModelRow, offline: bool) -> str:
    if row.available:
        size = f" ({size_text(row.download_bytes)})" if row.download_bytes is not None else ""
        return f"{row.location}{size}"
    if row.location != "must be downloaded":  # there, but refused
        return f"{row.location}: {row.remedy}"
    if row.download_bytes is not None:
        return f"must be downloaded ({size_text(row.download_bytes)})"
    return "must be downloaded (size unknown offline)" if offline else "must be downloaded (size unknown)"


def _check_line(result: CheckResult) -> str:
    if not result.ok:
        return f"FAILED: {result.error}"
    peak = "n/a (not CUDA)" if result.peak_bytes is None else f"{result.peak_bytes / 2**30:.2f} GiB"
    return f"loaded in {result.load_seconds:.2f} s, one forward {result.forward_seconds:.3f} s, peak GPU memory {peak}"


def component_block(row: ModelRow, offline: bool, result: Optional[CheckResult] = None) -> list[str]:
    """The lines of one component: name and pipelines, source, family and class with dtype and
    parameter count, where the weights are, and the check's outcome when there is one."""
    family = "family unknown" if row.family is None else f"{row.family} ({row.model_class or 'refused'})"
    lines = [
        f"{row.component}  [{', '.join(row.pipelines)}]",
        f"  source:  {row.source}",
        f"  model:   {family}, {row.dtype}, {_parameters(row.parameters)}",
        f"  weights: {_weights(row, offline)}",
    ]
    if result is not None:
        lines.append(f"  check:   {_check_line(result)}")
    return lines


def missing_message(rows: Sequence[ModelRow]) -> str:
    """What is missing and how to get it, one clause per component (empty when nothing is)."""
    missing = [row for row in rows if not row.available]
    if not missing:
        return ""
    parts = [f"{row.component} ({row.source}): {row.remedy}" for row in missing]
    return f"{len(missing)} of {len(rows)} components cannot load from this machine as it is: " + "; ".join(parts)
