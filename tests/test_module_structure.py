"""Project rules checked on the source of the CLI, inspection and archive modules: no import circles (lazy
imports inside functions count too), no imports of another module's private names, all SQL of the
inspection commands behind named RunStore methods, the archive independent of evolve/ and evaluators/, and
files of at most ~600 lines."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("evolve", "archive", "evaluators", "seeds")  # the packages whose modules these rules are enforced on
NO_SQL = ("evolve/inspect_cmds.py", "evolve/inspect_queries.py", "evolve/inspect_format.py", "evolve/report.py",
          "evolve/export.py")
SIZE_CHECKED = sorted(str(p.relative_to(REPO)) for pkg in CHECKED for p in (REPO / pkg).glob("*.py"))


def module_files() -> dict[str, Path]:
    out = {}
    for p in REPO.rglob("*.py"):
        rel = p.relative_to(REPO)
        if rel.parts[0] in ("tests", "bench", "docs", "build") or any(s.startswith(".") for s in rel.parts):
            continue
        name = ".".join(("evorank", *rel.with_suffix("").parts)).removesuffix(".__init__")
        out[name] = p
    return out


MODULES = module_files()


def imports_of(name: str) -> list[tuple[str, str]]:
    """(imported module, imported name or '') for every import anywhere in the module, lazy ones included."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "") if sub in MODULES else (target, alias.name))
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return [(m, n) for m, n in found if m in MODULES and m != name]


def checked(name: str) -> bool:
    parts = name.split(".")
    return len(parts) > 1 and parts[1] in CHECKED


def test_no_import_circles():
    graph = {m: {t for t, _ in imports_of(m)} for m in MODULES}

    def related(a, b):  # a package importing its own submodules (or the reverse) is not a circle
        return a.startswith(b + ".") or b.startswith(a + ".")

    circles = []
    for start in filter(checked, MODULES):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if related(node, nxt):
                    continue
                if nxt == start:
                    circles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert circles == []


def test_no_private_names_imported_across_modules():
    bad = [f"{m} imports {n} from {t}" for m in filter(checked, MODULES) for t, n in imports_of(m)
           if n.startswith("_") and not n.startswith("__")]
    assert bad == []


def test_archive_imports_nothing_from_evolve_or_evaluators():
    bad = [f"{m} imports {t}" for m in MODULES if m.startswith("evorank.archive")
           for t, _ in imports_of(m) if t.startswith(("evorank.evolve", "evorank.evaluators"))]
    assert bad == []


@pytest.mark.parametrize("rel", NO_SQL)
def test_inspection_sends_no_raw_sql_through_the_store(rel):
    tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
    calls = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "execute"]
    assert calls == [], f"{rel} calls .execute() at lines {calls}; add a named query to archive/queries.py"


@pytest.mark.parametrize("rel", SIZE_CHECKED)
def test_files_stay_short(rel):
    assert len((REPO / rel).read_text(encoding="utf-8").splitlines()) <= 600
