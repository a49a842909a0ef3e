"""gymnasium spaces <-> JSON-able dicts, so files and checkpoints can describe their spaces.

Only the spaces offline robot data uses are supported: Box, Discrete and Dict. Infinite Box bounds
are written as the strings "inf" / "-inf" so the result is strict JSON.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mtm.errors import DataError


def _encode_bound(values: np.ndarray) -> list:
    def enc(x: float) -> float | str:
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return float(x)

    return [enc(float(x)) for x in np.asarray(values, dtype=np.float64).ravel()]


def _decode_bound(values: list, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.array([float(x) for x in values], dtype=np.float64).reshape(shape).astype(dtype)


def space_to_dict(space: Any) -> dict[str, Any]:
    from gymnasium import spaces  # late: gymnasium is not loaded by mtm inspect / convert unless a space is built

    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _encode_bound(space.low),
            "high": _encode_bound(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(s) for k, s in space.spaces.items()}}
    raise DataError(f"cannot describe a {type(space).__name__} space; mtm supports Box, Discrete, Dict")


def space_from_dict(d: dict[str, Any]) -> Any:
    from gymnasium import spaces  # late: gymnasium is not loaded by mtm inspect / convert unless a space is built

    kind = d.get("type")
    if kind == "Box":
        shape = tuple(int(x) for x in d["shape"])
        dtype = np.dtype(d["dtype"])
        return spaces.Box(
            low=_decode_bound(d["low"], shape, dtype),
            high=_decode_bound(d["high"], shape, dtype),
            shape=shape,
            dtype=dtype,
        )
    if kind == "Discrete":
        return spaces.Discrete(int(d["n"]), start=int(d.get("start", 0)))
    if kind == "Dict":
        return spaces.Dict({k: space_from_dict(v) for k, v in d["spaces"].items()})
    raise DataError(f"unknown space description type {kind!r}")


def flat_dim(d: dict[str, Any]) -> int:
    """Number of scalars in one sample of a Box space description."""
    return int(np.prod(d["shape"])) if d.get("shape") else 1
