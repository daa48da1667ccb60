"""Observation models p(x | z): each maps decoder output to a ``torch.distributions`` object whose
event shape is the data shape, so ``log_prob(x)`` is per example, summed over pixels.

The likelihood is the choice of reconstruction loss: Bernoulli ↔ binary cross-entropy, Gaussian
with σ = 1 ↔ ½ · sum of squared errors (plus a constant). Each exposes ``support``, the
``torch.distributions.constraints`` object that data must satisfy; models check it on input, and
``param_shape(data_shape)``, the shape of the decoder output it expects per example.

For 8-bit images (stored as x = k/255) the discretized logistic likelihoods give the probability
*mass* of the observed value, so −log p(x|z) is a proper discrete NLL in nats and
bits/dim = nats / (D · ln 2) for D sub-pixels:
[`DiscretizedLogistic`][genvae.likelihoods.DiscretizedLogistic] (one logistic per sub-pixel) and
[`DiscretizedLogisticMixture`][genvae.likelihoods.DiscretizedLogisticMixture] (PixelCNN++'s
mixture, one per pixel).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli as _Bernoulli
from torch.distributions import Categorical, Distribution, Independent, constraints
from torch.distributions import ContinuousBernoulli as _ContinuousBernoulli
from torch.distributions import Normal as _Normal

from ._checks import positive_float, positive_int, shape_tuple
from .registry import register

__all__ = [
    "LOG_SCALE_MIN",
    "Bernoulli",
    "ContinuousBernoulli",
    "DiscretizedLogistic",
    "DiscretizedLogisticDistribution",
    "DiscretizedLogisticMixture",
    "DiscretizedLogisticMixtureDistribution",
    "Gaussian",
]


def _event_dims(value: object) -> int | None:
    return None if value is None else positive_int("event_dims", value)


def _known_event_dims(likelihood: nn.Module) -> int:
    """The likelihood's ``event_dims``, or an error that says how to set it."""
    dims = getattr(likelihood, "event_dims", None)
    if dims is None:
        raise ValueError(
            f"expected {type(likelihood).__name__} to know the data's number of dimensions: compose it into "
            "a VAE whose encoder or decoder declares data_shape, or pass event_dims="
        )
    return positive_int("event_dims", dims)


def _independent(base: Distribution, likelihood: nn.Module) -> Distribution:
    """``base`` with the likelihood's trailing ``event_dims`` dims as one event."""
    return Independent(base, _known_event_dims(likelihood), validate_args=False)


@register("likelihood", "bernoulli")
class Bernoulli(nn.Module):
    """Factorised Bernoulli from logits: ``log_prob`` is −BCE-with-logits summed over pixels.

    Accepts grayscale targets in [0, 1] (the "BCE on intensities" of the classic MNIST VAE); for a
    proper density on grayscale data use [`ContinuousBernoulli`][genvae.likelihoods.ContinuousBernoulli].

    Args:
        event_dims: number of trailing dims that form one example (3 for ``(C, H, W)`` images);
            by default the model sets it from its data shape.
    """

    support = constraints.unit_interval

    def __init__(self, *, event_dims: int | None = None) -> None:
        super().__init__()
        self.event_dims = _event_dims(event_dims)

    def param_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """One logit per pixel: the data shape itself."""
        return shape_tuple("data_shape", data_shape)

    def forward(self, params: Tensor) -> Distribution:
        """``params``: logits ``(*S, B, *data_shape)`` → distribution with that event shape."""
        # validate_args=False: targets may be grayscale in [0, 1]; support is checked by the model.
        base = _Bernoulli(logits=params, validate_args=False)
        return _independent(base, self)


@register("likelihood", "continuous-bernoulli")
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

    def param_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """One logit per pixel: the data shape itself."""
        return shape_tuple("data_shape", data_shape)

    def forward(self, params: Tensor) -> Distribution:
        """``params``: logits ``(*S, B, *data_shape)`` → distribution with that event shape."""
        base = _ContinuousBernoulli(logits=params, validate_args=False)
        return _independent(base, self)


def _gaussian(
    data_shape: tuple[int, ...],
    event_dims: int,
    sigma: float = 1.0,
    learn_sigma: Literal["none", "global", "pixel"] = "none",
) -> Gaussian:
    """A Gaussian likelihood whose σ is fixed, one learned σ, or one learned σ per pixel.

    Args:
        sigma: σ, or its initial value where it is learned.
        learn_sigma: ``"none"`` (fixed), ``"global"`` (one learned σ) or ``"pixel"`` (one per pixel).
    """
    shape = data_shape if learn_sigma == "pixel" else ()
    return Gaussian(sigma, learned=learn_sigma != "none", shape=shape, event_dims=event_dims)


@register("likelihood", "gaussian", build=_gaussian)
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
        shape: int | tuple[int, ...] = (),
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

    def param_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """One mean per pixel: the data shape itself."""
        return shape_tuple("data_shape", data_shape)

    def forward(self, params: Tensor) -> Distribution:
        """``params``: means ``(*S, B, *data_shape)`` → distribution with that event shape."""
        scale = self.scale().to(params.dtype).expand_as(params)
        return _independent(_Normal(params, scale, validate_args=False), self)


# ---------------------------------------------------------------- discretized logistics (8-bit images)

#: Floor of every logistic's log-scale, in the [−1, 1] coordinates (PixelCNN++'s −7,
#: https://arxiv.org/abs/1701.05517). It keeps 1/s finite and the gradients bounded when a decoder
#: drives a scale towards 0. The likelihood needs no floor to stay bounded (a mass is at most 1);
#: with 256 bins, a logistic at the floor puts 97% of its mass in the bin it is centred on.
LOG_SCALE_MIN = -7.0
"""The floor of a logistic's log-scale (PixelCNN++'s): see the comment above it in the source."""

#: Below this value of log d, log(1 − e^{−d}) is computed as log d − d/2: the rest of the series is
#: under d²/24 < 1e-18, and e^{log d} may underflow (from a scale of about e^83 in float32).
_SERIES_BELOW = -20.0


def _num_bins(value: object) -> int:
    n = positive_int("num_bins", value)
    if n < 2:
        raise ValueError(f"expected num_bins >= 2, got {n}")
    return n


def _float_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        kind = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(f"expected {name} to be a floating torch.Tensor, got {kind}")
    return value


def _sum_last(t: Tensor, n: int) -> Tensor:
    """``t`` summed over its last ``n`` dims (none for ``n = 0``)."""
    return t.flatten(-n).sum(-1) if n else t


def _bin_index(x: Tensor, num_bins: int) -> Tensor:
    """The bin k of each x in [0, 1], as a float: the nearest grid value k/(num_bins − 1)."""
    return (x * (num_bins - 1)).round().clamp(0, num_bins - 1)


def _centre(k: Tensor, num_bins: int) -> Tensor:
    """Bin k's centre in the [−1, 1] coordinates: (2k − (num_bins − 1)) / (num_bins − 1)."""
    return (2 * k - (num_bins - 1)) / (num_bins - 1)


def _log1mexp(log_d: Tensor) -> Tensor:
    """log(1 − e^{−d}) for d = e^{log_d} > 0: log(−expm1(−d)), within about an ulp of 1 for the d
    the floor allows (d ≤ 2h·e⁷), or the series log d − d/2 where d may underflow."""
    d = log_d.clamp(min=_SERIES_BELOW).exp()  # the series covers smaller d
    return torch.where(log_d < _SERIES_BELOW, log_d - log_d.exp() / 2, torch.log(-torch.expm1(-d)))


def _log_bin_mass(k: Tensor, loc: Tensor, log_scale: Tensor, num_bins: int) -> Tensor:
    """log P(bin k) under logistic(loc, s = e^{max(log_scale, LOG_SCALE_MIN)}) in [−1, 1] coordinates.

    Bin k spans its centre ± h, h = 1/(num_bins − 1); the first bin takes the lower tail, the last
    the upper one. With a = (centre + h − loc)/s and b = (centre − h − loc)/s, an inner bin's mass is
    σ(a) − σ(b) = σ(a) · σ(−b) · (1 − e^{−(a − b)}), a − b = 2h/s: a sum of log-sigmoids and a
    log1mexp, with no difference of CDFs. The log mass is thus accurate even where the mass itself
    underflows (deep in a tail), which PixelCNN++ patches with the density at the bin centre times
    the bin width. The first bin's mass is σ(a), the last's σ(−b). Shapes broadcast.
    """
    half = 1 / (num_bins - 1)
    log_scale = log_scale.clamp(min=LOG_SCALE_MIN)
    inv_scale = torch.exp(-log_scale)
    centred = _centre(k, num_bins) - loc
    upper = (centred + half) * inv_scale  # a
    lower = (centred - half) * inv_scale  # b
    first, last = k == 0, k == num_bins - 1
    zero = upper.new_zeros(())
    return (
        torch.where(last, zero, F.logsigmoid(upper))  # log P(X < upper edge)
        + torch.where(first, zero, F.logsigmoid(-lower))  # log P(X > lower edge)
        + torch.where(first | last, zero, _log1mexp(math.log(2 * half) - log_scale))
    )


def _discrete_mean(loc: Tensor, log_scale: Tensor, num_bins: int) -> Tensor:
    """E[x] in [0, 1] of the discretized logistic: E[k] = Σ_{j=1}^{K−1} P(k ≥ j), one sigmoid per edge."""
    inv_scale = torch.exp(-log_scale.clamp(min=LOG_SCALE_MIN))
    total = loc.new_zeros(torch.broadcast_shapes(loc.shape, inv_scale.shape))
    for j in range(1, num_bins):
        edge = (2 * j - num_bins) / (num_bins - 1)  # the lower edge of bin j
        total = total + torch.sigmoid((loc - edge) * inv_scale)
    return total / (num_bins - 1)


def _sample_bin(loc: Tensor, scale: Tensor, num_bins: int) -> Tensor:
    """Bins k (as floats) drawn by rounding draws of logistic(loc, scale) in [−1, 1] coordinates."""
    u = torch.rand(loc.shape, dtype=loc.dtype, device=loc.device)
    x = loc + scale * torch.logit(u)  # u = 0 gives −inf, which lands in bin 0
    return ((x + 1) * ((num_bins - 1) / 2)).round().clamp(0, num_bins - 1)


def _channel_loc(c: int, loc: Tensor, coeffs: Tensor, earlier: list[Tensor] | tuple[Tensor, ...], dim: int) -> Tensor:
    """Channel c's location, ``loc[c] + Σ_{j<c} coeffs[c(c − 1)/2 + j] · earlier[j]`` along ``dim``."""
    out = loc.select(dim, c)
    for j in range(c):
        out = out + coeffs.select(dim, c * (c - 1) // 2 + j) * earlier[j]
    return out


class DiscretizedLogisticDistribution(Distribution):
    """A logistic per element, discretized onto the grid x = k/(num_bins − 1) of [0, 1].

    In the [−1, 1] coordinates x' = 2x − 1 of PixelCNN++ (Salimans et al., 2017,
    https://arxiv.org/abs/1701.05517), bin k is centred on x'_k = 2k/(num_bins − 1) − 1, has
    half-width h = 1/(num_bins − 1) and holds the mass of logistic(loc, s) between its edges; the
    first and last bins take the tails, so the masses sum to 1. s = e^{max(log_scale, LOG_SCALE_MIN)}.

    ``log_prob(x)`` is the log mass of x's bin: x is snapped to the nearest grid value, and must lie
    in [0, 1] (checked under ``validate_args``). ``sample`` returns grid values; ``mean`` is the exact
    E[x] (off the grid in general). Batch shape: the broadcast shape of ``loc`` and ``log_scale``;
    event shape ``()`` (wrap it in ``Independent`` for images).

    Args:
        loc: μ in the [−1, 1] coordinates.
        log_scale: log s in the [−1, 1] coordinates.
        num_bins: number of grid values, 256 for 8-bit data.
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(
        self, loc: Tensor, log_scale: Tensor, *, num_bins: int = 256, validate_args: bool | None = None
    ) -> None:
        _float_tensor("loc", loc)
        _float_tensor("log_scale", log_scale)
        try:
            shape = torch.broadcast_shapes(loc.shape, log_scale.shape)
        except RuntimeError:
            raise ValueError(
                f"expected loc and log_scale of broadcastable shapes, got {tuple(loc.shape)} and "
                f"{tuple(log_scale.shape)}"
            ) from None
        self.loc, self.log_scale = loc.expand(shape), log_scale.expand(shape)
        self.num_bins = _num_bins(num_bins)
        super().__init__(shape, validate_args=validate_args)

    @property
    def scale(self) -> Tensor:
        """s, with the floor applied: the batch shape."""
        return self.log_scale.clamp(min=LOG_SCALE_MIN).exp()

    @property
    def mean(self) -> Tensor:
        """E[x] in [0, 1]: the batch shape."""
        return _discrete_mean(self.loc, self.log_scale, self.num_bins)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log mass of the bin of each ``value`` (broadcast against the batch shape), in nats."""
        if self._validate_args:
            self._validate_sample(value)
        return _log_bin_mass(_bin_index(value, self.num_bins), self.loc, self.log_scale, self.num_bins)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        """Grid values k/(num_bins − 1), ``sample_shape + batch_shape``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            k = _sample_bin(self.loc.expand(shape), self.scale.expand(shape), self.num_bins)
        return k / (self.num_bins - 1)


class DiscretizedLogisticMixtureDistribution(Distribution):
    """PixelCNN++'s discretized mixture of logistics over images of ``num_bins`` values per sub-pixel.

    Each pixel (all C channels together) is one mixture of M components, its weights shared by the
    channels. In component m, channel c is a discretized logistic (as
    [`DiscretizedLogisticDistribution`][genvae.likelihoods.DiscretizedLogisticDistribution]) with
    log-scale ``log_scale[m, c]`` and location

        loc[m, c] + Σ_{j<c} coeffs[m, c(c − 1)/2 + j] · x'_j,

    x'_j = 2x_j − 1 being the value of an earlier channel of the same pixel: for RGB,
    μ_G = m_G + c₀·x'_R and μ_B = m_B + c₁·x'_R + c₂·x'_G (Salimans et al., 2017, §2.2,
    https://arxiv.org/abs/1701.05517). ``log_prob`` sums the pixels' log-mixtures; ``sample`` draws a
    component per pixel, then the channels in order, each on the grid before the next uses it.

    ``mean`` is E[x] for the first channel and for every channel when the coefficients are zero.
    Otherwise a later channel's location uses the earlier channels' means within the component in
    place of their values: exact while the channel's mean is linear in its location, an approximation
    where the edge bins or the rounding to the grid bend it.

    Args:
        logits: ``(*batch, M, *spatial)`` unnormalised log mixture weights.
        loc: ``(*batch, M, C, *spatial)`` m in the [−1, 1] coordinates.
        log_scale: ``(*batch, M, C, *spatial)`` log s in the [−1, 1] coordinates.
        coeffs: ``(*batch, M, C(C − 1)/2, *spatial)`` channel coefficients, or None for none.
        event_dims: 1 + len(spatial): the event shape is ``(C, *spatial)`` (3 for images).
        num_bins: number of grid values per sub-pixel, 256 for 8-bit data.

    Batch dims of the arguments broadcast; ``log_prob(x)`` returns the batch shape.
    """

    arg_constraints = {
        "logits": constraints.real,
        "loc": constraints.real,
        "log_scale": constraints.real,
        "coeffs": constraints.real,
    }
    has_rsample = False

    def __init__(
        self,
        logits: Tensor,
        loc: Tensor,
        log_scale: Tensor,
        coeffs: Tensor | None = None,
        *,
        event_dims: int,
        num_bins: int = 256,
        validate_args: bool | None = None,
    ) -> None:
        e = self.event_dims = positive_int("event_dims", event_dims)
        self.num_bins = _num_bins(num_bins)
        if _float_tensor("loc", loc).dim() < e + 1:
            raise ValueError(
                f"expected loc of shape (*batch, M, C, *spatial) with {e - 1} spatial dims, got {tuple(loc.shape)}"
            )
        m, c, *spatial = loc.shape[-e - 1 :]
        self.num_components, self.num_channels = m, c
        if coeffs is None:
            coeffs = loc.new_zeros(*loc.shape[: -e - 1], m, c * (c - 1) // 2, *spatial)
        trailing = {
            "logits": (logits, (m, *spatial)),
            "loc": (loc, (m, c, *spatial)),
            "log_scale": (log_scale, (m, c, *spatial)),
            "coeffs": (coeffs, (m, c * (c - 1) // 2, *spatial)),
        }
        batches = []
        for name, (t, tail) in trailing.items():
            n = _float_tensor(name, t).dim() - len(tail)
            if n < 0 or tuple(t.shape[n:]) != tail:
                raise ValueError(
                    f"expected {name} of shape (*batch, {', '.join(map(str, tail))}) for loc of shape "
                    f"{tuple(loc.shape)} (M={m}, C={c}), got {tuple(t.shape)}"
                )
            batches.append(t.shape[:n])
        try:
            batch = torch.broadcast_shapes(*batches)
        except RuntimeError:
            shapes = ", ".join(f"{name} {tuple(b)}" for name, b in zip(trailing, batches))
            raise ValueError(f"expected broadcastable batch shapes, got {shapes}") from None
        self.logits, self.loc, self.log_scale, self.coeffs = (t.expand(*batch, *tail) for t, tail in trailing.values())
        super().__init__(batch, torch.Size((c, *spatial)), validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        """[0, 1] for every sub-pixel, the whole image as one event."""
        return constraints.independent(constraints.unit_interval, self.event_dims)

    def log_prob(self, value: Tensor) -> Tensor:
        """log p(x) for ``x (..., C, *spatial)`` in [0, 1], snapped to the grid: the batch shape."""
        if self._validate_args:
            self._validate_sample(value)
        e, c = self.event_dims, self.num_channels
        k = _bin_index(value, self.num_bins).unsqueeze(-e - 1)  # (..., 1, C, *spatial)
        centres = _centre(k, self.num_bins).unbind(-e)  # C × (..., 1, *spatial)
        locs = [_channel_loc(i, self.loc, self.coeffs, centres, -e) for i in range(c)]  # C × (..., M, *spatial)
        loc = torch.stack(torch.broadcast_tensors(*locs), -e)  # (..., M, C, *spatial)
        per_component = _log_bin_mass(k, loc, self.log_scale, self.num_bins).sum(-e)  # (..., M, *spatial)
        log_weights = self.logits.log_softmax(-e)  # (*batch, M, *spatial)
        per_pixel = torch.logsumexp(log_weights + per_component, dim=-e)  # (..., *spatial)
        return _sum_last(per_pixel, e - 1)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        """Grid values k/(num_bins − 1), ``sample_shape + batch_shape + (C, *spatial)``."""
        shape = torch.Size(sample_shape) + self.batch_shape
        e, c, spatial = self.event_dims, self.num_channels, self.event_shape[1:]
        with torch.no_grad():
            component = Categorical(logits=self.logits.movedim(-e, -1), validate_args=False).sample(
                sample_shape
            )  # (*shape, *spatial)
            index = component.reshape(*shape, 1, 1, *spatial)

            def pick(t: Tensor) -> Tensor:  # (*batch, M, X, *spatial) → (*shape, X, *spatial), the drawn m
                t = t.expand(*shape, *t.shape[-e - 1 :])
                return t.gather(-e - 1, index.expand(*shape, 1, t.shape[-e], *spatial)).squeeze(-e - 1)

            loc, coeffs = pick(self.loc), pick(self.coeffs)
            scale = pick(self.log_scale).clamp(min=LOG_SCALE_MIN).exp()
            bins: list[Tensor] = []
            centres: list[Tensor] = []
            for i in range(c):
                k = _sample_bin(_channel_loc(i, loc, coeffs, centres, -e), scale.select(-e, i), self.num_bins)
                bins.append(k)
                centres.append(_centre(k, self.num_bins))
        return torch.stack(bins, -e) / (self.num_bins - 1)

    @property
    def mean(self) -> Tensor:
        """``(*batch, C, *spatial)`` in [0, 1]: E[x], or its plug-in approximation (see above)."""
        e = self.event_dims
        means: list[Tensor] = []  # per channel, (*batch, M, *spatial)
        centres: list[Tensor] = []
        for i in range(self.num_channels):
            loc = _channel_loc(i, self.loc, self.coeffs, centres, -e)
            means.append(_discrete_mean(loc, self.log_scale.select(-e, i), self.num_bins))
            centres.append(2 * means[-1] - 1)
        weights = self.logits.softmax(-e)  # (*batch, M, *spatial)
        return torch.stack([(weights * m).sum(-e) for m in means], -e)


def _param_channels(likelihood: nn.Module, params: Tensor, event_dims: int) -> int:
    """The size of the parameters' channel dim, the first of the last ``event_dims``."""
    if params.dim() < event_dims:
        raise ValueError(
            f"expected params of shape (*S, B, P, ...) with {event_dims} event dims for "
            f"{type(likelihood).__name__}, got {tuple(params.shape)}"
        )
    return params.shape[-event_dims]


@register("likelihood", "discretized-logistic")
class DiscretizedLogistic(nn.Module):
    """A discretized logistic per sub-pixel, for 8-bit images stored as x = k/255 (Kingma et al.,
    2016, https://arxiv.org/abs/1606.04934; Salimans et al., 2017, https://arxiv.org/abs/1701.05517).

    ``log_prob`` is the log probability *mass* of the observed values (see
    [`DiscretizedLogisticDistribution`][genvae.likelihoods.DiscretizedLogisticDistribution]), so
    −log p(x|z) is a discrete NLL in nats. The parameters are in the [−1, 1] coordinates
    x' = 2x − 1, so a decoder output of 0 is mid-grey.

    Parameter layout: for data ``(C, *spatial)``, params ``(2C, *spatial)``: channels ``[0, C)``
    are the locations μ, ``[C, 2C)`` the log-scales (floored at [`LOG_SCALE_MIN`][genvae.likelihoods.LOG_SCALE_MIN]).

    Args:
        event_dims: number of trailing dims that form one example (3 for ``(C, H, W)`` images);
            by default the model sets it from its data shape.
        num_bins: number of values per sub-pixel, 256 for 8-bit data (grid k/(num_bins − 1)).
    """

    support = constraints.unit_interval

    def __init__(self, *, event_dims: int | None = None, num_bins: int = 256) -> None:
        super().__init__()
        self.event_dims = _event_dims(event_dims)
        self.num_bins = _num_bins(num_bins)

    def param_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(C, *spatial)`` → ``(2C, *spatial)``."""
        c, *spatial = shape_tuple("data_shape", data_shape)
        return (2 * c, *spatial)

    def forward(self, params: Tensor) -> Distribution:
        """``params (*S, B, 2C, *spatial)`` → distribution with event ``(C, *spatial)``."""
        e = _known_event_dims(self)
        p = _param_channels(self, params, e)
        if p % 2:
            raise ValueError(
                f"expected params with an even number of channels at dim {-e} (C locations, then C "
                f"log-scales), got {p} in shape {tuple(params.shape)}"
            )
        loc, log_scale = params.chunk(2, dim=-e)  # (*S, B, C, *spatial) each
        base = DiscretizedLogisticDistribution(loc, log_scale, num_bins=self.num_bins, validate_args=False)
        return Independent(base, e, validate_args=False)


def _block_size(channels: int) -> int:
    """Parameters per component and pixel: logit, C locations, C log-scales, C(C − 1)/2 coefficients."""
    return 1 + 2 * channels + channels * (channels - 1) // 2


@register("likelihood", "logistic-mixture")
class DiscretizedLogisticMixture(nn.Module):
    """PixelCNN++'s discretized mixture of logistics (Salimans et al., 2017,
    https://arxiv.org/abs/1701.05517), for 8-bit images stored as x = k/255.

    Each pixel is one mixture of ``num_components`` = M components over all its channels, with the
    later channels' locations shifted by the earlier channels' values (see
    [`DiscretizedLogisticMixtureDistribution`][genvae.likelihoods.DiscretizedLogisticMixtureDistribution]).
    ``log_prob`` is a log probability *mass*, so −log p(x|z) is a discrete NLL in nats.

    Parameter layout: for data ``(C, *spatial)``, params ``(M·Q, *spatial)`` with
    Q = 1 + 2C + C(C − 1)/2: component m owns channels ``[m·Q, (m + 1)·Q)``, in order its mixture
    logit, C locations, C log-scales and C(C − 1)/2 raw coefficients (coefficient = tanh(raw), for
    channel c on earlier channel j at c(c − 1)/2 + j). RGB: Q = 10, ``[logit, m_R, m_G, m_B,
    log s_R, log s_G, log s_B, c_GR, c_BR, c_BG]``; grayscale: Q = 3, no coefficients. Locations and
    scales are in the [−1, 1] coordinates x' = 2x − 1.

    Args:
        num_components: M, the number of logistics per pixel.
        event_dims: number of trailing dims that form one example (3 for ``(C, H, W)`` images);
            by default the model sets it from its data shape.
        num_bins: number of values per sub-pixel, 256 for 8-bit data (grid k/(num_bins − 1)).
    """

    support = constraints.unit_interval

    def __init__(self, num_components: int = 10, *, event_dims: int | None = None, num_bins: int = 256) -> None:
        super().__init__()
        self.num_components = positive_int("num_components", num_components)
        self.event_dims = _event_dims(event_dims)
        self.num_bins = _num_bins(num_bins)

    def param_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(C, *spatial)`` → ``(M · (1 + 2C + C(C − 1)/2), *spatial)``: ``(10M, H, W)`` for RGB."""
        c, *spatial = shape_tuple("data_shape", data_shape)
        return (self.num_components * _block_size(c), *spatial)

    def forward(self, params: Tensor) -> Distribution:
        """``params (*S, B, M·Q, *spatial)`` → distribution with event ``(C, *spatial)``."""
        e, m = _known_event_dims(self), self.num_components
        p = _param_channels(self, params, e)
        c = 1
        while m * _block_size(c) < p:
            c += 1
        if m * _block_size(c) != p:
            sizes = ", ".join(f"{m * _block_size(i)} for C={i}" for i in (1, 2, 3))
            raise ValueError(
                f"expected params with num_components·(1 + 2C + C(C − 1)/2) channels at dim {-e} ({sizes}), "
                f"got {p} in shape {tuple(params.shape)}"
            )
        blocks = params.unflatten(-e, (m, _block_size(c)))  # (*S, B, M, Q, *spatial)
        logit, loc, log_scale, raw = blocks.split([1, c, c, c * (c - 1) // 2], dim=-e)
        return DiscretizedLogisticMixtureDistribution(
            logit.squeeze(-e),
            loc,
            log_scale,
            torch.tanh(raw),
            event_dims=e,
            num_bins=self.num_bins,
            validate_args=False,
        )
