"""Training objectives, the fifth part: each turns a model's [`Terms`][genvae.terms.Terms] into a
loss to minimise and a per-example bound on log p(x).

    terms = model.terms(x, y, k=objective.k)     log p(x|z) (k, B); per layer (q, p, z)
    out = objective(terms, step)                  out.loss (), out.bound (B,)

| objective | loss | reference |
| --- | --- | --- |
| ``ELBO`` | −mean(log p(x ∣ z) − β·KL), β a number or a schedule | Kingma & Welling 2014 |
| ``IWAE`` | −mean(log 1/k Σ_i w_i), w_i = p(x, z_i) / q(z_i ∣ x) | Burda et al. 2015 |
| ``DReG`` | IWAE, with doubly reparameterised encoder gradients | Tucker et al. 2018 |
| ``STL`` | ELBO with the score term of the encoder gradient dropped | Roeder et al. 2017 |
| ``FreeBits`` | ELBO with the KL of each latent dimension floored at λ | Kingma et al. 2016 |

An objective is any callable with an attribute ``k`` (the draws it needs per example) and
``__call__(terms, step)``; ``step`` counts optimizer steps from 1 (an int, or a 0-d tensor in a
compiled step) and drives β schedules ([`genvae.schedules`][genvae.schedules]).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.distributions import Distribution, TransformedDistribution

from ._checks import positive_int
from .registry import register
from .schedules import Schedule, as_schedule
from .terms import Terms, total

__all__ = ["DReG", "ELBO", "FreeBits", "IWAE", "Objective", "ObjectiveValue", "STL"]


@dataclass(frozen=True)
class ObjectiveValue:
    """What an objective returns for one batch.

    Attributes:
        loss: ``()`` the scalar to minimise (its gradient is the objective's estimator).
        bound: ``(B,)`` the bound on log p(x) the objective estimates, in nats, with β = 1: the
            ELBO for ELBO, STL and FreeBits, the importance-weighted bound for IWAE and DReG.
    """

    loss: Tensor
    bound: Tensor


@runtime_checkable
class Objective(Protocol):
    """Turns a model's terms into a loss and per-example bounds."""

    k: int  # draws per example that the objective needs from ``model.terms``

    def __call__(self, terms: Terms, step: int | Tensor = 1) -> ObjectiveValue:
        """``terms`` for ``k`` draws → the loss and the ``(B,)`` bound; ``step`` from 1."""
        ...


def _k(value: object) -> int:
    return positive_int("k", value)


def _schedule(value: object) -> Schedule:
    return as_schedule(value)  # type: ignore[arg-type]


def _iw_bound(log_w: Tensor) -> Tensor:
    """``(k, B)`` log weights → ``(B,)`` log 1/k Σ_i exp(log_w_i)."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def stop_gradient(d: Distribution) -> Distribution:
    """A copy of ``d`` whose parameters are detached: the same density, no gradient to its parameters.

    Used by [`STL`][genvae.objectives.STL] and [`DReG`][genvae.objectives.DReG], which keep the
    path of z = μ + σ·ε to the encoder but drop the score term ∇ log q(z) of the encoder's
    parameters.

    Raises:
        ValueError: ``d`` holds its parameters in modules (a flow's transforms), which cannot be
            detached here.
    """
    if isinstance(d, TransformedDistribution):
        raise ValueError(
            f"expected a posterior whose parameters are tensors (such as Independent(Normal)), got "
            f"{type(d).__name__}, whose transforms hold parameters; use IWAE or ELBO"
        )
    out = copy.copy(d)
    for name, value in vars(d).items():
        if isinstance(value, Tensor):
            setattr(out, name, value.detach())
        elif isinstance(value, Distribution):
            setattr(out, name, stop_gradient(value))
    return out


@register("objective", "elbo")
@dataclass(frozen=True)
class ELBO:
    """The evidence lower bound, with the KL weighted by β (β-VAE, Higgins et al. 2017).

    ``loss = −mean(log p(x|z) − β·KL)``, averaged over the ``k`` draws and the batch; the KL is in
    closed form where torch registers one, else its estimate on the draws (see
    [`genvae.terms.LatentLayer.kl`][genvae.terms.LatentLayer.kl]).

    Args:
        beta: a number ≥ 0 or a schedule ([`LinearWarmup`][genvae.schedules.LinearWarmup], …).
        k: draws per example (their ELBOs are averaged; k = 1 is the usual estimator).
    """

    beta: float | Schedule = 1.0
    k: int = 1
    schedule: Schedule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", _schedule(self.beta))
        _k(self.k)

    def __call__(self, terms: Terms, step: int | Tensor = 1) -> ObjectiveValue:
        ll, kl = terms.log_likelihood, terms.kl()  # (k, B) each
        beta = self.schedule.value(step)
        return ObjectiveValue(-(ll - beta * kl).mean(), (ll - kl).mean(0))


@register("objective", "iwae")
@dataclass(frozen=True)
class IWAE:
    """The importance-weighted bound (Burda et al. 2015, https://arxiv.org/abs/1509.00519).

    ``bound = log 1/k Σ_i p(x, z_i) / q(z_i | x)``, tighter than the ELBO as k grows;
    ``loss = −mean(bound)``. With ``beta`` the prior-to-posterior ratio in each weight is raised
    to β (β = 1 is the bound).

    Args:
        k: importance samples per example.
        beta: a number ≥ 0 or a schedule.
    """

    k: int = 5
    beta: float | Schedule = 1.0
    schedule: Schedule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _k(self.k)
        object.__setattr__(self, "schedule", _schedule(self.beta))

    def __call__(self, terms: Terms, step: int | Tensor = 1) -> ObjectiveValue:
        ll = terms.log_likelihood  # (k, B)
        ratio = terms.log_ratio()  # (k, B)
        bound = _iw_bound(ll + ratio)
        beta = self.schedule.value(step)
        if isinstance(beta, float) and beta == 1.0:
            return ObjectiveValue(-bound.mean(), bound)
        return ObjectiveValue(-_iw_bound(ll + beta * ratio).mean(), bound)


@register("objective", "stl", requires={"factorised": True})
@dataclass(frozen=True)
class STL:
    """ "Sticking the landing" (Roeder et al. 2017, https://arxiv.org/abs/1703.09194).

    The single-sample ELBO log p(x, z) − log q(z|x) with q's parameters stopped in log q, so the
    encoder's gradient is the path derivative alone: its variance vanishes as q approaches the
    true posterior. The value is the ELBO's; the decoder's gradient is the ELBO's.

    Args:
        k: draws per example (averaged).
    """

    k: int = 1

    def __post_init__(self) -> None:
        _k(self.k)

    def __call__(self, terms: Terms, step: int | Tensor = 1) -> ObjectiveValue:
        ll = terms.log_likelihood  # (k, B)
        exact = terms.log_weights()  # (k, B)
        path = ll + total(
            layer.prior.log_prob(layer.z) - stop_gradient(layer.posterior).log_prob(layer.z) for layer in terms.layers
        )
        surrogate = -path.mean()
        return ObjectiveValue(surrogate - surrogate.detach() - exact.mean().detach(), exact.mean(0))


@register("objective", "dreg", requires={"layers": 1, "factorised": True})
@dataclass(frozen=True)
class DReG:
    """IWAE with doubly reparameterised gradients (Tucker et al. 2018, https://arxiv.org/abs/1810.04152).

    The value and the decoder's (and prior's) gradient are IWAE's. The encoder's gradient is
    Σ_i w̃_i² ∂ log w_i / ∂z_i · ∂z_i / ∂φ with w̃ the normalised weights and q's parameters stopped
    in log w: unbiased for IWAE's gradient, with a signal-to-noise ratio that does not fall as k
    grows (Rainforth et al. 2018). The second factor w̃_i is applied to the gradient reaching each
    draw z_i by a hook, so the decoder runs once.

    Args:
        k: importance samples per example; at k = 1 this is [`STL`][genvae.objectives.STL].

    Raises:
        ValueError: at call, for a model with more than one stochastic layer (the hook would
            scale the paths through upper layers more than once).
    """

    k: int = 5

    def __post_init__(self) -> None:
        _k(self.k)

    def __call__(self, terms: Terms, step: int | Tensor = 1) -> ObjectiveValue:
        if len(terms.layers) != 1:
            raise ValueError(f"expected a model with one stochastic layer for DReG, got {len(terms.layers)}")
        (layer,) = terms.layers
        ll = terms.log_likelihood  # (k, B)
        log_w = ll + layer.prior.log_prob(layer.z) - stop_gradient(layer.posterior).log_prob(layer.z)  # (k, B)
        bound = _iw_bound(log_w)  # the value of log w is the same with q's parameters stopped
        weights = torch.softmax(log_w.detach(), 0)  # (k, B) normalised weights w̃
        if layer.z.requires_grad:
            # The surrogate below gives every path w̃_i; the path into z_i gets a second w̃_i here.
            layer.z.register_hook(lambda g: g * weights.unsqueeze(-1).to(g.dtype))
        surrogate = -(weights * log_w).sum(0).mean()
        return ObjectiveValue(surrogate - surrogate.detach() - bound.mean().detach(), bound)


@register("objective", "free-bits", requires={"factorised": True})
@dataclass(frozen=True)
class FreeBits:
    """The ELBO with a floor of λ nats on the KL of each latent dimension (Kingma et al. 2016,
    https://arxiv.org/abs/1606.04934, appendix C.8).

    ``loss = −mean(log p(x|z)) + β·Σ_l Σ_j max(λ, KL_lj)``, where KL_lj is the KL of dimension j of
    layer l averaged over the batch (j runs over every element of the layer's event, ``(D,)`` or
    ``(C, H, W)``): a dimension whose KL is under λ gets no gradient from it, so
    the encoder is free to use it. ``bound`` is the ELBO. Needs a posterior and a prior that
    factorise over dimensions (not a mixture prior).

    Args:
        lambda_: the floor in nats per dimension, ≥ 0.
        beta: a number ≥ 0 or a schedule.
        k: draws per example.
    """

    lambda_: float = 0.5
    beta: float | Schedule = 1.0
    k: int = 1
    schedule: Schedule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lam = self.lambda_
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam < float("inf"):
            raise ValueError(f"expected lambda_ to be a finite number >= 0 (nats per dimension), got {lam!r}")
        object.__setattr__(self, "lambda_", float(lam))
        object.__setattr__(self, "schedule", _schedule(self.beta))
        _k(self.k)

    def __call__(self, terms: Terms, step: int | Tensor = 1) -> ObjectiveValue:
        ll = terms.log_likelihood  # (k, B)
        per_dim = [layer.kl_per_dim() for layer in terms.layers]  # (k, B, *event_l) each
        floored = total(kl.flatten(0, 1).mean(0).clamp(min=self.lambda_).sum() for kl in per_dim)  # ()
        beta = self.schedule.value(step)
        kl = total(d.flatten(2).sum(-1) for d in per_dim)  # (k, B)
        return ObjectiveValue(-ll.mean() + beta * floored, (ll - kl).mean(0))
