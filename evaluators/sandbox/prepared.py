"""Reusing ``prepare()`` across candidates: a disk cache of validated states, one folder per index (trusted code).

Most mutations change only ``score``; every candidate used to pay ``prepare`` in full (seconds on a million
documents). A worker now looks the candidate's ``prepare_key`` up before it forks the jail:

- **hit**: the state is rebuilt by trusted code from validated bytes (``state_wire.build_state``) over a
  private copy-on-write mapping, and handed to the jail, which skips ``prepare`` and runs ``score``;
- **miss**: the jail runs ``prepare`` and writes the state it returned through a pipe (``state_wire``); the
  worker spools the bytes to a temporary file, and when the run succeeded, validates them (``read_state``:
  the description node by node, every array inside the stream, sparse matrices well formed) and commits them
  atomically as ``$EVORANK_CACHE/prepared/<index folder>/<key>/``.

Why this is safe (``docs/scale.md`` has the long version): nothing a candidate produces becomes an object that
trusted code or another candidate trusts. States cross as plain numbers in a fixed format; trusted code builds
every object the next jail receives, and the next jail's writes stay in its own process. The key is computed
by trusted code from the source text, and is shared only by programs whose ``prepare`` and everything it can
reach are the same code (``prepare_key``), so a state only ever goes to a program that would have computed
the same thing, unless the producer broke out of the language layers to reach ``score`` from ``prepare``;
even then it can only choose numbers that programs with its own ``prepare`` get to read (no code, no
objects, no file, no other collection). The cache lives in the evaluator's cache folder, which no jail can
reach.

``EVORANK_PREPARED_MB`` caps the cache (default ``DEFAULT_MAX_MB``; least recently used states go first;
``0`` turns reuse off). It is read by the process that sets the limits (the ``Evaluator``'s), and travels to the
workers in ``Limits.prepared_mb``: workers start with a scrubbed environment. One state holds at most
``state_cap`` bytes: half the cache, and no more than ``STATE_INDEX_FACTOR`` times the index's own arrays.

Nothing a jail sends can make this code raise: a stream cut short is dropped, a complete stream that fails
validation is refused (``commit`` says which, and the run fails as ``protocol_error``: the honest writer never
produces one), and the spool file is removed on every path; spools left by a killed worker are swept
(``remove_stale_spools``).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from evorank.evaluators.index.index import prepared_folder
from .prepare_key import prepare_key
from .state_wire import (ALIGN, MAX_HEADER_BYTES, MAX_NODES, IncompleteState, InvalidState, JailReuse, build_state,
                         index_arrays, read_state)

log = logging.getLogger(__name__)

DEFAULT_MAX_MB = 8192
MAX_MB_ENV = "EVORANK_PREPARED_MB"
_STREAM, _DESC = "stream.bin", "state.json"
#: A state's arrays may hold at most this many times the bytes of the index's own arrays, plus STATE_BASE_BYTES
#: (BM25's state is one float32 per posting, a fifth of the index; larger states are simply not shared).
STATE_INDEX_FACTOR = 2
STATE_BASE_BYTES = 64 << 20
#: Bytes a stream may hold beyond its arrays: header, alignment, trailer.
STREAM_OVERHEAD = MAX_HEADER_BYTES + ALIGN * (MAX_NODES + 2) + 64


def max_cache_bytes() -> int:
    """The cache's cap from ``EVORANK_PREPARED_MB`` in this process's environment (0: reuse off)."""
    try:
        return max(0, int(os.environ.get(MAX_MB_ENV, "") or DEFAULT_MAX_MB)) << 20
    except ValueError:
        return DEFAULT_MAX_MB << 20


def state_cap(index_bytes: int, cache_bytes: int) -> int:
    """The most array bytes one state may hold: half the cache, and at most STATE_INDEX_FACTOR x the index."""
    return min(cache_bytes // 2, STATE_INDEX_FACTOR * index_bytes + STATE_BASE_BYTES)


def remove_stale_spools(folder: Path) -> None:
    """Remove the spool and temporary files of processes that no longer exist from one index's state folder."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.startswith((".spool-", ".tmp-")):
            continue
        try:
            os.kill(int(name.split("-")[1]), 0)
            continue  # its process still runs: a capture in progress
        except ProcessLookupError:
            pass
        except (ValueError, IndexError, OSError):
            continue
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@dataclass
class Prepared:
    """A reusable state: the objects to hand to the jail and what its producer reported."""

    state: object
    prepare_ms: float


@dataclass
class Capture:
    """A state being received from a jail: the spool file and the most it may hold."""

    key: str
    path: Path
    max_bytes: int
    size: int = 0
    overflow: bool = False
    fd: int = -1

    def feed(self, data: bytes) -> None:
        """Append what arrived on the pipe (beyond ``max_bytes``, or when the disk refuses it, the rest is read and
        dropped, never stored)."""
        if self.overflow:
            return
        if self.size + len(data) > self.max_bytes:
            self.overflow = True
            self.discard()
            return
        try:
            if self.fd < 0:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:  # e.g. the disk is full: no state, the run goes on
            self.overflow = True
            self.discard()
            return
        self.size += len(data)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1

    def discard(self) -> None:
        self.close()
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass


class PreparedCache:
    """States of one index (``index.path`` must be set: the index lives in a cache folder)."""

    def __init__(self, index, root: Path | None = None):
        self.index = index
        folder = prepared_folder(Path(index.path))
        self.root = root or folder.parent
        self.dir = self.root / folder.name
        self._arrays = index_arrays(index)
        self.index_bytes = sum(int(a.nbytes) for a in self._arrays.values())
        self._loaded: OrderedDict[str, Prepared] = OrderedDict()
        remove_stale_spools(self.dir)

    def lookup(self, key: str) -> Prepared | None:
        """The state stored under ``key``, rebuilt for this process, or None."""
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        folder = self.dir / key
        try:
            desc = json.loads((folder / _DESC).read_text())
            if (folder / _STREAM).stat().st_size != desc["size"]:
                raise InvalidState("stream size changed")
            state = build_state(desc["root"], folder / _STREAM, self._arrays)
            os.utime(folder)  # least recently used goes first
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - a damaged cache entry is removed, never raised
            log.warning("prepared state %s is unusable (%s); removing it", folder, type(e).__name__)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        found = Prepared(state, float(desc.get("prepare_ms", 0.0)))
        self._loaded[key] = found
        while len(self._loaded) > 4:
            self._loaded.popitem(last=False)
        return found

    def capture(self, key: str, cache_bytes: int) -> Capture | None:
        """A spool for the state the next jail will write under ``key`` (None when reuse is off). Its arrays may
        hold ``state_cap`` bytes; the stream, that plus its header."""
        cap = state_cap(self.index_bytes, cache_bytes)
        if cap <= 0:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        return Capture(key, self.dir / f".spool-{os.getpid()}-{time.monotonic_ns()}", cap + STREAM_OVERHEAD)

    def commit(self, capture: Capture, prepare_ms: float | None, cache_bytes: int) -> str:
        """Validate a complete capture and store it (atomically; a concurrent identical commit wins). Returns
        ``stored``, ``dropped`` (nothing, too much, cut short, or not storable here) or ``refused`` (a complete
        stream that fails validation: the jail wrote bytes of its own). Never raises; the spool is gone after."""
        try:
            capture.close()
            if capture.overflow or capture.size == 0:
                return "dropped"
            try:
                desc = read_state(capture.path, self._arrays)
            except IncompleteState:
                return "dropped"
            except InvalidState as e:
                log.info("a prepare() state from a jail was refused: %s", e)
                return "refused"
            desc["prepare_ms"] = float(prepare_ms or 0.0)
            tmp = self.dir / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
            try:
                tmp.mkdir()
                os.rename(capture.path, tmp / _STREAM)
                (tmp / _DESC).write_text(json.dumps(desc))
                os.rename(tmp, self.dir / capture.key)
            except OSError:  # another worker stored the same key first, or the disk is full
                shutil.rmtree(tmp, ignore_errors=True)
                return "dropped"
            self.evict(cache_bytes)
            return "stored"
        except Exception as e:  # noqa: BLE001 - whatever happened, the run is not the worker's to lose
            log.warning("storing a prepare() state failed (%s)", type(e).__name__)
            return "dropped"
        finally:
            capture.discard()

    def evict(self, cap: int) -> None:
        """Remove least recently used states until all indexes' states fit ``cap`` bytes."""
        entries = []
        for folder in self.root.glob("*/*"):
            if folder.name.startswith("."):
                continue
            try:
                entries.append((folder.stat().st_mtime, (folder / _STREAM).stat().st_size, folder))
            except OSError:
                continue
        total = sum(e[1] for e in entries)
        for _, size, folder in sorted(entries):
            if total <= cap:
                break
            shutil.rmtree(folder, ignore_errors=True)
            total -= size


_caches: dict[str, PreparedCache] = {}


def cache_for(index) -> PreparedCache | None:
    """This process's cache of ``index``'s states (None without an on-disk index)."""
    path = getattr(index, "path", None)
    if path is None:
        return None
    key = str(path)
    if key not in _caches:
        _caches[key] = PreparedCache(index)
    return _caches[key]


# -- one sandboxed run's part (called by ``sandbox.run_sandboxed`` in the worker) ------------------------

#: CPU time a jail may spend writing its state, per MB, beyond what it reports as timed (the time-vs-CPU check).
CAPTURE_MS_PER_MB = 5.0


@dataclass
class ReusePlan:
    """What one run does about ``prepare``: reuse ``found``, or capture into ``capture`` (or neither)."""

    cache: PreparedCache | None = None
    found: Prepared | None = None
    capture: Capture | None = None
    read_fd: int = -1  # the worker's end of the capture pipe
    cache_bytes: int = 0

    def jail_args(self) -> tuple[JailReuse | None, int]:
        """(what the jail is told, the jail's end of the pipe to close here once it started)."""
        if self.found is not None:
            return JailReuse(reused=True, state=self.found.state), -1
        if self.capture is not None:
            self.read_fd, write_fd = os.pipe()
            return JailReuse(capture_fd=write_fd, max_bytes=self.capture.max_bytes - STREAM_OVERHEAD), write_fd
        return None, -1

    @property
    def allowance_ms(self) -> float:
        """Untimed CPU time the jail may have spent writing the state it sent."""
        return CAPTURE_MS_PER_MB * (self.capture.size / 2**20) if self.capture is not None else 0.0

    def finish(self, ok: bool, prepare_ms: float | None) -> str:
        """After the run: keep a captured state when the run succeeded, else drop it. Returns what became of the
        state (``none``, ``dropped``, ``stored``, ``refused``: see ``PreparedCache.commit``); never raises, and
        leaves no spool file behind."""
        if self.read_fd >= 0:
            try:
                os.close(self.read_fd)
            except OSError:
                pass
            self.read_fd = -1
        if self.capture is None:
            return "none"
        if ok and self.cache is not None:
            return self.cache.commit(self.capture, prepare_ms, self.cache_bytes)
        self.capture.discard()
        return "dropped"


def plan_reuse(source: str, index, enabled: bool, cache_mb: int | None = None) -> ReusePlan:
    """Look ``source``'s prepare key up in ``index``'s cache (only when ``enabled`` and the cache has room:
    ``cache_mb``, else ``$EVORANK_PREPARED_MB`` of this process)."""
    cache_bytes = max_cache_bytes() if cache_mb is None else max(0, int(cache_mb)) << 20
    if not enabled or not cache_bytes:
        return ReusePlan()
    try:
        cache = cache_for(index)
        key = prepare_key(source) if cache is not None else None
        if key is None:
            return ReusePlan()
        found = cache.lookup(key)
        if found is not None:
            return ReusePlan(cache, found, cache_bytes=cache_bytes)
        return ReusePlan(cache, capture=cache.capture(key, cache_bytes), cache_bytes=cache_bytes)
    except Exception as e:  # noqa: BLE001 - e.g. the cache folder cannot be written: run without reuse
        log.warning("prepare() states cannot be reused here (%s)", type(e).__name__)
        return ReusePlan()
