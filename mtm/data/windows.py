"""Windows of L consecutive timesteps, drawn from `Trajectories` as tensors already on the device.

Every episode with T_e ≥ L has a window at each step s ∈ [0, T_e − L]; a shorter one has a single
window whose steps past the episode's end are padding, and windows are numbered in episode order.
With ``every_step=True`` a window starts at every step s ∈ [0, T_e − 1], the last L − 1 of them
padded: transitions (L = 2) then include an episode's last step, whose successor lies outside it. No
window crosses into another episode. Padding repeats the episode's last real row (timesteps
included) and is marked ``valid = False``: a real row keeps padded values inside the data's range and
nothing from a neighbouring episode leaks in, while the mask says which steps are real.

When some episode lacks actions or rewards, a batch also holds ``present_<key>`` (B,) bool for each
requested key that can be absent; a dataset without gaps adds nothing. ``source_weights`` (one per
file of a mixture, with ``source_index`` per episode) draw each sample's file with those
probabilities, then a window uniformly within it; without them every window is equally likely.

Layout, chosen for speed (`_layout`): the keys are packed into one (rows, D) float32 tensor on the
device where every window is L *contiguous* rows, so a batch is one `index_select` of (L, D) blocks
and one table lookup, with no Python loop and no host-to-device copy per batch (BENCHMARKS.md, Data
loading, has what random single-row gathers cost instead).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from mtm.data.trajectories import Trajectories
from mtm.errors import ConfigError, DataError

DEFAULT_KEYS = ("states", "actions", "returns")


class WindowSampler:
    """Windows of L consecutive timesteps from Trajectories, as torch tensors on a device.

    A batch is ``{key: (B, L, dim) float32 for each of keys, "timesteps": (B, L) int64,
    "valid": (B, L) bool}`` in raw units. ``sample(generator=g)`` draws the window ids on ``g``'s
    device: a CPU generator works with any sampler device (on CUDA at the cost of a small synchronous
    copy per batch), ``torch.Generator(device=sampler.device)`` keeps everything on the device.
    Without one, the device's default generator (``torch.manual_seed``) is used.
    """

    def __init__(self, data: Trajectories, window: int, *, device: str | torch.device = "cpu",
                 keys: tuple[str, ...] = DEFAULT_KEYS, source_index: np.ndarray | None = None,
                 source_weights: list[float] | None = None, every_step: bool = False) -> None:
        if window < 1:
            raise ConfigError(f"window length must be at least 1, got {window}")
        keys = tuple(keys)
        if not keys:
            raise ConfigError("a window needs at least one key (e.g. states, actions, returns)")
        unknown = [k for k in keys if k not in data.arrays or k == "timesteps"]
        if unknown:
            choices = ", ".join(k for k in data.arrays if k != "timesteps")
            raise ConfigError(f"unknown window key(s) {', '.join(unknown)}; choose from {choices}")
        if data.num_episodes == 0:
            raise DataError("no windows to sample: the dataset holds no episodes")

        self.window = int(window)
        self.keys = keys
        self.device = torch.device(device)

        storage_rows, table, per_episode, first_step = _layout(
            data.starts, data.lengths, data.arrays["timesteps"], self.window, every_step)
        self.num_windows = int(table.shape[0])
        # Where every window lies in the source file, for data kept off the device (image_windows).
        self._spans = np.stack([np.repeat(data.episode_ids, per_episode), first_step, table[:, 1]], axis=1)
        # One copy of the data, already padded and packed, moved to the device once.
        packed = np.concatenate([data.arrays[k].reshape(data.num_steps, -1)[storage_rows] for k in keys],
                                axis=1, dtype=np.float32)
        self._storage = torch.from_numpy(packed).to(self.device)
        # (rows − L + 1, L, D): entry r is the window whose first row is r (a view, no copy).
        self._blocks = self._storage.unfold(0, self.window, 1).transpose(1, 2)
        self._table = torch.from_numpy(table).to(self.device)
        self._offsets = torch.arange(self.window, device=self.device)
        widths = [int(np.prod(data.arrays[k].shape[1:], dtype=np.int64)) for k in keys]
        bounds = np.concatenate([[0], np.cumsum(widths)]).tolist()
        self._columns = {k: (bounds[i], bounds[i + 1]) for i, k in enumerate(keys)}
        # Per window, whether its episode has each key that some episode lacks.
        window_episode = np.repeat(np.arange(data.num_episodes), per_episode)
        self._present = {key: torch.from_numpy(data.has(key)[window_episode]).to(self.device)
                         for key in keys if not data.has(key).all()}
        self._sources = None
        if source_weights is not None:
            self._sources = _source_draw(per_episode, source_index, source_weights, self.device)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """batch_size windows drawn uniformly over window starts, with replacement."""
        return self.windows(self.draw(batch_size, generator))

    def draw(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The (B,) window ids `sample` uses (same generator draws), on the generator's device:
        for callers that also fetch other data of the same windows (image frames)."""
        _check_batch_size(batch_size)
        draw_device = generator.device if generator is not None else self.device
        if self._sources is not None:
            probs, first, count = (t.to(draw_device) for t in self._sources)
            source = torch.multinomial(probs, batch_size, replacement=True, generator=generator)
            u = torch.rand(batch_size, generator=generator, device=draw_device, dtype=torch.float64)
            offset = (u * count[source]).long().clamp_max(count[source] - 1)
            return first[source] + offset
        return torch.randint(self.num_windows, (batch_size,), generator=generator, device=draw_device)

    def window_spans(self) -> np.ndarray:
        """(num_windows, 3) int64, per window id: the episode's index in the source dataset
        (Trajectories.episode_ids), the window's first step in it, and its number of real steps."""
        return self._spans.copy()

    def windows(self, window_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch for the given window ids (B,), each in [0, num_windows)."""
        ids = torch.as_tensor(window_indices, dtype=torch.long).to(self.device, non_blocking=True).reshape(-1)
        first_row, real, first_t = self._table.index_select(0, ids).unbind(1)  # each (B,)
        blocks = self._blocks.index_select(0, first_row)  # (B, L, D), contiguous
        batch = {key: blocks[..., a:b].contiguous() for key, (a, b) in self._columns.items()}
        real = real[:, None]
        batch["timesteps"] = first_t[:, None] + torch.minimum(self._offsets, real - 1)
        batch["valid"] = self._offsets < real
        for key, flags in self._present.items():
            batch[f"present_{key}"] = flags.index_select(0, ids)
        return batch

    def iterate(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Every window exactly once, in episode order, batch_size at a time (the last batch may be smaller)."""
        _check_batch_size(batch_size)
        for begin in range(0, self.num_windows, batch_size):
            end = min(begin + batch_size, self.num_windows)
            yield self.windows(torch.arange(begin, end, device=self.device))

    def __len__(self) -> int:
        return self.num_windows


def _layout(starts: np.ndarray, lengths: np.ndarray, timesteps: np.ndarray, window: int,
            every_step: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(storage rows, per-window table, windows per episode, each window's first step s).

    Episode e occupies max(T_e, L) storage rows (T_e + L − 1 with every_step); storage row j of it
    copies data row start_e + min(j, T_e − 1), so the episode's last row fills it up. Its windows
    start at storage rows 0 … max(T_e − L, 0) of its block (0 … T_e − 1 with every_step). The table holds, per window: first
    storage row, number of real steps (min(L, T_e − s)), and the timestep of its first step.
    """
    starts = starts.astype(np.int64)
    lengths = lengths.astype(np.int64)
    stored = lengths + window - 1 if every_step else np.maximum(lengths, window)
    stored_starts = np.concatenate([[0], np.cumsum(stored)[:-1]])
    within = np.arange(int(stored.sum()), dtype=np.int64) - np.repeat(stored_starts, stored)
    storage_rows = np.repeat(starts, stored) + np.minimum(within, np.repeat(lengths - 1, stored))
    per_episode = stored - window + 1  # = max(T_e − L + 1, 1)
    first_window = np.concatenate([[0], np.cumsum(per_episode)[:-1]])
    s = np.arange(int(per_episode.sum()), dtype=np.int64) - np.repeat(first_window, per_episode)
    table = np.stack([np.repeat(stored_starts, per_episode) + s,
                      np.minimum(window, np.repeat(lengths, per_episode) - s),
                      timesteps[np.repeat(starts, per_episode) + s].astype(np.int64)], axis=1)
    return storage_rows, table, per_episode, s


def _source_draw(per_episode: np.ndarray, source_index: np.ndarray | None, weights: list[float],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities, first window, window count) per source; windows of a source are contiguous
    (the sources' episodes lie back to back)."""
    if source_index is None or len(source_index) != len(per_episode):
        raise ValueError("source_weights need a source_index with one entry per episode")
    source_index = np.asarray(source_index, np.int64)
    if np.any(np.diff(source_index) < 0):
        raise ValueError("the episodes of each source must lie together, in source order")
    n = len(weights)
    if source_index.size and source_index.max() >= n:
        raise ConfigError(f"{n} source weight(s) for {int(source_index.max()) + 1} datasets; give one per dataset")
    count = np.bincount(source_index, weights=per_episode, minlength=n).astype(np.int64)
    first = np.cumsum(count) - count
    w = np.asarray(weights, np.float64)
    if np.any(w < 0) or not np.any(w[count > 0] > 0):
        raise ConfigError(f"data.weights {list(weights)}: need weights >= 0 and a positive one for a dataset "
                          f"with training windows")
    w = np.where(count > 0, w, 0.0)  # a dataset with no training windows (all held out) is never drawn
    return (torch.as_tensor(w / w.sum(), dtype=torch.float64, device=device),
            torch.as_tensor(first, device=device), torch.as_tensor(np.maximum(count, 1), device=device))


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
