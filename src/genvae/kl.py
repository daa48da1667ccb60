"""Closed-form KL divergences on raw parameters, and a dispatcher on distributions.

The raw-parameter functions reduce over the last dimension and return the batch shape: for
parameters of shape ``(*batch, D)`` they return ``(*batch,)``. [`kl_divergence`][genvae.kl.kl_divergence] works on
``torch.distributions`` objects: it uses torch's KL registry (which genvae extends with
``register_kl`` for the standard-normal prior) and falls back to a Monte-Carlo estimate only where
no closed form is registered and ``mc_samples`` is given. [`kl_on_draws`][genvae.kl.kl_on_draws] and
[`kl_per_dim`][genvae.kl.kl_per_dim] are the one place where a model's KL term is chosen between the closed form and
a Monte-Carlo estimate on the draws the model already made.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal, register_kl
from torch.distributions import kl_divergence as _torch_kl

__all__ = [
    "StandardNormalDistribution",
    "kl_bernoulli",
    "kl_categorical",
    "kl_divergence",
    "kl_normal_normal",
    "kl_normal_std",
    "kl_on_draws",
    "kl_per_dim",
]


def kl_normal_std(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) ‖ N(0, I)) for diagonal Gaussians.

    Args:
        mu: means, ``(*batch, D)``.
        logvar: log-variances, ``(*batch, D)``.

    Returns:
        ``(*batch,)``: ½ Σ (σ² + μ² − 1 − log σ²).
    """
    return 0.5 * (logvar.exp() + mu.square() - 1.0 - logvar).sum(-1)


def kl_normal_normal(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, exp(logvar_q)) ‖ N(mu_p, exp(logvar_p))) for diagonal Gaussians.

    All arguments broadcast to ``(*batch, D)``; returns ``(*batch,)``.
    """
    ratio = (logvar_q - logvar_p).exp()
    return 0.5 * (ratio + (mu_q - mu_p).square() * (-logvar_p).exp() - 1.0 - (logvar_q - logvar_p)).sum(-1)


def kl_bernoulli(logits_q: Tensor, logits_p: Tensor) -> Tensor:
    """KL between factorised Bernoulli distributions given by logits.

    Computed with log-sigmoids, never from clamped probabilities. ``(*batch, D)`` → ``(*batch,)``.
    """
    log_q1, log_q0 = F.logsigmoid(logits_q), F.logsigmoid(-logits_q)
    log_p1, log_p0 = F.logsigmoid(logits_p), F.logsigmoid(-logits_p)
    q1, q0 = log_q1.exp(), log_q0.exp()
    zero = torch.zeros_like(q1)
    # An outcome q never takes (logit ±inf) contributes 0, not 0 · (−inf) = NaN.
    return (torch.where(q1 > 0, q1 * (log_q1 - log_p1), zero) + torch.where(q0 > 0, q0 * (log_q0 - log_p0), zero)).sum(
        -1
    )


def kl_categorical(logits_q: Tensor, logits_p: Tensor) -> Tensor:
    """KL between categorical distributions given by (unnormalised) logits.

    ``(*batch, K)`` → ``(*batch,)``.
    """
    log_q = logits_q.log_softmax(-1)
    log_p = logits_p.log_softmax(-1)
    q = log_q.exp()
    # Categories that q never takes (logit −inf) contribute 0, not 0 · (−inf) = NaN.
    return torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q)).sum(-1)


class StandardNormalDistribution(Independent):
    """N(0, I) over ``(D,)`` that the KL registry recognises without looking at its values.

    It is an ordinary ``Independent(Normal(0, 1), 1)`` (``rsample``, ``log_prob``, ``mean`` all
    work); the subclass only lets [`kl_divergence`][genvae.kl.kl_divergence] use ½ Σ (σ² + μ² − 1 − log σ²) directly.

    Args:
        loc: a zero tensor of shape ``(*batch, D)``; only its shape, dtype and device are used.
    """

    def __init__(self, loc: Tensor) -> None:
        super().__init__(Normal(loc, torch.ones_like(loc), validate_args=False), 1, validate_args=False)


@register_kl(Independent, StandardNormalDistribution)
def _kl_independent_standard_normal(q: Independent, p: StandardNormalDistribution) -> Tensor:
    base = q.base_dist
    if isinstance(base, Normal) and q.reinterpreted_batch_ndims == 1:
        scale = base.scale
        return 0.5 * (scale.square() + base.loc.square() - 1.0).sum(-1) - scale.log().sum(-1)
    # Any other factorised q: the generic rule (base KL summed over the event dims).
    kl = _torch_kl(base, p.base_dist)
    return kl.flatten(kl.dim() - q.reinterpreted_batch_ndims).sum(-1)


def _monte_carlo_kl(q: Distribution, p: Distribution, num_samples: int) -> Tensor:
    z = q.rsample((num_samples,)) if q.has_rsample else q.sample((num_samples,))
    return (q.log_prob(z) - p.log_prob(z)).mean(0)


def kl_divergence(q: Distribution, p: Distribution, *, mc_samples: int | None = None) -> Tensor:
    """KL(q ‖ p) with the batch shape of ``q`` and ``p`` broadcast together.

    Uses the closed form from torch's registry where one exists. Where none does (mixture and
    VampPrior priors), returns the Monte-Carlo estimate mean_s[log q(z_s) − log p(z_s)] over
    ``mc_samples`` reparameterised draws z_s ~ q — unbiased, but noisy and not always ≥ 0.

    Args:
        q: the first distribution, e.g. the posterior with batch ``(B,)`` and event ``(D,)``.
        p: the second, of the same event shape.
        mc_samples: number of draws for the fallback; ``None`` means "closed form or error".

    Raises:
        NotImplementedError: no closed form is registered and ``mc_samples`` is ``None``.
        ValueError: ``mc_samples`` is not a positive integer, or the event shapes differ.
    """
    if mc_samples is not None and (isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1):
        raise ValueError(f"expected mc_samples to be a positive int or None, got {mc_samples!r}")
    if q.event_shape != p.event_shape:
        raise ValueError(
            f"expected q and p with the same event shape, got {tuple(q.event_shape)} and {tuple(p.event_shape)}"
        )
    try:
        return _torch_kl(q, p)
    except NotImplementedError:
        if mc_samples is None:
            raise NotImplementedError(
                f"no closed-form KL({type(q).__name__} ‖ {type(p).__name__}) is registered; "
                "pass mc_samples=N for a Monte-Carlo estimate with N draws"
            ) from None
    return _monte_carlo_kl(q, p, mc_samples)


def kl_on_draws(q: Distribution, p: Distribution, z: Tensor) -> Tensor:
    """KL(q ‖ p) where ``z`` are draws from q: closed form where registered, else on the draws.

    Args:
        q: the posterior, batch ``(*batch,)``, event ``(*event,)`` (``(D,)``, ``(C, H, W)``…).
        p: the prior, batch broadcastable with ``z``'s leading dims, of the same event shape.
        z: ``(*S, *batch, *event)`` draws from q (the ones the model decoded).

    Returns:
        ``(*S, *batch)``: the closed form broadcast over the sample dims, or the single-draw
        Monte-Carlo estimate log q(z) − log p(z) per draw (mixture and VampPrior priors), whose
        mean over the draws is unbiased.
    """
    shape = z.shape[: z.dim() - len(q.event_shape)]
    try:
        return _torch_kl(q, p).expand(shape)
    except NotImplementedError:
        return q.log_prob(z) - p.log_prob(z)


def _factors(d: Distribution) -> Distribution | None:
    """The per-dimension distribution of a factorised ``Independent(…, 1)``, else None."""
    if isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1:
        return d.base_dist
    return None


def _scalar_factors(d: Distribution) -> Distribution | None:
    """The per-element distribution of ``Independent(base, n)`` whose base has scalar events (a
    factorised distribution over an event of any shape, ``(D,)`` or ``(C, H, W)``), else None."""
    if (
        isinstance(d, Independent)
        and d.reinterpreted_batch_ndims == len(d.event_shape)
        and d.base_dist.event_shape == ()
    ):
        return d.base_dist
    return None


def kl_per_dim(q: Distribution, p: Distribution, z: Tensor) -> Tensor:
    """KL(q ‖ p) per latent dimension, for factorised q and p (``Independent`` of scalars over an
    event of any shape: ``(D,)``, or ``(C, H, W)`` for a spatial layer).

    Closed form where torch registers one for the factors, else log q_j(z_j) − log p_j(z_j) on the
    draws. Summed over the event dims it equals [`kl_on_draws`][genvae.kl.kl_on_draws].

    Args:
        q: the posterior, as in [`kl_on_draws`][genvae.kl.kl_on_draws], event ``(*event,)``.
        p: the prior, of the same event shape.
        z: ``(*S, *batch, *event)`` draws from q.

    Returns:
        ``(*S, *batch, *event)``.

    Raises:
        ValueError: q or p does not factorise over dimensions (a mixture prior, a flow posterior),
            or their event shapes differ.
    """
    q_j, p_j = _scalar_factors(q), _scalar_factors(p)
    if q_j is None or p_j is None:
        raise ValueError(
            f"expected a posterior and a prior that factorise over latent dimensions (Independent of scalars) for a "
            f"KL per dimension, got {type(q).__name__} and {type(p).__name__}"
        )
    if q.event_shape != p.event_shape:
        raise ValueError(
            f"expected q and p with the same event shape, got {tuple(q.event_shape)} and {tuple(p.event_shape)}"
        )
    try:
        return _torch_kl(q_j, p_j).expand(z.shape)
    except NotImplementedError:
        return q_j.log_prob(z) - p_j.log_prob(z)
