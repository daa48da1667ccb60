"""A whole training step — loss, backward, optimizer step — captured once as a CUDA graph.

Small models on a GPU spend most of a step launching kernels: the MLP VAE's step is dozens of
kernels of a few microseconds each. Replaying a captured graph launches them all with one
call. This follows PyTorch's "whole network capture" recipe
(https://pytorch.org/docs/stable/notes/cuda.html#whole-network-capture): warm up on a side
stream, capture one step on static input buffers, then copy every batch into those buffers and
replay. Random draws inside the graph (the reparameterised z) are fresh on every replay.
"""

from __future__ import annotations

import torch

from .eager import Batch, Step

__all__ = ["WARMUP_STEPS", "GraphedStep"]

#: Eager steps run on a side stream before the capture (lazy initialisation of cuBLAS handles,
#: autograd streams and compiled kernels must not happen inside the capture).
WARMUP_STEPS = 3


class GraphedStep:
    """Runs ``step(batch)``: eagerly for the first ``WARMUP_STEPS`` calls, then by graph replay.

    ``step`` must do all of its work on the device (no host reads, no shape-dependent Python) and
    keep its results in tensors that outlive the call (parameters, optimizer state, a running
    loss). The graph is captured for the shape of the first batch; batches of another shape (the
    last, smaller batch of an epoch) run eagerly.

    Args:
        step: the training step; it is called with batches ``Batch(x (B, *data_shape), y (B,) or None)``.
    """

    def __init__(self, step: Step) -> None:
        self.step = step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.shape: torch.Size | None = None  # the captured batch shape
        self.static: Batch | None = None  # the graph's input buffers
        self.warmups = 0

    def __call__(self, batch: Batch) -> None:
        if self.shape is None:
            self.shape = batch.x.shape
        if batch.x.shape != self.shape:
            self._eager(batch)
        elif self.graph is not None and self.static is not None:
            self.static.x.copy_(batch.x)
            if self.static.y is not None and batch.y is not None:
                self.static.y.copy_(batch.y)
            self.graph.replay()
        elif self.warmups < WARMUP_STEPS:
            self.warmups += 1
            self._eager(batch)
        else:
            self._capture(batch)

    def _eager(self, batch: Batch) -> None:
        """One step on a side stream, as capture requires of the steps before it."""
        current = torch.cuda.current_stream(batch.x.device)
        side = torch.cuda.Stream(device=batch.x.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self.step(batch)
        current.wait_stream(side)

    def _capture(self, batch: Batch) -> None:
        """Capture one step on copies of ``batch``, then replay it once to train on this batch."""
        self.static = Batch(batch.x.clone(), None if batch.y is None else batch.y.clone())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step(self.static)
        self.graph = graph
        graph.replay()  # capturing records the work without doing it
