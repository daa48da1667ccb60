"""A whole training step — loss, gradients and Adam's update — compiled as one program.

The loss and the clipping are the eager step's
([`objective_loss`][genvae.engines.eager.objective_loss],
[`clip_scale`][genvae.engines.eager.clip_scale]), traced through a functional call of the model;
what this engine adds is Adam's update written as tensor operations, so that it joins the same
program.

On a CPU a small model's step is short enough that what lies between the matrix products counts:
the autograd engine's bookkeeping, each elementwise op's own pass over memory, and the optimizer's
Python loop over parameters. Compiling the loss alone leaves the backward pass's glue and the
optimizer outside the compiled code. Here the gradients come from ``torch.func.grad_and_value``
and the Adam update follows, all traced into one graph, so inductor fuses the elementwise work of
the forward pass, the backward pass and the update into a few C++ loops around the matrix products.

The step is traced once with ``make_fx`` and compiled with
``torch._inductor.compile``, without dynamo: every input of the program is a tensor that this
class owns or checks, so dynamo's guards (some six hundred for the MLP VAE: every parameter, Adam
buffer, module attribute and optimizer option it read) would only re-check, at every call, what
cannot change. Their evaluation measured about 0.3 ms of a 3.6 ms step. What could change between
calls is handled here instead: the numbers of the update (learning rate, betas, ε, weight decay)
reach the program as tensors read from the optimizer at every step; a batch of another shape or
dtype, a change of ``maximize`` or of whether weight decay is on, and evaluation mode all go to the
eager step. Tracing runs on fake tensors, so a forward pass that reads tensor values on the host
(a Python branch on a tensor) cannot be traced; such a model gets a warning and the eager step.

The update is torch.optim.Adam's (single-tensor form: ``m.lerp_(g, 1 - β1)``,
``v.mul_(β2).addcmul_(g, g, value=1 - β2)``, ``p -= lr/(1 - β1^t) · m / (√v / √(1 - β2^t) + ε)``)
with one change of where things are computed: the two bias corrections are scalars of the step
count, computed on the host and passed in as tensors. Traced from the step-count tensor, as
torch.optim's functional Adam does under compile, they become two ``pow`` calls inside every
vectorised iteration of the update loop, which doubles its cost on a CPU. The step reads and
writes the parameters and the state of the ``torch.optim.Adam`` in place, so the optimizer's
``state_dict`` (checkpoints, resume) stays as if it had stepped itself.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.func import functional_call, grad_and_value
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from ..objectives import Objective
from ..terms import Terms
from .eager import Batch, Step, clip_scale, objective_loss

__all__ = ["CompiledAdamStep", "compiles_whole", "convolutional", "shares_parameters"]

#: What tracing raises when the model's code reads tensor values on the host (a Python branch on a
#: tensor, an output whose shape depends on values).
UNTRACEABLE = (GuardOnDataDependentSymNode, DataDependentOutputException, DynamicOutputShapeException)

#: Positions in ``CompiledAdamStep.scalars``: lr/(1 − β1^t), √(1 − β2^t), 1 − β1, β2, ε, weight decay.
STEP_SIZE, CORRECTION2, ONE_MINUS_BETA1, BETA2, EPS, WEIGHT_DECAY = range(6)


class CompiledAdamStep:
    """Runs one Adam step on ``objective``'s loss of ``model``, compiled for the first batch's shape.

    Batches of another shape (the last, smaller batch of an epoch) go to ``step``, the eager step
    on the same optimizer, so the whole step is compiled once. The learning rate, betas, ε and
    weight decay are read from the optimizer at every call (a scheduler may change them) and reach
    the compiled code in a tensor, which does not recompile. The model's structure must not change
    while the step is in use.

    Args:
        step: the eager step ``step(batch)`` ([`train_step`][genvae.engines.eager.train_step] on
            the same optimizer, step counter and running loss), for other batch shapes.
        model: the model (a [`LatentVariableModel`][genvae.protocols.LatentVariableModel] module) whose
            parameters ``opt`` holds.
        objective: the objective whose loss is minimised.
        opt: a ``torch.optim.Adam`` with one parameter group, ``amsgrad=False`` and
            ``decoupled_weight_decay=False``.
        count: ``()`` integer tensor, the optimizer steps so far; incremented at every step.
        running: ``()`` the loss of every step is added to it.
        amp: bfloat16 autocast for the forward pass.
        grad_clip: clip the global gradient norm to this value.
        mode: ``torch.compile`` mode whose inductor options to use (None for the default).
    """

    def __init__(
        self,
        step: Step,
        model: torch.nn.Module,
        objective: Objective,
        opt: torch.optim.Adam,
        count: Tensor,
        running: Tensor,
        *,
        amp: bool = False,
        grad_clip: float | None = None,
        mode: str | None = None,
    ) -> None:
        _check_adam_and_model(opt, model)
        self.step, self.model, self.objective, self.opt = step, model, objective, opt
        self.amp, self.grad_clip = amp, grad_clip
        group = opt.param_groups[0]
        index = {id(p): n for n, p in model.named_parameters()}
        self.names = [index[id(p)] for p in group["params"]]
        self.buffer_names = [n for n, _ in model.named_buffers()]
        _init_adam_state(opt)
        self.t = int(opt.state[group["params"][0]]["step"])  # the step count on the host (resume starts past 0)
        self.scalars = torch.zeros(6, dtype=_scalar_dtype(), device=group["params"][0].device)
        # The program's inputs before the batch, in the order _program unpacks them. Parameters enter
        # as detached aliases (the program updates their storage in place); buffers enter too, so
        # that layers which update them in training (batch norm's running statistics) may do so.
        self.inputs: list[Tensor] = [
            *(p.detach() for p in group["params"]),
            *(opt.state[p]["exp_avg"] for p in group["params"]),
            *(opt.state[p]["exp_avg_sq"] for p in group["params"]),
            *(opt.state[p]["step"] for p in group["params"]),
            *(b for _, b in model.named_buffers()),
            count,
            running,
            self.scalars,
        ]
        # The C++ wrapper calls the step's kernels from generated C++ rather than Python: on a CPU,
        # where each of some twenty kernel calls is a few microseconds of work, that is a quarter of
        # a millisecond a step.
        # Random draws (the reparameterised z) use torch's own generator, as the eager step does: its
        # vectorised normal sampler measured 0.15 ms a step faster than inductor's per-element draws.
        self.options = {
            **torch._inductor.list_mode_options(mode or "default"),
            "cpp_wrapper": True,
            "fallback_random": True,
        }
        self.compiled: Callable[..., object] | None = None
        self.key: Hashable = None  # what the compiled program assumes of the batch and the options

    def _loss(self, params: list[Tensor], buffers: list[Tensor], count: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
        tensors = dict(zip(self.names, params)) | dict(zip(self.buffer_names, buffers))

        def model(x: Tensor, y: Tensor | None, *, k: int) -> Terms:
            return functional_call(self.model, tensors, (x, y), {"k": k})

        return objective_loss(model, self.objective, x, y, count, amp=self.amp)

    def _program(self, *inputs: Tensor) -> tuple[()]:
        """The step on ``self.inputs + [x] (+ [y])``, updating them in place; traced, never run."""
        n, k = len(self.names), len(self.buffer_names)
        params, exp_avgs, exp_avg_sqs, steps = (list(inputs[i * n : (i + 1) * n]) for i in range(4))
        buffers = list(inputs[4 * n : 4 * n + k])
        count, running, s, x, *rest = inputs[4 * n + k :]
        count.add_(1)
        grads, loss = grad_and_value(self._loss)(params, buffers, count, x, rest[0] if rest else None)
        if self.grad_clip is not None:
            scale = clip_scale(grads, self.grad_clip)
            grads = tuple(g * scale for g in grads)
        group = self.opt.param_groups[0]
        for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
            if group["maximize"]:
                g = -g
            if group["weight_decay"] != 0:
                g = g + s[WEIGHT_DECAY] * p
            t.add_(1)
            m.lerp_(g, s[ONE_MINUS_BETA1])
            v.mul_(s[BETA2]).add_(g * g * (1 - s[BETA2]))
            p.sub_(s[STEP_SIZE] * m / (v.sqrt() / s[CORRECTION2] + s[EPS]))
        running.add_(loss.detach())
        return ()

    def __call__(self, batch: Batch) -> None:
        """One step on ``Batch(x (B, *data_shape), y (B,) or None)``; no host reads."""
        x, y = batch
        tensors = (x,) if y is None else (x, y)
        group = self.opt.param_groups[0]
        key = (
            x.shape,
            x.dtype,
            x.device,
            None if y is None else (y.shape, y.dtype),
            group["maximize"],
            group["weight_decay"] != 0,
            self.model.training,
            torch.is_grad_enabled(),
        )
        self.t += 1
        if self.compiled is None and self.key is None:
            self.key = key
            self.compiled = self._compile(tensors)
        if key != self.key or self.compiled is None:
            self.step(batch)
            return
        beta1, beta2 = group["betas"]
        self.scalars.copy_(
            torch.tensor(
                [
                    group["lr"] / (1 - beta1**self.t),
                    math.sqrt(1 - beta2**self.t),
                    1 - beta1,
                    beta2,
                    group["eps"],
                    group["weight_decay"],
                ],
                dtype=self.scalars.dtype,
            )
        )
        self.compiled(*self.inputs, *tensors)

    def _compile(self, batch: tuple[Tensor, ...]) -> Callable[..., object] | None:
        """The program for batches like ``batch`` (``(x,)`` or ``(x, y)``); None, with a warning, for
        a model whose forward pass cannot be traced."""
        try:
            graph = _trace(self._program, *self.inputs, *batch)
        except UNTRACEABLE as e:
            warnings.warn(
                f"compile=True: the training step was not compiled, since the model's forward pass "
                f"reads tensor values on the host ({type(e).__name__}: {str(e).splitlines()[0]}); "
                "it runs eagerly",
                stacklevel=3,
            )
            return None
        return torch._inductor.compile(graph, [*self.inputs, *batch], options=self.options)


def _check_adam_and_model(opt: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """Refuse what the program does not implement: another update rule, shared parameters."""
    options = {k: opt.defaults.get(k, False) for k in ("amsgrad", "decoupled_weight_decay")}
    if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1 or any(options.values()):
        raise ValueError(
            f"expected a torch.optim.Adam with one parameter group, amsgrad=False and "
            f"decoupled_weight_decay=False, got {type(opt).__name__} with {len(opt.param_groups)} "
            f"group(s) and {options}"
        )
    if shares_parameters(model):
        raise ValueError(
            "expected a model whose parts share no parameters (a VampPrior reuses its encoder's), "
            "which the compiled gradient transform does not support; compile the loss alone"
        )


def _init_adam_state(opt: torch.optim.Adam) -> None:
    """Adam's state of every parameter, as Adam initialises it on its first step, where it has none."""
    for p in opt.param_groups[0]["params"]:
        state = opt.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=_scalar_dtype(), device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def _trace(program: Callable[..., tuple[()]], *inputs: Tensor) -> torch.fx.GraphModule:
    """``program``'s graph, traced on fake tensors with distributions' argument checks off.

    Those checks (such as a Normal's ``scale > 0``) read tensor values on the host, which tracing
    cannot; the training data are checked once before the first step instead.
    """
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        return make_fx(program, tracing_mode="fake", _allow_non_fake_inputs=True)(*inputs)
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)


def _scalar_dtype() -> torch.dtype:
    """The dtype torch.optim.Adam gives its step counter: float64 under a float64 default dtype."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def shares_parameters(model: torch.nn.Module) -> bool:
    """Whether a parameter appears under two names (tied weights, a module used in two places)."""
    return len(list(model.named_parameters(remove_duplicate=False))) != len(list(model.parameters()))


def compiles_whole(model: torch.nn.Module) -> bool:
    """Whether ``fit(compile=True)`` compiles ``model``'s whole step on a CPU: not when parameters
    are shared, which the compiled gradient transform does not support (the loss alone is
    compiled then)."""
    return not shares_parameters(model)


def convolutional(model: torch.nn.Module) -> bool:
    """Whether ``model`` has 2-d convolutions (their weights then go channels-last under the
    whole-step compile, which measured faster for them)."""
    return any(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in model.modules())
