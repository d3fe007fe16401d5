"""The byte protocol from a jailed candidate to its worker: written by the harness, read by the worker.

The jail runs the candidate's code, so everything in this stream may be forged. The worker therefore
treats it as plain bytes and validates all of it (``parse``): record order, counts, document numbers
in range, **no document twice in one query**, scores finite and non-increasing, ties in ascending
document order, at most ``k`` results, latencies finite and non-negative. A forger can at most
choose a ranking that some honest score vector would also produce.

Failures travel as a fixed-vocabulary code (``ErrorCode``), never as a reason string: the worker
turns the code into the machine reason (``describe_failure``), so the reason and the category a run
is filed under are always chosen by trusted code. What the candidate can choose (its exception
message, the name of an exception class it defined) comes back as *program text*, which callers
show only fenced and labelled (``evaluators.program.output``).

Records (little-endian)::

    L  u32 layers                                   first: isolation layers applied (bit set)
    I  f64 import_ms                                 the module ran
    P  f64 prepare_ms                                prepare() returned (and its state, if any, was sent)
    Q  u32 query  u32 count  f64 ms  i64[count] documents  f64[count] scores
    E  u8 code  u8 stage  u32 query  u32 line  i32 value  u16 name_len  u32 text_len  name  text
    D                                               end of a complete run

The ``I`` and ``P`` records are written (flushed) the moment their phase ends and ``D`` right after the last
query, so the worker, which notes when each byte arrived and how much CPU time the kernel had charged to the
jail by then, can measure every phase itself (``Stream.import_end``, ``prepare_end``, ``end``: where each phase's
record ends in the stream); the times in the records are only detail, bounded by that measurement
(``runner``).
"""
from __future__ import annotations

import builtins
import enum
import math
import re
import struct
from dataclasses import dataclass, field

import numpy as np

MAX_NAME_BYTES = 64
MAX_TEXT_BYTES = 4000
_ERROR_HEADER = struct.Struct("<BBIIiHI")
_QUERY_HEADER = struct.Struct("<IId")
_TIME = struct.Struct("<d")


class ErrorCode(enum.IntEnum):
    """What went wrong inside the jail. The worker maps each code to a reason string it owns."""

    SYNTAX = 1  # the module does not compile
    MISSING_SCORE = 2  # no score() function
    BAD_PREPARE = 3  # prepare is not a function
    INVALID_SCORES = 4  # score() returned something unusable; ``name`` is the kind (INVALID_SCORE_KINDS)
    MEMORY = 5  # MemoryError
    EXIT = 6  # SystemExit; ``value`` is the exit code
    RECURSION = 7  # RecursionError
    EXCEPTION = 8  # any other exception; ``name`` is its class name (program text)


class Stage(enum.IntEnum):
    IMPORT = 0
    PREPARE = 1
    SCORE = 2


INVALID_SCORE_KINDS = ("type", "shape", "dtype", "nan", "inf")

#: Exception class names that may appear in a reason (``exception:KeyError``). Anything else, such as a
#: class the program defined itself, is filed as ``exception:other``, with the name kept as program text.
KNOWN_EXCEPTIONS = frozenset(
    name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
) | {"AxisError", "LinAlgError", "ComplexWarning", "TooHardError", "DTypePromotionError", "SparseEfficiencyWarning",
     "ArpackError", "ArpackNoConvergence"}

_NAME_OK = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


# -- writing (the harness, inside the jail) ------------------------------------------------------------

def reported_exception_name(cls: type) -> str:
    """The class name the harness reports for an exception: its own when known, else the nearest known base class
    other than ``Exception`` and ``BaseException`` (numpy's ``UFuncTypeError``, raised for ``int_array += floats``,
    is a TypeError, not "a class the program defined"), else its own (a program's
    ``class Oops(Exception)`` stays ``other``). Untrusted like any reported name: the reader maps it onto
    :data:`KNOWN_EXCEPTIONS`."""
    for c in cls.__mro__:
        if c.__name__ in KNOWN_EXCEPTIONS and (c is cls or c.__name__ not in ("Exception", "BaseException")):
            return c.__name__
    return cls.__name__


def layers_record(bits: int) -> bytes:
    return b"L" + struct.pack("<I", bits)


def import_record(import_ms: float) -> bytes:
    return b"I" + _TIME.pack(import_ms)


def prepare_record(prepare_ms: float) -> bytes:
    return b"P" + _TIME.pack(prepare_ms)


def query_record(i: int, docs: np.ndarray, scores: np.ndarray, ms: float) -> bytes:
    docs = np.ascontiguousarray(docs, dtype="<i8")
    scores = np.ascontiguousarray(scores, dtype="<f8")
    return b"Q" + _QUERY_HEADER.pack(i, len(docs), ms) + docs.tobytes() + scores.tobytes()


def error_record(code: ErrorCode, stage: Stage, query: int = 0, line: int = 0, value: int = 0, name: str = "",
                 text: str = "") -> bytes:
    n = name.encode("utf-8", "replace")[:MAX_NAME_BYTES]
    t = text.encode("utf-8", "replace")[:MAX_TEXT_BYTES]
    return b"E" + _ERROR_HEADER.pack(int(code), int(stage), query, max(0, line), value, len(n), len(t)) + n + t


END = b"D"


def max_stream_bytes(n_queries: int, k: int) -> int:
    """An upper bound on an honest stream's size (the worker stops reading beyond it)."""
    return 64 + 2 * (1 + _TIME.size) + n_queries * (1 + _QUERY_HEADER.size + 16 * k) + 64 + MAX_NAME_BYTES + MAX_TEXT_BYTES


# -- reading (the worker, trusted) ---------------------------------------------------------------------

@dataclass
class JailError:
    """A failure the jail reported, as parsed; ``name`` and ``text`` are program text."""

    code: ErrorCode
    stage: Stage
    query: int
    line: int
    value: int
    name: str
    text: str


@dataclass
class Stream:
    """A parsed, validated result stream. ``problem`` says why it was rejected (None when valid)."""

    layers: int = 0
    import_ms: float | None = None
    prepare_ms: float | None = None
    doc_idx: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    done: bool = False
    error: JailError | None = None
    problem: str | None = None
    import_end: int = 0  # offsets just past the I, P and last (Q or D) records: where each phase ended
    prepare_end: int = 0
    end: int = 0

    @property
    def queries_done(self) -> int:
        return len(self.latency)


def parse(buf: bytes, n_q: int, n_docs: int, k: int, n_layers: int) -> Stream:
    """Parse and validate a stream. Record headers are read one by one; the documents and scores of all
    queries are then checked together with a few vectorised operations."""
    out = Stream()
    pos, n = 0, len(buf)
    spans: list[tuple[int, int]] = []  # (offset of the documents, count) per query

    def problem(text: str) -> Stream:
        out.problem = text
        return out

    first = True
    while pos < n:
        tag = buf[pos:pos + 1]
        pos += 1
        if tag == b"L":
            if not first or pos + 4 > n:
                return problem("unexpected layer record")
            out.layers = struct.unpack_from("<I", buf, pos)[0] & ((1 << n_layers) - 1)
            pos += 4
        elif tag == b"I":
            if out.import_ms is not None or pos + _TIME.size > n:
                return problem("bad import record")
            (imp,) = _TIME.unpack_from(buf, pos)
            pos += _TIME.size
            if not (math.isfinite(imp) and imp >= 0):
                return problem("invalid import time")
            out.import_ms, out.import_end = imp, pos
        elif tag == b"P":
            if out.import_ms is None or out.prepare_ms is not None or pos + _TIME.size > n:
                return problem("bad prepare record")
            (prep,) = _TIME.unpack_from(buf, pos)
            pos += _TIME.size
            if not (math.isfinite(prep) and prep >= 0):
                return problem("invalid prepare time")
            out.prepare_ms, out.prepare_end = prep, pos
        elif tag == b"Q":
            if out.prepare_ms is None or pos + _QUERY_HEADER.size > n:
                return problem("bad query record")
            qi, count, ms = _QUERY_HEADER.unpack_from(buf, pos)
            pos += _QUERY_HEADER.size
            if qi != out.queries_done or qi >= n_q:
                return problem(f"query results out of order (got {qi}, expected {out.queries_done})")
            if count > min(k, n_docs):
                return problem(f"query {qi}: {count} results, more than k={k}" if count > k else
                               f"query {qi}: {count} results, more than the {n_docs} documents")
            if pos + 16 * count > n:
                return problem(f"query {qi}: truncated results")
            if not (math.isfinite(ms) and ms >= 0):
                return problem(f"query {qi}: invalid latency")
            spans.append((pos, count))
            pos += 16 * count
            out.latency.append(ms)
        elif tag == b"E":
            if pos + _ERROR_HEADER.size > n:
                return problem("bad error record")
            code, stage, query, line, value, ln, lt = _ERROR_HEADER.unpack_from(buf, pos)
            pos += _ERROR_HEADER.size
            if ln > MAX_NAME_BYTES or lt > MAX_TEXT_BYTES or pos + ln + lt > n or code not in ErrorCode.__members__.values() \
                    or stage not in Stage.__members__.values():
                return problem("bad error record")
            name = buf[pos:pos + ln].decode("utf-8", "replace")
            text = buf[pos + ln:pos + ln + lt].decode("utf-8", "replace")
            pos += ln + lt
            out.error = JailError(ErrorCode(code), Stage(stage), query, line, value, name, text)
            if pos != n:
                return problem("data after the error record")
        elif tag == b"D":
            out.done, out.end = True, pos
            if pos != n:
                return problem("data after the end record")
        else:
            return problem("unknown record")
        first = False
    if spans:
        bad = _check_results(buf, spans, n_docs, out)
        if bad:
            return problem(bad)
    return out


def _check_results(buf: bytes, spans: list[tuple[int, int]], n_docs: int, out: Stream) -> str | None:
    counts = np.array([c for _, c in spans], dtype=np.int64)
    ends = np.cumsum(counts)
    docs = np.concatenate([np.frombuffer(buf, dtype="<i8", count=c, offset=o) for o, c in spans]).astype(np.int64)
    vals = np.concatenate([np.frombuffer(buf, dtype="<f8", count=c, offset=o + 8 * c) for o, c in spans]
                          ).astype(np.float64)

    def query_of(i: int) -> int:  # query of the element at position i
        return int(np.searchsorted(ends, i, side="right"))

    if len(docs):
        bad = np.flatnonzero((docs < 0) | (docs >= n_docs))
        if len(bad):
            return f"query {query_of(bad[0])}: document number out of range"
        bad = np.flatnonzero(~np.isfinite(vals))
        if len(bad):
            return f"query {query_of(bad[0])}: non-finite score in results"
        inner = np.ones(len(docs) - 1, dtype=bool)  # pairs (i, i+1) inside the same query
        cut = ends[:-1] - 1
        inner[cut[(cut >= 0) & (cut < len(docs) - 1)]] = False
        dv = np.diff(vals)
        bad = np.flatnonzero((dv > 0) & inner)
        if len(bad):
            return f"query {query_of(bad[0])}: scores not in descending order"
        bad = np.flatnonzero((dv == 0) & (np.diff(docs) <= 0) & inner)
        if len(bad):
            return f"query {query_of(bad[0])}: tied or repeated documents out of order"
        query = np.repeat(np.arange(len(counts)), counts)
        key = np.sort(query * np.int64(n_docs) + docs)
        bad = np.flatnonzero(np.diff(key) == 0)
        if len(bad):
            return f"query {int(key[bad[0]] // n_docs)}: the same document twice in one ranking"
    out.doc_idx = np.split(docs, ends[:-1])
    out.scores = np.split(vals, ends[:-1])
    return None


@dataclass(frozen=True)
class Failure:
    """A failure as the trusted side describes it: ``reason`` (machine), ``message`` (one trusted line),
    ``program_text`` (what the program chose to say: its exception message; show fenced)."""

    reason: str
    message: str
    program_text: str = ""


_STAGE_TEXT = {Stage.IMPORT: "importing the program", Stage.PREPARE: "prepare()", Stage.SCORE: "score()"}


def describe_failure(err: JailError, n_queries: int) -> Failure:
    """The reason and trusted message of a reported failure (fixed vocabulary and numbers only: the query is named
    by its position in the run, as the program never sees query ids)."""
    where = _STAGE_TEXT[err.stage]
    if err.stage == Stage.SCORE and 0 <= err.query < n_queries:
        where += f" on query {err.query + 1} of {n_queries}"
    at = f" at line {err.line}" if err.line else ""
    if err.code == ErrorCode.SYNTAX:
        return Failure("syntax_error", f"the program does not compile{at}", err.text)
    if err.code == ErrorCode.MISSING_SCORE:
        return Failure("missing_score", "the program defines no function score(query, index, state)")
    if err.code == ErrorCode.BAD_PREPARE:
        return Failure("bad_prepare", "prepare must be a function prepare(index) -> state")
    if err.code == ErrorCode.INVALID_SCORES:
        kind = err.name if err.name in INVALID_SCORE_KINDS else "other"
        return Failure(f"invalid_scores:{kind}", f"{where} returned unusable scores ({kind})", err.text)
    if err.code == ErrorCode.MEMORY:
        return Failure("memory", f"{where} ran out of memory")
    if err.code == ErrorCode.EXIT:
        return Failure(f"exit:{err.value}", f"{where} called exit({err.value}); return scores instead")
    name = err.name if _NAME_OK.fullmatch(err.name or "") else "?"
    if err.code == ErrorCode.RECURSION:
        return Failure("exception:RecursionError", f"{where} raised RecursionError{at}", err.text)
    known = name in KNOWN_EXCEPTIONS
    label = name if known else "other"
    shown = name if known else "an exception of a class the program defined"
    text = err.text if known else f"{name}: {err.text}"
    return Failure(f"exception:{label}", f"{where} raised {shown}{at}", text)
