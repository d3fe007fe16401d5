"""``evorank run``: resolve the run's configuration, then drive the ``EvolutionJob`` of the Python API
(``evorank.run_evolution`` runs the same one) with the progress line, ``run.log`` and Ctrl-C around it, and say how
it ended.

The parser of ``run`` is in :mod:`.main` (with every other subcommand's); this module is imported only when a run
starts.
"""
from __future__ import annotations

from pathlib import Path

from evorank.evolve.inspection.console import console as make_console
from evorank.evolve.inspection.console import print_error


RUN_FLAGS = ("seeds", "suite", "datasets", "iterations", "llm", "base_url", "workers", "out", "budget_usd",
             "max_hours", "seed", "fitness", "islands", "in_flight", "prompts_dir", "max_tokens", "inspirations",
             "cluster", "shard_queries", "api_key_env", "request_timeout_s", "eval_timeout_s", "eval_memory_mb",
             "repair_rounds", "repair_style", "directions", "max_consecutive_llm_failures", "command_timeout_s",
             "preflight", "validation_fraction", "heldout", "batch", "prune_best",
             "fuse_best")


def resolve_run_config(args):
    """Defaults < --config file < flags; for a resume, the saved config < flags (``evorank.run_config``)."""
    from evorank.evolve.api.evolution import run_config

    flags: dict = {}
    for name in RUN_FLAGS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in ("seeds", "datasets") and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        flags[name] = value
    if args.resume:
        return run_config(resume=args.resume, **flags)
    return run_config(args.config, source=str(args.config or "flags"), **flags)


def cmd_run(args) -> int:
    """``evorank run``: the ``EvolutionJob`` that ``evorank.run_evolution`` runs, with the progress line, ``run.log``,
    Ctrl-C handling and the closing summary around it."""
    from evorank.evolve.api.evolution import EvolutionJob
    from evorank.evolve.config import workers
    from evorank.evolve.engine.loop import install_signal_handlers, requests_in_flight
    from .main import quit_at_next_interrupt
    from .live import Reporter, setup_logging

    console = make_console()
    cfg = resolve_run_config(args)
    job = EvolutionJob(cfg, resume=args.resume)
    for n in job.notes:
        console.print(f"[yellow]note[/] {n}")
    console.print(f"run: {job.run_dir}  suite: {cfg.suite or '-'} ({len(job.addresses)} collections)  "
                  f"iterations: {cfg.iterations}  proposer: {cfg.llm}  workers: {workers(cfg)}  seed: {cfg.seed}")
    try:
        evaluator = job.evaluator()
    except BaseException:
        job.close()
        raise
    if cfg.cluster:
        console.print(f"cluster: {cfg.cluster} ({evaluator.n_workers} worker threads)")
        if not cfg.workers and evaluator.n_workers > workers(cfg):
            console.print(f"[yellow]note[/] candidates are proposed {workers(cfg)} at a time (--workers defaults to "
                          f"this machine's cores); pass --workers {evaluator.n_workers} (or --in-flight with an LLM) "
                          "to keep the cluster busy")
    signals = []

    def on_engine(engine):  # Ctrl-C and SIGTERM during the run; after it, held (not restored) until the summary is out
        signals.append(install_signal_handlers(engine))
        return signals[-1].hold

    try:
        engine = job.run(reporter=Reporter(console, enabled=not args.quiet), evaluator=evaluator,
                         on_open=lambda run_dir: setup_logging(run_dir, verbose=args.verbose), on_engine=on_engine)
        try:
            print_run_summary(console, engine, engine.best(), job.run_dir)
        finally:
            engine.close()
    finally:
        for restore in signals:
            restore()
    pending = requests_in_flight()
    if pending:
        console.print(f"[yellow]note[/] waiting for {pending} model request(s) still in flight to return (up to "
                      "--request-timeout); their replies are discarded and nothing else is left to save: press "
                      "Ctrl-C again to quit now")
        quit_at_next_interrupt(EXIT_CODES["interrupted"])
    if engine.stop_reason == "llm_unavailable":
        print_error(f"the run stopped after {engine.unavailable_in_row} attempts in a row reached no model: "
                    f"{engine.unavailable_reason}; fix that, then continue with `evorank run --resume {job.run_dir}`")
    return EXIT_CODES.get(engine.stop_reason, 1)


# `evorank run`'s exit status by stop reason: stopped by a signal, the shell's 128 + SIGINT / SIGTERM; else 1.
EXIT_CODES = {"completed": 0, "budget": 0, "max_hours": 0, "interrupted": 130, "terminated": 143}


def resume_hint(run_dir: Path, done: int, total: int, stop_reason: str | None, budget_usd: float | None) -> str:
    """The command that continues a run, as printed at its end. ``--iterations`` is the total for the whole
    run: ``--resume DIR`` alone continues to the saved total, ``--iterations N`` raises it to N."""
    if stop_reason == "budget" and budget_usd:
        return (f"evorank run --resume {run_dir} --budget-usd {budget_usd * 2:g}   "
                f"# the ${budget_usd:g} budget is spent: raise it to continue")
    if done < total:
        return f"evorank run --resume {run_dir}   # continue to the run's total ({total - done} of {total} proposals left)"
    return f"evorank run --resume {run_dir} --iterations {total * 2}   # to go further: raise the total to {total * 2}"


def print_run_summary(console, engine, best, run_dir: Path) -> None:
    from rich.table import Table

    from evorank.evaluators.metrics import METRICS

    done, _ = engine.store.proposal_progress()
    total = engine.cfg.iterations
    s = engine.stats
    repairs = f", {s.repairs} of them repairs" if s.repairs else ""
    lost = f"; {s.unavailable} attempts reached no model and were not counted" if s.unavailable else ""
    console.print(f"\n[bold]run {engine.stop_reason}[/]: {done}/{total} proposals "
                  f"(this session: {s.accepted} accepted, {s.failed} failed, {s.duplicate} duplicate, "
                  f"{s.rejected} cut by the cascade{repairs}; {s.prompt_tokens + s.completion_tokens:,} tokens, "
                  f"${s.cost_usd:.4f}{lost})")
    resume = resume_hint(run_dir, done, total, engine.stop_reason, engine.cfg.budget_usd)
    if best is None:
        console.print(f"next:\n  {resume}")
        return
    seeds = engine.seed_records
    table = Table(title=f"best program #{best.id} (fitness {best.fitness:.4f}, latency "
                        f"{best.latency_ratio or float('nan'):.2f}x BM25, {best.operator})", title_justify="left")
    table.add_column("collection")
    for m in METRICS:
        table.add_column(m, justify="right")
    for name in seeds:
        table.add_column(f"{name} nDCG@10/R@100", justify="right")
    for coll, m in sorted(best.metrics.items()):
        row = [coll] + [f"{m.get(k, float('nan')):.4f}" for k in METRICS]
        for seed in seeds.values():
            sm = seed.metrics.get(coll, {})
            row.append(f"{sm.get('ndcg@10', float('nan')):.4f} / {sm.get('recall@100', float('nan')):.4f}")
        table.add_row(*row)
    console.print(table)
    for name, seed in seeds.items():
        gain = (best.fitness / seed.fitness - 1) * 100 if seed.fitness else float("nan")
        console.print(f"  vs {name}: fitness {seed.fitness:.4f} -> {best.fitness:.4f} ({gain:+.2f}%)")
    from evorank.evolve.api.evolution import write_best_program

    best_path = write_best_program(engine.store, best, run_dir)
    from .live import transfer_hint

    console.print(f"\nbest program written to {best_path} (evolved code: run it through evorank only)\nnext:\n"
                  f"  {transfer_hint(run_dir)}\n"
                  f"  evorank top {run_dir}  /  evorank show {run_dir} best  /  evorank lineage {run_dir} best\n"
                  f"  evorank report {run_dir} -o report.html      # plots, grids, lineage diffs, transfer table\n"
                  f"  evorank export {run_dir} best -o my_scorer.py  # a standalone scorer, written once it is verified\n"
                  f"  {resume}\n"
                  f"  log: {run_dir / 'run.log'}   archive: {run_dir / 'archive.sqlite'}")


# -- entry point -----------------------------------------------------------------------------------
