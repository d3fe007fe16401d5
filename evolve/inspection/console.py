"""Terminal output shared by the commands: the rich console and JSON printing."""
from __future__ import annotations

import json
import os
import sys


def console():
    """A rich Console for stdout. Piped output gets a wide fixed width ($COLUMNS, default 160): tables
    are read in logs too, and should not wrap at 80 columns there."""
    from rich.console import Console

    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160))
    return Console(highlight=False, width=width)


def print_json(obj) -> None:
    """Print ``obj`` as indented JSON (values JSON cannot hold are printed as text)."""
    print(json.dumps(obj, indent=2, default=str))
