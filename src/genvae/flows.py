"""Flow posteriors: a Gaussian encoder's q₀(z₀ | x) pushed through invertible steps.

    q0 = encoder(x, y)                   Independent(Normal(μ, σ), 1), batch (B,), event (D,)
    h = context(x[, y]) or [μ, log σ]    (B, H), what the steps' parameters depend on
    z = f_T ∘ … ∘ f_1(z₀), z₀ ~ q0       (k, B, D)
    log q(z | x) = log q0(z₀) − Σ_t log |det ∂f_t / ∂z_{t−1}|

[`FlowEncoder`][genvae.flows.FlowEncoder] wraps any encoder that returns a diagonal Gaussian and
returns a [`FlowDistribution`][genvae.flows.FlowDistribution], a ``TransformedDistribution``
whose ``rsample`` pushes base draws through the steps. Each step is an ``nn.Module`` that, given
the context ``(B, H)``, returns a ``torch.distributions.transforms.Transform`` over ``(D,)``
events with an exact log-determinant ``(k, B)``:

| step | f(z) | reference |
| --- | --- | --- |
| ``IAF`` | σ ⊙ z + (1 − σ) ⊙ m, (m, s) = MADE(z) | Kingma et al. 2016, arXiv:1606.04934 |
| ``Planar`` | z + û tanh(wᵀz + b) | Rezende & Mohamed 2015, arXiv:1505.05770 |
| ``Householder`` | (I − 2 v vᵀ / ‖v‖²) z | Tomczak & Welling 2016, arXiv:1611.09630 |

Every transform keeps its last input and output (``cache_size=1``), so ``log_prob`` of the
tensor that ``rsample`` returned, which is what a model's KL and importance weights use, needs
no inverse. IAF and Householder steps also invert analytically, so their ``log_prob`` is exact at
any z; a planar step has no closed-form inverse, and ``log_prob`` at a z it did not draw raises
``NotImplementedError``.

The KL of a flow posterior to a prior has no closed form: models estimate it on their draws,
log q(z) − log p(z) (see [`kl_on_draws`][genvae.kl.kl_on_draws]). [`STL`][genvae.objectives.STL]
and [`DReG`][genvae.objectives.DReG] need q's parameters detached, and
[`FreeBits`][genvae.objectives.FreeBits] a KL per dimension, so they refuse a flow posterior;
[`ELBO`][genvae.objectives.ELBO] and [`IWAE`][genvae.objectives.IWAE] train it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, cast, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, TransformedDistribution, constraints
from torch.distributions.transforms import ComposeTransform, Transform

from ._checks import positive_int, shape_tuple
from .protocols import Encoder
from .registry import register

__all__ = ["FlowDistribution", "FlowEncoder", "FlowHead", "FlowStep", "Householder", "IAF", "Planar"]


@runtime_checkable
class FlowStep(Protocol):
    """One invertible step of a flow posterior: ``step(context)`` → a transform of ``(D,)`` events.

    Attributes:
        latent_dim: D.
        context_features: H, the width of the context the step's parameters are computed from;
            ``None`` for a step whose parameters are the same for every x.
    """

    latent_dim: int
    context_features: int | None

    def __call__(self, context: Tensor) -> Transform:
        """``context (B, H)`` → a bijective ``Transform`` whose parameters broadcast against
        ``(*S, B, D)`` draws and whose ``log_abs_det_jacobian`` returns ``(*S, B)``."""
        ...


# --------------------------------------------------------------------------- checks and helpers


def _optional_features(value: object) -> int | None:
    return None if value is None else positive_int("context_features", value)


def _finite_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected {name} to be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"expected {name} to be finite, got {value}")
    return float(value)


def _activation(value: object) -> type[nn.Module]:
    if not (isinstance(value, type) and issubclass(value, nn.Module)):
        raise TypeError(f"expected activation to be an nn.Module class such as nn.ELU, got {value!r}")
    return value


def _squared_norm(v: Tensor) -> Tensor:
    """‖v‖² over the last dim, kept, floored at the dtype's smallest normal number.

    The floor changes nothing for a vector whose squared norm is a normal float; for v = 0 it makes
    ``v / ‖v‖²`` zero instead of NaN (a Householder step becomes the identity, a planar step a
    translation, both with the log-determinant 0 they report).
    """
    return v.square().sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def _push(transform: Transform, z: Tensor) -> Tensor:
    """``transform(z)`` without touching its one-entry cache, which holds the posterior's draws."""
    if isinstance(transform, ComposeTransform):
        for part in transform.parts:
            z = _push(part, z)
        return z
    return transform._call(z)


class _Step(Transform):
    """A bijection of ``(D,)`` events that caches its last input and output (``cache_size=1``)."""

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self) -> None:
        super().__init__(cache_size=1)


# --------------------------------------------------------------------------- IAF


def _made_masks(latent_dim: int, hidden: tuple[int, ...]) -> list[Tensor]:
    """MADE's connectivity masks (Germain et al. 2015, https://arxiv.org/abs/1502.03509), ``(out, in)`` each.

    Input j has degree j (1…D); hidden units cycle through degrees 1…D−1 (0, no input, for D = 1);
    a unit sees the units of lower layers whose degree is at most its own, and output j of m and of
    s sees hidden units of degree below j, so output j depends on z_{<j} only.
    """
    d = latent_dim
    degrees = [torch.arange(1, d + 1)]
    for width in hidden:
        degrees.append(torch.arange(width) % max(1, d - 1) + min(1, d - 1))
    masks = [(after[:, None] >= before[None, :]).float() for before, after in zip(degrees[:-1], degrees[1:])]
    out = torch.arange(1, d + 1).repeat(2)  # (2D,): degrees of m, then of s
    masks.append((out[:, None] > degrees[-1][None, :]).float())
    return masks


def _iaf(latent_dim: int, context_features: int | None = None) -> IAF:
    """An IAF step whose MADE has one hidden layer of max(2D, 64) units."""
    return IAF(latent_dim, hidden=(max(2 * latent_dim, 64),), context_features=context_features)


@register("flow", "iaf", build=_iaf, provides={"factorised": False})
class IAF(nn.Module):
    """An inverse autoregressive flow step with the gated update of Kingma et al. 2016, §5.

    f(z) = σ ⊙ z + (1 − σ) ⊙ m with (m, s) = MADE(z, h) autoregressive in z (m_i and s_i depend on
    z_{<i} only) and σ = sigmoid(s), so log |det ∂f/∂z| = Σ_i log σ_i. The context h enters the
    first hidden layer (the paper's h, https://arxiv.org/abs/1606.04934). The bias of s starts at
    ``gate_bias`` so that σ starts near 1 and each step starts close to the identity (the paper's
    appendix). With ``reverse`` the step ends by reversing z's dimensions, so that successive IAF
    steps alternate their autoregressive order; the reversal has log-determinant 0.

    The inverse runs the MADE D times (each pass fixes one more dimension), so ``log_prob`` is exact
    at any z, not only at the flow's own draws.

    Args:
        latent_dim: D.
        hidden: widths of the MADE's hidden layers.
        context_features: H, the width of the context; ``None`` for a step that ignores it.
        activation: nonlinearity class between layers (the paper uses ELU).
        gate_bias: initial bias of s; sigmoid(2) ≈ 0.88.
        reverse: reverse the dimensions after the update.
    """

    def __init__(
        self,
        latent_dim: int,
        *,
        hidden: int | Sequence[int] = (64,),
        context_features: int | None = None,
        activation: type[nn.Module] = nn.ELU,
        gate_bias: float = 2.0,
        reverse: bool = True,
    ) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.hidden = shape_tuple("hidden", hidden)
        self.context_features = _optional_features(context_features)
        self.activation = _activation(activation)
        self.gate_bias = _finite_float("gate_bias", gate_bias)
        if not isinstance(reverse, bool):
            raise TypeError(f"expected reverse to be a bool, got {type(reverse).__name__} {reverse!r}")
        self.reverse = reverse
        d = self.latent_dim
        sizes = (d, *self.hidden, 2 * d)
        layers = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        with torch.no_grad():
            layers[-1].bias[d:].fill_(self.gate_bias)
        self.layers = nn.ModuleList(layers)
        for i, mask in enumerate(_made_masks(d, self.hidden)):
            self.register_buffer(f"mask{i}", mask, persistent=False)  # derived from the sizes: not stored
        self.context_layer = None if self.context_features is None else nn.Linear(self.context_features, self.hidden[0])
        self.nonlinearity = self.activation()

    def made(self, z: Tensor, context_hidden: Tensor | None) -> tuple[Tensor, Tensor]:
        """``z (*S, B, D)`` and the context's share of the first layer ``(B, hidden[0])`` → m, s ``(*S, B, D)``."""
        h = z
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            linear = cast(nn.Linear, layer)
            h = F.linear(h, linear.weight * getattr(self, f"mask{i}"), linear.bias)
            if i == 0 and context_hidden is not None:
                h = h + context_hidden  # (*S, B, hidden[0])
            if i < last:
                h = self.nonlinearity(h)
        m, s = h.chunk(2, dim=-1)  # (*S, B, D) each
        return m, s

    def forward(self, context: Tensor) -> Transform:
        """``context (B, H)`` → the step's transform for this batch."""
        context_hidden = None if self.context_layer is None else self.context_layer(context)  # (B, hidden[0])
        return _IAFTransform(self, context_hidden)


class _IAFTransform(_Step):
    def __init__(self, step: IAF, context_hidden: Tensor | None) -> None:
        super().__init__()
        self.step, self.context_hidden = step, context_hidden
        self._log_det: tuple[Tensor, Tensor] | None = None  # (input, Σ log σ) of the last forward call

    def _call(self, x: Tensor) -> Tensor:
        m, s = self.step.made(x, self.context_hidden)
        gate = torch.sigmoid(s)
        y = gate * x + (1 - gate) * m
        self._log_det = (x, F.logsigmoid(s).sum(-1))
        return y.flip(-1) if self.step.reverse else y

    def _inverse(self, y: Tensor) -> Tensor:
        y = y.flip(-1) if self.step.reverse else y
        x = torch.zeros_like(y)
        for _ in range(self.step.latent_dim):  # pass i makes x_i exact: it depends on x_{<i} only
            m, s = self.step.made(x, self.context_hidden)
            gate = torch.sigmoid(s)
            x = (y - (1 - gate) * m) / gate
        return x

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        if self._log_det is not None and self._log_det[0] is x:
            return self._log_det[1]
        _, s = self.step.made(x, self.context_hidden)
        return F.logsigmoid(s).sum(-1)


# --------------------------------------------------------------------------- planar


@register("flow", "planar", provides={"factorised": False})
class Planar(nn.Module):
    """A planar step f(z) = z + û tanh(wᵀz + b) (Rezende & Mohamed 2015, https://arxiv.org/abs/1505.05770).

    û = u + (softplus(wᵀu) − 1 − wᵀu) w / ‖w‖² (their appendix A.1) makes wᵀû > −1, so f is
    invertible and log |det ∂f/∂z| = log(1 + tanh′(wᵀz + b) wᵀû) is finite. f has no closed-form
    inverse: a flow with a planar step gives ``log_prob`` only of its own draws.

    Args:
        latent_dim: D.
        context_features: H; u, w and b are a linear function of the context. ``None``: they are
            parameters, the same for every x.
    """

    def __init__(self, latent_dim: int, *, context_features: int | None = None) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.context_features = _optional_features(context_features)
        d = self.latent_dim
        self.params: nn.Parameter | nn.Linear
        if self.context_features is None:
            self.params = nn.Parameter(0.1 * torch.randn(2 * d + 1))  # (2D + 1,): u, w, b
        else:
            self.params = nn.Linear(self.context_features, 2 * d + 1)

    def forward(self, context: Tensor) -> Transform:
        """``context (B, H)`` → the step's transform for this batch."""
        p = self.params if isinstance(self.params, Tensor) else self.params(context)  # (B, 2D + 1) or (2D + 1,)
        d = self.latent_dim
        u, w, b = p[..., :d], p[..., d : 2 * d], p[..., 2 * d :]  # (…, D), (…, D), (…, 1)
        wu = (w * u).sum(-1, keepdim=True)  # (…, 1)
        u_hat = u + (F.softplus(wu) - 1 - wu) * w / _squared_norm(w)  # (…, D)
        return _PlanarTransform(u_hat, w, b)


class _PlanarTransform(_Step):
    def __init__(self, u_hat: Tensor, w: Tensor, b: Tensor) -> None:
        super().__init__()
        self.u_hat, self.w, self.b = u_hat, w, b
        self.w_u_hat = (w * u_hat).sum(-1)  # (…,), > −1

    def _call(self, x: Tensor) -> Tensor:
        a = (self.w * x).sum(-1, keepdim=True) + self.b  # (*S, B, 1)
        return x + self.u_hat * torch.tanh(a)

    def _inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError(
            "a planar step has no closed-form inverse: the flow's log_prob is exact only for the tensor its "
            "rsample returned; use IAF or Householder steps for log_prob at other points"
        )

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        a = (self.w * x).sum(-1) + self.b.squeeze(-1)  # (*S, B)
        return torch.log1p((1 - torch.tanh(a).square()) * self.w_u_hat)


# --------------------------------------------------------------------------- Householder


@register("flow", "householder", provides={"factorised": False})
class Householder(nn.Module):
    """A Householder reflection f(z) = (I − 2 v vᵀ / ‖v‖²) z, volume preserving (log |det| = 0).

    Tomczak & Welling 2016, https://arxiv.org/abs/1611.09630: a few reflections turn the diagonal
    base posterior into a Gaussian with a full covariance. A reflection is its own inverse.

    Args:
        latent_dim: D.
        context_features: H; v is a linear function of the context. ``None``: v is a parameter,
            the same for every x.
    """

    def __init__(self, latent_dim: int, *, context_features: int | None = None) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.context_features = _optional_features(context_features)
        d = self.latent_dim
        self.v = nn.Parameter(torch.randn(d)) if self.context_features is None else nn.Linear(self.context_features, d)

    def forward(self, context: Tensor) -> Transform:
        """``context (B, H)`` → the step's transform for this batch."""
        v = self.v if isinstance(self.v, Tensor) else self.v(context)  # (B, D) or (D,)
        return _HouseholderTransform(v)


class _HouseholderTransform(_Step):
    def __init__(self, v: Tensor) -> None:
        super().__init__()
        self.v = v
        self.scaled = 2 * v / _squared_norm(v)  # (…, D): 2v / ‖v‖²

    def _call(self, x: Tensor) -> Tensor:
        return x - self.scaled * (self.v * x).sum(-1, keepdim=True)

    def _inverse(self, y: Tensor) -> Tensor:
        return self._call(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(torch.broadcast_shapes(x.shape, self.v.shape)[:-1])


# --------------------------------------------------------------------------- the posterior


class FlowDistribution(TransformedDistribution):
    """q(z | x): a diagonal Gaussian base pushed through a flow; batch ``(B,)``, event ``(D,)``.

    ``rsample`` and ``log_prob`` are ``TransformedDistribution``'s: ``log_prob`` of the tensor
    ``rsample`` returned is exact and reads the transforms' caches; elsewhere it inverts the steps.

    Args:
        base_distribution: q₀, ``Independent(Normal(μ, σ), 1)``.
        transforms: the flow's steps, applied in order.
    """

    def __init__(self, base_distribution: Distribution, transforms: Sequence[Transform]) -> None:
        super().__init__(base_distribution, list(transforms), validate_args=False)

    @property
    def mean(self) -> Tensor:
        """``(B, D)``: the flow's image f(μ) of the base mean μ, a point in the posterior's bulk.

        Deterministic, and exact for a flow of Householder steps (an orthogonal map of a Gaussian),
        but not E_q[z] for a nonlinear flow. [`VAE.reconstruct`][genvae.models.VAE.reconstruct] and
        [`VAE.interpolate`][genvae.models.VAE.interpolate] decode it. The transforms' caches, which hold
        the draws, are left as they were.
        """
        z = self.base_dist.mean
        for transform in self.transforms:
            z = _push(transform, z)
        return z


def _gaussian_base(q: object, latent_dim: int, owner: str) -> Independent:
    """``q`` if it is ``Independent(Normal, 1)`` over ``(latent_dim,)``, else a ValueError naming what came."""
    if not (isinstance(q, Independent) and q.reinterpreted_batch_ndims == 1 and isinstance(q.base_dist, Normal)):
        if isinstance(q, Independent):
            got = f"Independent({type(q.base_dist).__name__}, {q.reinterpreted_batch_ndims})"
        else:
            got = type(q).__name__
        raise ValueError(f"expected a Gaussian base posterior Independent(Normal(…), 1) for a flow, got {got}")
    if tuple(q.event_shape) != (latent_dim,):
        raise ValueError(
            f"expected the {owner} posterior over ({latent_dim},) (latent_dim), got event shape {tuple(q.event_shape)}"
        )
    return q


@register("block", "flow-encoder")
class FlowEncoder(nn.Module):
    """An [`Encoder`][genvae.protocols.Encoder] that turns a Gaussian encoder's posterior into a flow.

    ``FlowEncoder(MLPEncoder(shape, D), (IAF(D, context_features=2 * D), IAF(D, context_features=2 * D)))``
    is an encoder: ``VAE(FlowEncoder(...), decoder, likelihood, prior)`` trains it with
    [`ELBO`][genvae.objectives.ELBO] or [`IWAE`][genvae.objectives.IWAE].

    The steps' parameters depend on x through a context ``h (B, H)``. By default it is the base
    posterior's parameters [μ, log σ] (H = 2D), which every Gaussian encoder provides without
    change; a ``context`` module gives a richer one, such as the extra output h of Kingma et al.
    2016 (https://arxiv.org/abs/1606.04934). Steps with ``context_features=None`` ignore it.

    Args:
        encoder: x[, y] → ``Independent(Normal(μ, σ), 1)``, batch ``(B,)``, event ``(D,)``.
        flows: the steps ([`FlowStep`][genvae.flows.FlowStep]), applied in order; at least one.
        context: ``x (B, *data_shape)`` → ``(B, H)``, called as ``context(x)``, or
            ``context(x, y)`` where a label is given; ``None`` for [μ, log σ].

    Attributes:
        latent_dim: D, the encoder's (or the steps').
        data_shape, num_classes: the encoder's, where it declares them.
    """

    def __init__(self, encoder: Encoder, flows: Sequence[nn.Module], *, context: nn.Module | None = None) -> None:
        super().__init__()
        if not callable(encoder):
            raise TypeError(f"expected encoder to be callable (an Encoder), got {type(encoder).__name__}")
        if context is not None and not callable(context):
            raise TypeError(f"expected context to be callable (an nn.Module) or None, got {type(context).__name__}")
        declared = getattr(encoder, "latent_dim", None)
        hint = "; or pass a context module" if context is None else None
        self.latent_dim = _check_steps(flows, declared, "encoder's latent_dim", moments_hint=hint)
        self.encoder = encoder
        self.steps = nn.ModuleList(flows)
        self.context = context
        self.data_shape = getattr(encoder, "data_shape", None)
        self.num_classes = getattr(encoder, "num_classes", None)

    @property
    def flows(self) -> tuple[nn.Module, ...]:
        """The steps, as given (held in the ``nn.ModuleList`` ``steps``)."""
        return tuple(self.steps)

    def forward(self, x: Tensor, y: Tensor | None = None) -> FlowDistribution:
        """``x (B, *data_shape)``, ``y (B,)`` → q(z | x[, y]), batch ``(B,)``, event ``(D,)``."""
        base = _gaussian_base(self.encoder(x, y), self.latent_dim, "encoder's")
        h = _moments(base) if self.context is None else self.context(x) if y is None else self.context(x, y)  # (B, H)
        return _through(base, h, self.steps)


def _moments(base: Independent) -> Tensor:
    """``(*batch, 2D)``: the base posterior's [μ, log σ], the default context of the steps."""
    normal = base.base_dist
    return torch.cat([normal.loc, normal.scale.log()], dim=-1)


def _through(base: Independent, h: Tensor, steps: Sequence[nn.Module]) -> FlowDistribution:
    """``base`` pushed through each step's transform for the context ``h (*batch, H)``."""
    transforms = []
    for i, step in enumerate(steps):
        features = getattr(step, "context_features", None)
        if features is not None and (h.dim() != len(base.batch_shape) + 1 or h.shape[-1] != features):
            shape = ", ".join(("B",) * len(base.batch_shape) + (str(features),))
            raise ValueError(f"expected a context of shape ({shape}) for flows[{i}], got {tuple(h.shape)}")
        transform = step(h)
        if not isinstance(transform, Transform):
            raise TypeError(f"expected flows[{i}] to return a Transform, got {type(transform).__name__}")
        transforms.append(transform)
    return FlowDistribution(base, transforms)


def _check_steps(flows: object, latent_dim: int | None, source: str, *, moments_hint: str | None) -> int:
    """Flow steps as given to a flow part: a non-empty sequence of modules over one latent size
    (``latent_dim``, else the first step's); returns that size. Unless ``moments_hint`` is None (the
    part has a context of its own), each step's ``context_features`` must fit [μ, log σ]."""
    if isinstance(flows, nn.Module) or not isinstance(flows, Sequence):
        raise TypeError(f"expected flows to be a tuple or list of flow steps, got {type(flows).__name__}")
    if len(flows) == 0:
        raise ValueError("expected flows to hold at least one flow step, got an empty sequence")
    dims = [getattr(step, "latent_dim", None) for step in flows]
    for i, (step, dim) in enumerate(zip(flows, dims)):
        if not isinstance(step, nn.Module) or dim is None:
            raise TypeError(
                f"expected flows[{i}] to be a flow step (an nn.Module with latent_dim), got {type(step).__name__}"
            )
    d = positive_int("latent_dim", latent_dim if latent_dim is not None else dims[0])
    for i, dim in enumerate(dims):
        if dim != d:
            where = source if latent_dim is not None else "flows[0].latent_dim"
            raise ValueError(
                f"expected every flow step's latent_dim to be the {where}={d}, got flows[{i}].latent_dim={dim}"
            )
        features = getattr(flows[i], "context_features", None)
        if moments_hint is not None and features is not None and features != 2 * d:
            raise ValueError(
                f"expected flows[{i}].context_features to be 2 * latent_dim = {2 * d} (the default context "
                f"[μ, log σ]) or None, got {features}{moments_hint}"
            )
    return d


@register("block", "flow-head")
class FlowHead(nn.Module):
    """A posterior head made a flow: features → a Gaussian head's posterior pushed through flow steps.

    The head of one layer of a hierarchy ([`genvae.hierarchy`][genvae.hierarchy]), as
    [`FlowEncoder`][genvae.flows.FlowEncoder] is the encoder of a one-layer model:
    ``FlowHead(GaussianHead(F, D), [IAF(D, context_features=2 * D)])`` maps features
    ``(*S, B, F)`` to a [`FlowDistribution`][genvae.flows.FlowDistribution] with batch
    ``(*S, B)`` and event ``(D,)``. The steps' context is the base's [μ, log σ] (H = 2D), so each
    step depends on whatever the head sees: x and, top-down, the layers above.
    [`mlp_hierarchy`][genvae.hierarchy.mlp_hierarchy] and
    [`conv_hierarchy`][genvae.hierarchy.conv_hierarchy] build these heads with ``flow=``.

    Args:
        head: features ``(*S, B, F)`` → ``Independent(Normal(μ, σ), 1)``, event ``(D,)``.
        flows: the steps, applied in order; at least one, each with ``context_features`` 2D or
            ``None``.

    Attributes:
        in_features: F, the head's, where it declares it.
        latent_dim: D, the head's (or the steps').
    """

    def __init__(self, head: nn.Module, flows: Sequence[nn.Module]) -> None:
        super().__init__()
        if not callable(head):
            raise TypeError(f"expected head to be callable (an nn.Module), got {type(head).__name__}")
        self.latent_dim = _check_steps(flows, getattr(head, "latent_dim", None), "head's latent_dim", moments_hint="")
        self.head = head
        self.steps = nn.ModuleList(flows)
        self.in_features = getattr(head, "in_features", None)

    @property
    def flows(self) -> tuple[nn.Module, ...]:
        """The steps, as given (held in the ``nn.ModuleList`` ``steps``)."""
        return tuple(self.steps)

    def forward(self, h: Tensor) -> FlowDistribution:
        """``h (*S, B, F)`` → q(z | ·), batch ``(*S, B)``, event ``(D,)``."""
        base = _gaussian_base(self.head(h), self.latent_dim, "head's")
        return _through(base, _moments(base), self.steps)
