"""The house rules, read from the source: which package may import which, and no circles.

Arrows go pipeline -> transforms -> models, never back; ``models/`` is pure
torch (no Beam); the modules that the report, the summary, training and tests
use to read tables or to decode stay Beam-free, so those tools do not pay for
(or depend on) Beam. Imports inside functions count: a lazy import is still an
arrow.
"""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "transforms", "models")
# A package may import those listed after it, and itself; nothing before it.
LAYER = {name: i for i, name in enumerate(PACKAGES)}
MAX_LINES = 450


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for package in PACKAGES + ("bench",):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: pathlib.Path, module: str) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level] if not path.name == "__init__.py" else module.split(".")
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)  # "from pkg import module"
    return names


MODULES = _modules()
GRAPH = {
    name: {imported for imported in _imports(path, name) if imported in MODULES and imported != name}
    for name, path in MODULES.items()
}


def test_the_reader_sees_the_project() -> None:
    # the rules below are only as good as this parse: it must find the known arrows
    assert "transforms.extract" in GRAPH["pipeline.scan"]
    assert "models.crops" in GRAPH["transforms.face_extractor"]
    assert len([m for m in MODULES if m.startswith("models.")]) > 20


@pytest.mark.parametrize("package", PACKAGES)
def test_arrows_point_down(package: str) -> None:
    wrong = sorted(
        f"{module} imports {imported}"
        for module, imported_set in GRAPH.items() if module.split(".")[0] == package
        for imported in imported_set
        if imported.split(".")[0] in LAYER and LAYER[imported.split(".")[0]] < LAYER[package]
    )
    assert not wrong, "\n".join(wrong)


def test_models_carry_no_beam() -> None:
    beam = sorted(
        module for module, path in MODULES.items() if module.startswith("models")
        if any(name.split(".")[0] == "apache_beam" for name in _imports(path, module))
    )
    assert not beam, f"models/ must stay pure torch; these import Beam: {beam}"


def test_no_import_circles() -> None:
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for imported in sorted(GRAPH[module]):
            if state.get(imported) == 1:
                circles.append(" -> ".join(path[path.index(imported):] + [imported]))
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not circles, "\n".join(circles)


BEAM_FREE = (
    "transforms.tables",
    "transforms.face_extractor",
    "transforms.decoders",
    "transforms.sandbox",
    "transforms.settings",
    "pipeline.config",
    "pipeline.history",
    "pipeline.summary",
    "pipeline.report",
    "pipeline.train",
    "pipeline.train_data",
    "pipeline.train_stream",
    "transforms.face_schema",
    "transforms.manifests",
    "pipeline.splits",
)


@pytest.mark.parametrize("module", BEAM_FREE)
def test_table_readers_decoders_and_offline_tools_load_without_beam(module: str) -> None:
    code = f"import sys, {module}; print('apache_beam' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"importing {module} pulls in Beam"


def test_source_files_stay_readable_in_one_sitting() -> None:
    long = sorted(
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in MODULES.values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    )
    assert not long, f"split these by responsibility (over {MAX_LINES} lines):\n" + "\n".join(long)
