"""The one place where an [`Engine`][genvae.engines.choice.Engine] becomes a training step."""

from __future__ import annotations

from functools import partial
from typing import cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ..objectives import Objective
from .choice import Engine
from .compiled_loss import compile_loss
from .cuda_graph import GraphedStep
from .eager import Step, objective_loss, train_step
from .whole_step import CompiledAdamStep

__all__ = ["make_step"]


def make_step(
    model: nn.Module,
    objective: Objective,
    optimizer: Optimizer,
    engine: Engine,
    *,
    step: Tensor,
    running: Tensor,
    grad_clip: float | None = None,
) -> Step:
    """The training step ``engine`` names, as a function ``step(batch)``.

    Every engine wraps [`train_step`][genvae.engines.eager.train_step] on these arguments: the
    eager engine is that step; the compiled loss passes it ``loss=compile_loss(mode)``; the CUDA
    graph ([`GraphedStep`][genvae.engines.cuda_graph.GraphedStep]) captures it; the compiled whole
    CPU step ([`CompiledAdamStep`][genvae.engines.whole_step.CompiledAdamStep]) runs it for the
    batches its program was not compiled for.

    Args:
        model: the model whose parameters ``optimizer`` holds, or its DistributedDataParallel
            wrapper (an engine with ``whole_step`` needs the model itself).
        objective: the objective whose loss is minimised.
        optimizer: the optimizer; ``engine.whole_step`` needs a ``torch.optim.Adam``, and
            ``engine.cuda_graph`` one built with ``capturable=True``.
        engine: what [`choose_engine`][genvae.engines.choice.choose_engine] resolved.
        step: ``()`` integer tensor, the optimizer steps taken so far; every step increments it.
        running: ``()`` tensor to which every step adds its loss.
        grad_clip: clip the global gradient norm to this value.

    Raises:
        ValueError: an optimizer the engine cannot run (see ``optimizer``).
    """
    if engine.cuda_graph and not optimizer.defaults.get("capturable", False):
        raise ValueError(
            f"expected an optimizer built with capturable=True for cuda_graph=True, got "
            f"{type(optimizer).__name__} with capturable={optimizer.defaults.get('capturable')}"
        )
    mode = engine.compile if isinstance(engine.compile, str) else None
    loss = compile_loss(mode) if engine.compile and not engine.whole_step else objective_loss
    eager: Step = partial(
        train_step, model, objective, optimizer, step=step, running=running, amp=engine.amp, grad_clip=grad_clip,
        loss=loss,
    )  # fmt: skip
    if engine.cuda_graph:
        return GraphedStep(eager)
    if engine.whole_step:
        adam = cast(torch.optim.Adam, optimizer)  # checked by CompiledAdamStep
        return CompiledAdamStep(
            eager, model, objective, adam, step, running, amp=engine.amp, grad_clip=grad_clip, mode=mode
        )
    return eager
