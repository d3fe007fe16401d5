"""The evolution loop: propose (a proposer: LLM or offline mutator), evaluate (sandboxed, parallel), archive.

One iteration = one proposal, whatever becomes of it (accepted, failed, duplicate, rejected by the
cascade); ``iterations`` is the total for the run, so ``--resume`` continues to the same total.

Parents, crossover partners and operators are chosen in the main thread when a proposal is made,
from ``rng_for(seed, iteration)``; the proposer writes the code (see :mod:`evorank.evolve.proposers`
for what the engine asks of a proposer). Concurrency: a proposer that takes time (an LLM) fills up
to ``concurrency`` proposals in threads while the main thread evaluates finished proposals in
parallel worker processes, so proposing and evaluation overlap. An instantaneous proposer (the
offline mutator) is filled in synchronous batches (one candidate per worker), so offline runs are
deterministic under ``--seed``.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from evorank.archive import (
    FeatureDim,
    GridSpec,
    Islands,
    ProgramRecord,
    RunStore,
    SamplingPolicy,
    collect_versions,
    migration_due,
    normalized_code_hash,
    resume_islands,
    rng_for,
    select_inspirations,
    select_parent,
)
from evorank.evaluators.metrics import fitness as fitness_of
from evorank.evaluators.metrics import fitness_spec
from evorank.evaluators.errors import EvorankError
from evorank.evaluators.program import program_path, split_block

from .config import RunConfig, workers
from .llm import Budget
from .proposers import CROSSOVER, Proposal, Proposer, make_proposer

log = logging.getLogger("evorank")


@dataclass
class RunStats:
    accepted: int = 0
    failed: int = 0
    duplicate: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def count(self, status: str) -> None:
        attr = {"accepted": "accepted", "failed": "failed", "duplicate": "duplicate", "rejected_cascade": "rejected"}[status]
        setattr(self, attr, getattr(self, attr) + 1)


def grid_spec(cfg: RunConfig) -> GridSpec:
    dims = [
        FeatureDim("complexity", tuple(cfg.complexity_edges), log=True),
        FeatureDim("latency_ratio", tuple(cfg.latency_edges), log=True),
    ]
    if cfg.grid_metric:
        dims.append(FeatureDim(cfg.grid_metric, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)))
    return GridSpec(tuple(dims))


def open_run_store(cfg: RunConfig, run_dir: Path, resume: bool) -> RunStore:
    """The run's archive, opened (``resume``) or created for writing; holding it is holding the run's writer lock
    (``StoreLockedError`` when another process has it), so take it before writing anything else in the folder."""
    if resume:
        return RunStore.open(run_dir)
    return RunStore.create(run_dir, cfg.to_dict(), cfg.seed, versions=collect_versions(), grid=grid_spec(cfg),
                           n_islands=cfg.islands)


class Engine:
    """Runs (or resumes) one evolution job in ``run_dir``. Construct, then call ``run()``, then ``close()``.

    ``proposer``: who writes the candidates; by default the one ``cfg`` asks for (``make_proposer``).
    """

    def __init__(self, cfg: RunConfig, run_dir: Path, addresses: list[str], evaluator, resume: bool = False,
                 reporter=None, proposer: Proposer | None = None, store: RunStore | None = None):
        """``store``: the run's archive, already opened for writing (``open_run_store``); opened here if None."""
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.addresses = addresses
        self.evaluator = evaluator
        self.reporter = reporter
        self.policy = SamplingPolicy(n_top=(cfg.inspirations + 1) // 2, n_diverse=cfg.inspirations // 2)
        self.spec = fitness_spec(cfg.fitness)
        self.stats = RunStats()
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self.store = store if store is not None else open_run_store(cfg, self.run_dir, resume)
        spent = float(self.store.summary().get("cost_usd") or 0.0) if resume else 0.0
        self.budget = Budget(cfg.budget_usd, spent)
        self.proposer = proposer if proposer is not None else make_proposer(cfg, self.budget, self.spec)
        self.seed_records: dict[str, ProgramRecord] = {}
        self.seed_sources: dict[str, str] = {}
        self.bm25_latency_ms: float | None = None

    # -- setup ---------------------------------------------------------------------------------
    def _evaluate_seeds(self) -> None:
        """Evaluate every seed in this run; BM25 first, as the latency reference (re-measured on resume)."""
        existing = {p.features.get("seed_name"): p for p in self.store.programs() if p.operator == "seed"}
        names = ["bm25"] + [n for n in self.cfg.seeds if n != "bm25"]
        for name in names:
            # on resume, a starting program is the code archived when the run began (its file may have changed)
            source = existing[name].code if name in existing else program_path(name).read_text(encoding="utf-8")
            result = self.evaluator.evaluate_trusted(source)
            if result.suite is None or not result.suite.ok:
                raise EvorankError(f"starting program {name} failed to evaluate ({result.failure_reason}): "
                                   f"{result.failure_detail}; fix it and try `evorank eval {name} --sandbox` first")
            if name == "bm25":
                self.bm25_latency_ms = result.latency_ms
            if name not in self.cfg.seeds:
                continue  # measured only as the latency reference
            self.seed_sources[name] = source
            if name in existing:
                self.seed_records[name] = existing[name]
                continue
            for island in range(self.cfg.islands):
                rec = self._record_from_result(
                    ProgramRecord(code=source, operator="seed", island=island, generation=0, iteration=0,
                                  features={"seed_name": name}),
                    result,
                )
                self.islands.add(self.store, rec)
                self.seed_records.setdefault(name, rec)
        log.info("seeds evaluated: %s (BM25 median latency %.3f ms/query)",
                 ", ".join(f"{n}={r.fitness:.4f}" for n, r in self.seed_records.items()), self.bm25_latency_ms or 0)

    def _record_from_result(self, rec: ProgramRecord, result) -> ProgramRecord:
        suite = result.suite
        rec.stage = result.stage
        rec.features = dict(rec.features)
        if result.stage1_fitness is not None:
            rec.features["stage1_fitness"] = result.stage1_fitness
        if getattr(result, "prepare_runs", 0):  # sandboxed runs, and how many reused a prepare() state
            rec.features["prepare_runs"], rec.features["prepare_reused"] = result.prepare_runs, result.prepare_reused
        if result.stopped_by_cascade:
            rec.status, rec.failure_reason = "rejected_cascade", "cascade"
            rec.failure_detail = (f"stage-1 fitness {result.stage1_fitness:.4f} on a query sample was below the "
                                  "cascade threshold relative to its parent")
            return rec
        if result.failure_reason is not None:
            rec.status, rec.fitness = "failed", 0.0
            rec.failure_reason, rec.failure_detail = result.failure_reason, result.failure_detail
            return rec
        rec.metrics = {c.name: dict(c.metrics) for c in suite.collections}
        rec.latency_ms = result.latency_ms
        if self.bm25_latency_ms and result.latency_ms:
            rec.latency_ratio = result.latency_ms / self.bm25_latency_ms
        rec.fitness = fitness_of(rec.metrics, self.spec, rec.latency_ratio)
        rec.status = "accepted"
        return rec

    # -- proposing -----------------------------------------------------------------------------
    def _partners(self, island: int, parent: ProgramRecord) -> list[ProgramRecord]:
        """Crossover partners: elites of the other islands, else of other cells of this one."""
        pool = [p for i in range(self.cfg.islands) if i != island for p in self.islands.elites(i)]
        return [p for p in pool if p.code_hash != parent.code_hash] or [
            p for p in self.islands.elites(island) if p.code_hash != parent.code_hash
        ]

    def _new_proposal(self, iteration: int) -> Proposal:
        """Parent, operator and partner of an iteration, drawn (in that order) from ``rng_for(seed, iteration)``."""
        rng = rng_for(self.cfg.seed, iteration)
        island = iteration % self.cfg.islands
        parent = select_parent(self.islands, island, rng, self.policy)
        partners = self._partners(island, parent)
        operator = self.proposer.choose_operator(rng, bool(partners))
        other = partners[int(rng.integers(len(partners)))] if operator == CROSSOVER else None
        return Proposal(iteration, island, iteration // self.cfg.islands, operator, parent, other)

    def _prepare(self, prop: Proposal) -> Proposal:
        """The proposer's main-thread step: it may read the archive, which belongs to this thread."""
        self.proposer.prepare(prop, self)
        return prop

    # -- what a proposer may read while preparing (the engine is its ArchiveView) ---------------
    def inspirations(self, prop: Proposal) -> list[ProgramRecord]:
        """Elites to show next to the parent, drawn from the proposal's stream 2 (so no other draw moves)."""
        return select_inspirations(self.islands, prop.island, prop.parent, rng_for(self.cfg.seed, prop.iteration, 2),
                                   self.policy)

    def recent_failures(self, prop: Proposal) -> list[ProgramRecord]:
        """The last failures of the proposal's island, the parent's own line first."""
        return self._failures_for(prop.parent, prop.island)

    def _failures_for(self, parent: ProgramRecord, island: int, n: int = 3) -> list[ProgramRecord]:
        recent = self.store.recent_failures(island, limit=20)
        recent.sort(key=lambda p: (parent.id not in p.parent_ids, -p.id))  # own line first
        return recent[:n]

    def _fill(self, prop: Proposal) -> Proposal:
        """Produce the candidate's code with the proposal's stream 1 (in a worker thread unless the
        proposer is instantaneous)."""
        rng = rng_for(self.cfg.seed, prop.iteration, stream=1)
        try:
            self.proposer.fill(prop, rng)
        except Exception as e:  # a proposer bug must cost one proposal, not the run
            log.exception("proposal %d failed", prop.iteration)
            prop.failure_reason, prop.failure_detail = f"proposer:{type(e).__name__}", str(e)[:500]
        return prop

    # -- evaluating and archiving -------------------------------------------------------------
    def _settle(self, props: list[Proposal]) -> None:
        """Evaluate the proposals that have code, then archive all of them in iteration order."""
        props = sorted(props, key=lambda p: p.iteration)
        to_eval: list[Proposal] = []
        seen: set[str] = set()
        records: dict[int, ProgramRecord] = {}
        descriptions = {p.iteration: p.description for p in props}
        for p in props:
            rec = records[p.iteration] = p.to_record()
            if p.source is None:
                continue
            h = normalized_code_hash(p.source)
            if h in seen or self.store.has_code_hash(h) is not None:
                rec.status, rec.failure_reason = "duplicate", "duplicate"
                rec.failure_detail = "the same program (up to formatting and comments) is already in the archive"
                continue
            seen.add(h)
            to_eval.append(p)
        if to_eval:
            results = self.evaluator.evaluate(
                [p.source for p in to_eval],
                [self._seed_source_of(p.parent) for p in to_eval],
                [p.parent.features.get("stage1_fitness") for p in to_eval],
            )
            for p, result in zip(to_eval, results):
                self._record_from_result(records[p.iteration], result)
        for it in sorted(records):
            rec = records[it]
            self.islands.add(self.store, rec)
            self.stats.count(rec.status)
            self.stats.prompt_tokens += rec.prompt_tokens
            self.stats.completion_tokens += rec.completion_tokens
            self.stats.cost_usd += rec.cost_usd
            log.info("iteration %d island %d %s %s fitness=%s %s", rec.iteration, rec.island, rec.operator,
                     rec.status, f"{rec.fitness:.4f}" if rec.fitness is not None else "-",
                     rec.failure_reason or descriptions.get(it, ""))
            gen = rec.generation
            if rec.island == self.cfg.islands - 1 and migration_due(gen, self.cfg.migration_every) \
                    and not self.store.migration_done(gen) and self.cfg.islands > 1:
                moved = self.islands.migrate(self.store, gen, self.cfg.migration_rate)
                log.info("migration at generation %d: %d program(s) moved", gen, len(moved))
            if self.reporter:
                self.reporter.update(self, rec)

    def _catch_up_migration(self, last_iteration: int) -> None:
        """A run killed between a generation's last insert and its migration migrates on resume."""
        gen = last_iteration // self.cfg.islands
        complete = last_iteration % self.cfg.islands == self.cfg.islands - 1
        if self.cfg.islands > 1 and complete and gen > 0 and migration_due(gen, self.cfg.migration_every) \
                and not self.store.migration_done(gen):
            self.islands.migrate(self.store, gen, self.cfg.migration_rate)

    def _seed_source_of(self, parent: ProgramRecord) -> str:
        """The seed a program descends from (its head and tail must stay byte-identical)."""
        head = split_block(parent.code).head
        for src in self.seed_sources.values():
            if split_block(src).head == head:
                return src
        return parent.code

    # -- the run ------------------------------------------------------------------------------
    def proposals_done(self) -> tuple[int, int]:
        """(proposals archived so far, the last iteration number)."""
        return self.store.proposal_progress()

    def best(self) -> ProgramRecord | None:
        return self.islands.best()

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def run(self) -> ProgramRecord | None:
        cfg = self.cfg
        resumed = self.store.iterations_done() > 0 or any(p.operator == "seed" for p in self.store.programs())
        self.islands = resume_islands(self.store) if resumed else Islands.from_store(self.store)
        self.store.log_event("resume" if resumed else "start", {"iterations": cfg.iterations})
        t_start = time.monotonic()
        self._evaluate_seeds()
        done, last_it = self.proposals_done()
        next_it = last_it + 1
        self._catch_up_migration(last_it)
        if self.reporter:
            self.reporter.start(self, done)
        batch = max(1, workers(cfg))
        proposer = self.proposer
        pool = None if proposer.instantaneous else ThreadPoolExecutor(max_workers=proposer.concurrency,
                                                                      thread_name_prefix="propose")
        inflight: dict[Future, Proposal] = {}
        try:
            while done < cfg.iterations and not self._stop.is_set():
                if cfg.max_hours is not None and time.monotonic() - t_start > cfg.max_hours * 3600:
                    self.request_stop("max_hours")
                    break
                if self.budget.exhausted:
                    self.request_stop("budget")
                    break
                remaining = cfg.iterations - done
                if pool is None:
                    props = [self._fill(self._prepare(self._new_proposal(next_it + i)))
                             for i in range(min(batch, remaining))]
                    next_it += len(props)
                else:
                    while len(inflight) < min(proposer.concurrency, remaining) and not self.budget.exhausted:
                        prop = self._prepare(self._new_proposal(next_it))
                        next_it += 1
                        inflight[pool.submit(self._fill, prop)] = prop
                    finished, _ = wait(list(inflight), timeout=1.0, return_when=FIRST_COMPLETED)
                    props = [f.result() for f in finished]
                    for f in finished:
                        del inflight[f]
                    if not props:
                        continue
                self._settle(props)
                done += len(props)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            reason = self.stop_reason or ("completed" if done >= cfg.iterations else "stopped")
            self.stop_reason = reason
            self.store.log_event("stop", {"reason": reason, "proposals": done,
                                          "elapsed_s": round(time.monotonic() - t_start, 1)})
            if self.reporter:
                self.reporter.finish(self)
        return self.best()

    def close(self) -> None:
        self.proposer.close()
        self.store.close()


def install_signal_handlers(engine: Engine):
    """First Ctrl-C / SIGTERM: stop after the current step; a second Ctrl-C: stop now."""
    def handler(signum, frame):
        if engine._stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        engine.request_stop("interrupted" if signum == signal.SIGINT else "terminated")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in old.items()]
