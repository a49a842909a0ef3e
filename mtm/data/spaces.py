"""gymnasium spaces -> JSON-able dicts, so files and checkpoints can describe their spaces.

Only the spaces offline robot data uses are supported: Box, Discrete and Dict. Infinite Box bounds
are written as the strings "inf" / "-inf" so the result is strict JSON.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mtm.errors import DataError


def _encode_bound(values: np.ndarray) -> list:
    floats = np.asarray(values, dtype=np.float64).ravel().tolist()
    return [("inf" if x > 0 else "-inf") if math.isinf(x) else x for x in floats]


def space_to_dict(space: Any) -> dict[str, Any]:
    from gymnasium import spaces  # late: gymnasium is not loaded by mtm inspect / convert unless a space is built

    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": _encode_bound(space.low), "high": _encode_bound(space.high)}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(s) for k, s in space.spaces.items()}}
    raise DataError(f"cannot describe a {type(space).__name__} space; mtm supports Box, Discrete, Dict")
