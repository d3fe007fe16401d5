"""The ``evorank`` command line.

- ``main``        every subcommand's parser and the dispatch (commands imported lazily, so ``--help`` is fast)
- ``run``         ``evorank run``: the configuration, then the API's ``EvolutionJob`` with the progress line,
                  ``run.log`` and Ctrl-C around it, the closing summary
- ``evaluate``    ``evorank eval`` (prints what ``evorank.evaluate`` returns) and ``evorank datasets``
- ``live``        what a running job shows: the progress line, ``run.log``, which transfer check to suggest
- ``llm_server``  ``evorank llm-server``: a local GGUF model served as an OpenAI-compatible endpoint

Public: ``main``.

May import: evorank.archive, evorank.evaluators, evorank.threadsafe_ast, evorank.evolve
"""
