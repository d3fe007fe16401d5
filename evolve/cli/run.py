"""``evorank run``: resolve the run's configuration, take the run folder, drive the engine, say how it ended.

The parser of ``run`` is in :mod:`.main` (with every other subcommand's); this module is imported only when a run
starts.
"""
from __future__ import annotations

import os
from pathlib import Path

from evorank.evaluators.errors import EvorankError
from evorank.evolve.inspection.console import console as make_console
from evorank.evolve.inspection.console import print_error


RUN_FLAGS = ("seeds", "suite", "datasets", "iterations", "llm", "base_url", "workers", "out", "budget_usd",
             "max_hours", "seed", "fitness", "islands", "in_flight", "prompts_dir", "max_tokens", "inspirations",
             "cluster", "shard_queries", "api_key_env", "request_timeout_s", "eval_timeout_s", "eval_memory_mb",
             "repair_rounds", "repair_style", "directions", "max_consecutive_llm_failures", "command_timeout_s",
             "preflight", "validation_fraction", "heldout")


def resolve_run_config(args):
    """Defaults < --config file < flags; for a resume, the saved config < flags."""
    from evorank.evolve.config import from_dict, load_toml
    from evorank.evolve.llm.prompts import check_directions

    data: dict = {}
    if args.resume:
        data.update(load_toml(Path(args.resume) / "config.toml"))
    elif args.config:
        data.update(load_toml(args.config))
    for name in RUN_FLAGS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in ("seeds", "datasets") and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        data[name] = value
    source = str(args.config or (Path(args.resume) / "config.toml" if args.resume else "flags"))
    cfg = from_dict(data, source=source)
    check_directions(cfg, source)
    return cfg


def cmd_run(args) -> int:
    import time as _time

    from evorank.evolve.config import save_toml, workers
    from .live import setup_logging
    from evorank.evaluators.data.suites import resolve_collections

    console = make_console()
    cfg = resolve_run_config(args)
    notes = []
    if cfg.llm == "auto":
        if os.environ.get(cfg.api_key_env) or os.environ.get("OPENAI_BASE_URL") or cfg.base_url:
            cfg.llm = os.environ.get("EVORANK_MODEL", "gpt-4o-mini")
            notes.append(f"LLM: {cfg.llm} at {cfg.base_url or os.environ.get('OPENAI_BASE_URL') or 'api.openai.com'}")
        else:
            cfg.llm = "offline"
            notes.append("No OPENAI_API_KEY / OPENAI_BASE_URL set: using the offline mutator (--llm offline). "
                         "Set them (or pass --llm MODEL --base-url URL) to evolve with an LLM.")
    if cfg.suite is None and not cfg.datasets:
        from evorank.evaluators.data.suites import get_suite

        from evorank.evaluators.availability import collection_availability

        if all(collection_availability(a, counts=False).offline for a in get_suite("dev").collections):
            cfg.suite = "dev"
        else:
            cfg.suite = "demo"
            notes.append("No test collections found here, so this runs on the built-in demo collection. For real data: "
                         "set EVORANK_DATA / IR_DATASETS_HOME and pass --suite dev (see `evorank datasets`).")
    addresses = resolve_collections(cfg.suite, cfg.datasets)
    from evorank.evaluators.program.source import program_path

    for start in cfg.seeds:  # a missing starting program is reported before anything is created
        program_path(start)
    run_dir = Path(args.resume or cfg.out or Path("runs") / _time.strftime("%Y%m%d-%H%M%S"))
    if not args.resume:
        if (run_dir / "archive.sqlite").exists():
            raise EvorankError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
        cfg.out = str(run_dir)
    elif not (run_dir / "archive.sqlite").exists():
        raise EvorankError(f"{run_dir} holds no run to resume (no archive.sqlite)")
    from evorank.evolve.llm.preflight import preflight

    notes += preflight(cfg)  # can every model and command be used? Before anything is written or locked
    # A refused or failed command must leave the run folder exactly as it was: a resumed run's writer lock is
    # taken before anything else, a new run's archive is created once its collections have loaded, and nothing
    # is written into the folder before that.
    store = _take_run(cfg, run_dir, resume=True) if args.resume else None
    for n in notes:
        console.print(f"[yellow]note[/] {n}")
    console.print(f"run: {run_dir}  suite: {cfg.suite or '-'} ({len(addresses)} collections)  "
                  f"iterations: {cfg.iterations}  proposer: {cfg.llm}  workers: {workers(cfg)}  seed: {cfg.seed}")

    from evorank.evaluators.cascade import CascadeConfig
    from evorank.evaluators.parallel import Evaluator, Limits

    evaluator = Evaluator(
        addresses, n_workers=workers(cfg),
        limits=Limits(timeout_s=cfg.eval_timeout_s, memory_mb=cfg.eval_memory_mb or None),
        fitness=cfg.fitness, cascade=CascadeConfig(threshold=cfg.cascade_threshold) if cfg.cascade else None,
        seed=cfg.seed, cluster=cfg.cluster or None, shard_queries=cfg.shard_queries or None,
        validation=cfg.validation_fraction,
    )
    try:
        if store is None:
            store = _take_run(cfg, run_dir, resume=False)
        save_toml(cfg, run_dir / "config.toml")
        restore_logging = setup_logging(run_dir, verbose=args.verbose)
    except BaseException:
        evaluator.close()
        raise
    try:
        engine = _run_engine(args, cfg, run_dir, addresses, evaluator, store, console)
    finally:
        restore_logging()
    if engine.stop_reason == "llm_unavailable":
        print_error(f"the run stopped after {engine.unavailable_in_row} attempts in a row reached no model: "
             f"{engine.unavailable_reason}; fix that, then continue with `evorank run --resume {run_dir}`")
    return 0 if engine.stop_reason in ("completed", "interrupted", "terminated", "budget", "max_hours") else 1


def _run_engine(args, cfg, run_dir: Path, addresses, evaluator, store, console):
    """Runs the engine to its end (or Ctrl-C/SIGTERM) and prints the summary; the evaluator is closed either way."""
    from evorank.evolve.config import workers
    from evorank.evolve.engine.loop import Engine, install_signal_handlers, requests_in_flight
    from .live import Reporter

    if cfg.cluster:
        console.print(f"cluster: {cfg.cluster} ({evaluator.n_workers} worker threads)")
        if not cfg.workers and evaluator.n_workers > workers(cfg):
            console.print(f"[yellow]note[/] candidates are proposed {workers(cfg)} at a time (--workers defaults to "
                          f"this machine's cores); pass --workers {evaluator.n_workers} (or --in-flight with an LLM) "
                          "to keep the cluster busy")
    reporter = Reporter(console, enabled=not args.quiet)
    engine = Engine(cfg, run_dir, addresses, evaluator, resume=bool(args.resume), reporter=reporter, store=store)
    restore = install_signal_handlers(engine)
    try:
        best = engine.run()
    except KeyboardInterrupt:
        engine.request_stop("interrupted")
        best = engine.best()
    finally:
        restore()
        evaluator.close()
    print_run_summary(console, engine, best, run_dir)
    engine.close()
    pending = requests_in_flight()
    if pending:
        console.print(f"[yellow]note[/] waiting for {pending} model request(s) still in flight to return (up to "
                      "--request-timeout); their replies are discarded and nothing else is left to save: press "
                      "Ctrl-C again to quit now")
    return engine


def _take_run(cfg, run_dir: Path, resume: bool):
    """The run's archive opened (or created) for writing, which holds the run's writer lock; a clear error when
    another process holds it."""
    from evorank.archive import StoreLockedError
    from evorank.evolve.engine.loop import open_run_store

    try:
        return open_run_store(cfg, run_dir, resume)
    except StoreLockedError as e:
        raise EvorankError(f"{run_dir} is being written by another evorank process (pid {e.holder}); nothing was "
                           "changed. Wait for it to finish or stop it (Ctrl-C in its terminal, or kill its pid), then "
                           f"run `evorank run --resume {run_dir}`; `evorank status {run_dir}` is safe meanwhile") from None


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
    from evorank.evolve.inspection.queries import lineage
    from evorank.evolve.engine.provenance import program_docstring, with_docstring

    chain = lineage(engine.store, best)
    seed_name = chain[0].features.get("seed_name") if chain and chain[0].operator == "seed" else None
    best_path = run_dir / "best.py"
    best_path.write_text(with_docstring(best.code, program_docstring(best, chain, seed_name, run_dir.resolve().name)),
                         encoding="utf-8")
    console.print(f"\nbest program written to {best_path} (evolved code: run it through evorank only)\nnext:\n"
                  f"  evorank eval {run_dir}:best --suite heldout   # does it transfer to unseen collections? (sandboxed)\n"
                  f"  evorank top {run_dir}  /  evorank show {run_dir} best  /  evorank lineage {run_dir} best\n"
                  f"  evorank report {run_dir} -o report.html      # plots, grids, lineage diffs, transfer table\n"
                  f"  evorank export {run_dir} best -o my_scorer.py  # a standalone scorer, written once it is verified\n"
                  f"  {resume}\n"
                  f"  log: {run_dir / 'run.log'}   archive: {run_dir / 'archive.sqlite'}")


# -- entry point -----------------------------------------------------------------------------------
