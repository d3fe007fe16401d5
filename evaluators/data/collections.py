"""Test collections: documents, judged queries and relevance judgements, from any of three sources.

Addresses
- an ir_datasets id: ``beir/scifact/test``, ``bright/biology``, ``cranfield``, ``vaswani``, ...; ``ID@FIELD``
  takes each query's text from another field of the id's queries (``bright/biology@gpt4_reason``: GPT-4's
  reasoning about the question instead of the question), over the same documents and index as ``ID``
- a local BEIR-layout folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``), given as a
  path (``./my-data``, ``/data/lisa``) or as ``local:<name>`` under the data root ``$EVORANK_DATA``
- ``builtin:demo``, the small collection shipped inside the package.

Only queries with at least one judgement at or above the collection's relevance threshold are
evaluated. A judgement of ``EXCLUDED_GRADE`` (-100, ir_datasets' encoding of BRIGHT's per-query
``excluded_ids``) is no judgement: the document is removed from that query's ranking before the
metrics (``evaluators.metrics``), as BRIGHT's official evaluation does. Per-collection settings (threshold, grade remapping, query cap) come from the
``[collections]`` table of ``suites.toml`` and can be overridden by the caller.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Iterator
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evorank.evaluators.errors import CollectionError
from .suites import CollectionSettings, collection_settings

#: The grade ir_datasets gives BRIGHT's excluded documents (``bright.py``: ``QRELS_DEFS``, "Excluded from evaluation").
EXCLUDED_GRADE = -100

@dataclass
class Collection:
    """A loaded collection. Documents are streamed (``iter_docs``) because only the index keeps them."""

    name: str
    source: str  # "ir_datasets" | "local" | "builtin"
    fingerprint: str  # changes whenever the documents can have changed; part of the index cache key
    queries: list[tuple[str, str]]  # (query id, text) of judged queries, in file order
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> grade (> 0 only, after remapping)
    settings: CollectionSettings
    warnings: list[str] = field(default_factory=list)
    _docs: object = None  # zero-arg callable returning an iterator of (doc id, title, body)
    n_docs_hint: int | None = None

    docs_name: str = ""  # the name its index is cached under when it is not ``name`` (``ID@FIELD``: ``ID``)
    _blocks: object = None  # optional: callable(block_bytes) -> iterator of DocBlock (raw file blocks)
    size_hint: int | None = None  # bytes of the documents' file, when known (progress by bytes)
    #: query id -> documents excluded from its ranking (judgements of ``EXCLUDED_GRADE``), judged queries only
    excluded: dict[str, list[str]] = field(default_factory=dict)

    def iter_docs(self) -> Iterator[tuple[str, str, str]]:
        """(doc id, title, body) of every document, in file order; the title is "" where there is none."""
        return self._docs()

    def iter_doc_blocks(self, block_bytes: int = 1 << 22) -> Iterator["DocBlock"]:
        """The documents in order, as blocks of about ``block_bytes`` of text that another process can parse and
        analyse (``DocBlock.docs()``): raw lines of a local corpus.jsonl (parsing moves to the workers too), or
        parsed documents otherwise."""
        if self._blocks is not None:
            return self._blocks(block_bytes)
        return _batched_docs(self.iter_docs(), block_bytes)


@dataclass(frozen=True)
class DocBlock:
    """Consecutive documents of a collection, small enough to send to a worker process: either ``parsed``
    (doc id, title, body) triples, or ``raw`` corpus.jsonl bytes (whole lines; ``first_line`` is the line number of
    the first, ``path`` names the file in error messages). ``n_bytes``: the input size, for progress."""

    parsed: tuple = ()
    raw: bytes = b""
    path: str = ""
    first_line: int = 1
    n_bytes: int = 0

    def docs(self) -> list[tuple[str, str, str]]:
        """The block's documents as (doc id, title, body); a malformed line raises the same CollectionError as
        ``Collection.iter_docs``."""
        if not self.raw:
            return list(self.parsed)
        path = Path(self.path)
        lines = _split_lines(self.raw.decode("utf-8"))
        return [_beir_doc(obj) for _, obj in _parse_jsonl_lines(lines, path, "corpus.jsonl", self.first_line)]


def _batched_docs(docs, block_bytes: int) -> Iterator[DocBlock]:
    batch, size = [], 0
    for item in docs:
        doc_id, title, body = item if len(item) == 3 else (item[0], "", item[1])
        batch.append((doc_id, title, body))
        size += len(title) + len(body) + 16
        if size >= block_bytes:
            yield DocBlock(parsed=tuple(batch), n_bytes=size)
            batch, size = [], 0
    if batch:
        yield DocBlock(parsed=tuple(batch), n_bytes=size)


def data_root() -> Path:
    """Where ``local:<name>`` collections live: ``$EVORANK_DATA``, else a per-user data folder."""
    env = os.environ.get("EVORANK_DATA")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("evorank")) / "datasets"


def resolve(address: str) -> tuple[str, str]:
    """Classify an address as ("local", folder path), ("builtin", name) or ("ir_datasets", id)."""
    if address.startswith("builtin:"):
        return "builtin", address.split(":", 1)[1]
    if address.startswith("local:"):
        name = address.split(":", 1)[1]
        return "local", str(data_root() / name)
    p = Path(address).expanduser()
    if address.startswith((".", "/", "~")) or (p.is_dir() and (p / "corpus.jsonl").exists()):
        return "local", str(p)
    return "ir_datasets", address


def load_collection(address: str, settings: CollectionSettings | None = None) -> Collection:
    """Load a collection by address (see module docstring). Raises CollectionError with a fix."""
    if settings is None:
        settings = collection_settings(address)
    kind, where = resolve(address)
    if kind == "builtin":
        folder = Path(str(resources.files("evorank.evaluators.data") / where))
        if not (folder / "corpus.jsonl").exists():
            raise CollectionError(f"unknown built-in collection {where!r}; the only one shipped is 'builtin:demo'")
        coll = _load_beir_folder(address, folder, settings, source="builtin")
    elif kind == "local":
        coll = _load_beir_folder(address, Path(where), settings, source="local")
    else:
        coll = _load_ir_datasets(address, settings)
    _finish(coll)
    return coll


# -- local BEIR folders ------------------------------------------------------------------------

def _read_jsonl(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        yield from _parse_jsonl_lines(f, path, what)


def _parse_jsonl_lines(lines, path: Path, what: str, first_line: int = 1) -> Iterator[tuple[int, dict]]:
    for lineno, line in enumerate(lines, first_line):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CollectionError(
                f"{path}, line {lineno}: not valid JSON at column {e.colno} ({e.msg.removesuffix(' at').lower()}). "
                f"Each line of {what} must be one JSON object; fix or delete that line."
            ) from None
        if not isinstance(obj, dict) or "_id" not in obj:
            raise CollectionError(
                f"{path}, line {lineno}: expected a JSON object with an \"_id\" field, got {line.strip()[:80]!r}."
            )
        yield lineno, obj


def _beir_doc(obj: dict) -> tuple[str, str, str]:
    return str(obj["_id"]), obj.get("title") or "", obj.get("text") or ""


def _beir_doc_iter(path: Path) -> Iterator[tuple[str, str, str]]:
    for _, obj in _read_jsonl(path, "corpus.jsonl"):
        yield _beir_doc(obj)


def _beir_blocks(path: Path, block_bytes: int) -> Iterator[DocBlock]:
    """corpus.jsonl cut into blocks of whole lines (a partial line is carried over to the next read)."""
    line = 1
    rest = b""
    with open(path, "rb") as f:
        while True:
            data = f.read(block_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: keep reading
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            yield DocBlock(raw=block[:-1], path=str(path), first_line=line, n_bytes=len(block))
            line += _line_count(block)
    if rest:
        yield DocBlock(raw=rest, path=str(path), first_line=line, n_bytes=len(rest))


def _split_lines(text: str) -> list[str]:
    """Lines as a text-mode file reads them (universal newlines: "\\r\\n", "\\r" and "\\n" end a line)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _line_count(block: bytes) -> int:
    """Line ends in ``block``, counted as ``_split_lines`` counts them."""
    n = block.count(b"\n")
    if b"\r" in block:
        n += block.count(b"\r") - block.count(b"\r\n")
    return n


def _load_beir_folder(address: str, folder: Path, settings: CollectionSettings, source: str) -> Collection:
    if not folder.is_dir():
        hint = ""
        if address.startswith("local:"):
            hint = (
                f" 'local:' names are looked up under the data root {data_root()} "
                "(set EVORANK_DATA to the folder that holds your collections)."
            )
        raise CollectionError(f"collection folder {folder} does not exist.{hint}")
    corpus, queries_file, qrels_file = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / "test.tsv"
    for p in (corpus, queries_file, qrels_file):
        if not p.is_file():
            raise CollectionError(
                f"{p} is missing. A BEIR-layout folder needs corpus.jsonl, queries.jsonl and qrels/test.tsv "
                "(tab-separated: query-id, corpus-id, score)."
            )
    queries = []
    for lineno, obj in _read_jsonl(queries_file, "queries.jsonl"):
        if not isinstance(obj.get("text"), str):
            raise CollectionError(f"{queries_file}, line {lineno}: query {obj['_id']!r} has no \"text\" string.")
        queries.append((str(obj["_id"]), obj["text"]))
    qrels = _read_qrels_tsv(qrels_file)
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in (corpus,)]
    fingerprint = hashlib.sha256(json.dumps([str(folder.resolve()), stats]).encode()).hexdigest()[:16]
    return Collection(
        name=address,
        source=source,
        fingerprint=fingerprint,
        queries=queries,
        qrels=qrels,
        settings=settings,
        _docs=lambda: _beir_doc_iter(corpus),
        _blocks=lambda block_bytes: _beir_blocks(corpus, block_bytes),
        size_hint=corpus.stat().st_size,
    )


def _read_qrels_tsv(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if lineno == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(parts) == 4:  # TREC qrels format: qid iter docid grade
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise CollectionError(
                    f"{path}, line {lineno}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                    f"found {len(parts)}: {line.strip()[:80]!r}."
                )
            try:
                grade = int(float(parts[2]))
            except ValueError:
                raise CollectionError(
                    f"{path}, line {lineno}: relevance score {parts[2]!r} is not a number."
                ) from None
            qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = grade
    return qrels


# -- ir_datasets -----------------------------------------------------------------------------
#
# Importing ir_datasets costs most of a second, and reading a collection's queries and qrels through it
# more; a warm `evorank eval` should pay neither. So the first load of an ir_datasets collection saves
# its queries, raw judgements and document count in the cache (``collections/<name>-<key>.json``, key:
# the address and ir_datasets' version, the same for every user of a cache), and later loads read that
# file. ir_datasets is imported again only to iterate the documents, i.e. to build the index.

TOPICS_FORMAT = 2


def import_ir_datasets():
    """ir_datasets, made quiet: evorank shows its own progress, so ir_datasets' [INFO] lines and tqdm bars
    are switched off (its warnings still show)."""
    import logging

    os.environ.setdefault("TQDM_DISABLE", "1")  # read by tqdm when it is first imported
    import ir_datasets

    logging.getLogger("ir_datasets").setLevel(logging.WARNING)
    ir_datasets.log.easy().logger().setLevel(logging.WARNING)  # created on first use with level INFO
    return ir_datasets


def _ir_datasets_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ir_datasets")
    except PackageNotFoundError:  # pragma: no cover - a core dependency
        return "?"


def _topics_file(address: str, irds_version: str) -> Path:
    from evorank.evaluators.index.index import cache_root, safe_name

    key = hashlib.sha256(f"{address}|{irds_version}|{TOPICS_FORMAT}".encode()).hexdigest()[:16]
    return cache_root() / "collections" / f"{safe_name(address)}-{key}.json"


def _read_topics(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if data.get("format") == TOPICS_FORMAT else None
    except (OSError, ValueError):
        return None


def cached_topics(address: str) -> bool:
    """Whether an ir_datasets collection's queries and judgements are in the cache (a load reads nothing else)."""
    return _read_topics(_topics_file(address, _ir_datasets_version())) is not None


def _write_topics(path: Path, data: dict) -> None:
    """Atomically (temp file + rename); a cache that cannot be written is skipped, not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def query_field(address: str) -> tuple[str, str | None]:
    """(ir_datasets id, query field) of an ``ID@FIELD`` address; (address, None) without ``@``."""
    base, at, name = address.partition("@")
    return (base, name) if at else (address, None)


def _load_ir_datasets(address: str, settings: CollectionSettings) -> Collection:
    version = _ir_datasets_version()
    cache = _topics_file(address, version)
    data = _read_topics(cache)
    if data is None:
        data = _read_ir_datasets_topics(address)
        data.update(format=TOPICS_FORMAT, address=address, ir_datasets=version)
        _write_topics(cache, data)
    base, field_name = query_field(address)

    def docs() -> Iterator[tuple[str, str, str]]:
        ds = import_ir_datasets().load(base)
        try:
            for d in ds.docs_iter():
                yield (d.doc_id, *_doc_fields(d))
        except Exception as e:
            raise _offline_error(address, e) from None

    n_docs = data["n_docs"]
    fingerprint = hashlib.sha256(f"irds:{base}:{version}:{n_docs}".encode()).hexdigest()[:16]
    coll = Collection(
        name=address,
        source="ir_datasets",
        fingerprint=fingerprint,
        queries=[(q, text) for q, text in data["queries"]],
        qrels=data["qrels"],
        settings=settings,
        _docs=docs,
        n_docs_hint=n_docs,
        docs_name=base,
    )
    empty = sum(1 for _, text in coll.queries if not text.strip())
    if field_name and empty:
        coll.warnings.append(f"{empty} quer{'y has' if empty == 1 else 'ies have'} an empty {field_name!r} "
                             "and retrieve nothing")
    return coll


def _read_ir_datasets_topics(address: str) -> dict:
    """Queries, raw judgements and document count of an ir_datasets id (``ID@FIELD``: the queries' text from
    FIELD), read through ir_datasets."""
    ir_datasets = import_ir_datasets()
    base, field_name = query_field(address)
    try:
        ds = ir_datasets.load(base)
    except KeyError:
        known = list(ir_datasets.registry._registered.keys())
        close = difflib.get_close_matches(base, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise CollectionError(
            f"unknown collection {address!r}: not an ir_datasets id, not a folder, not 'local:<name>'.{hint} "
            "See `evorank datasets` for the known suites."
        ) from None
    for has, what in ((ds.has_docs, "documents"), (ds.has_queries, "queries"), (ds.has_qrels, "relevance judgements")):
        if not has():
            raise CollectionError(
                f"ir_datasets id {address!r} has no {what}; use an id with docs, queries and qrels, e.g. 'beir/scifact/test'."
            )
    fields = [f for f in ds.queries_cls()._fields if f != "query_id"]
    if field_name is not None and field_name not in fields:
        raise CollectionError(f"{base!r} has no query field {field_name!r} (in {address!r}); its queries' fields: "
                              f"{', '.join(fields)}. Write ID@FIELD with one of them, or the plain id for its text.")
    try:
        queries = [(q.query_id, _query_text(q, field_name)) for q in ds.queries_iter()]
        qrels: dict[str, dict[str, int]] = {}
        # From the judgements' own handler: ``ds.qrels_iter()`` takes the first part of the dataset that has such a
        # method, and for ``bright/<set>-long`` (ir_datasets 0.6) that is its queries, which judge by the short
        # documents' ``gold_ids``, none of which is a long document.
        for r in ds.qrels_handler().qrels_iter():
            qrels.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)
    except Exception as e:  # download or parse failure inside ir_datasets
        raise _offline_error(address, e) from None
    try:
        n_docs = ds.docs_count()
    except Exception:
        n_docs = None
    return {"queries": queries, "qrels": qrels, "n_docs": n_docs}


def _offline_error(address: str, e: Exception) -> CollectionError:
    home = os.environ.get("IR_DATASETS_HOME", "~/.ir_datasets")
    return CollectionError(
        f"could not read ir_datasets collection {address!r} ({type(e).__name__}: {str(e)[:200]}). "
        f"If this machine is offline, the files must already be in IR_DATASETS_HOME ({home}); "
        "copy a ready cache there or run once with internet access."
    )


def _doc_fields(d) -> tuple[str, str]:
    """(title, body) of an ir_datasets document."""
    fields = d._fields
    title = (getattr(d, "title", "") or "") if "title" in fields else ""
    if "text" in fields:
        text = d.text
    elif "body" in fields:
        text = d.body
    else:
        text = d.default_text()
    return title, text or ""


def _query_text(q, field_name: str | None = None) -> str:
    if field_name is not None:
        return str(getattr(q, field_name) or "")
    return q.text if "text" in q._fields else q.default_text()


# -- shared post-processing ------------------------------------------------------------------

def _finish(coll: Collection) -> None:
    """Remap grades, keep judged queries, apply the query cap; record what was dropped."""
    s = coll.settings
    qrels: dict[str, dict[str, int]] = {}
    excluded: dict[str, list[str]] = {}
    for qid, docs in coll.qrels.items():
        kept = {}
        for doc, grade in docs.items():
            if grade == EXCLUDED_GRADE:
                excluded.setdefault(qid, []).append(doc)
                continue
            if s.relevance_map is not None:
                grade = s.relevance_map.get(grade, grade)
            if grade > 0:
                kept[doc] = grade
        if kept:
            qrels[qid] = kept
    query_ids = {qid for qid, _ in coll.queries}
    orphan = [qid for qid in qrels if qid not in query_ids]
    if orphan:
        coll.warnings.append(
            f"{len(orphan)} judged query id(s) have no query text and are ignored (e.g. {orphan[0]!r})"
        )
    judged = [(qid, text) for qid, text in coll.queries if any(g >= s.min_relevance for g in qrels.get(qid, {}).values())]
    if not judged:
        raise CollectionError(
            f"collection {coll.name!r} has no query with a judgement >= {s.min_relevance} "
            f"({len(coll.queries)} queries, {sum(len(v) for v in coll.qrels.values())} qrels rows). "
            "Check that qrels query ids match queries.jsonl ids and that relevant documents have score >= 1."
        )
    if s.query_cap is not None and len(judged) > s.query_cap:
        rng = np.random.default_rng(s.query_cap_seed)
        keep = np.sort(rng.choice(len(judged), size=s.query_cap, replace=False))
        judged = [judged[i] for i in keep]
    coll.queries = judged
    coll.qrels = {qid: qrels[qid] for qid, _ in judged}
    coll.excluded = {qid: excluded[qid] for qid, _ in judged if qid in excluded}
