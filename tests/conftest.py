"""Shared fixtures: tiny collections built on the fly, and the real collections in ../shared.

Tests that need ../shared are marked ``shared_data``; they skip when it is absent, except when
``EVORANK_REQUIRE_DATA=1`` (set by .ci/run), where missing data is a failure.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EVORANK_SHARED", REPO.parent / "shared"))


_SESSION_DIR: Path | None = None


def pytest_configure(config):
    global _SESSION_DIR
    # test_metrics checks our metrics against ranx, whose numba kernels compile once per machine: keep that
    # cache outside the per-test temp dirs.
    if "NUMBA_CACHE_DIR" not in os.environ:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("evorank")) / "numba"
        path.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(path)
    # ir_datasets reads IR_DATASETS_HOME once, at import: point it at a writable copy of the shared
    # cache before any test imports it (ir_datasets writes derived files next to its archives).
    _SESSION_DIR = Path(tempfile.mkdtemp(prefix="evorank-tests-"))
    if (SHARED / "ir_datasets").is_dir():
        home = _SESSION_DIR / "ir_datasets"
        shutil.copytree(SHARED / "ir_datasets", home)
        for p in [home, *home.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
        os.environ["IR_DATASETS_HOME"] = str(home)
    else:  # never let a test fall through to the user's own ir_datasets cache or the network
        os.environ["IR_DATASETS_HOME"] = str(_SESSION_DIR / "no_ir_datasets")
    os.environ["EVORANK_DATA"] = str(SHARED / "datasets")
    os.environ["EVORANK_CACHE"] = str(_SESSION_DIR / "cache")


def pytest_unconfigure(config):
    if _SESSION_DIR is not None:
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def write_beir(folder: Path, docs: dict[str, str | tuple[str, str]], queries: dict[str, str],
               qrels: list[tuple[str, str, int]]) -> Path:
    """Write a BEIR-layout collection. docs values are text or (title, text)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for did, body in docs.items():
            title, text = body if isinstance(body, tuple) else ("", body)
            f.write(json.dumps({"_id": did, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, d, g in qrels:
            f.write(f"{q}\t{d}\t{g}\n")
    return folder



WORDS = ("apple banana cherry delta echo foxtrot golf hotel india juliet kilo lima mango nectar oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def write_random_beir(folder: Path, n_docs: int = 80, n_queries: int = 40, seed: int = 0,
                      judged_per_query: int = 6) -> Path:
    """A seeded random BEIR-layout collection over a 26-word vocabulary: docs of 5-40 words, 3-word queries,
    ``judged_per_query`` random documents judged 1 or 2 per query."""
    rnd = random.Random(seed)
    docs = {f"d{i}": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(5, 40))) for i in range(n_docs)}
    queries = {f"q{i}": " ".join(rnd.choice(WORDS) for _ in range(3)) for i in range(n_queries)}
    qrels = [(f"q{i}", f"d{d}", rnd.randint(1, 2)) for i in range(n_queries)
             for d in rnd.sample(range(n_docs), judged_per_query)]
    return write_beir(folder, docs, queries, qrels)


def random_topics(tmp_path_factory, name: str, **kwargs):
    """A module fixture's body: a random BEIR collection (``write_random_beir(**kwargs)``) loaded as topics, with
    its own index cache for as long as the module's tests run."""
    from evorank.evaluators.evaluate import load_topics

    root = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVORANK_CACHE", str(root / "cache"))
        yield load_topics(str(write_random_beir(root / "coll", **kwargs)))


def cmdline(pid: int) -> bytes:
    """The command line of process ``pid`` (empty when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def long_lived_helper(pid: int) -> bool:
    """Whether ``pid`` is one of the helpers multiprocessing and loky keep for as long as this process lives:
    resource trackers, and the forkserver the index build starts when it is called from a threaded process."""
    cmd = cmdline(pid)
    return b"resource_tracker" in cmd or b"multiprocessing.forkserver" in cmd


def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, uid) of every live (non-zombie) process, from /proc (no psutil)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith("Z"):
            continue
        out[int(d)] = (int(fields["PPid"]), int(fields["Uid"].split()[0]))
    return out


def descendants(pid: int, table: dict[int, tuple[int, int]] | None = None) -> list[int]:
    """Every live process below ``pid``."""
    table = proc_table() if table is None else table
    out, frontier = [], [pid]
    while frontier:
        cur = frontier.pop()
        kids = [p for p, (pp, _) in table.items() if pp == cur]
        out.extend(kids)
        frontier.extend(kids)
    return out


def sandbox_processes() -> list[int]:
    """Live processes under a sandbox uid that descend from this test process (other people's runs excluded)."""
    from evorank.evaluators.sandbox.jail import SANDBOX_UID_BASE, SANDBOX_UID_SPAN

    table = proc_table()
    mine = set(descendants(os.getpid(), table))
    return [p for p, (_, uid) in table.items()
            if SANDBOX_UID_BASE <= uid < SANDBOX_UID_BASE + SANDBOX_UID_SPAN and p in mine]

TINY_DOCS = {
    "d1": ("Solar panels", "Solar panels convert sunlight into electricity for homes."),
    "d2": ("Wind power", "Wind turbines generate electricity from moving air."),
    "d3": ("Baking bread", "Bread is baked from flour, water, yeast and salt."),
    "d4": ("Sourdough", "A sourdough starter makes bread rise without commercial yeast."),
    "d5": ("Telescopes", "A telescope gathers light so astronomers can see faint stars."),
    "d6": ("Stars", "Stars shine because nuclear fusion converts hydrogen into helium."),
    "d7": ("Electricity at home", "Home electricity bills fall when solar power is installed on the roof."),
    "d8": ("", "The and of it."),  # nothing but stopwords: an empty document
}
TINY_QUERIES = {"q1": "solar electricity", "q2": "how to bake bread with yeast", "q3": "stars and telescopes",
                "q4": "unjudged query about cats"}
TINY_QRELS = [("q1", "d1", 2), ("q1", "d7", 1), ("q2", "d3", 1), ("q2", "d4", 2), ("q3", "d5", 1), ("q3", "d6", 1)]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("EVORANK_CACHE", str(path))
    return path


@pytest.fixture
def tiny_collection(tmp_path, cache_dir) -> Path:
    return write_beir(tmp_path / "tiny", TINY_DOCS, TINY_QUERIES, TINY_QRELS)


def _require(path: Path, what: str) -> None:
    if not path.exists():
        msg = f"{what} not found at {path} (set EVORANK_SHARED to the shared/ folder)"
        if os.environ.get("EVORANK_REQUIRE_DATA") == "1":
            pytest.fail(msg + " and EVORANK_REQUIRE_DATA=1 forbids skipping")
        pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_env():
    """The real collections: ir_datasets at a writable copy of ../shared/ir_datasets and local:
    at ../shared/datasets (set up in pytest_configure); indexes in the session cache."""
    _require(SHARED / "ir_datasets", "the shared ir_datasets cache")
    _require(SHARED / "datasets", "the shared BEIR-layout collections")
    return {k: os.environ[k] for k in ("IR_DATASETS_HOME", "EVORANK_DATA", "EVORANK_CACHE")}


@pytest.fixture(scope="session")
def reference_scores():
    _require(SHARED / "reference" / "beir.yaml", "the published reference scores")
    return parse_reference(SHARED / "reference" / "beir.yaml")


def parse_reference(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """condition -> dataset -> metric -> value, from Pyserini's regression yaml (no yaml dependency)."""
    out: dict = {}
    cond = ds = None
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith("- name:"):
            cond = s.split(":", 1)[1].strip()
            out[cond] = {}
        elif s.startswith("- dataset:"):
            ds = s.split(":", 1)[1].strip()
            out[cond][ds] = {}
        elif cond and ds and ":" in s and s.lstrip("- ").split(":")[0] in ("nDCG@10", "R@100", "R@1000"):
            k, v = s.lstrip("- ").split(":", 1)
            out[cond][ds][k.strip()] = float(v)
    return out
