"""What is in a dataset: counts, per-step shapes, returns, episode lengths, how episodes ended.
`summarize(source)` returns a JSON-able dict that `mtm inspect` prints; D4RL's flat arrays are
summarised without splitting them into episodes, other sources are read one episode at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.references import choose_references, normalized_score
from mtm.data.episode import DatasetInfo, EpisodeSource, FlatReader
from mtm.data.formats.native import NativeSource

HISTOGRAM_BINS = 10


@dataclass
class _Scan:
    """Per-episode facts gathered from a source, whichever way it was read."""

    lengths: np.ndarray  # int64 (E,)
    returns: np.ndarray  # float64: the return of every episode that has rewards
    terminated: np.ndarray  # bool (E,): last step is a termination
    truncated: np.ndarray  # bool (E,): last step is a truncation
    has_final_observation: bool  # every episode carries its final observation
    modalities: dict[str, dict[str, Any]]  # name -> {"shape": per-step shape, "dtype": ...}
    has_actions: np.ndarray  # bool (E,): the episode carries actions
    has_rewards: np.ndarray  # bool (E,): the episode carries rewards (returns are over these only)


def summarize(source: EpisodeSource) -> dict[str, Any]:
    scan = _scan_flat(source) if isinstance(source, FlatReader) else _scan_episodes(source)
    info = source.info
    returns = _stats(scan.returns)
    references = dataset_references(info, None if returns is None else returns["mean"])
    normalized = None
    if references is not None and references["max"] != references["min"] and returns is not None:
        normalized = normalized_score(returns["mean"], references["min"], references["max"])
    if returns is not None:
        returns["histogram"] = return_histogram(scan.returns)
    lengths = _stats(scan.lengths, std=False)
    # How many episodes and steps carry each modality: observations every one, actions and rewards
    # those recorded with them (a partly labelled or state-only file has fewer).
    carried = {name: np.ones_like(scan.has_actions) for name in scan.modalities if name.startswith("observations/")}
    carried.update({"actions": scan.has_actions, "rewards": scan.has_rewards})
    if lengths is not None:
        lengths["histogram"] = length_histogram(scan.lengths)
    summary = {
        "format": "native" if isinstance(source, NativeSource) else info.source_format,
        "source_format": info.source_format,
        "source": info.source,
        "env_id": info.env_id,
        "num_episodes": int(scan.lengths.size),
        "num_steps": int(scan.lengths.sum()),
        "has_final_observation": scan.has_final_observation,
        "modalities": scan.modalities,
        "episodes_with": {name: int(flags.sum()) for name, flags in carried.items()},
        "steps_with": {name: int(scan.lengths[flags].sum()) for name, flags in carried.items()},
        "returns": returns,
        "episode_lengths": lengths,
        # An episode flagged both terminated and truncated counts as terminated: the MDP ended.
        "episodes_ended": {
            "terminated": int(scan.terminated.sum()),
            "truncated": int((scan.truncated & ~scan.terminated).sum()),
            "partial": int((~scan.terminated & ~scan.truncated).sum()),
        },
        "reference_scores": references,  # {min, max, source} and a "warning" when suspect
        "normalized_return_mean": normalized,
    }
    filter_sizes = getattr(source, "filter_sizes", None)
    if filter_sizes is not None:  # robomimic: its mask/<filter> splits and the one being read
        summary["filters"] = {"available": filter_sizes(), "selected": getattr(source, "filter_key", None)}
    return summary


def dataset_references(info: DatasetInfo, mean_return: float | None) -> dict[str, Any] | None:
    """The references a dataset's returns are normalised with: its own, checked against its mean
    return, else (or when they are suspect) mtm's table for its env (envs.references)."""
    own = None
    if info.ref_min_score is not None and info.ref_max_score is not None:
        own = (info.ref_min_score, info.ref_max_score)
    # A D4RL reader fills the pair in from mtm's table and names where it came from.
    described = info.extra.get("reference_scores") if isinstance(info.extra, dict) else None
    source = described if isinstance(described, str) else f"dataset ({info.source_format}: {info.source})"
    return choose_references(own, source, info.env_id, mean_return)


def length_histogram(lengths: np.ndarray, bins: int = HISTOGRAM_BINS) -> list[dict[str, int]]:
    """Counts of episode lengths in at most `bins` equal-width integer ranges [low, high]."""
    lo, hi = int(lengths.min()), int(lengths.max())
    width = -(-(hi - lo + 1) // bins)  # ceil: the bins cover every length from lo to hi
    counts = np.bincount((lengths - lo) // width, minlength=-(-(hi - lo + 1) // width))
    return [
        {"low": lo + i * width, "high": min(lo + (i + 1) * width - 1, hi), "count": int(c)}
        for i, c in enumerate(counts)
    ]


def return_histogram(returns: np.ndarray, bins: int = HISTOGRAM_BINS) -> list[dict[str, float]]:
    """Counts of episode returns in `bins` equal-width ranges [low, high) from the lowest return to
    the highest (the last range includes it); one range when every return is the same."""
    lo, hi = float(returns.min()), float(returns.max())
    if lo == hi:
        return [{"low": lo, "high": hi, "count": int(returns.size)}]
    counts, edges = np.histogram(returns, bins=bins, range=(lo, hi))
    return [{"low": float(edges[i]), "high": float(edges[i + 1]), "count": int(c)} for i, c in enumerate(counts)]


def _stats(values: np.ndarray, std: bool = True) -> dict[str, float] | None:
    if values.size == 0:
        return None
    out = {"min": float(values.min()), "mean": float(values.mean())}
    if std:
        out["std"] = float(values.std())  # population std (ddof=0), as D4RL and CORL report
    out["max"] = float(values.max())
    if np.issubdtype(values.dtype, np.integer):
        out["min"], out["max"] = int(out["min"]), int(out["max"])
    return out


def _modality(shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
    return {"shape": list(shape), "dtype": str(dtype)}


def _scan_flat(source: Any) -> _Scan:
    flat = source.flat_arrays()
    arrays = {"observations/state": flat.observations, "actions": flat.actions, "rewards": flat.rewards}
    return _Scan(
        lengths=flat.lengths.astype(np.int64), returns=flat.episode_returns(),
        terminated=flat.ends_terminal.astype(bool), truncated=flat.ends_timeout.astype(bool),
        has_final_observation=flat.next_observations is not None,
        has_actions=np.full(flat.lengths.shape[0], flat.actions is not None),
        has_rewards=np.full(flat.lengths.shape[0], flat.rewards is not None),
        modalities={name: _modality(a.shape[1:], a.dtype) for name, a in arrays.items() if a is not None},
    )


def _scan_episodes(source: EpisodeSource) -> _Scan:
    n = len(source)
    lengths = np.zeros(n, np.int64)
    returns = np.zeros(n, np.float64)
    terminated, truncated, has_actions, has_rewards = (np.zeros(n, bool) for _ in range(4))
    has_final = n > 0
    modalities: dict[str, dict[str, Any]] = {}
    described: dict[str, dict[str, Any]] = {}  # actions and rewards, from the first episode with them
    # Episode 0 is read whole to describe every modality; the others only through their smallest
    # observation key, so summarising a file with images does not decode every frame.
    smallest_key: list[str] | None = None
    for i in range(n):
        episode = source.episode(i, keys=smallest_key)
        if i == 0:
            observations = episode.observations
            smallest_key = [min(observations, key=lambda k: observations[k][0].size)]
            modalities = {f"observations/{k}": _modality(a.shape[1:], a.dtype)
                          for k, a in observations.items()}
        lengths[i] = episode.length
        has_actions[i], has_rewards[i] = episode.has("actions"), episode.has("rewards")
        returns[i] = episode.episode_return if has_rewards[i] else np.nan
        terminated[i], truncated[i] = episode.terminated, episode.truncated
        has_final = has_final and episode.has_final_observation
        for name in ("actions", "rewards"):
            arr = getattr(episode, name)
            if arr is not None and name not in described:
                described[name] = _modality(arr.shape[1:], arr.dtype)
    modalities.update({name: described[name] for name in ("actions", "rewards") if name in described})
    # Returns are over the episodes that have rewards; an episode without them is no return of 0.
    return _Scan(lengths, returns[has_rewards], terminated, truncated, has_final, modalities,
                 has_actions, has_rewards)
