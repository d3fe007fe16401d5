"""Conversion between `ProgramRecord` and rows of the `programs` table.

Pure functions (no connection): `prepare` decides everything the store
derives at insert time (normalized hash, completed features, grid cell,
timestamp), so the insert itself is a plain parameterized INSERT.
"""

from __future__ import annotations

import json
import math
import numbers
import sqlite3
import time

from evorank.archive.features import GridSpec, complete_features, decode_cell, encode_cell
from evorank.archive.programs import ProgramRecord, normalized_code_hash
from evorank.archive.programs import placeable as is_placeable


def clean(obj):
    """JSON-safe copy: numbers become plain int/float (numpy scalars
    included, which json cannot encode) and non-finite floats become None
    (stdlib json would write NaN, which SQLite's JSON functions and other
    readers reject)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if hasattr(obj, "tolist") and not isinstance(obj, (int, float)):  # numpy arrays and scalars (bool_ too)
        return clean(obj.tolist())
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        obj = float(obj)
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def dumps(obj) -> str:
    return json.dumps(clean(obj), sort_keys=True, allow_nan=False, default=str)


def finite_or_none(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def record_from_row(row: sqlite3.Row) -> ProgramRecord:
    return ProgramRecord(
        id=row["id"],
        code=row["code"],
        code_hash=row["code_hash"],
        parent_ids=tuple(json.loads(row["parent_ids"])),
        island=row["island"],
        generation=row["generation"],
        iteration=row["iteration"],
        operator=row["operator"],
        status=row["status"],
        failure_reason=row["failure_reason"],
        failure_detail=row["failure_detail"],
        metrics=json.loads(row["metrics"]),
        fitness=row["fitness"],
        latency_ms=row["latency_ms"],
        latency_ratio=row["latency_ratio"],
        features=json.loads(row["features"]),
        cell=decode_cell(row["cell"]),
        stage=row["stage"],
        model=row["model"],
        prompt=row["prompt"],
        response=row["response"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cost_usd=row["cost_usd"],
        started_at=row["started_at"],
        created_at=row["created_at"],
    )


def prepare(rec: ProgramRecord, grid: GridSpec) -> tuple[dict, dict]:
    """(column values for INSERT, fields the store sets on `rec` after
    commit). Non-finite fitness/latencies become NULL; a program gets a
    cell only if accepted with a fitness and all grid features known."""
    fitness = finite_or_none(rec.fitness)
    features = clean(complete_features(rec, grid))
    placeable = is_placeable(rec.status, fitness, rec.operator)
    decided = {
        "code_hash": normalized_code_hash(rec.code),
        "fitness": fitness,
        "metrics": clean(rec.metrics),
        "features": features,
        "cell": grid.cell(features) if placeable else None,
        "created_at": time.time(),
    }
    values = {
        "code": rec.code,
        "code_hash": decided["code_hash"],
        "parent_ids": dumps([int(p) for p in rec.parent_ids]),
        "island": int(rec.island),
        "generation": int(rec.generation),
        "iteration": int(rec.iteration),
        "operator": rec.operator,
        "status": rec.status,
        "failure_reason": rec.failure_reason,
        "failure_detail": rec.failure_detail,
        "metrics": dumps(decided["metrics"]),
        "fitness": fitness,
        "latency_ms": finite_or_none(rec.latency_ms),
        "latency_ratio": finite_or_none(rec.latency_ratio),
        "features": dumps(features),
        "cell": encode_cell(decided["cell"]),
        "stage": int(rec.stage),
        "model": rec.model,
        "prompt": rec.prompt,
        "response": rec.response,
        "prompt_tokens": int(rec.prompt_tokens),
        "completion_tokens": int(rec.completion_tokens),
        "cost_usd": float(rec.cost_usd),
        "started_at": rec.started_at,
        "created_at": decided["created_at"],
    }
    return values, decided
