"""Per-dimension statistics of one modality, the numbers tokenizers normalise with, over real steps
only (the official MTM code averaged over zero-padded episodes, which drags means to 0 and shrinks
standard deviations). Call it on the training split only, so validation stays unseen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mtm.errors import DataError

_FIELDS = ("mean", "std", "min", "max")


@dataclass
class ModalityStats:
    """Raw statistics of a modality; every array is (dim,) float32, std is the population std."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    count: int  # number of steps the statistics were computed over

    @classmethod
    def of(cls, x: np.ndarray) -> "ModalityStats":
        """Statistics over the rows of x (N, dim); (N,) is read as (N, 1). Sums run in float64 and the
        variance is two-pass, so a million float32 rows with a large offset lose no precision."""
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise ValueError(f"expected (N, dim) rows, got shape {x.shape}")
        if x.shape[0] == 0:
            raise DataError("cannot compute normalisation statistics over zero steps")
        # One contiguous row per dimension: numpy reduces along contiguous memory several times
        # faster than down the columns of a narrow (N, dim) array, and the float64 temporaries
        # stay one dimension (N values) at a time.
        columns = np.ascontiguousarray(x.T)
        mean = columns.mean(axis=1, dtype=np.float64)
        var = np.array([np.square(column - m).mean() for column, m in zip(columns, mean)])  # float64
        return cls(mean=mean.astype(np.float32), std=np.sqrt(var).astype(np.float32),
                   min=columns.min(axis=1).astype(np.float32), max=columns.max(axis=1).astype(np.float32),
                   count=int(x.shape[0]))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; float32 values survive the float64 text round trip exactly."""
        out: dict[str, Any] = {name: getattr(self, name).astype(np.float32).tolist() for name in _FIELDS}
        out["count"] = self.count
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModalityStats":
        missing = [name for name in (*_FIELDS, "count") if name not in d]
        if missing:
            raise DataError(f"normalisation statistics lack {', '.join(missing)}")
        arrays = {name: np.asarray(d[name], dtype=np.float32).reshape(-1) for name in _FIELDS}
        dims = {name: a.shape[0] for name, a in arrays.items()}
        if len(set(dims.values())) != 1:
            raise DataError(f"normalisation statistics have mismatched sizes {dims}")
        return cls(**arrays, count=int(d["count"]))
