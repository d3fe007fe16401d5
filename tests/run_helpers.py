"""Helpers shared by the tests that run the engine against the scripted LLM server (tests/fake_openai.py): a
SEARCH/REPLACE reply, a small run configuration, one engine run, and the scripted replies of the repair tests."""
from __future__ import annotations

from pathlib import Path

from evorank.archive import RunStore
from evorank.evolve.config import RunConfig
from evorank.evolve.engine.loop import Engine

REPO = Path(__file__).resolve().parents[1]


def diff(search, replace, usage):
    return {"content": f"Idea.\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n", "usage": usage}


def make_config(tmp_path, collection, **kw):
    base = dict(seeds=["bm25"], datasets=[str(collection)], iterations=9, islands=1, workers=1, in_flight=1,
                eval_timeout_s=20, cascade=False, out=str(tmp_path / "run"))
    base.update(kw)
    return RunConfig(**base)


def run_engine(cfg, collection, resume=False):
    from evorank.evaluators.parallel import Evaluator, Limits

    evaluator = Evaluator([str(collection)], n_workers=1, limits=Limits(timeout_s=cfg.eval_timeout_s), cascade=None)
    try:
        engine = Engine(cfg, Path(cfg.out), [str(collection)], evaluator, resume=resume)
        best = engine.run()
        return engine, best
    finally:
        evaluator.close()


RETURN = "    return np.where(matched, scores, -np.inf)"  # the BM25 seed's last line


def prior(weight, usage):
    """A reply adding ``weight`` x document length to the BM25 seed's scores: a change that ranks the tiny
    collection's queries differently (a different K1 or B does not: its documents are too alike), so it is not a
    no-op. Weights 0.1, 1.0 and -0.5 rank three ways, each unlike the seed."""
    return diff(RETURN, f"    return np.where(matched, scores + {weight} * index.doc_len, -np.inf)", usage)


# raises NameError at the boost line; its fix (FIX) ranks unlike the seed (the boost weighs document length)
RAISES = {"content": "Idea.\n<<<<<<< SEARCH\n    rows = state[query.term_ids]\n=======\n    rows = state[query.term_ids]\n"
                     "    boost = UNDEFINED_BOOST * 2\n>>>>>>> REPLACE\n<<<<<<< SEARCH\n" + RETURN + "\n=======\n"
                     "    return np.where(matched, scores + boost * index.doc_len, -np.inf)\n>>>>>>> REPLACE\n",
          "usage": (100, 20)}
FIX = diff("    boost = UNDEFINED_BOOST * 2", "    boost = 2.0", (300, 15))
# returns NaN scores: a failure that names no line, so the whole block is repaired
NAN_SCORES = diff("    scores = rows.T @ query.qtf.astype(np.float32)",
                  "    scores = rows.T @ query.qtf.astype(np.float32) * np.nan", (100, 20))
FIX_NAN = diff("    scores = rows.T @ query.qtf.astype(np.float32) * np.nan",
               "    scores = rows.T @ query.qtf.astype(np.float32) + 0.5 * index.doc_len", (300, 15))


def programs(run_dir) -> dict[int, object]:
    store = RunStore.open(Path(run_dir), readonly=True)
    try:
        return {p.iteration: p for p in store.programs() if p.iteration > 0 and p.operator != "migration"}
    finally:
        store.close()


def fenced(code, usage):
    return {"content": f"Fixed.\n```python\n{code}\n```\n", "usage": usage}
