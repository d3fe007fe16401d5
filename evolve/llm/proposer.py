"""The chat-model proposer: a prompt built from the archive, one chat completion, the reply applied to the parent.

:class:`LLMProposer` asks a model (through :class:`~evorank.evolve.llm.client.LLMClient`) for a SEARCH/REPLACE
diff, a full block rewrite or a crossover of two parents, each diff or rewrite given one direction
(:mod:`~evorank.evolve.llm.directions`); the reply is applied (:mod:`~evorank.evolve.llm.replies`), mended by
trusted code (:mod:`~evorank.evolve.llm.mend`) and handed to the engine. A candidate that fails gets up to
``repair_rounds`` follow-up requests (``follow_up``). What the engine asks of a proposer is described in
:mod:`evorank.evolve.proposal`.
"""
from __future__ import annotations

import functools

import numpy as np

from evorank.evaluators.metrics import FitnessSpec
from evorank.evaluators.program.source import BLOCK_END, BLOCK_START, split_block
from evorank.evolve.proposal import COPY, CROSSOVER, NO_OP, REPAIR, ArchiveView, Proposal, repair_of

from .client import LLMClient, unreachable
from .directions import Direction
from .directions import choose as choose_direction
from .failing_statement import MARKER, failing_statement
from .mend import fix_candidate
from .prompts import (IDEA_CHARS, PromptTemplates, build_messages, repair_message, repeats_prompt, request_digest,
                      rewrite_repair_message, statement_repair_message, truncated_message)
from .replies import (BLOCK_END_STOP, REPLY_FAILURES, ReplyError, apply_reply, apply_statement_fix, change_lines,
                      check_changes_what_runs, check_not_a_copy, check_prepare_reads_no_query, reply_prose,
                      with_block_end)

__all__ = ["LLMProposer", "objective_text", "metric_label", "direction_donor", "donor_label",
           "candidate_failed", "REPEATED_NOTE"]


# -- the objective, in words ---------------------------------------------------------------------

_METRIC_LABELS = {"ndcg": "nDCG", "recall": "Recall", "map": "MAP", "mrr": "MRR", "precision": "P"}


def metric_label(name: str) -> str:
    """How a metric is written for people: ``recall@100`` -> ``Recall@100``, ``ndcg@10`` -> ``nDCG@10``."""
    base, at, cutoff = name.partition("@")
    return _METRIC_LABELS.get(base.lower(), base) + at + cutoff


def objective_text(spec: FitnessSpec) -> str:
    """The fitness ``spec`` as the sentence a proposer is given as its objective, e.g. "Maximise
    fitness = 0.8 x mean Recall@100 + 0.2 x mean nDCG@10 over the evaluation collections (...)"."""
    formula = ""
    for metric, weight in spec.weights.items():
        term = f"{abs(weight):g} x mean {metric_label(metric)}"
        if not formula:
            formula = f"-{term}" if weight < 0 else term
        else:
            formula += f" - {term}" if weight < 0 else f" + {term}"
    if spec.latency_exponent:
        latency = ("Programs slower than BM25 are penalised: fitness x (BM25 latency / latency)"
                   f"^{spec.latency_exponent:g}.")
    else:
        latency = "Also keep scoring about as fast as BM25; latency is reported."
    if spec.robust:
        worst = (f" {spec.worst_weight:g} of it is the worst collection's gain, the rest the mean over collections:"
                 " a gain must hold on every collection." if spec.worst_weight else "")
        per = "each metric's relative gain, weighted as" if spec.per_metric else "the relative gain of"
        return (f"Maximise fitness = 1 + the gain over BM25 on each evaluation collection ({per} {formula}; a "
                f"loss counts {spec.regression_penalty:g} times).{worst} A program that fails on any collection "
                f"scores 0. {latency}")
    return (f"Maximise fitness = {formula} over the evaluation collections "
            f"(macro average; a program that fails on any collection scores 0). {latency}")


def donor_label(rec) -> str:
    """How a program names itself in a borrowed definition's note: ``seed bm25`` or ``program 12``."""
    return f"seed {rec.features['seed_name']}" if rec.operator == "seed" and "seed_name" in rec.features \
        else f"program {rec.id}"


# -- the proposers -------------------------------------------------------------------------------

#: Failure reasons of a reply that gave back code already there: unchanged, or a program already archived.
ECHOES = ("no_change", "duplicate")
#: Failures of a candidate that ran, or would have, exactly as a program already there: the code given back (the
#: echoes), a program the prompt showed, or a change that ranks every sampled query as its start. A rewrite repair
#: asks for a change that moves documents.
UNCHANGED = (*ECHOES, COPY, NO_OP)


def direction_donor(direction: Direction) -> tuple[str, str]:
    """(label, code) of a direction's helpers (and its example program, when its directions file has one), as a
    program to borrow definitions from (``mend.names``, ``mend.state``)."""
    return f"direction {direction.name}", f"{BLOCK_START}\n{direction.program_block}{BLOCK_END}\n"


def candidate_failed(reason: str | None) -> bool:
    """Whether a failure is the candidate's own (it failed the static checks or when run), not its reply's (did
    not parse or apply, or gave back code already there)."""
    return bool(reason) and reason not in REPLY_FAILURES and reason not in UNCHANGED




#: Said before a repair request when the previous repair returned the failing code unchanged (small models often
#: echo the code they were shown).
REPEATED_NOTE = "Your reply repeated the code without changing it, so it still fails in the same way."


class LLMProposer:
    """A chat model writes each candidate: a prompt built from the archive (main thread), one chat
    completion (worker thread), and the reply applied to the parent as a SEARCH/REPLACE diff or a
    full rewrite of the block, then mended where trusted code knows what it meant (:func:`fix_candidate`:
    names borrowed from the programs the prompt showed, arrays gathered to the postings).

    Operators are drawn from ``operator_mix`` (``diff`` / ``full`` / ``crossover``); a crossover
    without a partner becomes a ``diff``. The operator recorded for ``diff`` and ``full`` is what the
    reply really was. A failed proposal's repair (``follow_up``) asks the same model again, how depending on
    the failure and on ``repair_style`` (``rewrite`` or ``fix``, config.REPAIR_STYLES); a request that reached no
    model sets ``Proposal.unavailable`` with the client's one-line explanation (URL, cause, fix).
    """

    instantaneous = False

    def __init__(self, client: LLMClient, templates: PromptTemplates, objective: str,
                 operator_mix: dict[str, float], concurrency: int, repair_style: str = "rewrite",
                 directions: tuple[str, ...] = (), seed: int = 0):
        self.client = client
        self.directions = directions  # the names a diff or full proposal's direction is drawn from (none: no direction)
        self.seed = seed
        self.repair_style = repair_style
        self.templates = templates
        self.objective = objective
        self.operator_mix = dict(operator_mix)
        self.concurrency = concurrency
        self.collection_sizes: dict[str, tuple[int, int, int]] = {}

    @functools.cached_property
    def stops(self) -> tuple[str, ...]:
        """Where the server ends every reply: an echo of the prompt, and the end of the block a reply gives."""
        return (*self.templates.echo_stops(), BLOCK_END_STOP)

    def set_collection_sizes(self, sizes: dict[str, tuple[int, int, int]]) -> None:
        """Collection name -> (documents, terms, postings): repair requests for shape errors quote them."""
        self.collection_sizes = dict(sizes)

    def choose_operator(self, rng: np.random.Generator, has_partner: bool) -> str:
        kinds = sorted(self.operator_mix)
        w = np.array([self.operator_mix[k] for k in kinds], dtype=float)
        operator = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
        return "diff" if operator == CROSSOVER and not has_partner else operator

    def prepare(self, prop: Proposal, view: ArchiveView) -> None:
        """Build the chat messages (``prop.messages``; the user message is ``prop.prompt``); a diff or full
        proposal is given a direction (``prop.direction``) when the run allows any."""
        insp = view.inspirations(prop)
        if prop.operator != CROSSOVER:
            prop.direction = choose_direction(self.directions, self.seed, prop.iteration)
        direction = self.templates.directions()[prop.direction] if prop.direction else None
        prop.messages = build_messages(
            self.templates, prop.operator, prop.parent, view.seed_records, self.objective,
            failures=view.recent_failures(prop), inspirations=insp, other=prop.other,
            block_of=lambda code: split_block(code).block, direction=direction,
        )
        prop.prompt = prop.messages[-1]["content"]
        prop.opening = prop.messages
        prop.sent = (("first", request_digest(prop.messages)),)
        shown = [r for r in (prop.parent, prop.other, *insp, *view.seed_records.values()) if r is not None]
        donors: dict[str, tuple[str, str]] = {}
        if direction is not None and direction.code:  # its helpers first: a candidate that calls one without
            #                                          copying it gets it (mend.names)
            donors[""] = direction_donor(direction)
        for r in shown:
            donors.setdefault(r.code, (donor_label(r), r.code))
        prop.donors = tuple(donors.values())
        # what the prompt showed besides the parent: a candidate that is one of these is a copy (not evaluated)
        others = [(f"program {r.id}", r.code) for r in (prop.other, *insp) if r is not None]
        if direction is not None and direction.example:  # a directions file that shows a complete program
            others.append(direction_donor(direction))
        prop.shown = tuple(others)

    def fill(self, prop: Proposal, rng: np.random.Generator) -> None:
        """One chat completion (the model preset for a repair, else drawn from the ensemble) applied to the
        parent; a repair keeps its operator, the others record what the reply really was."""
        kind = prop.operator
        completion = self.client.complete(prop.messages, rng, model=prop.model, stop=self.stops)
        # the reply as the model wrote it: with the block's end marker where the server stopped it
        text = None if completion.text is None else with_block_end(completion.text, completion.finish_reason)
        prop.model = completion.model
        prop.prompt_tokens, prop.completion_tokens = completion.prompt_tokens, completion.completion_tokens
        prop.cost_usd = completion.cost_usd
        prop.response, prop.finish_reason = text, completion.finish_reason
        if prop.repair_round == 0 and text is not None:
            prop.idea = reply_prose(text, IDEA_CHARS)
        if text is None:
            if unreachable(completion.error):
                prop.unavailable = self.client.explain(completion)
            prop.failure_reason = f"llm:{completion.error}"
            prop.failure_detail = "; ".join(completion.retry_log)[-500:]
            return
        try:
            if prop.statement is not None:
                first, last, alone = prop.statement
                prop.source, applied = apply_statement_fix(prop.edits.code, first, last, text, MARKER,
                                                           completion.finish_reason, alone)
            else:
                prop.source, applied = apply_reply(prop.edits.code, text,
                                                   "diff" if kind in ("diff", REPAIR) else "full",
                                                   completion.finish_reason)
        except ReplyError as e:
            prop.failure_reason, prop.failure_detail = e.reason, str(e)
            return
        prop.source, prop.trusted_edits = fix_candidate(prop.source, prop.donors)
        prop.change = change_lines(prop.edits.code, prop.source) or None
        try:
            check_prepare_reads_no_query(prop.source)  # a line that raises whenever prepare runs
            check_changes_what_runs(prop.edits.code, prop.source)  # helpers added that nothing calls
            check_not_a_copy(prop.source, prop.shown)  # a program the prompt showed, given back
        except ReplyError as e:  # not evaluated: it would rank as before, or fail, as the message says
            prop.source, prop.failure_reason, prop.failure_detail = None, e.reason, str(e)
            return
        if kind not in (CROSSOVER, REPAIR):
            prop.operator = applied  # record what the reply really was

    def follow_up(self, prop: Proposal, failed) -> Proposal | None:
        """A repair of ``prop`` (archived as ``failed``), or None when there is no conversation to continue or the
        repair would ask exactly what its chain asked before (a model asked the same twice answers the same).

        Every request names this proposal's own failure (``failed``), never an earlier one's.

        - a reply cut off at max_tokens: the chain's first request again, with the idea that reply gave, asking for
          the same change much shorter; once per chain (a second cut-off ends it);
        - with ``repair_style`` "rewrite", every other failure: a candidate that failed the static checks or when
          run, one that ran (or would have) exactly as a program already there (code given back unchanged, an
          archived program, a program the prompt showed, a change that ranks every sampled query as its start), a
          reply that gave nothing to apply (no code, edits that do not match the program): the chain's first
          request again, with the direction, the idea its first reply gave and the lines this candidate changed,
          the failure and the line it names, asking for the idea written afresh on the program the chain started
          from (:func:`rewrite_repair_message`), in a fresh conversation: continuing one that holds a reply without
          code (often the prompt echoed back, or the format's template filled in) leads a model to answer it again;
        - with "fix", a program that raised in a statement of its block: a fresh, short conversation showing the
          function it failed in with the statement marked, asking for that code corrected
          (:mod:`evorank.evolve.llm.failing_statement`); a repair that gave back the failing code unchanged: a fresh
          conversation about the failure that code still has, saying so, asked the other way round (a statement
          repair after a block repair, a block repair after a statement repair);
        - with "fix", anything else (a reply that did not parse or apply, a failure without a line): the same
          conversation, the model's reply, then a request to fix the block.

        The idea a repair quotes is the first reply's own words, left out where they are the prompt's text given
        back (:func:`~evorank.evolve.llm.prompts.repeats_prompt`).
        """
        if prop.messages is None or prop.response is None:
            return None
        system, reason = prop.messages[:1], failed.failure_reason
        opening = prop.opening or prop.messages[:2]
        idea = None if repeats_prompt(prop.idea, opening[-1]["content"]) else prop.idea
        if reason == "truncated" or (prop.finish_reason == "length" and (reason == "syntax_error"
                                                                           or not candidate_failed(reason))):
            # a reply stopped at max_tokens: its code is incomplete (whether or not a fence happened to close, and
            # whatever became of what it gave: code that does not parse, code already there)
            if any(kind == "shorter" for kind, _ in prop.sent):
                return None
            messages = truncated_message(self.templates, opening, idea, self.client.settings.max_tokens,
                                         prop.direction)
            return self._ask(prop, failed, messages, edit_base=prop.base, repair_kind="shorter")
        if self.repair_style == "rewrite":  # any failure but a cut-off (the engine follows up repairable ones)
            messages = rewrite_repair_message(self.templates, opening, idea, failed, prop.base.id,
                                              self.collection_sizes, prop.change, prop.direction)
            return self._ask(prop, failed, messages, edit_base=prop.base, repair_kind="rewrite")
        if reason in ECHOES and prop.operator == REPAIR and candidate_failed(prop.parent.failure_reason):
            target = prop.parent  # the code it gave back still fails as the attempt before it did
            st = failing_statement(target.code, target.failure_detail) if prop.statement is None else None
            if st is not None:
                ask = REPEATED_NOTE + "\n\n" + statement_repair_message(self.templates, target, st,
                                                                         self.collection_sizes)
                return self._ask(prop, failed, [*system, {"role": "user", "content": ask}], edit_base=target,
                                 statement=(st.first, st.last, st.simple), repair_kind="statement")
            ask = REPEATED_NOTE + "\n\n" + repair_message(self.templates, target, split_block(target.code).block,
                                                           self.collection_sizes)
            return self._ask(prop, failed, [*system, {"role": "user", "content": ask}], edit_base=target,
                             repair_kind="block")
        st = failing_statement(failed.code, failed.failure_detail) if (reason or "").startswith("exception:") else None
        if st is not None:
            ask = statement_repair_message(self.templates, failed, st, self.collection_sizes)
            return self._ask(prop, failed, [*system, {"role": "user", "content": ask}],
                             statement=(st.first, st.last, st.simple), repair_kind="statement")
        ask = repair_message(self.templates, failed, split_block(failed.code).block, self.collection_sizes)
        return self._ask(prop, failed, [*prop.messages, {"role": "assistant", "content": prop.response},
                                        {"role": "user", "content": ask}], repair_kind="block")

    @staticmethod
    def _ask(prop: Proposal, failed, messages: list[dict], **fields) -> Proposal | None:
        """The repair sending ``messages``, or None when its chain sent exactly this request before."""
        digest = request_digest(messages)
        if any(d == digest for _, d in prop.sent):
            return None
        return repair_of(prop, failed, messages=messages, prompt=messages[-1]["content"], model=prop.model,
                         sent=(*prop.sent, (fields["repair_kind"], digest)), **fields)

    def close(self) -> None:
        pass  # the HTTP client closes with the process
