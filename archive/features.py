"""Grid geometry: which feature dimensions a MAP-Elites grid has, how a
program's raw feature values are computed, how they bin into a cell, and
the one rule deciding who owns a cell.

Shared by `store.py` (records each program's cell and the elite table in
the insert transaction) and `elites.py` (in-memory islands), so both apply
exactly the same placement and replacement rule.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field

from evorank.archive.programs import ProgramRecord, complexity

Cell = tuple[int, ...]


@dataclass(frozen=True)
class FeatureDim:
    """One grid axis.

    `edges` are strictly increasing bin boundaries in the feature's raw
    units; value v falls in bin `bisect_right(edges, v)`, so there are
    len(edges) + 1 bins and a value equal to an edge goes to the upper bin.
    `log` marks a multiplicative axis (e.g. latency ratio with edges
    0.5, 1, 2, 4, ...): edges must be positive and reports should draw the
    axis in log scale; binning is the same since log is monotone.

    Feature names resolve in `feature_value`: an explicit
    `ProgramRecord.features[name]` wins; 'complexity', 'latency_ratio',
    'latency_ms' and 'fitness' are built in; any other name is taken as a
    metric name and resolves to its macro mean over the collections that
    report it (e.g. 'ndcg@10').
    """

    name: str
    edges: tuple[float, ...]
    log: bool = False
    adaptive: bool = False  # ``refine`` may add edges (never move or remove one) as values accumulate
    max_bins: int = 8

    def __post_init__(self):
        edges = tuple(float(e) for e in self.edges)
        object.__setattr__(self, "edges", edges)
        if not edges:
            raise ValueError(f"feature {self.name!r}: needs at least one edge")
        if any(not math.isfinite(e) for e in edges):
            raise ValueError(f"feature {self.name!r}: edges must be finite")
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"feature {self.name!r}: edges must be strictly increasing")
        if self.log and edges[0] <= 0:
            raise ValueError(f"feature {self.name!r}: log axis needs positive edges")

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def bin(self, value: float | None) -> int | None:
        if value is None or not math.isfinite(value):
            return None
        return bisect.bisect_right(self.edges, value)


@dataclass(frozen=True)
class GridSpec:
    """The feature dimensions of every island's grid (all islands share one
    spec, which is what makes migration between them meaningful)."""

    dimensions: tuple[FeatureDim, ...] = field(default_factory=tuple)

    def __post_init__(self):
        dims = tuple(self.dimensions)
        object.__setattr__(self, "dimensions", dims)
        names = [d.name for d in dims]
        if not dims:
            raise ValueError("a grid needs at least one feature dimension")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature dimensions: {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.n_bins for d in self.dimensions)

    def cell(self, features: dict[str, float]) -> Cell | None:
        """Cell of raw feature values; None if any dimension is missing or
        non-finite (such a program is archived but not placed)."""
        coords = []
        for dim in self.dimensions:
            b = dim.bin(features.get(dim.name))
            if b is None:
                return None
            coords.append(b)
        return tuple(coords)

    def to_dict(self) -> dict:
        return {
            "dimensions": [
                {"name": d.name, "edges": list(d.edges), "log": d.log,
                 **({"adaptive": True, "max_bins": d.max_bins} if d.adaptive else {})}
                for d in self.dimensions
            ]
        }

    @classmethod
    def from_dict(cls, data: dict) -> "GridSpec":
        """Inverse of to_dict; also the config format, e.g.
        {"dimensions": [{"name": "ndcg@10", "edges": [0.2, 0.3, 0.4]}]}."""
        return cls(
            tuple(
                FeatureDim(d["name"], tuple(d["edges"]), bool(d.get("log", False)), bool(d.get("adaptive", False)),
                           int(d.get("max_bins", 8)))
                for d in data["dimensions"]
            )
        )


def refine(spec: GridSpec, values: dict[str, list[float]], min_split: int = 8) -> GridSpec:
    """Adaptive bins: for each adaptive dimension, split its most crowded bin at the median of the values in it
    (``values``: the dimension's values of every placed program) while that bin holds at least ``min_split``
    values on both sides of the median and the dimension has fewer than ``max_bins`` bins.

    Edges are only ever added, so every new cell lies inside one old cell and the elite of an old cell is still
    the elite of the new cell it falls in: re-binning never loses an elite (``elites.regrid``)."""
    dims = []
    for dim in spec.dimensions:
        edges = list(dim.edges)
        vals = sorted(v for v in values.get(dim.name, ()) if v is not None and math.isfinite(v))
        while dim.adaptive and len(edges) + 1 < dim.max_bins and vals:
            bins: dict[int, list[float]] = {}
            for v in vals:
                bins.setdefault(bisect.bisect_right(edges, v), []).append(v)
            crowded = max(bins.values(), key=len)
            median = crowded[len(crowded) // 2]
            below = sum(1 for v in crowded if v < median)
            if below < min_split // 2 or len(crowded) - below < min_split // 2 or median in edges \
                    or (dim.log and median <= 0):
                break
            bisect.insort(edges, median)
        dims.append(FeatureDim(dim.name, tuple(edges), dim.log, dim.adaptive, dim.max_bins) if edges != list(dim.edges)
                    else dim)
    return GridSpec(tuple(dims))


DEFAULT_COMPLEXITY_EDGES = (64.0, 128.0, 256.0, 512.0, 1024.0)
DEFAULT_LATENCY_EDGES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def default_grid_spec(metric: str | None = None, metric_edges=(0.1, 0.2, 0.3, 0.4, 0.5)) -> GridSpec:
    """Complexity x latency-ratio grid (so fast scorers survive as elites
    alongside accurate ones), optionally with a metric axis such as 'ndcg@10'."""
    dims = [
        FeatureDim("complexity", DEFAULT_COMPLEXITY_EDGES, log=True),
        FeatureDim("latency_ratio", DEFAULT_LATENCY_EDGES, log=True),
    ]
    if metric:
        dims.append(FeatureDim(metric, tuple(metric_edges)))
    return GridSpec(tuple(dims))


def _finite(x) -> float | None:
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def feature_value(rec: ProgramRecord, name: str) -> float | None:
    """Raw value of feature `name` for `rec` (see FeatureDim for resolution)."""
    if name in rec.features:
        return _finite(rec.features[name])
    if name == "complexity":
        return float(complexity(rec.code))
    if name in ("latency_ratio", "latency_ms", "fitness"):
        return _finite(getattr(rec, name))
    values = [_finite(m.get(name)) for m in rec.metrics.values() if name in m]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def complete_features(rec: ProgramRecord, spec: GridSpec | None) -> dict[str, float]:
    """rec.features plus the computable values of the grid's dimensions (and
    always 'complexity', which is cheap and useful for analysis)."""
    out = dict(rec.features)
    names = ("complexity",) + (spec.names if spec else ())
    for name in names:
        if name not in out:
            v = feature_value(rec, name)
            if v is not None:
                out[name] = v
    return out


def beats(challenger: float, incumbent: float) -> bool:
    """The cell-ownership rule: strictly fitter wins, ties keep the
    incumbent (so an elite is never displaced by an equal re-discovery)."""
    return challenger > incumbent


def encode_cell(cell: Cell | None) -> str | None:
    """Canonical text form used in SQLite (compared as strings)."""
    return None if cell is None else json.dumps(list(cell), separators=(",", ":"))


def decode_cell(text: str | None) -> Cell | None:
    return None if text is None else tuple(int(c) for c in json.loads(text))
