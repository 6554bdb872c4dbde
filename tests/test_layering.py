"""The architecture contracts (CONTRIBUTING.md, "Layout"), enforced.

import-linter checks the layers (core <- services <- simulation <- checking <- adapters
<- report/plugin) and that nothing below the plugin imports pytest; an AST walk checks
that adapters use only public names of the simulation.
"""

from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest_bgwork

ROOT = pathlib.Path(pytest_bgwork.__file__).parent


def _lint(where: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the package found in ``where`` (first on ``sys.path``)."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code], cwd=where, capture_output=True, text=True,
                          check=False)


def test_import_linter_contracts_are_kept() -> None:
    proc = _lint(ROOT.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def _imports(path: pathlib.Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from X import name`` in ``path``, relative ones resolved."""
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.extend((base, alias.name) for alias in node.names)
    return out


def test_adapters_use_only_public_names_of_the_simulation() -> None:
    offenders = []
    for path in sorted((ROOT / "adapters").glob("*.py")):
        for module, name in _imports(path):
            inside = module.startswith("pytest_bgwork") and not module.startswith("pytest_bgwork.adapters")
            private = name.startswith("_") or any(p.startswith("_") for p in module.split("."))
            if inside and private:
                offenders.append(f"{path.name}: from {module} import {name}")
    assert offenders == [], "adapters must use the public API only:\n" + "\n".join(offenders)


def test_the_layering_check_sees_a_violation(tmp_path: pathlib.Path) -> None:
    """The contract is live: in a copy of the package, a core module importing a service breaks it."""
    shutil.copytree(ROOT, tmp_path / "pytest_bgwork", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT.parent / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "pytest_bgwork" / "core" / "probe.py").write_text("from ..services import kv  # noqa: F401\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "pytest_bgwork.core.probe -> pytest_bgwork.services.kv" in proc.stdout
