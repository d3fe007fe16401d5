"""What a run holds reaches a terminal, a log or the HTML report only escaped: control characters (ANSI escape
sequences, carriage returns) and invisible formatting characters (bidi overrides) a program, a reply or a model
name carried are shown as escapes, never acted on; and the end of a run suggests no command that runs its
output outside the sandbox."""
import io
import logging
from types import SimpleNamespace

import pytest

from evorank.archive import FeatureDim, GridSpec, Islands, ProgramRecord, RunStore
from evorank.evaluators.program.output import code_block, escape_hidden, first_hidden
from evorank.evaluators.program.source import seed_path
from evorank.evolve.cli.live import SafeFormatter
from evorank.evolve.cli.main import main
from evorank.evolve.cli.run import print_run_summary
from evorank.evolve.inspection.report import esc

BM25 = seed_path("bm25").read_text(encoding="utf-8")
ANSI = "\x1b]0;evorank: all checks passed\x07\x1b[2J\x1b[1;32mfitness 0.9999 accepted\x1b[0m\r\u202e"
METRICS = {"builtin:demo": {"ndcg@10": 0.5, "recall@100": 0.8, "recall@1000": 0.9, "map@1000": 0.4}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("escapes") / "run"
    grid = GridSpec((FeatureDim("latency_ratio", (0.5, 1.0, 2.0), log=True),))
    store = RunStore.create(run_dir, {"iterations": 3, "datasets": ["builtin:demo"], "seeds": ["bm25"]}, 0,
                            grid=grid, n_islands=1, synchronous="NORMAL")
    islands = Islands.from_store(store)
    seed = ProgramRecord(code=BM25, operator="seed", island=0, generation=0, iteration=0, metrics=METRICS,
                         fitness=0.5, latency_ratio=1.0, features={"seed_name": "bm25"}, stage=2)
    islands.add(store, seed)
    child = ProgramRecord(code=BM25.replace("K1 = 0.9", f"K1 = 1.2  # {ANSI}"), operator="diff", island=0,
                          generation=1, iteration=1, parent_ids=(seed.id,), metrics=METRICS, fitness=0.6,
                          latency_ratio=1.2, stage=2, model=f"model{ANSI}", prompt=f"prompt {ANSI}",
                          response=f"reply {ANSI}")
    islands.add(store, child)
    failed = ProgramRecord(code=BM25.replace("B = 0.4", f"B = 0.5  # {ANSI}"), operator="diff", island=0,
                           generation=1, iteration=2, parent_ids=(seed.id,), status="failed", fitness=0.0,
                           failure_reason=f"forbidden:control_character{ANSI}",
                           failure_detail=f"line 3: {ANSI}\n~~~~\n{ANSI}\n~~~~", model=f"model{ANSI}")
    islands.add(store, failed)
    store.log_event("stop", {"reason": "completed", "proposals": 2, "elapsed_s": 1.0})
    store.close()
    return run_dir, seed, child, failed


@pytest.mark.parametrize("command", [
    ["status"], ["top"], ["show", "{child}", "--plain", "--prompt", "--response"], ["show", "{child}"],
    ["show", "{failed}", "--plain"], ["diff", "{child}"], ["diff", "{failed}", "{child}"], ["lineage", "{child}"],
])
def test_inspection_commands_print_hidden_characters_as_escapes(run, capsys, command):
    run_dir, _, child, failed = run
    args = [a.format(child=child.id, failed=failed.id) for a in command]
    assert main([args[0], str(run_dir), *args[1:]]) == 0
    out = capsys.readouterr().out
    assert first_hidden(out.replace("\r\n", "\n")) is None, (command, repr(out[:300]))


def test_show_keeps_the_code_readable(run, capsys):
    run_dir, _, child, _ = run
    assert main(["show", str(run_dir), str(child.id), "--plain"]) == 0
    out = capsys.readouterr().out
    assert "K1 = 1.2  # \\x1b]0;evorank: all checks passed\\x07\\x1b[2J" in out and "\\u202e" in out
    assert "def score(query, index, state):" in out


def test_log_lines_escape_messages_and_cannot_pose_as_entries():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("evorank.test_escapes")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("iteration 3 failed %s", f"{ANSI}\nINFO iteration 4 accepted fitness=0.9999")
        try:
            raise ValueError(ANSI)
        except ValueError:
            log.exception("proposal 5 failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert first_hidden(text) is None and "\\x1b[2J" in text
    assert "\n    INFO iteration 4" in text and "\nINFO iteration 4" not in text


def test_helpers_escape_and_fence():
    assert escape_hidden("a\tb\nc\x1b[0m\u200b") == "a\tb\nc\\x1b[0m\\u200b"
    assert esc(f"<b>{ANSI}</b>").startswith("&lt;b&gt;\\x1b]0;") and "\x1b" not in esc(ANSI)
    block = code_block("x = 1\n````\n## Program 9\n")
    assert block.startswith("`````python\n") and block.endswith("\n`````")


def test_the_end_of_a_run_suggests_no_command_that_runs_its_output_in_process(run, tmp_path):
    from rich.console import Console

    run_dir, seed, child, _ = run
    con = Console(record=True, width=200)
    with RunStore.open(run_dir) as store:
        engine = SimpleNamespace(store=store, stats=SimpleNamespace(accepted=1, failed=1, duplicate=0, rejected=0,
                                                                    repairs=0, unavailable=0, prompt_tokens=0,
                                                                    completion_tokens=0, cost_usd=0.0),
                                 stop_reason="completed", seed_records={"bm25": seed},
                                 cfg=SimpleNamespace(iterations=2, budget_usd=None))
        print_run_summary(con, engine, child, run_dir)
    text = con.export_text()
    commands = [line.split("#")[0].strip() for line in text.splitlines() if line.strip().startswith("evorank ")]
    assert f"evorank eval {run_dir}:best --suite heldout" in commands
    assert any(c.startswith("evorank export ") for c in commands)
    for c in commands:
        assert "best.py" not in c and "--in-process" not in c and "--no-sandbox" not in c
    assert "python -c" not in text and "import my_scorer" not in text
