"""One stochastic layer of a hierarchy: a cell that owns the layer's parts and both of its paths.

As VDVAE's decoder block (Child 2021, https://arxiv.org/abs/2011.10650), a cell holds its
posterior head, its prior head and the projection of its code back into the top-down path:

    h_l = cell.up(h_{l−1})                    its share of the bottom-up pass (top-down route)
    q(z_l | x, z_{>l}) = cell.infer(h_l, t_l)  posterior head on h_l ‖ t_l (h_l alone at the top)
    p(z_l | z_{l+1}) = cell.generate(t_l)      prior head (None at the top: the model's prior)
    t_{l−1} = cell.project(z_l)                the features the layer below reads

[`GaussianCell`][genvae.hierarchy.GaussianCell] is a layer of D latents, event ``(D,)``;
[`SpatialCell`][genvae.hierarchy.SpatialCell] a latent map, event ``(C, H, W)``, whose h and t
are maps joined along the channels, as in NVAE (https://arxiv.org/abs/2007.03898).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, constraints

from ..registry import register

__all__ = ["GaussianCell", "KLOnDraws", "SpatialCell"]


def _parts(name: str, value: object) -> tuple[nn.Module, ...]:
    """``value`` as a tuple of callable parts, else raise."""
    if isinstance(value, nn.Module) or not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(f"expected {name} to be a sequence of modules, got {type(value).__name__}")
    for i, part in enumerate(value):
        if not callable(part):
            raise TypeError(f"expected {name}[{i}] to be callable (an nn.Module), got {type(part).__name__}")
    return tuple(value)


def _size(part: object, attribute: str) -> int | None:
    """The size a part declares as ``attribute`` (``latent_dim``, ``in_features``…), else None."""
    value = getattr(part, attribute, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _agree(what: str, expected: int | None, got: int | None, why: str) -> None:
    """Raise unless the two declared sizes agree (an undeclared one is checked at the first call)."""
    if expected is not None and got is not None and expected != got:
        raise ValueError(f"expected {what} to be {expected} ({why}), got {got}")


def _merge(h: Tensor, t: Tensor, event_dims: int = 1) -> Tensor:
    """``h (B, *F)`` beside ``t (*S, B, *T)`` along the first event dim (the features of a vector,
    the channels of a map): ``(*S, B, F + T)`` or ``(*S, B, C_h + C_t, H, W)``."""
    lead = t.shape[: t.dim() - event_dims]
    return torch.cat([h.expand(*lead, *h.shape[1:]), t], dim=-event_dims)


_Shape = torch.Size | list[int] | tuple[int, ...]
_SCALAR = torch.Size()  # the sample shape of one draw


class KLOnDraws(Distribution):
    """``base`` under another type, for which no closed-form KL is registered.

    In bottom-up inference the prior of a lower layer, p(z_l | z_{l+1}), is conditioned on z_{l+1},
    which was drawn from q(z_{l+1} | z_l) after z_l and depends on it. The closed form
    KL(q(z_l | ·) ‖ p(z_l | z_{l+1})) integrates over z_l as if z_{l+1} did not, so the ELBO it
    gives is biased. Wrapped in this type, the layer's KL is log q(z_l) − log p(z_l | z_{l+1}) at
    the draws instead ([`kl_on_draws`][genvae.kl.kl_on_draws],
    [`kl_per_dim`][genvae.kl.kl_per_dim]), which is unbiased. Every other member is ``base``'s.

    Args:
        base: the distribution, batch ``(*batch,)``, event ``(*event,)``.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}

    def __init__(self, base: Distribution) -> None:
        self.base = base
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self) -> constraints.Constraint | None:  # type: ignore[override]
        return self.base.support

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base.has_rsample

    @property
    def mean(self) -> Tensor:
        return self.base.mean

    @property
    def mode(self) -> Tensor:
        return self.base.mode

    @property
    def variance(self) -> Tensor:
        return self.base.variance

    def rsample(self, sample_shape: _Shape = _SCALAR) -> Tensor:
        return self.base.rsample(torch.Size(sample_shape))

    def sample(self, sample_shape: _Shape = _SCALAR) -> Tensor:
        return self.base.sample(torch.Size(sample_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(value)

    def entropy(self) -> Tensor:
        return self.base.entropy()

    def expand(self, batch_shape: _Shape, _instance: object = None) -> KLOnDraws:
        return KLOnDraws(self.base.expand(torch.Size(batch_shape)))


def _kl_on_draws(p: Distribution) -> Distribution:
    """``p`` with its KL taken on the draws, kept factorised (``Independent``) where it was, for
    [`FreeBits`][genvae.objectives.FreeBits]."""
    if isinstance(p, Independent):
        return Independent(KLOnDraws(p.base_dist), p.reinterpreted_batch_ndims, validate_args=False)
    return KLOnDraws(p)


def _cell_parts(
    up: nn.Module,
    posterior: nn.Module,
    prior_head: nn.Module | None,
    down: nn.Module | None,
    *,
    size: str,
    projected: str,
) -> tuple[nn.Module, nn.Module, nn.Module | None, nn.Module | None]:
    """The four parts of a cell, each callable (the prior head and the projection may be None),
    whose declared sizes agree: the prior head's ``size`` and the projection's ``projected`` are the
    posterior's ``size`` (``latent_dim`` and ``in_features`` of a vector layer)."""
    for name, part in (("up", up), ("posterior", posterior), ("prior_head", prior_head), ("down", down)):
        if part is not None and not callable(part) or part is None and name in ("up", "posterior"):
            raise TypeError(f"expected {name} to be callable (an nn.Module), got {type(part).__name__}")
    declared = _size(posterior, size)
    _agree(f"prior_head.{size}", declared, _size(prior_head, size), f"posterior.{size}")
    _agree(f"down.{projected}", declared, _size(down, projected), f"posterior.{size}")
    return up, posterior, prior_head, down


def _generate(cell: nn.Module, t: Tensor) -> Distribution:
    if cell.prior_head is None:
        raise ValueError("expected a cell below the top (with a prior_head), got the top cell")
    return cell.prior_head(t)


def _project(cell: nn.Module, z: Tensor) -> Tensor:
    if cell.down is None:
        raise ValueError("expected a cell above the bottom (with a down projection), got the bottom cell")
    return cell.down(z)


@register("layer", "gaussian")
class GaussianCell(nn.Module):
    """A stochastic layer of D latents: its block up, its posterior and prior heads, its projection down.

    Args:
        up: the inference network's block under this layer: ``x[, y] → h_1`` for the bottom layer;
            above it ``h_{l−1} → h_l`` (top-down route) or ``z_{l−1} → features`` (bottom-up).
        posterior: features ``(*S, B, F)`` → q(z_l | …), event ``(D,)``: a
            [`GaussianHead`][genvae.hierarchy.GaussianHead], or a
            [`FlowHead`][genvae.flows.FlowHead]. Top-down, below the top, it reads h_l ‖ t_l.
        prior_head: t_l ``(*S, B, T)`` → p(z_l | z_{l+1}); None at the top, whose prior is the model's.
        down: z_l ``(*S, B, D)`` → t_{l−1} ``(*S, B, T)``, this layer's projection into the top-down
            path; None at the bottom, whose code the decoder reads.

    Raises:
        ValueError: declared sizes that disagree (the prior head's or the projection's latent size).
    """

    event_dims = 1

    def __init__(
        self,
        up: nn.Module,
        posterior: nn.Module,
        *,
        prior_head: nn.Module | None = None,
        down: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.up, self.posterior, self.prior_head, self.down = _cell_parts(
            up, posterior, prior_head, down, size="latent_dim", projected="in_features"
        )

    @property
    def latent_shape(self) -> tuple[int, ...] | None:
        """``(D,)``, where the posterior head declares D."""
        d = _size(self.posterior, "latent_dim")
        return None if d is None else (d,)

    def infer(self, h: Tensor, t: Tensor | None = None) -> Distribution:
        """q(z_l | h_l[, t_l]): ``h (B, F)`` or ``(*S, B, F)``, ``t (*S, B, T)`` → batch ``(*S, B)``, event ``(D,)``."""
        return self.posterior(h if t is None else _merge(h, t))

    def generate(self, t: Tensor) -> Distribution:
        """p(z_l | z_{l+1}) from ``t (*S, B, T)``: batch ``(*S, B)``, event ``(D,)``."""
        return _generate(self, t)

    def project(self, z: Tensor) -> Tensor:
        """t_{l−1} for the layer below: ``z (*S, B, D)`` → ``(*S, B, T)``."""
        return _project(self, z)


@register("layer", "spatial")
class SpatialCell(nn.Module):
    """A stochastic layer whose latent is a map, event ``(C, H, W)``, with convolutional heads.

    As [`GaussianCell`][genvae.hierarchy.GaussianCell], for maps: the features h and t are
    ``(*S, B, channels, H, W)``, joined along the channels for the posterior (NVAE,
    https://arxiv.org/abs/2007.03898; VDVAE, https://arxiv.org/abs/2011.10650).

    Args:
        up: the inference network's block under this layer (a [`ConvTrunk`][genvae.hierarchy.ConvTrunk]
            at the bottom, a [`ConvStage`][genvae.hierarchy.ConvStage] above).
        posterior: a map → q(z_l | …), event ``(C, H, W)``, e.g. a
            [`ConvGaussianHead`][genvae.hierarchy.ConvGaussianHead]; below the top (top-down route)
            it reads h_l ‖ t_l.
        prior_head: t_l → p(z_l | z_{l+1}) over the same map; None at the top.
        down: z_l → t_{l−1}; None at the bottom, whose code the decoder reads.

    Raises:
        ValueError: declared channels that disagree.
    """

    event_dims = 3

    def __init__(
        self,
        up: nn.Module,
        posterior: nn.Module,
        *,
        prior_head: nn.Module | None = None,
        down: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.up, self.posterior, self.prior_head, self.down = _cell_parts(
            up, posterior, prior_head, down, size="latent_channels", projected="in_channels"
        )

    @property
    def latent_shape(self) -> tuple[int, ...] | None:
        """``(C, H, W)``: known from the first call (the heads declare C only)."""
        return None

    def infer(self, h: Tensor, t: Tensor | None = None) -> Distribution:
        """q(z_l | h_l[, t_l]): maps ``h (B, C_h, H, W)``, ``t (*S, B, C_t, H, W)`` → batch ``(*S, B)``,
        event ``(C, H, W)``."""
        return self.posterior(h if t is None else _merge(h, t, 3))

    def generate(self, t: Tensor) -> Distribution:
        """p(z_l | z_{l+1}) from a map ``t (*S, B, C_t, H, W)``: batch ``(*S, B)``, event ``(C, H, W)``."""
        return _generate(self, t)

    def project(self, z: Tensor) -> Tensor:
        """t_{l−1} for the layer below: ``z (*S, B, C, H, W)`` → ``(*S, B, C_t, H', W')``."""
        return _project(self, z)
