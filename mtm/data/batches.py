"""Training batches with every modality: `WindowBatches` has a WindowSampler's interface, and adds
the image frames of the same window ids, read lazily from the data's source (mtm.data.image_windows)."""

from __future__ import annotations

from typing import Mapping

import torch

from mtm.data.formats import DataSource
from mtm.data.image_windows import ImageWindows, memory_budget
from mtm.data.windows import WindowSampler


class WindowBatches:
    def __init__(self, sampler: WindowSampler, images: Mapping[str, ImageWindows] | None = None) -> None:
        self.sampler = sampler
        self.images = dict(images or {})

    @classmethod
    def build(cls, sampler: WindowSampler, source: DataSource | None, image_keys: list[str],
              frames: str = "file") -> "WindowBatches":
        """`sampler`'s windows with the frames of `image_keys`, read from `source` (the dataset the
        sampler's trajectories were loaded from; None when there are no image keys), decoded into
        memory first or read per batch as `frames` says (data.frames, mtm.data.image_windows)."""
        if image_keys and source is None:
            raise ValueError("image frames need the source the trajectories were loaded from")
        # "auto" weighs every key's frames together against the budget: all in memory, or none.
        each = "file" if frames == "auto" else frames
        images = {key: ImageWindows.for_sampler(source, key, sampler, frames=each) for key in image_keys}
        if frames == "auto" and images:
            budget = memory_budget()
            if budget is not None and sum(w.frame_bytes for w in images.values()) <= budget:
                for w in images.values():
                    w.load_into_memory()
        return cls(sampler, images)

    def describe_frames(self) -> str | None:
        """Where the frames are read from, for the run's header (None without image keys)."""
        if not self.images:
            return None
        size = sum(w.frame_bytes for w in self.images.values()) / 1e9
        if all(w.in_memory for w in self.images.values()):
            return f"image frames: {size:.2f} GB decoded into memory (data.frames)"
        return f"image frames: read from the file each batch ({size:.2f} GB decoded; data.frames)"

    @property
    def num_windows(self) -> int:
        return self.sampler.num_windows

    @property
    def window(self) -> int:
        return self.sampler.window

    def frame_shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.images[key].frame_shape)

    def draw(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sampler.draw(batch_size, generator)

    def windows(self, window_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = self.sampler.windows(window_indices)
        for key, frames in self.images.items():
            batch[key] = frames.windows(window_indices, self.sampler.device)
        return batch

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return self.windows(self.draw(batch_size, generator))

    def close(self) -> None:
        for frames in self.images.values():
            frames.close()
