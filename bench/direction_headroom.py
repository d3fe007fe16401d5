"""What each LLM direction can buy at best: the direction written correctly into the BM25 seed (by hand, here),
evaluated on a suite against BM25 with the run's fitness (run by hand).

A proposal's direction (evolve/llm/prompts/directions.txt) names a technique; whether a model's idea can improve its
parent depends first on whether the technique, written right, improves that parent on the suite at all. This
writes one program per direction (the shipped examples where one exists: bm25f, proximity, variants, rm3), with
the constants the direction's text suggests, and prints each one's fitness over BM25's on the same queries (all
judged queries of the suite, train and validation together).

Usage:

    python bench/direction_headroom.py [--suite quick] [--fitness consistent] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from evorank.evaluators.program.source import program_path, split_block

BM25 = program_path("bm25").read_text(encoding="utf-8")
IDF = "    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5)).astype(np.float32)\n"
WEIGHTS = "    weights = np.repeat(idf, np.diff(td.indptr)) * tf / (tf + norm[td.indices])\n"
RETURN = "    return np.where(matched, scores, -np.inf)\n"
STATE = "    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)\n"
COUNT = "    held = np.bincount(index.term_doc[query.term_ids].indices, minlength=index.n_docs)\n"


def edited(*pairs: tuple[str, str]) -> str:
    out = BM25
    for old, new in pairs:
        assert old in out, old
        out = out.replace(old, new, 1)
    return out


def feedback_in_bm25() -> str:
    """BM25 with the feedback direction's helper and the lines its text gives for a weight-matrix state."""
    from evorank.evolve.llm.prompts import PromptTemplates

    helper = PromptTemplates.load().directions()["feedback"].code
    block = split_block(BM25).block
    lines = ("    terms, w = feedback_terms(np.where(matched, scores, -np.inf), index)\n"
             "    extra = state[terms].T @ w\n    scores = scores + 0.5 * extra\n    matched = matched | (extra > 0)\n")
    return split_block(BM25).join(helper + "\n\n" + block.replace(RETURN, lines + RETURN))


def variants_in_bm25() -> str:
    """BM25 with the variants direction's helpers and the lines its text gives for a weight-matrix state."""
    from evorank.evolve.llm.prompts import PromptTemplates

    helpers = PromptTemplates.load().directions()["variants"].code
    block = split_block(BM25).block.replace(STATE, STATE.replace("shape=td.shape)", "shape=td.shape), "
                                                                 "prefix_classes(index)"))
    block = block.replace("    rows = state[query.term_ids]\n",
                          "    state, classes = state\n    rows = state[query.term_ids]\n")
    lines = ("    extra = state[variant_terms(query, classes)]\n"
             "    v = 0.3 * np.bincount(extra.indices, weights=extra.data, minlength=index.n_docs)\n"
             "    scores = scores + v\n    matched = matched | (v > 0)\n")
    return split_block(BM25).join(helpers + "\n\n" + block.replace(RETURN, lines + RETURN))


def programs() -> dict[str, str]:
    """Direction (and the variant its text names) -> program text, or the name of a shipped program."""
    return {
        "saturation: BM25+ (delta 1.0)": edited((WEIGHTS, WEIGHTS.replace(
            "tf / (tf + norm[td.indices])", "((K1 + 1) * tf / (tf + norm[td.indices]) + 1.0)"))),
        "saturation: log-tf": edited((WEIGHTS, "    ltf = 1 + np.log(tf)\n"
                                      + WEIGHTS.replace("tf / (tf +", "ltf / (ltf +"))),
        "saturation: b = 0.75": edited(("B = 0.4", "B = 0.75")),
        "idf: plain log(N/df)": edited((IDF, "    idf = np.log(index.n_docs / index.df).astype(np.float32)\n")),
        "idf: RSJ floored at 0": edited((IDF, "    idf = np.maximum(np.log((index.n_docs - index.df + 0.5) / "
                                              "(index.df + 0.5)), 0).astype(np.float32)\n")),
        "idf: ICTF": edited((IDF, "    idf = np.log(index.total_tokens / index.cf).astype(np.float32)\n")),
        "smoothing: query likelihood (mu 2000)": "ql_dirichlet",
        "proximity (examples/proximity.py)": "examples/proximity.py",
        "fields (examples/bm25f.py)": "examples/bm25f.py",
        "variants: the direction's lines in BM25": variants_in_bm25(),
        "variants (examples/variants.py)": "examples/variants.py",
        "feedback: the direction's lines in BM25": feedback_in_bm25(),
        "feedback (examples/rm3.py)": "examples/rm3.py",
        "coordination: x (matched / m) ** 0.5": edited((RETURN, COUNT + "    scores = scores * (held / max(len("
                                                        "query.term_ids), 1)) ** 0.5\n" + RETURN)),
        "coordination: + 0.5 matched / m": edited((RETURN, COUNT + "    scores = scores + 0.5 * held / max(len("
                                                   "query.term_ids), 1)\n" + RETURN)),
        "prior: + 0.2 log distinct terms": edited(
            (STATE, "    prior = np.log1p(np.diff(index.doc_term.indptr))\n    return sp.csr_matrix((weights, "
                    "td.indices, td.indptr), shape=td.shape), prior / prior.mean()\n"),
            ("    rows = state[query.term_ids]\n", "    state, prior = state\n    rows = state[query.term_ids]\n"),
            (RETURN, "    scores = scores + 0.2 * prior\n" + RETURN)),
    }


def fitness(program: str, suite: str, preset: str) -> float:
    out = subprocess.run([sys.executable, "-m", "evorank", "eval", program, "--suite", suite, "--fitness", preset,
                          "--compare", "bm25", "--in-process", "--json"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    return data["fitness"] / data["compare"]["reference_fitness"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--fitness", default="consistent")
    ap.add_argument("--out", help="folder for the written programs (default: a temporary one)")
    args = ap.parse_args(argv)
    folder = Path(args.out or tempfile.mkdtemp(prefix="headroom-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{'direction':44s} fitness / BM25's ({args.fitness}, {args.suite}, all judged queries)")
    for i, (name, text) in enumerate(programs().items()):
        if text.startswith(("examples/", "ql_")):
            target = text
        else:
            split_block(text)  # still a program
            target = str(folder / f"direction_{i:02d}.py")
            Path(target).write_text(text, encoding="utf-8")
        print(f"{name:44s} {fitness(target, args.suite, args.fitness):.4f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
