"""The ``cmsf`` command starts without the library's heavy dependencies: ``--help``, ``--version``,
a subcommand's ``--help`` and a usage error answer without importing torch or transformers, and
``import cmsf`` is lazy (each public name imports its submodule on first use)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cmsf
from cmsf import names
from cmsf.checks import DTYPES
from cmsf.io import avsbench
from cmsf.models import loading
from cmsf.pipelines.per_frame import PIPELINES
from cmsf.runs import sweep

HEAVY = ("torch", "transformers", "torchvision")

PROBE = """
import json, sys
from cmsf.cli.commands import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


def _start(*args: str) -> tuple[int, list[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    *lines, last = done.stderr.strip().splitlines()
    outcome = json.loads(last)
    return outcome["code"], outcome["heavy"], done.stdout + "\n".join(lines)


@pytest.mark.parametrize(
    "args, code",
    [
        (["--help"], 0),
        (["--version"], 0),
        (["segment", "--help"], 0),
        (["segment-many", "--help"], 0),
        (["eval", "--help"], 0),
        (["report", "--help"], 0),
        (["segment", "--bogus"], 2),  # a usage error: an unknown option
        (["segment", "examples/demo.mp4", "-p", "owod-bind", "--out", "/tmp/x", "--dtype", "fp64"], 2),
        (["segment", "examples/demo.mp4", "-p", "owod-bind", "--out", "/tmp/x", "--num-frames", "2", "--fps", "1"], 2),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else str(value),
)
def test_the_command_answers_without_torch_or_transformers(args: list[str], code: int) -> None:
    exit_code, heavy, output = _start(*args)
    assert exit_code in (code, None if code == 0 else code), output
    assert heavy == [], f"cmsf {' '.join(args)} imported {heavy}"
    if args == ["--version"]:
        assert cmsf.__version__ in output


def test_import_cmsf_is_lazy_and_every_public_name_resolves() -> None:
    probe = "import sys, cmsf; print(sorted(m for m in %r if m in sys.modules)); print(sorted(dir(cmsf)))" % (HEAVY,)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    heavy, listed = done.stdout.splitlines()
    assert heavy == "[]"
    assert set(cmsf.__all__) <= set(eval(listed))
    assert sorted(cmsf.__all__) == sorted(cmsf._MODULE_OF)
    for name in cmsf.__all__:
        value = getattr(cmsf, name)
        assert getattr(value, "__name__", name) == name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        cmsf.nothing_here  # noqa: B018


def test_the_light_names_match_what_they_name() -> None:
    assert names.PIPELINE_NAMES == tuple(PIPELINES)
    assert names.DTYPE_NAMES == tuple(DTYPES)
    assert loading.PRESETS is names.PRESETS and avsbench.SUBSETS is names.SUBSETS
    assert names.SWEEP_HELP == sweep.free_keys_help()
