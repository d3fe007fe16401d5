"""evorank: discover lexical ranking functions by evolving executable ranking programs.

The repository's top-level folders install as subpackages of this one package (see pyproject.toml):
``evorank.evaluators`` (collections, analyzer, index, sandbox, metrics), ``evorank.archive`` (the run
store and the elite population), ``evorank.evolve`` (loop, proposers, prompts, CLI, the Python API) and
``evorank.seeds`` (the seed programs). ``python -m evorank`` is the ``evorank`` command.

The Python API (docs/api.md) is reached from here and imported on first use, so ``import evorank`` (and so
``evorank --help``) loads nothing of it:

- ``evorank.evaluate(program, suite=..., datasets=..., sandbox=True) -> Evaluation``
- ``evorank.open_run(path) -> Run`` (``.status()``, ``.programs``, ``.best``, ``.program(id)``, ``.export``,
  ``.compare``, ``.snapshot()``)
- ``evorank.run_evolution(config, **settings) -> Run``

(The function that runs evolution is ``run_evolution``, not ``evolve``: ``evorank.evolve`` is the subpackage, and
importing any of its modules sets that attribute of this package, which would hide a function of that name.)
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evorank")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

# name -> module that defines it; imported on first access (PEP 562)
_API = {
    "evaluate": "evorank.evolve.api.evaluation",
    "Evaluation": "evorank.evolve.api.evaluation",
    "open_run": "evorank.evolve.api.runs",
    "Run": "evorank.evolve.api.runs",
    "Program": "evorank.evolve.api.runs",
    "run_evolution": "evorank.evolve.api.evolution",
    "run_config": "evorank.evolve.api.evolution",
    "RunConfig": "evorank.evolve.config",
    "EvorankError": "evorank.evaluators.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'evorank' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_API])
