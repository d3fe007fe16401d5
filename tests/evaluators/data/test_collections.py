
import pytest

from evorank.evaluators.data.collections import load_collection
from evorank.evaluators.data.suites import CollectionSettings
from evorank.evaluators.errors import CollectionError
from evorank.evaluators.evaluate import load_topics

from conftest import write_beir


def test_local_folder_loads_judged_queries_only(tiny_collection):
    coll = load_collection(str(tiny_collection))
    assert [q for q, _ in coll.queries] == ["q1", "q2", "q3"]  # q4 has no judgement
    assert coll.qrels["q1"] == {"d1": 2, "d7": 1}
    docs = {d: (title, body) for d, title, body in coll.iter_docs()}
    assert docs["d1"] == ("Solar panels", "Solar panels convert sunlight into electricity for homes.")
    assert docs["d8"] == ("", "The and of it.")  # no title


def test_local_prefix_uses_data_root(tiny_collection, monkeypatch):
    monkeypatch.setenv("EVORANK_DATA", str(tiny_collection.parent))
    assert len(load_collection("local:tiny").queries) == 3
    with pytest.raises(CollectionError, match="EVORANK_DATA"):
        load_collection("local:nope")


def test_unknown_id_suggests_close_matches():
    with pytest.raises(CollectionError, match=r"unknown collection 'beir/scifactt/test'.*beir/scifact/test"):
        load_collection("beir/scifactt/test")


def test_missing_file_is_named(tiny_collection):
    (tiny_collection / "queries.jsonl").unlink()
    with pytest.raises(CollectionError, match=r"queries\.jsonl is missing"):
        load_collection(str(tiny_collection))


def test_malformed_json_line_names_file_and_line(tiny_collection):
    lines = (tiny_collection / "corpus.jsonl").read_text().splitlines()
    lines[2] = '{"_id": "d3", "text": "broken'
    (tiny_collection / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    coll = load_collection(str(tiny_collection))
    with pytest.raises(CollectionError, match=r"corpus\.jsonl, line 3: not valid JSON at column 30 "
                       r"\(invalid control character\)\.") as e:
        list(coll.iter_docs())
    assert "at at" not in str(e.value)


def test_malformed_query_and_qrels_lines(tiny_collection):
    (tiny_collection / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n{"text": "no id"}\n')
    with pytest.raises(CollectionError, match=r"queries\.jsonl, line 2: expected a JSON object with an \"_id\""):
        load_collection(str(tiny_collection))
    write_beir(tiny_collection, {"d1": "x"}, {"q1": "x"}, [])
    (tiny_collection / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(CollectionError, match=r"test\.tsv, line 2: relevance score 'high' is not a number"):
        load_collection(str(tiny_collection))
    (tiny_collection / "qrels" / "test.tsv").write_text("q1 d1 1\n")
    with pytest.raises(CollectionError, match=r"test\.tsv, line 1: expected 3 tab-separated columns"):
        load_collection(str(tiny_collection))


def test_qrels_to_unknown_docs_are_counted_not_fatal(tiny_collection):
    with open(tiny_collection / "qrels" / "test.tsv", "a") as f:
        f.write("q1\tghost-1\t1\nq2\tghost-2\t1\n")
    topics = load_topics(str(tiny_collection))
    assert topics.judged.unknown_docs == 2
    assert any("2 judgement(s) name documents that are not in the corpus" in w for w in topics.warnings)


def test_zero_judged_queries_is_an_error(tmp_path, cache_dir):
    folder = write_beir(tmp_path / "c", {"d1": "a b"}, {"q1": "a"}, [("q1", "d1", 0), ("q9", "d1", 1)])
    with pytest.raises(CollectionError, match="has no query with a judgement >= 1"):
        load_collection(str(folder))


def test_relevance_threshold_and_remap(tiny_collection):
    coll = load_collection(str(tiny_collection), CollectionSettings(min_relevance=2))
    assert [q for q, _ in coll.queries] == ["q1", "q2"]
    coll = load_collection(str(tiny_collection), CollectionSettings(relevance_map={2: 0}))
    assert coll.qrels["q1"] == {"d7": 1}


def test_seeded_query_cap(tiny_collection):
    a = load_collection(str(tiny_collection), CollectionSettings(query_cap=2, query_cap_seed=7))
    b = load_collection(str(tiny_collection), CollectionSettings(query_cap=2, query_cap_seed=7))
    assert len(a.queries) == 2 and a.queries == b.queries


def test_builtin_unknown():
    with pytest.raises(CollectionError, match="unknown built-in"):
        load_collection("builtin:nothing")


@pytest.mark.shared_data
def test_ir_datasets_cranfield_is_remapped_like_local(shared_env):
    irds, local = load_collection("cranfield"), load_collection("local:cranfield")
    assert len(irds.queries) == len(local.queries) == 225
    assert sum(map(len, irds.qrels.values())) == sum(map(len, local.qrels.values())) == 1612
    q = irds.queries[0][0]
    assert irds.qrels[q] == local.qrels[q]  # ids match between the two distributions


@pytest.mark.shared_data
def test_offline_missing_ir_datasets_collection_explains(shared_env):
    with pytest.raises(CollectionError, match="IR_DATASETS_HOME"):
        load_collection("beir/arguana")
