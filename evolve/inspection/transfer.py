"""Transfer: how programs of a run do on collections never used for selection (held-out).

``evaluate_sources`` scores program sources the way ``evorank eval`` does; ``transfer_data`` puts the
run's own (seen) measurements of its best program and seeds next to held-out ones computed now, for
the transfer table of ``evorank report``, with every program's per-query values on the held-out and the seen
collections, from which the report tests the best program against BM25.
"""
from __future__ import annotations

import time

from evorank.archive import ProgramRecord
from evorank.evaluators.errors import EvorankError
from evorank.evaluators.availability import split_available


def evaluate_sources(sources: dict[str, str], addresses, k: int = 1000, log=None,
                     trusted: frozenset[str] | set[str] = frozenset()) -> dict[str, dict]:
    """Evaluate programs (label -> source) on collections as ``evorank eval`` does: ``load_topics`` once per
    collection, then every program in the sandbox on one pool of workers; programs whose label is in ``trusted``
    (the seeds) skip the static checks, the others (a run's code) go through them, as in ``evorank run``.

    Returns {label: {"collections": {address: metrics | None}, "errors": {address: reason},
    "per_query": {address: {metric: per-query values}}}}."""
    from evorank.evaluators.evaluate import load_topics
    from evorank.evaluators.parallel import evaluate_programs_sandboxed

    addresses = list(addresses)
    topics = [load_topics(a, log=log) for a in addresses]
    out = {label: {"collections": {}, "errors": {}, "per_query": {}} for label in sources}
    suites = evaluate_programs_sandboxed([(label, src, label not in trusted) for label, src in sources.items()],
                                         addresses, k=k, topics=topics)
    for label, suite in zip(sources, suites):
        for address, res in zip(addresses, suite.collections):
            out[label]["collections"][address] = dict(res.metrics) if res.ok else None
            if res.ok:
                out[label]["per_query"][address] = dict(res.per_query)
            else:
                out[label]["errors"][address] = f"{res.error_reason}: {res.error}"
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
    """Seen metrics (from the archive) and held-out metrics (evaluated now) of best + seeds, and the per-query values
    of every program on the held-out collections and on the run's own (seen) collections that are on this machine
    (``per_query``: label -> address -> metric -> values), for the significance of the best against BM25."""
    programs = {f"best #{best.id}": best}
    for name, s in seeds.items():
        if s.code_hash != best.code_hash:
            programs[f"seed {name}"] = s
    seen = {label: rec.metrics for label, rec in programs.items()}
    out = {"programs": list(programs), "seen_collections": list(best.metrics), "seen": seen,
           "heldout_spec": heldout, "heldout_collections": [], "heldout": {}, "missing": {}, "errors": {},
           "note": None, "per_query": {}, "measured_seen": []}
    if heldout is None:
        out["note"] = "Held-out evaluation was skipped (--no-transfer)."
        return out
    try:
        addresses = heldout_addresses(heldout)
        out["heldout_flag"] = (f"--suite {heldout}" if heldout in _suite_names() else f"--datasets {heldout}")
    except EvorankError as e:
        out["note"] = f"Held-out data was not available: {e}"
        addresses = []
    ok, missing = split_available(addresses)
    out["missing"] = missing
    if addresses and not ok:
        out["note"] = (f"Held-out data was not available on this machine ({heldout}: "
                       + ", ".join(addresses) + "), so no transfer numbers are shown.")
    seen_ok = split_available(list(best.metrics))[0] if "seed bm25" in programs else []
    measured = list(dict.fromkeys([*ok, *seen_ok]))
    if not measured:
        return out
    t0 = time.monotonic()
    trusted = {label for label, rec in programs.items() if rec.operator == "seed"}
    # every program in the sandbox (the seeds' code comes from the archive too); evolved code through the static
    # checks as well, as in the run
    results = evaluate_sources({label: rec.code for label, rec in programs.items()}, measured, log=log,
                               trusted=trusted)
    out["heldout_collections"] = ok
    out["measured_seen"] = seen_ok
    for label, res in results.items():
        out["heldout"][label] = {a: m for a, m in res["collections"].items() if a in ok}
        out["per_query"][label] = res["per_query"]
        if res["errors"]:
            out["errors"][label] = "; ".join(f"{k}: {v}" for k, v in res["errors"].items())
    out["elapsed_s"] = round(time.monotonic() - t0, 1)
    return out


def compare_with_bm25(records: list[ProgramRecord], bm25: ProgramRecord, addresses, log=None) -> tuple[dict, dict]:
    """Each record's paired significance against the run's BM25 seed on ``addresses`` (all their queries), every
    program evaluated now in the sandbox on one pool (``evaluate_sources``). Returns ({program id: Comparison},
    {address: why it is not available here}); EvorankError when none is."""
    from evorank.evaluators.significance import compare

    ok, missing = split_available(list(addresses))
    if not ok:
        raise EvorankError("none of the collections to test on is available on this machine: "
                           + "; ".join(f"{a}: {why}" for a, why in missing.items()))
    label = {r.id: "bm25" if r.code_hash == bm25.code_hash else f"#{r.id}" for r in records}
    sources = {"bm25": bm25.code, **{label[r.id]: r.code for r in records if label[r.id] != "bm25"}}
    trusted = {"bm25"} | {label[r.id] for r in records if r.operator == "seed"}
    results = evaluate_sources(sources, ok, log=log, trusted=trusted)
    base = results["bm25"]["per_query"]
    out = {}
    for r in records:
        per_query = results[label[r.id]]["per_query"]
        both = [a for a in ok if a in per_query and a in base]
        out[r.id] = compare({a: per_query[a] for a in both}, {a: base[a] for a in both}, program=f"#{r.id}",
                            baseline_name="bm25")
    return out, missing
