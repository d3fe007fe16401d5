"""Packaging: the wheel holds exactly the `evorank` package (with its data and entry point), and every
module imports on its own in a fresh interpreter (no import circles, no hidden import-order needs)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("evolve", "evaluators", "archive", "seeds")

REQUIRED = (
    "evorank/__init__.py",
    "evorank/__main__.py",
    "evorank/evolve/cli/main.py",
    "evorank/evolve/llm/mend/names.py",
    "evorank/seeds/bm25.py",
    "evorank/evaluators/data/suites.toml",
    "evorank/evaluators/program/contract.md",
    "evorank/evaluators/data/demo/corpus.jsonl",
    "evorank/evolve/llm/prompts/system.txt",
    "evorank/evolve/inspection/export_template.py.txt",
    "evorank/evolve/dashboard/static/index.html",
    "evorank/evolve/dashboard/static/dashboard.js",
    "evorank/evolve/dashboard/static/dashboard.css",
    "evorank/evolve/api/runs.py",
)


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e}); the wheel test builds from the tracked files")
    return [p for p in out.stdout.decode().split("\0") if p]


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "evorank-src"
    for rel in tracked_files():
        if (REPO / rel).is_file():  # tracked but deleted in this checkout: not part of it
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, f"wheel build failed:\n{build.stdout}\n{build.stderr}"
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_wheel_holds_only_the_evorank_package(wheel):
    version = project_version()
    assert wheel.name.startswith(f"evorank-{version}-")
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = f"evorank-{version}.dist-info"
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"evorank", dist_info}, f"unexpected top-level entries: {sorted(tops - {'evorank', dist_info})}"
    for required in REQUIRED:
        assert required in names, f"{required} missing from the wheel"
    # Each subpackage is inside evorank, with its __init__.
    for pkg in SUBPACKAGES:
        assert f"evorank/{pkg}/__init__.py" in names
    # Nothing of the development tree: no tests, benchmarks, docs or build leftovers anywhere.
    for n in names:
        parts = n.split("/")
        assert not {"tests", "bench", "docs", "__pycache__", ".git"} & set(parts), n
        assert parts[-1] != "conftest.py" and not parts[-1].endswith(".pyc"), n


@pytest.mark.slow
def test_wheel_entry_point(wheel):
    version = project_version()
    with zipfile.ZipFile(wheel) as z:
        text = z.read(f"evorank-{version}.dist-info/entry_points.txt").decode()
    section, scripts = None, {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and section == "console_scripts":
            key, value = (x.strip() for x in line.split("=", 1))
            scripts[key] = value
    assert scripts == {"evorank": "evorank.evolve.cli.main:main"}


@pytest.mark.slow
def test_unpacked_wheel_imports_and_finds_its_data(wheel, tmp_path):
    """The built package works from the wheel alone (package data reached through importlib.resources)."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys, evorank\n"
        f"assert evorank.__file__.startswith({str(site)!r}), evorank.__file__\n"
        "from evorank.evolve.llm.prompts import PromptTemplates\n"
        "from evorank.evaluators.program.source import contract_text\n"
        "from evorank.evaluators.data.suites import suites\n"
        "assert PromptTemplates.load().texts['system'].strip()\n"
        "assert contract_text().strip() and suites()\n"
        "from evorank.evolve.dashboard.server import STATIC, static_text\n"
        "assert all(static_text(name) for name in STATIC)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "evorank", "--help"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------ each module alone


def all_modules() -> list[str]:
    """Dotted names of every module under the subpackages, found by walking the folders."""
    mods = []
    for pkg in SUBPACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            if "__pycache__" in rel.parts or rel.name == "__main__":
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            mods.append("evorank." + ".".join(parts))
    return mods


def test_module_discovery_finds_every_subpackage():
    mods = all_modules()
    for pkg in SUBPACKAGES:
        assert f"evorank.{pkg}" in mods
        assert any(m.startswith(f"evorank.{pkg}.") for m in mods), f"no modules found in {pkg}/"
    assert "evorank.evolve.cli.main" in mods and "evorank.archive.store" in mods


def _import_alone(module: str) -> tuple[str, int, str]:
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120,
                       env=os.environ.copy())
    return module, r.returncode, r.stderr


def test_each_module_imports_alone():
    # The fresh interpreters must see this checkout, not some other installed evorank.
    where = subprocess.run([sys.executable, "-c", "import evorank; print(evorank.__file__)"],
                           capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().parent == REPO, f"subprocesses import {where.stdout.strip()}"
    mods = ["evorank", *all_modules()]
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 2) * 2)) as pool:
        results = list(pool.map(_import_alone, mods))
    failed = [f"{m} (exit {rc}):\n{err.strip().splitlines()[-1] if err.strip() else ''}"
              for m, rc, err in results if rc != 0]
    assert not failed, "modules that fail to import on their own:\n" + "\n".join(failed)


def test_python_dash_m_evorank_help():
    r = subprocess.run([sys.executable, "-m", "evorank", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()
