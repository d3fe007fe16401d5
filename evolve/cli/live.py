"""What a running job shows: a live progress line on a terminal, a log file always, and (for the closing summary)
which transfer check this machine can run.

Log messages quote candidate text now and then (a failure reason, a proposal's description, an exception from
a proposer): ``SafeFormatter`` writes control characters and invisible formatting characters as escapes and
indents every line after a message's first, so nothing a candidate wrote acts on the terminal or poses as a log
entry of its own.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from evorank.evaluators.program.output import escape_hidden
from evorank.evolve.inspection.console import shown

log = logging.getLogger("evorank")


class SafeFormatter(logging.Formatter):
    """A formatter whose messages show hidden characters as escapes and cannot start a line of their own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape_hidden(message).replace("\n", "\n    ")
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def formatException(self, ei) -> str:
        return escape_hidden(super().formatException(ei))


def setup_logging(run_dir: Path, verbose: bool = False):
    """Everything goes to ``<run>/run.log``; warnings (or everything with -v) to stderr too. Returns the function
    that puts the ``evorank`` logger back as it was (closing the log file), so that a run made in-process (tests,
    notebooks) leaves no handler behind on a stream that may be closed by then."""
    before = (log.level, list(log.handlers), log.propagate)
    log.setLevel(logging.INFO)
    log.handlers.clear()
    fh = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    fh.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    sh = logging.StreamHandler(sys.stderr)
    sh.setLevel(logging.INFO if verbose else logging.WARNING)
    sh.setFormatter(SafeFormatter("%(levelname)s %(message)s"))
    log.addHandler(sh)
    log.propagate = False

    def restore() -> None:
        for h in (fh, sh):
            log.removeHandler(h)
        fh.close()
        level, handlers, propagate = before
        log.setLevel(level)
        for h in handlers:
            log.addHandler(h)
        log.propagate = propagate

    return restore


class Reporter:
    """Rich progress bar: iteration, best fitness and gain over the seed, outcomes, tokens, cost, ETA."""

    def __init__(self, console, enabled: bool = True):
        self.console = console
        self.enabled = enabled
        self.progress = None
        self.task = None
        self.t0 = time.monotonic()

    def start(self, engine, done: int) -> None:
        self.baseline = max((r.fitness or 0.0) for r in engine.seed_records.values())
        self.baseline_name = max(engine.seed_records, key=lambda n: engine.seed_records[n].fitness or 0.0)
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]evolving[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.description}"),
            console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self._describe(engine), total=engine.cfg.iterations, completed=done)

    def _describe(self, engine) -> str:
        best = engine.best()
        s = engine.stats
        fit = best.fitness if best and best.fitness is not None else 0.0
        gain = (fit / self.baseline - 1) * 100 if self.baseline else 0.0
        money = f" ${s.cost_usd:.3f}" if s.cost_usd else ""
        tokens = s.prompt_tokens + s.completion_tokens
        tok = f" tok {tokens / 1000:.1f}k" if tokens else ""
        return (f"best {fit:.4f} ({gain:+.2f}% vs {shown(self.baseline_name)}) | ok {s.accepted} fail {s.failed} "
                f"dup {s.duplicate} cut {s.rejected}{tok}{money}")

    def update(self, engine, rec) -> None:
        if self.progress is not None and rec.operator not in ("seed", "migration"):
            self.progress.update(self.task, advance=1, description=self._describe(engine))

    def finish(self, engine) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=self._describe(engine))
            self.progress.stop()
            self.progress = None


def transfer_hint(run_dir: Path, suite: str = "heldout") -> str:
    """The closing hint that measures transfer, suggested only as far as this machine can run it: the held-out suite
    when all of it is here, the part of it that is here otherwise, and where to see what is missing when none is."""
    from evorank.evaluators.availability import split_available
    from evorank.evaluators.data.suites import get_suite

    addresses = list(get_suite(suite).collections)
    here, _ = split_available(addresses)
    if len(here) == len(addresses):
        return f"evorank eval {run_dir}:best --suite {suite}   # does it transfer to unseen collections? (sandboxed)"
    if here:
        return (f"evorank eval {run_dir}:best --datasets {','.join(here)}   # transfer to the held-out collections "
                f"that are here (sandboxed; {len(addresses) - len(here)} of the {suite} suite are not: see `evorank "
                "datasets`)")
    return (f"evorank datasets   # to measure transfer, the {suite} suite's collections are needed, and none is on "
            "this machine")
