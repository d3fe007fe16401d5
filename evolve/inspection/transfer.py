"""Transfer: how programs of a run do on collections never used for selection (held-out).

``evaluate_sources`` scores program sources the way ``evorank eval`` does; ``transfer_data`` puts the
run's own (seen) measurements of its best program and seeds next to held-out ones computed now, for
the transfer table of ``evorank report``.
"""
from __future__ import annotations

import time

from evorank.archive import ProgramRecord
from evorank.evaluators.errors import EvorankError
from evorank.evaluators.availability import split_available


def evaluate_sources(sources: dict[str, str], addresses, k: int = 1000, log=None,
                     trusted: frozenset[str] | set[str] = frozenset()) -> dict[str, dict]:
    """Evaluate programs (label -> source) on collections as ``evorank eval`` does: ``load_topics`` once per
    collection; programs whose label is in ``trusted`` (the seeds) with ``evaluate_on`` in this process, the
    others (LLM-written code) through the static checks and the sandbox, as in ``evorank run``.

    Returns {label: {"collections": {address: metrics | None}, "errors": {address: reason}}}."""
    from evorank.evaluators.evaluate import evaluate_on, load_topics
    from evorank.evaluators.parallel import evaluate_program_sandboxed
    from evorank.evaluators.program.source import compile_program

    addresses = list(addresses)
    topics = [load_topics(a, log=log) for a in addresses]
    out = {label: {"collections": {}, "errors": {}} for label in sources}

    def record(label, address, ok, metrics, why):
        out[label]["collections"][address] = dict(metrics) if ok else None
        if not ok:
            out[label]["errors"][address] = why

    for label, src in sources.items():
        if label in trusted:
            try:
                prog = compile_program(src, name=label)
            except EvorankError as e:
                out[label]["errors"]["*"] = str(e)
                continue
            for address, t in zip(addresses, topics):
                res, _ = evaluate_on(prog, t, k=k)
                record(label, address, res.ok, res.metrics, f"{res.error_reason}: {res.error}")
        else:
            suite = evaluate_program_sandboxed(src, addresses, name=label, k=k, topics=topics)
            for address, res in zip(addresses, suite.collections):
                record(label, address, res.ok, res.metrics, f"{res.error_reason}: {res.error}")
    return out


def heldout_addresses(spec: str) -> list[str]:
    """Collection addresses of a suite name or of a comma-separated list of addresses."""
    from evorank.evaluators.data.suites import resolve_collections, suites

    if spec in suites():
        return resolve_collections(spec, None)
    return resolve_collections(None, spec)


def _suite_names() -> set[str]:
    from evorank.evaluators.data.suites import suites

    return set(suites())


def transfer_data(best: ProgramRecord, seeds: dict[str, ProgramRecord], heldout: str | None, log=None) -> dict:
    """Seen metrics (from the archive) and held-out metrics (evaluated now) of best + seeds."""
    programs = {f"best #{best.id}": best}
    for name, s in seeds.items():
        if s.code_hash != best.code_hash:
            programs[f"seed {name}"] = s
    seen = {label: rec.metrics for label, rec in programs.items()}
    out = {"programs": list(programs), "seen_collections": list(best.metrics), "seen": seen,
           "heldout_spec": heldout, "heldout_collections": [], "heldout": {}, "missing": {}, "errors": {},
           "note": None}
    if heldout is None:
        out["note"] = "Held-out evaluation was skipped (--no-transfer)."
        return out
    try:
        addresses = heldout_addresses(heldout)
        out["heldout_flag"] = (f"--suite {heldout}" if heldout in _suite_names() else f"--datasets {heldout}")
    except EvorankError as e:
        out["note"] = f"Held-out data was not available: {e}"
        return out
    ok, missing = split_available(addresses)
    out["missing"] = missing
    if not ok:
        out["note"] = (f"Held-out data was not available on this machine ({heldout}: "
                       + ", ".join(addresses) + "), so no transfer numbers are shown.")
        return out
    t0 = time.monotonic()
    trusted = {label for label, rec in programs.items() if rec.operator == "seed"}
    # evolved code goes through the static checks and the sandbox there, as in the run
    results = evaluate_sources({label: rec.code for label, rec in programs.items()}, ok, log=log, trusted=trusted)
    out["heldout_collections"] = ok
    for label, res in results.items():
        out["heldout"][label] = res["collections"]
        if res["errors"]:
            out["errors"][label] = "; ".join(f"{k}: {v}" for k, v in res["errors"].items())
    out["elapsed_s"] = round(time.monotonic() - t0, 1)
    return out
