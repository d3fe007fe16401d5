"""Prompt construction (evolve/llm/prompts.py): template loading and overrides, placeholder rendering,
the metrics table, failure and inspiration sections, and the chat messages of each proposal kind."""
from __future__ import annotations

import dataclasses
import re
from importlib import resources

import pytest

from evorank.archive import ProgramRecord
from evorank.evaluators.program.source import contract_text, seed_path, split_block
from evorank.evolve.llm.prompts import (
    quoted_code,
    PromptTemplates,
    build_messages,
    failures_text,
    inspirations_text,
    metrics_table,
    prompt_contract,
    without_module_docstring,
)

TEMPLATE_NAMES = ("system", "mutation", "diff_instructions", "full_instructions", "crossover_instructions")


def program(pid: int, code: str = "def score(q):\n    return 1\n", *, metrics=None, fitness=0.5,
            latency_ratio=1.25, **kw) -> ProgramRecord:
    rec = ProgramRecord(code=code, operator=kw.pop("operator", "diff"), island=0, generation=1, iteration=pid,
                        metrics=metrics or {}, fitness=fitness, latency_ratio=latency_ratio, **kw)
    rec.id = pid
    return rec


def blocked(body: str, head: str = "import numpy as np\n") -> str:
    """A program with an evolve block around ``body``."""
    return f"{head}# EVOLVE-BLOCK-START\n{body}\n# EVOLVE-BLOCK-END\nTAIL_MARKER = 1\n"


def block_of(code: str) -> str:
    return split_block(code).block


def parse_table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(header columns, {collection: {column: cell}}) of a metrics table."""
    lines = text.splitlines()
    header = lines[0].split(" | ")
    assert set(lines[1]) == {"-"}, "second line separates header and rows"
    rows = {}
    for line in lines[2:]:
        cells = line.split(" | ")
        assert len(cells) == len(header), f"row {line!r} does not match header {lines[0]!r}"
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


# ------------------------------------------------------------------ loading and rendering


def test_load_reads_every_shipped_template():
    t = PromptTemplates.load()
    shipped = resources.files("evorank.evolve.llm") / "prompts"
    for name in TEMPLATE_NAMES:
        assert t.texts[name] == (shipped / f"{name}.txt").read_text(encoding="utf-8")
        assert t.texts[name].strip(), f"shipped template {name} is empty"


def test_override_folder_replaces_only_the_files_it_contains(tmp_path):
    shipped = PromptTemplates.load()
    (tmp_path / "system.txt").write_text("You are a careful tester.\n", encoding="utf-8")
    (tmp_path / "full_instructions.txt").write_text("Rewrite it all, $who.\n", encoding="utf-8")
    (tmp_path / "unrelated.txt").write_text("not a template\n", encoding="utf-8")
    for override in (tmp_path, str(tmp_path)):
        t = PromptTemplates.load(override)
        assert t.texts["system"] == "You are a careful tester.\n"
        assert t.texts["full_instructions"] == "Rewrite it all, $who.\n"
        for name in ("mutation", "diff_instructions", "crossover_instructions"):
            assert t.texts[name] == shipped.texts[name]
        assert "unrelated" not in t.texts
    # Overriding does not leak into later loads.
    assert PromptTemplates.load().texts == shipped.texts


def test_override_folder_without_templates_changes_nothing(tmp_path):
    assert PromptTemplates.load(tmp_path).texts == PromptTemplates.load().texts


def test_render_substitutes_placeholders_and_leaves_unknown_ones(tmp_path):
    (tmp_path / "system.txt").write_text("Hi $who, ${who}s cost $$5; $missing stays.", encoding="utf-8")
    t = PromptTemplates.load(tmp_path)
    assert t.render("system", who="Ada") == "Hi Ada, Adas cost $5; $missing stays."
    # No values: nothing raises, placeholders stay visible.
    assert t.render("system") == "Hi $who, ${who}s cost $5; $missing stays."
    with pytest.raises(KeyError):
        t.render("no_such_template")


def test_render_accepts_a_placeholder_called_name(tmp_path):
    (tmp_path / "system.txt").write_text("Hi $name", encoding="utf-8")
    assert PromptTemplates.load(tmp_path).render("system", name="Ada") == "Hi Ada"


# ------------------------------------------------------------------ metrics table


def test_metrics_table_rows_per_collection_and_seed_columns():
    prog = program(1, metrics={
        "scifact": {"ndcg@10": 0.61237, "recall@100": 0.9},
        "cranfield": {"ndcg@10": 0.25},
    })
    seeds = {
        "bm25": program(2, metrics={"scifact": {"ndcg@10": 0.6, "recall@100": 0.8},
                                    "cranfield": {"ndcg@10": 0.3, "recall@100": 0.7}}),
        "ql": program(3, metrics={"scifact": {"ndcg@10": 0.55}}),  # never evaluated on cranfield
    }
    header, rows = parse_table(metrics_table(prog, seeds))
    assert header[0] == "collection"
    assert sorted(rows) == ["cranfield", "scifact"]
    # One column per seed, after the program's own metric columns.
    seed_cols = header[-len(seeds):]
    assert seed_cols == ["bm25 nDCG@10 / R@100", "ql nDCG@10 / R@100"]
    metric_cols = header[1:-len(seeds)]
    assert "ndcg@10" in metric_cols and "recall@100" in metric_cols

    assert rows["scifact"]["ndcg@10"] == "0.6124"
    assert rows["scifact"]["recall@100"] == "0.9000"
    assert rows["cranfield"]["recall@100"] == "n/a"  # program has no value there
    for coll, cells in rows.items():
        for m in metric_cols:
            value = prog.metrics[coll].get(m)
            assert cells[m] == ("n/a" if value is None else f"{value:.4f}")
    assert rows["scifact"]["bm25 nDCG@10 / R@100"] == "0.6000 / 0.8000"
    assert rows["cranfield"]["bm25 nDCG@10 / R@100"] == "0.3000 / 0.7000"
    assert rows["scifact"]["ql nDCG@10 / R@100"] == "0.5500 / n/a"
    assert rows["cranfield"]["ql nDCG@10 / R@100"] == "n/a / n/a"


def test_metrics_table_rows_are_sorted_by_collection():
    prog = program(1, metrics={c: {"ndcg@10": 0.1} for c in ("zeta", "alpha", "mid")})
    lines = metrics_table(prog, {}).splitlines()[2:]
    assert [line.split(" | ")[0] for line in lines] == ["alpha", "mid", "zeta"]


def test_metrics_table_without_seeds_has_matching_columns():
    header, rows = parse_table(metrics_table(program(1, metrics={"scifact": {"ndcg@10": 0.5}}), {}))
    assert header[-1] and list(rows) == ["scifact"]


def test_metrics_table_of_unevaluated_program():
    seeds = {"bm25": program(2, metrics={"scifact": {"ndcg@10": 0.6}})}
    assert metrics_table(program(1, metrics={}), seeds) == "(not evaluated)"


# ------------------------------------------------------------------ failures and inspirations


def test_failures_text_shows_only_failures_a_model_can_act_on():
    """A failure is shown with its reason, the trusted first line of its detail and the line it failed at; replies
    that gave no code, cut-off replies and time-outs are left out (nothing to act on), and so is the section when
    nothing is left. At most two."""
    assert failures_text([]) == "" and failures_text(()) == ""
    code = blocked("def score(query, index, state):\n    x = np.zeros(3)\n    return x[query.term_ids]")
    raised = program(11, code, operator="full", status="failed", failure_reason="exception:IndexError",
                     failure_detail="tiny: score() on query 'q1' raised IndexError at line 5\n~~~~\nindex 5 is out\n~~~~")
    vague = [program(7, operator="diff", status="failed", failure_reason=r, failure_detail="d")
             for r in ("timeout", "no_code", "truncated", "no_change", "no_op")]
    assert failures_text(vague) == ""
    text = failures_text([*vague, raised])
    assert text.startswith("\n# Mistakes that made recent programs like it fail (do not repeat them)\n")
    assert "exception:IndexError: tiny: score() on query 'q1' raised IndexError at line 5" in text
    assert "index 5 is out" in text and "the line it failed at:\n```python\nreturn x[query.term_ids]\n```" in text
    assert "timeout" not in text and "no_code" not in text
    forbidden = program(9, operator="crossover", status="failed", failure_reason="forbidden:import os",
                        failure_detail="import of os is not allowed " + "x" * 2000)
    assert "forbidden:import os" in failures_text([forbidden]) and len(failures_text([forbidden])) < 600
    # an exception whose line is unknown says nothing a model can find in its program
    unplaced = program(12, code, status="failed", failure_reason="exception:KeyError", failure_detail="tiny: raised")
    assert failures_text([unplaced]) == ""
    assert failures_text([raised, forbidden, raised]).count("\n- ") == 2


def test_inspirations_text_shows_each_program_block():
    assert inspirations_text([], block_of) == ""
    a = program(4, blocked("def score(q):\n    return 'ALPHA'"), fitness=0.4321, latency_ratio=2.5)
    b = program(8, blocked("def score(q):\n    return 'BETA'"), fitness=None, latency_ratio=None)
    text = inspirations_text([a, b], block_of)
    assert text.index("ALPHA") < text.index("BETA")
    assert "Program 4" in text and "0.4321" in text and "2.50" in text
    assert text.index("do not copy them") < text.index("ALPHA")  # the instruction before the code it governs
    assert "Program 8" in text and "n/a" in text
    # Only the evolve block is shown, fenced as Python.
    assert "import numpy" not in text and "TAIL_MARKER" not in text and "EVOLVE-BLOCK" not in text
    assert len(re.findall(r"^```python$", text, flags=re.M)) == 2
    # Without a block extractor the whole program is shown.
    assert "TAIL_MARKER" in inspirations_text([a], lambda code: code)


# ------------------------------------------------------------------ messages


PARENT_CODE = blocked("def score(query, index, state):\n    return PARENT_BODY_MARKER", head="import numpy as np\n")
OTHER_CODE = blocked("def score(query, index, state):\n    return OTHER_BODY_MARKER", head="import OTHER_HEAD\n")


@pytest.fixture
def parties():
    parent = program(21, PARENT_CODE, metrics={"scifact": {"ndcg@10": 0.7, "recall@100": 0.95}},
                     fitness=0.6789, latency_ratio=1.5)
    other = program(34, OTHER_CODE, fitness=0.5555)
    seeds = {"bm25": program(1, metrics={"scifact": {"ndcg@10": 0.66, "recall@100": 0.9}})}
    failure = program(40, operator="diff", status="failed", failure_reason="timeout", failure_detail="too slow")
    insp = program(50, blocked("def score(q):\n    return INSPIRATION_MARKER"), fitness=0.61)
    return parent, other, seeds, failure, insp


@pytest.mark.parametrize("kind", ["diff", "full", "crossover"])
def test_build_messages_roles_and_content(parties, kind):
    parent, other, seeds, failure, insp = parties
    t = PromptTemplates.load()
    msgs = build_messages(t, kind, parent, seeds, "maximize macro nDCG@10 OBJECTIVE_MARKER",
                          failures=[failure], inspirations=[insp], other=other, block_of=block_of)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert all(isinstance(m["content"], str) and m["content"].strip() for m in msgs)
    assert msgs[0]["content"] == t.render("system")
    user = msgs[1]["content"]
    assert "OBJECTIVE_MARKER" in user
    # a crossover has no direction: the contract's optional sections follow what the programs it shows read
    uses = "\n".join(["", parent.code, other.code, insp.code]) if kind == "crossover" else None
    assert prompt_contract(uses).strip() in user and "## Example" not in user
    assert parent.code.strip() in user  # the whole parent, not only its block
    assert "21" in user and "0.6789" in user and "1.50" in user
    assert metrics_table(parent, seeds) in user
    assert failures_text([failure]) in user
    assert "INSPIRATION_MARKER" in user
    assert t.render(f"{kind}_instructions", other_id=other.id, other_fitness=f"{other.fitness:.4f}",
                    other_code=quoted_code(block_of(other.code).strip())) in user
    # Every placeholder of the shipped templates got a value.
    assert not re.search(r"\$\{?[A-Za-z_]\w*", user), re.findall(r"\$\{?[A-Za-z_]\w*", user)


def test_the_program_to_improve_is_shown_without_the_docstring_above_its_block():
    code = seed_path("bm25").read_text()
    first_line = code.splitlines()[0].strip('"')
    shown = without_module_docstring(code)
    assert first_line.startswith("BM25") and first_line not in shown
    assert shown == code[code.index("import numpy as np"):]  # the rest, byte for byte
    inside = '# EVOLVE-BLOCK-START\n"""Doc."""\ndef score(q, i, s):\n    return 1\n# EVOLVE-BLOCK-END\n'
    unparsed = '"""Doc."""\nimport numpy as np\n# EVOLVE-BLOCK-START\ndef score(:\n# EVOLVE-BLOCK-END\n'
    for whole in (inside, unparsed, PARENT_CODE):  # a docstring inside the block, code that does not parse, none
        assert without_module_docstring(whole) == whole
    parent = program(3, code, metrics={"scifact": {"ndcg@10": 0.7, "recall@100": 0.95}})
    user = build_messages(PromptTemplates.load(), "diff", parent, {}, "objective")[1]["content"]
    assert first_line not in user and split_block(code).block.strip() in user
    assert "```python\nimport numpy as np\nimport scipy.sparse as sp\n\n# EVOLVE-BLOCK-START\n" in user


def test_build_messages_kinds_differ_and_only_crossover_shows_the_other(parties):
    parent, other, seeds, _, _ = parties
    t = PromptTemplates.load()
    users = {kind: build_messages(t, kind, parent, seeds, "obj", other=other, block_of=block_of)[1]["content"]
             for kind in ("diff", "full", "crossover")}
    assert len(set(users.values())) == 3
    assert "OTHER_BODY_MARKER" in users["crossover"]
    assert "34" in users["crossover"] and "0.5555" in users["crossover"]
    # Crossover shows the other program's block only, not its fixed head.
    assert "OTHER_HEAD" not in users["crossover"]
    for kind in ("diff", "full"):
        assert "OTHER_BODY_MARKER" not in users[kind]


def test_build_messages_empty_sections(parties):
    parent, _, seeds, _, _ = parties
    user = build_messages(PromptTemplates.load(), "diff", parent, seeds, "obj")[1]["content"]
    assert failures_text([]) in user and inspirations_text([], block_of) in user


def test_build_messages_uses_override_templates(parties, tmp_path):
    parent, other, seeds, _, _ = parties
    (tmp_path / "system.txt").write_text("SYSTEM OVERRIDE", encoding="utf-8")
    (tmp_path / "mutation.txt").write_text("P=$parent_id F=$parent_fitness\n$instructions", encoding="utf-8")
    (tmp_path / "crossover_instructions.txt").write_text("OTHER=$other_id:$other_code", encoding="utf-8")
    msgs = build_messages(PromptTemplates.load(tmp_path), "crossover", parent, seeds, "obj", other=other,
                          block_of=block_of)
    assert msgs[0]["content"] == "SYSTEM OVERRIDE"
    assert msgs[1]["content"] == f"P=21 F=0.6789\nOTHER=34:{quoted_code(block_of(OTHER_CODE).strip())}"
    # a template written for the earlier form fences the code itself: the placeholder alone is kept
    (tmp_path / "crossover_instructions.txt").write_text("OTHER=$other_id:\n```python\n$other_code\n```\n",
                                                         encoding="utf-8")
    msgs = build_messages(PromptTemplates.load(tmp_path), "crossover", parent, seeds, "obj", other=other,
                          block_of=block_of)
    assert msgs[1]["content"] == f"P=21 F=0.6789\nOTHER=34:\n{quoted_code(block_of(OTHER_CODE).strip())}\n"


def test_build_messages_unknown_kind(parties):
    parent, other, seeds, _, _ = parties
    with pytest.raises(ValueError, match="mutate"):
        build_messages(PromptTemplates.load(), "mutate", parent, seeds, "obj", other=other)


# ------------------------------------------------------------------ what a prompt holds, and in which order


def seed_record(pid: int, name: str) -> ProgramRecord:
    from evorank.evaluators.program.source import seed_path
    return program(pid, seed_path(name).read_text(encoding="utf-8"), operator="seed", features={"seed_name": name},
                   metrics={"scifact": {"ndcg@10": 0.6, "recall@100": 0.9}})


@pytest.mark.parametrize("kind", ["diff", "full", "crossover", "command"])
def test_each_program_once_imports_once_and_instructions_before_the_code_they_govern(kind):
    """The contract's closing example is left out (the program to improve follows it: each program once); the
    allowed imports are stated once, by the contract; a direction's helper comes after the sentence saying it is
    to be called, not copied, and the crossover partner after the request to combine."""
    from evorank.evolve.llm.directions import Direction  # noqa: F401
    t = PromptTemplates.load()
    bm25, ql = seed_record(1, "bm25"), seed_record(3, "ql_dirichlet")
    direction = t.directions()["proximity"] if kind in ("diff", "full") else None
    user = build_messages(t, kind, bm25, {"bm25": bm25}, "obj", other=ql if kind == "crossover" else None,
                          block_of=block_of, direction=direction)[-1]["content"]
    assert user.count("def score(query, index, state):") == 1 + (kind == "crossover")
    assert user.count("scipy.special") == 1 and user.count("Allowed imports") == 1
    if direction is not None:
        assert user.index("do not copy it") < user.index("def min_pair_distance")
        assert user.index("Apply this idea to the program to improve (proximity)") < user.index("def min_pair_distance")
        assert "def prepare" not in user[user.index("# Your task"):]  # a technique, not a program to paste
    if kind == "crossover":
        assert user.index("Bring into the program to improve one idea that program 3") < user.index("MU = 2000.0")


def test_every_direction_is_a_technique_not_a_complete_program():
    for d in PromptTemplates.load().directions().values():
        assert "def score(" not in d.text and "def prepare(" not in d.text, d.name
        assert not d.example, d.name
        if d.code:  # a helper: offered to be called, said before it is shown
            assert d.text.index("do not copy") < d.text.index("```python"), d.name


def test_the_contract_documents_optional_evidence_only_where_the_task_uses_it():
    """A direction on idf gets the contract's core and one line naming the positions, fields and term-variant
    attributes; a proximity direction gets the positions section whole; a crossover whose partner reads title
    frequencies gets the fields section; a proposal free to choose its idea gets everything."""
    t = PromptTemplates.load()
    bm25, ql = seed_record(1, "bm25"), seed_record(3, "ql_dirichlet")
    seeds = {"bm25": bm25}

    def user(kind, direction=None, other=None):
        d = t.directions()[direction] if direction else None
        return build_messages(t, kind, bm25, seeds, "obj", other=other, block_of=block_of, direction=d)[-1]["content"]

    positions, fields, variants = "| `index.positions(t)`", "| `index.title_tf`", "| `index.prefix_groups(n)`"
    idf, proximity, free = user("diff", "idf"), user("diff", "proximity"), user("diff")
    assert all(row not in idf for row in (positions, fields, variants))
    assert "`index.positions`" in idf and "`index.title_tf`" in idf and "`index.char_ngrams`" in idf  # named
    assert positions in proximity and fields not in proximity
    assert all(row in free for row in (positions, fields, variants))
    assert len(idf) < len(free) - 3000
    titled = dataclasses.replace(ql, code=ql.code.replace("dl = index.doc_len[td.indices]",
                                                          "dl = index.doc_len[td.indices] + index.title_tf"))
    crossover = user("crossover", other=titled)
    assert fields in crossover and positions not in crossover


def test_a_repair_quotes_the_first_sentence_of_an_explanation_only_where_no_change_shows_the_idea():
    from evorank.evolve.llm.prompts import attempt_text, first_sentence

    assert first_sentence("  Use idf squared. Then more.") == "Use idf squared."
    assert first_sentence("**Change:** scale tf by 0.5\n\nBecause: e.g. reasons.") == "**Change:** scale tf by 0.5"
    assert first_sentence("no full stop at all") == "no full stop at all"
    assert first_sentence("Version 2.5 of tf. Rest") == "Version 2.5 of tf."
    said, shown = attempt_text("Use idf squared. It helps.", "idf", None)
    assert "~~~~\nUse idf squared.\n~~~~" in said and "It helps" not in said and shown == ""
    said, shown = attempt_text("Use idf squared. It helps.", "idf", "+ x = 1")
    assert said == "You were applying the idea above (idf)." and "+ x = 1" in shown


def test_the_echo_stops_are_the_heading_above_the_contract_and_its_first_sentence():
    shipped = PromptTemplates.load()
    sentence = "A ranking program is a self-contained Python module."
    assert shipped.echo_stops() == ("\n# The program contract\n", sentence)
    assert prompt_contract().startswith(sentence + " ")  # what a prompt shows, so what an echo copies
    texts = dict(shipped.texts)
    texts["mutation"] = texts["mutation"].replace("# The program contract\n$contract", "$contract")
    assert PromptTemplates(texts).echo_stops() == (sentence,)  # no heading line: the sentence alone
    texts["mutation"] = texts["mutation"].replace("$contract", "")
    assert PromptTemplates(texts).echo_stops() == ()  # no contract shown: nothing to echo
