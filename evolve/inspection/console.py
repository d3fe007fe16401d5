"""Terminal output shared by the commands: the rich console, text from a run made safe to print, JSON printing.

Anything a run holds may come from a candidate or a model (code, replies, prompts, failure details, names): it
is printed only through ``shown`` (or ``escape_hidden`` for plain prints), so control characters and invisible
formatting characters appear as escapes (``\\x1b``) instead of acting on the terminal, and rich markup in it is
not interpreted.
"""
from __future__ import annotations

import json
import os
import sys

from evorank.evaluators.program.output import escape_hidden


def console():
    """A rich Console for stdout. Piped output gets a wide fixed width ($COLUMNS, default 160): tables
    are read in logs too, and should not wrap at 80 columns there."""
    from rich.console import Console

    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160))
    return Console(highlight=False, width=width)


def print_error(msg: str) -> None:
    """The one line a command prints on stderr when it stops with an error: ``evorank: error: <msg>``."""
    print(f"evorank: error: {msg}", file=sys.stderr)


def print_json(obj) -> None:
    """Print ``obj`` as indented JSON (values JSON cannot hold are printed as text)."""
    print(json.dumps(obj, indent=2, default=str))


def shown(text) -> str:
    """``text`` for ``console().print`` or a rich table cell: hidden characters escaped, rich markup escaped."""
    from rich.markup import escape

    return escape(escape_hidden(str(text)))
