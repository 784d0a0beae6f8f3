"""Fixtures of the benchmark suite.

- The Hugging Face hub is put in offline mode before anything imports transformers (as
  ``tests/conftest.py`` does): the presets measured here (``tiny``, ``paper-random``) are built
  from configs with random weights and never download anything.
- ``case``: every (preset, device, dtype) combination; the ones this machine cannot or should
  not run are skipped with the reason (no CUDA; bfloat16 on CPU; paper-random on CPU unless
  ``CMSF_BENCH_PAPER_ON_CPU=1``).
- ``models``: the case's models, loaded once per session per (preset, dtype, device).
- ``device``: ``cpu`` / ``cuda`` for the model-free benchmarks (nms, bind_filter, metrics).
- the machine info of the JSON report gets the library versions, the GPU and the date.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datetime  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from bench import harness  # noqa: E402
from bench.harness import Case  # noqa: E402

load_case_models = harness.load_case_models


@pytest.fixture(params=harness.all_cases(), ids=lambda case: case.id)
def case(request: pytest.FixtureRequest) -> Case:
    """A (preset, device, dtype) combination this machine can run (others are skipped)."""
    case: Case = request.param
    reason = case.skip_reason()
    if reason:
        pytest.skip(reason)
    return case


@pytest.fixture
def models(case: Case) -> Any:
    """The loaded ``Models`` of ``case`` (cached for the session)."""
    return load_case_models(case.preset, case.device, case.dtype)


@pytest.fixture(params=harness.DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """``cpu`` or ``cuda`` for benchmarks without models; ``cuda`` is skipped without a GPU."""
    reason = harness.device_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture(scope="session")
def video() -> tuple[torch.Tensor, torch.Tensor, int]:
    """One AVSBench-shaped video: ``(frames [5, 3, 224, 224] uint8, waveform [1, 80000], 16000)``."""
    return harness.avsbench_video(seed=0)


# ---------------------------------------------------------------------------------------------
# Report metadata
# ---------------------------------------------------------------------------------------------


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """Record the software versions, the accelerator and the date in the JSON report."""
    import torchaudio
    import torchvision
    import transformers

    import cmsf

    machine_info["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine_info["torch"] = torch.__version__
    machine_info["torchvision"] = torchvision.__version__
    machine_info["torchaudio"] = torchaudio.__version__
    machine_info["transformers"] = transformers.__version__
    machine_info["cmsf"] = getattr(cmsf, "__version__", "unknown")
    machine_info["cmsf_commit"] = _git_commit()
    machine_info["torch_num_threads"] = torch.get_num_threads()
    machine_info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        machine_info["cuda"] = torch.version.cuda
        machine_info["gpu"] = torch.cuda.get_device_name(0)
        machine_info["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    else:
        machine_info["gpu"] = None
    machine_info["paper_on_cpu"] = os.environ.get(harness.PAPER_ON_CPU_ENV) == "1"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print cmsf-vs-reference rows of the pipeline benchmarks (also in the JSON's extra_info)."""
    if not harness.SUMMARY:
        return
    terminalreporter.section("cmsf vs reference loop (pipelines, one AVSBench video)")
    header = f"{'pipeline':<16}{'case':<28}{'cmsf s':>10}{'ref s':>10}{'speedup':>9}{'mask IoU':>10}"
    terminalreporter.write_line(header)
    for row in harness.SUMMARY:
        terminalreporter.write_line(
            f"{row['pipeline']:<16}{row['case']:<28}{row['cmsf_s']:>10.3f}{row['reference_s']:>10.3f}"
            f"{row['speedup']:>9.2f}{row['agreement']:>10.4f}"
        )
