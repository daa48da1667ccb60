"""The four plug points of a VAE, and the model contract, as structural protocols.

Any ``nn.Module`` (or callable) whose call signature fits plugs in: nothing to inherit, nothing to
register. Shapes use ``B`` for the batch, ``D`` for the latent size and ``S`` for any extra leading
sample dimensions (importance samples); a latent of another shape, such as the ``(C, H, W)`` of a
spatial layer, stands where ``(D,)`` does.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.distributions import Distribution

if TYPE_CHECKING:
    from .terms import ELBOOutput, Terms

__all__ = ["Decoder", "Encoder", "LatentVariableModel", "Likelihood", "Prior"]


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
    """Turns decoder output into the observation model p(x | z).

    Optional members, read with ``getattr`` where present:

    * ``param_shape(data_shape) -> tuple[int, ...]``: the decoder output shape per example for data
      of ``data_shape``, e.g. ``(2C, H, W)`` for a location and a log-scale per sub-pixel; a
      likelihood without it takes parameters of the data shape.
    * ``event_dims``: the number of trailing data dims; a model sets it when it is None.
    * ``support``: the ``torch.distributions.constraints`` object data must satisfy.
    """

    def __call__(self, params: Tensor) -> Distribution:
        """``params (*S, B, ...)`` → distribution with event shape = data shape."""
        ...


@runtime_checkable
class Prior(Protocol):
    """The prior p(z[ | y]); unconditional priors accept ``y`` and ignore it."""

    def __call__(self, y: Tensor | None = None) -> Distribution:
        """→ distribution with event ``(D,)``; batch ``()`` unconditional or ``(B,)`` given y."""
        ...


@runtime_checkable
class LatentVariableModel(Protocol):
    """What [`fit`][genvae.train.fit], the metrics, the figures and [`save`][genvae.save]/[`load`][genvae.load]
    use of a model. [`VAE`][genvae.VAE] and [`CVAE`][genvae.CVAE] satisfy it; so does any
    ``nn.Module`` with these members, without inheriting from anything.

    Attributes:
        data_shape: the shape of one example, e.g. ``(1, 28, 28)`` (None where no part declares it).
        num_classes: the number of labels of a conditional model, else None.
        latent_dim: D of the (top) latent layer, where a part declares it.
        validating: whether inputs' values are checked (see `validate_args`).
    """

    data_shape: tuple[int, ...] | None
    num_classes: int | None
    validating: bool

    @property
    def latent_dim(self) -> int | None: ...

    def terms(self, x: Tensor, y: Tensor | None = None, *, k: int = 1) -> Terms:
        """log p(x | z) ``(k, B)`` and each stochastic layer's (posterior, prior, z) for ``k`` draws."""
        ...

    def elbo(self, x: Tensor, y: Tensor | None = None, *, beta: float = 1.0, k: int = 1) -> ELBOOutput:
        """Per-example ELBO terms of ``x (B, *data_shape)`` (the IW bound for ``k > 1``)."""
        ...

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """q(z | x[, y]), batch ``(B,)``, event ``(D,)``."""
        ...

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x | z[, y]) for ``z (*S, B, D)``, event shape = data shape."""
        ...

    def sample(
        self, n: int, y: Tensor | None = None, *, generator: torch.Generator | None = None, mean: bool = True
    ) -> Tensor:
        """``(n, *data_shape)`` draws from the model."""
        ...

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x | z = the posterior mean), same shape as ``x``."""
        ...

    def interpolate(self, x0: Tensor, x1: Tensor, steps: int = 10, y: Tensor | None = None) -> Tensor:
        """``(steps, *data_shape)`` decoded from the line between two examples' posterior means."""
        ...

    def validate_args(self, enabled: bool = True) -> AbstractContextManager[None]:
        """A context in which the inputs' values are checked (or not); restores the state on exit."""
        ...
