"""A small but realistic run, written straight through the archive API (no loop, no timing):
two islands, both seeds, evolved children with real metrics, a crossover, a migration copy, and
failed / duplicate / cascade-rejected proposals. Used by test_inspect, test_report, test_export.

Metrics are real: every accepted program is evaluated with evorank's own evaluator on the built-in
demo collection and on a tiny BEIR folder, so an exported program must reproduce them exactly.
"""
from __future__ import annotations

from pathlib import Path

from evorank.archive import FeatureDim, GridSpec, Islands, ProgramRecord, RunStore
from evorank.evaluators.evaluate import evaluate_on, load_topics
from evorank.evaluators.metrics import fitness, fitness_spec
from evorank.evaluators.program.source import compile_program, seed_path

from conftest import TINY_DOCS, TINY_QRELS, TINY_QUERIES, write_beir

BM25 = seed_path("bm25").read_text()
QL = seed_path("ql_dirichlet").read_text()


def edit(source: str, old: str, new: str) -> str:
    """``source`` with ``old`` replaced; fails loudly when the seed no longer has ``old``."""
    assert old in source, f"the seed no longer contains {old!r}"
    return source.replace(old, new)


# A child that uses more of the Index than BM25 does (doc_term, cf, total_tokens): exported code
# must see exactly the same statistics to reproduce its metrics.
_SCORE_HEAD = BM25[BM25.index("def score(query, index, state):"):BM25.index("    rows = state[query.term_ids]\n")]
RICH = edit(edit(edit(edit(BM25, _SCORE_HEAD + "    rows = state[query.term_ids]",
    '''def _coverage(index):
    """log(1 + distinct terms) per document, from the forward index."""
    return np.log1p(np.diff(index.doc_term.indptr).astype(np.float64))


def score(query, index, state):
    """BM25 plus a small collection-frequency prior and a coverage bonus."""
    rows = state[query.term_ids]
    prior = np.log1p(index.cf[query.term_ids] / index.total_tokens).sum()'''),
    "    return np.where(matched, scores, -np.inf)",
    "    scores = scores + 0.05 * _coverage(index) - 0.01 * prior\n    return np.where(matched, scores, -np.inf)"),
    "K1 = 0.9", "K1 = 1.2"), "B = 0.4", "B = 0.75")
CHILD_K1 = edit(BM25, "K1 = 0.9", "K1 = 1.1")
CHILD_B = edit(CHILD_K1, "B = 0.4", "B = 0.6")
QL_CHILD = edit(QL, "MU = 2000.0", "MU = 800.0")
BROKEN = edit(BM25, "def score(query, index, state):", "def score(query, index, state)")

GRID = GridSpec((FeatureDim("complexity", (200.0, 260.0, 300.0, 400.0), log=True),
                 FeatureDim("latency_ratio", (0.5, 1.0, 2.0, 4.0), log=True)))


def make_collections(folder: Path) -> list[str]:
    tiny = write_beir(folder / "tiny", TINY_DOCS, TINY_QUERIES, TINY_QRELS)
    return ["builtin:demo", str(tiny)]


def make_run(run_dir: Path, collections: list[str], *, close: bool = True):
    """Create the run; returns (store or None, {label: ProgramRecord})."""
    topics = [load_topics(a) for a in collections]
    spec = fitness_spec("rankevolve")
    cache: dict[str, tuple[dict, float]] = {}

    def measure(code: str, latency_ratio: float = 1.0):
        if code not in cache:
            prog = compile_program(code)
            metrics = {}
            for t in topics:
                res, _ = evaluate_on(prog, t)
                assert res.ok, res.error
                metrics[t.name] = dict(res.metrics)
            cache[code] = (metrics, fitness(metrics, spec))
        m, f = cache[code]
        return {"metrics": m, "fitness": f, "latency_ms": 0.5 * latency_ratio, "latency_ratio": latency_ratio}

    config = {"iterations": 12, "suite": None, "datasets": collections, "seeds": ["bm25", "ql_dirichlet"],
              "llm": "gpt-test", "fitness": "rankevolve", "islands": 2, "seed": 0, "budget_usd": 1.0}
    store = RunStore.create(run_dir, config, 0, grid=GRID, n_islands=2, synchronous="NORMAL")
    islands = Islands.from_store(store)
    store.log_event("start", {"iterations": 12})
    recs: dict[str, ProgramRecord] = {}

    def add(label, **kw):
        rec = ProgramRecord(**kw)
        islands.add(store, rec)
        recs[label] = rec
        return rec

    for name, code in (("bm25", BM25), ("ql_dirichlet", QL)):
        for isl in range(2):
            r = add(f"{name}@{isl}", code=code, operator="seed", island=isl, generation=0, iteration=0,
                    features={"seed_name": name}, stage=2, **measure(code, 1.0 if name == "bm25" else 0.8))
    recs["bm25"], recs["ql"] = recs["bm25@0"], recs["ql_dirichlet@0"]
    llm = dict(model="gpt-test", prompt_tokens=1000, completion_tokens=200, cost_usd=0.001, stage=2)
    add("k1", code=CHILD_K1, operator="diff", island=1, generation=0, iteration=1, parent_ids=(recs["bm25@1"].id,),
        prompt="PROMPT-K1: make k1 larger", response="RESPONSE-K1: <<<<<<< SEARCH", **llm, **measure(CHILD_K1, 1.05))
    add("ql1", code=QL_CHILD, operator="full", island=0, generation=1, iteration=2,
        parent_ids=(recs["ql_dirichlet@0"].id,), **llm, **measure(QL_CHILD, 0.7))
    add("broken", code=BROKEN, operator="diff", island=1, generation=1, iteration=3, parent_ids=(recs["k1"].id,),
        status="failed", failure_reason="syntax_error", failure_detail="line 22: expected ':'", fitness=0.0, **llm)
    add("b", code=CHILD_B, operator="diff", island=1, generation=1, iteration=3, parent_ids=(recs["k1"].id,),
        **llm, **measure(CHILD_B, 2.5))
    add("dup", code=CHILD_K1, operator="full", island=0, generation=2, iteration=4, parent_ids=(recs["bm25@0"].id,),
        status="duplicate", failure_reason="duplicate", **llm)
    add("cut", code=BM25.replace("K1 = 0.9", "K1 = 9.0"), operator="diff", island=1, generation=2, iteration=5,
        parent_ids=(recs["b"].id,), status="rejected_cascade", failure_reason="cascade", **llm)
    add("rich", code=RICH, operator="crossover", island=1, generation=3, iteration=7,
        parent_ids=(recs["b"].id, recs["ql1"].id), **llm, **measure(RICH, 1.6))
    add("forbidden", code=BM25.replace("import numpy as np", "import os\nimport numpy as np"), operator="full",
        island=0, generation=3, iteration=8, parent_ids=(recs["ql1"].id,), status="failed",
        failure_reason="forbidden:import os", fitness=0.0, **llm)
    islands.migrate(store, 3, 0.5)
    recs["migrant"] = next(p for p in store.programs() if p.operator == "migration")
    store.log_event("stop", {"reason": "completed", "proposals": 8, "elapsed_s": 1.0})
    if close:
        store.close()
        return None, recs
    return store, recs

