"""The training step, defined once: the objective's loss on the model's terms, backward, optional
gradient clipping and the optimizer's step.

    train_step(model, objective, optimizer, Batch(x, y), step=step, running=running)

Every engine wraps this definition (see [`make_step`][genvae.engines.factory.make_step]): the
eager engine calls it; the compiled-loss engine passes it ``loss=compile_loss(mode)``; the
CUDA-graph engine ([`GraphedStep`][genvae.engines.cuda_graph.GraphedStep]) captures it; under
DistributedDataParallel ``model`` is the wrapped module; and the compiled whole CPU step
([`CompiledAdamStep`][genvae.engines.whole_step.CompiledAdamStep]) traces
[`objective_loss`][genvae.engines.eager.objective_loss] and
[`clip_scale`][genvae.engines.eager.clip_scale] with its own fused Adam update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..objectives import Objective
from ..terms import Terms

__all__ = ["CLIP_EPS", "Batch", "Step", "clip_scale", "objective_loss", "train_step"]


class Batch(NamedTuple):
    """One batch of training data, as every engine takes it."""

    x: Tensor  # (B, *data_shape)
    y: Tensor | None = None  # (B,) labels of a conditional model; None for an unconditional one


Step = Callable[[Batch], None]
"""A training step: ``step(batch)`` takes one optimizer step on ``batch``, device work only."""

#: Added to the gradient norm before dividing, as `torch.nn.utils.clip_grad_norm_` does.
CLIP_EPS = 1e-6


def objective_loss(
    model: Callable[..., Terms], objective: Objective, x: Tensor, y: Tensor | None, step: Tensor | int, *, amp: bool
) -> Tensor:
    """The scalar loss of ``objective`` on ``model(x, y, k=objective.k)``'s terms.

    Args:
        model: anything that returns [`Terms`][genvae.terms.Terms] when called as ``model(x, y, k=k)``:
            a model, its DDP wrapper, or a functional call of it.
        objective: the objective whose loss is returned.
        x: ``(B, *data_shape)`` the batch.
        y: ``(B,)`` its labels, or None.
        step: the optimizer step, from 1 (drives β schedules).
        amp: bfloat16 autocast for the forward pass (no weight cache: each weight is cast once per
            step anyway, and a cache may not live across CUDA graph replays).
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=False):
        return objective(model(x, y, k=objective.k), step).loss


def clip_scale(grads: Sequence[Tensor], max_norm: float) -> Tensor:
    """``()`` the factor that brings the gradients' global 2-norm down to ``max_norm`` (at most 1)."""
    norm = torch.nn.utils.get_total_norm(grads)  # as clip_grad_norm_: foreach kernels where they exist
    return torch.clamp(max_norm / (norm + CLIP_EPS), max=1.0)


def train_step(
    model: Callable[..., Terms],
    objective: Objective,
    optimizer: Optimizer,
    batch: Batch,
    *,
    step: Tensor,
    running: Tensor | None = None,
    amp: bool = False,
    grad_clip: float | None = None,
    loss: Callable[..., Tensor] = objective_loss,
) -> None:
    """One optimizer step on ``batch``; device work only, no host reads.

    Args:
        model: the model (or its DDP wrapper) whose parameters ``optimizer`` holds.
        objective: e.g. [`IWAE`][genvae.objectives.IWAE].
        optimizer: any torch optimizer.
        batch: ``Batch(x, y)``; ``y`` None for an unconditional model.
        step: ``()`` integer tensor, the optimizer steps taken so far; incremented first, so the
            objective sees 1 at the first step.
        running: ``()`` tensor to which the step's loss is added (read back by the caller).
        amp: bfloat16 autocast for the forward pass.
        grad_clip: clip the global gradient norm to this value.
        loss: the loss function, [`objective_loss`][genvae.engines.eager.objective_loss] or a
            compiled version of it.
    """
    x, y = batch
    step.add_(1)
    value = loss(model, objective, x, y, step, amp=amp)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    if grad_clip is not None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch._foreach_mul_(grads, clip_scale(grads, grad_clip))
    optimizer.step()
    if running is not None:
        running.add_(value.detach())
