"""The LLM client against a scripted OpenAI-compatible server on 127.0.0.1."""
import numpy as np

from evorank.evolve.llm.client import Budget, Completion, LLMClient, LLMSettings, ModelSpec, parse_models

from fake_openai import FakeOpenAI


def client(url, sleeps, **kw):
    settings = LLMSettings(models=(ModelSpec("fake-a"),), base_url=url, api_key="test", timeout_s=kw.pop("timeout_s", 5),
                           max_retries=kw.pop("max_retries", 3), backoff_base_s=0.01,
                           prices={"fake-a": {"input": 1.0, "output": 2.0}}, **kw)
    return LLMClient(settings, budget=Budget(1.0), sleep=lambda s: sleeps.append(s))


def test_retries_honour_retry_after_and_count_usage():
    script = [
        {"status": 429, "headers": {"Retry-After": "2"}},
        {"status": 500},
        {"content": "hello", "usage": (100, 50)},
    ]
    sleeps = []
    with FakeOpenAI(script) as srv:
        out = client(srv.url, sleeps).complete([{"role": "user", "content": "hi"}], np.random.default_rng(0))
    assert out.text == "hello" and out.attempts == 3 and len(srv.requests) == 3
    assert sleeps[0] == 2.0 and 0 <= sleeps[1] <= 0.02  # Retry-After, then jittered backoff
    assert (out.prompt_tokens, out.completion_tokens) == (100, 50)
    assert abs(out.cost_usd - (100 * 1.0 + 50 * 2.0) / 1e6) < 1e-12
    assert srv.requests[0]["body"]["model"] == "fake-a" and "seed" in srv.requests[0]["body"]


def test_timeout_is_retried_then_succeeds():
    sleeps = []
    with FakeOpenAI([{"content": "late", "delay": 1.5}, {"content": "ok", "usage": (1, 1)}]) as srv:
        out = client(srv.url, sleeps, timeout_s=0.5).complete([{"role": "user", "content": "x"}], np.random.default_rng(0))
    assert out.text == "ok" and out.attempts == 2 and "timed out" in out.retry_log[0]


def test_client_errors_are_final_and_exhaustion_reported():
    sleeps = []
    with FakeOpenAI([{"status": 400}, {"content": "never"}]) as srv:
        out = client(srv.url, sleeps).complete([{"role": "user", "content": "x"}], np.random.default_rng(0))
    assert out.text is None and out.error == "http_400" and out.attempts == 1
    with FakeOpenAI([{"status": 503}] * 5) as srv:
        out = client(srv.url, sleeps, max_retries=2).complete([{"role": "user", "content": "x"}], np.random.default_rng(0))
    assert out.text is None and out.error == "http_503" and out.attempts == 3 and len(srv.requests) == 3


def test_connection_refused_is_an_error_not_a_crash():
    out = client("http://127.0.0.1:9/v1", [], max_retries=1).complete([{"role": "user", "content": "x"}],
                                                                    np.random.default_rng(0))
    assert out.text is None and out.error == "connection" and out.attempts == 2


def test_weighted_ensemble_and_budget():
    specs = parse_models("a:3,b:1")
    c = LLMClient(LLMSettings(models=tuple(specs), base_url="http://127.0.0.1:9/v1"))
    picks = [c.pick_model(np.random.default_rng(i)) for i in range(400)]
    assert 0.65 < picks.count("a") / 400 < 0.85
    b = Budget(0.5)
    b.add(0.3)
    assert not b.exhausted
    b.add(0.25)
    assert b.exhausted


def test_unreachable_tells_model_trouble_from_request_trouble():
    from evorank.evolve.llm.client import unreachable

    for error in ("connection", "timeout", "http_401", "http_403", "http_404", "http_429", "http_500", "http_503"):
        assert unreachable(error), error
    for error in (None, "", "http_400", "http_413", "http_422"):
        assert not unreachable(error), error


def test_probe_asks_for_one_token_without_retries_and_explain_names_url_cause_and_fix():
    sleeps = []
    with FakeOpenAI([{"status": 503}, {"content": "never"}], api_key="test") as srv:
        c = client(srv.url, sleeps)
        out = c.probe("fake-a", timeout_s=2)
        assert out.text is None and out.error == "http_503" and len(srv.requests) == 1 and sleeps == []
        assert srv.requests[0]["body"]["max_tokens"] == 1
        assert c.explain(out) == f"{srv.url} failed with a server error (HTTP 503: scripted 503): check the server, then try again"
        ok = c.probe("fake-a", timeout_s=2)
        assert ok.text == "never" and ok.error is None
        assert c.budget.spent_usd == 0.0  # a probe is not charged
    refused = client("http://127.0.0.1:9/v1", [], max_retries=0)
    out = refused.complete([{"role": "user", "content": "x"}], np.random.default_rng(0))
    assert out.detail == "connection refused"
    assert refused.explain(out).startswith("cannot connect to http://127.0.0.1:9/v1 (connection refused): start the server")
    timed = Completion(model="m", text=None, error="timeout")
    assert "within 5 s" in refused.explain(timed) and "--request-timeout" in refused.explain(timed)
    nokey = LLMClient(LLMSettings(models=(ModelSpec("m"),), base_url="http://h/v1", api_key_env="MY_KEY"))
    assert "no API key was sent: $MY_KEY is not set" in nokey.explain(Completion(model="m", text=None, error="http_401"))
    assert "has no model 'm' (HTTP 404)" in nokey.explain(Completion(model="m", text=None, error="http_404"))


def test_stop_strings_are_sent_only_when_given():
    with FakeOpenAI([{"content": "a"}, {"content": "b"}]) as srv:
        c = client(srv.url, [])
        c.complete([{"role": "user", "content": "x"}], np.random.default_rng(0), stop=("\n# Heading\n",))
        c.complete([{"role": "user", "content": "x"}], np.random.default_rng(0))
    assert srv.requests[0]["body"]["stop"] == ["\n# Heading\n"] and "stop" not in srv.requests[1]["body"]
