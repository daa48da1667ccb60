"""A whole training step — loss, gradients and Adam's update — compiled as one program.

On a CPU a small model's step is short enough that what lies between the matrix products counts:
the autograd engine's bookkeeping, each elementwise op's own pass over memory, and the optimizer's
Python loop over parameters. Compiling the loss alone leaves the backward pass's glue and the
optimizer outside the compiled code. Here the gradients come from :func:`torch.func.grad_and_value`
and the Adam update follows, all inside one ``torch.compile``, so inductor fuses the elementwise
work of the forward pass, the backward pass and the update into a few C++ loops around the matrix
products.

The update is torch.optim.Adam's (single-tensor form: ``m.lerp_(g, 1 - β1)``,
``v.mul_(β2).addcmul_(g, g, value=1 - β2)``, ``p -= lr/(1 - β1^t) · m / (√v / √(1 - β2^t) + ε)``)
with one change of where things are computed: the two bias corrections are scalars of the step
count, computed on the host and passed in as 0-d tensors. Traced from the step-count tensor, as
torch.optim's functional Adam does under compile, they become two ``pow`` calls inside every
vectorised iteration of the update loop, which doubles its cost on a CPU. The step reads and
writes the parameters and the state of the :class:`torch.optim.Adam` in place, so the optimizer's
``state_dict`` (checkpoints, resume) stays as if it had stepped itself.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.func import functional_call, grad_and_value

from ._graph import Step
from .models import _LatentVariableModel


class CompiledAdamStep:
    """Runs one Adam step on ``model(x, y, beta=beta).loss``, compiled for the first batch's shape.

    Batches of another shape (the last, smaller batch of an epoch) go to ``step``, the eager step
    on the same optimizer, so the whole step is compiled once. The learning rate is read from the
    optimizer at every call (a scheduler may change it) and reaches the compiled code in a tensor,
    which does not recompile.

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
        if shares_parameters(model):
            raise ValueError(
                "expected a model whose parts share no parameters (a VampPrior reuses its encoder's), "
                "which the compiled gradient transform does not support; compile the loss alone"
            )
        self.step, self.model, self.opt = step, model, opt
        self.beta, self.running, self.amp, self.grad_clip = beta, running, amp, grad_clip
        group = opt.param_groups[0]
        index = {id(p): n for n, p in model.named_parameters()}
        self.names = [index[id(p)] for p in group["params"]]
        # Detached aliases: the compiled code updates the parameters' storage in place.
        self.params = [p.detach() for p in group["params"]]
        # Buffers are inputs too, so that layers which update them in training (batch norm's running
        # statistics) may do so inside the gradient transform.
        self.buffer_names = [n for n, _ in model.named_buffers()]
        self.buffers = [b for _, b in model.named_buffers()]
        for p in group["params"]:
            state = opt.state[p]
            if not state:  # as Adam initialises its state on its first step
                state["step"] = torch.zeros((), dtype=_scalar_dtype(), device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.exp_avgs = [opt.state[p]["exp_avg"] for p in group["params"]]
        self.exp_avg_sqs = [opt.state[p]["exp_avg_sq"] for p in group["params"]]
        self.steps = [opt.state[p]["step"] for p in group["params"]]
        self.t = int(self.steps[0])  # the step count on the host (a resumed run starts past 0)
        device = self.params[0].device
        self.step_size = torch.zeros((), dtype=_scalar_dtype(), device=device)  # lr / (1 − β1^t)
        self.correction2 = torch.ones((), dtype=_scalar_dtype(), device=device)  # √(1 − β2^t)
        # The C++ wrapper calls the step's kernels from generated C++ rather than Python: on a CPU,
        # where each of some twenty kernel calls is a few microseconds of work, that is a quarter of
        # a millisecond a step.
        options = {**torch._inductor.list_mode_options(mode or "default"), "cpp_wrapper": True}
        self.compiled = torch.compile(self._step, options=options, fullgraph=True, dynamic=False)
        self.shape: torch.Size | None = None  # the compiled batch shape

    def _loss(self, params: list[Tensor], buffers: list[Tensor], x: Tensor, y: Tensor | None) -> Tensor:
        tensors = dict(zip(self.names, params)) | dict(zip(self.buffer_names, buffers))
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            return functional_call(self.model, tensors, (x, y), {"beta": self.beta}).loss

    def _step(
        self,
        params: list[Tensor],
        buffers: list[Tensor],
        x: Tensor,
        y: Tensor | None,
        step_size: Tensor,
        correction2: Tensor,
    ) -> None:
        grads, loss = grad_and_value(self._loss)(params, buffers, x, y)
        if self.grad_clip is not None:  # as clip_grad_norm_
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            scale = torch.clamp(self.grad_clip / (norm + 1e-6), max=1.0)
            grads = tuple(g * scale for g in grads)
        group = self.opt.param_groups[0]
        beta1, beta2 = group["betas"]
        for p, g, m, v, t in zip(params, grads, self.exp_avgs, self.exp_avg_sqs, self.steps):
            if group["maximize"]:
                g = -g
            if group["weight_decay"] != 0:
                g = g.add(p, alpha=group["weight_decay"])
            t.add_(1)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.sub_(step_size * m / (v.sqrt() / correction2 + group["eps"]))
        self.running.add_(loss.detach())

    def __call__(self, x: Tensor, y: Tensor | None) -> None:
        """One step on ``x (B, *data_shape)`` and ``y (B,)`` or None; no host reads."""
        if self.shape is None:
            self.shape = x.shape
            # Fill the lazy caches the traced code reads (such as torch.distributions' KL dispatch
            # table) with one forward pass that leaves the random stream where it was.
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                state = [b.clone() for b in self.buffers]
                self._loss(self.params, self.buffers, x, y)
                for b, saved in zip(self.buffers, state):  # as if the forward had not run
                    b.copy_(saved)
        self.t += 1
        if x.shape != self.shape:
            self.step(x, y)
            return
        group = self.opt.param_groups[0]
        beta1, beta2 = group["betas"]
        self.step_size.fill_(group["lr"] / (1 - beta1**self.t))
        self.correction2.fill_(math.sqrt(1 - beta2**self.t))
        self.compiled(self.params, self.buffers, x, y, self.step_size, self.correction2)


def _scalar_dtype() -> torch.dtype:
    """The dtype torch.optim.Adam gives its step counter: float64 under a float64 default dtype."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def shares_parameters(model: torch.nn.Module) -> bool:
    """Whether a parameter appears under two names (tied weights, a module used in two places)."""
    return len(list(model.named_parameters(remove_duplicate=False))) != len(list(model.parameters()))


def compiles_whole(model: torch.nn.Module) -> bool:
    """Whether ``fit(compile=True)`` compiles ``model``'s whole step on a CPU.

    Not when parameters are shared, which the compiled gradient transform does not support, nor
    for convolutional models: their convolutions' backward inside the compiled step measured
    slower than autograd's (the conv VAE at batch 128: 40 against 31 ms a step with the loss
    alone compiled), so the loss alone is compiled for them.
    """
    convolutional = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    return not shares_parameters(model) and not convolutional
