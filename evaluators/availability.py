"""Is a collection on this machine? Decided from what is on disk, never by downloading anything.

One answer serves ``evorank datasets`` (status and counts per collection), the default suite of a
bare ``evorank run`` (dev when all of it is here, else the demo) and the held-out table of
``evorank report`` (which collections can be evaluated now).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import EvorankError

OFFLINE = ("indexed", "available")


@dataclass(frozen=True)
class CollectionAvailability:
    """Where one collection stands here.

    status: ``indexed`` (loadable, index cached), ``available`` (loadable, index still to build),
    ``needs download`` (a known ir_datasets id whose files are not in IR_DATASETS_HOME), ``missing``
    (a local folder without corpus.jsonl), ``unknown id`` or ``error`` (it does not load: see reason).
    """

    address: str
    status: str
    reason: str | None = None  # why it is not usable offline; None when it is
    docs: int | None = None
    judged_queries: int | None = None
    index_bytes: int | None = None  # size of the cached index on disk (indexed collections)
    eval_seconds: float | None = None  # estimated full evaluation of the BM25 seed (evaluators.cost)
    query_ms: float | None = None  # of which, per query (estimated)

    @property
    def offline(self) -> bool:
        """Whether it can be evaluated now, without a download."""
        return self.status in OFFLINE

    @property
    def label(self) -> str:
        """The status as one short cell of a table."""
        return f"error: {self.reason[:60]}" if self.status == "error" and self.reason else self.status


def _irds_home() -> Path:
    return Path(os.environ.get("IR_DATASETS_HOME", Path.home() / ".ir_datasets"))


def collection_availability(address: str, *, counts: bool = True) -> CollectionAvailability:
    """Whether ``address`` loads here without a download, and (with ``counts``) its number of documents
    and judged queries. Never raises for an unusable collection: the status and reason say what is wrong."""
    from evorank.evaluators.data.collections import import_ir_datasets, load_collection, resolve
    from evorank.evaluators.index.index import index_folder

    kind, where = resolve(address)
    if kind == "ir_datasets":
        try:
            ds = import_ir_datasets().load(address)
        except KeyError:
            return CollectionAvailability(address, "unknown id", f"{address!r} is not an ir_datasets id, a folder "
                                          "or local:<name>")
        parts = address.split("/")
        local_dir = _irds_home().joinpath(*parts[:2]) if len(parts) > 1 else _irds_home() / parts[0]
        if not (local_dir.is_dir() and any(p.is_file() and p.stat().st_size > 0 for p in local_dir.rglob("*"))):
            n_docs = None
            if counts:
                try:  # counts from ir_datasets' bundled metadata: no download
                    n_docs = ds.docs_metadata().get("count")
                except Exception:
                    n_docs = None
            return CollectionAvailability(address, "needs download", f"its files are not in IR_DATASETS_HOME "
                                          f"({_irds_home()}); run once with internet access or copy a ready cache "
                                          "there", docs=n_docs)
    elif kind == "local" and not (Path(where) / "corpus.jsonl").is_file():
        return CollectionAvailability(address, "missing", f"no corpus.jsonl in {where}")
    try:
        coll = load_collection(address)
    except EvorankError as e:
        return CollectionAvailability(address, "error", str(e))
    manifest = index_folder(coll) / "manifest.json"
    status = "indexed" if manifest.exists() else "available"
    if not counts:
        return CollectionAvailability(address, status)
    n_docs = coll.n_docs_hint
    index_bytes = eval_s = query_ms = None
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        n_docs = meta["n_docs"]
        index_bytes = sum(int(f["size"]) for f in meta.get("files", {}).values())
        eval_s, query_ms = _estimated_cost(manifest.parent, coll)
    if n_docs is None and kind == "local":
        with open(Path(where) / "corpus.jsonl", "rb") as f:
            n_docs = sum(1 for line in f if line.strip()) or None
    return CollectionAvailability(address, status, docs=n_docs, judged_queries=len(coll.queries),
                                  index_bytes=index_bytes, eval_seconds=eval_s, query_ms=query_ms)


def _estimated_cost(folder: Path, coll) -> tuple[float | None, float | None]:
    """(seconds of one full BM25 evaluation, ms per query), estimated from the index and the judged queries."""
    from .cost import estimate_cost
    from evorank.evaluators.index.index import CorruptIndex, load_index
    from evorank.evaluators.program.ranking import make_queries

    try:
        index = load_index(folder, verify=False)
        cost = estimate_cost(index, make_queries(coll.queries, index))
    except (CorruptIndex, OSError, ValueError):
        return None, None
    return cost.total_s, cost.mean_query_ms


def split_available(addresses) -> tuple[list[str], dict[str, str]]:
    """(addresses usable offline, {address not usable: why}), in the given order, without downloading."""
    ok, missing = [], {}
    for a in addresses:
        found = collection_availability(a, counts=False)
        if found.offline:
            ok.append(a)
        else:
            missing[a] = (found.reason or found.status)[:200]
    return ok, missing
