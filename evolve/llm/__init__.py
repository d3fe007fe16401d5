"""Proposers that ask a model: chat models through any OpenAI-compatible endpoint, and external commands.

- ``client``             ``LLMClient`` (retries, timeouts, token and cost accounting), ``Budget``
- ``prompts``            prompt templates (``prompts/*.txt``) and the messages built from the archive
- ``directions``         the one way a proposal is asked to improve its parent
- ``replies``            a reply turned into a candidate: SEARCH/REPLACE diffs or a block rewrite
- ``failing_statement``  the statement a failed candidate raised at, for short repair requests
- ``proposer``           ``LLMProposer``: prompt, completion, reply, mends, repairs
- ``commands``           ``CommandProposer``: a program of the user's edits a file
- ``ensemble``           ``--llm`` parsed into weighted members; ``EnsembleProposer``
- ``preflight``          can every member be used, before a run writes anything
- ``mend``               trusted, parse-only mends of a candidate (a subpackage)

Public: ``LLMProposer``, ``CommandProposer``, ``EnsembleProposer``, ``LLMClient``, ``PromptTemplates``.

May import: evorank.archive, evorank.evaluators, evorank.threadsafe_ast, evorank.evolve.config,
evorank.evolve.proposal, evorank.evolve.llm.mend
"""
