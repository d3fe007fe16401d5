"""Docs explain the product, code comments explain the code, and measurements live in bench/RESULTS.md.

History belongs in git: the docs (docs/*.md, README.md, bench/RESULTS.md) and the comments and docstrings of the
package name no development run, stop, issue or commit. docs/architecture.md names every subpackage, and every
relative link in the docs points to a file (and, for a Markdown file, a heading) that exists."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("evolve", "evaluators", "archive", "seeds", "examples")  # the top-level folders of the package
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md", REPO / "bench" / "RESULTS.md"]

#: What history looks like in prose: a development run's name (a single letter after "local-"), a span of runs
#: (two run letters joined by two dots), a numbered stop or issue, a commit id (7 to 40 hex digits with at least one digit and one letter
#: a-f, standing alone: not part of a longer hex string such as a SHA-256 checksum, a word, a path, a
#: hyphenated id or a colour such as #116329).
HISTORY = {
    "run name": re.compile(r"\blocal-[a-z](?![-\w])"),
    "span of runs": re.compile(r"\bruns? [a-z]\.\.[a-z]\b"),
    "stop number": re.compile(r"\bstops?[- ]?#?\d+", re.IGNORECASE),
    "issue number": re.compile(r"\bissues? ?#?\d+", re.IGNORECASE),
    "commit id": re.compile(r"(?<![#\w/-])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w/-])"),
}


def history_in(text: str) -> list[str]:
    """Every piece of development history in ``text``, as "kind: match"."""
    return [f"{kind}: {m.group(0)!r}" for kind, pattern in HISTORY.items() for m in pattern.finditer(text)]


@pytest.mark.parametrize("text", [
    "measured in run local-q #26",
    "the runs before (`local-k` to `local-p`)",
    "runs c..j, 114 fresh replies",
    "the stop-17 run", "in stop 26", "stops 19-23",
    "issue 15", "(Issue #16)",
    "snapshot f1cc19a", "commit 3346d87", "7d37b6f..HEAD", "the tree before (36dc854)",
    "a full id 8fc85b5d0a1b2c3d4e5f60718293a4b5c6d7e8f9",
])
def test_history_is_found(text):
    assert history_in(text), text


@pytest.mark.parametrize("text", [
    "../shared/tools/local-llm.sh start",
    "local:cranfield, local-model runs and a local server",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "color: #116329; background: #dafbe1",
    "CPython gh-106905", "uuid 550e8400-e29b-41d4-a716-446655440000",
    "runs/20261122-101500", "fitness 0.5918926582585518, 1e-6, 2^24",
    "the run stops with reason llm_unavailable", "we issue BEGIN IMMEDIATE", "deadbeef", "1234567",
])
def test_ordinary_text_is_not_history(text):
    assert not history_in(text), history_in(text)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_docs_name_no_run_stop_issue_or_commit(path):
    found = [f"line {n}: {hit}" for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             for hit in history_in(line)]
    assert not found, f"{path.relative_to(REPO)} logs history (say what and why; measurements go in " \
                      f"bench/RESULTS.md with a date and a command): {found}"


def comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of a Python file."""
    source = path.read_text(encoding="utf-8")
    out = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
           if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                out.append((first.lineno, first.value.value))
    return out


CODE = sorted(p for folder in (*PACKAGES, "bench", "tests") for p in (REPO / folder).rglob("*.py")
              if "__pycache__" not in p.parts)
TEXTS = sorted(p for folder in PACKAGES for ext in ("*.txt", "*.md") for p in (REPO / folder).rglob(ext))


def test_comments_and_docstrings_name_no_run_stop_issue_or_commit():
    found = [f"{p.relative_to(REPO)}:{line}: {hit}" for p in CODE for line, text in comments_and_docstrings(p)
             for hit in history_in(text)]
    found += [f"{p.relative_to(REPO)}:{n}: {hit}" for p in TEXTS
              for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) for hit in history_in(line)]
    assert not found, "say what the code does and why, not which run showed it: " + "; ".join(found)


def test_the_comment_scan_reads_comments_and_docstrings(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""Module."""\nX = "local-q is data, not a comment"\n\n\ndef f():\n'
                      '    """Seen in run local-q."""\n    return 1  # issue 29\n')
    hits = [hit for _, text in comments_and_docstrings(sample) for hit in history_in(text)]
    assert sorted(hits) == ["issue number: 'issue 29'", "run name: 'local-q'"]


def subpackages() -> list[str]:
    """Every package folder of evorank, as a path relative to the repository root."""
    return sorted(str(init.parent.relative_to(REPO)) for folder in PACKAGES
                  for init in (REPO / folder).rglob("__init__.py") if "__pycache__" not in init.parts)


def test_architecture_names_every_subpackage():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    packages = subpackages()
    assert {"evolve", "evolve/llm/mend", "evaluators/sandbox", "archive"} <= set(packages)
    for top in PACKAGES:
        assert top in packages
    # a top-level folder appears in the tree as "name/"; a nested one by its path, e.g. `evolve/llm/mend/`
    missing = [p for p in packages if f"{p}/" not in text]
    assert not missing, f"docs/architecture.md does not name these subpackages: {missing}"


LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")  # links and images


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text, fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            text.append(slug(line.lstrip("#")))
    return set(text)


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, fragment = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_files_that_exist(path):
    assert not broken_links(path), f"{path.relative_to(REPO)}: {broken_links(path)}"


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "b.md").write_text("# Some heading\n")
    doc = tmp_path / "a.md"
    doc.write_text("[ok](b.md) [ok](b.md#some-heading) [web](https://example.org/x.md) ![img](gone.png)\n"
                   "[gone](missing.md) [bad anchor](b.md#other)\n")
    assert broken_links(doc) == ["gone.png (no such file)", "missing.md (no such file)",
                                 "b.md#other (no such heading)"]
