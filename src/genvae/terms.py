"""What a model hands an objective: log p(x | z) for k draws, and each stochastic layer's parts.

    terms = model.terms(x, y, k=k)
    terms.log_likelihood                 (k, B)   log p(x | z_k)
    terms.layers[l].posterior            q(z_l | …), batch (B,) (or (k, B) below the top of a hierarchy)
    terms.layers[l].prior                p(z_l | …), batch (), (B,) or (k, B)
    terms.layers[l].z                    (k, B, *event_l), the draws that were decoded

A layer's event is its posterior's event shape: ``(D,)`` for a vector of D latents, ``(C, H, W)``
for a spatial layer (NVAE, VDVAE). Objectives ([`genvae.objectives`][genvae.objectives]) read
nothing else, so a model with more layers, or another posterior, plugs into every objective
unchanged. [`ELBOOutput`][genvae.terms.ELBOOutput], what ``model.elbo`` returns, lives here too.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce

from torch import Tensor
from torch.distributions import Distribution

from .kl import kl_on_draws, kl_per_dim

__all__ = ["ELBOOutput", "LatentLayer", "Terms"]


def total(values: Iterable[Tensor]) -> Tensor:
    """The sum of one or more tensors, without adding a zero first (one op fewer per layer)."""
    return reduce(operator.add, values)


@dataclass(frozen=True)
class LatentLayer:
    """One stochastic layer: the posterior, the prior and the ``k`` reparameterised draws.

    Attributes:
        posterior: q(z | …), event ``(*event,)``: ``(D,)``, or ``(C, H, W)`` for a spatial layer.
        prior: p(z | …), of the same event shape.
        z: ``(k, B, *event)`` draws from ``posterior``.
    """

    posterior: Distribution
    prior: Distribution
    z: Tensor

    def kl(self) -> Tensor:
        """``(k, B)``: KL(q ‖ p) in closed form where torch registers one, else log q(z) − log p(z)."""
        return kl_on_draws(self.posterior, self.prior, self.z)

    def kl_per_dim(self) -> Tensor:
        """``(k, B, *event)``: the KL per latent dimension (factorised posterior and prior only)."""
        return kl_per_dim(self.posterior, self.prior, self.z)

    def log_ratio(self) -> Tensor:
        """``(k, B)``: log p(z) − log q(z) at the draws, this layer's share of the log importance weight."""
        return self.prior.log_prob(self.z) - self.posterior.log_prob(self.z)


@dataclass(frozen=True)
class Terms:
    """Everything an objective needs from one batch, for ``k`` draws per example.

    Attributes:
        log_likelihood: ``(k, B)`` log p(x | z) in nats, summed over the data dimensions.
        layers: the stochastic layers, top first (one for [`VAE`][genvae.VAE]).
    """

    log_likelihood: Tensor
    layers: tuple[LatentLayer, ...]

    @property
    def k(self) -> int:
        """Draws per example."""
        return self.log_likelihood.shape[0]

    def kl(self) -> Tensor:
        """``(k, B)``: the KL summed over layers (each as [`kl`][genvae.terms.LatentLayer.kl])."""
        return total(layer.kl() for layer in self.layers)

    def log_ratio(self) -> Tensor:
        """``(k, B)``: log p(z) − log q(z | x), summed over layers."""
        return total(layer.log_ratio() for layer in self.layers)

    def log_weights(self) -> Tensor:
        """``(k, B)``: log p(x, z) − log q(z | x), the log importance weights."""
        return self.log_likelihood + self.log_ratio()


@dataclass(frozen=True)
class ELBOOutput:
    """Per-example terms of the evidence lower bound, in nats (what ``model.elbo`` returns, see
    [`genvae.models.elbo`][genvae.models.elbo]).

    Attributes:
        elbo: ``(B,)`` the bound on log p(x): log p(x|z) − KL for k = 1, the IW bound for k > 1.
        log_likelihood: ``(B,)`` the reconstruction term E_q[log p(x|z)] (single or k-sample mean).
        kl: ``(B,)`` KL(q(z|x) ‖ p(z)) summed over layers, closed form or its Monte-Carlo estimate.
        loss: scalar to minimise: −mean(log_likelihood − β·kl) (k = 1) or −mean(β-weighted IW bound).
    """

    elbo: Tensor
    log_likelihood: Tensor
    kl: Tensor
    loss: Tensor
