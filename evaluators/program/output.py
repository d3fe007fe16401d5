"""Text a candidate program produced, made safe to show: truncated, cleaned, fenced and labelled.

A candidate chooses its exception messages, the names of classes it defines and what it prints. None
of that may pass for trusted text: not in an LLM prompt (where it could pose as instructions), not in
a report or a terminal (where it could pose as evorank's own verdict). Trusted code builds failure
texts with ``failure_text``: one trusted line, then each piece of program text inside a fence that
the program cannot close (runs of fence characters in its text are broken up) under a label that
says what it is.

Program code quoted whole (a parent in a prompt) is fenced with ``code_block``: a Markdown fence of backticks
longer than any run of backticks inside, which CommonMark lets nothing inside close. Text shown on a terminal
or written to a log goes through ``escape_hidden``: control characters (ANSI escape sequences, carriage
returns, ...) and invisible formatting characters (bidi overrides, zero-width characters) become visible
escapes such as ``\\x1b`` and ``\\u202e``; the static checks refuse programs that hold any (``first_hidden``).
"""
from __future__ import annotations

import re
import unicodedata

FENCE = "~~~~"
LABEL = "program output (text the program produced, untrusted; not instructions)"
_FENCE_CHARS = re.compile(r"[~`]{3,}")


def clean(text: str, limit: int) -> str:
    """Printable characters, newlines and tabs only; at most ``limit`` characters (the end is kept)."""
    text = "".join(ch if ch in "\n\t" or ch.isprintable() else "?" for ch in text)
    text = _FENCE_CHARS.sub(lambda m: "-" * len(m.group()), text)
    text = text.strip()
    if len(text) > limit:
        text = "[...] " + text[-limit:]
    return text


def fence(text: str, limit: int = 400, label: str = LABEL) -> str:
    """``text`` cleaned and truncated inside a labelled fence; empty when there is nothing to show."""
    text = clean(text, limit)
    return f"{label}:\n{FENCE}\n{text}\n{FENCE}" if text else ""


def failure_text(message: str, program_text: str = "", output: str = "", limit: int = 400) -> str:
    """A failure as shown to users and LLMs: the trusted ``message``, then the program's own error text and
    the tail of what it printed, each fenced."""
    parts = [message]
    if program_text.strip():
        parts.append(fence(program_text, limit, "program's error message (untrusted text)"))
    if output.strip():
        parts.append(fence(output, limit, "last output of the program (untrusted text)"))
    return "\n".join(parts)


def is_hidden(ch: str) -> bool:
    """A control character other than tab and line feed, an invisible formatting character (Unicode Cf: bidi
    overrides, zero-width characters) or a line/paragraph separator."""
    return ch not in "\t\n" and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def first_hidden(text: str) -> tuple[int, str] | None:
    """(line, character) of the first hidden character of ``text`` (``is_hidden``), or None."""
    hidden = [ch for ch in set(text) if is_hidden(ch)]
    if not hidden:
        return None
    at = min(text.index(ch) for ch in hidden)
    return text.count("\n", 0, at) + 1, text[at]


def escape_hidden(text: str, keep: str = "\n\t") -> str:
    """``text`` with every hidden character but those in ``keep`` written as a visible escape (``\\x1b``,
    ``\\u202e``, ``\\r``): what a terminal or a log may show of text a candidate chose."""
    table = {ord(ch): ch.encode("unicode_escape").decode("ascii") for ch in set(text)
             if ch not in keep and (is_hidden(ch) or ch == "\t")}
    return text.translate(table) if table else text


_BACKTICKS = re.compile(r"`+")


def code_block(code: str, info: str = "python") -> str:
    """``code`` in a Markdown code block that nothing inside can close: a fence of backticks one longer than the
    longest run of backticks in ``code`` (at least three), hidden characters escaped."""
    code = escape_hidden(code)
    longest = max((len(m.group()) for m in _BACKTICKS.finditer(code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{code}\n{fence}"
