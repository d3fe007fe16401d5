"""Small text helpers shared by the inspection commands, the HTML report and the CLI's help texts:
metric labels, short collection names, number formats, a program as JSON, the diff of two programs.

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
# ``inspect_queries.resolve_id``.
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
#: What ``top``/``status --significance`` test on when no suite is named: the run's own collections.
RUN_COLLECTIONS = "run"


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


def bin_labels(dim) -> list[str]:
    """Labels of a grid dimension's bins, from its edges: '<1', '1–2', ..., '≥4'."""
    e = dim.edges

    def f(x):
        return f"{x:g}"

    return [f"<{f(e[0])}"] + [f"{f(a)}–{f(b)}" for a, b in zip(e, e[1:])] + [f"≥{f(e[-1])}"]


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
