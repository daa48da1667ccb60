"""A user's own parts, registered from outside genvae: a Laplace prior and a capacity objective."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Laplace

from genvae.objectives import ObjectiveValue
from genvae.registry import register
from genvae.terms import Terms


@register("prior", "laplace")
class LaplacePrior(nn.Module):
    """p(z) = Π_j Laplace(0, b_j), with learned scales b.

    Args:
        latent_dim: D.
        scale: the scales' initial value b.
    """

    def __init__(self, latent_dim: int, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"expected scale > 0, got {scale}")
        self.latent_dim, self.scale = latent_dim, scale
        self.log_scale = nn.Parameter(torch.full((latent_dim,), math.log(scale)))

    def forward(self, y: Tensor | None = None) -> Distribution:
        return Independent(Laplace(torch.zeros_like(self.log_scale), self.log_scale.exp()), 1)


@register("objective", "capacity")
class Capacity:
    """The ELBO with its KL pulled towards a capacity C (Burgess et al. 2018):
    loss = −E log p(x|z) + γ |KL − C|.

    Args:
        gamma: γ, the weight of the distance to the capacity.
        capacity: C, in nats.
        k: draws per example.
    """

    def __init__(self, gamma: float = 10.0, capacity: float = 5.0, k: int = 1) -> None:
        self.gamma, self.capacity, self.k = gamma, capacity, k

    def __call__(self, terms: Terms, step: int | Tensor = 1) -> ObjectiveValue:
        ll, kl = terms.log_likelihood, terms.kl()  # (k, B) each
        loss = -ll.mean() + self.gamma * (kl.mean() - self.capacity).abs()
        return ObjectiveValue(loss, (ll - kl).mean(0))
