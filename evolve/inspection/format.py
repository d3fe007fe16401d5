"""Small text helpers shared by the inspection commands, the HTML report and the CLI's help texts:
metric labels, short collection names, number formats, the MAP-Elites axes' titles and bin labels, a program as
JSON, the diff of two programs.

Standard library only (no archive, no rich), so that the CLI can use it while building its parsers.
"""
from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evorank.archive import ProgramRecord

METRIC_LABELS = {"ndcg@10": "nDCG@10", "recall@100": "R@100", "recall@1000": "R@1000", "map@1000": "MAP@1000"}
# How a program of a run can be named (``evorank show RUN ID``, ``evorank eval RUN:ID``); see
# ``queries.resolve_id``.
ID_FORMS = "best, best@island:K, a program id, a code-hash prefix, or seed:NAME"
# ``evorank export``'s description and its --unverified flag (export_check.py is what verifies).
EXPORT_DESCRIPTION = (
    "Write a single .py file with the program's code, the text analyzer, an index builder and a Retriever: "
    "Retriever(docs).search(query, k=10). It does not import evorank. Only a program within the exportable subset "
    "(numpy/scipy array work over the contract's index and query; docs/sandbox.md) is written: another is refused "
    "with each line and reason (exit status 1) unless --unverified.")
UNVERIFIED_HELP = (
    "write the program even when it is outside the exportable subset: the file then opens with a banner saying so "
    "and listing what the check found. Read such a file before importing it: it runs the evolved code with your "
    "rights, outside any sandbox")
# ``evorank explain``: its parser's texts and its arguments (besides the sandbox limits)
EXPLAIN = {
    "parser": {
        "help": "what a program adds over its seed: each part taken out and measured",
        "description": "Find the parts a program adds over its seed (terms added to the score: feedback, proximity, "
                       "field or variant channels; changed formulas; changed constants), evaluate it without each (a "
                       "formula or constant restored to the seed's) and print each part's contribution per "
                       "collection; for a program of a run, also what each lineage step changed. Every program is "
                       "evaluated in the sandbox.",
        "epilog": "examples:\n  evorank explain runs/x:best\n  evorank explain runs/x:42 --suite heldout\n"
                  "  evorank explain my_scorer.py --base bm25 --datasets local:cisi --json\n"},
    "arguments": (
        (("program",), {"help": "program file, shipped seed or example, or RUN:best, RUN:42, RUN:best@island:1"}),
        (("--suite",), {"help": "collections to measure on (default: the run's suite for RUN:ID, else dev)"}),
        (("--datasets",), {"help": "comma-separated collection addresses instead of a suite"}),
        (("--base",), {"metavar": "PROGRAM", "help": "the seed to compare with (default: the lineage's seed for "
                                                     "RUN:ID, else the shipped seed the program differs least from)"}),
        (("--no-lineage",), {"dest": "no_lineage", "action": "store_true", "help": "skip the lineage steps"}),
        (("--workers",), {"type": int, "help": "sandboxed evaluation processes (default 2)"}),
        (("--json",), {"action": "store_true", "help": "print the numbers as JSON"}),
        (("--per-query",), {"dest": "per_query", "action": "store_true", "help": "with --json: each query's values"}),
    ),
}
#: What ``top``/``status --significance`` test on when no suite is named: the run's own collections.
RUN_COLLECTIONS = "run"
# What a run's validation queries do, said the same way wherever they are shown: selection (parents, elites, the
# cascade) sees only the train queries, and the reported best is the one of the ``best_of`` fittest programs by
# train fitness that does best on validation (``evaluators.splits``, ``archive.queries.best_on_validation``).
VALIDATION_ROLE = ("never steer evolution (parents, elites, the cascade); they only choose the reported best among "
                   "the {best_of} best programs by train fitness")


def short_name(address: str) -> str:
    """'beir/scifact/test' -> 'scifact', 'local:cisi' -> 'cisi', '/data/x/' -> 'x'."""
    if ":" in address and not address.startswith(("/", ".", "~")):
        address = address.split(":", 1)[1]
    parts = [p for p in re.split(r"[\\/]", address) if p]
    if not parts:
        return address
    if len(parts) >= 2 and parts[-1] in ("test", "dev", "train", "judged") and parts[0] in ("beir", "bright", "msmarco-passage"):
        return parts[-2]
    if len(parts) >= 2 and parts[0] in ("beir", "bright"):
        return "/".join(parts[1:])
    return parts[-1]


def short_names(addresses) -> dict[str, str]:
    """Short labels for a set of collection addresses, full addresses where short ones would clash."""
    addresses = list(dict.fromkeys(addresses))
    short = {a: short_name(a) for a in addresses}
    counts = Counter(short.values())
    return {a: (s if counts[s] == 1 else a) for a, s in short.items()}


def fmt(x, digits: int = 4) -> str:
    """A number with ``digits`` decimals; '-' for None and non-finite values."""
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def pct(new, old) -> str:
    """Relative change from ``old`` to ``new`` as '+1.23%'; '' when either is missing or old is 0."""
    if new is None or old is None or not old:
        return ""
    return f"{(new / old - 1) * 100:+.2f}%"


def macro(rec: ProgramRecord, metric: str) -> float | None:
    """Mean of one metric over the collections a program was measured on (None if on none)."""
    vals = [m[metric] for m in rec.metrics.values() if m.get(metric) is not None]
    return sum(vals) / len(vals) if vals else None


# Each MAP-Elites axis a run can have (``evolve.engine.descriptors``): (its title on a grid, what it measures, for a
# caption). Any other axis is a metric's macro mean, titled by its name.
AXES = {
    "evidence": ("kinds of evidence read", "how many kinds of index evidence beyond BM25's the program reads"),
    "balance": ("R@100 gain − nDCG@10 gain", "where its gains over BM25 come from: its mean relative gain in R@100 "
                "minus that in nDCG@10 (recall-leaning above 0, precision-leaning below)"),
    "complexity": ("block size (syntax-tree nodes)", "the size of its EVOLVE-BLOCK"),
    "latency_ratio": ("time per query (× BM25)", "its median time per query relative to the BM25 seed"),
}


def axis_title(dim) -> str:
    return AXES.get(dim.name, (dim.name,))[0]


def axis_meaning(dim) -> str:
    """What an axis measures, in a sentence's words ('' for a metric's axis)."""
    return AXES.get(dim.name, (dim.name, ""))[1]


def significant(x: float, digits: int) -> str:
    """``x`` rounded to ``digits`` significant digits, written without exponent ('0.0019', '120', '-0.6')."""
    if x == 0:
        return "0"
    places = digits - 1 - math.floor(math.log10(abs(x)))
    return f"{round(x, places):.{max(places, 0)}f}"


def _edge_text(name: str, x: float, digits: int) -> str:
    if name == "balance":  # a difference of two ratios: shown as percentage points
        return "0" if x == 0 else ("+" if x > 0 else "−") + significant(abs(x) * 100, digits) + "%"
    if name == "latency_ratio":
        return significant(x, digits) + "×"
    return significant(x, digits)


def _lean(name: str, low: float | None, high: float | None) -> str:
    """For the balance axis: which kind of gain a bin holds ('' when it straddles 0, or on other axes)."""
    if name != "balance":
        return ""
    if low is not None and low >= 0 and (high is None or high > 0):
        return " recall-leaning"
    if high is not None and high <= 0:
        return " precision-leaning"
    return ""


def bin_labels(dim) -> list[str]:
    """The labels of a grid dimension's bins, with edges rounded to the fewest significant digits (at least two)
    that keep neighbouring edges apart, in the axis's units: '0', '1', '2', '3+' for counts; '+0.19% .. +0.79%
    recall-leaning' for the balance of gains; '< 0.81×' for time per query."""
    name, edges = dim.name, list(dim.edges)
    counts = all(float(e).is_integer() and e > 0 for e in edges) and edges == list(
        range(int(edges[0]), int(edges[0]) + len(edges)))
    if counts:  # consecutive whole numbers (the evidence axis): one bin per count
        first = "0" if edges[0] == 1 else f"< {int(edges[0])}"
        return [first] + [str(int(a)) for a in edges[:-1]] + [f"{int(edges[-1])}+"]
    for digits in range(2, 8):
        shown = [_edge_text(name, e, digits) for e in edges]
        if len(set(shown)) == len(shown):
            break
    labels = [f"< {shown[0]}{_lean(name, None, edges[0])}"]
    labels += [f"{a} .. {b}{_lean(name, lo, hi)}" for a, b, lo, hi in zip(shown, shown[1:], edges, edges[1:])]
    labels.append(f"≥ {shown[-1]}{_lean(name, edges[-1], None)}")
    return labels


def fmt_duration(seconds: float | None) -> str:
    """Seconds as H:MM:SS; '-' for None."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def record_json(rec: ProgramRecord, *, code: bool = True, prompt: bool = False, response: bool = False) -> dict:
    """A program as a JSON-ready dict (what ``--json`` prints); code, prompt and reply on request."""
    out = {
        "id": rec.id, "code_hash": rec.code_hash, "island": rec.island, "generation": rec.generation,
        "iteration": rec.iteration, "operator": rec.operator, "parent_ids": list(rec.parent_ids),
        "status": rec.status, "failure_reason": rec.failure_reason, "failure_detail": rec.failure_detail,
        "fitness": rec.fitness, "metrics": rec.metrics, "latency_ms": rec.latency_ms,
        "latency_ratio": rec.latency_ratio, "stage": rec.stage, "cell": list(rec.cell) if rec.cell else None,
        "features": rec.features, "model": rec.model, "prompt_tokens": rec.prompt_tokens,
        "completion_tokens": rec.completion_tokens, "cost_usd": rec.cost_usd, "created_at": rec.created_at,
    }
    if code:
        out["code"] = rec.code
    if prompt:
        out["prompt"] = rec.prompt
    if response:
        out["response"] = rec.response
    return out


def program_diff(a: ProgramRecord, b: ProgramRecord, context: int = 3) -> str:
    """Unified diff from ``a``'s code to ``b``'s ('' when they are identical)."""
    def label(r):
        return f"#{r.id} {r.operator} fitness {fmt(r.fitness)}"

    return "".join(difflib.unified_diff(
        a.code.splitlines(keepends=True), b.code.splitlines(keepends=True),
        fromfile=label(a), tofile=label(b), n=context,
    ))
