"""``prepare()`` state as plain data: written by the harness inside a jail, validated and rebuilt by trusted code.

The state a candidate's ``prepare`` returns can be kept for the next candidate whose ``prepare`` is the same
code (``prepare_key``). It never crosses as an object: the jail writes it as bytes (``write_state``), the worker
parses them with ``read_state`` (a JSON description checked node by node, array bytes checked against it,
sparse matrices checked for structure), and a later jail receives new objects built by trusted code
(``build_state``) over a private copy-on-write mapping of the validated bytes. Only these kinds travel:

    None, bool, int, float, str, numpy scalars and ndarrays of bool / int / uint / float dtypes,
    tuple, list, dict (str or int keys), scipy.sparse csr/csc matrices and arrays

A large dict with str keys whose values are all ints, all floats, or all 1-D arrays of one dtype (a term ->
variants table, a prefix -> term ids map) travels compactly, as one node: its keys as one UTF-8 buffer with
offsets, its values as one array (with offsets for arrays); it comes back as a dict of the same keys, with ints,
floats, or views of that array.

anything else (a class the program defined, an object array, a function) makes the state not shareable: the
next candidate simply runs its own ``prepare``. Arrays that *are* the index's own arrays (``csr_matrix((w,
td.indices, td.indptr))`` shares them) travel as a reference by name and come back as the index's arrays.

What a state writes is what it holds: two arrays whose memory overlaps (views of one buffer, slices of one
index array) or an array that repeats its memory (a zero stride, ``np.broadcast_to``) make it not shareable,
so the bytes on disk never exceed the memory the state occupies; the worker bounds the whole stream relative
to the index (``prepared.state_cap``).

Stream: ``MAGIC``, u32 header length, JSON header, then each array's bytes at the offset the header gives
(64-byte aligned, from the start of the stream), then ``TRAILER`` + u64 stream length.
"""
from __future__ import annotations

import json
import math
import mmap
import struct

import numpy as np
import scipy.sparse as sp

MAGIC = b"EVST1\n"
TRAILER = b"EVEND\n"
ALIGN = 64
MAX_HEADER_BYTES = 8 << 20
#: Values (containers, scalars, arrays) a shared state may hold. Encoding runs in the jail after the timed
#: ``prepare`` and is charged to its CPU time, which the worker checks against the timed work (runner.py); at ~34
#: us a node on a 2-core AVX2 machine (the variants direction's program, a dict of 11,480 small arrays, took 389 ms
#: to encode and failed a query-sample run as latency_mismatch), 2,048 nodes keep it under ~70 ms. A larger state is
#: simply not shared: the next candidate runs its own prepare.
MAX_NODES = 2_048
MAX_DEPTH = 32
MAX_NDIM = 4
#: A dict of more than this many str keys with uniform values is written compactly (one node, four arrays).
COMPACT_MAP_MIN = 16
#: Keys of one compactly written dict.
MAX_MAP_KEYS = 1 << 24
MAX_STR = 1 << 16
#: dtypes an array or scalar may have (little-endian, as numpy names them)
DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"})
#: dtypes of a sparse matrix's ``indices`` and ``indptr`` (what scipy itself uses: signed, so that an order check
#: on their differences cannot wrap around)
_INDEX_DTYPES = frozenset({"<i4", "<i8"})

# Captured when the harness imports this module, before any candidate code runs.
_ndarray, _dtype_cls = np.ndarray, np.dtype
_SPARSE = {"csr_matrix": sp.csr_matrix, "csc_matrix": sp.csc_matrix, "csr_array": sp.csr_array,
           "csc_array": sp.csc_array}
_SPARSE_NAME = {cls: name for name, cls in _SPARSE.items()}
_SCALARS = {np.bool_: "|b1", np.int8: "|i1", np.uint8: "|u1", np.int16: "<i2", np.uint16: "<u2", np.int32: "<i4",
            np.uint32: "<u4", np.int64: "<i8", np.uint64: "<u8", np.float16: "<f2", np.float32: "<f4",
            np.float64: "<f8"}
_ascontiguous, _frombuffer = np.ascontiguousarray, np.frombuffer
_concatenate, _cumsum, _zeros = np.concatenate, np.cumsum, np.zeros


def index_arrays(index) -> dict[str, np.ndarray]:
    """The index's shared arrays by name (the names a state may refer to)."""
    out = {}
    for name in ("doc_len", "df", "cf", "doc_tokens", "doc_positions", "posting_positions", "title_tf", "title_len"):
        a = getattr(index, name, None)
        if isinstance(a, np.ndarray):
            out[name] = a
    for m in ("term_doc", "doc_term"):
        mat = getattr(index, m, None)
        for part in ("data", "indices", "indptr"):
            a = getattr(mat, part, None)
            if isinstance(a, np.ndarray):
                out[f"{m}.{part}"] = a
    return out


def array_fingerprints(index) -> dict[tuple, str]:
    """(address, dtype, shape) -> name of each index array: taken in the jail before the program runs, so that
    recognising references later calls no code the program could have replaced."""
    out = {}
    for name, a in index_arrays(index).items():
        out[(a.__array_interface__["data"][0], a.dtype.str, a.shape)] = name
    return out


# -- writing (inside the jail) -------------------------------------------------------------------------

class NotShareable(Exception):
    pass


def encode_state(state, fingerprints: dict[tuple, str]) -> tuple[bytes, list]:
    """(JSON header, arrays to write in order). Raises NotShareable for anything outside the kinds above."""
    arrays: list[np.ndarray] = []
    slots: dict[int, dict] = {}
    count = [0]

    def slot(a) -> dict:
        if a.dtype.str not in DTYPES:
            raise NotShareable(a.dtype.str)
        key = id(a)
        if key in slots:
            return slots[key]
        ref = fingerprints.get((a.__array_interface__["data"][0], a.dtype.str, a.shape))
        if ref is not None and a.flags.c_contiguous:
            s = {"ref": ref}
        else:
            s = {"dtype": a.dtype.str, "shape": list(a.shape), "array": len(arrays),
                 "writeable": bool(a.flags.writeable)}
            arrays.append(a)
        slots[key] = s
        return s

    def index_slot(a) -> dict:  # a sparse matrix's indices / indptr: signed integers only
        if a.dtype.str not in _INDEX_DTYPES:
            raise NotShareable(a.dtype.str)
        return slot(a)

    def node(x, depth: int) -> dict:
        count[0] += 1
        if count[0] > MAX_NODES or depth > MAX_DEPTH:
            raise NotShareable("too large")
        t = type(x)
        if x is None:
            return {"t": "none"}
        if t is bool:
            return {"t": "bool", "v": x}
        if t is int:
            if not -2**63 < x < 2**63:
                raise NotShareable("int")
            return {"t": "int", "v": x}
        if t is float:
            return {"t": "float", "v": repr(x)}
        if t is str:
            if len(x) > MAX_STR:
                raise NotShareable("str")
            return {"t": "str", "v": x}
        if t in _SCALARS:
            return {"t": "scalar", "dtype": _SCALARS[t], "v": x.tobytes().hex()}
        if t is _ndarray:
            if x.ndim > MAX_NDIM:
                raise NotShareable("ndim")
            return {"t": "ndarray", "a": slot(x)}
        if t is tuple or t is list:
            return {"t": "tuple" if t is tuple else "list", "items": [node(v, depth + 1) for v in x]}
        if t is dict and len(x) > COMPACT_MAP_MIN:
            compact = str_map(x, slot)
            if compact is not None:
                return compact
        if t is dict:
            keys = list(x.keys())
            if any(type(k) is not str and type(k) is not int for k in keys):
                raise NotShareable("dict key")
            return {"t": "dict", "keys": [node(k, depth + 1) for k in keys],
                    "values": [node(x[k], depth + 1) for k in keys]}
        if t in _SPARSE_NAME:
            parts = {}
            for part in ("data", "indices", "indptr"):
                a = x.__dict__.get(part)  # the instance's own attribute: no descriptor of the program runs
                if type(a) is not _ndarray or a.ndim != 1:
                    raise NotShareable(part)
                parts[part] = slot(a) if part == "data" else index_slot(a)
            shape = x.__dict__.get("_shape")
            if type(shape) is not tuple or len(shape) != 2 or any(type(v) is not int or not 0 <= v < 2**62
                                                                  for v in shape):
                raise NotShareable("shape")
            check_sparse(x.__dict__["data"], x.__dict__["indices"], x.__dict__["indptr"], shape, _SPARSE_NAME[t],
                         NotShareable)
            return {"t": _SPARSE_NAME[t], "shape": list(shape), **parts}
        raise NotShareable(t.__name__)

    root = node(state, 0)
    _check_extents(arrays)
    header, length = b"", -1
    while len(header) != length:  # the header's own length moves the offsets: settle it
        length = len(header)
        at = _align(len(MAGIC) + 4 + length)
        offsets = []
        for a in arrays:
            offsets.append(at)
            at = _align(at + a.size * a.dtype.itemsize)
        header = json.dumps({"root": root, "offsets": offsets}, separators=(",", ":")).encode()
        if len(header) > MAX_HEADER_BYTES:
            raise NotShareable("header")
    return header, arrays


def _extent(a) -> tuple[int, int]:
    """[first, last) byte addresses an array's elements occupy (from its interface: no code of the program runs,
    ``a`` is an exact ndarray)."""
    low = high = a.__array_interface__["data"][0]
    if a.size == 0:
        return low, low
    for n, st in zip(a.shape, a.strides):
        if st < 0:
            low += (n - 1) * st
        else:
            high += (n - 1) * st
    return low, high + a.itemsize


def _check_extents(arrays: list) -> None:
    """Each byte of memory is written at most once: an array whose elements repeat memory (a zero stride) or two
    arrays that overlap (views of one buffer) make the state not shareable (its stream would be larger than what
    the state occupies: disk amplification)."""
    spans = []
    for a in arrays:
        low, high = _extent(a)
        if a.size * a.itemsize > high - low:
            raise NotShareable("repeated memory")
        if high > low:
            spans.append((low, high))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            raise NotShareable("overlapping arrays")


def str_map(x: dict, slot):
    """The compact node of a dict of str keys and uniform values (all ints, all floats, or all 1-D arrays of one
    dtype), its arrays given to ``slot``; None for any other dict."""
    keys, values = list(x.keys()), list(x.values())
    if any(type(k) is not str or len(k) > MAX_STR for k in keys) or len(keys) > MAX_MAP_KEYS:
        return None
    kinds = {type(v) for v in values}
    if kinds == {int}:
        if any(not -2**63 < v < 2**63 for v in values):
            return None
        flat, ptr, kind = _ascontiguous(values, dtype="<i8"), None, "ints"
    elif kinds == {float}:
        flat, ptr, kind = _ascontiguous(values, dtype="<f8"), None, "floats"
    elif kinds == {_ndarray} and len({v.dtype.str for v in values}) == 1 and all(v.ndim == 1 for v in values) \
            and values[0].dtype.str in DTYPES:
        lengths = [len(v) for v in values]
        flat = _ascontiguous(_concatenate(values))
        ptr, kind = _ascontiguous(_cumsum([0] + lengths), dtype="<i8"), "arrays"
    else:
        return None
    raw = [k.encode("utf-8") for k in keys]
    text = _ascontiguous(_frombuffer(b"".join(raw), dtype="|u1")) if raw else _zeros(0, dtype="|u1")
    key_ptr = _ascontiguous(_cumsum([0] + [len(r) for r in raw]), dtype="<i8")
    out = {"t": "strmap", "kind": kind, "text": slot(text), "key_ptr": slot(key_ptr), "values": slot(flat)}
    if ptr is not None:
        out["ptr"] = slot(ptr)
    return out


def state_bytes(arrays: list) -> int:
    """Bytes of array data a state will write (to compare with a cap before writing)."""
    return sum(a.size * a.dtype.itemsize for a in arrays)


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def write_state(write, state, fingerprints: dict[tuple, str], max_bytes: int) -> bool:
    """Write ``state`` with ``write(bytes)``; False (nothing written) when it is not shareable or its arrays hold
    more than ``max_bytes``."""
    try:
        header, arrays = encode_state(state, fingerprints)
    except (NotShareable, RecursionError, ValueError, TypeError, AttributeError):
        return False
    if state_bytes(arrays) > max_bytes:
        return False
    pos = 0

    def put(data) -> None:
        nonlocal pos
        write(data)
        pos += len(data)

    put(MAGIC + struct.pack("<I", len(header)) + header)
    offsets = json.loads(header)["offsets"]
    for a, off in zip(arrays, offsets):
        put(b"\0" * (off - pos))
        data = memoryview(_ascontiguous(a)).cast("B")
        for i in range(0, len(data), 1 << 22):
            put(data[i:i + (1 << 22)])
    put(b"\0" * (_align(pos) - pos))
    put(TRAILER + struct.pack("<Q", pos + len(TRAILER) + 8))
    return True


# -- reading (the worker, trusted) ---------------------------------------------------------------------

class InvalidState(Exception):
    """A complete stream that the honest writer could not have produced (the jail wrote its own bytes)."""


class IncompleteState(InvalidState):
    """A stream without its trailer: the writer stopped half-way (e.g. out of memory copying an array)."""


def read_state(path, n_index: dict[str, np.ndarray]) -> dict:
    """Validate a captured stream file; returns its description (what ``build_state`` needs). ``n_index``: the
    index's arrays by name (references must name one of them). Raises IncompleteState for a stream cut short and
    InvalidState for anything else wrong, whatever the bytes make the parser do (any exception, a header nested
    too deep for the JSON parser, ...): the stream is the jail's, and nothing in it may raise past this function.
    Every check here is also made by the writer, so an honest jail never sends a stream that fails them."""
    try:
        return _read_state(path, n_index)
    except InvalidState:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed stream, whatever it made the checks do
        raise InvalidState(f"malformed stream ({type(e).__name__})") from None


def _read_state(path, n_index: dict[str, np.ndarray]) -> dict:
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < len(MAGIC) + 4 + len(TRAILER) + 8:
            raise IncompleteState("incomplete stream")
        f.seek(size - len(TRAILER) - 8)
        tail = f.read(len(TRAILER) + 8)
        if tail[:len(TRAILER)] != TRAILER or struct.unpack("<Q", tail[len(TRAILER):])[0] != size:
            raise IncompleteState("incomplete stream")
        f.seek(0)
        head = f.read(len(MAGIC) + 4)
        if head[:len(MAGIC)] != MAGIC:
            raise InvalidState("bad magic")
        (hlen,) = struct.unpack("<I", head[len(MAGIC):])
        if hlen > MAX_HEADER_BYTES or len(MAGIC) + 4 + hlen > size:
            raise InvalidState("bad header length")
        try:
            header = json.loads(f.read(hlen))
        except (ValueError, RecursionError):
            raise InvalidState("header is not JSON (or nested too deep)") from None
    if not isinstance(header, dict) or set(header) != {"root", "offsets"} or not isinstance(header["offsets"], list):
        raise InvalidState("bad header")
    offsets = header["offsets"]
    data_end = size - len(TRAILER) - 8
    start = _align(len(MAGIC) + 4 + hlen)
    slots: list[dict] = []
    count = [0]

    def is_int(v, low: int = 0, high: int = 2**62) -> bool:
        return type(v) is int and low <= v < high

    def check_slot(s, index_part: bool = False) -> dict:
        if not isinstance(s, dict):
            raise InvalidState("bad array slot")
        if set(s) == {"ref"}:
            if type(s["ref"]) is not str or s["ref"] not in n_index:
                raise InvalidState("reference to an unknown array")
            if index_part and n_index[s["ref"]].dtype.str not in _INDEX_DTYPES:
                raise InvalidState("sparse index array of a bad type")
            return {"ref": s["ref"]}
        if set(s) != {"dtype", "shape", "array", "writeable"} or type(s["dtype"]) is not str \
                or s["dtype"] not in (_INDEX_DTYPES if index_part else DTYPES) \
                or not isinstance(s["shape"], list) or not 0 <= len(s["shape"]) <= MAX_NDIM \
                or not all(is_int(v) for v in s["shape"]) or not is_int(s["array"], 0, len(offsets)) \
                or type(s["writeable"]) is not bool:
            raise InvalidState("bad array slot")
        off = offsets[s["array"]]
        nbytes = math.prod(s["shape"]) * np.dtype(s["dtype"]).itemsize
        if not is_int(off) or off < start or off % ALIGN or off + nbytes > data_end:
            raise InvalidState("array outside the stream")
        out = {"dtype": s["dtype"], "shape": s["shape"], "offset": off, "writeable": s["writeable"]}
        slots.append(out)
        return out

    def check(n, depth: int) -> dict:
        count[0] += 1
        if count[0] > MAX_NODES or depth > MAX_DEPTH or not isinstance(n, dict) or not isinstance(n.get("t"), str):
            raise InvalidState("bad node")
        t = n["t"]
        fields = set(n) - {"t"}
        if t == "none" and not fields:
            return n
        if t == "bool" and fields == {"v"} and type(n["v"]) is bool:
            return n
        if t == "int" and fields == {"v"} and is_int(n["v"], -2**63 + 1, 2**63):
            return n
        if t == "float" and fields == {"v"} and type(n["v"]) is str and len(n["v"]) < 40:
            try:
                float(n["v"])
            except ValueError:
                raise InvalidState("bad float") from None
            return n
        if t == "str" and fields == {"v"} and type(n["v"]) is str and len(n["v"]) <= MAX_STR:
            return n
        if t == "scalar" and fields == {"dtype", "v"} and type(n["dtype"]) is str and n["dtype"] in DTYPES \
                and type(n["v"]) is str and len(n["v"]) == 2 * np.dtype(n["dtype"]).itemsize:
            try:
                bytes.fromhex(n["v"])
            except ValueError:
                raise InvalidState("bad scalar") from None
            return n
        if t == "ndarray" and fields == {"a"}:
            return {"t": t, "a": check_slot(n["a"])}
        if t in ("tuple", "list") and fields == {"items"} and isinstance(n["items"], list):
            return {"t": t, "items": [check(v, depth + 1) for v in n["items"]]}
        if t == "strmap" and n.get("kind") in ("ints", "floats", "arrays") \
                and fields == ({"kind", "text", "key_ptr", "values"} | ({"ptr"} if n["kind"] == "arrays" else set())):
            return {"t": t, "kind": n["kind"], **{f: check_slot(n[f]) for f in fields - {"kind"}}}
        if t == "dict" and fields == {"keys", "values"} and isinstance(n["keys"], list) \
                and isinstance(n["values"], list) and len(n["keys"]) == len(n["values"]):
            keys = [check(k, depth + 1) for k in n["keys"]]
            if any(k["t"] not in ("str", "int") for k in keys):
                raise InvalidState("bad dict key")
            return {"t": t, "keys": keys, "values": [check(v, depth + 1) for v in n["values"]]}
        if t in _SPARSE and fields == {"shape", "data", "indices", "indptr"} and isinstance(n["shape"], list) \
                and len(n["shape"]) == 2 and all(is_int(v) for v in n["shape"]):
            return {"t": t, "shape": n["shape"], "data": check_slot(n["data"]),
                    **{p: check_slot(n[p], index_part=True) for p in ("indices", "indptr")}}
        raise InvalidState("bad node")

    root = check(header["root"], 0)
    _check_no_overlap(slots)
    desc = {"root": root, "size": size}
    build_state(root, path, n_index, check=True)  # every sparse matrix well formed (check_sparse)
    return desc


def _check_no_overlap(slots: list[dict]) -> None:
    spans = sorted({(s["offset"], math.prod(s["shape"]) * np.dtype(s["dtype"]).itemsize) for s in slots})
    for (a, n), (b, _) in zip(spans, spans[1:]):
        if a + n > b:
            raise InvalidState("overlapping arrays")


#: Pointers are checked for order this many at a time (a bounded temporary, whatever the matrix's size).
_CHUNK = 1 << 20


def check_sparse(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape, kind: str, error=InvalidState):
    """Raise ``error`` unless (data, indices, indptr) is a well-formed ``kind`` matrix of ``shape``: 1-D parts,
    signed integer indices and pointers, pointers non-decreasing from 0 to nnz, indices within the other dimension
    (so that no program is handed a matrix that makes scipy read outside an array). The writer (in the jail)
    and the reader (the worker) run the same checks."""
    rows, cols = shape
    major, minor = (rows, cols) if kind.startswith("csr") else (cols, rows)
    if data.ndim != 1 or indices.ndim != 1 or indptr.ndim != 1 or len(data) != len(indices) \
            or indices.dtype.str not in _INDEX_DTYPES or indptr.dtype.str not in _INDEX_DTYPES \
            or len(indptr) != major + 1:
        raise error("malformed sparse matrix")
    if indptr[0] != 0 or indptr[-1] != len(indices):
        raise error("malformed sparse matrix pointers")
    for i in range(0, len(indptr) - 1, _CHUNK):
        if (np.diff(indptr[i:i + _CHUNK + 1]) < 0).any():
            raise error("sparse matrix pointers out of order")
    if len(indices) and (indices.min() < 0 or indices.max() >= minor):
        raise error("sparse matrix indices out of range")


# -- rebuilding (the worker, trusted) ------------------------------------------------------------------

def build_state(root: dict, path, n_index: dict[str, np.ndarray], check: bool = False):
    """New objects for a validated description, over a private (copy-on-write) mapping of the stream file:
    the receiving program may modify them, and its changes stay in its own process."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) if size else None
    made: dict[tuple, np.ndarray] = {}

    def array(s: dict) -> np.ndarray:
        if "ref" in s:
            return n_index[s["ref"]].view(_ndarray)
        key = (s["offset"], s["dtype"], tuple(s["shape"]))  # empty arrays of any dtype may share an offset
        if key not in made:
            dt = np.dtype(s["dtype"])
            count = math.prod(s["shape"])
            a = _frombuffer(mm, dtype=dt, count=count, offset=s["offset"]).reshape(s["shape"])
            if not s["writeable"]:
                a.flags.writeable = False
            made[key] = a
        return made[key]

    def build(n: dict):
        t = n["t"]
        if t == "none":
            return None
        if t in ("bool", "int", "str"):
            return n["v"]
        if t == "float":
            return float(n["v"])
        if t == "scalar":
            return _frombuffer(bytes.fromhex(n["v"]), dtype=np.dtype(n["dtype"]))[0]
        if t == "ndarray":
            return array(n["a"])
        if t == "tuple":
            return tuple(build(v) for v in n["items"])
        if t == "list":
            return [build(v) for v in n["items"]]
        if t == "dict":
            return {build(k): build(v) for k, v in zip(n["keys"], n["values"])}
        if t == "strmap":
            return _build_str_map(n, array, check)
        data, indices, indptr = (array(n[p]) for p in ("data", "indices", "indptr"))
        if check:
            check_sparse(data, indices, indptr, n["shape"], t)
        return _SPARSE[t]((data, indices, indptr), shape=tuple(n["shape"]), copy=False)

    return build(root)


def _build_str_map(n: dict, array, check: bool) -> dict:
    """The dict a compact node describes: keys decoded from the UTF-8 buffer, values as ints, floats or views of
    the values array. With ``check``: offsets monotone from 0 to each buffer's end, keys valid UTF-8 and unique,
    values of the kind said."""
    text, key_ptr, values = array(n["text"]), array(n["key_ptr"]), array(n["values"])
    ptr = array(n["ptr"]) if n["kind"] == "arrays" else None
    if check:
        n_keys = len(key_ptr) - 1
        want = {"ints": "<i8", "floats": "<f8"}.get(n["kind"])
        if text.dtype.str != "|u1" or key_ptr.dtype.str != "<i8" or key_ptr.ndim != 1 or not 0 <= n_keys <= MAX_MAP_KEYS \
                or values.ndim != 1 or (want is not None and (values.dtype.str != want or len(values) != n_keys)):
            raise InvalidState("malformed compact map")
        for offsets, end in ((key_ptr, len(text)), *(((ptr, len(values)),) if ptr is not None else ())):
            if offsets.dtype.str != "<i8" or offsets.ndim != 1 or len(offsets) != n_keys + 1 or offsets[0] != 0 \
                    or offsets[-1] != end or (np.diff(offsets) < 0).any():
                raise InvalidState("malformed compact map offsets")
        if n_keys and (np.diff(key_ptr) > 4 * MAX_STR).any():
            raise InvalidState("compact map key too long")
    data = bytes(text)
    bounds = key_ptr.tolist()
    try:
        keys = [data[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:])]
    except UnicodeDecodeError:
        raise InvalidState("compact map key is not UTF-8") from None
    if check and len(set(keys)) != len(keys):
        raise InvalidState("compact map repeats a key")
    if n["kind"] == "ints":
        return dict(zip(keys, values.tolist()))
    if n["kind"] == "floats":
        return dict(zip(keys, values.tolist()))
    at = ptr.tolist()
    return {k: values[a:b] for k, a, b in zip(keys, at, at[1:])}


#: madvise advice that faults a mapping's pages into this process's page tables now (Linux >= 5.14).
MADV_POPULATE_READ = 22
PAGE = mmap.PAGESIZE


def populate_state(state) -> int:
    """Map in now, in this process, every page of the files ``state``'s arrays live in; returns the bytes.

    A state rebuilt by ``build_state`` lies in file mappings (its stream, the index's arrays) whose page-table
    entries a forked jail does not inherit, while a ``prepare`` run in the jail leaves its state's pages mapped.
    Mapping them before the timed queries keeps the per-query latency of a reused state comparable with a
    computed one (the time is reported as the run's prepare time). One ``madvise`` per mapping (~0.03 s for
    the 380 MB of the BM25 state at 1M documents, pages in the page cache), or one read per page where the
    kernel does not know the advice."""
    maps: dict[int, mmap.mmap] = {}

    def visit(node, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        if isinstance(node, _ndarray):
            base = node
            while isinstance(base, (_ndarray, memoryview)):
                base = base.obj if isinstance(base, memoryview) else base.base
            if isinstance(base, mmap.mmap):
                maps[id(base)] = base
        elif type(node) in _SPARSE_NAME:
            for part in (node.data, node.indices, node.indptr):
                visit(part, depth + 1)
        elif isinstance(node, (tuple, list)):
            for v in node:
                visit(v, depth + 1)
        elif isinstance(node, dict):
            for v in node.values():
                visit(v, depth + 1)

    visit(state, 0)
    total = 0
    for mm in maps.values():
        try:
            mm.madvise(MADV_POPULATE_READ)
        except (OSError, ValueError):
            _frombuffer(mm, dtype=np.uint8)[::PAGE].sum()
        total += len(mm)
    return total


class JailReuse:
    """What a jail is told about ``prepare``: ``state`` to use instead of calling it (when ``reused``), or a pipe
    (``capture_fd``) to write the state it computes into, at most ``max_bytes`` of arrays."""

    __slots__ = ("reused", "state", "capture_fd", "max_bytes")

    def __init__(self, reused: bool = False, state=None, capture_fd: int = -1, max_bytes: int = 0):
        self.reused, self.state, self.capture_fd, self.max_bytes = reused, state, capture_fd, max_bytes
