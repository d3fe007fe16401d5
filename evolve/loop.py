"""The evolution loop: propose (LLM or offline mutator), evaluate (sandboxed, parallel), archive.

One iteration = one proposal, whatever becomes of it (accepted, failed, duplicate, rejected by the
cascade); ``iterations`` is the total for the run, so ``--resume`` continues to the same total.

Concurrency: up to ``in_flight`` LLM requests run in threads while the main thread evaluates
finished proposals in parallel worker processes, so LLM latency and evaluation overlap. Parents
are chosen in the main thread when a proposal is submitted, from ``rng_for(seed, iteration)``.
The offline mutator is instantaneous, so offline runs work in synchronous batches (one candidate
per worker) and are deterministic under ``--seed``.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
from evorank.evaluators.program import load_program, split_block

from .config import RunConfig, workers
from .llm import Budget, LLMClient, LLMSettings, parse_models
from .operators import ReplyError, apply_reply
from .prompts import PromptTemplates, build_messages

log = logging.getLogger("evorank")

OBJECTIVE = (
    "Maximise fitness = 0.8 x mean Recall@100 + 0.2 x mean nDCG@10 over the evaluation collections "
    "(macro average; a program that fails on any collection scores 0). {latency}"
)


@dataclass
class Proposal:
    """A candidate on its way from the proposer to the archive."""

    iteration: int
    island: int
    generation: int
    operator: str
    parent: ProgramRecord
    other: ProgramRecord | None = None
    source: str | None = None  # candidate program; None when no candidate could be made
    description: str = ""
    model: str | None = None
    prompt: str | None = None
    response: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    failure_reason: str | None = None
    failure_detail: str | None = None
    messages: list[dict] | None = None  # the chat request (LLM proposals)
    started_at: float = field(default_factory=time.time)


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


class Engine:
    """Runs (or resumes) one evolution job in ``run_dir``. Construct, then call ``run()``."""

    def __init__(self, cfg: RunConfig, run_dir: Path, addresses: list[str], evaluator, resume: bool = False,
                 reporter=None):
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
        if resume:
            self.store = RunStore.open(self.run_dir)
        else:
            self.store = RunStore.create(
                self.run_dir, cfg.to_dict(), cfg.seed, versions=collect_versions(),
                grid=grid_spec(cfg), n_islands=cfg.islands,
            )
        self.templates = PromptTemplates.load(cfg.prompts_dir)
        self.llm: LLMClient | None = None
        spent = float(self.store.summary().get("cost_usd") or 0.0) if resume else 0.0
        self.budget = Budget(cfg.budget_usd, spent)
        if not cfg.offline:
            import os

            models = parse_models(cfg.llm)
            self.llm = LLMClient(
                LLMSettings(
                    models=tuple(models), base_url=cfg.base_url or os.environ.get("OPENAI_BASE_URL"),
                    api_key=os.environ.get(cfg.api_key_env), temperature=cfg.temperature, top_p=cfg.top_p,
                    max_tokens=cfg.max_tokens, timeout_s=cfg.request_timeout_s, max_retries=cfg.max_retries,
                    backoff_base_s=cfg.backoff_base_s, prices=cfg.prices,
                ),
                budget=self.budget,
            )
        self.seed_records: dict[str, ProgramRecord] = {}
        self.seed_sources: dict[str, str] = {}
        self.bm25_latency_ms: float | None = None

    # -- setup ---------------------------------------------------------------------------------
    def _evaluate_seeds(self) -> None:
        """Evaluate every seed in this run; BM25 first, as the latency reference (re-measured on resume)."""
        existing = {p.features.get("seed_name"): p for p in self.store.programs() if p.operator == "seed"}
        names = ["bm25"] + [n for n in self.cfg.seeds if n != "bm25"]
        for name in names:
            source = load_program(name).source
            result = self.evaluator.evaluate_trusted(source)
            if result.suite is None or not result.suite.ok:
                raise RuntimeError(f"seed {name} failed to evaluate: {result.failure_reason}: {result.failure_detail}")
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
    def _choose_operator(self, rng) -> str:
        if self.cfg.offline:
            return "crossover" if rng.random() < self.cfg.operator_mix.get("crossover", 0.15) else "offline"
        kinds = sorted(self.cfg.operator_mix)
        w = np.array([self.cfg.operator_mix[k] for k in kinds], dtype=float)
        return kinds[int(rng.choice(len(kinds), p=w / w.sum()))]

    def _other_parent(self, island: int, parent: ProgramRecord, rng) -> ProgramRecord | None:
        """A crossover partner from another island, else from another cell of this one."""
        pool = [p for i in range(self.cfg.islands) if i != island for p in self.islands.elites(i)]
        pool = [p for p in pool if p.code_hash != parent.code_hash] or [
            p for p in self.islands.elites(island) if p.code_hash != parent.code_hash
        ]
        return pool[int(rng.integers(len(pool)))] if pool else None

    def _new_proposal(self, iteration: int) -> Proposal:
        rng = rng_for(self.cfg.seed, iteration)
        island = iteration % self.cfg.islands
        parent = select_parent(self.islands, island, rng, self.policy)
        operator = self._choose_operator(rng)
        other = self._other_parent(island, parent, rng) if operator == "crossover" else None
        if operator == "crossover" and other is None:
            operator = "offline" if self.cfg.offline else "diff"
        return Proposal(iteration, island, iteration // self.cfg.islands, operator, parent, other)

    def _add_messages(self, prop: Proposal) -> Proposal:
        """Build the prompt in the main thread: it reads the archive, which belongs to this thread."""
        insp = select_inspirations(self.islands, prop.island, prop.parent, rng_for(self.cfg.seed, prop.iteration, 2),
                                   self.policy)
        prop.messages = build_messages(
            self.templates, prop.operator, prop.parent, self.seed_records, self._objective(),
            failures=self._failures_for(prop.parent, prop.island), inspirations=insp, other=prop.other,
            block_of=lambda code: split_block(code).block,
        )
        prop.prompt = prop.messages[-1]["content"]
        return prop

    def _failures_for(self, parent: ProgramRecord, island: int, n: int = 3) -> list[ProgramRecord]:
        rows = self.store.execute(
            "SELECT id FROM programs WHERE status='failed' AND island=? ORDER BY id DESC LIMIT 20", (island,)
        )
        recent = list(self.store.get_many([r[0] for r in rows]).values())
        recent.sort(key=lambda p: (parent.id not in p.parent_ids, -p.id))  # own line first
        return recent[:n]

    def _fill(self, prop: Proposal) -> Proposal:
        """Produce the candidate's code (runs in a worker thread for LLM proposals)."""
        rng = rng_for(self.cfg.seed, prop.iteration, stream=1)
        try:
            if self.llm is None:
                from .offline_crossover import crossover
                from .offline_mutator import mutate

                if prop.operator == "crossover":
                    m = crossover(prop.parent.code, prop.other.code, rng)
                else:
                    m = mutate(prop.parent.code, rng)
                prop.source, prop.description, prop.model = m.source, m.description, "offline"
                return prop
            kind = prop.operator
            completion = self.llm.complete(prop.messages, rng)
            prop.model = completion.model
            prop.prompt_tokens, prop.completion_tokens = completion.prompt_tokens, completion.completion_tokens
            prop.cost_usd = completion.cost_usd
            prop.response = completion.text
            if completion.text is None:
                prop.failure_reason = f"llm:{completion.error}"
                prop.failure_detail = "; ".join(completion.retry_log)[-500:]
                return prop
            prop.source, applied = apply_reply(prop.parent.code, completion.text, "diff" if kind == "diff" else "full",
                                               completion.finish_reason)
            if kind != "crossover":
                prop.operator = applied  # record what the reply really was
        except ReplyError as e:
            prop.failure_reason, prop.failure_detail = e.reason, str(e)
        except Exception as e:  # a proposer bug must cost one proposal, not the run
            log.exception("proposal %d failed", prop.iteration)
            prop.failure_reason, prop.failure_detail = f"proposer:{type(e).__name__}", str(e)[:500]
        return prop

    def _objective(self) -> str:
        extra = ("Programs slower than BM25 are penalised: fitness x (BM25 latency / latency)^0.05."
                 if self.spec.latency_exponent else "Also keep scoring about as fast as BM25; latency is reported.")
        return OBJECTIVE.format(latency=extra)

    # -- evaluating and archiving -------------------------------------------------------------
    def _settle(self, props: list[Proposal]) -> None:
        """Evaluate the proposals that have code, then archive all of them in iteration order."""
        props = sorted(props, key=lambda p: p.iteration)
        to_eval: list[Proposal] = []
        seen: set[str] = set()
        records: dict[int, ProgramRecord] = {}
        descriptions = {p.iteration: p.description for p in props}
        for p in props:
            rec = ProgramRecord(
                code=p.source or p.parent.code, operator=p.operator, island=p.island, generation=p.generation,
                iteration=p.iteration, parent_ids=(p.parent.id,) + ((p.other.id,) if p.other else ()),
                model=p.model, prompt=p.prompt, response=p.response if p.response is not None else p.description,
                prompt_tokens=p.prompt_tokens, completion_tokens=p.completion_tokens, cost_usd=p.cost_usd,
                started_at=p.started_at,
            )
            records[p.iteration] = rec
            if p.source is None:
                rec.status, rec.failure_reason, rec.failure_detail, rec.fitness = "failed", p.failure_reason, p.failure_detail, 0.0
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
    def proposals_done(self) -> int:
        rows = self.store.execute(
            "SELECT COUNT(*), COALESCE(MAX(iteration), 0) FROM programs WHERE iteration > 0 AND operator != 'migration'"
        )
        return int(rows[0][0]), int(rows[0][1])

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
        pool = ThreadPoolExecutor(max_workers=cfg.in_flight, thread_name_prefix="llm") if self.llm else None
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
                    props = [self._fill(self._new_proposal(next_it + i)) for i in range(min(batch, remaining))]
                    next_it += len(props)
                else:
                    while len(inflight) < min(cfg.in_flight, remaining) and not self.budget.exhausted:
                        prop = self._add_messages(self._new_proposal(next_it))
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
        self.store.close()


def install_signal_handlers(engine: Engine):
    """First Ctrl-C / SIGTERM: stop after the current step; a second Ctrl-C: stop now."""
    def handler(signum, frame):
        if engine._stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        engine.request_stop("interrupted" if signum == signal.SIGINT else "terminated")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in old.items()]
