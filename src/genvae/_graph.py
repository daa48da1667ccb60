"""A whole training step — loss, backward, optimizer step — captured once as a CUDA graph.

Small models on a GPU spend most of a step launching kernels: the MLP VAE's step is dozens of
kernels of a few microseconds each. Replaying a captured graph launches them all with one
call. This follows PyTorch's "whole network capture" recipe
(https://pytorch.org/docs/stable/notes/cuda.html#whole-network-capture): warm up on a side
stream, capture one step on static input buffers, then copy every batch into those buffers and
replay. Random draws inside the graph (the reparameterised z) are fresh on every replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Step = Callable[[Tensor, Tensor | None], None]

#: Eager steps run on a side stream before the capture (lazy initialisation of cuBLAS handles,
#: autograd streams and compiled kernels must not happen inside the capture).
WARMUP_STEPS = 3


class GraphedStep:
    """Runs ``step(x, y)``: eagerly for the first ``WARMUP_STEPS`` calls, then by graph replay.

    ``step`` must do all of its work on the device (no host reads, no shape-dependent Python) and
    keep its results in tensors that outlive the call (parameters, optimizer state, a running
    loss). The graph is captured for the shape of the first batch; batches of another shape (the
    last, smaller batch of an epoch) run eagerly.

    Args:
        step: the training step; it is called with batches ``x (B, *data_shape)``, ``y (B,)`` or None.
    """

    def __init__(self, step: Step) -> None:
        self.step = step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.shape: torch.Size | None = None  # the captured batch shape
        self.x: Tensor | None = None  # static input buffers of the graph
        self.y: Tensor | None = None
        self.warmups = 0

    def __call__(self, x: Tensor, y: Tensor | None) -> None:
        if self.shape is None:
            self.shape = x.shape
        if x.shape != self.shape:
            self._eager(x, y)
        elif self.graph is not None:
            self.x.copy_(x)  # type: ignore[union-attr]
            if self.y is not None and y is not None:
                self.y.copy_(y)
            self.graph.replay()
        elif self.warmups < WARMUP_STEPS:
            self.warmups += 1
            self._eager(x, y)
        else:
            self._capture(x, y)

    def _eager(self, x: Tensor, y: Tensor | None) -> None:
        """One step on a side stream, as capture requires of the steps before it."""
        current = torch.cuda.current_stream(x.device)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self.step(x, y)
        current.wait_stream(side)

    def _capture(self, x: Tensor, y: Tensor | None) -> None:
        """Capture one step on copies of ``(x, y)``, then replay it once to train on this batch."""
        self.x, self.y = x.clone(), None if y is None else y.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step(self.x, self.y)
        self.graph = graph
        graph.replay()  # capturing records the work without doing it
