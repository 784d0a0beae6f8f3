"""Render a pytest-benchmark JSON report of this suite as the Markdown tables of bench/README.md.

Usage::

    python -m bench.table bench/results/cpu-tiny-2026-11-24.json

Prints the machine line, a table of every benchmark (median and IQR of its rounds, peak GPU
memory) and a table of the pipelines against the reference loop (medians of the same run,
speedup, mask agreement).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional


def _ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.3g} ms"


def _mib(value: Optional[int]) -> str:
    return "–" if value is None else f"{value / 2**20:.0f}"


def machine_line(report: dict[str, Any]) -> str:
    """One line naming the machine, the libraries and the date of a report."""
    info = report.get("machine_info", {})
    cpu = info.get("cpu", {}).get("brand_raw", info.get("processor", "?"))
    gpu = info.get("gpu") or "no GPU"
    return (
        f"{info.get('date', report.get('datetime', '?'))} · {gpu} · CPU {cpu} "
        f"({info.get('torch_num_threads', '?')} torch threads) · torch {info.get('torch', '?')} · "
        f"transformers {info.get('transformers', '?')} · cmsf {info.get('cmsf_commit', '?')[:10]}"
    )


def benchmark_table(report: dict[str, Any]) -> str:
    """Every benchmark: group, case (parameters), rounds, median, IQR, peak GPU memory."""
    lines = [
        "| benchmark | case | rounds | median | IQR | peak GPU MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for bench in sorted(report.get("benchmarks", []), key=lambda b: (b.get("group") or "", b["name"])):
        stats = bench["stats"]
        extra = bench.get("extra_info", {})
        lines.append(
            f"| {bench.get('group') or bench['name']} | {bench.get('param') or '–'} | {stats['rounds']} | "
            f"{_ms(stats['median'])} | {_ms(stats['iqr'])} | {_mib(extra.get('peak_gpu_mem_bytes'))} |"
        )
    return "\n".join(lines)


def pipeline_table(report: dict[str, Any]) -> str:
    """The pipeline benchmarks: cmsf vs the reference loop, measured in the same run."""
    lines = [
        "| pipeline | case | cmsf / video | reference / video | speedup | mask IoU vs reference | "
        "bf16 vs f32 IoU | proposals per frame | peak GPU MiB (cmsf / ref) | S4 test, projected | "
        "fraction of bf16 peak |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for bench in sorted(report.get("benchmarks", []), key=lambda b: b["name"]):
        extra = bench.get("extra_info", {})
        if "speedup" not in extra:
            continue
        bf16 = extra.get("agreement_vs_cmsf_float32")
        name = extra["pipeline"] + (f" ({extra['proposer']})" if extra.get("proposer") else "")
        lines.append(
            f"| {name} | {extra['preset']}-{extra['device']}-{extra['dtype']} | {_ms(extra['cmsf_s'])} | "
            f"{_ms(extra['reference_s'])} | {extra['speedup']:.2f}× | {extra['agreement']:.4f} | "
            f"{'–' if bf16 is None else f'{bf16:.4f}'} | {extra.get('proposals_per_frame')} | "
            f"{_mib(extra.get('peak_gpu_mem_bytes'))} / {_mib(extra.get('reference_peak_gpu_mem_bytes'))} | "
            f"{_ms(extra.get('s4_test_seconds'))} | {_fraction(extra.get('fraction_of_peak'))} |"
        )
    return "\n".join(lines)


def _fraction(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def runner_table(report: dict[str, Any]) -> str:
    """The dataset runner: seconds per video end to end, the S4 test split projected from them,
    against the sequential way; the batch-size sweep's largest size within 80 GB."""
    lines = [
        "| runner | case | videos | per video | S4 test (740 videos) | vs sequential | fraction of bf16 peak | "
        "peak GPU MiB | largest frames per batch within 80 GB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for bench in sorted(report.get("benchmarks", []), key=lambda b: b["name"]):
        extra = bench.get("extra_info", {})
        if "runner_s" in extra:
            lines.append(
                f"| {extra['pipeline']} | {extra['preset']}-{extra['device']}-{extra['dtype']} | {extra['videos']} | "
                f"{_ms(extra['per_video_s'])} | {_ms(extra['s4_test_seconds'])} | {extra['speedup_vs_sequential']:.2f}× | "
                f"{_fraction(extra.get('fraction_of_peak'))} | {_mib(extra.get('peak_gpu_mem_bytes'))} | – |"
            )
        elif "sweep" in extra and "largest_frames_per_batch_within_80gb" in extra:
            largest = extra["largest_frames_per_batch_within_80gb"]
            lines.append(
                f"| batch sweep | {bench.get('param') or '–'} | {extra['videos']} | – | – | – | – | – | "
                f"{'–' if largest is None else largest} |"
            )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a JSON file written by --benchmark-json")
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text(encoding="utf-8"))
    print(machine_line(report))
    print()
    print(benchmark_table(report))
    print()
    print(pipeline_table(report))
    print()
    print(runner_table(report))


if __name__ == "__main__":
    main()
