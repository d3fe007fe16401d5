"""What a run's data looks like to people: read-only views of a run's archive, on the terminal and in HTML.

- ``queries``   opening a run read-only, resolving ``best``/ids/``RUN:ID``, status, top programs, lineage
- ``format``    small text helpers shared by the views
- ``console``   the rich console and JSON printing
- ``terminal``  ``evorank status|top|show|diff|lineage``
- ``report``    ``evorank report``: one self-contained HTML file; ``plots``: its inline SVG plots
- ``export``    ``evorank export``: one program as a standalone scorer module
- ``transfer``  how a run's programs do on collections never used for selection
- ``explain``   ``evorank explain``: the parts a program adds over its seed (``evaluators.program.parts``), each
                taken out and measured (sandboxed), and each lineage step
- ``funnel``    what a run's model-written proposals came to: ideas, copies, no-ops, failures, per chain

Public: ``open_run``, ``run_status``, ``top_programs``, ``lineage``, ``build_report``, ``export_program``, ``explain``,
``funnel_summary``.

May import: evorank.archive, evorank.evaluators, evorank.threadsafe_ast, evorank.evolve.config,
evorank.evolve.proposal, evorank.evolve.engine
"""
