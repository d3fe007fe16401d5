"""What runs inside the jail: compile the candidate, call ``prepare`` and ``score``, stream the results.

``run_candidate`` is entered after every isolation layer is in place (``evaluators.sandbox.jail``) and never
returns. It writes its results with ``evaluators.sandbox.wire``; nothing it writes is trusted by the worker.
Within that limit it still protects honest measurement:

- a returned score object counts only if its type is exactly ``numpy.ndarray`` with a numeric dtype;
  it is copied into a plain float64 array (one buffer for all queries) *inside* the timed region
  (``ranking.plain_scores``), so no code of the candidate can run after the clock stops (an ndarray
  subclass, or an object whose ``__array__`` does the real work, is rejected as ``invalid_scores:type``);
- top-k runs on that plain copy, with numpy functions captured before any candidate code ran;
- a reused ``prepare`` state has its pages mapped before the first query (``state_wire.populate_state``), and
  the C allocator keeps collection-long arrays between queries (``allocator``), so per-query latency measures
  the program, not page faults;
- the module's own execution time is measured and reported, so that the worker can compare all the
  time reported with the CPU time the kernel charged to the jail (``evaluators.sandbox.runner``);
- the ``import`` and ``prepare`` records are written as soon as their phase ends, so a time-out is attributed
  to the right stage, and the worker can time each phase from outside (``runner``);
- the program's ``query`` objects carry no query id (``ranking.ProgramQuery``): the worker sends none.

The runtime language layer (``restricted_builtins``) removes the dangerous builtins and limits
imports to the allowed modules; like the static checks, it is a filter, not the boundary.
"""
from __future__ import annotations

import builtins
import os
import re
import sys
import time
import types

import numpy as np

from . import wire
from evorank.evaluators.errors import ProgramError
from evorank.evaluators.program.source import compile_source, entry_points
from evorank.evaluators.program.ranking import plain_scores, score_buffer, top_k
from .state_wire import JailReuse, array_fingerprints, populate_state, write_state
from evorank.evaluators.program.checks import ALLOWED_IMPORTS, FORBIDDEN_ATTRIBUTES, FORBIDDEN_NAMES

_SAFE_IMPORTS = frozenset(ALLOWED_IMPORTS)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Attribute names ``getattr`` refuses at run time besides private ones: the static list, plus the string
#: formatting methods (a computed template such as ``"{0.x}"`` reads attributes of its arguments).
_GETATTR_REFUSED = FORBIDDEN_ATTRIBUTES | {"format", "format_map"}


def restricted_builtins() -> dict:
    """Builtins without the forbidden ones; ``__import__`` limited to the allowed modules (runtime layer)."""
    real_import = builtins.__import__
    real_getattr = builtins.getattr

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        # numpy's C code imports its own internals on first use (``ndarray.sum`` -> numpy._core._methods,
        # array printing, error classes) through whatever ``__import__`` the calling frame's builtins hold,
        # which is this one when the candidate made the call. Those modules are already loaded, so handing
        # them back adds no code and no reach the candidate lacks at runtime anyway; anything not yet
        # loaded, or outside numpy/scipy, stays forbidden.
        top = name.partition(".")[0]
        if not level and name not in _SAFE_IMPORTS and top in ("numpy", "scipy") and name in sys.modules:
            return sys.modules[name] if fromlist else sys.modules[top]  # no import machinery, so nothing new
        if level or name not in _SAFE_IMPORTS:
            raise ImportError(f"import of {name!r} is not allowed")
        for item in fromlist or ():
            if item.startswith("_") or item in FORBIDDEN_ATTRIBUTES:
                raise ImportError(f"importing {item!r} from {name!r} is not allowed")
        return real_import(name, globals, locals, fromlist, level)

    def guarded_getattr(obj, name, *default):
        if not isinstance(name, str) or name.startswith("_") or name in _GETATTR_REFUSED:
            raise AttributeError(f"getattr of {name!r} is not allowed")
        return real_getattr(obj, name, *default)

    safe = {k: v for k, v in vars(builtins).items() if k not in FORBIDDEN_NAMES}
    safe["__import__"] = guarded_import
    safe["getattr"] = guarded_getattr
    return safe


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _program_traceback(exc: BaseException | None, name: str):
    """The innermost entry of an exception's traceback that is in the candidate's own code, or None."""
    found = None
    tb = exc.__traceback__ if exc is not None else None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            found = tb
        tb = tb.tb_next
    return found


def _program_line(exc: BaseException | None, name: str) -> int:
    """Innermost line of the candidate's own code in an exception's traceback (0 if none)."""
    tb = _program_traceback(exc, name)
    return tb.tb_lineno if tb is not None else 0


#: At most this many arrays are described after an exception, in at most this many characters.
MAX_ARRAYS_SHOWN, MAX_ARRAYS_TEXT = 8, 300


def arrays_at_failure(exc: BaseException, name: str, source: str) -> str:
    """``"arrays in that line: w float64[511050], idf float64[28932]"``: the numpy arrays (exact type) and scipy
    sparse matrices that the failing line of the candidate's innermost frame names, with their shapes; "" when
    there are none. Shape errors are the commonest failure of model-written programs and their messages say
    which lengths clashed but not which variables had them. Runs in the jail, after the failure: what it writes
    is part of the program's (untrusted, fenced) error text."""
    try:
        tb = _program_traceback(exc, name)
        lines = source.splitlines()
        if tb is None or not 0 < tb.tb_lineno <= len(lines):
            return ""
        local, shown = tb.tb_frame.f_locals, []
        for ident in dict.fromkeys(_IDENTIFIER.findall(lines[tb.tb_lineno - 1])):
            value = local.get(ident)
            if type(value) is np.ndarray:
                shown.append(f"{ident} {value.dtype}[{', '.join(map(str, value.shape))}]")
            elif type(value).__module__.startswith("scipy.sparse"):
                shown.append(f"{ident} sparse {type(value).__name__}[{', '.join(map(str, value.shape))}]")
            if len(shown) == MAX_ARRAYS_SHOWN:
                break
        return ("arrays in that line: " + ", ".join(shown))[:MAX_ARRAYS_TEXT] if shown else ""
    except BaseException:  # noqa: BLE001 - a description, never a second failure
        return ""


def run_candidate(res_w: int, source: str, index, queries, k: int, name: str, restrict_builtins: bool,
                  reuse: JailReuse | None = None) -> None:
    """Compile and run the candidate over ``queries``, streaming records to ``res_w``. Never returns.

    ``reuse``: a ``prepare()`` state to use instead of calling ``prepare`` (built by the worker), or a pipe to
    write the state ``prepare`` returns into (``state_wire``), before any query is scored."""
    perf = time.perf_counter  # captured before any candidate code runs
    capture_fd = reuse.capture_fd if reuse is not None and not reuse.reused else -1
    # Which arrays are the index's own, noted before the program can touch the index (``state_wire``).
    fingerprints = array_fingerprints(index) if capture_fd >= 0 else {}
    exit_, getpid = os._exit, os.getpid
    me = getpid()

    def write(data: bytes) -> None:
        if getpid() != me:  # a process the candidate managed to fork: it may not speak for the jail
            exit_(0)
        write_all(res_w, data)

    # Query records are batched (flushed every 256 kB or 50 ms) to spare the worker a wake-up per query.
    pending: list[bytes] = []
    pending_size = 0
    last_flush = perf()

    def emit(record: bytes, flush: bool = False) -> None:
        nonlocal pending_size, last_flush
        pending.append(record)
        pending_size += len(record)
        now = perf()
        if flush or pending_size >= (1 << 18) or now - last_flush >= 0.05:
            write(b"".join(pending))
            pending.clear()
            pending_size = 0
            last_flush = now

    stdout, stderr = sys.stdout, sys.stderr
    n_docs = int(index.n_docs)
    try:
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
        stdout, stderr = sys.stdout, sys.stderr
    except Exception:  # pragma: no cover
        pass

    def finish(record: bytes, code: int = 0) -> None:
        if getpid() != me:
            exit_(0)
        for stream in (stdout, stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            write(b"".join(pending) + record)
        except Exception:
            pass
        exit_(code)

    stage, query = wire.Stage.IMPORT, 0
    try:
        code = compile_source(source, name)
        mod = types.ModuleType("ranking_program")
        mod.__file__ = name
        sys.modules["ranking_program"] = mod  # (this process only) dataclasses look classes' modules up here
        module = mod.__dict__
        if restrict_builtins:
            module["__builtins__"] = restricted_builtins()
        t0 = perf()
        exec(code, module)
        prepare, score = entry_points(module)
        emit(wire.import_record((perf() - t0) * 1e3), flush=True)  # the worker notes when each phase ends
        stage = wire.Stage.PREPARE
        if reuse is not None and reuse.reused:  # the same prepare() ran for an earlier candidate
            state = reuse.state
            t0 = perf()
            populate_state(state)  # its pages, before the timed queries (counted as this run's prepare time)
            prepare_ms = (perf() - t0) * 1e3
        else:
            t0 = perf()
            state = prepare(index) if prepare is not None else None
            prepare_ms = (perf() - t0) * 1e3
        if capture_fd >= 0:  # part of the prepare phase, untimed here (the worker allows for it)
            _send_state(capture_fd, state, fingerprints, reuse.max_bytes)
        emit(wire.prepare_record(prepare_ms), flush=True)
        stage = wire.Stage.SCORE
        buffer = score_buffer(n_docs)  # plain_scores' copy for every query; per-query arrays kept in the heap
        for i, q in enumerate(queries):
            query = i
            t0 = perf()
            s = plain_scores(score(q, index, state), n_docs, buffer)
            idx, vals = top_k(s, k)
            ms = (perf() - t0) * 1e3
            emit(wire.query_record(i, idx, vals, ms))
        finish(wire.END)
    except ProgramError as e:
        finish(_program_error_record(e, stage, query))
    except MemoryError:
        finish(wire.error_record(wire.ErrorCode.MEMORY, stage, query))
    except SystemExit as e:
        c = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finish(wire.error_record(wire.ErrorCode.EXIT, stage, query, value=max(-2**31, min(2**31 - 1, c))))
    except RecursionError as e:
        finish(wire.error_record(wire.ErrorCode.RECURSION, stage, query, _program_line(e, name), text=_text(e)))
    except BaseException as e:  # noqa: BLE001 - every outcome is a result
        arrays = arrays_at_failure(e, name, source)
        reported = wire.reported_exception_name(type(e))  # numpy's private classes as the builtin they extend
        own = "" if reported == type(e).__name__ else f"{type(e).__name__}: "
        finish(wire.error_record(wire.ErrorCode.EXCEPTION, stage, query, _program_line(e, name),
                                 name=reported, text=own + _text(e) + ("\n" + arrays if arrays else "")))


def _send_state(fd: int, state, fingerprints: dict, max_bytes: int) -> None:
    """Write the state to the worker's pipe, then close it (the worker validates everything it receives; a state
    that cannot be shared, or does not fit, is simply not sent)."""
    try:
        write_state(lambda data: write_all(fd, data), state, fingerprints, max_bytes)
    except Exception:  # noqa: BLE001 - e.g. MemoryError copying an array: no state, the run goes on
        pass
    finally:
        os.close(fd)


def _text(e: BaseException) -> str:
    try:
        return str(e)
    except BaseException:  # noqa: BLE001
        return "<unprintable>"


def _program_error_record(e: ProgramError, stage: wire.Stage, query: int) -> bytes:
    kind, _, detail = e.reason.partition(":")
    code = {"syntax_error": wire.ErrorCode.SYNTAX, "missing_score": wire.ErrorCode.MISSING_SCORE,
            "bad_prepare": wire.ErrorCode.BAD_PREPARE, "invalid_scores": wire.ErrorCode.INVALID_SCORES
            }.get(kind, wire.ErrorCode.EXCEPTION)
    return wire.error_record(code, stage, query, name=detail if code == wire.ErrorCode.INVALID_SCORES else "ProgramError",
                             text=str(e))
