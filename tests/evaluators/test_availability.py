"""Whether a collection is here, decided from disk alone (evaluators.availability): one answer for
`evorank datasets`, the default suite of `evorank run` and the held-out table of `evorank report`."""
from pathlib import Path

from evorank.evaluators.data.collections import load_collection
from evorank.evaluators.index.index import get_index
from evorank.evaluators.availability import CollectionAvailability, collection_availability, split_available

from conftest import TINY_DOCS


def test_a_local_folder_is_available_then_indexed(tiny_collection):
    found = collection_availability(str(tiny_collection))
    assert found == CollectionAvailability(str(tiny_collection), "available", None, len(TINY_DOCS), 3)
    assert found.offline and found.label == "available"
    get_index(load_collection(str(tiny_collection)))
    found = collection_availability(str(tiny_collection))
    assert found.status == "indexed" and found.docs == len(TINY_DOCS) and found.offline
    assert collection_availability(str(tiny_collection), counts=False) == CollectionAvailability(
        str(tiny_collection), "indexed")  # no counts asked, none read


def test_a_missing_folder_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("EVORANK_DATA", str(tmp_path / "data"))
    found = collection_availability("local:cisi")
    assert found.status == "missing" and not found.offline
    assert found.reason == f"no corpus.jsonl in {tmp_path / 'data' / 'cisi'}"


def test_a_broken_folder_is_an_error_with_the_loader_message(tiny_collection):
    (tiny_collection / "queries.jsonl").write_text("not json\n")
    found = collection_availability(str(tiny_collection))
    assert found.status == "error" and not found.offline and "queries.jsonl" in found.reason
    assert found.label.startswith("error: ") and len(found.label) <= len("error: ") + 60


def test_ir_datasets_ids_are_never_downloaded(monkeypatch):
    """A collection whose files are not in IR_DATASETS_HOME (BEIR's ArguAna is not among the test copies) is
    "needs download", decided by trying to read it with every download refused: no request is made, no file
    is left behind; ids that do not exist say so."""
    import os

    import requests

    home = os.environ["IR_DATASETS_HOME"]
    before = sorted(str(p) for p in Path(home).rglob("*") if p.is_file())
    requested = []
    monkeypatch.setattr(requests, "get", lambda *a, **k: requested.append(a) or 1 / 0)
    found = collection_availability("beir/arguana")
    assert found.status == "needs download" and "IR_DATASETS_HOME" in found.reason and not found.offline
    assert found.docs == 8674  # from ir_datasets' bundled metadata
    assert collection_availability("beir/no-such-set").status == "unknown id"
    assert collection_availability("beir/arguana@text").status == "needs download"
    assert requested == [] and sorted(str(p) for p in Path(home).rglob("*") if p.is_file()) == before


def test_split_available_keeps_order_and_says_why(tiny_collection, tmp_path, monkeypatch):
    monkeypatch.setenv("EVORANK_DATA", str(tmp_path / "data"))
    ok, missing = split_available(["builtin:demo", "local:npl", str(tiny_collection)])
    assert ok == ["builtin:demo", str(tiny_collection)]
    assert missing == {"local:npl": f"no corpus.jsonl in {tmp_path / 'data' / 'npl'}"}
