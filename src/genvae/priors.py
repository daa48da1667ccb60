"""Priors p(z[ | y]) over a ``(D,)`` latent space.

Each prior is an ``nn.Module`` called as ``prior(y=None)`` that returns a ``torch.distributions``
object with event shape ``(D,)``. Unconditional priors accept ``y`` and ignore it (batch shape
``()``); [`ConditionalNormal`][genvae.priors.ConditionalNormal] needs it (batch shape ``(B,)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from ._checks import positive_int, shape_tuple
from .kl import StandardNormalDistribution, _factors
from .protocols import Encoder
from .registry import register

__all__ = ["ConditionalNormal", "LearnedNormal", "MixtureOfGaussians", "StandardNormal", "VampPrior"]


class _DiagonalGaussianMixture(MixtureSameFamily):
    """Σ_k π_k N(μ_k, diag σ_k²) whose ``log_prob`` is two matrix products instead of a broadcast.

    torch's ``MixtureSameFamily.log_prob`` evaluates every component at every point through a
    ``(*S, K, D)`` intermediate. Expanding the squares, Σ_d (z_d − μ_kd)² / σ_kd² is
    [z², z] · [1/σ_k², −2 μ_k/σ_k²] + Σ_d μ_kd²/σ_kd², one ``(*S, 2D) @ (2D, K)`` product with
    no ``(*S, K, D)`` intermediate, for the hundreds of components of a VampPrior. The expansion
    cancels large terms when σ is small, so it runs in float64 (float32 where the device has no
    float64) and outside autocast; the result is float32, or the value's dtype if wider.
    """

    def log_prob(self, value: Tensor) -> Tensor:
        normal = self.component_distribution.base_dist  # type: ignore[attr-defined]
        dtype = torch.float32 if value.device.type == "mps" else torch.float64
        with torch.autocast(value.device.type, enabled=False):
            loc, scale, z = normal.loc.to(dtype), normal.scale.to(dtype), value.to(dtype)  # (K, D), (K, D), (*S, D)
            precision = scale.pow(-2)
            weights = torch.cat([precision, -2 * loc * precision], dim=-1)  # (K, 2D)
            squares = torch.cat([z * z, z], dim=-1) @ weights.mT + (loc.square() * precision).sum(-1)  # (*S, K)
            log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)  # (K,)
            log_mix = torch.log_softmax(self.mixture_distribution.logits.to(dtype), dim=-1)  # (K,)
            log_p = torch.logsumexp(log_mix - log_norm - 0.5 * squares, dim=-1)  # (*S,)
        return log_p.to(torch.promote_types(value.dtype, torch.float32))


def _gaussian_mixture(logits: Tensor, components: Independent) -> MixtureSameFamily:
    """The mixture of the diagonal Gaussians ``components`` (batch ``(K,)``) with weights softmax(logits)."""
    weights = Categorical(logits=logits, validate_args=False)
    return _DiagonalGaussianMixture(weights, components, validate_args=False)


@register("prior", "standard")
class StandardNormal(nn.Module):
    """p(z) = N(0, I). Its KL against a Gaussian posterior is closed form and costs O(B·D)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.register_buffer("loc", torch.zeros(self.latent_dim), persistent=False)

    def forward(self, y: Tensor | None = None) -> Distribution:
        """→ N(0, I), batch ``()``, event ``(D,)``; ``y`` is ignored."""
        return StandardNormalDistribution(self.loc)


@register("prior", "learned")
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


@register("prior", "mog")
class MixtureOfGaussians(nn.Module):
    """p(z) = Σ_k π_k N(μ_k, diag σ_k²), all learned; means start spread as N(0, I) draws.

    The KL to a Gaussian posterior has no closed form: models estimate it by Monte Carlo.
    """

    def __init__(self, latent_dim: int, num_components: int = 10) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.num_components = positive_int("num_components", num_components)
        self.logits = nn.Parameter(torch.zeros(self.num_components))
        self.locs = nn.Parameter(torch.randn(self.num_components, self.latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(self.num_components, self.latent_dim))

    def forward(self, y: Tensor | None = None) -> Distribution:
        """→ mixture, batch ``()``, event ``(D,)``; ``y`` is ignored."""
        components = Independent(Normal(self.locs, self.log_scales.exp(), validate_args=False), 1)
        return _gaussian_mixture(self.logits, components)


def _vamp_prior(encoder: Encoder, data_shape: tuple[int, ...], num_pseudo_inputs: int = 500) -> VampPrior:
    """A VampPrior with the paper's K = 500 pseudo-inputs unless told otherwise."""
    return VampPrior(encoder, num_pseudo_inputs, data_shape)


@register("prior", "vamp", build=_vamp_prior, requires={"conditional": False})
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
        logits = self.raw_pseudo_inputs.new_zeros(self.num_pseudo_inputs)
        if type(_factors(q)) is Normal and q.batch_shape == logits.shape:  # diagonal Gaussians
            return _gaussian_mixture(logits, q)
        return MixtureSameFamily(Categorical(logits=logits, validate_args=False), q, validate_args=False)


@register("prior", "conditional", requires={"conditional": True})
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
