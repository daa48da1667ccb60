"""A whole training step — loss, gradients and Adam's update — compiled as one program.

On a CPU a small model's step is short enough that what lies between the matrix products counts:
the autograd engine's bookkeeping, each elementwise op's own pass over memory, and the optimizer's
Python loop over parameters. Compiling the loss alone leaves the backward pass's glue and the
optimizer outside the compiled code. Here the gradients come from :func:`torch.func.grad_and_value`
and the update from torch.optim's own functional Adam, all inside one ``torch.compile``, so
inductor fuses the elementwise work of the forward pass, the backward pass and the update into a
few C++ loops around the matrix products.

The step reads and writes the parameters and the state of a :class:`torch.optim.Adam` in place,
so the optimizer's ``state_dict`` (checkpoints, resume) stays as if it had stepped itself.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, grad_and_value
from torch.optim.adam import adam

from ._graph import Step
from .models import _LatentVariableModel


class CompiledAdamStep:
    """Runs one Adam step on ``model(x, y, beta=beta).loss``, compiled for the first batch's shape.

    Batches of another shape (the last, smaller batch of an epoch) go to ``step``, the eager step
    on the same optimizer, so the whole step is compiled once. The learning rate is read from the
    optimizer at every call (a scheduler may change it) and passed to the compiled code as a
    tensor, which does not recompile.

    Args:
        step: the eager step ``step(x, y)`` (autograd, ``opt.step()``), for other batch shapes.
        model: a :class:`~genvae.VAE` or :class:`~genvae.CVAE` whose parameters ``opt`` holds.
        opt: a :class:`torch.optim.Adam` with one parameter group and ``amsgrad=False``.
        beta: ``()`` the KL weight, read at every step.
        running: ``()`` the loss of every step is added to it.
        amp: bfloat16 autocast for the forward pass.
        grad_clip: clip the global gradient norm to this value.
        mode: ``torch.compile`` mode (None for the default).
    """

    def __init__(
        self,
        step: Step,
        model: _LatentVariableModel,
        opt: torch.optim.Adam,
        beta: Tensor,
        running: Tensor,
        *,
        amp: bool = False,
        grad_clip: float | None = None,
        mode: str | None = None,
    ) -> None:
        if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1 or opt.defaults["amsgrad"]:
            raise ValueError(
                f"expected a torch.optim.Adam with one parameter group and amsgrad=False, got "
                f"{type(opt).__name__} with {len(opt.param_groups)} group(s)"
            )
        self.step, self.model, self.opt = step, model, opt
        self.beta, self.running, self.amp, self.grad_clip = beta, running, amp, grad_clip
        group = opt.param_groups[0]
        index = {id(p): n for n, p in model.named_parameters()}
        self.names = [index[id(p)] for p in group["params"]]
        # Detached aliases: the compiled code updates the parameters' storage in place.
        self.params = [p.detach() for p in group["params"]]
        for p in group["params"]:
            state = opt.state[p]
            if not state:  # as Adam initialises its state on its first step
                state["step"] = torch.zeros((), dtype=_scalar_dtype(), device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.exp_avgs = [opt.state[p]["exp_avg"] for p in group["params"]]
        self.exp_avg_sqs = [opt.state[p]["exp_avg_sq"] for p in group["params"]]
        self.steps = [opt.state[p]["step"] for p in group["params"]]
        self.lr = torch.tensor(float(group["lr"]), device=self.params[0].device)
        self.compiled = torch.compile(self._step, mode=mode, fullgraph=True, dynamic=False)
        self.shape: torch.Size | None = None  # the compiled batch shape

    def _loss(self, params: list[Tensor], x: Tensor, y: Tensor | None) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            return functional_call(self.model, dict(zip(self.names, params)), (x, y), {"beta": self.beta}).loss

    def _step(self, params: list[Tensor], x: Tensor, y: Tensor | None, lr: Tensor) -> None:
        grads, loss = grad_and_value(self._loss)(params, x, y)
        if self.grad_clip is not None:  # as clip_grad_norm_
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            scale = torch.clamp(self.grad_clip / (norm + 1e-6), max=1.0)
            grads = tuple(g * scale for g in grads)
        group = self.opt.param_groups[0]
        beta1, beta2 = group["betas"]
        adam(
            params,
            list(grads),
            self.exp_avgs,
            self.exp_avg_sqs,
            [],
            self.steps,
            foreach=False,
            capturable=False,
            differentiable=False,
            fused=None,
            grad_scale=None,
            found_inf=None,
            has_complex=False,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=lr,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )
        self.running.add_(loss.detach())

    def __call__(self, x: Tensor, y: Tensor | None) -> None:
        """One step on ``x (B, *data_shape)`` and ``y (B,)`` or None; no host reads."""
        if self.shape is None:
            self.shape = x.shape
            # Fill the lazy caches the traced code reads (such as torch.distributions' KL dispatch
            # table) with one forward pass that leaves the random stream where it was.
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                self._loss(self.params, x, y)
        if x.shape != self.shape:
            self.step(x, y)
            return
        self.lr.fill_(self.opt.param_groups[0]["lr"])
        self.compiled(self.params, x, y, self.lr)


def _scalar_dtype() -> torch.dtype:
    """The dtype torch.optim.Adam gives its step counter: float64 under a float64 default dtype."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
