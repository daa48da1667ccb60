"""Priors p(z[ | y]) over a ``(D,)`` latent space.

Each prior is an ``nn.Module`` called as ``prior(y=None)`` that returns a ``torch.distributions``
object with event shape ``(D,)``. Unconditional priors accept ``y`` and ignore it (batch shape
``()``); [`ConditionalNormal`][genvae.priors.ConditionalNormal] needs it (batch shape ``(B,)``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from ._checks import positive_int, shape_tuple
from .kl import StandardNormalDistribution
from .protocols import Encoder

__all__ = ["ConditionalNormal", "LearnedNormal", "MixtureOfGaussians", "StandardNormal", "VampPrior"]


class StandardNormal(nn.Module):
    """p(z) = N(0, I). Its KL against a Gaussian posterior is closed form and costs O(B·D)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.register_buffer("loc", torch.zeros(self.latent_dim), persistent=False)

    def forward(self, y: Tensor | None = None) -> Distribution:
        """→ N(0, I), batch ``()``, event ``(D,)``; ``y`` is ignored."""
        return StandardNormalDistribution(self.loc)


class LearnedNormal(nn.Module):
    """p(z) = N(μ, diag σ²) with μ and log σ learned (initialised to N(0, I))."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.loc = nn.Parameter(torch.zeros(self.latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(self.latent_dim))

    def forward(self, y: Tensor | None = None) -> Distribution:
        """→ N(μ, diag σ²), batch ``()``, event ``(D,)``; ``y`` is ignored."""
        return Independent(Normal(self.loc, self.log_scale.exp(), validate_args=False), 1, validate_args=False)


class MixtureOfGaussians(nn.Module):
    """p(z) = Σ_k π_k N(μ_k, diag σ_k²), all learned; means start spread as N(0, I) draws.

    The KL to a Gaussian posterior has no closed form: models estimate it by Monte Carlo.
    """

    def __init__(self, latent_dim: int, num_components: int) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.num_components = positive_int("num_components", num_components)
        self.logits = nn.Parameter(torch.zeros(self.num_components))
        self.locs = nn.Parameter(torch.randn(self.num_components, self.latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(self.num_components, self.latent_dim))

    def forward(self, y: Tensor | None = None) -> Distribution:
        """→ mixture, batch ``()``, event ``(D,)``; ``y`` is ignored."""
        components = Independent(Normal(self.locs, self.log_scales.exp(), validate_args=False), 1)
        return MixtureSameFamily(Categorical(logits=self.logits, validate_args=False), components, validate_args=False)


class VampPrior(nn.Module):
    """Variational mixture of posteriors: p(z) = 1/K Σ_k q(z | u_k) over learned pseudo-inputs u_k.

    Tomczak & Welling, 2018, https://arxiv.org/abs/1705.07120. The pseudo-inputs are
    ``sigmoid(raw)`` so that they stay in the [0, 1] pixel range; the encoder is shared with the
    model (pass the same module). The encoder must not need a label.

    Args:
        encoder: the model's encoder.
        num_pseudo_inputs: K.
        data_shape: shape of one input, e.g. ``(1, 28, 28)``.
    """

    def __init__(self, encoder: Encoder, num_pseudo_inputs: int, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        if not callable(encoder):
            raise TypeError(f"expected encoder to be callable (an Encoder), got {type(encoder).__name__}")
        self.encoder = encoder
        self.num_pseudo_inputs = positive_int("num_pseudo_inputs", num_pseudo_inputs)
        self.data_shape = shape_tuple("data_shape", data_shape)
        # Start near grey images with a little noise so the K components differ.
        self.raw_pseudo_inputs = nn.Parameter(0.1 * torch.randn(self.num_pseudo_inputs, *self.data_shape))

    def pseudo_inputs(self) -> Tensor:
        """The pseudo-inputs, ``(K, *data_shape)`` in [0, 1]."""
        return torch.sigmoid(self.raw_pseudo_inputs)

    def forward(self, y: Tensor | None = None) -> Distribution:
        """→ mixture of K posteriors, batch ``()``, event ``(D,)``; ``y`` is ignored."""
        q = self.encoder(self.pseudo_inputs())  # batch (K,), event (D,)
        raw = self.raw_pseudo_inputs
        weights = Categorical(logits=raw.new_zeros(self.num_pseudo_inputs), validate_args=False)
        return MixtureSameFamily(weights, q, validate_args=False)


class ConditionalNormal(nn.Module):
    """p(z | y) = N(μ_y, diag σ_y²): one learned Gaussian per class (initialised to N(0, I)).

    Args:
        num_classes: number of labels.
        latent_dim: D.
    """

    def __init__(self, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        self.num_classes = positive_int("num_classes", num_classes)
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.loc = nn.Parameter(torch.zeros(self.num_classes, self.latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(self.num_classes, self.latent_dim))

    def forward(self, y: Tensor | None = None) -> Distribution:
        """``y (B,)`` int64 → N(μ_y, diag σ_y²), batch ``(B,)``, event ``(D,)``."""
        if y is None:
            raise ValueError("expected a label tensor y of shape (B,) for ConditionalNormal, got None")
        return Independent(Normal(self.loc[y], self.log_scale[y].exp(), validate_args=False), 1, validate_args=False)
