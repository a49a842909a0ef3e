"""A policy's network call replayed from a captured CUDA graph (`PolicyConfig.cuda_graph`).

A policy step for a few environments is a few hundred small kernels; on a GPU their launches, not
their arithmetic, set the rate. A CUDA graph records the kernels of one call and replays them all
with one launch. It needs a call of fixed shapes that never waits on the host (`MTM.predict(...,
static=True)`) and inputs that live at fixed addresses: `GraphedCall` keeps its own copies of the
inputs, copies each call's values into them, replays the graph and returns a copy of its output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Capture = Callable[[Callable[[], torch.Tensor]], tuple[Callable[[], None], torch.Tensor]]


def capture_cuda_graph(fn: Callable[[], torch.Tensor], warmup: int = 3) -> tuple[Callable[[], None], torch.Tensor]:
    """(replay, output): `fn` run `warmup` times on a side stream (as torch.cuda.graph asks, so that
    lazy initialisation happens outside the capture), then captured once; replay() reruns its kernels
    and leaves the result in `output`."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn()
    return graph.replay, output


class GraphedCall:
    """fn(*tensors) -> tensor, captured on the first call and replayed after it. Every later call
    must pass tensors of the first call's shapes, dtypes and devices (a policy: all its env slots)."""

    def __init__(self, fn: Callable[..., torch.Tensor], capture: Capture = capture_cuda_graph):
        self.fn = fn
        self._capture = capture
        self._inputs: list[torch.Tensor] | None = None
        self._replay: Callable[[], None] | None = None
        self._output: torch.Tensor | None = None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self._replay is None:
            staged = [x.clone() for x in inputs]
            self._replay, self._output = self._capture(lambda: self.fn(*staged))  # raises: nothing kept
            self._inputs = staged
        else:
            for mine, x in zip(self._inputs, inputs, strict=True):
                if (mine.shape, mine.dtype, mine.device) != (x.shape, x.dtype, x.device):
                    raise ValueError(f"a graphed call needs its first call's tensors: {tuple(x.shape)} {x.dtype} "
                                     f"on {x.device} given, {tuple(mine.shape)} {mine.dtype} on {mine.device} captured")
                mine.copy_(x)
        self._replay()
        return self._output.clone()
