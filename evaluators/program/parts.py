"""What a program adds over its seed, read from the two syntax trees: its parts, and the program without each.

Nothing here runs a program; ``evorank explain`` (``evolve.inspection.explain``) evaluates what :func:`parts`
returns. A part is one of

``channel``   a term added to the score: a statement that adds to (``scores = scores + W * evidence``,
              ``scores += ...``) or widens (``matched = matched | ...``) a variable the seed computes, beyond
              the seed's own assignments of it: the offline splices' field, proximity, variant and feedback
              channels, and the same shape written by a model. Removed with the statements that widen the
              retrieved set by the same evidence.
``formula``   a statement of a function the seed also has whose expression differs from the seed's assignment
              of the same variable (its k-th assignment matched with the seed's k-th): a reweighted tf, an
              inserted idf factor, a title-weighted tf mix, a changed return. Restored to the seed's statement.
``constant``  a module-level constant the seed also has, with another value (``K1``, ``B``, ``MU``). Restored
              to the seed's value.
``member``    one program of a score fusion (``fusion``): the fusion without it is the fusion of the others
              (or the one left). A fused program's parts are its members.

Helper functions and constants the seed lacks are not parts of their own: they belong to the channel or
formula that uses them, and stay in the program (unused) when it is removed. Each ablated program keeps the
program's head and tail byte-identical, so it goes through the same static checks and sandbox as the program.
"""
from __future__ import annotations

import ast
import copy
from dataclasses import dataclass

from .fusion import members, without_member
from .source import split_block
from evorank.threadsafe_ast import parse_ast

#: what the offline splices call their channels' variables, in words
CHANNEL_NAMES = {"title_evidence": "field: title", "proximity_evidence": "proximity",
                 "variant_evidence": "term variants", "feedback_evidence": "feedback (second pass)"}
#: index attributes that name the evidence a changed formula starts to read
EVIDENCE_ATTRS = {"title_tf": "field", "title_len": "field", "field": "field", "positions": "positions",
                  "posting_positions": "positions", "doc_positions": "positions", "doc_term": "document rows",
                  "terms": "term strings", "term_id": "term strings"}


@dataclass(frozen=True)
class Part:
    """One part of a program that its seed lacks, and the program without it."""

    name: str  # short label, unique within a program
    kind: str  # channel | formula | constant | member
    detail: str  # the statement or value, as code
    ablated: str  # the whole program without this part (or with the seed's version of it)


def parts(program: str, seed: str) -> list[Part]:
    """The parts ``program`` adds over ``seed`` (see the module docstring), in the order of the code: changed
    constants first, then each function's changed formulas and added channels. ValueError when either has no
    EVOLVE-BLOCK or a block that does not parse."""
    fused = members(program)
    if fused is not None:
        return [Part(f"member {k + 1} of {len(fused)}", "member", _short(" ".join(split_block(m).block.split())),
                     without_member(program, k)) for k, m in enumerate(fused)]
    prog_split, seed_split = split_block(program), split_block(seed)
    tree, seed_tree = parse_ast(prog_split.block), parse_ast(seed_split.block)

    def rebuild(body: list[ast.stmt]) -> str:
        return prog_split.head + _format(body) + prog_split.tail

    out = []
    seed_consts = _constants(seed_tree)
    for i, stmt in enumerate(tree.body):
        name = _constant_name(stmt)
        if name is None or name not in seed_consts or ast.dump(stmt.value) == ast.dump(seed_consts[name].value):
            continue
        body = list(tree.body)
        body[i] = seed_consts[name]
        out.append(Part(f"{name}", "constant", f"{ast.unparse(stmt.value)} (seed: {ast.unparse(seed_consts[name].value)})",
                        rebuild(body)))
    seed_funcs = {s.name: s for s in seed_tree.body if isinstance(s, ast.FunctionDef)}
    for fi, func in enumerate(tree.body):
        if not isinstance(func, ast.FunctionDef) or func.name not in seed_funcs:
            continue
        for label, kind, detail, new_body in _function_parts(func, seed_funcs[func.name]):
            body = list(tree.body)
            body[fi] = _with_body(func, new_body)
            out.append(Part(label, kind, detail, rebuild(body)))
    seen: dict[str, int] = {}
    named = []
    for p in out:  # labels unique within the program
        seen[p.name] = seen.get(p.name, 0) + 1
        named.append(p if seen[p.name] == 1 else Part(f"{p.name} ({seen[p.name]})", p.kind, p.detail, p.ablated))
    return named


def _format(body: list[ast.stmt]) -> str:
    module = ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))
    text = "\n".join(ast.unparse(s) + ("\n\n" if isinstance(s, ast.FunctionDef) else "") for s in module.body)
    return text.rstrip("\n") + "\n"


def _with_body(func: ast.FunctionDef, body: list[ast.stmt]) -> ast.FunctionDef:
    new = copy.copy(func)
    new.body = body or [ast.Pass()]
    return new


def _constant_name(stmt: ast.stmt) -> str | None:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
            and _is_number(stmt.value):
        return stmt.targets[0].id
    return None


def _is_number(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def _constants(tree: ast.Module) -> dict[str, ast.Assign]:
    return {name: s for s in tree.body if (name := _constant_name(s)) is not None}


def _target(stmt: ast.stmt) -> str | None:
    """The variable a top-level statement assigns (``return`` counts as assigning ``return``)."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id
    if isinstance(stmt, (ast.AugAssign, ast.AnnAssign)) and isinstance(stmt.target, ast.Name):
        return stmt.target.id
    if isinstance(stmt, ast.Return):
        return "return"
    return None


def _keys(body: list[ast.stmt]) -> list[tuple[str, int] | None]:
    """(target, how many earlier statements assigned it) of each statement; None for other statements."""
    count: dict[str, int] = {}
    keys = []
    for stmt in body:
        t = _target(stmt)
        if t is None:
            keys.append(None)
            continue
        keys.append((t, count.get(t, 0)))
        count[t] = count.get(t, 0) + 1
    return keys


def _extends(stmt: ast.stmt, target: str) -> ast.expr | None:
    """What ``stmt`` adds to ``target`` when it is ``target = target + X`` / ``target = target | X`` /
    ``target += X`` / ``target |= X`` (X), else None."""
    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, (ast.Add, ast.BitOr)):
        return stmt.value
    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.BinOp) \
            and isinstance(stmt.value.op, (ast.Add, ast.BitOr)) \
            and isinstance(stmt.value.left, ast.Name) and stmt.value.left.id == target:
        return stmt.value.right
    return None


def _attrs(node: ast.AST) -> set[str]:
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _function_parts(func: ast.FunctionDef, seed_func: ast.FunctionDef):
    """(label, kind, detail, the function's body without the part) of each part of one function."""
    body, seed_body = func.body, seed_func.body
    keys, seed_keys = _keys(body), _keys(seed_body)
    seed_at = {k: s for k, s in zip(seed_keys, seed_body) if k is not None}
    seed_targets = {k[0] for k in seed_at}
    widening = {i for i, (k, s) in enumerate(zip(keys, body))
                if k is not None and k not in seed_at and k[0] in seed_targets and isinstance(_extends(s, k[0]), ast.expr)
                and _is_widening(s)}
    consumed: set[int] = set()
    for i, (key, stmt) in enumerate(zip(keys, body)):
        if key is None:
            continue
        if key in seed_at:
            if ast.dump(stmt) != ast.dump(seed_at[key]):
                new = list(body)
                new[i] = seed_at[key]
                label = f"{func.name}: {key[0]}" + (f" #{key[1] + 1}" if key[1] else "")
                reads = sorted({EVIDENCE_ATTRS[a] for a in _attrs(stmt) - _attrs(seed_at[key]) if a in EVIDENCE_ATTRS})
                yield label + (f" ({', '.join(reads)})" if reads else ""), "formula", ast.unparse(stmt), new
            continue
        added = _extends(stmt, key[0])
        if added is None or key[0] not in seed_targets or i in widening:
            continue
        evidence = _names(added)
        # the statements that widen the retrieved set by the same evidence go with it
        drop = {i} | {j for j in widening if _names(_extends(body[j], keys[j][0])) & evidence}
        consumed |= drop
        label = next((CHANNEL_NAMES[n] for n in sorted(evidence) if n in CHANNEL_NAMES), None)
        label = label or f"{func.name}: + {_short(ast.unparse(added))}"
        yield label, "channel", ast.unparse(stmt), [s for j, s in enumerate(body) if j not in drop]
    for j in sorted(widening - consumed):  # a wider retrieved set on its own
        yield (f"{func.name}: {keys[j][0]} | {_short(ast.unparse(_extends(body[j], keys[j][0])))}", "channel",
               ast.unparse(body[j]), [s for k, s in enumerate(body) if k != j])


def _is_widening(stmt: ast.stmt) -> bool:
    """``x = x | ...`` / ``x |= ...``: widens a mask (the retrieved set) rather than adding to scores."""
    if isinstance(stmt, ast.AugAssign):
        return isinstance(stmt.op, ast.BitOr)
    return isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.BinOp) and isinstance(stmt.value.op, ast.BitOr)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
