"""evorank: discover lexical ranking functions by evolving executable ranking programs.

The repository's top-level folders install as subpackages of this one package (see pyproject.toml):
``evorank.evaluators`` (collections, analyzer, index, sandbox, metrics), ``evorank.archive`` (the run
store and the elite population), ``evorank.evolve`` (loop, proposers, prompts, CLI) and
``evorank.seeds`` (the seed programs). ``python -m evorank`` is the ``evorank`` command.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evorank")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"
