"""Static checks on a candidate ranking program, run (in the trusted process) before any of it executes.

These checks are a *filter*, not the security boundary: they reject most hostile or careless code
early, with a precise reason the LLM can act on, and they protect the integrity of the measuring
harness that runs in the same process as the candidate (e.g. monkey-patching ``time``). The
boundary is the OS-level isolation in ``evaluators.sandbox.runner`` (see ``docs/sandbox.md``), which is
designed to hold even when these checks are bypassed.

Rules (each violation names its rule and the line):

- ``syntax_error``: the module must parse.
- ``no_evolve_block`` / ``modified_outside_block``: exactly one EVOLVE-BLOCK, and when the seed it
  descends from is known, the text before and after the block is byte-identical to the seed's.
- ``too_large``: the block is at most ``max_block_bytes`` bytes and ``max_block_lines`` lines (the
  whole module at most ``max_source_bytes``).
- ``forbidden:import X``: imports only from ``ALLOWED_IMPORTS``; no ``from X import *``, no relative
  imports; imported names must pass the attribute rules below.
- ``forbidden:name X``: the builtins in ``FORBIDDEN_NAMES`` (``open``, ``exec``, ``eval``,
  ``compile``, ``globals``, ``locals``, ``vars``, ``setattr``, ``delattr``, ``breakpoint``,
  ``input``, ``memoryview``, ...) may not be referenced at all; ``getattr`` only as a direct call
  whose attribute name is a string literal that itself passes the attribute rules; any
  ``__dunder__`` name (``__builtins__``, ``__import__``, ``__name__``, ...).
- ``forbidden:attribute X``: attributes starting with ``__`` (except ``__init__``, for
  ``super().__init__()``), frame/code/traceback attributes (``gi_frame``, ``f_globals``,
  ``tb_frame``, ...), and names in ``FORBIDDEN_ATTRIBUTES`` (file and pickle I/O such as ``load``,
  ``save``, ``tofile``, ``memmap``, ``fromfile``; ``ctypes``; string-evaluating helpers such as
  ``get_type_hints``; names of dangerous modules such as ``os``, ``sys``, ``subprocess``).
- ``forbidden:module X``: attribute chains that start at an imported module are resolved against
  the real modules: private (``_x``) attributes of modules, unknown attributes, and modules outside
  ``ALLOWED_MODULES`` (``np.lib``, ``typing.sys``, ``dataclasses.inspect``, ...) are rejected.
- ``forbidden:module_value X``: a module may only be used to look up attributes (``np.sum``), not
  passed around as a value (``m = np``) where the checker could no longer follow it.
- ``forbidden:rebind X``: names bound by an import may not be re-bound.
- ``forbidden:assign X``: no assignment to or deletion of attributes of modules
  (``np.argsort = ...``).
- ``forbidden:dunder_string``: no string or bytes literal containing ``__`` (docstrings excepted).
- ``forbidden:string_annotation``: annotations must be expressions, not strings (string annotations
  are evaluated with ``eval`` by ``typing``).
- ``forbidden:format_fields``: ``str.format``/``format_map`` only on string literals whose
  replacement fields do not access attributes or items (``"{0.x}"`` can read module internals).
- ``forbidden:def X``: no function, method or class with a double-underscore name other than ``__init__``
  (``__getattr__``, ``__setattr__``, ``__init_subclass__``, ``__class_getitem__``, ``__array_interface__``, ...
  are hooks that library or interpreter code calls with values the program could not reach itself).
- ``forbidden:class_keyword``: no ``metaclass=`` or other keywords in a class statement.
- ``forbidden:call X``: ``type`` only as ``type(x)`` (three arguments build a class from a computed dict);
  ``dataclass`` only as the decorator of a class statement (applied to a class built otherwise, it writes code
  from field names the program chose); ``numpy.ndarray(...)`` not at all, and no ``buffer=`` argument (arrays
  over memory the program points at).
- library helpers that read attributes by a computed name are refused as attributes (``update_wrapper``,
  ``wraps``, ``singledispatch``, ``attrgetter``, ``methodcaller``), as are numpy's constructors over raw memory
  (``frombuffer``, ``from_dlpack``, ``recarray``, ``rec``, ``ctypeslib``, ``as_strided``).
- ``too_large:literals``: the literal numbers and strings (docstrings aside) carry at most
  ``payload.MAX_LITERAL_CHARS`` characters, so a table of judgements cannot be written into a program.
- ``too_complex``: the module is nested deeper than ``threadsafe_ast.MAX_PARSE_DEPTH`` levels.
- ``forbidden:control_character``: no control characters but tab and line ends, no invisible formatting
  characters (bidi overrides, zero-width characters): they make code read differently from how it runs
  (Trojan Source) or act on the terminal that shows it.
"""
from __future__ import annotations

import ast
import importlib
import string
import types
from dataclasses import dataclass, field

from evorank.threadsafe_ast import SourceTooComplex, parse_ast

from evorank.evaluators.errors import ProgramError
from .output import first_hidden
from .payload import budget_message, docstring_ids, over_budget
from .source import split_block

ALLOWED_IMPORTS: tuple[str, ...] = (
    "numpy", "math", "scipy.sparse", "scipy.special", "collections", "itertools", "functools", "heapq", "re",
    "dataclasses", "typing",
    # submodules of the above that are harmless and commonly written as imports
    "numpy.linalg", "numpy.random", "numpy.fft", "scipy.sparse.linalg", "scipy.sparse.csgraph", "collections.abc",
)
# Modules a program may reach through attribute chains (``scipy`` only as the parent of the two above).
ALLOWED_MODULES: frozenset[str] = frozenset(ALLOWED_IMPORTS) | {"scipy", "numpy.polynomial", "numpy.ma", "numpy.emath",
                                                                "numpy.dtypes", "numpy.exceptions", "numpy.strings"}

FORBIDDEN_NAMES: frozenset[str] = frozenset({
    "open", "exec", "eval", "compile", "globals", "locals", "vars", "breakpoint", "input", "help", "exit", "quit",
    "memoryview", "setattr", "delattr", "getattr",
})

# Attribute names rejected on any object.
FORBIDDEN_ATTRIBUTES: frozenset[str] = frozenset({
    # file / pickle I/O of numpy and scipy
    "load", "loads", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt", "fromfile", "fromregex",
    "tofile", "dump", "dumps", "memmap", "open_memmap", "DataSource", "save_npz", "load_npz", "mmread", "mmwrite",
    "loadmat", "savemat",
    # raw memory and foreign code
    "ctypes", "ctypeslib", "as_strided", "stride_tricks", "f2py", "distutils", "lib", "testing", "test",
    "frombuffer", "from_dlpack", "recarray", "rec",
    # string evaluation, and helpers that read or write attributes named by a computed string
    "get_type_hints", "ForwardRef", "make_dataclass", "update_wrapper", "wraps", "singledispatch",
    "singledispatchmethod", "attrgetter", "methodcaller",
    # frames, code and tracebacks (reach the harness's globals without dunders)
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace", "gi_frame", "gi_code", "gi_yieldfrom",
    "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "ag_await", "tb_frame", "tb_next", "co_code",
    "co_consts", "co_names", "func_globals", "func_code", "im_func", "im_self", "cell_contents",
    # names of dangerous modules (reachable as attributes of other modules) and their functions
    "os", "sys", "builtins", "subprocess", "socket", "shutil", "pathlib", "io", "importlib", "import_module",
    "inspect", "gc", "pickle", "marshal", "mmap", "signal", "threading", "multiprocessing", "tempfile", "posix",
    "resource", "fcntl", "system", "popen", "environ", "getenv", "putenv", "open", "read_text", "read_bytes",
    "write_text", "write_bytes", "unlink", "rmtree", "iterdir",
})
ALLOWED_DUNDER_ATTRIBUTES: frozenset[str] = frozenset({"__init__"})
# Callables allowed only in some forms (``_Checker._check_reference``).
_RESTRICTED_CALLABLES = frozenset({"type", "numpy.ndarray", "dataclasses.dataclass"})

DEFAULT_MAX_BLOCK_BYTES = 20_000
DEFAULT_MAX_BLOCK_LINES = 400
DEFAULT_MAX_SOURCE_BYTES = 64_000


@dataclass(frozen=True)
class Violation:
    """One broken rule. ``reason`` is machine-readable (``forbidden:import os``)."""

    reason: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class StaticReport:
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def error(self, max_items: int = 5) -> ProgramError | None:
        """The first violation's reason with up to ``max_items`` violations as the message, or None."""
        if not self.violations:
            return None
        items = [str(v) for v in self.violations[:max_items]]
        more = len(self.violations) - max_items
        if more > 0:
            items.append(f"(and {more} more)")
        return ProgramError(self.violations[0].reason, "; ".join(items))


def check_source(
    source: str,
    seed_source: str | None = None,
    *,
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
    max_block_lines: int = DEFAULT_MAX_BLOCK_LINES,
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
) -> StaticReport:
    """Check a candidate program; ``seed_source`` (when given) is the seed whose head/tail must be kept."""
    report = StaticReport()
    add = report.violations.append
    if not isinstance(source, str):
        add(Violation("invalid_source", 0, "the program must be text"))
        return report
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > max_source_bytes:
        add(Violation("too_large:source_bytes", 0, f"the program is {size} bytes; the limit is {max_source_bytes}"))
        return report
    hidden = first_hidden(source.replace("\r\n", "\n"))
    if hidden is not None:
        line, char = hidden
        add(Violation("forbidden:control_character", line, f"the program contains the invisible or control "
                      f"character U+{ord(char):04X}; programs may hold only printable characters, tabs and line ends"))
    try:
        split = split_block(source)
    except ProgramError as e:
        add(Violation(e.reason, 0, str(e)))
        return report
    block_line0 = split.head.count("\n") + 1  # 1-based line number of the first block line
    block_bytes = len(split.block.encode("utf-8", "surrogatepass"))
    block_lines = split.block.count("\n")
    if block_bytes > max_block_bytes:
        add(Violation("too_large:block_bytes", block_line0,
                      f"the EVOLVE-BLOCK is {block_bytes} bytes; the limit is {max_block_bytes}"))
    if block_lines > max_block_lines:
        add(Violation("too_large:block_lines", block_line0,
                      f"the EVOLVE-BLOCK has {block_lines} lines; the limit is {max_block_lines}"))
    if seed_source is not None:
        try:
            seed = split_block(seed_source)
        except ProgramError as e:  # a broken seed is the caller's bug, but still a result
            add(Violation("bad_seed", 0, f"the seed program is malformed: {e}"))
            return report
        if split.head != seed.head:
            line = _first_diff_line(split.head, seed.head)
            add(Violation("modified_outside_block:head", line,
                          "the text before '# EVOLVE-BLOCK-START' must stay byte-identical to the seed's; "
                          "change only the code inside the block"))
        if split.tail != seed.tail:
            line = _first_diff_line(split.tail, seed.tail) + block_line0 + block_lines - 1
            add(Violation("modified_outside_block:tail", line,
                          "the text after '# EVOLVE-BLOCK-END' must stay byte-identical to the seed's; "
                          "change only the code inside the block"))
    try:
        tree = parse_ast(source, "<program>")
    except SourceTooComplex as e:
        add(Violation("too_complex", 0, f"the program cannot be checked: {e.msg}"))
        return report
    except SyntaxError as e:
        add(Violation("syntax_error", e.lineno or 0, f"syntax error: {e.msg}"))
        return report
    except (ValueError, MemoryError, RecursionError) as e:
        add(Violation("syntax_error", 0, f"the program cannot be parsed: {type(e).__name__}: {e}"))
        return report
    try:
        _Checker(add).run(tree)
    except RecursionError:
        add(Violation("too_complex", 0, "the program is nested too deeply to check"))
    payload = over_budget(tree)
    if payload is not None:
        add(Violation("too_large:literals", payload[1], budget_message(payload[0])))
    report.violations.sort(key=lambda v: (v.reason.startswith("too_large") is False, v.line))
    return report


def static_check(source: str, seed_source: str | None = None, **limits) -> None:
    """Raise ProgramError (reason of the first violation, message listing violations) if any rule is broken."""
    err = check_source(source, seed_source, **limits).error()
    if err is not None:
        raise err


def _first_diff_line(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a.split("\n"), b.split("\n")), 1):
        if x != y:
            return i
    return min(a.count("\n"), b.count("\n")) + 1


def _module(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except Exception:
        return None


class _Checker(ast.NodeVisitor):
    def __init__(self, add):
        self.add = add
        self.module_aliases: dict[str, types.ModuleType] = {}
        self.imported: dict[str, str] = {}  # a name bound by 'from M import x' -> "M.x"
        self.parents: dict[int, ast.AST] = {}
        self.docstrings: set[int] = set()

    # -- driver ---------------------------------------------------------------------------------
    def run(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[id(child)] = node
        self.docstrings = docstring_ids(tree)
        # First pass: imports, so module aliases are known wherever they are used.
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                self._import(node)
            elif isinstance(node, ast.ImportFrom):
                self._import_from(node)
        self.visit(tree)

    def bad(self, reason: str, node: ast.AST | None, message: str) -> None:
        self.add(Violation(reason, getattr(node, "lineno", 0) or 0, message))

    # -- imports --------------------------------------------------------------------------------
    def _allowed_text(self) -> str:
        return ", ".join(ALLOWED_IMPORTS[:11])

    def _import(self, node: ast.Import) -> None:
        for alias in node.names:
            name = alias.name
            if name not in ALLOWED_IMPORTS:
                self.bad(f"forbidden:import {name}", node,
                         f"import of {name!r} is not allowed (allowed: {self._allowed_text()})")
                continue
            if alias.asname:
                mod = _module(name)
                if mod is not None:
                    self.module_aliases[alias.asname] = mod
            else:
                top = name.split(".")[0]
                mod = _module(top)
                if mod is not None:
                    self.module_aliases[top] = mod

    def _import_from(self, node: ast.ImportFrom) -> None:
        name = node.module or ""
        if node.level:
            self.bad("forbidden:import relative", node, "relative imports are not allowed")
            return
        if name not in ALLOWED_IMPORTS:
            self.bad(f"forbidden:import {name}", node,
                     f"import from {name!r} is not allowed (allowed: {self._allowed_text()})")
            return
        mod = _module(name)
        for alias in node.names:
            if alias.name == "*":
                self.bad("forbidden:import *", node, f"'from {name} import *' is not allowed; import names explicitly")
                continue
            problem = self._attr_problem(alias.name)
            if problem:
                self.bad(f"forbidden:import {name}.{alias.name}", node, f"importing {alias.name!r} from {name!r}: {problem}")
                continue
            self.imported[alias.asname or alias.name] = f"{name}.{alias.name}"
            if mod is None:
                continue
            value, problem = self._resolve_on_module(mod, alias.name)
            if problem:
                self.bad(f"forbidden:import {name}.{alias.name}", node, f"importing {alias.name!r} from {name!r}: {problem}")
            elif isinstance(value, types.ModuleType):
                self.module_aliases[alias.asname or alias.name] = value

    # -- attribute rules ------------------------------------------------------------------------
    @staticmethod
    def _attr_problem(attr: str) -> str | None:
        if attr.startswith("__") and attr not in ALLOWED_DUNDER_ATTRIBUTES:
            return f"attribute {attr!r} is not allowed (no double-underscore attributes)"
        if attr in FORBIDDEN_ATTRIBUTES:
            return f"attribute {attr!r} is not allowed (file, memory, code or system access)"
        return None

    @staticmethod
    def _resolve_on_module(mod: types.ModuleType, attr: str):
        """(value, problem) of ``mod.attr`` by looking at the module's namespace (no code runs)."""
        if attr.startswith("_"):
            return None, f"private attribute {attr!r} of module {mod.__name__!r} is not allowed"
        ns = vars(mod)
        if attr in ns:
            value = ns[attr]
        elif f"{mod.__name__}.{attr}" in ALLOWED_MODULES:
            value = _module(f"{mod.__name__}.{attr}")
        else:
            return None, f"module {mod.__name__!r} has no attribute {attr!r} that programs may use"
        if isinstance(value, types.ModuleType) and value.__name__ not in ALLOWED_MODULES:
            return None, f"module {value.__name__!r} is not allowed"
        return value, None

    def _chain(self, node: ast.Attribute) -> tuple[ast.AST, list[str]]:
        attrs = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            attrs.append(cur.attr)
            cur = cur.value
        return cur, attrs[::-1]

    def visit_Attribute(self, node: ast.Attribute) -> None:
        problem = self._attr_problem(node.attr)
        if problem:
            self.bad(f"forbidden:attribute {node.attr}", node, problem)
        parent = self.parents.get(id(node))
        if not (isinstance(parent, ast.Attribute) and parent.value is node):  # outermost of a chain
            root, attrs = self._chain(node)
            if isinstance(root, ast.Name) and root.id in self.module_aliases:
                self._check_module_chain(node, root.id, attrs)
                self._check_reference(node)
        if node.attr in ("format", "format_map"):
            self._check_format(node)
        self.generic_visit(node)

    def _check_module_chain(self, node: ast.Attribute, root: str, attrs: list[str]) -> None:
        dotted = ".".join([root, *attrs])
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.bad(f"forbidden:assign {dotted}", node,
                     f"assigning to or deleting {dotted!r} is not allowed (no changes to modules)")
            return
        obj: object = self.module_aliases[root]
        for i, attr in enumerate(attrs):
            if not isinstance(obj, types.ModuleType):
                return
            value, problem = self._resolve_on_module(obj, attr)
            if problem:
                self.bad(f"forbidden:module {'.'.join([root, *attrs[:i + 1]])}", node, problem)
                return
            obj = value
        if isinstance(obj, types.ModuleType):
            self._module_as_value(node, dotted)

    def _module_as_value(self, node: ast.AST, dotted: str) -> None:
        self.bad(f"forbidden:module_value {dotted}", node,
                 f"module {dotted!r} may only be used as in '{dotted}.name', not as a value")

    def _check_format(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            if _format_fields_access(node.value.value):
                self.bad("forbidden:format_fields", node,
                         "format strings may not access attributes or items ('{0.x}', '{0[k]}')")
        else:
            self.bad("forbidden:format_fields", node,
                     f"'.{node.attr}' is only allowed on a string literal (use an f-string instead)")

    # -- names ----------------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        self._check_reference(node)
        if name.startswith("__") and name.endswith("__"):
            self.bad(f"forbidden:name {name}", node, f"the name {name!r} is not allowed (no double-underscore names)")
        elif name in FORBIDDEN_NAMES:
            parent = self.parents.get(id(node))
            if name == "getattr" and isinstance(parent, ast.Call) and parent.func is node:
                self._check_getattr(parent)
            else:
                self.bad(f"forbidden:name {name}", node, f"the builtin {name!r} is not allowed")
        if name in self.module_aliases:
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                self.bad(f"forbidden:rebind {name}", node, f"{name!r} names an imported module and may not be re-bound")
            else:
                parent = self.parents.get(id(node))
                attribute_base = isinstance(parent, ast.Attribute) and parent.value is node
                getattr_base = (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name)
                                and parent.func.id == "getattr" and parent.args and parent.args[0] is node)
                if not (attribute_base or getattr_base):
                    self._module_as_value(node, name)

    def _check_getattr(self, call: ast.Call) -> None:
        if len(call.args) not in (2, 3) or call.keywords:
            self.bad("forbidden:name getattr", call, "getattr needs exactly (object, 'literal name'[, default])")
            return
        name = call.args[1]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            self.bad("forbidden:name getattr", call, "getattr is only allowed with a string literal attribute name")
            return
        if name.value.startswith("_"):
            self.bad(f"forbidden:attribute {name.value}", call, f"getattr of private attribute {name.value!r} is not allowed")
            return
        problem = self._attr_problem(name.value)
        if problem:
            self.bad(f"forbidden:attribute {name.value}", call, problem)
        root = call.args[0]
        if isinstance(root, ast.Name) and root.id in self.module_aliases:
            _, problem = self._resolve_on_module(self.module_aliases[root.id], name.value)
            if problem:
                self.bad(f"forbidden:module {root.id}.{name.value}", call, problem)

    def _bind_names(self, node: ast.AST, names: list[str]) -> None:
        for name in names:
            if name in self.module_aliases:
                self.bad(f"forbidden:rebind {name}", node, f"{name!r} names an imported module and may not be re-bound")

    def _dunder_def(self, node) -> None:
        if node.name.startswith("__") and node.name not in ALLOWED_DUNDER_ATTRIBUTES:
            self.bad(f"forbidden:def {node.name}", node, f"defining {node.name!r} is not allowed (no double-underscore "
                     "functions, methods or classes other than __init__)")

    def visit_FunctionDef(self, node) -> None:
        self._dunder_def(node)
        self._bind_names(node, [node.name] + [a.arg for a in _all_args(node.args)])
        for a in _all_args(node.args):
            self._annotation(a.annotation)
        self._annotation(node.returns)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._bind_names(node, [a.arg for a in _all_args(node.args)])
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._dunder_def(node)
        if node.keywords:
            self.bad("forbidden:class_keyword", node, "class statements may not take keywords (metaclass=...)")
        self._bind_names(node, [node.name])
        self.generic_visit(node)

    # -- calls that build classes, code or arrays from what the program chose ----------------------
    def _dotted(self, node: ast.AST) -> str | None:
        """The real name a Name or attribute chain refers to through the program's imports (``np.ndarray`` ->
        ``numpy.ndarray``), the builtin's name for ``type``, else None."""
        if isinstance(node, ast.Name):
            if node.id in self.imported:
                return self.imported[node.id]
            return "type" if node.id == "type" else None
        root, attrs = self._chain(node) if isinstance(node, ast.Attribute) else (None, [])
        if isinstance(root, ast.Name) and root.id in self.module_aliases:
            return ".".join([self.module_aliases[root.id].__name__, *attrs])
        return None

    def _check_reference(self, node: ast.AST) -> None:
        """``type``, ``dataclass`` and ``numpy.ndarray`` only where they cannot build what the program chose."""
        dotted = self._dotted(node)
        if dotted not in _RESTRICTED_CALLABLES:
            return
        parent = self.parents.get(id(node))
        called = isinstance(parent, ast.Call) and parent.func is node
        if dotted == "type" and not (called and len(parent.args) == 1 and not parent.keywords):
            self.bad("forbidden:call type", node, "type is only allowed as type(x), not to build a class")
        elif dotted == "numpy.ndarray" and called:
            self.bad("forbidden:call numpy.ndarray", node, "numpy.ndarray(...) is not allowed (it can view raw "
                     "memory); use np.zeros, np.empty or np.asarray")
        elif dotted == "dataclasses.dataclass":
            decorating = parent if called else node
            owner = self.parents.get(id(decorating))
            if not (isinstance(owner, ast.ClassDef) and decorating in owner.decorator_list):
                self.bad("forbidden:call dataclass", node, "dataclass is only allowed as the decorator of a class "
                         "statement")

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg == "buffer":
            self.bad("forbidden:call buffer", node, "the buffer= argument is not allowed (arrays over raw memory)")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._annotation(node.annotation)
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._bind_names(node, [node.name])
        self.generic_visit(node)

    def visit_alias(self, node: ast.alias) -> None:
        pass  # handled in the import pass

    def visit_Global(self, node) -> None:
        for name in node.names:
            if name.startswith("__"):
                self.bad(f"forbidden:name {name}", node, f"the name {name!r} is not allowed")

    visit_Nonlocal = visit_Global

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        for attr in node.kwd_attrs:
            problem = self._attr_problem(attr) or (f"attribute {attr!r} is not allowed" if attr.startswith("_") else None)
            if problem:
                self.bad(f"forbidden:attribute {attr}", node, problem)
        self.generic_visit(node)

    def visit_MatchAs(self, node) -> None:
        if node.name:
            self._bind_names(node, [node.name])
        self.generic_visit(node)

    def visit_MatchStar(self, node) -> None:
        if node.name:
            self._bind_names(node, [node.name])

    def _annotation(self, ann: ast.AST | None) -> None:
        if ann is None:
            return
        for sub in ast.walk(ann):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                self.bad("forbidden:string_annotation", sub,
                         "string annotations are not allowed (typing evaluates them); write the type itself or drop it")
                return

    # -- constants ------------------------------------------------------------------------------
    def visit_Constant(self, node: ast.Constant) -> None:
        v = node.value
        if isinstance(v, (str, bytes)) and id(node) not in self.docstrings:
            if ("__" if isinstance(v, str) else b"__") in v:
                self.bad("forbidden:dunder_string", node, "string literals may not contain '__'")


def _all_args(args: ast.arguments) -> list[ast.arg]:
    out = list(args.posonlyargs) + list(args.args) + list(args.kwonlyargs)
    if args.vararg:
        out.append(args.vararg)
    if args.kwarg:
        out.append(args.kwarg)
    return out


def _format_fields_access(fmt: str, depth: int = 0) -> bool:
    """Whether a str.format template has a field with attribute or item access (nested specs too)."""
    if depth > 3:
        return True
    try:
        parsed = list(string.Formatter().parse(fmt))
    except (ValueError, TypeError):
        return True  # malformed: reject rather than guess
    for _, field_name, spec, _ in parsed:
        if field_name and ("." in field_name or "[" in field_name):
            return True
        if spec and _format_fields_access(spec, depth + 1):
            return True
    return False
