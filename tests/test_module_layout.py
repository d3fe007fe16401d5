"""Layout rules for the offline mutator's modules, the proposers and the loop: each imports on its own (no
import circles), none imports another module's private (underscore) names, none grows past ~600 lines."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

EVOLVE = Path(__file__).resolve().parents[1] / "evolve"
MODULES = sorted(p.stem for p in EVOLVE.glob("*.py") if p.stem != "__init__")
OWN = [m for m in MODULES if m.startswith("offline_") or m in ("loop", "proposers")]


def test_no_private_names_cross_modules():
    bad = []
    for path in (EVOLVE / f"{m}.py" for m in OWN):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("evorank")):
                bad += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad


@pytest.mark.parametrize("module", OWN)
def test_module_imports_alone(module):
    """A fresh interpreter imports each module first: an import circle would fail here."""
    subprocess.run([sys.executable, "-c", f"import evorank.evolve.{module}"], check=True, capture_output=True)


@pytest.mark.parametrize("module", OWN)
def test_module_size(module):
    assert len((EVOLVE / f"{module}.py").read_text(encoding="utf-8").splitlines()) <= 600
