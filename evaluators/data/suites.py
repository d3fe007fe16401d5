"""Named suites of collections and per-collection settings (``CollectionSettings``), read from the packaged
``suites.toml``."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from evorank.evaluators.errors import CollectionError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib



@dataclass(frozen=True)
class CollectionSettings:
    """How to read one collection's judgements.

    min_relevance: grade at or above which a judgement counts as relevant (Recall, MAP and the
        "judged query" test use it; nDCG uses every positive grade, as trec_eval does).
    relevance_map: grade remapping applied first (e.g. Cranfield's 1=best..4 -> 4..1); grades mapped
        to <= 0 are dropped.
    query_cap / query_cap_seed: evaluate a seeded random sample of at most this many judged queries.
    """

    min_relevance: int = 1
    relevance_map: dict[int, int] | None = None
    query_cap: int | None = None
    query_cap_seed: int = 0
    note: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    collections: tuple[str, ...]


@lru_cache(maxsize=1)
def _config() -> dict:
    return tomllib.loads((resources.files("evorank.evaluators.data") / "suites.toml").read_text(encoding="utf-8"))


def suites() -> dict[str, Suite]:
    return {
        name: Suite(name, spec.get("description", ""), tuple(spec["collections"]))
        for name, spec in _config().get("suites", {}).items()
    }


def get_suite(name: str) -> Suite:
    all_suites = suites()
    if name not in all_suites:
        raise CollectionError(f"unknown suite {name!r}; known suites: {', '.join(all_suites)} (see `evorank datasets`)")
    return all_suites[name]


def collection_settings(address: str) -> CollectionSettings:
    """Settings for a collection address (defaults when suites.toml says nothing about it)."""
    spec = dict(_config().get("collections", {}).get(address, {}))
    if "relevance_map" in spec:
        spec["relevance_map"] = {int(k): int(v) for k, v in spec["relevance_map"].items()}
    return CollectionSettings(**spec)


def resolve_collections(suite: str | None, datasets: str | list[str] | None) -> list[str]:
    """Collection addresses named by ``--suite`` and/or ``--datasets id,id`` (suite first, no repeats)."""
    names: list[str] = []
    if suite:
        names.extend(get_suite(suite).collections)
    if datasets:
        items = datasets.split(",") if isinstance(datasets, str) else datasets
        names.extend(d.strip() for d in items if d.strip())
    if not names:
        raise CollectionError("no collections given: pass --suite NAME or --datasets id[,id...]")
    return list(dict.fromkeys(names))
