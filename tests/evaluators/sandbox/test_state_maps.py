"""Large string-keyed dicts in a shared prepare() state (state_wire's compact maps): written as one node, read
back equal, refused when forged; a program whose state is such a table is shared across candidates."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evorank.evaluators.sandbox.state_wire import (MAX_NODES, InvalidState, build_state, encode_state, read_state,
                                                   write_state)


def roundtrip(state, tmp_path):
    path = tmp_path / "state.bin"
    with open(path, "wb") as f:
        assert write_state(f.write, state, {}, 1 << 30)
    desc = read_state(path, {})
    return build_state(desc["root"], path, {}), path


def test_a_table_of_many_small_arrays_is_one_node_and_comes_back_equal(tmp_path):
    rng = np.random.default_rng(0)
    table = {f"w{i}é東": rng.integers(0, 1000, size=rng.integers(0, 6)) for i in range(20_000)}
    assert len(table) > MAX_NODES
    state = (np.arange(3.0), table, {f"k{i}": i * 7 for i in range(100)}, {f"f{i}": i / 3 for i in range(50)},
             {"small": np.arange(2)})
    header, arrays = encode_state(state, {})
    assert len(json.loads(header)["root"]["items"]) == 5 and len(header) < 4096
    back, _ = roundtrip(state, tmp_path)
    assert list(back[1]) == list(table) and all(np.array_equal(back[1][k], v) and back[1][k].dtype == v.dtype
                                                for k, v in table.items())
    assert back[2] == state[2] and back[3] == state[3] and np.array_equal(back[4]["small"], np.arange(2))
    assert all(type(v) is int for v in back[2].values()) and all(type(v) is float for v in back[3].values())


@pytest.mark.parametrize("table", [
    {f"k{i}": (np.arange(2) if i % 2 else np.arange(2.0)) for i in range(40)},  # two dtypes
    {f"k{i}": np.zeros((2, 2)) for i in range(40)},                            # 2-D values
    {**{f"k{i}": i for i in range(40)}, "x": 1.5},                             # mixed kinds
])
def test_other_tables_take_the_general_path(table, tmp_path):
    header, _ = encode_state(table, {})
    assert json.loads(header)["root"]["t"] == "dict"
    back, _ = roundtrip(table, tmp_path)
    assert list(back) == list(table)


def forge(tmp_path, edit):
    state = {f"k{i}": np.arange(i % 4) for i in range(40)}
    _, path = roundtrip(state, tmp_path)
    data = bytearray(path.read_bytes())
    edit(data)
    path.write_bytes(bytes(data))
    return path


def test_forged_compact_maps_are_refused(tmp_path):
    def header_of(data):
        n = int.from_bytes(data[6:10], "little")
        return json.loads(bytes(data[10:10 + n])), n

    def rewrite(data, change):
        head, n = header_of(data)
        change(head)
        new = json.dumps(head, separators=(",", ":")).encode()
        assert len(new) <= n
        data[10:10 + n] = new + b" " * (n - len(new))

    def put(data, field, raw: bytes):
        head, _ = header_of(data)
        at = head["offsets"][head["root"][field]["array"]]
        data[at:at + len(raw)] = raw

    for edit in (lambda d: rewrite(d, lambda h: h["root"].update(kind="ints")),       # values of another kind
                 lambda d: rewrite(d, lambda h: h["root"].pop("ptr")),               # offsets missing
                 lambda d: put(d, "ptr", np.array([0, 5], dtype="<i8").tobytes()),   # offsets not monotone
                 lambda d: put(d, "key_ptr", np.array([1], dtype="<i8").tobytes()),  # not from 0
                 lambda d: put(d, "text", b"k0k0"),                                  # "k0" twice
                 lambda d: put(d, "text", b"\xff\xfe")):                             # not UTF-8
        path = forge(tmp_path, edit)
        with pytest.raises(InvalidState):
            read_state(path, {})


TABLE_PROGRAM = '''import numpy as np

# EVOLVE-BLOCK-START
def prepare(index):
    by_prefix = {}
    for t, s in enumerate(index.terms):
        by_prefix.setdefault(s[:3], []).append(t)
    table = {f"{p}|{i}": np.array(ts, dtype=np.int64) for i in range(40) for p, ts in by_prefix.items()}
    return np.asarray(index.df, dtype=np.float64), table


def score(query, index, state):
    df, table = state
    s = np.zeros(index.n_docs)
    for w in query.terms:
        for t in table.get(w[:3] + "|0", ()):
            docs, tf = index.postings(t)
            s[docs] += tf / (1.0 + df[t])
    return np.where(s > 0, s, -np.inf)
# EVOLVE-BLOCK-END
'''


def test_a_program_returning_a_large_str_keyed_table_shares_its_prepare():
    from evorank.evaluators.evaluate import load_topics
    from evorank.evaluators.sandbox.runner import Limits, run_sandboxed

    demo = load_topics("builtin:demo")
    source = TABLE_PROGRAM.replace("range(40)", f"range({40 + 1})")  # a key of its own in the session's cache
    limits = Limits(timeout_s=60, reuse_prepare=True)
    first = run_sandboxed(source, demo.index, demo.queries, 100, limits)
    again = run_sandboxed(source.replace("s[docs] += tf", "s[docs] += 2.0 * tf"), demo.index, demo.queries, 100, limits)
    assert first.ok and again.ok, (first.reason, first.message, again.reason, again.message)
    assert (first.prepare_reused, again.prepare_reused) == (0, 1)
    for a, b in zip(first.ranking.doc_idx, again.ranking.doc_idx):
        assert np.array_equal(a, b)


def test_empty_arrays_of_different_dtypes_come_back_with_their_own_dtype(tmp_path):
    """Empty arrays take no bytes, so several may sit at one offset of the stream: a sparse matrix without entries
    (float data, int32 indices) is rebuilt with each part's own dtype."""
    import scipy.sparse as sp

    empty = sp.csr_matrix((np.zeros(0), np.zeros(0, dtype=np.int32), np.zeros(4, dtype=np.int32)), shape=(3, 5))
    back, _ = roundtrip((empty, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)), tmp_path)
    assert back[0].indices.dtype == np.int32 and back[0].data.dtype == np.float64 and back[0].shape == (3, 5)
    assert back[1].dtype == np.int64 and back[2].dtype == np.float32
