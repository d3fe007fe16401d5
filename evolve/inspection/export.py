"""``evorank export``: one program of a run as a standalone scorer module.

The module is ``export_template.py.txt`` with the program's module text (its own imports and its
EVOLVE-BLOCK) pasted in verbatim, so it reads like the program plus a documented harness: the
analyzer (a copy of evaluators/index/analyzer.py's rules), an index builder producing evorank's Index
attributes, ``make_query``, ``top_k`` (evorank's tie-breaking) and ``Retriever``. It imports only
numpy, scipy and (for the analyzer) PyStemmer.

If the program itself defines a name that the harness defines too (``Index``, ``tokenize``, ...),
pasting it in would let one clobber the other; then the program is embedded as a string and run
in its own namespace instead (same behaviour, less readable), and the header says so.

The exported module runs in the user's process with nothing around it, unlike the run's candidates, which ran
only in the jail. So only verified programs are written: ``evaluators.program.export_check`` checks the program
against the exportable subset (an allowlist of constructs, names, modules, attributes and builtins; see
docs/sandbox.md), and a program outside it is refused with each line and reason. ``--unverified`` writes it
anyway, under a banner at the top of the file that says it was not verified and what the check found.
"""
from __future__ import annotations

import ast
import datetime as _dt
import json
import re
import sys
from importlib import resources
from pathlib import Path

from evorank.archive import ProgramRecord
from evorank.evaluators.errors import EvorankError, check_output_path
from evorank.evaluators.metrics import METRICS
from evorank.evaluators.program.checks import Violation
from evorank.evaluators.program.export_check import verify_exportable
from evorank.evaluators.program.output import escape_hidden, first_hidden
from evorank.evaluators.splits import MIN_QUERIES_TO_SPLIT
from .queries import lineage, open_run, resolve_id
from evorank.evolve.engine.provenance import program_docstring, with_docstring
from evorank.threadsafe_ast import parse_ast

TEMPLATE = resources.files("evorank.evolve.inspection") / "export_template.py.txt"
PLACEHOLDERS = ("@@TITLE@@", "@@PROVENANCE@@", "@@MODULE@@", "@@FUTURE@@", "@@PROVENANCE_DICT@@",
                "@@PROGRAM_LABEL@@", "@@PROGRAM@@")


class ExportError(EvorankError):
    pass


#: Text that marks a file as a run's output wherever it was copied: the fixed sentence of the exported module's
#: header (``export_template.py.txt``) and the opening of the docstring that ``best.py`` and every exported program
#: carry (``provenance.program_docstring``). ``evorank eval`` runs such files only in the sandbox.
RUN_OUTPUT_MARKS = ("exported as a standalone module", "evolved by evorank in run")


def run_output_mark(text: str) -> str | None:
    """The mark (of ``RUN_OUTPUT_MARKS``) that shows ``text`` was written by a run or by ``export``, or None."""
    return next((m for m in RUN_OUTPUT_MARKS if m in text), None)


#: The lines around the program inside an exported module (``export_template.py.txt``).
PROGRAM_OPENS = "# The evolved ranking program, "
PROGRAM_ENDS = "# End of the evolved ranking program"


def embedded_program(text: str) -> str | None:
    """The ranking program an exported module carries verbatim (its EVOLVE-BLOCK with the imports before it), or
    None when ``text`` is not such a module: what ``evorank eval`` scores for an exported file."""
    lines = text.splitlines(keepends=True)
    opens = [i for i, line in enumerate(lines) if line.startswith(PROGRAM_OPENS)]
    ends = [i for i, line in enumerate(lines) if line.startswith(PROGRAM_ENDS)]
    if len(opens) != 1 or len(ends) != 1 or ends[0] < opens[0] + 3:
        return None
    body = lines[opens[0] + 2:ends[0] - 1]  # between the ===== rule under the title and the one above the end
    program = "".join(body)
    return program if "# EVOLVE-BLOCK-START" in program and "# EVOLVE-BLOCK-END" in program else None


class ExportRefused(ExportError):
    """The program is outside the exportable subset; ``violations`` say where and why."""

    def __init__(self, rec: ProgramRecord, violations: list[Violation]):
        self.rec, self.violations = rec, violations
        super().__init__(f"program #{rec.id} was not exported: it is outside the subset of Python an exported scorer "
                         f"may use (docs/sandbox.md, 'The exportable subset'):\n{violation_lines(violations)}\n"
                         "Line numbers are the program's as `evorank show RUN ID` prints it. Export another program, "
                         "or read this one and write it with --unverified (the file then says it was not verified)")


def violation_lines(violations: list[Violation], limit: int = 12, indent: str = "  ") -> str:
    """The first ``limit`` violations, one per line (their text made printable)."""
    lines = [indent + escape_hidden(str(v), keep="") for v in violations[:limit]]
    if len(violations) > limit:
        lines.append(f"{indent}(and {len(violations) - limit} more)")
    return "\n".join(lines)


def unverified_banner(rec: ProgramRecord, violations: list[Violation]) -> str:
    """The comment block that opens a module written with ``--unverified``."""
    rule = "# " + "=" * 100
    return "\n".join([
        rule,
        f"# UNVERIFIED: program #{rec.id} is outside evorank's exportable subset (docs/sandbox.md), and",
        "# `evorank export --unverified` wrote it anyway. Importing this module runs the evolved code with your",
        "# rights, outside any sandbox: read all of it first. What the check found (lines of the program as",
        "# `evorank show RUN ID` prints it):",
        *("# " + line for line in violation_lines(violations, indent="  ").splitlines()),
        rule,
    ]) + "\n"


def _bound_names(tree: ast.Module) -> set[str]:
    """Names a module binds at top level (defs, classes, assignments, imports, loop/with targets)."""
    names: set[str] = set()

    def targets(node):
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                names.add(n.id)

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                names.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                targets(t)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets(node.target)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            targets(node.target)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    targets(item.optional_vars)
        elif isinstance(node, (ast.If, ast.Try)):
            names |= _bound_names(ast.Module(body=[*node.body, *getattr(node, "orelse", []),
                                                   *getattr(node, "finalbody", [])], type_ignores=[]))
    return names


def template_names(template: str) -> set[str]:
    """Top-level names the harness binds (the program must not rebind any of them)."""
    text = template
    for ph in PLACEHOLDERS:
        text = text.replace(ph, "None" if ph == "@@PROVENANCE_DICT@@" else "")
    return _bound_names(parse_ast(text)) - {"prepare", "score"}


def _split_future(code: str) -> tuple[str, str]:
    """Move ``from __future__`` imports out of the program (they must open the exported file)."""
    future, rest = [], []
    for line in code.splitlines(keepends=True):
        (future if re.match(r"\s*from\s+__future__\s+import\s", line) else rest).append(line)
    return "".join(future), "".join(rest)


def _metrics_lines(metrics: dict[str, dict[str, float]]) -> list[str]:
    names = METRICS
    width = max([len(c) for c in metrics] + [10])
    lines = [f"    {'collection':<{width}}  " + "  ".join(f"{n:>11}" for n in names)]
    for coll, m in metrics.items():
        vals = "  ".join(f"{m[n]:>11.4f}" if m.get(n) is not None else f"{'-':>11}" for n in names)
        lines.append(f"    {coll:<{width}}  {vals}")
    return lines


def figures_lines(rec: ProgramRecord, validation_fraction: float, fitness_preset: str | None = None) -> list[str]:
    """The header's figures, each saying which queries it is on: the run measured a program on its train queries
    (what selection saw) and apart on its validation queries; ``evorank eval RUN:ID`` scores every judged query."""
    fitness = f"{rec.fitness:.6f}" if rec.fitness is not None else "none"
    val = rec.features.get("val_fitness")
    val_metrics = rec.features.get("val_metrics") or {}
    lines = [f"    fitness:     {fitness} ({fitness_preset or 'rankevolve'}) on "
             + (f"the run's train queries: {1 - validation_fraction:.0%} of each collection's judged queries\n"
                f"                 (all of them where a collection has fewer than {MIN_QUERIES_TO_SPLIT})"
                if validation_fraction else "all judged queries (the run kept no validation queries)")]
    if isinstance(val, (int, float)):
        lines.append(f"                 {val:.6f} on its validation queries (the other {validation_fraction:.0%}), "
                     "which never steered evolution")
    if rec.latency_ratio is not None:
        lines.append(f"    latency:     {rec.latency_ratio:.2f}x the BM25 seed")
    lines.append(f"    metrics on {'the train queries' if validation_fraction else 'all judged queries'} "
                 "(1,000 documents per query):")
    lines += _metrics_lines(rec.metrics) if rec.metrics else ["    (none recorded)"]
    if val_metrics:
        lines.append("    metrics on the validation queries:")
        lines += _metrics_lines(val_metrics)
    lines.append(f"    `evorank eval RUN:{rec.id}` (RUN: the run folder above) scores this program on every judged "
                 "query of a collection, so its figures differ from these.")
    return lines


def render(rec: ProgramRecord, run_dir, *, module_name: str = "my_scorer", fitness_preset: str | None = None,
           seed_name: str | None = None, when: _dt.datetime | None = None, docstring: str | None = None,
           unverified: list[Violation] | None = None, validation_fraction: float = 0.0) -> str:
    """The exported module's text for one archived program; ``docstring`` replaces the program's own (its seed's)
    module docstring (``provenance.program_docstring``). ``unverified``: the violations of a program written
    although it is outside the exportable subset (the module then opens with ``unverified_banner``); None for a
    verified program. ``validation_fraction``: the run's share of validation queries (the header says which
    queries each figure is on)."""
    from importlib import metadata

    try:
        version = metadata.version("evorank")
    except metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    when = when or _dt.datetime.now(_dt.timezone.utc)
    template = TEMPLATE.read_text(encoding="utf-8")
    code = rec.code if rec.code.endswith("\n") else rec.code + "\n"
    if docstring is not None:
        code = with_docstring(code, docstring)
    try:
        tree = parse_ast(code)
    except SyntaxError as e:
        raise ExportError(f"program #{rec.id} does not parse (line {e.lineno}: {e.msg}); nothing to export") from None
    clashes = sorted(_bound_names(tree) & template_names(template))
    future, body = _split_future(code)
    if clashes:
        body = (
            f"# The program defines {', '.join(clashes)}, which this module's harness also defines, so it runs in\n"
            "# its own namespace (unchanged code, below as text) instead of being pasted in.\n"
            f"_PROGRAM_SOURCE = {body!r}\n"
            "_PROGRAM = {\"__name__\": \"evolved_program\"}\n"
            f"exec(compile(_PROGRAM_SOURCE, \"<evolved program #{rec.id}>\", \"exec\"), _PROGRAM)\n"
            "prepare = _PROGRAM.get(\"prepare\")\n"
            "score = _PROGRAM[\"score\"]\n"
        )
    fitness = f"{rec.fitness:.6f}" if rec.fitness is not None else "none"
    provenance = [
        f"    run:         {Path(run_dir).resolve()}",
        f"    program:     #{rec.id} (code hash {rec.code_hash}), island {rec.island}, iteration {rec.iteration}, "
        f"operator {rec.operator}" + (f", model {rec.model}" if rec.model else ""),
        f"    lineage:     descends from the {seed_name} seed" if seed_name else "    lineage:     -",
        f"    status:      {rec.status}" + (f" ({rec.failure_reason})" if rec.failure_reason else ""),
        f"    exported:    {when.strftime('%Y-%m-%d %H:%M:%S UTC')} by evorank {version}",
        "    verified:    " + ("NO: outside the exportable subset, written with --unverified (see the banner)"
                               if unverified is not None else "yes: within evorank's exportable subset"),
        *figures_lines(rec, validation_fraction, fitness_preset),
    ]
    if clashes:
        provenance.append("    note:        the program runs in its own namespace (it reuses harness names)")
    prov_dict = {
        "run": str(Path(run_dir).resolve()), "program_id": rec.id, "code_hash": rec.code_hash,
        "island": rec.island, "iteration": rec.iteration, "operator": rec.operator, "model": rec.model,
        "seed": seed_name, "status": rec.status, "fitness": rec.fitness, "fitness_preset": fitness_preset,
        "latency_ratio": rec.latency_ratio, "metrics": rec.metrics,
        "metrics_queries": "train" if validation_fraction else "all",
        "validation_fraction": validation_fraction, "validation_fitness": rec.features.get("val_fitness"),
        "validation_metrics": rec.features.get("val_metrics"),
        "exported_at": when.isoformat(timespec="seconds"), "evorank_version": version,
        "verified": unverified is None,
    }
    title = (("UNVERIFIED " if unverified is not None else "")
             + f"Evolved ranking function #{rec.id} (fitness {fitness}) from run {Path(run_dir).resolve().name}")
    values = {
        "@@TITLE@@": title.replace('"""', "'''"),
        "@@PROVENANCE@@": "\n".join(provenance).replace('"""', "'''").replace("\\", "/"),
        "@@MODULE@@": module_name,
        "@@FUTURE@@": future,
        "@@PROVENANCE_DICT@@": _py_literal(prov_dict),
        "@@PROGRAM_LABEL@@": f"program #{rec.id} of {Path(run_dir).resolve().name} (verbatim from the archive)",
        "@@PROGRAM@@": body.rstrip("\n"),
    }
    out = template
    for ph in PLACEHOLDERS:  # @@PROGRAM@@ last: the program's own text is never searched for placeholders
        out = out.replace(ph, values[ph])
    if unverified is not None:
        out = unverified_banner(rec, unverified) + out
    try:
        compile(out, module_name, "exec")
    except SyntaxError as e:  # pragma: no cover - would be a template bug
        raise ExportError(f"the exported module does not compile (line {e.lineno}: {e.msg})") from None
    return out


def _py_literal(obj) -> str:
    """A Python literal for the provenance dict (the archive stores non-finite numbers as None)."""
    import pprint

    return pprint.pformat(obj, sort_dicts=False, width=110)


def export_program(run_dir, ident: str = "best", out: str | Path | None = None,
                   unverified: bool = False) -> tuple[Path, ProgramRecord, list[Violation]]:
    """Write program ``ident`` of the run to ``out`` (default scorer_<id>.py); returns (path, its record, the
    violations of the exportable subset). Raises ExportRefused for a program outside the subset unless
    ``unverified``, which writes it under a banner."""
    with open_run(run_dir) as store:
        with store.read_snapshot():
            rec = resolve_id(store, ident)
            chain = lineage(store, rec)
            preset = store.config().get("fitness")
            validation_fraction = float(store.config().get("validation_fraction") or 0.0)
    violations = verify_exportable(rec.code)
    if violations and not unverified:
        raise ExportRefused(rec, violations)
    seed = chain[0] if chain and chain[0].operator == "seed" else None
    seed_name = seed.features.get("seed_name") if seed else None
    path = Path(out) if out else Path(f"scorer_{rec.id}.py")
    check_output_path(path, what="export")
    module = path.stem if path.stem.isidentifier() else "my_scorer"
    text = render(rec, run_dir, module_name=module, fitness_preset=preset, seed_name=seed_name,
                  docstring=program_docstring(rec, chain, seed_name, Path(run_dir).resolve().name),
                  unverified=violations or None, validation_fraction=validation_fraction)
    hidden = first_hidden(text)  # the file as written: its docstring quotes the run's replies, not only the code
    if hidden is not None:
        raise EvorankError(f"program {rec.id}: the module to write holds a hidden character (U+{ord(hidden[1]):04X}) "
                           f"on line {hidden[0]}; nothing was written")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path, rec, violations


def cmd_export(args) -> int:
    try:
        path, rec, violations = export_program(args.run, args.id, args.out, unverified=args.unverified)
    except ExportRefused as e:
        if args.json:
            print(json.dumps({"path": None, "program_id": e.rec.id, "verified": False,
                              "violations": [{"line": v.line, "reason": v.reason, "message": v.message}
                                             for v in e.violations]}, indent=2))
        else:
            print(f"evorank: {e}", file=sys.stderr)
        return 1
    warning = None
    if rec.status != "accepted":
        warning = (f"program #{rec.id} was not accepted in the run ({rec.status}"
                   + (f": {rec.failure_reason}" if rec.failure_reason else "") + "); it may not work")
    if args.json:
        print(json.dumps({"path": str(path), "program_id": rec.id, "fitness": rec.fitness, "warning": warning,
                          "verified": not violations}, indent=2))
        return 0
    if warning:
        print(f"evorank: warning: {warning}", file=sys.stderr)
    if violations:
        print(f"evorank: warning: {path} is UNVERIFIED: program #{rec.id} is outside the exportable subset and runs "
              f"with your rights when imported. Read it first; the banner at its top lists what the check found:\n"
              f"{violation_lines(violations)}", file=sys.stderr)
        print(f"wrote {path}: program #{rec.id} (fitness {rec.fitness if rec.fitness is not None else '-'}), UNVERIFIED")
        return 0
    print(f"wrote {path}: program #{rec.id} (fitness {rec.fitness if rec.fitness is not None else '-'}), verified: "
          "within the exportable subset")
    if path.stem.isidentifier():
        print(f"try:  python -c \"from {path.stem} import Retriever; "
              f"print(Retriever({{'a': 'solar power for homes', 'b': 'baking bread'}}).search('solar', k=5))\"")
    return 0
