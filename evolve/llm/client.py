"""LLM client for any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...).

One ``LLMClient`` serves a weighted ensemble of models. Retries are ours, not the SDK's, so that
every attempt is counted and ``Retry-After`` is honoured exactly: 429, 5xx, time-outs and
connection errors are retried with exponential backoff and full jitter; other 4xx are final.
Token usage and cost (from the configured price table) are recorded per call; ``Budget`` stops
new calls once the cap is reached.

``probe`` sends one 1-token request without retries (the start-up check of
:mod:`evorank.evolve.llm.preflight`); ``explain`` turns a failed request into one line that names the URL,
the cause and the fix; ``unreachable`` tells failures of the connection, the key or the model name
(nothing any proposal could change) from failures of one request.
"""
from __future__ import annotations

import email.utils
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    name: str
    weight: float = 1.0


def parse_models(text: str) -> list[ModelSpec]:
    """``"gpt-4o-mini,gpt-4o:0.2"`` -> weighted specs (weight defaults to 1).

    A weight is a plain number after the last colon, so Ollama tags such as ``qwen2.5-coder:1.5b``
    stay model names.
    """
    specs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, weight = item.rpartition(":")
        try:
            specs.append(ModelSpec(name, float(weight)) if sep and name else ModelSpec(item))
        except ValueError:
            specs.append(ModelSpec(item))
    if not specs:
        raise ValueError("no model names given")
    return specs


@dataclass(frozen=True)
class LLMSettings:
    models: tuple[ModelSpec, ...]
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None  # where the key came from, for messages (e.g. "OPENAI_API_KEY")
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 2048
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    # model name -> {"input": USD per 1M prompt tokens, "output": USD per 1M completion tokens}
    prices: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Completion:
    """One request's outcome. ``text`` is None when every attempt failed (``error`` says why)."""

    model: str
    text: str | None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    error: str | None = None  # "connection", "timeout" or "http_<status>"
    retry_log: list[str] = field(default_factory=list)
    detail: str | None = None  # the last failure in words: the cause of a connection error, the server's message


def unreachable(error: str | None) -> bool:
    """Whether a request's ``error`` means the model cannot be reached as configured (no connection, no answer,
    key refused, unknown model, rate limit or server errors after every retry) rather than a problem of this one
    request (other 4xx, e.g. a prompt too long for the model's context)."""
    if not error:
        return False
    return error in ("connection", "timeout", "http_401", "http_403", "http_404", "http_408", "http_429") \
        or error.startswith("http_5")


def _cause(exc: BaseException) -> str:
    """The innermost message of an exception chain, e.g. "connection refused" for an APIConnectionError."""
    text, seen = str(exc), set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if str(exc):
            text = str(exc)
        exc = exc.__cause__ or exc.__context__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return (text[:1].lower() + text[1:])[:200]


def _server_message(exc) -> str:
    """The error message an HTTP error response carried (printable, one line, short)."""
    body = getattr(exc, "body", None)
    msg = body.get("message") if isinstance(body, dict) else None
    if not isinstance(msg, str):
        msg = getattr(exc, "message", "") or ""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in msg).split())[:200]


class Budget:
    """Thread-safe spend tracker. ``exhausted`` once spent >= cap (a cap of None never is)."""

    def __init__(self, cap_usd: float | None, spent_usd: float = 0.0):
        self.cap_usd = cap_usd
        self.spent_usd = spent_usd
        self._lock = threading.Lock()

    def add(self, usd: float) -> None:
        with self._lock:
            self.spent_usd += usd

    @property
    def exhausted(self) -> bool:
        return self.cap_usd is not None and self.spent_usd >= self.cap_usd


def retry_after_seconds(headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class LLMClient:
    def __init__(self, settings: LLMSettings, budget: Budget | None = None, sleep=time.sleep):
        import openai

        self.settings = settings
        self.budget = budget or Budget(None)
        self._sleep = sleep
        self._openai = openai
        # The SDK's own retries are off: ours count attempts and honour Retry-After exactly.
        self._client = openai.OpenAI(
            base_url=settings.base_url, api_key=settings.api_key or "not-needed",
            timeout=settings.timeout_s, max_retries=0,
        )

    def pick_model(self, rng: np.random.Generator) -> str:
        models = self.settings.models
        weights = np.array([m.weight for m in models], dtype=float)
        return models[int(rng.choice(len(models), p=weights / weights.sum()))].name

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.settings.prices.get(model) or self.settings.prices.get("*") or {}
        return (prompt_tokens * price.get("input", 0.0) + completion_tokens * price.get("output", 0.0)) / 1e6

    @property
    def url(self) -> str:
        """The endpoint's base URL as requests use it."""
        return str(self._client.base_url).rstrip("/")

    def _attempt(self, out: Completion, attempt: int, **request) -> tuple[object | None, float | None, bool]:
        """One request: (response or None, seconds the server asked to wait, whether retrying may help).
        Failures are written into ``out`` (error, retry_log, detail)."""
        client = self._client if "timeout" not in request else self._client.with_options(timeout=request.pop("timeout"))
        try:
            return client.chat.completions.create(**request), None, False
        except self._openai.APIStatusError as e:
            code = e.status_code
            out.error, out.detail = f"http_{code}", _server_message(e)
            out.retry_log.append(f"attempt {attempt}: HTTP {code}")
            wait = retry_after_seconds(e.response.headers if e.response is not None else None)
            return None, wait, code == 429 or code >= 500  # other 4xx will not get better by asking again
        except self._openai.APITimeoutError:
            out.error, out.detail = "timeout", None
            out.retry_log.append(f"attempt {attempt}: timed out after {self.settings.timeout_s:g}s")
        except self._openai.APIConnectionError as e:
            out.error, out.detail = "connection", _cause(e)
            out.retry_log.append(f"attempt {attempt}: connection error: {out.detail}")
        return None, None, True

    def _take(self, out: Completion, resp, model: str) -> None:
        choice = resp.choices[0] if resp.choices else None
        usage = resp.usage
        out.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        out.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        out.cost_usd = self.cost(model, out.prompt_tokens, out.completion_tokens)
        self.budget.add(out.cost_usd)
        out.text = (choice.message.content or "") if choice is not None else ""
        out.finish_reason = getattr(choice, "finish_reason", None)
        out.error = out.detail = None

    def complete(self, messages: list[dict], rng: np.random.Generator, model: str | None = None,
                 stop: tuple[str, ...] = ()) -> Completion:
        """One chat completion with retries; never raises for API trouble (see ``Completion.error``). ``stop``:
        strings at which the server ends the reply (OpenAI's ``stop``; none sent when empty)."""
        s = self.settings
        model = model or self.pick_model(rng)
        seed = int(rng.integers(0, 2**31 - 1))
        out = Completion(model=model, text=None)
        t_start = time.monotonic()
        extra = {"stop": list(stop)} if stop else {}
        for attempt in range(s.max_retries + 1):
            out.attempts = attempt + 1
            resp, wait, retry = self._attempt(out, attempt + 1, model=model, messages=messages,
                                              temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                                              seed=seed, **extra)
            if resp is not None:
                self._take(out, resp, model)
                break
            if not retry or attempt == s.max_retries:
                break
            if wait is None:  # exponential backoff with full jitter
                wait = float(rng.uniform(0, min(s.backoff_max_s, s.backoff_base_s * 2**attempt)))
            self._sleep(min(wait, s.backoff_max_s))
        out.latency_s = time.monotonic() - t_start
        return out

    def probe(self, model: str, timeout_s: float) -> Completion:
        """One request for a single token, without retries: does the endpoint answer, take the key, know the model?
        Its tokens are not charged to the budget."""
        out = Completion(model=model, text=None, attempts=1)
        t_start = time.monotonic()
        resp, _, _ = self._attempt(out, 1, model=model, messages=[{"role": "user", "content": "Say OK."}],
                                   max_tokens=1, temperature=0.0, timeout=timeout_s)
        if resp is not None:
            choice = resp.choices[0] if resp.choices else None
            out.text = (choice.message.content or "") if choice is not None else ""
            out.error = out.detail = None
        out.latency_s = time.monotonic() - t_start
        return out

    def model_ids(self, timeout_s: float = 10.0) -> list[str] | None:
        """The models the endpoint lists (GET /models), or None when it cannot say."""
        try:
            return sorted(m.id for m in self._client.with_options(timeout=timeout_s).models.list())
        except Exception:  # noqa: BLE001 - only a hint for an error message
            return None

    def explain(self, out: Completion, timeout_s: float | None = None) -> str:
        """One line for a request that got no reply: the URL, the cause, and what to do about it."""
        s, url, model = self.settings, self.url, out.model
        detail = f": {out.detail}" if out.detail else ""
        env = s.api_key_env or "OPENAI_API_KEY"
        code = out.error.removeprefix("http_") if out.error and out.error.startswith("http_") else None
        if out.error == "connection":
            cause = out.detail or "connection failed"
            if "refused" in cause:
                fix = "start the server, or fix --base-url (or $OPENAI_BASE_URL)"
            elif re.search(r"name or service|nodename|name resolution|getaddrinfo", cause):
                fix = "check the host name in --base-url (or $OPENAI_BASE_URL) and the network"
            else:
                fix = "check the server and the network, or fix --base-url (or $OPENAI_BASE_URL)"
            return f"cannot connect to {url} ({cause}): {fix}"
        if out.error == "timeout":
            return (f"no answer from {url} within {timeout_s or s.timeout_s:g} s: the server is down or busy; check "
                    "it, or give slow models more time with --request-timeout SECONDS")
        if code in ("401", "403"):
            if not s.api_key:
                return (f"{url} refused the request (HTTP {code}{detail}) and no API key was sent: ${env} is not "
                        f"set; export {env}=<key>, or name the variable that holds it with --api-key-env VAR")
            return (f"{url} refused the API key in ${env} (HTTP {code}{detail}): check the key and that it may use "
                    f"model '{model}'")
        if code == "404":
            return (f"{url} has no model '{model}' (HTTP 404{detail}): check the name given to --llm, and that "
                    "--base-url is the API root (it usually ends in /v1)")
        if code == "429":
            return (f"{url} kept answering 429 Too Many Requests{detail}: wait for the rate limit, or lower "
                    "--in-flight")
        if code and code.startswith("5"):
            return f"{url} failed with a server error (HTTP {code}{detail}): check the server, then try again"
        return f"{url} answered HTTP {code or out.error} for model '{model}'{detail}"
