"""Image frames of training windows, read lazily from a dataset whose reader is a `FrameReader`
(mtm.data.episode; the native reader is one).

A batch of windows gets its frames in one of two ways, keyed by `WindowSampler.draw`'s window ids.
Frames stay uint8 until they are on the device; padding repeats an episode's last frame.

- From memory (`frames="memory"`; data.frames "auto" chooses it where they fit, by
  `memory_budget()`, mtm.data.batches): every frame the windows read is decoded once, an episode
  per read, and a batch is one gather from that array. Reading 256 random one-frame windows of
  mtm/ReacherPixels-v0's 3000 episodes from the file costs 46-55 CPU-ms, about a sixth of a
  `pixels` training step; decoding all its 150,000 frames (1.9 GB) costs 3.5 CPU-s once.
- From the file (`frames="file"`, for data larger than memory): each batch reads its own frames
  when it is drawn, or ahead in DataLoader workers (`loader`).

Native files store one gzip chunk per frame, so a window decompresses only its own L frames. The
file is opened without HDF5's chunk cache (mtm.data.formats.native): random windows almost never
read a chunk twice, and a cache per open episode would grow the process by gigabytes. Open frame
datasets are kept in a bounded LRU, since opening one costs about as much as reading a window
(memory: tests/test_image_windows.py; figures: BENCHMARKS.md, Images). The reader that checked the
file at construction reads it in this process; a new process opens its own (pickling drops it),
so DataLoader workers work forked or spawned. There is no background
thread: h5py holds the GIL while it decompresses, so it would compete with the training thread.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from mtm.data.episode import FrameReader
from mtm.data.formats import DataSource
from mtm.data.formats.native import NativeSource
from mtm.errors import DataError

DEFAULT_MAX_OPEN_DATASETS = 1024
MEMORY_SHARE = 0.25  # "auto" keeps decoded frames in memory up to this share of the machine's RAM


def memory_budget() -> int | None:
    """Bytes of decoded frames data.frames "auto" keeps in memory in this process (WindowBatches):
    MEMORY_SHARE of the machine's physical memory, divided among the processes torchrun starts on it
    (LOCAL_WORLD_SIZE: each holds its own copy). None where the platform does not say how much
    memory it has."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    return int(total * MEMORY_SHARE) // processes


class ImageWindows:
    """The frames of one image key for windows given as (episode, first step, real steps) spans.

    ``source``: the dataset (a path is read as a native file). ``spans``: (num_windows, 3) int64
    from `WindowSampler.window_spans()` (episode = index of the episode in the file). ``window``: L.
    Only the episodes the spans name are checked and read.
    """

    def __init__(self, source: DataSource | str | os.PathLike, key: str, spans: np.ndarray, window: int, *,
                 max_open_datasets: int = DEFAULT_MAX_OPEN_DATASETS, frames: str = "file") -> None:
        spans = np.asarray(spans, dtype=np.int64)
        if spans.ndim != 2 or spans.shape[1] != 3 or len(spans) == 0:
            raise DataError(f"window spans must be a non-empty (num_windows, 3) array, got shape {spans.shape}")
        if window < 1 or (spans[:, 2] < 1).any() or (spans[:, 2] > window).any() or (spans[:, 1] < 0).any():
            raise DataError(f"window spans do not describe windows of {window} steps "
                            f"(first step >= 0, 1..L real steps)")
        self.source = source if isinstance(source, DataSource) else DataSource(str(source), "native")
        self.path = Path(self.source.path)
        self.key = key
        self.window = int(window)
        self.max_open_datasets = max(int(max_open_datasets), 1)
        self._spans = spans
        self._open: OrderedDict[int, Any] = OrderedDict()
        if frames not in ("memory", "file"):
            raise ValueError(f"frames must be 'memory' or 'file', got {frames!r} (WindowBatches.build resolves 'auto')")
        self._reader, self._pid = self._open_reader(), os.getpid()
        self._memory: np.ndarray | None = None  # (frames, H, W, C): every frame of the spans' episodes
        self._first: np.ndarray | None = None  # (num_windows,) row of each window's first frame in it
        try:
            self.frame_shape, self._lengths = self._check_file(self._reader, spans)
            #: Bytes of the decoded frames the windows read (of every episode they name).
            self.frame_bytes = sum(self._lengths.values()) * int(np.prod(self.frame_shape))
            if frames == "memory":
                self.load_into_memory()
        except BaseException:
            self.close()
            raise

    @property
    def in_memory(self) -> bool:
        """Whether the frames were decoded into memory (else each batch reads them from the file)."""
        return self._memory is not None

    def load_into_memory(self) -> None:
        """Decode the frames the windows read, episode by episode (one read each), into one array
        that every later batch gathers from."""
        if self._memory is not None:
            return
        memory = np.empty((sum(self._lengths.values()), *self.frame_shape), dtype=np.uint8)
        first, row = {}, 0
        for episode, length in self._lengths.items():
            first[episode] = row
            memory[row:row + length] = self._reader.frames(episode, self.key)[:length]
            row += length
        self._memory = memory
        self._first = np.array([first[e] for e in self._spans[:, 0].tolist()], dtype=np.int64) + self._spans[:, 1]

    @classmethod
    def for_sampler(cls, source: DataSource | str | os.PathLike, key: str, sampler: Any,
                    **kwargs: Any) -> "ImageWindows":
        """The frames of `sampler`'s windows (a WindowSampler over Trajectories read from ``source``)."""
        return cls(source, key, sampler.window_spans(), sampler.window, **kwargs)

    def _open_reader(self) -> FrameReader:
        if not self.source.reads_frames:
            raise DataError(f"{self.path}: the {self.source.format} reader cannot read image frames lazily, "
                            f"which training on images needs; convert it first (mtm convert {self.path} DST.hdf5)")
        return self.source.open()

    def _check_file(self, source: FrameReader, spans: np.ndarray) -> tuple[tuple[int, ...], dict[int, int]]:
        """Validate the file and key once; return the frame shape and, per episode the windows name,
        how many of its frames they read (its first ones)."""
        where = str(self.path)
        if self.key not in source.observation_keys():
            available = ", ".join(source.observation_keys())
            raise DataError(f"{where}: no observation key {self.key!r}; available: {available}")
        episodes, inverse = np.unique(spans[:, 0], return_inverse=True)
        if episodes[0] < 0 or episodes[-1] >= len(source):
            raise DataError(f"{where}: window spans name episode {int(episodes[-1])}, the file has {len(source)}")
        needed = np.zeros(len(episodes), dtype=np.int64)  # frames each episode must have
        np.maximum.at(needed, inverse.reshape(-1), spans[:, 1] + spans[:, 2])
        shape = None
        for episode, rows in zip(episodes.tolist(), needed.tolist()):
            frames = source.frames(episode, self.key)
            if frames.dtype != np.uint8 or frames.ndim != 4:
                raise DataError(f"{where} episode {episode}: {self.key!r} is {frames.dtype} "
                                f"{frames.shape}, not uint8 (T, H, W, C) frames")
            shape = shape or tuple(frames.shape[1:])
            if tuple(frames.shape[1:]) != shape:
                raise DataError(f"{where} episode {episode}: frames are {frames.shape[1:]}, "
                                f"episode {episodes[0]} has {shape}")
            if frames.shape[0] < rows:
                raise DataError(f"{where} episode {episode}: {frames.shape[0]} frames, the windows need {rows}")
        return shape, dict(zip(episodes.tolist(), needed.tolist()))

    def _dataset(self, episode: int) -> Any:
        if self._pid != os.getpid():
            # A new process (or after close): HDF5 handles must not be shared across processes, so
            # open our own; the parent's (if any) is left to the parent.
            self._reader, self._pid = self._open_reader(), os.getpid()
            self._open = OrderedDict()
        dataset = self._open.get(episode)
        if dataset is None:
            dataset = self._reader.frames(episode, self.key)
            self._open[episode] = dataset
            if len(self._open) > self.max_open_datasets:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(episode)
        return dataset

    def read(self, window_indices: Any, out: np.ndarray | None = None) -> np.ndarray:
        """(B, L, H, W, C) uint8 frames of the given window ids (a sequence, array or tensor).
        ``out``: an array of that shape to fill (e.g. a view of pinned memory) instead of a new one."""
        ids = _as_ids(window_indices)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self._spans)):
            raise IndexError(f"window ids must lie in [0, {len(self._spans)}), got {ids.min()}..{ids.max()}")
        shape = (len(ids), self.window, *self.frame_shape)
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8:
            raise ValueError(f"out must be uint8 {shape}, got {out.dtype} {out.shape}")
        if self._memory is not None:  # one gather; padding repeats the last real frame
            steps = np.minimum(np.arange(self.window), self._spans[ids, 2:3] - 1)  # (B, L)
            np.take(self._memory, self._first[ids, None] + steps, axis=0, out=out, mode="clip")
            return out
        for row, (episode, start, real) in enumerate(self._spans[ids].tolist()):
            out[row, :real] = self._dataset(episode)[start : start + real]
            out[row, real:] = out[row, real - 1]  # padding repeats the last real frame
        return out

    def windows(self, window_indices: Any, device: str | torch.device = "cpu") -> torch.Tensor:
        """The frames as a uint8 tensor on ``device``. For CUDA they are read straight into pinned
        host memory and copied asynchronously (no extra host copy)."""
        ids = _as_ids(window_indices)
        device = torch.device(device)
        shape = (len(ids), self.window, *self.frame_shape)
        if device.type != "cuda":
            return torch.from_numpy(self.read(ids)).to(device)
        host = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        self.read(ids, out=host.numpy())
        return host.to(device, non_blocking=True)

    def loader(self, id_batches: Iterable[Any], *, num_workers: int = 0, pin_memory: bool = False,
               prefetch_factor: int = 2) -> torch.utils.data.DataLoader:
        """Iterate ``(ids, frames)`` CPU tensors for each batch of window ids in ``id_batches``, in
        order, read in ``num_workers`` processes (each up to ``prefetch_factor`` batches ahead);
        ``pin_memory`` for CUDA copies. The ids come back so a training loop can check them."""
        return torch.utils.data.DataLoader(self, batch_sampler=_Batches(id_batches), num_workers=num_workers,
                                           collate_fn=first_item, pin_memory=pin_memory,
                                           prefetch_factor=prefetch_factor if num_workers > 0 else None)

    # The map-style dataset a torch DataLoader calls:

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, index: int) -> torch.Tensor:
        """(L, H, W, C) frames of one window."""
        return torch.from_numpy(self.read([index])[0])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch at once: ((B,) ids, (B, L, H, W, C) frames). Use collate_fn=first_item
        (the default collate would stack the rows into a second copy)."""
        ids = _as_ids(indices)
        return torch.from_numpy(ids), torch.from_numpy(self.read(ids))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_pid=None, _reader=None, _open=OrderedDict())  # handles do not cross processes
        return state

    def close(self) -> None:
        self._open = OrderedDict()
        self._memory = self._first = None
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader, self._pid = None, None

    def __enter__(self) -> "ImageWindows":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def first_item(batch: Any) -> Any:
    """DataLoader collate_fn for ImageWindows: its ``__getitems__`` already returns the batch."""
    return batch


class _Batches:
    """An iterable of id batches as a DataLoader batch_sampler (lists of ints)."""

    def __init__(self, id_batches: Iterable[Any]) -> None:
        self.id_batches = id_batches

    def __iter__(self) -> Iterator[list[int]]:
        for ids in self.id_batches:
            yield _as_ids(ids).tolist()


def _as_ids(window_indices: Any) -> np.ndarray:
    if isinstance(window_indices, torch.Tensor):
        window_indices = window_indices.detach().cpu().numpy()
    return np.asarray(window_indices, dtype=np.int64).reshape(-1)


def channel_stats(path: str | os.PathLike, key: str, *, episodes: Sequence[int] | None = None,
                  max_frames: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of an image key in [0, 1] units, for ImageTokenizer(mean=, std=), from
    up to ``max_frames`` single frames drawn (seeded, with replacement) from the given episodes
    (e.g. the training split's Trajectories.episode_ids; default all)."""
    rng = np.random.default_rng(seed)
    with NativeSource(path) as source:
        chosen = np.arange(len(source)) if episodes is None else np.asarray(episodes, dtype=np.int64)
        if len(chosen) == 0:
            raise DataError(f"{path}: no episodes to compute image statistics from")
        lengths = np.array([source.episode_length(int(e)) for e in chosen], dtype=np.int64)
        steps = int(lengths.sum())
        picks = np.sort(rng.integers(0, steps, size=min(max_frames, steps)))
        bounds = np.cumsum(lengths) - lengths
        which = np.searchsorted(bounds, picks, side="right") - 1
        total = total_sq = 0.0
        for episode_row, step in zip(which.tolist(), (picks - bounds[which]).tolist()):
            frame = source.frames(int(chosen[episode_row]), key)[step].astype(np.float64) / 255.0
            pixels = frame.reshape(-1, frame.shape[-1])
            total = total + pixels.sum(0)
            total_sq = total_sq + (pixels**2).sum(0)
            count_per_frame = pixels.shape[0]
    n = len(picks) * count_per_frame
    mean = total / n
    # A constant channel has std 0; one grey level keeps the tokenizer's division finite.
    std = np.maximum(np.sqrt(np.maximum(total_sq / n - mean**2, 0.0)), 1.0 / 255.0)
    return mean.astype(np.float32), std.astype(np.float32)
