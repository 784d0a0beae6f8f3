"""The package's architecture, checked from its source: subpackages by layer with one-way imports,
small modules and functions, typed settings, one table of model families, imports at the top.

Reads cmsf's source with :mod:`ast` (nothing is imported but ``cmsf`` itself, for its API).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import cmsf

PACKAGE = Path(cmsf.__file__).parent

LAYERS = ("cli", "runs", "pipelines", "stages", "models", "io")
"""The subpackages, highest first: each imports only those after it (and the top-level modules)."""

FAMILY_NAMES = {
    "audio-spectrogram-transformer", "grounding-dino", "mm-grounding-dino", "sam", "sam_hq", "sam2",
    "sam2_video", "edgetam", "edgetam_video", "owlv2", "sam3", "sam3_video", "pe_audio_video", "imagebind",
}
"""Model family names (config ``model_type`` values, and ImageBind's): compared as literals, each is a
place that tells families apart by name instead of reading the family table."""


def _modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _imported(name: str, node: ast.AST) -> list[str]:
    """The cmsf modules an ``import`` / ``from … import`` node names (absolute or relative)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "cmsf"]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        if base.split(".")[0] != "cmsf":
            return []
        targets = []
        for alias in node.names:
            target = f"{base}.{alias.name}"
            targets.append(target if target in MODULES else base)
        return targets
    return []


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:`` (not run)."""
    lines = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {child.lineno for child in ast.walk(node) if isinstance(child, (ast.Import, ast.ImportFrom))}
    return lines


def _module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            for target in _imported(name, node):
                if target in MODULES and target != name:
                    graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a list of nodes, or [] when it has none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def _room(module: str) -> str:
    """The subpackage a module lives in (``cli``, ``runs``, …), or the module itself at the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cmsf"


def test_subpackages_and_top_level_modules():
    subpackages = [p.parent.name for p in PACKAGE.glob("*/__init__.py")]
    top_modules = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert set(LAYERS) <= set(subpackages) and len(subpackages) >= 4
    assert len(top_modules) <= 12, top_modules


def test_no_module_import_circle():
    assert _cycle(_module_graph()) == []


def test_subpackages_import_downward_only():
    upward = []
    for module, targets in _module_graph().items():
        room = _room(module)
        if room not in LAYERS:
            continue
        for target in targets:
            other = _room(target)
            if other in LAYERS and LAYERS.index(other) < LAYERS.index(room):
                upward.append(f"{module} → {target}")
    assert upward == []
    rooms: dict[str, set[str]] = {}
    for module, targets in _module_graph().items():
        rooms.setdefault(_room(module), set()).update(_room(t) for t in targets if _room(t) != _room(module))
    rooms.pop("cmsf", None)  # the package's own __init__ re-exports every room
    assert _cycle(rooms) == []


def test_cmsf_imports_are_at_the_top_outside_the_command_line():
    local = []
    for name, tree in TREES.items():
        if name.startswith("cmsf.cli"):
            continue
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if _imported(name, node):
                        local.append(f"{name}:{node.lineno}")
    assert local == []


def test_no_module_over_600_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 600}
    assert long == {}


def _code_lines(function: ast.AST, lines: list[str]) -> int:
    body = list(function.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    numbers = {
        n
        for statement in body
        for n in range(statement.lineno, statement.end_lineno + 1)
        if lines[n - 1].strip() and not lines[n - 1].strip().startswith("#")
    }
    return len(numbers)


def test_no_function_over_60_code_lines():
    long = []
    for name, tree in TREES.items():
        lines = MODULES[name].read_text().splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node, lines) > 60:
                long.append(f"{name}.{node.name}: {_code_lines(node, lines)}")
    assert long == []


def test_no_settings_mapping_indexed_by_a_string():
    pattern = re.compile(r"settings\s*\[\s*[\"']|settings\.get\(\s*[\"']")
    found = [f"{name}:{n}" for name, path in MODULES.items() for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def _family_literals(node: ast.AST) -> bool:
    values = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return any(isinstance(v, ast.Constant) and v.value in FAMILY_NAMES for v in values)


def test_families_are_told_apart_by_the_family_table():
    comparisons = [
        f"{name}:{node.lineno}"
        for name, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and any(_family_literals(side) for side in [node.left, *node.comparators])
    ]
    assert len(comparisons) <= 2, comparisons


@pytest.mark.parametrize("name", cmsf.__all__)
def test_public_api_is_annotated(name):
    obj = getattr(cmsf, name)
    functions = [obj] if inspect.isfunction(obj) else []
    if inspect.isclass(obj):
        functions = [f for key, f in vars(obj).items() if inspect.isfunction(f) and not key.startswith("_")]
        functions += [vars(obj)["__init__"]] if inspect.isfunction(vars(obj).get("__init__")) else []
    for function in functions:
        signature = inspect.signature(function)
        missing = [p for p, param in signature.parameters.items() if p not in ("self", "cls") and param.annotation is inspect.Parameter.empty]
        assert missing == [], f"{name}.{function.__name__}: {missing}"
        assert signature.return_annotation is not inspect.Signature.empty or function.__name__ == "__init__", f"{name}.{function.__name__}"
