"""The four plug points of a VAE, as structural protocols.

Any ``nn.Module`` (or callable) whose call signature fits plugs in: nothing to inherit, nothing to
register. Shapes use ``B`` for the batch, ``D`` for the latent size and ``S`` for any extra leading
sample dimensions (importance samples).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor
from torch.distributions import Distribution

__all__ = ["Decoder", "Encoder", "Likelihood", "Prior"]


@runtime_checkable
class Encoder(Protocol):
    """Maps data to the approximate posterior q(z | x[, y])."""

    def __call__(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """``x (B, *data_shape)``, ``y (B,)`` int64 or None → q with batch ``(B,)``, event ``(D,)``."""
        ...


@runtime_checkable
class Decoder(Protocol):
    """Maps latent codes to the parameters of p(x | z[, y])."""

    def __call__(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``z (*S, B, D)`` → parameters ``(*S, B, *param_shape)``; leading dims pass through."""
        ...


@runtime_checkable
class Likelihood(Protocol):
    """Turns decoder output into the observation model p(x | z)."""

    def __call__(self, params: Tensor) -> Distribution:
        """``params (*S, B, ...)`` → distribution with event shape = data shape."""
        ...


@runtime_checkable
class Prior(Protocol):
    """The prior p(z[ | y]); unconditional priors accept ``y`` and ignore it."""

    def __call__(self, y: Tensor | None = None) -> Distribution:
        """→ distribution with event ``(D,)``; batch ``()`` unconditional or ``(B,)`` given y."""
        ...
