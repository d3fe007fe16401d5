"""LLM client for any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...).

One ``LLMClient`` serves a weighted ensemble of models. Retries are ours, not the SDK's, so that
every attempt is counted and ``Retry-After`` is honoured exactly: 429, 5xx, time-outs and
connection errors are retried with exponential backoff and full jitter; other 4xx are final.
Token usage and cost (from the configured price table) are recorded per call; ``Budget`` stops
new calls once the cap is reached.
"""
from __future__ import annotations

import email.utils
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
    error: str | None = None
    retry_log: list[str] = field(default_factory=list)


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

    def complete(self, messages: list[dict], rng: np.random.Generator, model: str | None = None) -> Completion:
        """One chat completion with retries; never raises for API trouble (see ``Completion.error``)."""
        s = self.settings
        model = model or self.pick_model(rng)
        seed = int(rng.integers(0, 2**31 - 1))
        out = Completion(model=model, text=None)
        t_start = time.monotonic()
        for attempt in range(s.max_retries + 1):
            out.attempts = attempt + 1
            wait = None
            try:
                resp = self._client.chat.completions.create(
                    model=model, messages=messages, temperature=s.temperature, top_p=s.top_p,
                    max_tokens=s.max_tokens, seed=seed,
                )
            except self._openai.APIStatusError as e:
                code = e.status_code
                out.error = f"http_{code}"
                out.retry_log.append(f"attempt {attempt + 1}: HTTP {code}")
                if code != 429 and code < 500:
                    break  # 4xx other than 429 will not get better by asking again
                wait = retry_after_seconds(e.response.headers if e.response is not None else None)
            except self._openai.APITimeoutError:
                out.error = "timeout"
                out.retry_log.append(f"attempt {attempt + 1}: timed out after {s.timeout_s:g}s")
            except self._openai.APIConnectionError as e:
                out.error = "connection"
                out.retry_log.append(f"attempt {attempt + 1}: connection error: {e}")
            else:
                choice = resp.choices[0] if resp.choices else None
                usage = resp.usage
                out.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
                out.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
                out.cost_usd = self.cost(model, out.prompt_tokens, out.completion_tokens)
                self.budget.add(out.cost_usd)
                out.text = (choice.message.content or "") if choice is not None else ""
                out.finish_reason = getattr(choice, "finish_reason", None)
                out.error = None
                break
            if attempt == s.max_retries:
                break
            if wait is None:  # exponential backoff with full jitter
                wait = float(rng.uniform(0, min(s.backoff_max_s, s.backoff_base_s * 2**attempt)))
            self._sleep(min(wait, s.backoff_max_s))
        out.latency_s = time.monotonic() - t_start
        return out
