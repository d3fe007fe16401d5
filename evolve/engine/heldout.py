"""Held-out tracking (``evorank run --heldout SUITE``): how each new best program does on collections that
evolution never sees, measured in the background and only logged.

Whenever the run's best program changes, the engine hands it to ``HeldoutTracker.submit``; a thread of
its own evaluates it on the held-out collections with an Evaluator of its own (one sandbox worker, no
cascade, the same fitness; the BM25 seed measured there as the reference), and the engine logs each
finished measurement as a ``heldout`` event in the archive (``drain``; the archive belongs to the main
thread). Nothing here feeds back into selection: the loop reads held-out numbers nowhere but in the
events it writes for ``status`` and the report.
"""
from __future__ import annotations

import logging
import queue
import threading

log = logging.getLogger("evorank")


class HeldoutTracker:
    def __init__(self, addresses: list[str], fitness: str, limits, seed_source: str):
        self.addresses = list(addresses)
        self._fitness = fitness
        self._limits = limits
        self._seed_source = seed_source
        self._todo: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._last_id: int | None = None
        self._thread = threading.Thread(target=self._work, name="heldout", daemon=True)
        self._thread.start()

    def submit(self, rec, seed_source: str) -> None:
        """Measure ``rec`` (a ProgramRecord) unless it is the program submitted last."""
        if rec is None or rec.id == self._last_id:
            return
        self._last_id = rec.id
        self._todo.put((rec.id, rec.iteration, rec.fitness, rec.features.get("val_fitness"), rec.code, seed_source))

    def drain(self) -> list[dict]:
        """Measurements finished since the last call (to be logged by the caller)."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self, wait_s: float = 0.0) -> list[dict]:
        """Stop after at most ``wait_s`` seconds of waiting for queued measurements; returns what finished."""
        self._todo.put(None)
        self._thread.join(timeout=wait_s if wait_s > 0 else 0.01)
        return self.drain()

    def _work(self) -> None:
        from evorank.evaluators.parallel import Evaluator

        evaluator = None
        try:
            while True:
                item = self._todo.get()
                if item is None:
                    return
                pid, iteration, train_fit, val_fit, code, seed_source = item
                try:
                    if evaluator is None:
                        evaluator = Evaluator(self.addresses, n_workers=1, limits=self._limits, fitness=self._fitness,
                                              cascade=None)
                        ref_fit = evaluator.evaluate_trusted(self._seed_source, name="bm25").fitness
                    res = evaluator.evaluate([code], [seed_source], [None], [f"#{pid}"])[0]
                    self._done.put({"id": pid, "iteration": iteration, "train_fitness": train_fit,
                                    "validation_fitness": val_fit, "fitness": res.fitness,
                                    "reference_fitness": ref_fit,
                                    "failure": res.failure_reason, "collections": list(self.addresses),
                                    "metrics": {c.name: c.metrics for c in res.suite.collections if c.ok}
                                    if res.suite else {}})
                except Exception as e:  # a held-out problem must never stop the run
                    log.warning("held-out evaluation of #%s failed: %s: %s", pid, type(e).__name__, e)
        finally:
            if evaluator is not None:
                evaluator.close()

