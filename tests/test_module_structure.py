"""Project rules checked on the package's source: the layering each package declares (the ``May import:`` line of
its ``__init__.py`` docstring), no import circles (lazy imports inside functions count too), no imports of another
module's private names, all SQL of the inspection commands behind named RunStore methods, files of at most ~600
lines, and folders of at most 12 modules."""
import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("evolve", "archive", "evaluators", "seeds", "examples")  # the packages these rules are enforced on
NO_SQL = ("evolve/inspection/terminal.py", "evolve/inspection/queries.py", "evolve/inspection/format.py",
          "evolve/inspection/report.py", "evolve/inspection/export.py")
MAX_MODULES_PER_FOLDER = 12


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
SIZE_CHECKED = sorted(str(p.relative_to(REPO)) for name, p in MODULES.items() if name.split(".")[1:2]
                      and name.split(".")[1] in CHECKED)


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


def package_of(name: str) -> str:
    """The package a module belongs to (a package's ``__init__`` belongs to the package itself)."""
    return name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]


def may_import(package: str) -> tuple[str, ...] | None:
    """The prefixes a package's ``May import:`` line allows (``(nothing)`` -> ()); None when it has no such line."""
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text(encoding="utf-8"))) or ""
    m = re.search(r"^May import: (.*?)(?:\n\n|\Z)", doc, re.MULTILINE | re.DOTALL)
    if not m:
        return None
    text = m.group(1).strip()
    return () if text == "(nothing)" else tuple(t.strip() for t in text.replace("\n", " ").split(","))


PACKAGES = sorted(n for n in MODULES if MODULES[n].name == "__init__.py" and checked(n))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_what_it_may_import(package):
    assert may_import(package) is not None, f"{MODULES[package]} has no 'May import:' line in its docstring"


def allowed(source: str, target: str) -> bool:
    """A module may import modules of its own package, and what its package's ``May import:`` line names (a prefix
    allows everything under it)."""
    own = package_of(source)
    if package_of(target) == own or target == own:
        return True
    return any(target == p or target.startswith(p + ".") for p in may_import(own) or ())


def test_layering():
    bad = [f"{m} imports {t} (its package {package_of(m)} may import: {', '.join(may_import(package_of(m)) or [])})"
           for m in filter(checked, MODULES) for t, _ in imports_of(m) if not allowed(m, t)]
    assert bad == []


def test_layering_rule_refuses_what_the_design_forbids():
    assert not allowed("evorank.archive.store", "evorank.evolve.engine.loop")
    assert not allowed("evorank.evaluators.parallel", "evorank.evolve.config")
    assert not allowed("evorank.evaluators.sandbox.runner", "evorank.evolve.engine.loop")
    assert not allowed("evorank.evolve.offline.mutator", "evorank.evolve.cli.main")
    assert not allowed("evorank.evolve.llm.proposer", "evorank.evolve.cli.main")
    assert not allowed("evorank.evolve.llm.proposer", "evorank.evolve.engine.loop")
    assert not allowed("evorank.evolve.llm.mend.names", "evorank.evolve.llm.replies")
    assert allowed("evorank.evolve.llm.replies", "evorank.evolve.llm.mend.bindings")
    assert allowed("evorank.evolve.cli.main", "evorank.evolve.engine.loop")


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


@pytest.mark.parametrize("rel", NO_SQL)
def test_inspection_sends_no_raw_sql_through_the_store(rel):
    tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
    calls = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "execute"]
    assert calls == [], f"{rel} calls .execute() at lines {calls}; add a named query to archive/queries.py"


@pytest.mark.parametrize("rel", SIZE_CHECKED)
def test_files_stay_short(rel):
    assert len((REPO / rel).read_text(encoding="utf-8").splitlines()) <= 600


def test_folders_hold_few_modules():
    crowded = {}
    for package in PACKAGES:
        folder = MODULES[package].parent
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        if len(modules) > MAX_MODULES_PER_FOLDER:
            crowded[str(folder.relative_to(REPO))] = len(modules)
    assert crowded == {}
