"""The ``cmsf`` command's start: wall time of ``cmsf --help`` and ``cmsf segment --help`` in a
fresh Python process (``python -m cmsf.cli``), what a user waits for before any work starts.

``extra_info``: ``imports_torch`` (whether the process imported torch: it must not, see
``tests/test_cli_start.py``). The figure depends mostly on the disk cache and on other processes;
measure on a quiet machine. With ``--benchmark-disable`` each command runs once, as a smoke test.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = "import runpy, sys\ntry:\n    runpy.run_module('cmsf.cli', run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)"


@pytest.mark.parametrize("args", [["--help"], ["segment", "--help"]], ids=" ".join)
def test_command_help(benchmark, args: list[str]) -> None:
    def start() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300, check=True)

    done = benchmark.pedantic(start, rounds=5, iterations=1, warmup_rounds=1)
    assert "Usage: " in done.stdout
    benchmark.extra_info["imports_torch"] = done.stderr.strip().splitlines()[-1] == "True"
    assert not benchmark.extra_info["imports_torch"]
