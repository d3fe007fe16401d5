"""Running an evolution job: the steps of ``evorank run`` as functions, which the command line calls too.

``run_evolution(config)`` does all of it and returns the finished run as a ``Run``; the command line drives the
same ``EvolutionJob`` with its progress line, ``run.log`` and Ctrl-C handling around it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from evorank.evaluators.errors import EvorankError
from evorank.evolve.config import RunConfig, from_dict, load_toml, save_toml, workers

from .run_folder import check_new_run_folder, discard_unstarted_run
from .runs import Run

CONFIG_NAME = "config.toml"


def run_config(config: RunConfig | dict | str | Path | None = None, *, resume: str | Path | None = None,
               source: str | None = None, **settings: Any) -> RunConfig:
    """A checked ``RunConfig`` from defaults < ``config`` (a RunConfig, a dict of its fields, or a TOML file) <
    ``settings``; for ``resume``, from the run's saved configuration < ``settings``. Raises ``ConfigError`` (an
    ``EvorankError``) naming the field that is wrong."""
    from evorank.evolve.llm.prompts import check_directions

    data: dict = {}
    if resume is not None:
        data.update(load_toml(Path(resume) / CONFIG_NAME))
        source = source or str(Path(resume) / CONFIG_NAME)
    elif isinstance(config, RunConfig):
        data.update(config.to_dict())
    elif isinstance(config, dict):
        data.update(config)
    elif config is not None:
        data.update(load_toml(config))
        source = source or str(config)
    data.update({k: v for k, v in settings.items() if v is not None})
    source = source or "settings"
    cfg = from_dict(data, source=source)
    check_directions(cfg, source)
    return cfg


class EvolutionJob:
    """One run from its configuration to its end. Constructing it settles everything that can be refused before
    anything is written (the proposer, the collections, the starting programs, the run folder, a preflight of
    every model and command) and, for a resumed run, takes its writer lock; ``run()`` then loads the collections,
    creates the archive of a new run, and runs the engine. ``notes`` say what was chosen for the user."""

    def __init__(self, cfg: RunConfig, *, resume: str | Path | None = None):
        from evorank.evaluators.data.suites import resolve_collections
        from evorank.evaluators.program.source import program_path
        from evorank.evolve.llm.preflight import preflight

        self.cfg = cfg
        self.resume = resume is not None
        self.notes: list[str] = []
        if cfg.llm == "auto":
            if os.environ.get(cfg.api_key_env) or os.environ.get("OPENAI_BASE_URL") or cfg.base_url:
                cfg.llm = os.environ.get("EVORANK_MODEL", "gpt-4o-mini")
                self.notes.append(f"LLM: {cfg.llm} at "
                                  f"{cfg.base_url or os.environ.get('OPENAI_BASE_URL') or 'api.openai.com'}")
            else:
                cfg.llm = "offline"
                self.notes.append("No OPENAI_API_KEY / OPENAI_BASE_URL set: using the offline mutator (--llm offline). "
                                  "Set them (or pass --llm MODEL --base-url URL) to evolve with an LLM.")
        if cfg.suite is None and not cfg.datasets:
            from evorank.evaluators.availability import collection_availability
            from evorank.evaluators.data.suites import get_suite

            if all(collection_availability(a, counts=False).offline for a in get_suite("dev").collections):
                cfg.suite = "dev"
            else:
                cfg.suite = "demo"
                self.notes.append("No test collections found here, so this runs on the built-in demo collection. For "
                                  "real data: set EVORANK_DATA / IR_DATASETS_HOME and pass --suite dev (see "
                                  "`evorank datasets`).")
        self.addresses = resolve_collections(cfg.suite, cfg.datasets)
        for start in cfg.seeds:  # a missing starting program is reported before anything is created
            program_path(start)
        self.made: Path | None = None  # the folder creating a new run makes (removed if it archives nothing)
        if resume is not None:
            self.run_dir = Path(resume)
            if not (self.run_dir / "archive.sqlite").exists():
                raise EvorankError(f"{self.run_dir} holds no run to resume (no archive.sqlite)")
        else:
            self.run_dir = Path(cfg.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
            self.made = check_new_run_folder(self.run_dir)  # writable, and no run there (one that never ran is none)
            cfg.out = str(self.run_dir)
            cfg.batch = cfg.batch or workers(cfg)  # saved: a resumed run (on any machine) keeps its batches
        self.notes += preflight(cfg)  # can every model and command be used? Before anything is written or locked
        # A refused or failed job must leave the run folder exactly as it was: a resumed run's writer lock is taken
        # before anything else, a new run's archive is created once its collections have loaded, and nothing is
        # written into the folder before that.
        self.store = self._take_store() if self.resume else None

    def _take_store(self):
        """The run's archive opened (or created) for writing, which holds the run's writer lock; a clear error when
        another process holds it."""
        from evorank.archive import StoreLockedError
        from evorank.evolve.engine.loop import open_run_store

        try:
            return open_run_store(self.cfg, self.run_dir, self.resume)
        except StoreLockedError as e:
            raise EvorankError(f"{self.run_dir} is being written by another evorank process (pid {e.holder}); "
                               "nothing was changed. Wait for it to finish or stop it (Ctrl-C in its terminal, or kill "
                               f"its pid), then run `evorank run --resume {self.run_dir}`; `evorank status "
                               f"{self.run_dir}` is safe meanwhile") from None

    def evaluator(self):
        """The sandboxed evaluator of the run's collections (loads them: the slow part of starting)."""
        from evorank.evaluators.cascade import CascadeConfig
        from evorank.evaluators.parallel import Evaluator, Limits

        cfg = self.cfg
        return Evaluator(
            self.addresses, n_workers=workers(cfg),
            limits=Limits(timeout_s=cfg.eval_timeout_s, memory_mb=cfg.eval_memory_mb or None),
            fitness=cfg.fitness, cascade=CascadeConfig(threshold=cfg.cascade_threshold) if cfg.cascade else None,
            seed=cfg.seed, cluster=cfg.cluster or None, shard_queries=cfg.shard_queries or None,
            validation=cfg.validation_fraction,
        )

    def run(self, *, reporter=None, evaluator=None, on_open: Callable[[Path], Callable[[], None]] | None = None,
            on_engine: Callable[[Any], Callable[[], None]] | None = None):
        """Run the engine to its end (or a stop); returns the ``Engine``, still open (its ``store``, ``stats``,
        ``stop_reason``, ``best()``): call ``close()`` on it. ``on_open(run_dir)`` runs once the archive is held and
        the config saved, and returns what undoes it (the command line sets up ``run.log`` there);
        ``on_engine(engine)`` likewise around the engine's run (the command line's Ctrl-C handling)."""
        from evorank.evolve.engine.loop import Engine

        undo_open = None
        try:
            evaluator = evaluator or self.evaluator()
        except BaseException:
            self.close()
            raise
        try:
            if self.store is None:
                discard_unstarted_run(self.run_dir, None)  # an archive left by a run that never archived a program
                self.store = self._take_store()
            save_toml(self.cfg, self.run_dir / CONFIG_NAME)
            undo_open = on_open(self.run_dir) if on_open else None
            engine = Engine(self.cfg, self.run_dir, self.addresses, evaluator, resume=self.resume, reporter=reporter,
                            store=self.store)
        except BaseException:
            evaluator.close()
            self.close()
            if undo_open:
                undo_open()
            self._discard_unstarted(None)
            raise
        undo_engine = None
        try:  # from here the engine owns the archive (engine.close() closes it)
            try:
                undo_engine = on_engine(engine) if on_engine else None
            except BaseException:
                engine.close()
                raise
            try:
                engine.run()
            except KeyboardInterrupt:
                engine.request_stop("interrupted")
        except BaseException:  # the engine failed (its start, say): a new run that archived nothing goes
            if undo_engine:
                undo_engine()
                undo_engine = None
            evaluator.close()
            if undo_open:
                undo_open()
                undo_open = None
            self._discard_unstarted(engine.store)
            raise
        finally:
            if undo_engine:
                undo_engine()
            evaluator.close()
            if undo_open:
                undo_open()
        return engine

    def _discard_unstarted(self, store) -> None:
        """A new run that failed before archiving a program leaves nothing behind (``run_folder``)."""
        if not self.resume:
            discard_unstarted_run(self.run_dir, self.made, store)

    def close(self) -> None:
        """Let go of the archive (and so of the run's writer lock) when the job will not run after all."""
        if self.store is not None:
            self.store.close()
            self.store = None


def write_best_program(store, best, run_dir: Path) -> Path:
    """``best.py`` in the run folder: the best program's code with a docstring saying where it comes from."""
    from evorank.evolve.engine.provenance import program_docstring, with_docstring
    from evorank.evolve.inspection.queries import lineage

    chain = lineage(store, best)
    seed_name = chain[0].features.get("seed_name") if chain and chain[0].operator == "seed" else None
    path = Path(run_dir) / "best.py"
    path.write_text(with_docstring(best.code, program_docstring(best, chain, seed_name, Path(run_dir).resolve().name)),
                    encoding="utf-8")
    return path


def run_evolution(config: RunConfig | dict | str | Path | None = None, *, resume: str | Path | None = None,
                  **settings: Any) -> Run:
    """Run (or, with ``resume=RUN_DIR``, continue) an evolution job in this process, as ``evorank run`` does, and
    return the finished run.

    ``config``: a ``RunConfig``, a dict of its fields, or a TOML file; ``settings`` override single fields
    (``iterations=20, suite="demo", llm="offline", out="runs/x"``). Candidates are evaluated in the sandbox, as in
    ``evorank run``; the run folder gets the archive, ``config.toml`` and ``best.py``. Raises ``EvorankError``
    with what to do when something is refused (unknown collection, a run already in ``out``, a model that cannot
    be reached)."""
    cfg = run_config(config, resume=resume, **settings)
    job = EvolutionJob(cfg, resume=resume)
    engine = job.run()
    try:
        best = engine.best()
        if best is not None:
            write_best_program(engine.store, best, job.run_dir)
    finally:
        engine.close()
    return Run(job.run_dir)
