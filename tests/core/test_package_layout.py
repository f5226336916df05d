# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""The package's floor plan, read from the source: ``core`` imports neither domain, and the IFE and OCT wings never
import each other (every ``import`` and ``from ... import``, at any depth of a module, relative ones resolved)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "custom_components"


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, as a dotted name (relative imports resolved against its package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = ".".join(parts[:-1])  # a module's package; an __init__'s own package
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _wing_imports(wing: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(PACKAGE.parent)): _imported_modules(path) for path in sorted((PACKAGE / wing).rglob("*.py"))
    }


@pytest.mark.parametrize(
    "wing, forbidden",
    [("core", ("custom_components.ife", "custom_components.oct")), ("ife", ("custom_components.oct",)),
     ("oct", ("custom_components.ife",))],
)  # fmt: skip
def test_no_wing_imports_what_it_must_not(wing, forbidden):
    modules = _wing_imports(wing)
    assert modules, f"no modules found under custom_components/{wing}"
    offending = {
        source: sorted(m for m in imported for f in forbidden if m == f or m.startswith(f + "."))
        for source, imported in modules.items()
    }
    assert {source: names for source, names in offending.items() if names} == {}


def test_the_reader_resolves_relative_imports():
    """The check above would pass vacuously if relative imports were misread: the faces' are resolved here."""
    faces = _imported_modules(PACKAGE / "ife" / "__init__.py")
    assert "custom_components.ife.classes" in faces and "custom_components.ife.calibration" in faces
    assert "custom_components.core.recipe" in _imported_modules(PACKAGE / "core" / "__init__.py")


def test_the_package_has_only_its_three_wings():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    assert folders == ["core", "ife", "oct"]
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]


def test_the_ife_wing_runs_without_the_oct_dependencies():
    """eyepy, oct-converter, highdicom, OpenCV and pydicom are the ``oct`` extra: with them unimportable, core and the
    IFE wing still import and build the IFE network (the OCT reader, which needs them, is where they are imported)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('eyepy', 'oct_converter', 'highdicom', 'cv2', 'pydicom'):\n"
        "    sys.modules[name] = None  # an import of any of them now fails\n"
        "import custom_components.core, custom_components.ife\n"
        "from custom_components.ife.networks import MultiTaskIFEResNet\n"
        "MultiTaskIFEResNet(channels=(4, 4, 4, 4))\n"
        "assert not any(sys.modules.get(n) for n in ('eyepy', 'oct_converter', 'highdicom', 'cv2', 'pydicom'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
