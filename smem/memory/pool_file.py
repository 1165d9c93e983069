"""What a pool file must hold to be loaded: every array's dtype, shape, range and finiteness,
and every metadata field, checked before a pool is built from it.

A pool file comes from disk, a visitor's upload or a session database row; any of them can be
damaged or hostile. Loading one that is inconsistent used to succeed and then crash, or score
NaN, at retrieve time (issue 14: wrong vector width, out-of-range link or slot indices, NaN
counts, zero vectors, duplicate ids, a half-life of 0). Each check here names the field.
"""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import datetime
from typing import Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smem.memory.scoring import ScoringWeights
from smem.memory.store import PoolFileError

UNIT_TOLERANCE = 1e-3
"""How far a stored vector's norm may be from 1: float32 normalisation leaves ~1e-7, so this only
catches vectors that were never normalised (or were damaged)."""

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StoredMemory(_Strict):
    id: str = Field(min_length=1)
    content: str = Field(min_length=1)
    type: Optional[str]
    subject: Optional[str]
    emotional_intensity: float = Field(ge=0.0, le=1.0)
    created_at: datetime
    tokens: int = Field(ge=0)


class StoredParams(_Strict):
    softmax_temperature: float = Field(gt=0.0)
    diversity_weight: float = Field(ge=0.0, le=1.0)
    association_weight: float = Field(ge=0.0)
    lexical_weight: float = Field(ge=0.0, lt=1.0)
    seed: Optional[int] = Field(default=None, ge=0)
    quantized_threshold: int = Field(ge=1)
    weights: dict[str, float]


WEIGHT_BOUNDS: dict[str, tuple[float, float]] = {
    "recency_half_life_days": (math.ulp(0.0), math.inf),
    "confidence_queries": (math.ulp(0.0), math.inf),  # 0 would make an unqueried memory's confidence 0/0
    "association_threshold": (-1.0, 1.0),
    "encoding_window": (0.0, math.inf),
    "habituation": (0.0, math.inf),  # negative would raise a hub's gate past its similarity
}
"""Weights that must lie in a range; every other weight need only be finite."""


class StoredMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    updates: int = Field(default=0, ge=0)
    answers: int = Field(default=0, ge=0)
    events: int = Field(default=0, ge=0)
    """What files saved before the updates/answers split called updates."""
    total_count: Optional[float] = Field(default=None, ge=0, allow_inf_nan=False)
    """The learning state's running count total, saved so that a loaded pool scores to the
    last bit like the saved one (summing the float32 counts again rounds differently);
    files saved before it existed sum the counts."""
    params: StoredParams
    memories: list[StoredMemory]


def _field_path(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location)


def _array(arrays: dict[str, np.ndarray], key: str, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """The named array, checked for dtype kind ('f' float, 'i' integer) and shape (-1: any length)."""
    if key not in arrays:
        raise PoolFileError(f"field {key!r}: missing")
    array = arrays[key]
    if kind == "f" and not np.issubdtype(array.dtype, np.floating):
        raise PoolFileError(f"field {key!r}: dtype {array.dtype}; expected floating point")
    if kind == "i" and not np.issubdtype(array.dtype, np.integer):
        raise PoolFileError(f"field {key!r}: dtype {array.dtype}; expected integers")
    if array.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, array.shape)):
        expected = "(" + ", ".join("n" if want == -1 else str(want) for want in shape) + ("," if len(shape) == 1 else "") + ")"
        raise PoolFileError(f"field {key!r}: shape {array.shape}; expected {expected}")
    return array


def _require(condition: Any, key: str, problem: str) -> None:
    if not condition:
        raise PoolFileError(f"field {key!r}: {problem}")


def check_pool_file(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], dim: int, name: str
) -> tuple[list[dict[str, Any]], dict[str, Any], ScoringWeights]:
    """Validate a pool file's content for an embedder of width `dim`. Returns the memory records,
    the pool's constructor parameters and its scoring weights; raises `PoolFileError`."""
    try:
        parsed = StoredMeta.model_validate(meta)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise PoolFileError(f"{name}: field {_field_path(error['loc'])!r}: {error['msg']}") from None
    try:
        _check_arrays(arrays, parsed, dim)
    except PoolFileError as exc:
        raise PoolFileError(f"{name}: {exc}") from None
    records = [memory.model_dump(mode="json") for memory in parsed.memories]
    params = parsed.params.model_dump()
    weights = _weights(params.pop("weights"), name)
    return records, params, weights


def _weights(values: dict[str, float], name: str) -> ScoringWeights:
    known = {item.name: item.type for item in fields(ScoringWeights)}
    for key, value in values.items():
        where = f"{name}: field 'params.weights.{key}'"
        if key not in known:
            raise PoolFileError(f"{where}: unknown weight")
        low, high = WEIGHT_BOUNDS.get(key, (-math.inf, math.inf))
        if not math.isfinite(value) or not low <= value <= high:
            raise PoolFileError(f"{where}: {value!r} must be finite and within [{low:g}, {high:g}]")
    return ScoringWeights(**{key: int(value) if known[key] in (int, "int") else value for key, value in values.items()})


def _check_arrays(arrays: dict[str, np.ndarray], meta: StoredMeta, dim: int) -> None:
    n = len(meta.memories)
    ids = [memory.id for memory in meta.memories]
    if len(set(ids)) != n:
        seen: set[str] = set()
        duplicate = next(memory_id for memory_id in ids if memory_id in seen or seen.add(memory_id))
        raise PoolFileError(f"field 'memories': duplicate id {duplicate!r}")

    vectors = _array(arrays, "vectors", "f", (n, dim))
    _require(np.isfinite(vectors).all(), "vectors", "holds NaN or infinite values")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    off = np.flatnonzero(np.abs(norms - 1.0) > UNIT_TOLERANCE)
    if len(off):
        raise PoolFileError(f"field 'vectors': row {off[0]} has norm {norms[off[0]]:.4g}; expected unit vectors")

    counts = _array(arrays, "counts", "f", (n,))
    _require(np.isfinite(counts).all() and (counts >= 0).all(), "counts", "must be finite and >= 0")
    last = _array(arrays, "last_retrieved", "f", (n,))
    _require(not np.isinf(last).any(), "last_retrieved", "holds infinite values (NaN means never)")

    query_count = _array(arrays, "query_count", "f", (-1,))
    slots = len(query_count)
    _require(np.isfinite(query_count).all() and (query_count >= 0).all(), "query_count", "must be finite and >= 0")
    squares = _array(arrays, "query_count_sq", "f", (slots,))
    _require(np.isfinite(squares).all() and (squares >= 0).all(), "query_count_sq", "must be finite and >= 0")
    query_sum = _array(arrays, "query_sum", "f", (slots, dim))
    _require(np.isfinite(query_sum).all(), "query_sum", "holds NaN or infinite values")
    query_slot = _array(arrays, "query_slot", "i", (n,))
    _require(((query_slot >= -1) & (query_slot < slots)).all(), "query_slot", f"indices must be -1 or within [0, {slots})")
    used = query_slot[query_slot >= 0]
    _require(len(np.unique(used)) == len(used) == slots, "query_slot", f"must give each of the {slots} query rows to exactly one memory")

    for prefix, required in (("link", True), ("encoded", False)):
        if not required and f"{prefix}_a" not in arrays:
            continue  # saved before encoding links existed
        first = _array(arrays, f"{prefix}_a", "i", (-1,))
        second = _array(arrays, f"{prefix}_b", "i", (len(first),))
        weight = _array(arrays, f"{prefix}_w", "f", (len(first),))
        for key, ends in ((f"{prefix}_a", first), (f"{prefix}_b", second)):
            _require(((ends >= 0) & (ends < n)).all(), key, f"indices must be within [0, {n})")
        _require((first != second).all(), f"{prefix}_b", "a memory cannot be linked to itself")
        _require(np.isfinite(weight).all() and (weight > 0).all(), f"{prefix}_w", "weights must be finite and > 0")
    _require(math.isfinite(float(counts.sum(dtype=np.float64))), "counts", "sum overflows")
