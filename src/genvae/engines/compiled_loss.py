"""The compiled-loss engine: [`objective_loss`][genvae.engines.eager.objective_loss] through
``torch.compile``, with autograd and the optimizer run as usual around it.

It is the compiled engine wherever the whole step cannot be one program: on a GPU (inside the CUDA
graph there), with an optimizer other than the default Adam, under DistributedDataParallel, and
for models whose parts share parameters.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
from torch import Tensor

from .eager import objective_loss

__all__ = ["compile_loss"]


def compile_loss(mode: str | None = None) -> Callable[..., Tensor]:
    """A compiled copy of [`objective_loss`][genvae.engines.eager.objective_loss], for
    [`train_step`][genvae.engines.eager.train_step]'s ``loss``.

    Dynamo keeps its compiled entries per code object and stops compiling a function after
    ``recompile_limit`` entries, silently running it eagerly from then on. Each call compiles a
    copy of the loss with a code object of its own, so that earlier fits (of other architectures
    or objectives) neither use up this fit's entries nor need ``torch.compiler.reset()``, which
    would clear every compiled function of the user's process.

    Args:
        mode: the ``torch.compile`` mode, e.g. ``"max-autotune"``; None for the default.
    """
    fn = objective_loss
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    return torch.compile(copy, mode=mode)
