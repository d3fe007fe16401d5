"""Is a collection on this machine? Decided from what is on disk, never by downloading anything.

One answer serves ``evorank datasets`` (status and counts per collection), the default suite of a
bare ``evorank run`` (dev when all of it is here, else the demo) and the held-out table of
``evorank report`` (which collections can be evaluated now).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
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


class _DownloadNeeded(Exception):
    pass


@contextmanager
def _no_downloads(ir_datasets):
    """Within the block, every way ir_datasets has to fetch a file raises ``_DownloadNeeded`` (before any
    connection is made); files already in IR_DATASETS_HOME are read as usual."""
    download = ir_datasets.util.download

    def refuse(self, *args, **kwargs):
        raise _DownloadNeeded(repr(self))

    patched = [(cls, name) for cls in (download.RequestsDownload, download.GoogleDriveDownload,
                                       download.GoogleCloudBucketStream) for name in ("stream", "__iter__")
               if name in vars(cls)]
    saved = [(cls, name, vars(cls)[name]) for cls, name in patched]
    logger = download._logger.logger()

    def quiet(record) -> bool:  # its "Download failed" warnings would be about this refusal
        return not str(record.msg).startswith("Download failed")

    try:
        logger.addFilter(quiet)
        for cls, name in patched:
            setattr(cls, name, refuse)
        yield
    finally:
        logger.removeFilter(quiet)
        for cls, name, fn in saved:
            setattr(cls, name, fn)


def _docs_part(ds):
    """The part of an ir_datasets ``Dataset`` that provides its documents, found without calling it (a call
    can make ir_datasets write files, e.g. its version markers)."""
    for part in getattr(ds, "_constituents", ()):
        if type(part).__name__ == "Dataset":
            found = _docs_part(part)
            if found is not None:
                return found
        elif hasattr(part, "docs_iter"):
            return part
    return None


def _docs_need_download(ir_datasets, handler) -> bool:
    """Whether reading a dataset's documents would download a file: some file it is read from (ir_datasets'
    ``Download`` objects reachable from the documents' handler) is neither in IR_DATASETS_HOME nor extracted
    there already (a ``Cache`` whose file exists). Looks at paths only: reading the documents would build
    ir_datasets' document store, minutes on a large collection."""
    util = ir_datasets.util
    seen: set[int] = set()
    todo = [(handler, 0)]
    while todo:
        obj, depth = todo.pop()
        if id(obj) in seen or depth > 8:
            continue
        seen.add(id(obj))
        if isinstance(obj, util.Download):
            path = obj.path(force=False)
            if path is None or not os.path.exists(path):
                return True
            continue
        if isinstance(obj, util.Cache) and Path(obj._path).exists():
            continue
        values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
        for v in values:
            for item in (v if isinstance(v, (list, tuple)) else v.values() if isinstance(v, dict) else [v]):
                if type(item).__module__.startswith("ir_datasets"):
                    todo.append((item, depth + 1))
    return False


def _needs_download(ir_datasets, address: str, base: str) -> bool:
    """Whether reading ``address`` (its documents, queries and judgements) would need a download: the documents'
    files are looked for, the queries and judgements read with every download refused."""
    from evorank.evaluators.data.collections import load_collection

    if _docs_need_download(ir_datasets, _docs_part(ir_datasets.load(base))):
        return True
    with _no_downloads(ir_datasets):
        try:
            load_collection(address)  # reads (and caches) the queries and judgements
        except EvorankError as e:
            return "_DownloadNeeded" in str(e)
        except _DownloadNeeded:
            return True
        except Exception as e:  # ir_datasets wraps a failed mirror in its own errors
            if "_DownloadNeeded" in repr(e) or "_DownloadNeeded" in repr(getattr(e, "args", "")):
                return True
            raise
    return False


def collection_availability(address: str, *, counts: bool = True) -> CollectionAvailability:
    """Whether ``address`` loads here without a download, and (with ``counts``) its number of documents
    and judged queries. Never raises for an unusable collection: the status and reason say what is wrong."""
    from evorank.evaluators.data.collections import import_ir_datasets, load_collection, query_field, resolve
    from evorank.evaluators.index.index import index_folder

    kind, where = resolve(address)
    if kind == "ir_datasets":
        ir_datasets = import_ir_datasets()
        base, _ = query_field(address)
        try:
            ds = ir_datasets.load(base)
        except KeyError:
            return CollectionAvailability(address, "unknown id", f"{address!r} is not an ir_datasets id, a folder "
                                          "or local:<name>")
        try:
            missing = not _indexed(address) and _needs_download(ir_datasets, address, base)
        except Exception as e:
            return CollectionAvailability(address, "error", f"{type(e).__name__}: {e}")
        if missing:
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


def _indexed(address: str) -> bool:
    """Whether an ir_datasets collection's queries and judgements are cached and its index is built: then nothing
    of ir_datasets' files is read again."""
    from evorank.evaluators.data.collections import cached_topics, load_collection
    from evorank.evaluators.index.index import index_folder

    if not cached_topics(address):
        return False
    try:
        return (index_folder(load_collection(address)) / "manifest.json").exists()
    except EvorankError:
        return False


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
