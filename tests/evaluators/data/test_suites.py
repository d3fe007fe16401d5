"""Named suites and per-collection settings (evaluators/data/suites.py, read from the packaged suites.toml)."""
from __future__ import annotations

import pytest

from evorank.evaluators.errors import CollectionError
from evorank.evaluators.data.suites import collection_settings, get_suite, resolve_collections, suites


def test_every_shipped_suite_loads_with_collections():
    all_suites = suites()
    assert all_suites, "suites.toml ships no suites"
    for name, suite in all_suites.items():
        assert suite.name == name
        assert isinstance(suite.description, str)
        assert isinstance(suite.collections, tuple) and suite.collections, f"suite {name} is empty"
        for address in suite.collections:
            assert isinstance(address, str) and address == address.strip() and address, (name, address)
        assert len(set(suite.collections)) == len(suite.collections), f"suite {name} repeats a collection"
        assert get_suite(name) == suite
        # Every collection of a suite has usable settings.
        for address in suite.collections:
            s = collection_settings(address)
            assert isinstance(s.min_relevance, int) and s.min_relevance >= 1
            assert s.relevance_map is None or all(
                type(k) is int and type(v) is int for k, v in s.relevance_map.items())


def test_the_demo_suite_runs_offline():
    # The one suite that needs no data and no network: only the packaged collection.
    assert all(a.startswith("builtin:") for a in get_suite("demo").collections)


def test_unknown_suite_error_lists_known_suites():
    with pytest.raises(CollectionError) as info:
        get_suite("no-such-suite")
    message = str(info.value)
    assert "no-such-suite" in message
    for name in suites():
        assert name in message


def test_cranfield_relevance_map_has_int_keys():
    s = collection_settings("cranfield")
    assert s.relevance_map, "cranfield needs its grades remapped"
    assert all(type(k) is int and type(v) is int for k, v in s.relevance_map.items())
    # Cranfield grades 1 (complete answer) .. 4 (minimum interest): remapped so higher is better.
    positive = sorted(k for k in s.relevance_map if k > 0)
    mapped = [s.relevance_map[k] for k in positive]
    assert mapped == sorted(mapped, reverse=True) and all(v > 0 for v in mapped)
    assert len(set(mapped)) == len(mapped)
    # Its source-document marker (-1) is dropped (mapped to <= 0).
    assert s.relevance_map[-1] <= 0
    assert s.note


def test_settings_are_fresh_copies():
    s = collection_settings("cranfield")
    s.relevance_map[99] = 7
    assert 99 not in collection_settings("cranfield").relevance_map


def test_unknown_address_gets_defaults():
    s = collection_settings("local:some-collection-nobody-configured")
    defaults = type(s)()
    assert s == defaults
    assert s.min_relevance == 1 and s.relevance_map is None and s.query_cap is None
    assert collection_settings("/some/folder/path") == defaults


def test_resolve_collections_suite_then_datasets():
    quick = list(get_suite("quick").collections)
    assert resolve_collections("quick", None) == quick
    assert resolve_collections("quick", "cranfield,local:cisi") == quick + ["cranfield", "local:cisi"]
    assert resolve_collections("quick", ["cranfield"]) == quick + ["cranfield"]


def test_resolve_collections_removes_repeats_keeping_first_position():
    quick = list(get_suite("quick").collections)
    # A dataset already in the suite keeps its suite position; repeated datasets appear once.
    got = resolve_collections("quick", f"cranfield,{quick[-1]},cranfield,{quick[0]}")
    assert got == quick + ["cranfield"]
    assert resolve_collections(None, "b,a,b,c,a") == ["b", "a", "c"]


@pytest.mark.parametrize("datasets", [
    " beir/scifact/test , local:cisi ",
    "beir/scifact/test,,local:cisi,",
    " ,beir/scifact/test, ,local:cisi , ",
    ["beir/scifact/test", " local:cisi "],
    ["", " beir/scifact/test", "  ", "local:cisi"],
])
def test_resolve_collections_comma_strings_lists_and_whitespace(datasets):
    assert resolve_collections(None, datasets) == ["beir/scifact/test", "local:cisi"]


@pytest.mark.parametrize("suite, datasets", [
    (None, None), ("", None), (None, ""), (None, []), (None, " , ,"), (None, ["", "  "]), ("", ""),
])
def test_resolve_collections_needs_something(suite, datasets):
    with pytest.raises(CollectionError, match="--suite|--datasets"):
        resolve_collections(suite, datasets)


def test_resolve_collections_unknown_suite():
    with pytest.raises(CollectionError, match="no-such-suite"):
        resolve_collections("no-such-suite", "cranfield")


PAPER_SUITES = ("rankevolve12", "rankevolve-transfer", "bright-long", "bright-reasoning")


def test_every_paper_collection_is_known_to_ir_datasets_with_what_it_needs():
    """Every collection of the paper suites is an ir_datasets id (with ``@FIELD``: a field of its queries) with
    documents, queries and judgements, and what ir_datasets needs to read it is installed with evorank: BRIGHT
    comes as parquet files, which ir_datasets reads with pyarrow (a declared dependency, not only an extra)."""
    import pyarrow.parquet  # noqa: F401

    from evorank.evaluators.data.collections import import_ir_datasets, query_field, resolve

    ir_datasets = import_ir_datasets()
    assert ir_datasets.lazy_libs.pyarrow_parquet() is not None
    for suite in PAPER_SUITES:
        for address in get_suite(suite).collections:
            kind, _ = resolve(address)
            base, field = query_field(address)
            assert kind == "ir_datasets", address
            ds = ir_datasets.load(base)
            assert ds.has_docs() and ds.has_queries() and ds.has_qrels(), address
            assert field is None or field in ds.queries_cls()._fields, address
    assert {query_field(a)[0] for a in get_suite("bright-reasoning").collections} == {
        a for a in get_suite("rankevolve12").collections + get_suite("rankevolve-transfer").collections
        if a.startswith("bright/")}


def test_the_paper_suites_use_brights_short_documents_and_raw_questions():
    """RankEvolve evaluated BRIGHT on its short documents with each question's own text: the plain ids."""
    for suite in ("rankevolve12", "rankevolve-transfer"):
        bright = [a for a in get_suite(suite).collections if a.startswith("bright/")]
        assert bright and all("@" not in a and not a.endswith("-long") for a in bright)
    assert all(a.endswith("-long") for a in get_suite("bright-long").collections)
