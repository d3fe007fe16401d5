"""The evolution loop: propose (a proposer: LLM or offline mutator), evaluate (sandboxed, parallel), archive.

One iteration = one proposal, whatever becomes of it (accepted, failed, duplicate, rejected by the
cascade); ``iterations`` is the total for the run, so ``--resume`` continues to the same total. A repair
(a follow-up request that fixes a failed proposal, up to ``repair_rounds`` in a row) is a proposal of its
own, with its own iteration number, sent before any new proposal. An attempt that never reached the model
(``Proposal.unavailable``: no connection, no answer, key refused, unknown model) is not a proposal: nothing is
archived, its iteration number is used again, and ``max_consecutive_llm_failures`` of them in a row stop the
run (stop reason ``llm_unavailable``; ``--resume`` continues).

Parents, crossover partners and operators are chosen in the main thread when a proposal is made,
from ``rng_for(seed, iteration)``; the proposer writes the code (see :mod:`evorank.evolve.engine.proposers`
for what the engine asks of a proposer). Concurrency: a proposer that takes time (an LLM) fills up
to ``concurrency`` proposals in threads while the main thread evaluates finished proposals in
parallel worker processes, so proposing and evaluation overlap. An instantaneous proposer (the
offline mutator) is filled in synchronous batches of ``batch`` proposals (``config.batch_size``), each batch's
parents drawn from the archive as it was before it.

Reproducibility: an offline run gives the same archive (code, fitness, parents) for the same seed and batch,
uninterrupted or killed and resumed any number of times. Every draw comes from ``rng_for(seed, iteration)``;
the grid's axes are computed from the code and the metrics, never from measured time (unless the
configuration asks for it: ``config.not_reproducible`` says so, in the log and in ``status``); a batch is
archived in one transaction together with the migration and re-binning it triggers (re-binning follows the
number of placed programs in the archive, not a counter of this session), so a run killed at any instant
resumes at the start of a batch with the archive an uninterrupted run had there.
"""
from __future__ import annotations

import heapq
import logging
import signal
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from evorank.archive import (
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
from evorank.evaluators.program.source import program_path, split_block
from evorank.archive.elites import regrid

from evorank.evolve.config import RunConfig, batch_size, not_reproducible
from .descriptors import describe, grid_for
from .heldout import HeldoutTracker
from .fusion import fuse_best
from .pruning import prune_best
from evorank.evolve.llm.client import Budget
from evorank.evaluators.cascade import TOP, metrics_alike
from evorank.evolve.proposal import CROSSOVER, NO_OP, REPAIR, SAMPLE_RANKING_FEATURE, Proposal, Proposer, repairable
from .proposers import make_proposer

log = logging.getLogger("evorank")
PROPOSE_THREAD_PREFIX = "propose"  # the names of the threads that fill proposals (model requests)


@dataclass
class RunStats:
    accepted: int = 0
    failed: int = 0
    duplicate: int = 0
    rejected: int = 0
    repairs: int = 0  # proposals that were repairs (counted in the statuses above too)
    unavailable: int = 0  # attempts that never reached the model (not proposals)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def count(self, status: str) -> None:
        attr = {"accepted": "accepted", "failed": "failed", "duplicate": "duplicate", "rejected_cascade": "rejected"}[status]
        setattr(self, attr, getattr(self, attr) + 1)


def grid_spec(cfg: RunConfig) -> GridSpec:
    return grid_for(cfg.descriptors, cfg.complexity_edges, cfg.latency_edges, cfg.grid_metric)


def open_run_store(cfg: RunConfig, run_dir: Path, resume: bool) -> RunStore:
    """The run's archive, opened (``resume``) or created for writing; holding it is holding the run's writer lock
    (``StoreLockedError`` when another process has it), so take it before writing anything else in the folder."""
    if resume:
        return RunStore.open(run_dir)
    return RunStore.create(run_dir, cfg.to_dict(), cfg.seed, versions=collect_versions(), grid=grid_spec(cfg),
                           n_islands=cfg.islands)


class Engine:
    """Runs (or resumes) one evolution job in ``run_dir``. Construct, then call ``run()``, then ``close()``.
    ``proposer``: who writes the candidates; by default the one ``cfg`` asks for (``make_proposer``)."""

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
        self.unavailable_reason: str | None = None  # the last attempt that never reached the model, in words
        self.unavailable_in_row = 0
        self._stop = threading.Event()
        self._repairs: deque[Proposal] = deque()  # follow-ups waiting to be sent, before any new proposal
        self._free_iterations: list[int] = []  # numbers of attempts that were not proposals (a heap)
        self._next_it = 1
        self.store = store if store is not None else open_run_store(cfg, self.run_dir, resume)
        spent = float(self.store.summary().get("cost_usd") or 0.0) if resume else 0.0
        self.budget = Budget(cfg.budget_usd, spent)
        self.proposer = proposer if proposer is not None else make_proposer(cfg, self.budget, self.spec)
        tell_sizes, array_sizes = (getattr(self.proposer, "set_collection_sizes", None),
                                   getattr(evaluator, "array_sizes", None))
        if tell_sizes is not None and array_sizes is not None:
            tell_sizes(array_sizes())
        self.seed_records: dict[str, ProgramRecord] = {}
        self.seed_sources: dict[str, str] = {}
        self.bm25_latency_ms: float | None = None
        self.reference_metrics: dict[str, dict[str, float]] | None = None  # the BM25 seed's, on the train queries
        self.reference_validation: dict[str, dict[str, float]] | None = None  # and on the validation queries
        self.heldout: HeldoutTracker | None = None
        self._prepare_counts = [0, 0]  # sandboxed runs, and how many reused a prepare() state, not yet logged

    # -- setup ---------------------------------------------------------------------------------
    def _evaluate_seeds(self) -> None:
        """Evaluate every seed in this run; BM25 first, as the latency reference (re-measured on resume). Every
        starting program is evaluated before any is archived, so a run whose start fails archives nothing; the
        seeds of every island are archived together (one transaction), so a run killed while seeding is seeded
        afresh on resume."""
        existing = {p.features.get("seed_name"): p for p in self.store.seed_programs()}
        names = ["bm25"] + [n for n in self.cfg.seeds if n != "bm25"]
        evaluated, new = [], []
        for name in names:
            # on resume, a starting program is the code archived when the run began (its file may have changed)
            source = existing[name].code if name in existing else program_path(name).read_text(encoding="utf-8")
            result = self.evaluator.evaluate_trusted(source)
            if result.suite is None or not result.suite.ok:
                raise EvorankError(f"starting program {name} failed to evaluate ({result.failure_reason}): "
                                   f"{result.failure_detail}; fix it and try `evorank eval {name} --checked` first")
            evaluated.append((name, source, result))
        for name, source, result in evaluated:
            if name == "bm25":
                self.bm25_latency_ms = result.latency_ms
                self.reference_metrics = {c.name: dict(c.metrics) for c in result.suite.collections}
                if result.validation is not None:
                    self.reference_validation = {c.name: dict(c.metrics) for c in result.validation.collections}
            if name not in self.cfg.seeds:
                continue  # measured only as the latency reference
            self.seed_sources[name] = source
            if name in existing:
                self.seed_records[name] = existing[name]
            else:
                new.append((name, source, result))
        with self.store.atomic():
            for name, source, result in new:
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

    def _record_from_result(self, rec: ProgramRecord, result, starts: tuple[ProgramRecord, ...] = ()) -> ProgramRecord:
        """``rec`` completed from its evaluation; ``starts``: the programs it was checked against for a no-op (the
        ``starts`` given to the evaluator, in the same order)."""
        suite = result.suite
        rec.stage = result.stage
        rec.features = dict(rec.features)
        if result.stage1_fitness is not None:
            rec.features["stage1_fitness"] = result.stage1_fitness
        # sandboxed runs, and how many reused a prepare() state: what the cache held, not the program, so logged
        # with the batch (an event), never as a feature
        self._prepare_counts[0] += result.prepare_runs
        self._prepare_counts[1] += result.prepare_reused
        if result.sample_ranking:
            rec.features[SAMPLE_RANKING_FEATURE] = result.sample_ranking
        if result.ranks_as_start is not None and result.ranks_as_start < len(starts):
            rec.status, rec.failure_reason = "duplicate", NO_OP  # ran, but changes no ranking: never an elite
            rec.failure_detail = (f"it ran, but ranks the top {TOP} documents of every sampled query exactly as "
                                  f"program {starts[result.ranks_as_start].id} does, so it changes nothing")
            return rec
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
        sizes = self.evaluator.collection_sizes()
        rec.fitness = fitness_of(rec.metrics, self.spec, rec.latency_ratio, n_docs=sizes,
                                 reference=self.reference_metrics or rec.metrics)
        if result.validation is not None:  # measured on the held-out queries of the same run: never selects
            rec.features["val_fitness"] = result.validation_fitness
            rec.features["val_metrics"] = {c.name: dict(c.metrics) for c in result.validation.collections}
        try:
            rec.features.update(describe(rec.code, rec.metrics, self.reference_metrics or rec.metrics))
        except Exception:  # candidate text: whatever it does to a trusted step, it fails alone
            log.exception("iteration %d: the descriptors failed", rec.iteration)
            return _unreadable(rec)
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

    def _take_iteration(self) -> int:
        """The next iteration number: one left by an attempt that was not a proposal, else a new one."""
        if self._free_iterations:
            return heapq.heappop(self._free_iterations)
        self._next_it += 1
        return self._next_it - 1

    def _next_proposal(self) -> Proposal:
        """The next proposal to fill, prepared: a waiting repair first, else a new one."""
        if self._repairs:
            prop = self._repairs.popleft()
            prop.iteration, prop.started_at = self._take_iteration(), time.time()
            return prop
        return self._prepare(self._new_proposal(self._take_iteration()))

    def _screen(self, props: list[Proposal]) -> list[Proposal]:
        """The proposals among filled attempts. An attempt that never reached the model is set aside: nothing is
        archived, its iteration number is used again (a repair is dropped), and after
        ``max_consecutive_llm_failures`` in a row the run stops."""
        kept = []
        for p in sorted(props, key=lambda p: p.iteration):
            if p.unavailable is None:
                self.unavailable_in_row = 0
                kept.append(p)
                continue
            heapq.heappush(self._free_iterations, p.iteration)
            self.stats.unavailable += 1
            self.unavailable_in_row += 1
            self.unavailable_reason = p.unavailable
            log.warning("no proposal (%d in a row, not counted%s): %s", self.unavailable_in_row,
                        "; the repair is dropped" if p.repair_round else "", p.unavailable)
            if self.unavailable_in_row >= self.cfg.max_consecutive_llm_failures:
                self.request_stop("llm_unavailable")
        return kept

    # -- what a proposer may read while preparing (the engine is its ArchiveView) ---------------
    def inspirations(self, prop: Proposal) -> list[ProgramRecord]:
        """Elites to show next to the parent, drawn from the proposal's stream 2 (so no other draw moves): each
        program once (not the parent or the crossover partner again), and none that ranks as the program it
        started from (a no-op archived before it could be told, whose comments say it does something)."""
        drawn = select_inspirations(self.islands, prop.island, prop.parent, rng_for(self.cfg.seed, prop.iteration, 2),
                                    self.policy)
        shown = {p.code_hash for p in (prop.parent, prop.other) if p is not None}
        out = []
        for rec in drawn:
            if rec.code_hash not in shown and not self._ranks_as_its_start(rec):
                shown.add(rec.code_hash)
                out.append(rec)
        return out

    def _ranks_as_its_start(self, rec: ProgramRecord) -> bool:
        """Whether an accepted program ranks as a program it started from (its parents; for a repair, its chain's)."""
        start = rec
        try:
            while start.operator in (REPAIR, "migration") and start.parent_ids:
                start = self.store.get(start.parent_ids[0])
            starts = [self.store.get(i) for i in start.parent_ids] if start.operator != "seed" else []
        except KeyError:
            return False
        mine = rec.features.get(SAMPLE_RANKING_FEATURE)
        return any((mine and mine == s.features.get(SAMPLE_RANKING_FEATURE)) or metrics_alike(rec.metrics, s.metrics)
                   for s in starts)

    def _shown_records(self, prop: Proposal) -> list[ProgramRecord]:
        """The archived programs a proposal's prompt showed besides its parent (``Proposal.shown``: inspirations,
        the crossover partner): a candidate that ranks the query sample as one of them does is no new idea either."""
        out = []
        for _, code in prop.shown:
            found = self.store.has_code_hash(normalized_code_hash(code), status="accepted")
            if found is not None:
                out.append(self.store.get(found))
        return out

    def recent_failures(self, prop: Proposal) -> list[ProgramRecord]:
        """The last failures of the proposal's island, the parent's own line first (a prompt shows the few it can
        say something useful about)."""
        return self._failures_for(prop.parent, prop.island)

    def _failures_for(self, parent: ProgramRecord, island: int, n: int = 10) -> list[ProgramRecord]:
        recent = self.store.recent_failures(island, limit=20)
        recent.sort(key=lambda p: (parent.id not in p.parent_ids, -p.id))  # own line first
        return recent[:n]

    def _fill(self, prop: Proposal) -> Proposal:
        """Produce the candidate's code with the proposal's stream 1 (in a worker thread unless instantaneous)."""
        rng = rng_for(self.cfg.seed, prop.iteration, stream=1)
        try:
            self.proposer.fill(prop, rng)
        except Exception as e:  # a proposer bug (or a reply a trusted step could not read) costs one proposal
            log.exception("proposal %d failed", prop.iteration)
            prop.failure_reason = f"proposer:{type(e).__name__}"
            prop.failure_detail = (f"evorank failed while making this proposal ({type(e).__name__}; the traceback is "
                                   "in run.log)")  # fixed text: the exception may quote the reply
        return prop

    # -- evaluating and archiving -------------------------------------------------------------
    def _settle(self, props: list[Proposal]) -> None:
        """Evaluate the proposals that have code, then archive all of them in iteration order; queue a repair for
        each failed (or duplicate) one the proposer can follow up (up to ``repair_rounds`` in a row)."""
        props = sorted(props, key=lambda p: p.iteration)
        records = [p.to_record() for p in props]
        to_eval: list[int] = []
        seen: set[str] = set()
        for i, p in enumerate(props):
            if p.source is None:
                continue
            try:
                h = normalized_code_hash(p.source)
            except Exception:  # candidate text: whatever it does to a trusted step, it fails alone
                log.exception("iteration %d: the code hash failed", p.iteration)
                _unreadable(records[i])
                continue
            if h in seen or self.store.has_code_hash(h) is not None:
                rec = records[i]
                rec.status, rec.failure_reason = "duplicate", "duplicate"
                rec.failure_detail = "the same program (up to formatting and comments) is already in the archive"
                continue
            seen.add(h)
            to_eval.append(i)
        if to_eval:
            starts = [(props[i].base, *((props[i].other,) if props[i].other is not None else ()),
                       *self._shown_records(props[i])) for i in to_eval]
            results = self.evaluator.evaluate(
                [props[i].source for i in to_eval],
                [self._seed_source_of(props[i].base) for i in to_eval],
                [props[i].base.features.get("stage1_fitness") for i in to_eval],
                starts=[[p.features.get(SAMPLE_RANKING_FEATURE) or {} for p in ps] for ps in starts],
            )
            for i, result, ps in zip(to_eval, results, starts):
                self._record_from_result(records[i], result, ps)
        with self.store.atomic():  # the batch, its migration and re-binning: all archived or none
            self._archive(props, records)
        self._track_heldout()

    def _archive(self, props: list[Proposal], records: list[ProgramRecord]) -> None:
        """Archive evaluated proposals in iteration order, with the migrations they complete; re-bin the adaptive
        axes when the number of placed programs passed a multiple of ``regrid_every``."""
        placed_before = self.store.placed_count()
        follow_up = getattr(self.proposer, "follow_up", None)
        for p, rec in zip(props, records):
            self.islands.add(self.store, rec)
            self.stats.count(rec.status)
            self.stats.repairs += rec.operator == REPAIR
            self.stats.prompt_tokens += rec.prompt_tokens
            self.stats.completion_tokens += rec.completion_tokens
            self.stats.cost_usd += rec.cost_usd
            log.info("iteration %d island %d %s %s fitness=%s %s", rec.iteration, rec.island, rec.operator,
                     rec.status, f"{rec.fitness:.4f}" if rec.fitness is not None else "-",
                     rec.failure_reason or p.description)
            gen = rec.generation
            if rec.island == self.cfg.islands - 1 and migration_due(gen, self.cfg.migration_every) \
                    and not self.store.migration_done(gen) and self.cfg.islands > 1:
                moved = self.islands.migrate(self.store, gen, self.cfg.migration_rate)
                log.info("migration at generation %d: %d program(s) moved", gen, len(moved))
            if follow_up is not None and rec.status in ("failed", "duplicate") \
                    and p.repair_round < self.cfg.repair_rounds and repairable(rec.failure_reason):
                repair = follow_up(p, rec)
                if repair is not None:
                    self._repairs.append(repair)
            if self.reporter:
                self.reporter.update(self, rec)
        if self._prepare_counts[0]:
            self.store.log_event("prepare", {"runs": self._prepare_counts[0], "reused": self._prepare_counts[1]})
            self._prepare_counts = [0, 0]
        every = self.cfg.regrid_every
        if every and self.store.placed_count() // every > placed_before // every:
            refined = regrid(self.store)
            if refined is not None:
                self.islands = refined
                log.info("adaptive bins refined: %s", self.store.grid_spec().to_dict())

    def _track_heldout(self, wait_s: float | None = None) -> None:
        """Hand a new best to the held-out tracker, and log what it has measured (it never feeds back)."""
        if self.heldout is None:
            return
        best = self.best()
        if best is not None:
            self.heldout.submit(best, self._seed_source_of(best))
        done = self.heldout.close(wait_s) if wait_s is not None else self.heldout.drain()
        for measured in done:
            self.store.log_event("heldout", measured)
            log.info("held-out: #%s fitness %s (BM25 %s)", measured["id"], measured["fitness"],
                     measured["reference_fitness"])

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
        """The run's best program: chosen on the validation queries among the best by train fitness."""
        return self.store.best_on_validation(self.cfg.best_of)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def run(self) -> ProgramRecord | None:
        cfg = self.cfg
        resumed = self.store.iterations_done() > 0 or bool(self.store.seed_programs())
        self.islands = resume_islands(self.store) if resumed else Islands.from_store(self.store)
        self.store.update_config(cfg.to_dict())  # the settings it runs with: a resume may raise the total
        reasons = not_reproducible(cfg)
        self.store.log_event("resume" if resumed else "start", {"iterations": cfg.iterations,
                                                                 "batch": batch_size(cfg),
                                                                 "not_reproducible": reasons})
        if reasons:
            log.warning("this run is not reproducible under its seed: %s", "; ".join(reasons))
        t_start = time.monotonic()
        try:
            self._evaluate_seeds()
        except BaseException:  # the session ends here: say so, or `status` would take it for a killed run
            self.stop_reason = self.stop_reason or "failed"
            self.store.log_event("stop", {"reason": self.stop_reason, "proposals": self.proposals_done()[0],
                                          "elapsed_s": round(time.monotonic() - t_start, 1)})
            raise
        if cfg.heldout:
            from evorank.evaluators.data.suites import get_suite, suites

            heldout = list(get_suite(cfg.heldout).collections) if cfg.heldout in suites() else \
                [a.strip() for a in cfg.heldout.split(",") if a.strip()]
            self.heldout = HeldoutTracker(heldout, cfg.fitness, self.evaluator.limits,
                                          program_path("bm25").read_text(encoding="utf-8"))
        done, last_it = self.proposals_done()
        self._next_it = last_it + 1
        self._catch_up_migration(last_it)
        if self.reporter:
            self.reporter.start(self, done)
        batch = max(1, batch_size(cfg))
        proposer = self.proposer
        pool = None if proposer.instantaneous else ThreadPoolExecutor(max_workers=proposer.concurrency,
                                                                      thread_name_prefix=PROPOSE_THREAD_PREFIX)
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
                    props = [self._fill(self._next_proposal()) for _ in range(min(batch, remaining))]
                else:
                    while len(inflight) < min(proposer.concurrency, remaining) and not self.budget.exhausted:
                        prop = self._next_proposal()
                        inflight[pool.submit(self._fill, prop)] = prop
                    finished, _ = wait(list(inflight), timeout=1.0, return_when=FIRST_COMPLETED)
                    props = [f.result() for f in finished]
                    for f in finished:
                        del inflight[f]
                    if not props:
                        continue
                props = self._screen(props)
                self._settle(props)
                done += len(props)
            finished = done >= cfg.iterations and not self._stop.is_set() and self.reference_validation is not None
            if finished and cfg.fuse_best:  # --fuse-best, then --prune-best: once each, on validation
                fuse_best(self.store, self.evaluator, cfg, self._seed_source_of, self._record_from_result)
            if finished and cfg.prune_best and (best := self.best()) is not None:
                prune_best(self.store, self.evaluator, best, self._seed_source_of(best), self.reference_validation,
                           self.spec, self._record_from_result)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            reason = self.stop_reason or ("completed" if done >= cfg.iterations else "stopped")
            self.stop_reason = reason
            stop = {"reason": reason, "proposals": done, "elapsed_s": round(time.monotonic() - t_start, 1)}
            if reason == "llm_unavailable":
                stop["detail"] = self.unavailable_reason
            self.store.log_event("stop", stop)
            if self.heldout is not None:  # finish the last measurement unless the run was stopped by hand
                self._track_heldout(wait_s=600.0 if reason == "completed" else 0.0)
            if self.reporter:
                self.reporter.finish(self)
        return self.best()

    def close(self) -> None:
        self.proposer.close()
        self.store.close()


UNREADABLE = "unreadable"
"""The failure reason of a candidate whose text made a trusted step (code hash, descriptors) fail."""


def _unreadable(rec: ProgramRecord) -> ProgramRecord:
    """``rec`` as a failed candidate that evorank could not read (fixed reason and text, nothing of the program)."""
    rec.status, rec.fitness, rec.metrics = "failed", 0.0, {}
    rec.failure_reason = UNREADABLE
    rec.failure_detail = "evorank could not read this program (too large or too deeply nested); it was not placed"
    return rec


def requests_in_flight() -> int:
    """Proposal threads still working after a run stopped (a model request that has not returned): the process
    waits for them when it exits, and their replies are discarded."""
    return sum(t.is_alive() and t.name.startswith(PROPOSE_THREAD_PREFIX + "_") for t in threading.enumerate())


class StopSignals:
    """Ctrl-C and SIGTERM during a run: the first stops it after the step under way, a second Ctrl-C stops it now
    (a KeyboardInterrupt in the main thread). Once the engine has stopped, ``hold()``: while the run closes its
    workers and prints its summary (seconds), a further Ctrl-C is ignored, so that what the run says at its end,
    the command that resumes it included, is whole. Calling the object puts the previous handlers back."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.holding = False
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame) -> None:
        if self.engine._stop.is_set() and signum == signal.SIGINT:
            if self.holding:
                return
            raise KeyboardInterrupt
        self.engine.request_stop("interrupted" if signum == signal.SIGINT else "terminated")

    def hold(self) -> None:
        self.holding = True

    def __call__(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)


def install_signal_handlers(engine: Engine) -> StopSignals:
    """First Ctrl-C / SIGTERM: stop after the current step; a second Ctrl-C: stop now (see ``StopSignals``)."""
    return StopSignals(engine)
