"""Splice operators of the offline mutator: add a new kind of index evidence to a program.

Point edits only move constants and reshape formulas; a splice adds structure: a field weight, a
proximity term, a variant-matching channel or a feedback pass (the channels are the templates of
:mod:`~evorank.evolve.offline.splice_templates`). Operators, recorded as ``Mutation.operator``:

``offline:splice_field``      either a BM25F-like tf mix, where the program reads ``index.term_doc``'s
                              frequencies directly (``prepare`` of both seeds): ``tf + TITLE_WEIGHT *
                              index.title_tf``, the document length and its mean likewise (title
                              occurrences count 1 + TITLE_WEIGHT times; nothing changes without titles),
                              or a title channel added to the score (any parent);
``offline:splice_proximity``  a query-term-pair proximity channel (bigram or window counts, positional);
``offline:splice_variants``   a channel matching query terms to vocabulary variants (shared prefix or
                              character trigrams), its table built in ``prepare``;
``offline:splice_feedback``   an RM3-like second pass over the parent's own first-pass ranking.

Where a channel goes: the parent's ``score`` must end with ``return np.where(matched, scores, -np.inf)``
(or ``return scores``), as both seeds and all their offline descendants do; anything else raises
:class:`~evorank.evolve.offline.block.NoEdit`. Just before that return the splice adds

    proximity_evidence = proximity_channel(query, index)
    scores = scores + W_PROX * proximity_evidence
    matched = matched | (proximity_evidence > 0)    # only for channels that add matches

so documents the parent does not retrieve keep ``-inf`` unless the channel itself finds them (the
``variants`` and ``feedback`` channels may, as drawn). The weight starts small and is a module-level
constant, as are the channel's other knobs, so later ``offline:constant`` edits tune them. A channel that
needs precomputation makes ``prepare`` return ``(parent's state, table)`` (or adds a ``prepare`` that
returns ``(None, table)``) and every read of the state in ``score`` becomes ``state[0]``; the offline
analysis follows tuple states, so point edits keep working on the parent's formulas.

A kind the program already has (any of the names it would add is taken) is refused with NoEdit, so no
helper is ever defined twice. Every child passes :func:`~evorank.evaluators.program.checks.static_check`
against the parent (head and tail byte-identical, block within the size limits) and compiles; the
offline analysis and :class:`~evorank.evolve.offline.checks.Checker` must be able to read it, so later
point edits apply to it (under ``DEBUG.strict`` an analysis failure raises). Every draw comes from the
generator passed in: the same parent and generator state give the same child.
"""
from __future__ import annotations

import ast
import copy
from dataclasses import dataclass

import numpy as np

from evorank.evaluators.errors import ProgramError
from evorank.evaluators.program.checks import static_check
from evorank.threadsafe_ast import parse_ast

from .analysis import np_fn
from .block import DEBUG, Mutation, NoEdit, ParsedProgram, format_block, names_in, parse_program, short_text
from .checks import Checker
from .sites import analyse
from .splice_templates import SPLICE_KINDS, Channel, log_uniform, draw_channel, template_np_attrs

#: operator -> (relative weight among splices, kind). A splice is tried in ``SPLICE_RATE`` of the
#: mutations (see :func:`evorank.evolve.offline.mutator.mutate`); the kinds are drawn by these weights.
SPLICE_WEIGHTS = {
    "offline:splice_field": (0.25, "field"),
    "offline:splice_proximity": (0.30, "proximity"),
    "offline:splice_variants": (0.20, "variants"),
    "offline:splice_feedback": (0.25, "feedback"),
}
SPLICE_OPERATORS = tuple(SPLICE_WEIGHTS)
SPLICE_RATE = 0.10
#: numpy attributes a splice may add to a program
SPLICE_NP_ATTRS = template_np_attrs()
_TF_MIX_NAME = "TITLE_WEIGHT"


@dataclass
class Anchor:
    """Where a channel goes: ``score``, its final ``return`` and what that return combines."""

    func: ast.FunctionDef
    scores: str  # the variable holding the scores
    matched: str | None  # the mask of np.where(matched, scores, -inf); None for `return scores`
    first: ast.expr  # the parent's ranking scores (the returned expression)
    query: str
    index: str
    state: str | None


def _params(func: ast.FunctionDef) -> list[str]:
    return [a.arg for a in func.args.posonlyargs + func.args.args]


def _is_neg_inf(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = node.operand
        if isinstance(v, ast.Attribute) and v.attr == "inf":
            return True
        return (isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "float" and len(v.args) == 1
                and isinstance(v.args[0], ast.Constant) and v.args[0].value == "inf")
    return False


def find_anchor(tree: ast.Module, np_alias: str | None) -> Anchor:
    """The anchor of a block's ``score`` (see the module docstring); NoEdit when its shape is not recognised."""
    score = next((s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "score"), None)
    if score is None or not score.body:
        raise NoEdit("no score function")
    params = _params(score)
    if len(params) < 2:
        raise NoEdit("score takes fewer than two parameters")
    ret = score.body[-1]
    if not isinstance(ret, ast.Return) or ret.value is None:
        raise NoEdit("score does not end with a return")
    v = ret.value
    matched = None
    if isinstance(v, ast.Name):
        scores = v.id
    elif (isinstance(v, ast.Call) and np_fn(v.func, np_alias) == "where" and len(v.args) == 3 and not v.keywords
          and isinstance(v.args[1], ast.Name) and _is_neg_inf(v.args[2])):
        scores = v.args[1].id
        matched = v.args[0].id if isinstance(v.args[0], ast.Name) else None
    else:
        raise NoEdit("score does not end by returning accumulated scores")
    if scores in params or matched in params:
        raise NoEdit("score returns a parameter")
    return Anchor(score, scores, matched, copy.deepcopy(v), params[0], params[1], params[2] if len(params) > 2 else None)


def _taken(tree: ast.Module) -> set[str]:
    names = names_in(tree)
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
    return names


def _stmts(text: str) -> list[ast.stmt]:
    return parse_ast(text).body


def _add_module_level(tree: ast.Module, constants, helpers: str) -> None:
    """Constants after the block's last module-level assignment before its first function; helper
    functions just before the first function."""
    first_func = next((i for i, s in enumerate(tree.body) if isinstance(s, ast.FunctionDef)), len(tree.body))
    const_stmts = [ast.Assign([ast.Name(name, ast.Store())], ast.Constant(float(v))) for name, v in constants]
    helper_stmts = _stmts(helpers) if helpers else []
    tree.body[first_func:first_func] = const_stmts + helper_stmts


class _StateReads(ast.NodeTransformer):
    """Every read of the state parameter becomes ``state[0]`` (nested functions that rebind it excepted)."""

    def __init__(self, name: str):
        self.name = name

    def visit_Name(self, node: ast.Name):
        if node.id == self.name and isinstance(node.ctx, ast.Load):
            return ast.Subscript(ast.Name(self.name, ast.Load()), ast.Constant(0), ast.Load())
        return node

    def visit_FunctionDef(self, node):
        return node if self.name in _params(node) else self.generic_visit(node)

    visit_Lambda = visit_FunctionDef


def _wrap_state(tree: ast.Module, anchor: Anchor, table: str) -> ast.expr:
    """Make ``prepare`` return ``(parent's state, table)`` and ``score`` read ``state[0]``; returns the
    expression of the table in ``score`` (``state[1]``)."""
    if anchor.state is None:
        raise NoEdit("score has no state parameter")
    state = anchor.state
    if any(isinstance(n, ast.Name) and n.id == state and not isinstance(n.ctx, ast.Load) for n in ast.walk(anchor.func)):
        raise NoEdit("score rebinds its state")
    prep = next((s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "prepare"), None)
    if prep is None:
        pos = tree.body.index(anchor.func)
        tree.body.insert(pos, _stmts(f"def prepare(index):\n    return (None, {table.format(index='index')})\n")[0])
    else:
        p = _params(prep)
        if not p:
            raise NoEdit("prepare takes no index")
        made = parse_ast(table.format(index=p[0]), mode="eval").body
        returns = []
        todo = list(prep.body)
        while todo:  # the returns of prepare itself, not of functions nested in it
            n = todo.pop()
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue
            if isinstance(n, ast.Return):
                returns.append(n)
            todo.extend(ast.iter_child_nodes(n))
        for r in returns:
            r.value = ast.Tuple([r.value or ast.Constant(None), copy.deepcopy(made)], ast.Load())
        if not prep.body or not isinstance(prep.body[-1], ast.Return):
            prep.body.append(ast.Return(ast.Tuple([ast.Constant(None), copy.deepcopy(made)], ast.Load())))
    anchor.func.body = [_StateReads(state).visit(s) for s in anchor.func.body]
    anchor.first = _StateReads(state).visit(anchor.first)
    return ast.Subscript(ast.Name(state, ast.Load()), ast.Constant(1), ast.Load())


def _splice_channel(tree: ast.Module, prog: ParsedProgram, ch: Channel) -> str:
    anchor = find_anchor(tree, prog.np)
    taken = _taken(tree)
    clash = sorted((ch.names | {ch.var}) & taken)
    if clash:
        raise NoEdit(f"the program already has {clash[0]}")
    state_expr = _wrap_state(tree, anchor, ch.table) if ch.table else None
    call = ch.call.format(query=anchor.query, index=anchor.index, state="STATE_PART", first="FIRST_PASS")
    value = parse_ast(call, mode="eval").body
    for n in ast.walk(value):  # fill in the placeholders with expressions
        for fld, child in ast.iter_fields(n):
            if isinstance(child, list):
                for i, c in enumerate(child):
                    if isinstance(c, ast.Name) and c.id == "STATE_PART":
                        child[i] = state_expr
                    elif isinstance(c, ast.Name) and c.id == "FIRST_PASS":
                        child[i] = anchor.first
    lines = [ast.Assign([ast.Name(ch.var, ast.Store())], value)]
    lines += _stmts(f"{anchor.scores} = {anchor.scores} + {ch.weight} * {ch.var}")
    adds = ch.adds_matches and anchor.matched is not None
    if adds:
        lines += _stmts(f"{anchor.matched} = {anchor.matched} | ({ch.var} > 0)")
    anchor.func.body[-1:-1] = lines
    _add_module_level(tree, ch.constants, ch.helpers)
    consts = ", ".join(f"{k}={v:g}" for k, v in ch.constants)
    return f"splice {ch.kind} ({ch.form}{', adds matches' if adds else ''}): {consts}"


class _TfMix(ast.NodeTransformer):
    """``M.data`` of ``index.term_doc`` -> ``(M.data + TITLE_WEIGHT * index.title_tf)``; document lengths
    and their mean likewise."""

    def __init__(self, index: str, aliases: set[str], np_alias: str):
        self.index, self.aliases, self.np = index, aliases, np_alias
        self.mixed = 0

    def _is_term_doc(self, node: ast.expr) -> bool:
        return (isinstance(node, ast.Name) and node.id in self.aliases) or (
            isinstance(node, ast.Attribute) and node.attr == "term_doc" and isinstance(node.value, ast.Name)
            and node.value.id == self.index)

    def _mix(self, node: ast.expr, extra: str) -> ast.expr:
        return ast.BinOp(node, ast.Add(), ast.BinOp(ast.Name(_TF_MIX_NAME, ast.Load()), ast.Mult(),
                                                     parse_ast(extra, mode="eval").body))

    def visit_Attribute(self, node: ast.Attribute):
        if isinstance(node.ctx, ast.Load):
            if node.attr == "data" and self._is_term_doc(node.value):
                self.mixed += 1
                return self._mix(node, f"{self.index}.title_tf")
            if isinstance(node.value, ast.Name) and node.value.id == self.index:
                if node.attr == "doc_len":
                    return self._mix(node, f"{self.index}.title_len")
                if node.attr == "avg_doc_len":
                    return self._mix(node, f"{self.np}.mean({self.index}.title_len)")
        return self.generic_visit(node)


def _splice_tf_mix(tree: ast.Module, prog: ParsedProgram, rng) -> str:
    if _TF_MIX_NAME in _taken(tree):
        raise NoEdit(f"the program already has {_TF_MIX_NAME}")
    funcs = [s for s in tree.body if isinstance(s, ast.FunctionDef)]
    funcs.sort(key=lambda f: f.name != "prepare")
    for func in funcs:
        params = _params(func)
        index = "index" if "index" in params else None
        if index is None:
            continue
        if any(isinstance(n, ast.Name) and n.id == index and not isinstance(n.ctx, ast.Load) for n in ast.walk(func)):
            continue
        aliases = {s.targets[0].id for s in func.body
                   if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
                   and isinstance(s.value, ast.Attribute) and s.value.attr == "term_doc"
                   and isinstance(s.value.value, ast.Name) and s.value.value.id == index}
        mixer = _TfMix(index, aliases, prog.np)
        new_body = [mixer.visit(s) for s in func.body]
        if mixer.mixed:
            func.body = new_body
            w = log_uniform(rng, 0.3, 3.0)
            _add_module_level(tree, ((_TF_MIX_NAME, w),), "")
            return f"splice field (tf mix in {func.name}): {_TF_MIX_NAME}={w:g}"
    raise NoEdit("no function reads index.term_doc's frequencies")


def _splice_field(tree: ast.Module, prog: ParsedProgram, rng) -> str:
    ch = draw_channel("field", rng)
    forms = [_splice_tf_mix, None] if rng.random() < 0.5 else [None, _splice_tf_mix]
    for form in forms:
        attempt = copy.deepcopy(tree)
        try:
            desc = form(attempt, prog, rng) if form else _splice_channel(attempt, prog, ch)
        except NoEdit:
            continue
        tree.body[:] = attempt.body
        return desc
    raise NoEdit("no field form applies")


def _splice_kind(kind: str):
    def edit(tree: ast.Module, prog: ParsedProgram, rng) -> str:
        return _splice_channel(tree, prog, draw_channel(kind, rng))
    return edit


_EDITS = {"field": _splice_field, "proximity": _splice_kind("proximity"), "variants": _splice_kind("variants"),
          "feedback": _splice_kind("feedback")}
assert set(_EDITS) == set(SPLICE_KINDS)


def splice(parent_source: str | ParsedProgram, rng: np.random.Generator, operator: str) -> Mutation:
    """The parent with one channel of ``operator``'s kind spliced in (see the module docstring).

    Raises NoEdit when that kind does not apply (unrecognised ``score``, the channel already there, a
    numpy alias other than ``np``, the block too large); ValueError for a parent without a usable block."""
    prog = parent_source if isinstance(parent_source, ParsedProgram) else parse_program(parent_source)
    if operator not in SPLICE_WEIGHTS:
        raise ValueError(f"unknown splice operator {operator!r}")
    if prog.np != "np":
        raise NoEdit("the templates need numpy imported as np")
    tree = parse_ast(format_block(prog.tree))
    desc = _EDITS[SPLICE_WEIGHTS[operator][1]](tree, prog, rng)
    ast.fix_missing_locations(tree)
    text = format_block(tree)
    parent = prog.head + format_block(prog.tree) + prog.tail
    child = prog.head + text + prog.tail
    try:
        static_check(child, parent)
        compile(child, "<splice>", "exec")
    except (ProgramError, SyntaxError, ValueError) as e:
        raise NoEdit(f"spliced program refused: {short_text(str(e), 80)}") from None
    try:  # later point edits must be able to read the child
        child_prog = parse_program(child)
        Checker(child_prog)
        analyse(child_prog.tree, child_prog.np)
    except Exception:
        if DEBUG.strict:
            raise
        raise NoEdit("the offline analysis cannot read the spliced program") from None
    return Mutation(child, operator, desc)


def splice_mutation(prog: ParsedProgram, rng: np.random.Generator) -> Mutation | None:
    """One splice, the kinds tried in an order drawn by ``SPLICE_WEIGHTS``; None when none applies."""
    ops = list(SPLICE_WEIGHTS)
    w = np.array([SPLICE_WEIGHTS[o][0] for o in ops])
    for i in rng.choice(len(ops), size=len(ops), replace=False, p=w / w.sum()):
        try:
            return splice(prog, rng, ops[int(i)])
        except NoEdit:
            continue
    return None
