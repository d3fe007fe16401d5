"""The start-up check of ``evorank run``: can every member of ``--llm`` be used, before anything is written?

For each chat model, one request for a single token (no retries; 429 counts as reachable, server errors are
asked twice more); for each ``cmd:`` command, a look-up of its program. A failure raises
:class:`LLMUnavailableError` with one line that names the URL (or command), the cause and the fix; the CLI
prints it without a traceback and exits non-zero, and since the check runs before the run folder is created
or locked, nothing is written. ``--no-preflight`` (``preflight = false``) skips it.
"""
from __future__ import annotations

import time

from evorank.evaluators.errors import EvorankError

from .commands import check_command
from evorank.evolve.config import RunConfig
from .ensemble import chat_settings, parse_llm_spec
from .client import LLMClient

TIMEOUT_S = 60.0  # at most this long for one check (less when --request-timeout is lower)
SERVER_ERROR_TRIES = 3
NOTHING_WRITTEN = "nothing was written (--no-preflight skips this check)"


class LLMUnavailableError(EvorankError):
    """A model or command of the run cannot be used; the message says where, why and how to fix it."""


def preflight(cfg: RunConfig, sleep=time.sleep) -> list[str]:
    """Check every member of ``cfg.llm``; raises LLMUnavailableError for the first that cannot be used. Returns
    one line per member that answered, for the start-up notes."""
    if cfg.offline or not cfg.preflight:
        return []
    models, commands = parse_llm_spec(cfg.llm, cfg.commands)
    notes = []
    for spec in commands:
        problem = check_command(spec)
        if problem:
            raise LLMUnavailableError(f"{problem}; {NOTHING_WRITTEN}")
    if not models:
        return notes
    settings = chat_settings(cfg, models)
    if not settings.base_url and not settings.api_key:
        env = settings.api_key_env
        raise LLMUnavailableError(
            f"no API key for https://api.openai.com/v1: ${env} is not set; export {env}=<key> (or name another "
            "variable with --api-key-env VAR), or point --base-url at a server that needs no key, e.g. a local one; "
            f"{NOTHING_WRITTEN}")
    client = LLMClient(settings)
    timeout = min(settings.timeout_s, TIMEOUT_S)
    for spec in models:
        for attempt in range(SERVER_ERROR_TRIES):
            out = client.probe(spec.name, timeout)
            if out.text is not None or out.error == "http_429":
                notes.append(f"{spec.name} at {client.url} answered in {out.latency_s:.1f} s")
                break
            if not (out.error or "").startswith("http_5") or attempt == SERVER_ERROR_TRIES - 1:
                line = client.explain(out, timeout)
                if out.error == "http_404":
                    listed = client.model_ids(timeout)
                    if listed:
                        line += f" (it lists: {', '.join(listed[:10])}{', ...' if len(listed) > 10 else ''})"
                raise LLMUnavailableError(f"{line}; {NOTHING_WRITTEN}")
            sleep(2.0)
    return notes
