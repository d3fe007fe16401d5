"""The start-up check of `evorank run`: an LLM or command that cannot be used stops the command within seconds with
one line naming the URL (or command), the cause and the fix, a non-zero exit, and nothing written: no run folder
for a new run, an unchanged folder for a resumed one."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from evorank.evolve.cli.main import main
from evorank.evolve.config import RunConfig, save_toml
from evorank.evolve.engine.loop import open_run_store
from evorank.evolve.llm.preflight import LLMUnavailableError, preflight

from fake_openai import FakeOpenAI


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "EVORANK_MODEL", "LOCAL_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # a default run folder would appear under ./runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(tmp_path, tiny_collection, capsys, *args) -> str:
    """Run `evorank run ARGS` in-process; it must fail within 10 s, leave no run folder, and say why on one line."""
    out_dir = tmp_path / "run"
    t0 = time.monotonic()
    code = main(["run", "--datasets", str(tiny_collection), "--iterations", "3", "--out", str(out_dir), "--quiet",
                 *args])
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err.strip()
    assert code != 0, err
    assert elapsed < 10, elapsed
    assert not out_dir.exists() and not (tmp_path / "runs").exists()
    assert len(err.splitlines()) == 1 and err.startswith("evorank: error: "), err
    assert "nothing was written" in err
    return err


def test_connection_refused_names_the_url_and_the_fix(tmp_path, tiny_collection, capsys, clean_env):
    url = f"http://127.0.0.1:{free_port()}/v1"
    err = refused(tmp_path, tiny_collection, capsys, "--llm", "local", "--base-url", url)
    assert f"cannot connect to {url} (connection refused)" in err and "start the server" in err


def test_no_answer_within_the_time_limit(tmp_path, tiny_collection, capsys, clean_env):
    with FakeOpenAI([{"content": "late", "delay": 4.0}]) as srv:
        err = refused(tmp_path, tiny_collection, capsys, "--llm", "local", "--base-url", srv.url,
                      "--request-timeout", "1")
    assert f"no answer from {srv.url} within 1 s" in err and "--request-timeout" in err


def test_missing_key_for_the_hosted_api_fails_without_a_request(tmp_path, tiny_collection, capsys, clean_env):
    err = refused(tmp_path, tiny_collection, capsys, "--llm", "gpt-4o-mini")
    assert "api.openai.com" in err and "$OPENAI_API_KEY is not set" in err and "--api-key-env" in err


def test_missing_key_for_a_server_that_wants_one(tmp_path, tiny_collection, capsys, clean_env):
    with FakeOpenAI([], api_key="sk-right") as srv:
        err = refused(tmp_path, tiny_collection, capsys, "--llm", "m", "--base-url", srv.url)
        assert srv.served == []  # refused before any script item was used
    assert f"{srv.url} refused the request (HTTP 401" in err and "$OPENAI_API_KEY is not set" in err


def test_wrong_key_is_named(tmp_path, tiny_collection, capsys, clean_env, monkeypatch):
    monkeypatch.setenv("LOCAL_KEY", "sk-wrong")
    with FakeOpenAI([], api_key="sk-right") as srv:
        err = refused(tmp_path, tiny_collection, capsys, "--llm", "m", "--base-url", srv.url,
                      "--api-key-env", "LOCAL_KEY")
    assert "refused the API key in $LOCAL_KEY (HTTP 401: Incorrect API key provided)" in err


def test_unknown_model_lists_the_servers_models(tmp_path, tiny_collection, capsys, clean_env):
    with FakeOpenAI([], models=["qwen-coder", "llama"]) as srv:
        err = refused(tmp_path, tiny_collection, capsys, "--llm", "qwen-coder,gpt-5-nano:0.5", "--base-url", srv.url)
    assert f"{srv.url} has no model 'gpt-5-nano' (HTTP 404" in err and "check the name given to --llm" in err
    assert "(it lists: llama, qwen-coder)" in err


def test_command_that_is_not_installed(tmp_path, tiny_collection, capsys, clean_env):
    err = refused(tmp_path, tiny_collection, capsys, "--llm", "cmd:no-such-agent-3141 --edit {file}")
    assert "'no-such-agent-3141' of cmd:no-such-agent-3141 was not found (not on PATH)" in err


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, tiny_collection, capsys, clean_env):
    run_dir = tmp_path / "old"
    cfg = RunConfig(seeds=["bm25"], datasets=[str(tiny_collection)], iterations=3, llm="local",
                    base_url=f"http://127.0.0.1:{free_port()}/v1", out=str(run_dir))
    store = open_run_store(cfg, run_dir, resume=False)
    store.log_event("start", {"iterations": 3})
    store.close()
    save_toml(cfg, run_dir / "config.toml")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    code = main(["run", "--resume", str(run_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "cannot connect to" in err and cfg.base_url in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_a_local_server_without_a_key_passes(tmp_path, clean_env):
    with FakeOpenAI([{"content": "O", "usage": (5, 1)}]) as srv:
        cfg = RunConfig(llm="local", base_url=srv.url, api_key_env="LOCAL_KEY")
        notes = preflight(cfg)
        body = srv.requests[0]["body"]
    assert body["model"] == "local" and body["max_tokens"] == 1
    assert len(notes) == 1 and notes[0].startswith(f"local at {srv.url} answered")
    with FakeOpenAI([]) as srv:  # the check can be switched off: no request at all
        assert preflight(RunConfig(llm="local", base_url=srv.url, preflight=False)) == [] and srv.requests == []


def test_rate_limit_counts_as_reachable_and_server_errors_are_asked_again(clean_env):
    script = [{"status": 429}, {"status": 503}, {"status": 503}, {"content": "O"}]
    with FakeOpenAI(script) as srv:
        cfg = RunConfig(llm="a,b", base_url=srv.url)
        sleeps = []
        assert len(preflight(cfg, sleep=sleeps.append)) == 2
        assert [r["body"]["model"] for r in srv.requests] == ["a", "b", "b", "b"] and sleeps == [2.0, 2.0]
    with FakeOpenAI([{"status": 500}] * 3) as srv:
        with pytest.raises(LLMUnavailableError, match=r"failed with a server error \(HTTP 500: scripted 500\)"):
            preflight(RunConfig(llm="a", base_url=srv.url), sleep=lambda s: None)


def test_run_help_documents_the_new_flags(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--repair-rounds", "--max-llm-failures", "--command-timeout", "--no-preflight", "cmd:COMMAND",
                 "{prompt_file}", "YOUR rights"):
        assert flag in text, flag


def test_proposer_is_another_name_for_llm():
    from evorank.evolve.cli.main import build_parser
    from evorank.evolve.cli.run import resolve_run_config

    args = build_parser().parse_args(["run", "--proposer", "cmd:my-agent {file}:0.5,m"])
    assert resolve_run_config(args).llm == "cmd:my-agent {file}:0.5,m"
