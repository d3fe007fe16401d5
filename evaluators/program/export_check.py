"""What an exported scorer may contain: an allowlist, checked before ``evorank export`` writes a program out.

During a run candidate code runs only in the jail, and the static checks of ``checks.py`` are a filter in front
of it (a denylist: they name what is refused). An exported scorer runs in the user's own process with nothing
around it, so ``export`` writes only programs that stay inside a small, explicit subset of Python: every
construct, name, module, module member and attribute the program uses must be on the lists below, and anything
not listed is refused with its line and the reason. What the lists allow is the array work of ranking
functions over the contract's ``index`` and ``query``; what they leave out is every way to reach code or data
the program was not handed (double-underscore names and attributes, reading attributes by a computed name,
classes, most decorators, builtins such as ``type``, ``getattr`` or ``id``, numpy over raw memory).

The rules (``verify_exportable``), each violation named ``export:<rule> <what>``:

- ``construct``: statements and expressions of ``ALLOWED_NODES`` only: functions (``def``, ``lambda``),
  assignments, ``if``/``for``/``while``/``with``/``try``, comprehensions, arithmetic, calls, subscripts; no
  ``class``, ``async``, ``match``, ``global``/``nonlocal``.
- ``name``: no name starts with ``__``; a name the program reads is one it binds itself (a function, argument,
  variable, import) or a builtin of ``ALLOWED_BUILTINS``; no other builtin's name is used at all.
- ``import``: only the modules of ``MODULE_MEMBERS``, imported by name (no ``*``, no relative import);
  ``from M import x`` only for a member ``x`` of ``M``.
- ``module``: ``np.x`` only for ``x`` in ``MODULE_MEMBERS["numpy"]`` (and so on for each module, submodules
  followed: ``np.random.default_rng``); a module is only ever written before a dot.
- ``attribute``: any other attribute is one of ``OBJECT_ATTRIBUTES`` (the contract's ``index``/``query``/field
  attributes, numpy arrays and ufuncs, sparse matrices, list/dict/set/str methods); attributes are never
  assigned or deleted.
- ``decorator``: only ``functools.lru_cache`` and ``functools.cache``.
- ``string``: no string literal containing ``__`` (docstrings aside).
- ``control_character``: no control or invisible formatting character anywhere (Trojan Source; a terminal that
  shows the file would act on ANSI escapes).
- ``literals``: the literal payload bound of ``payload.py``.
- ``sparse``: scipy builds a compressed matrix from ``(data, indices, indptr)`` without checking that the
  indices are in range, and multiplying such a matrix reads and writes outside its arrays. So a compressed
  matrix is built only as ``(data, X.indices, X.indptr)`` with ``shape=X.shape`` of one existing matrix ``X``,
  or from ``(data, (rows, cols))`` (which scipy checks), and a matrix's ``indices``/``indptr`` are never written
  (or a coo matrix's ``row``/``col``) through the attribute (``m.indices[0] = ...``, ``out=m.indptr``,
  ``m.indices.sort()``).

What the verifier does not establish: that numpy and scipy are memory-safe on every input. An index array
taken from a matrix under another name (``ind = m.indices``) and then changed in place is not followed; the
sparse rule closes the direct forms only. ``docs/sandbox.md`` ("The exportable subset") says so.
"""
from __future__ import annotations

import ast
import builtins

from evorank.threadsafe_ast import SourceTooComplex, parse_ast

from .checks import Violation
from .output import first_hidden
from .payload import budget_message, docstring_ids, over_budget

ALLOWED_NODES: tuple[type, ...] = (
    ast.Module, ast.FunctionDef, ast.Return, ast.Delete, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For,
    ast.While, ast.If, ast.With, ast.withitem, ast.Raise, ast.Try, ast.ExceptHandler, ast.Assert, ast.Import,
    ast.ImportFrom, ast.alias, ast.Expr, ast.Pass, ast.Break, ast.Continue,
    ast.BoolOp, ast.NamedExpr, ast.BinOp, ast.UnaryOp, ast.Lambda, ast.IfExp, ast.Dict, ast.Set, ast.ListComp,
    ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.Yield, ast.Compare, ast.Call, ast.keyword,
    ast.FormattedValue, ast.JoinedStr, ast.Constant, ast.Attribute, ast.Subscript, ast.Starred, ast.Name,
    ast.List, ast.Tuple, ast.Slice, ast.arguments, ast.arg,
    ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop,
)

ALLOWED_BUILTINS: frozenset[str] = frozenset({
    "abs", "all", "any", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float", "frozenset", "int",
    "isinstance", "iter", "len", "list", "map", "max", "min", "next", "ord", "pow", "range", "reversed", "round",
    "set", "slice", "sorted", "str", "sum", "tuple", "zip",
    "ArithmeticError", "AssertionError", "Exception", "FloatingPointError", "IndexError", "KeyError",
    "LookupError", "NotImplementedError", "OverflowError", "RuntimeError", "StopIteration", "TypeError",
    "ValueError", "ZeroDivisionError",
})
_OTHER_BUILTINS = frozenset(n for n in dir(builtins) if not n.startswith("_")) - ALLOWED_BUILTINS

_NUMPY = frozenset("""
    abs absolute add all allclose amax amin any append arange arccos arccosh arcsin arcsinh arctan arctan2 arctanh
    argmax argmin argpartition argsort argwhere around array array_equal asarray ascontiguousarray atleast_1d
    atleast_2d average bincount bool bool_ broadcast_arrays broadcast_to cbrt ceil clip column_stack concatenate
    copy corrcoef cos cosh count_nonzero cov cumprod cumsum deg2rad diag diagonal diff digitize divide dot e
    einsum empty empty_like equal errstate exp exp2 expm1 eye fabs finfo flatnonzero flip float16 float32 float64
    floor floor_divide fmax fmin fmod fromiter full full_like geomspace greater greater_equal heaviside histogram
    hstack hypot iinfo inf inner int8 int16 int32 int64 interp intersect1d intp isclose isfinite isin isinf
    isnan isneginf isposinf isscalar ix_ lexsort less less_equal linspace log log10 log1p log2 logaddexp
    logaddexp2 logical_and logical_not logical_or logical_xor logspace matmul max maximum mean median meshgrid min
    minimum mod multiply nan nan_to_num nanargmax nanargmin nanmax nanmean nanmedian nanmin nanpercentile nanstd
    nansum negative newaxis nonzero not_equal ones ones_like outer pad partition percentile pi positive power
    prod ptp quantile rad2deg ravel reciprocal remainder repeat reshape resize rint round searchsorted select
    setdiff1d setxor1d sign sin sinc sinh sort sqrt square squeeze stack std subtract sum swapaxes take
    take_along_axis tan tanh tile trace transpose tril triu true_divide trunc uint8 uint16 uint32 uint64 union1d
    unique unravel_index var vstack where zeros zeros_like
    random linalg
""".split())
MODULE_MEMBERS: dict[str, frozenset[str]] = {
    "numpy": _NUMPY,
    "numpy.random": frozenset({"default_rng"}),
    "numpy.linalg": frozenset({"norm", "svd", "eig", "eigh", "solve", "lstsq", "inv", "pinv", "qr", "det"}),
    "math": frozenset("""
        acos acosh asin asinh atan atan2 atanh cbrt ceil comb copysign cos cosh degrees dist e erf erfc exp exp2
        expm1 fabs factorial floor fmod frexp fsum gamma gcd hypot inf isclose isfinite isinf isnan lcm ldexp lgamma
        log log10 log1p log2 modf nan pi pow prod radians remainder sin sinh sqrt tan tanh tau trunc
    """.split()),
    "scipy": frozenset({"sparse", "special"}),
    "scipy.sparse": frozenset("""
        csr_matrix csc_matrix coo_matrix csr_array csc_array coo_array diags diags_array eye identity hstack vstack
        issparse kron tril triu find spdiags block_diag bmat linalg
    """.split()),
    "scipy.sparse.linalg": frozenset({"norm", "svds", "eigsh"}),
    "scipy.special": frozenset("""
        beta betaln binom comb digamma entr erf erfc expit expm1 gamma gammaln kl_div log1p log_softmax logit
        loggamma logsumexp ndtr ndtri polygamma psi rel_entr softmax xlog1py xlogy zeta
    """.split()),
    "collections": frozenset({"Counter", "defaultdict", "deque", "OrderedDict"}),
    "itertools": frozenset("""
        accumulate chain combinations combinations_with_replacement compress count dropwhile filterfalse groupby
        islice pairwise permutations product repeat starmap takewhile tee zip_longest
    """.split()),
    "functools": frozenset({"reduce", "partial", "lru_cache", "cache", "cmp_to_key"}),
    "heapq": frozenset({"heappush", "heappop", "heapify", "heappushpop", "heapreplace", "nlargest", "nsmallest",
                        "merge"}),
    "re": frozenset({"compile", "findall", "finditer", "fullmatch", "match", "search", "split", "sub", "subn",
                     "escape", "IGNORECASE", "I", "ASCII", "A", "MULTILINE", "M"}),
    "typing": frozenset({"Any", "Callable", "Dict", "FrozenSet", "Iterable", "Iterator", "List", "Mapping",
                         "Optional", "Sequence", "Set", "Tuple", "Union"}),
}

# Attributes of the objects a program is handed or builds (checked by name: the verifier does not infer types).
OBJECT_ATTRIBUTES: frozenset[str] = frozenset("""
    n_docs n_terms doc_len avg_doc_len total_tokens df cf term_doc doc_term postings doc_terms terms term_id
    doc_tokens doc_positions doc_token_ptr doc_token_list posting_positions posting_position_ptr positions
    has_titles title_tf title_len field name
    prefix_groups char_ngrams group members prefixes group_of term_grams gram_terms grams grams_of ids
    text words token_ids term_ids qtf
    T shape ndim size dtype kind itemsize astype copy sum mean std var min max argmin argmax argsort argpartition
    partition sort cumsum cumprod prod ravel flatten reshape squeeze transpose nonzero clip round any all dot
    tolist item fill take repeat searchsorted flat real imag trace diagonal
    reduce reduceat accumulate outer at eps tiny
    data indices indptr nnz tocsr tocsc tocoo toarray todense multiply power maximum minimum eliminate_zeros
    sort_indices sorted_indices sum_duplicates has_sorted_indices getnnz count_nonzero log1p sqrt expm1 sign
    row col getrow getcol
    append extend insert pop remove reverse index count clear get items keys values setdefault update popitem
    fromkeys add discard union intersection difference symmetric_difference issubset issuperset isdisjoint
    most_common elements total subtract appendleft popleft extendleft rotate
    lower upper casefold strip lstrip rstrip split rsplit splitlines join startswith endswith replace find rfind
    partition rpartition isalpha isdigit isalnum isnumeric isspace islower isupper zfill
    group groups start end span findall finditer sub subn match search fullmatch
    random integers normal uniform choice permutation shuffle standard_normal exponential poisson binomial
""".split())

ALLOWED_DECORATORS = frozenset({"functools.lru_cache", "functools.cache"})
_COMPRESSED = frozenset({f"scipy.sparse.{k}" for k in ("csr_matrix", "csc_matrix", "csr_array", "csc_array")})
_INDEX_ARRAYS = frozenset({"indices", "indptr", "row", "col"})  # a coo matrix's row and col too
# Calls that write into their first argument, and array methods that write into the array.
_WRITES_FIRST_ARGUMENT = frozenset({"numpy.copyto", "numpy.put", "numpy.place", "numpy.putmask",
                                    "numpy.put_along_axis", "numpy.fill_diagonal"})
_WRITING_METHODS = frozenset({"sort", "fill", "partition", "put", "itemset", "resize", "at"})


def verify_exportable(source: str) -> list[Violation]:
    """The violations of the exportable subset in ``source`` (a whole program), in line order; [] when it
    may be exported."""
    if not isinstance(source, str):
        return [Violation("export:source", 0, "the program must be text")]
    try:
        tree = parse_ast(source, "<program>")
    except SourceTooComplex as e:
        return [Violation("export:too_complex", 0, f"the program cannot be verified: {e.msg}")]
    except (SyntaxError, ValueError) as e:
        return [Violation("export:syntax", getattr(e, "lineno", 0) or 0, "the program does not parse")]
    found: list[Violation] = []
    hidden = first_hidden(source.replace("\r\n", "\n"))
    if hidden is not None:
        found.append(Violation("export:control_character", hidden[0], f"the character U+{ord(hidden[1]):04X} "
                               "(a control or invisible formatting character) is not exportable"))
    _Verifier(found.append, tree).run()
    payload = over_budget(tree)
    if payload is not None:
        found.append(Violation("export:literals", payload[1], budget_message(payload[0])))
    return sorted(found, key=lambda v: v.line)


class _Verifier:
    def __init__(self, add, tree: ast.Module):
        self.add = add
        self.tree = tree
        self.modules: dict[str, str] = {}  # a name bound to a module -> the module's name
        self.members: dict[str, str] = {}  # a name bound by 'from M import x' -> "M.x"
        self.parents: dict[int, ast.AST] = {}
        self.docstrings = docstring_ids(tree)
        self.bound: set[str] = set()

    def bad(self, rule: str, what: str, node: ast.AST | None, message: str) -> None:
        self.add(Violation(f"export:{rule} {what}".rstrip(), getattr(node, "lineno", 0) or 0, message))

    def run(self) -> None:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[id(child)] = node
            self._bindings(node)
        for node in ast.walk(self.tree):
            if not isinstance(node, ALLOWED_NODES):
                self.bad("construct", type(node).__name__, node,
                         f"{type(node).__name__} is not in the exportable subset (plain functions over arrays)")
                continue
            check = getattr(self, f"_{type(node).__name__}", None)
            if check is not None:
                check(node)

    # -- what the program binds ------------------------------------------------------------------
    def _bindings(self, node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.bound.add(node.name)
        elif isinstance(node, ast.arg):
            self.bound.add(node.arg)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            self.bound.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            self.bound.add(node.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                self._import_binds(node, a.asname or a.name.split(".")[0], a.name if a.asname else
                                   a.name.split(".")[0], self.modules)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                self._import_binds(node, a.asname or a.name, full,
                                   self.modules if full in MODULE_MEMBERS else self.members)

    def _import_binds(self, node: ast.AST, name: str, target: str, table: dict[str, str]) -> None:
        """Record that an import binds ``name`` to ``target``; one name names one thing (the checks of a module's
        members would otherwise apply to whichever import the verifier saw last)."""
        earlier = self.modules.get(name) or self.members.get(name)
        if earlier is not None and earlier != target:
            self.bad("import", name, node, f"{name!r} is imported as both {earlier!r} and {target!r}")
        table[name] = target

    # -- names -------------------------------------------------------------------------------------
    def _name_problem(self, name: str, binds: bool = False) -> str | None:
        if name.startswith("__"):
            return f"the name {name!r} is not allowed (no double-underscore names)"
        if binds and name in self.modules:
            return f"{name!r} names a module and may not be re-bound"
        if name in _OTHER_BUILTINS:
            return f"{name!r} is a builtin outside the exportable subset (allowed: {', '.join(sorted(ALLOWED_BUILTINS))})"
        return None

    def _Name(self, node: ast.Name) -> None:
        problem = self._name_problem(node.id)
        if problem:
            self.bad("name", node.id, node, problem)
            return
        if node.id in self.modules:
            parent = self.parents.get(id(node))
            if not isinstance(node.ctx, ast.Load):
                self.bad("name", node.id, node, f"{node.id!r} names a module and may not be re-bound")
            elif not (isinstance(parent, ast.Attribute) and parent.value is node):
                self.bad("module", node.id, node, f"the module {node.id!r} may only be used as in '{node.id}.name'")
            return
        if isinstance(node.ctx, ast.Load) and node.id not in self.bound and node.id not in self.members \
                and node.id not in ALLOWED_BUILTINS:
            self.bad("name", node.id, node, f"{node.id!r} is neither defined by the program nor an allowed builtin")

    def _FunctionDef(self, node: ast.FunctionDef) -> None:
        for name in [node.name, *(a.arg for a in _arguments(node.args))]:
            problem = self._name_problem(name, binds=True)
            if problem:
                self.bad("name", name, node, problem)
        for dec in node.decorator_list:
            target = self._dotted(dec.func if isinstance(dec, ast.Call) else dec)
            if target not in ALLOWED_DECORATORS:
                self.bad("decorator", target or ast.unparse(dec)[:40], dec,
                         f"decorators other than {', '.join(sorted(ALLOWED_DECORATORS))} are not exportable")

    def _Lambda(self, node: ast.Lambda) -> None:
        for a in _arguments(node.args):
            problem = self._name_problem(a.arg, binds=True)
            if problem:
                self.bad("name", a.arg, node, problem)

    def _ExceptHandler(self, node: ast.ExceptHandler) -> None:
        problem = self._name_problem(node.name, binds=True) if node.name else None
        if problem:
            self.bad("name", node.name, node, problem)

    # -- imports -----------------------------------------------------------------------------------
    def _Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name not in MODULE_MEMBERS:
                self.bad("import", a.name, node, f"importing {a.name!r} is not exportable (modules: "
                         f"{', '.join(sorted(MODULE_MEMBERS))})")

    def _ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or module not in MODULE_MEMBERS:
            self.bad("import", module or "relative", node, f"importing from {module or 'a relative module'!r} is "
                     "not exportable")
            return
        for a in node.names:
            if a.name not in MODULE_MEMBERS[module]:
                self.bad("import", f"{module}.{a.name}", node,
                         f"{a.name!r} of {module!r} is not in the exportable subset")

    # -- attributes --------------------------------------------------------------------------------
    def _dotted(self, node: ast.AST) -> str | None:
        """The real name a name or attribute chain refers to through the imports (``np.add`` ->
        ``numpy.add``), or None when it does not start at an import."""
        attrs = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        if node.id in self.modules:
            return ".".join([self.modules[node.id], *reversed(attrs)])
        if node.id in self.members:
            return ".".join([self.members[node.id], *reversed(attrs)])
        return None

    def _Attribute(self, node: ast.Attribute) -> None:
        if not isinstance(node.ctx, ast.Load):
            self.bad("attribute", node.attr, node, f"assigning or deleting the attribute {node.attr!r} is not "
                     "exportable (attributes are only read)")
            return
        if node.attr.startswith("_"):
            self.bad("attribute", node.attr, node, f"the attribute {node.attr!r} is not allowed (no private or "
                     "double-underscore attributes)")
            return
        base = node.value
        if isinstance(base, ast.Name) and base.id in self.modules:
            module = self.modules[base.id]
        else:
            module = self._dotted(base)
        if module in MODULE_MEMBERS:
            if node.attr not in MODULE_MEMBERS[module]:
                self.bad("module", f"{module}.{node.attr}", node,
                         f"{module}.{node.attr} is not in the exportable subset")
                return
            full = f"{module}.{node.attr}"
            parent = self.parents.get(id(node))
            if full in MODULE_MEMBERS and not (isinstance(parent, ast.Attribute) and parent.value is node):
                self.bad("module", full, node, f"the module {full!r} may only be used as in '{full}.name'")
        elif node.attr not in OBJECT_ATTRIBUTES:
            self.bad("attribute", node.attr, node, f"the attribute {node.attr!r} is not in the exportable subset")

    # -- calls, literals, writes into sparse index arrays -------------------------------------------
    def _Call(self, node: ast.Call) -> None:
        target = self._dotted(node.func)
        if target in _COMPRESSED and (node.args or node.keywords):
            self._compressed(node, target)
        first = node.args[0] if node.args else None
        if target in _WRITES_FIRST_ARGUMENT and _is_index_array(first):
            self._index_write(node)
        if isinstance(node.func, ast.Attribute) and node.func.attr in _WRITING_METHODS and (
                _is_index_array(node.func.value) or (node.func.attr == "at" and _is_index_array(first))):
            self._index_write(node)
        for kw in node.keywords:
            if kw.arg == "out" and (_is_index_array(kw.value) or (
                    isinstance(kw.value, ast.Tuple) and any(_is_index_array(e) for e in kw.value.elts))):
                self._index_write(node)

    def _compressed(self, node: ast.Call, target: str) -> None:
        arg = node.args[0] if node.args else None
        if isinstance(arg, ast.Tuple) and len(arg.elts) == 2 and not any(isinstance(e, ast.Starred) for e in arg.elts):
            return  # (data, (rows, cols)) or a shape: scipy checks the indices
        if isinstance(arg, ast.Tuple) and len(arg.elts) == 3 and _same_matrix(arg.elts[1], arg.elts[2], node):
            return
        self.bad("sparse", target.rsplit(".", 1)[1], node,
                 f"{target.rsplit('.', 1)[1]} is exportable only as ((data, X.indices, X.indptr), shape=X.shape) "
                 "of one existing matrix X, or as ((data, (rows, cols)), shape=...): scipy does not check the "
                 "indices of other forms")

    def _index_write(self, node: ast.AST) -> None:
        self.bad("sparse", "write", node, "writing into a matrix's indices or indptr is not exportable")

    def _Subscript(self, node: ast.Subscript) -> None:
        if not isinstance(node.ctx, ast.Load) and _is_index_array(node.value):
            self._index_write(node)

    def _AugAssign(self, node: ast.AugAssign) -> None:
        if _is_index_array(node.target) or (isinstance(node.target, ast.Subscript)
                                             and _is_index_array(node.target.value)):
            self._index_write(node)

    def _Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, (str, bytes)) and id(node) not in self.docstrings \
                and ("__" if isinstance(value, str) else b"__") in value:
            self.bad("string", "", node, "string literals may not contain '__'")


def _arguments(args: ast.arguments) -> list[ast.arg]:
    out = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    return out + [a for a in (args.vararg, args.kwarg) if a is not None]


def _is_index_array(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in _INDEX_ARRAYS


def _same_matrix(indices: ast.AST, indptr: ast.AST, call: ast.Call) -> bool:
    """Whether ``indices`` and ``indptr`` are ``X.indices`` and ``X.indptr`` of one expression ``X`` and the call
    passes ``shape=X.shape``."""
    if not (isinstance(indices, ast.Attribute) and indices.attr == "indices"
            and isinstance(indptr, ast.Attribute) and indptr.attr == "indptr"):
        return False
    owner = ast.dump(indices.value)
    if ast.dump(indptr.value) != owner:
        return False
    shape = [kw.value for kw in call.keywords if kw.arg == "shape"]
    return (len(call.args) == 1 and len(shape) == 1 and isinstance(shape[0], ast.Attribute)
            and shape[0].attr == "shape" and ast.dump(shape[0].value) == owner)
