"""Command proposers: an external program of the user's (a coding agent's CLI such as aider, Claude Code,
Codex or Gemini CLI, or any prompt-in/text-out tool such as ``llm`` or ``ollama run``) writes the candidate.

For each proposal the command runs once in a fresh temporary folder holding ``program.py`` (a copy of the
parent program) and ``prompt.md`` (the prompt, also given on standard input). ``{file}`` and
``{prompt_file}`` in the command line are replaced by those two paths (shell-quoted); the command line runs
through ``/bin/sh -c`` in that folder, in the user's own environment plus ``EVORANK_FILE`` and
``EVORANK_PROMPT_FILE``, under a time limit (its whole process group is killed at the limit). The edited
``program.py`` is the candidate; a command that leaves the file unchanged may print its change instead
(SEARCH/REPLACE blocks or a code block), which is applied like a chat model's reply.

The command runs with the user's own rights, outside evorank's sandbox: it is the user's tool, trusted like any
program they start. Only the candidate it produces is untrusted: it goes through the same static checks and
sandbox as every other candidate. What the command prints is stored (its tail, control characters replaced) as
the proposal's response, like a chat model's reply, and appears in failure details only fenced.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evorank.evaluators.errors import ProgramError
from evorank.evaluators.program.checks import DEFAULT_MAX_SOURCE_BYTES
from evorank.evaluators.program.source import split_block
from evorank.evaluators.program.output import fence

from .replies import ReplyError, apply_reply
from .prompts import PromptTemplates, build_messages, repair_message, request_digest
from evorank.evolve.proposal import COMMAND, ArchiveView, Proposal, repair_of

PROGRAM_FILE = "program.py"
PROMPT_FILE = "prompt.md"
RESPONSE_LIMIT = 20_000  # characters of the command's output kept as the proposal's response
PROGRAM_READ_CHARS = 2 * DEFAULT_MAX_SOURCE_BYTES  # characters of the edited file read as the candidate
_SHELL_WORDS = {"exec", "env", "command", "nice", "nohup", "time", "timeout", "(", "{", "!"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class CommandSpec:
    """One command proposer: ``name`` labels its proposals (recorded as model ``cmd:NAME``), ``command`` is the
    shell command line (with ``{file}`` / ``{prompt_file}`` placeholders), ``weight`` its share of an ensemble."""

    name: str
    command: str
    weight: float = 1.0

    @property
    def label(self) -> str:
        return f"cmd:{self.name}"


@dataclass
class CommandRun:
    """What one run of a command left behind."""

    code: str | None  # program.py afterwards (None when the command deleted it)
    output: str  # standard output and error, interleaved
    returncode: int | None  # None when it was killed at the time limit or could not start
    timed_out: bool = False
    not_started: str | None = None  # why the shell could not be started at all
    seconds: float = 0.0


def program_of(command: str) -> str | None:
    """The program a command line starts (after ``VAR=value`` assignments), or None when that cannot be told."""
    try:
        words = [w for w in shlex.split(command) if not _ASSIGNMENT.match(w)]
    except ValueError:
        return None
    return words[0] if words else None


def check_command(spec: CommandSpec) -> str | None:
    """None when the command's program can be found, else one line saying what is wrong and how to fix it."""
    try:
        shlex.split(spec.command)
    except ValueError as e:
        return f"the command of {spec.label} cannot be parsed ({e}): check its quotes"
    prog = program_of(spec.command)
    if prog is None:
        return f"{spec.label} has an empty command line"
    if prog in _SHELL_WORDS or "{" in prog:
        return None  # a shell construct: nothing to look up
    if "/" in prog:
        found = os.path.isfile(prog) and os.access(prog, os.X_OK)
    else:
        found = shutil.which(prog) is not None
    if not found:
        return (f"the program '{prog}' of {spec.label} was not found ({'no executable file there' if '/' in prog else 'not on PATH'}): "
                "install it, or give its full path in the command")
    return None


def run_command(command: str, code: str, prompt: str, timeout_s: float) -> CommandRun:
    """Run ``command`` on a temporary copy of ``code`` with ``prompt`` on standard input and in a file."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="evorank-cmd-") as tmp:
        program, prompt_path = Path(tmp) / PROGRAM_FILE, Path(tmp) / PROMPT_FILE
        program.write_text(code, encoding="utf-8")
        prompt_path.write_text(prompt, encoding="utf-8")
        line = command.replace("{file}", shlex.quote(str(program))).replace("{prompt_file}", shlex.quote(str(prompt_path)))
        env = dict(os.environ, EVORANK_FILE=str(program), EVORANK_PROMPT_FILE=str(prompt_path))
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", line], cwd=tmp, env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            return CommandRun(None, "", None, not_started=str(e), seconds=time.monotonic() - t0)
        timed_out = False
        try:
            out, _ = proc.communicate(prompt.encode("utf-8"), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, _ = proc.communicate()
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        edited = _read_program(program)
        return CommandRun(edited, out.decode("utf-8", errors="replace"), None if timed_out else proc.returncode,
                          timed_out=timed_out, seconds=time.monotonic() - t0)


def _read_program(path: Path) -> str | None:
    """The program the command left, at most ``PROGRAM_READ_CHARS`` characters of it (a longer one is refused by
    the static checks as too large all the same), or None when there is none."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(PROGRAM_READ_CHARS)


def _printable_tail(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text`` with control characters (terminal escapes) replaced by '?'; code
    fences are kept (it is the proposal's raw response, as ``evorank show --response`` prints it), unlike
    :func:`evorank.evaluators.program.output.clean`, which makes failure texts for prompts."""
    text = "".join(ch if ch in "\n\t" or ch.isprintable() else "?" for ch in text[-limit:])
    return text.strip()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class CommandProposer:
    """An external command writes each candidate (see the module docstring). Operator ``command``; a repair runs
    the command again on the failed version with the failure added to the prompt."""

    instantaneous = False

    def __init__(self, spec: CommandSpec, templates: PromptTemplates, objective: str, timeout_s: float,
                 concurrency: int):
        self.spec = spec
        self.templates = templates
        self.objective = objective
        self.timeout_s = timeout_s
        self.concurrency = concurrency

    def choose_operator(self, rng: np.random.Generator, has_partner: bool) -> str:
        return COMMAND

    def prepare(self, prop: Proposal, view: ArchiveView) -> None:
        """The prompt: the chat prompt's sections with instructions to edit the file (``prop.prompt``)."""
        prop.operator, prop.other, prop.model = COMMAND, None, self.spec.label
        messages = build_messages(
            self.templates, COMMAND, prop.parent, view.seed_records, self.objective,
            failures=view.recent_failures(prop), inspirations=view.inspirations(prop),
            block_of=lambda code: split_block(code).block,
        )
        prop.prompt = "\n\n".join(m["content"] for m in messages)
        prop.messages = [{"role": "user", "content": prop.prompt}]  # the first prompt, which repairs extend
        prop.sent = (("first", request_digest(prop.messages)),)

    def fill(self, prop: Proposal, rng: np.random.Generator) -> None:
        name, parent_code = self.spec.label, prop.parent.code
        run = run_command(self.spec.command, parent_code, prop.prompt, self.timeout_s)
        prop.model = name
        prop.response = _printable_tail(run.output, RESPONSE_LIMIT)
        prop.description = f"{name} ran for {run.seconds:.0f} s"
        shown = fence(run.output, 400, "last output of the command (untrusted text)")
        if run.not_started is not None or run.returncode in (126, 127):
            prop.unavailable = (f"{name} could not be started ({run.not_started or f'the shell exited with status {run.returncode}: command not found or not executable'})"
                                ": check the command line given to --llm")
            prop.failure_reason, prop.failure_detail = "command:not_started", prop.unavailable
            return
        if run.timed_out:
            prop.failure_reason = "command:timeout"
            prop.failure_detail = "\n".join(filter(None, [f"{name} did not finish within {self.timeout_s:g} s "
                                                          "(raise --command-timeout)", shown]))
            return
        if run.returncode != 0:
            prop.failure_reason = "command:exit"
            prop.failure_detail = "\n".join(filter(None, [f"{name} exited with status {run.returncode}", shown]))
            return
        if run.code is not None and run.code != parent_code:
            prop.source = run.code
            return
        try:  # the file is unchanged: perhaps the command printed its change
            prop.source, _ = apply_reply(parent_code, run.output, "diff")
        except (ReplyError, ProgramError) as e:
            if e.reason == "no_code":
                prop.failure_reason = "no_change"
                prop.failure_detail = (f"{name} left {PROGRAM_FILE} unchanged and printed no SEARCH/REPLACE block "
                                       "or code block")
            else:
                prop.failure_reason, prop.failure_detail = e.reason, str(e)

    def follow_up(self, prop: Proposal, failed) -> Proposal | None:
        """Run the command again on the failed version, the first prompt followed by what went wrong with this
        proposal (its own failure; for a change that ran exactly as its start, why that changes nothing); None when
        that prompt is one its chain sent before (a command given the same prompt tends to do the same)."""
        if not prop.messages:
            return None
        try:
            block = split_block(failed.code).block
        except ProgramError:  # the command removed the markers: show the whole file
            block = failed.code
        ask = repair_message(self.templates, failed, block)
        prompt = (f"{prop.messages[0]['content']}\n\n# Your previous attempt\n{ask}\n\n"
                  f"The file {PROGRAM_FILE} holds that version now: fix it there.")
        digest = request_digest([{"role": "user", "content": prompt}])
        if any(d == digest for _, d in prop.sent):
            return None
        return repair_of(prop, failed, prompt=prompt, messages=prop.messages, model=self.spec.label,
                         sent=(*prop.sent, ("command", digest)))

    def close(self) -> None:
        pass  # every run ends before fill returns
