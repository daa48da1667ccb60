"""Observation models p(x | z): each maps decoder output to a ``torch.distributions`` object whose
event shape is the data shape, so ``log_prob(x)`` is per example, summed over pixels.

The likelihood is the choice of reconstruction loss: Bernoulli ↔ binary cross-entropy, Gaussian
with σ = 1 ↔ ½ · sum of squared errors (plus a constant). Each exposes ``support``, the
``torch.distributions.constraints`` object that data must satisfy; models check it on input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli as _Bernoulli
from torch.distributions import ContinuousBernoulli as _ContinuousBernoulli
from torch.distributions import Distribution, Independent, constraints
from torch.distributions import Normal as _Normal

from ._checks import positive_float, positive_int, shape_tuple

__all__ = ["Bernoulli", "ContinuousBernoulli", "Gaussian"]


def _event_dims(value: object) -> int | None:
    return None if value is None else positive_int("event_dims", value)


def _independent(base: Distribution, likelihood: Bernoulli | ContinuousBernoulli | Gaussian) -> Distribution:
    """``base`` with the likelihood's trailing ``event_dims`` dims as one event."""
    dims = likelihood.event_dims
    if dims is None:
        raise ValueError(
            f"expected {type(likelihood).__name__} to know the data's number of dimensions: compose it into "
            "a VAE whose encoder or decoder declares data_shape, or pass event_dims="
        )
    return Independent(base, dims, validate_args=False)


class Bernoulli(nn.Module):
    """Factorised Bernoulli from logits: ``log_prob`` is −BCE-with-logits summed over pixels.

    Accepts grayscale targets in [0, 1] (the "BCE on intensities" of the classic MNIST VAE); for a
    proper density on grayscale data use :class:`ContinuousBernoulli`.

    Args:
        event_dims: number of trailing dims that form one example (3 for ``(C, H, W)`` images);
            by default the model sets it from its data shape.
    """

    support = constraints.unit_interval

    def __init__(self, *, event_dims: int | None = None) -> None:
        super().__init__()
        self.event_dims = _event_dims(event_dims)

    def forward(self, params: Tensor) -> Distribution:
        """``params``: logits ``(*S, B, *data_shape)`` → distribution with that event shape."""
        # validate_args=False: targets may be grayscale in [0, 1]; support is checked by the model.
        base = _Bernoulli(logits=params, validate_args=False)
        return _independent(base, self)


class ContinuousBernoulli(nn.Module):
    """Continuous Bernoulli from logits: a normalised density on [0, 1].

    Fixes the missing normaliser of BCE on grayscale pixels (Loaiza-Ganem & Cunningham, 2019,
    https://arxiv.org/abs/1907.06845). Its ``mean`` is not ``sigmoid(logits)``; use it for images.

    Args:
        event_dims: number of trailing dims that form one example; by default the model sets it
            from its data shape.
    """

    support = constraints.unit_interval

    def __init__(self, *, event_dims: int | None = None) -> None:
        super().__init__()
        self.event_dims = _event_dims(event_dims)

    def forward(self, params: Tensor) -> Distribution:
        """``params``: logits ``(*S, B, *data_shape)`` → distribution with that event shape."""
        base = _ContinuousBernoulli(logits=params, validate_args=False)
        return _independent(base, self)


class Gaussian(nn.Module):
    """Gaussian with mean from the decoder and a fixed or learned standard deviation.

    * ``Gaussian()``: σ = 1, so −log p(x|z) = ½ Σ (x − μ)² + const (the "sum of squared errors" loss).
    * ``Gaussian(learned=True)``: one σ for all pixels, learned.
    * ``Gaussian(learned=True, shape=(1, 28, 28))``: one learned σ per pixel, shared by all images.

    A learned σ is ``min_sigma + exp(raw)``: on MNIST some pixels are always 0, and without a floor
    their σ would shrink towards 0 and the likelihood grow without bound.

    Args:
        sigma: the (initial) standard deviation, > ``min_sigma`` when learned.
        learned: whether σ is a trainable parameter.
        shape: shape of σ, broadcast against the data: ``()`` for one σ, the data shape for one per pixel.
        min_sigma: floor of a learned σ.
        event_dims: number of trailing dims that form one example; by default the model sets it
            from its data shape.
    """

    support = constraints.real

    def __init__(
        self,
        sigma: float = 1.0,
        *,
        learned: bool = False,
        shape: tuple[int, ...] = (),
        min_sigma: float = 1e-2,
        event_dims: int | None = None,
    ) -> None:
        super().__init__()
        self.sigma = positive_float("sigma", sigma)
        self.learned = bool(learned)
        self.shape = () if shape == () else shape_tuple("shape", shape)
        self.min_sigma = positive_float("min_sigma", min_sigma)
        self.event_dims = _event_dims(event_dims)
        if self.learned:
            if self.sigma <= self.min_sigma:
                raise ValueError(f"expected sigma > min_sigma={self.min_sigma} for a learned σ, got {self.sigma}")
            raw = torch.full(self.shape, math.log(self.sigma - self.min_sigma))
            self.raw_sigma = nn.Parameter(raw)
        else:
            # float64, so that float64 data see σ exactly; cast to the data's dtype on use.
            self.register_buffer("raw_sigma", torch.full(self.shape, self.sigma, dtype=torch.float64), persistent=False)

    def scale(self) -> Tensor:
        """The current σ, of shape ``shape``."""
        if self.learned:
            return self.min_sigma + self.raw_sigma.exp()
        return self.raw_sigma

    def forward(self, params: Tensor) -> Distribution:
        """``params``: means ``(*S, B, *data_shape)`` → distribution with that event shape."""
        scale = self.scale().to(params.dtype).expand_as(params)
        return _independent(_Normal(params, scale, validate_args=False), self)
