"""Hierarchical VAEs: L stochastic layers, inferred top-down (Ladder VAE, NVAE) or bottom-up (IWAE).

Layers are numbered from the data up, z_1 … z_L; parts are listed bottom first, and the indices
below count from 1 as the layers do (``up[0]`` in Python is up[1] here). The generative model is
the same for both routes:

    z_L ~ p(z_L | y)                           the model's Prior part (any genvae prior)
    t_l = down[l](z_{l+1})                     deterministic top-down features, l = L−1 … 1
    z_l ~ p(z_l | z_{l+1}) = priors[l](t_l)
    x ~ p(x | z_1) = likelihood(decoder(z_1, y))

Top-down inference (``LadderEncoder(..., top_down=True)``, Sønderby et al. 2016,
https://arxiv.org/abs/1602.02282; Vahdat & Kautz 2020, https://arxiv.org/abs/2007.03898) makes
one deterministic pass up the data and then draws from the top, sharing t_l with the prior:

    h_1 = up[1](x[, y]),  h_l = up[l](h_{l−1})
    q(z_L | x) = heads[L](h_L)
    q(z_l | x, z_{>l}) = heads[l](h_l ‖ t_l)

Bottom-up inference (``top_down=False``, the two-layer model of Burda et al. 2015,
https://arxiv.org/abs/1509.00519) draws from the bottom:

    q(z_1 | x) = heads[1](up[1](x[, y])),  q(z_l | z_{l−1}) = heads[l](up[l](z_{l−1}))

``model.terms`` returns the layers top first, which every objective
([`genvae.objectives`][genvae.objectives]) reads unchanged. A head may return any distribution
over its layer: with ``flow=`` the builders make each one a [`FlowHead`][genvae.flows.FlowHead],
a Gaussian pushed through flow steps, and that layer's KL is then estimated on the draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from functools import partial

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, constraints

from ._checks import check_labels, optional_num_classes, positive_int, shape_tuple
from .flows import FlowHead
from .models import ELBOOutput, _fit_likelihood, _LatentVariableModel, _sample_with
from .nets import (
    ConvDecoder,
    MLPDecoder,
    ResNetDecoder,
    _activation,
    _flag,
    _gaussian,
    _halvings,
    _image_shape,
    _mlp,
    _one_hot,
    _with_label_planes,
    residual_trunk,
)
from .priors import StandardNormal, VampPrior
from .protocols import Decoder, Likelihood, Prior
from .terms import LatentLayer, Terms

__all__ = [
    "ConvBlock",
    "GaussianHead",
    "HierarchicalVAE",
    "KLOnDraws",
    "LadderEncoder",
    "MLPBlock",
    "conv_hierarchy",
    "mlp_hierarchy",
]


# --------------------------------------------------------------------------- small helpers


def _widths(name: str, value: int | Sequence[int]) -> tuple[int, ...]:
    """Hidden widths: a positive int, a tuple of them, or ``()`` for none."""
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 0:
        return ()
    return shape_tuple(name, value)


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


def _first_block(block: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """The data-facing block: called with the label where it is conditional (declares ``num_classes``)."""
    return block(x, y) if getattr(block, "num_classes", None) is not None else block(x)


def _merge(h: Tensor, t: Tensor) -> Tensor:
    """``h (B, H)`` and ``t (*S, B, T)`` → ``(*S, B, H + T)``: the bottom-up features beside the top-down ones."""
    return torch.cat([h.expand(*t.shape[:-1], h.shape[-1]), t], dim=-1)  # (*S, B, H + T)


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


# --------------------------------------------------------------------------- ready-made parts


class MLPBlock(nn.Module):
    """``h (*S, B, *in_shape)`` [‖ one-hot y] → Linear → activation → … → ``(*S, B, out_features)``.

    A deterministic block of a hierarchy: every linear layer, the last included, is followed by
    the activation, so that its outputs are features for a head or for the next block.

    Args:
        in_shape: the shape of one input: the data shape for the block on the data, ``(F,)`` or
            ``F`` for a vector.
        out_features: the width of the output.
        hidden: widths of the layers before the output layer (``()``: one linear layer).
        num_classes: concatenate a one-hot label of this many classes to the input (``None``:
            unconditional).
        activation: nonlinearity class after every layer.
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_features: int,
        *,
        hidden: int | Sequence[int] = (),
        num_classes: int | None = None,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.in_shape = shape_tuple("in_shape", in_shape)
        self.out_features = positive_int("out_features", out_features)
        self.hidden = _widths("hidden", hidden)
        self.num_classes = optional_num_classes(num_classes)
        self.activation = _activation(activation)
        self.in_features = math.prod(self.in_shape)
        sizes = (self.in_features + (self.num_classes or 0), *self.hidden, self.out_features)
        self.net = nn.Sequential(_mlp(sizes, self.activation), self.activation())

    def forward(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """``h (*S, B, *in_shape)``, ``y (B,)`` → ``(*S, B, out_features)``."""
        h = h.flatten(start_dim=h.dim() - len(self.in_shape))  # (*S, B, F)
        onehot = _one_hot(y, self.num_classes, h)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=-1)  # (*S, B, F + K)
        return self.net(h)


class ConvBlock(nn.Module):
    """``x (B, C, H, W)`` [‖ one-hot y] → a conv trunk → Linear → activation → ``(B, out_features)``.

    The data-facing block of a convolutional hierarchy: stride-2 3×3 convs to each of
    ``channels``, each followed by ``blocks`` residual blocks
    ([`residual_trunk`][genvae.nets.residual_trunk]; ``blocks=0``: plain convs, as in
    [`ConvEncoder`][genvae.nets.ConvEncoder]), flattened, then one linear layer and the activation,
    so that its output is features for a head or for the next block.

    Args:
        data_shape: ``(C, H, W)``.
        out_features: the width of the output.
        channels: channels of each stage; one halving of the spatial size per stage.
        blocks: residual blocks per stage.
        gated: gated residual blocks (Tomczak & Welling 2018) instead of plain ones.
        num_classes: condition on a label (``None``: unconditional).
        activation: nonlinearity class after the linear layer.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        out_features: int,
        *,
        channels: Sequence[int] = (32, 64),
        blocks: int = 0,
        gated: bool = False,
        num_classes: int | None = None,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.data_shape = _image_shape(data_shape, "ConvBlock")
        self.out_features = positive_int("out_features", out_features)
        self.channels = shape_tuple("channels", channels)
        self.blocks = blocks
        self.gated = _flag("gated", gated)
        self.num_classes = optional_num_classes(num_classes)
        self.activation = _activation(activation)
        c, h, w = self.data_shape
        self.trunk = residual_trunk(c + (self.num_classes or 0), self.channels, blocks, gated=gated)
        side = _halvings(h, len(self.channels))[-1] * _halvings(w, len(self.channels))[-1]
        self.out = nn.Sequential(nn.Linear(self.channels[-1] * side, self.out_features), self.activation())

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``x (B, C, H, W)``, ``y (B,)`` → ``(B, out_features)``."""
        return self.out(self.trunk(_with_label_planes(x, y, self.num_classes)).flatten(start_dim=1))


class GaussianHead(nn.Module):
    """Features ``(*S, B, in_features)`` → N(μ, diag σ²) as ``Independent(Normal(μ, σ), 1)``.

    σ = exp(½ · logvar), not clamped, as in [`genvae.nets`][genvae.nets]. Used for each layer's
    posterior and for the conditional priors p(z_l | z_{l+1}).

    Args:
        in_features: the width of the features.
        latent_dim: D of the layer.
        hidden: widths of layers between the features and (μ, logvar) (``()``: one linear layer).
        activation: nonlinearity class after each hidden layer.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        *,
        hidden: int | Sequence[int] = (),
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.in_features = positive_int("in_features", in_features)
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.hidden = _widths("hidden", hidden)
        self.activation = _activation(activation)
        self.net = _mlp((self.in_features, *self.hidden, 2 * self.latent_dim), self.activation)

    def forward(self, h: Tensor) -> Distribution:
        """``h (*S, B, in_features)`` → batch ``(*S, B)``, event ``(D,)``."""
        return _gaussian(self.net(h))


# --------------------------------------------------------------------------- the inference network


class LadderEncoder(nn.Module):
    """The inference network: per layer, bottom first, a deterministic block and a posterior head.

    Called as an [`Encoder`][genvae.protocols.Encoder], it returns the top posterior q(z_L | x),
    so that a [`VampPrior`][genvae.priors.VampPrior] can share it. With top-down inference that is
    ``heads[L](h_L)`` after one pass up the blocks; with bottom-up inference q(z_L | x) has no
    closed form and the call returns q(z_L | z_{L−1}) with each lower z_l at its posterior mean.

    Block inputs: ``up[0]`` takes the data ``x (B, *data_shape)`` (and ``y (B,)`` where it declares
    ``num_classes``); ``up[l]`` takes h_{l} (top-down) or z_{l} (bottom-up), ``(*S, B, F)``. Blocks
    return flat features ``(*S, B, F)`` (a conv trunk ends with a flatten). Head inputs: ``heads[l]``
    takes ``up[l]``'s output, except, top-down, the heads below the top, which take h_l ‖ t_l (see
    [`HierarchicalVAE`][genvae.hierarchy.HierarchicalVAE]).

    Args:
        up: L deterministic blocks, bottom first.
        heads: L posterior heads (features → distribution with event ``(D_l,)``), bottom first.
        top_down: infer top-down (Ladder VAE, https://arxiv.org/abs/1602.02282) or bottom-up
            (IWAE, https://arxiv.org/abs/1509.00519).

    Raises:
        ValueError: no layers, not one head per block, or declared sizes that disagree.
    """

    def __init__(self, up: Sequence[nn.Module], heads: Sequence[nn.Module], *, top_down: bool = True) -> None:
        super().__init__()
        blocks, posteriors = _parts("up", up), _parts("heads", heads)
        if len(blocks) == 0:
            raise ValueError("expected at least one latent layer, got 0")
        if len(posteriors) != len(blocks):
            raise ValueError(f"expected one head per block, got {len(blocks)} blocks in up and {len(posteriors)} heads")
        if not isinstance(top_down, bool):
            raise TypeError(f"expected top_down to be a bool, got {type(top_down).__name__} {top_down!r}")
        self.up_blocks = nn.ModuleList(blocks)
        self.head_blocks = nn.ModuleList(posteriors)
        self.top_down = top_down
        for i in range(1, len(blocks)):
            below = _size(blocks[i - 1], "out_features") if top_down else _size(posteriors[i - 1], "latent_dim")
            source = f"up[{i - 1}].out_features" if top_down else f"heads[{i - 1}].latent_dim"
            _agree(f"up[{i}].in_features", below, _size(blocks[i], "in_features"), source)
        for i in range(len(blocks)) if not top_down else (len(blocks) - 1,):
            _agree(
                f"heads[{i}].in_features",
                _size(blocks[i], "out_features"),
                _size(posteriors[i], "in_features"),
                f"up[{i}].out_features",
            )

    @property
    def up(self) -> tuple[nn.Module, ...]:
        """The blocks, bottom first."""
        return tuple(self.up_blocks)

    @property
    def heads(self) -> tuple[nn.Module, ...]:
        """The posterior heads, bottom first."""
        return tuple(self.head_blocks)

    @property
    def num_classes(self) -> int | None:
        """The data-facing block's ``num_classes`` (None: unconditional)."""
        return getattr(self.up_blocks[0], "num_classes", None)

    @property
    def latent_dims(self) -> tuple[int | None, ...]:
        """D_l per layer, bottom first, where the heads declare it."""
        return tuple(_size(head, "latent_dim") for head in self.head_blocks)

    def features(self, x: Tensor, y: Tensor | None = None) -> list[Tensor]:
        """The bottom-up pass of top-down inference: ``[h_1 … h_L]``, each ``(B, F_l)``."""
        hs = [_first_block(self.up_blocks[0], x, y)]
        for block in self.up_blocks[1:]:
            hs.append(block(hs[-1]))
        return hs

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """``x (B, *data_shape)``, ``y (B,)`` → q(z_L | x), batch ``(B,)``, event ``(D_L,)``."""
        if self.top_down:
            return self.head_blocks[-1](self.features(x, y)[-1])
        q = self.head_blocks[0](_first_block(self.up_blocks[0], x, y))
        for block, head in zip(self.up_blocks[1:], self.head_blocks[1:]):
            q = head(block(q.mean))
        return q


# --------------------------------------------------------------------------- the model


class HierarchicalVAE(nn.Module):
    """A VAE with L ≥ 1 stochastic layers, each with its own posterior and conditional prior.

    Satisfies [`LatentVariableModel`][genvae.protocols.LatentVariableModel], so
    [`fit`][genvae.train.fit], the metrics, the figures and [`save`][genvae.save] take it as they
    take a [`VAE`][genvae.VAE]; with L = 1 it is that VAE. Per-layer KLs are in closed form where
    torch registers one (Gaussian posterior and prior), except below the top with bottom-up
    inference, where the conditioning draw comes after the layer's own (see
    [`KLOnDraws`][genvae.hierarchy.KLOnDraws]).

    The decoder sees z_1 only. Generation is ancestral (`sample`); `encode` gives the top posterior
    (see [`LadderEncoder`][genvae.hierarchy.LadderEncoder]); `decode` takes a top code and sets each
    lower layer to its conditional prior mean; `reconstruct` takes posterior means all the way
    down; `interpolate` decodes, as `decode` does, points between two top posterior means.

    Args:
        encoder: the inference network (blocks and posterior heads, and the route).
        down: L − 1 top-down blocks, bottom first: ``down[l]`` maps z_{l+2} ``(*S, B, D_{l+2})`` to
            features t_{l+1} ``(*S, B, T)`` (0-based l; the features feed ``priors[l]`` and, top-down,
            ``encoder.heads[l]``).
        priors: L − 1 heads, bottom first: ``priors[l]`` maps t_{l+1} to p(z_{l+1} | z_{l+2}).
        decoder: z_1 ``(*S, B, D_1)`` → likelihood parameters, as a VAE's.
        likelihood: parameters → p(x | z_1).
        prior: p(z_L[ | y]), any genvae prior ([`VampPrior`][genvae.priors.VampPrior] with
            ``encoder=`` this model's encoder).

    Raises:
        ValueError: not L − 1 top-down blocks and conditional priors, or declared latent sizes
            that disagree between neighbouring parts.
    """

    label_required = False

    def __init__(
        self,
        encoder: LadderEncoder,
        down: Sequence[nn.Module],
        priors: Sequence[nn.Module],
        decoder: Decoder,
        likelihood: Likelihood,
        prior: Prior,
    ) -> None:
        super().__init__()
        for name, part in (("encoder", encoder), ("decoder", decoder), ("likelihood", likelihood), ("prior", prior)):
            if not callable(part):
                raise TypeError(f"expected {name} to be callable (an nn.Module), got {type(part).__name__}")
        if not all(hasattr(encoder, a) for a in ("up", "heads", "top_down", "features")):
            raise TypeError(
                f"expected encoder to be a LadderEncoder (blocks, heads and a route), got {type(encoder).__name__}"
            )
        blocks, conditionals = _parts("down", down), _parts("priors", priors)
        layers = len(encoder.heads)
        if len(blocks) != layers - 1 or len(conditionals) != layers - 1:
            raise ValueError(
                f"expected L - 1 = {layers - 1} top-down blocks and conditional priors (one per layer below the "
                f"top), got {len(blocks)} in down and {len(conditionals)} in priors"
            )
        self.encoder, self.decoder, self.likelihood, self.prior = encoder, decoder, likelihood, prior
        self.down_blocks = nn.ModuleList(blocks)
        self.prior_blocks = nn.ModuleList(conditionals)
        self._check_sizes()
        shape = getattr(encoder, "data_shape", None) or getattr(decoder, "data_shape", None)
        self.data_shape: tuple[int, ...] | None = tuple(shape) if shape is not None else None
        if self.data_shape is not None:
            _fit_likelihood(likelihood, self.data_shape)
        found = [getattr(m, "num_classes", None) for m in (prior, encoder, decoder)]
        self.num_classes: int | None = next((n for n in found if n is not None), None)
        if getattr(prior, "encoder", None) is encoder and encoder.num_classes is not None:
            raise ValueError(
                f"expected an unconditional encoder for a prior that shares it (a VampPrior encodes its "
                f"pseudo-inputs without labels), got one with num_classes={encoder.num_classes}"
            )
        self.validating = True

    def _check_sizes(self) -> None:
        """Compare the sizes the parts declare; the others are compared at the first call."""
        dims = self.encoder.latent_dims  # bottom first
        heads, top = self.encoder.heads, len(dims) - 1
        _agree("decoder.latent_dim", dims[0], _size(self.decoder, "latent_dim"), "the size of z_1, heads[0].latent_dim")
        _agree("prior.latent_dim", dims[top], _size(self.prior, "latent_dim"), f"the top layer's, heads[{top}]")
        for i, (block, conditional) in enumerate(zip(self.down, self.priors)):
            _agree(f"down[{i}].in_features", dims[i + 1], _size(block, "in_features"), f"heads[{i + 1}].latent_dim")
            _agree(f"priors[{i}].latent_dim", dims[i], _size(conditional, "latent_dim"), f"heads[{i}].latent_dim")
            t = _size(block, "out_features")
            _agree(f"priors[{i}].in_features", t, _size(conditional, "in_features"), f"down[{i}].out_features")
            h = _size(self.encoder.up[i], "out_features")
            if self.encoder.top_down and t is not None and h is not None:
                why = f"up[{i}].out_features + down[{i}].out_features, h and t side by side"
                _agree(f"heads[{i}].in_features", h + t, _size(heads[i], "in_features"), why)

    @property
    def down(self) -> tuple[nn.Module, ...]:
        """The top-down blocks, bottom first."""
        return tuple(self.down_blocks)

    @property
    def priors(self) -> tuple[nn.Module, ...]:
        """The conditional priors p(z_l | z_{l+1}), bottom first."""
        return tuple(self.prior_blocks)

    @property
    def num_layers(self) -> int:
        """L."""
        return len(self.encoder.heads)

    @property
    def top_down(self) -> bool:
        """Whether inference runs top-down (else bottom-up)."""
        return bool(self.encoder.top_down)

    @property
    def latent_dim(self) -> int | None:
        """D_L of the top layer, where a part declares it."""
        top = self.encoder.latent_dims[-1]
        return top if top is not None else _size(self.prior, "latent_dim")

    # The checks, the bound, the forward call and the interpolation are a VAE's, taken from its
    # implementation rather than inherited (the contract is the protocol, not a base class).
    validate_args: Callable[..., AbstractContextManager[None]] = _LatentVariableModel.validate_args
    _check: Callable[..., None] = _LatentVariableModel._check
    _device: Callable[..., torch.device] = _LatentVariableModel._device
    elbo: Callable[..., ELBOOutput] = _LatentVariableModel.elbo
    forward: Callable[..., Terms] = _LatentVariableModel.forward
    interpolate: Callable[..., Tensor] = _LatentVariableModel.interpolate

    # ------------------------------------------------------------------ inference
    def _layers(self, x: Tensor, y: Tensor | None, k: int | None) -> list[LatentLayer]:
        """Each layer's (q, p, z), top first: ``k`` reparameterised draws ``(k, B, D_l)`` per
        example, or (``k=None``) the posterior means ``(B, D_l)``."""
        heads, top = self.encoder.heads, self.num_layers - 1

        def draw(q: Distribution, first: bool) -> Tensor:
            if k is None:
                return q.mean  # (B, D)
            return q.rsample((k,)) if first else q.rsample()  # (k, B, D)

        if self.top_down:
            hs = self.encoder.features(x, y)  # [(B, F_l)], bottom first
            q = heads[top](hs[top])  # batch (B,)
            z = draw(q, True)
            layers = [self._layer(top, q, self.prior(y), z)]
            for i in reversed(range(top)):  # layer i is z_{i+1}
                t = self.down[i](z)  # (*S, B, T)
                p = self.priors[i](t)  # p(z_{i+1} | z_{i+2}), batch (*S, B)
                q = heads[i](_merge(hs[i], t))  # q(z_{i+1} | x, z_{>i+1}), batch (*S, B)
                z = draw(q, False)
                layers.append(self._layer(i, q, p, z))
            return layers
        q = heads[0](_first_block(self.encoder.up[0], x, y))  # batch (B,)
        draws = [(q, draw(q, True))]
        for block, head in zip(self.encoder.up[1:], heads[1:]):
            q = head(block(draws[-1][1]))  # q(z_{i+1} | z_i), batch (*S, B)
            draws.append((q, draw(q, False)))
        q, z = draws[top]
        layers = [self._layer(top, q, self.prior(y), z)]
        for i in reversed(range(top)):  # layer i is z_{i+1}
            p = _kl_on_draws(self.priors[i](self.down[i](draws[i + 1][1])))  # z_{i+2} was drawn after z_{i+1}
            layers.append(self._layer(i, draws[i][0], p, draws[i][1]))
        return layers

    def _layer(self, i: int, q: Distribution, p: Distribution, z: Tensor) -> LatentLayer:
        """Layer ``i`` (0-based, bottom first), its two distributions checked to be over one space."""
        if q.event_shape != p.event_shape:
            top = i == self.num_layers - 1
            prior = f"p(z_{i + 1})" if top else f"p(z_{i + 1} | z_{i + 2})"
            raise ValueError(
                f"expected {prior} and q(z_{i + 1} | ...) over the same space, got event shapes "
                f"{tuple(p.event_shape)} from {'prior' if top else f'priors[{i}]'} and {tuple(q.event_shape)} from "
                f"heads[{i}]"
            )
        return LatentLayer(q, p, z)

    def terms(self, x: Tensor, y: Tensor | None = None, *, k: int = 1) -> Terms:
        """What every objective needs, for ``k`` reparameterised draws of every layer per example.

        Args:
            x: ``(B, *data_shape)``.
            y: ``(B,)`` labels where the model uses them.
            k: draws per example; each of the k chains is drawn through all L layers.

        Returns:
            [`Terms`][genvae.terms.Terms]: log p(x | z_1) ``(k, B)`` and the L layers, top first,
            each (q, p, z ``(k, B, D_l)``); q and p have batch ``(k, B)`` below the first draw.
        """
        self._check(x, y)
        layers = self._layers(x, y, positive_int("k", k))
        px = self.likelihood(self.decoder(layers[-1].z, y))
        if tuple(px.event_shape) != tuple(x.shape[1:]):
            raise ValueError(
                f"expected the likelihood's event shape to be the data shape {tuple(x.shape[1:])}, got "
                f"{tuple(px.event_shape)} from {type(self.likelihood).__name__}; its log_prob would sum over "
                "the wrong dimensions"
            )
        return Terms(px.log_prob(x), tuple(layers))

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """The top posterior q(z_L | x[, y]): batch ``(B,)``, event ``(D_L,)`` (see
        [`LadderEncoder`][genvae.hierarchy.LadderEncoder] for bottom-up inference)."""
        self._check(x, y)
        return self.encoder(x, y)

    def _descend(self, z: Tensor, generator: torch.Generator | None, mean: bool) -> Tensor:
        """z_L ``(*S, B, D_L)`` → z_1 ``(*S, B, D_1)`` through p(z_l | z_{l+1}): its means, or draws."""
        for i in reversed(range(self.num_layers - 1)):
            p = self.priors[i](self.down[i](z))
            z = p.mean if mean else _sample_with(p, (), generator)  # (*S, B, D_i)
        return z

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x | z_L[, y]) for a top code ``z (*S, B, D_L)``, each lower layer at its conditional prior
        mean: event shape = data shape, batch ``(*S, B)``."""
        return self.likelihood(self.decoder(self._descend(z, None, mean=True), y))

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample(
        self, n: int, y: Tensor | None = None, *, generator: torch.Generator | None = None, mean: bool = True
    ) -> Tensor:
        """Draw ``n`` examples ancestrally: z_L ~ p(z_L[|y]), z_l ~ p(z_l | z_{l+1}) down to z_1, then
        the mean of p(x | z_1) (or a draw, ``mean=False``).

        Args:
            n: number of examples.
            y: labels ``(n,)`` for a conditional model.
            generator: a ``torch.Generator`` on the model's device for reproducible draws.

        Returns:
            ``(n, *data_shape)``.
        """
        positive_int("n", n)
        if y is not None:
            y = check_labels(y, n, self.num_classes, values=True).to(self._device())
        p = self.prior(y)
        z = _sample_with(p, (n,) if p.batch_shape == () else (), generator)  # (n, D_L)
        px = self.likelihood(self.decoder(self._descend(z, generator, mean=False), y))
        return px.mean if mean else _sample_with(px, (), generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean of p(x | z_1) with every layer at its posterior mean: ``(B, *data_shape)`` → same shape."""
        self._check(x, y)
        return self.likelihood(self.decoder(self._layers(x, y, None)[-1].z, y)).mean


# --------------------------------------------------------------------------- the MLP builder


def _layer_widths(hidden: object, layers: int) -> tuple[tuple[int, ...], ...]:
    """Per layer, bottom first: an int or a tuple of ints is every layer's; a tuple of tuples, one each."""
    if isinstance(hidden, Sequence) and not isinstance(hidden, str) and any(isinstance(h, Sequence) for h in hidden):
        if len(hidden) != layers:
            raise ValueError(f"expected hidden with one tuple of widths per latent layer ({layers}), got {len(hidden)}")
        return tuple(shape_tuple(f"hidden[{i}]", h) for i, h in enumerate(hidden))
    return (shape_tuple("hidden", hidden),) * layers


def mlp_hierarchy(
    data_shape: Sequence[int],
    latent_dims: int | Sequence[int] = (100, 50),
    *,
    likelihood: Likelihood,
    hidden: int | Sequence[int] | Sequence[Sequence[int]] = (300,),
    top_down: bool = True,
    num_classes: int | None = None,
    prior: Prior | None = None,
    num_pseudo_inputs: int | None = None,
    activation: type[nn.Module] = nn.Tanh,
    flow: Callable[[int], Sequence[nn.Module]] | None = None,
) -> HierarchicalVAE:
    """A hierarchical VAE of MLPs, every layer Gaussian.

    Layer l's widths ``hidden[l]`` are used twice, mirrored: up the inference network (h_{l−1} or
    z_{l−1} → widths → h_l) and down the generative one (z_{l+1} → reversed widths → t_l, and
    z_1 → reversed ``hidden[0]`` → x for the decoder). Heads are linear, except, top-down, the
    posterior heads below the top, which mix h_l ‖ t_l through one layer of h_l's width.

    The IWAE paper's two-layer net (784-100-100-(z_1=100)-50-50-(z_2=50), tanh, bottom-up;
    https://arxiv.org/abs/1509.00519):

        mlp_hierarchy((1, 28, 28), (100, 50), likelihood=Bernoulli(), hidden=((100, 100), (50, 50)),
                      top_down=False)

    Tomczak & Welling's HVAE (L = 2) with a VampPrior (https://arxiv.org/abs/1705.07120), with
    plain layers for their gated ones and a decoder from z_1 alone:

        mlp_hierarchy((1, 28, 28), (40, 40), likelihood=Bernoulli(), hidden=300, num_pseudo_inputs=500)

    Args:
        data_shape: shape of one example.
        latent_dims: D_l per layer, bottom first (z_1 first): ``(100, 50)`` is z_1 of 100 and z_2 of
            50; an int is one layer.
        likelihood: a genvae likelihood, e.g. ``genvae.likelihoods.Bernoulli()``.
        hidden: widths of each layer's deterministic block: an int or a tuple of ints for every
            layer, or one tuple per layer, bottom first.
        top_down: top-down inference (Ladder VAE, https://arxiv.org/abs/1602.02282), else bottom-up.
        num_classes: condition the data-facing block and the decoder on a label.
        prior: the top prior; by default N(0, I).
        num_pseudo_inputs: a [`VampPrior`][genvae.priors.VampPrior] at the top with this many
            pseudo-inputs, sharing the model's encoder (instead of ``prior``).
        activation: nonlinearity class of every hidden layer.
        flow: flow posteriors: a function of a layer's latent size D that returns that layer's
            flow steps, such as ``lambda d: [IAF(d, context_features=2 * d)]``; each posterior head
            becomes a [`FlowHead`][genvae.flows.FlowHead], except the top one under a VampPrior,
            whose mixture is over the top posteriors and needs them Gaussian. ``None``: Gaussian
            posteriors.

    Raises:
        ValueError: no latent layers, ``hidden`` with another number of layers, both ``prior``
            and ``num_pseudo_inputs``, or a VampPrior with ``num_classes``.
    """
    shape, dims = _shape_and_dims(data_shape, latent_dims)
    widths = _layer_widths(hidden, len(dims))
    _check_top(prior, num_pseudo_inputs, num_classes)
    first = MLPBlock(shape, widths[0][-1], hidden=widths[0][:-1], num_classes=num_classes, activation=activation)
    out_shape = tuple(likelihood.param_shape(shape)) if hasattr(likelihood, "param_shape") else shape
    decoder = partial(
        MLPDecoder, dims[0], out_shape, hidden=widths[0][::-1], num_classes=num_classes, activation=activation
    )
    return _assemble(
        shape, dims, widths, first, decoder, likelihood, top_down, prior, num_pseudo_inputs, activation, flow
    )


def conv_hierarchy(
    data_shape: Sequence[int],
    latent_dims: int | Sequence[int] = (40, 40),
    *,
    likelihood: Likelihood,
    channels: Sequence[int] = (32, 64),
    blocks: int = 0,
    gated: bool = False,
    hidden: int | Sequence[int] | Sequence[Sequence[int]] = 300,
    top_down: bool = True,
    num_classes: int | None = None,
    prior: Prior | None = None,
    num_pseudo_inputs: int | None = None,
    activation: type[nn.Module] = nn.Tanh,
    flow: Callable[[int], Sequence[nn.Module]] | None = None,
) -> HierarchicalVAE:
    """A hierarchical VAE whose data-facing block and decoder are convolutional, every layer Gaussian.

    As [`mlp_hierarchy`][genvae.hierarchy.mlp_hierarchy] above the first layer; the first layer's
    block is a [`ConvBlock`][genvae.hierarchy.ConvBlock] (stride-2 convs to each of ``channels``,
    with ``blocks`` residual blocks after each, then a linear layer to ``hidden[0]``), and the
    decoder from z_1 mirrors it: a [`ConvDecoder`][genvae.nets.ConvDecoder] (``blocks=0``) or a
    [`ResNetDecoder`][genvae.nets.ResNetDecoder] over the reversed channels, through a hidden layer
    of ``hidden[0]``. This is the shape of Tomczak & Welling's convolutional HVAE
    (https://arxiv.org/abs/1705.07120), with plain or gated residual blocks for their gated convs:

        conv_hierarchy((1, 28, 28), (40, 40), likelihood=Bernoulli(), num_pseudo_inputs=500)

    Args:
        data_shape: ``(C, H, W)``.
        latent_dims: D_l per layer, bottom first; an int is one layer.
        likelihood: a genvae likelihood; the decoder is built for its ``param_shape``.
        channels: channels of the first block's stages (the decoder's, reversed).
        blocks: residual blocks per stage (0: plain stride-2 convs).
        gated: gated residual blocks instead of plain ones.
        hidden: widths of each layer's block: an int or a tuple for every layer, or one tuple per
            layer, bottom first; the first layer takes one width, its block's output.
        top_down: top-down inference, else bottom-up.
        num_classes: condition the first block and the decoder on a label.
        prior: the top prior; by default N(0, I).
        num_pseudo_inputs: a VampPrior at the top with this many pseudo-inputs, sharing the encoder.
        activation: nonlinearity class of the MLP layers and of the first block's output.
        flow: flow posteriors, as in ``mlp_hierarchy``.

    Raises:
        ValueError: no latent layers, data that are not images, more than one width for the first
            layer, ``blocks`` below 0, or the top-prior conflicts of ``mlp_hierarchy``.
    """
    shape, dims = _shape_and_dims(data_shape, latent_dims)
    widths = _layer_widths(hidden, len(dims))
    if len(widths[0]) != 1:
        raise ValueError(f"expected one width for the first layer of a conv hierarchy, got hidden[0] = {widths[0]}")
    _check_top(prior, num_pseudo_inputs, num_classes)
    first = ConvBlock(
        shape, widths[0][0], channels=channels, blocks=blocks, gated=gated, num_classes=num_classes,
        activation=activation,
    )  # fmt: skip
    out_shape = tuple(likelihood.param_shape(shape)) if hasattr(likelihood, "param_shape") else shape
    reversed_channels = tuple(first.channels[::-1])
    decoder: Callable[[], nn.Module]
    if blocks == 0:
        decoder = partial(
            ConvDecoder, dims[0], out_shape, channels=reversed_channels, hidden=widths[0][0], num_classes=num_classes
        )
    else:
        decoder = partial(
            ResNetDecoder,
            dims[0], out_shape, channels=reversed_channels, blocks=blocks, hidden=widths[0][0], num_classes=num_classes,
            gated=gated,
        )  # fmt: skip
    return _assemble(
        shape, dims, widths, first, decoder, likelihood, top_down, prior, num_pseudo_inputs, activation, flow
    )


def _shape_and_dims(data_shape: object, latent_dims: object) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = shape_tuple("data_shape", data_shape)
    if isinstance(latent_dims, Sequence) and len(latent_dims) == 0:
        raise ValueError("expected at least one latent layer, got 0")
    return shape, shape_tuple("latent_dims", latent_dims)


def _check_top(prior: Prior | None, num_pseudo_inputs: int | None, num_classes: int | None) -> None:
    if prior is not None and num_pseudo_inputs is not None:
        raise ValueError(
            f"expected prior or num_pseudo_inputs, got both: {type(prior).__name__} and {num_pseudo_inputs}"
        )
    if num_pseudo_inputs is not None and num_classes is not None:
        raise ValueError(
            f"expected num_classes=None with num_pseudo_inputs (a VampPrior encodes its pseudo-inputs without "
            f"labels), got num_classes={num_classes}"
        )


def _assemble(
    shape: tuple[int, ...],
    dims: tuple[int, ...],
    widths: tuple[tuple[int, ...], ...],
    first: nn.Module,
    decoder: Callable[[], nn.Module],
    likelihood: Likelihood,
    top_down: bool,
    prior: Prior | None,
    num_pseudo_inputs: int | None,
    activation: type[nn.Module],
    flow: Callable[[int], Sequence[nn.Module]] | None,
) -> HierarchicalVAE:
    """The MLP layers above the data-facing block ``first``: blocks up and down, posterior heads,
    conditional priors and the top prior, around the decoder ``decoder()`` builds (after the
    encoder, so that a seed gives the parameters it gave before the builders shared this code)."""
    top = len(dims) - 1
    up: list[nn.Module] = [first]
    for i in range(1, len(dims)):
        source = widths[i - 1][-1] if top_down else dims[i - 1]
        up.append(MLPBlock(source, widths[i][-1], hidden=widths[i][:-1], activation=activation))
    down = [
        MLPBlock(dims[i + 1], widths[i + 1][0], hidden=widths[i + 1][:0:-1], activation=activation) for i in range(top)
    ]
    heads: list[nn.Module] = []
    for i in range(len(dims)):
        if top_down and i < top:
            merged = widths[i][-1] + widths[i + 1][0]
            heads.append(GaussianHead(merged, dims[i], hidden=(widths[i][-1],), activation=activation))
        else:
            heads.append(GaussianHead(widths[i][-1], dims[i], activation=activation))
    if flow is not None:
        if not callable(flow):
            raise TypeError(f"expected flow to be a function latent_dim -> flow steps, got {type(flow).__name__}")
        flowing = top if num_pseudo_inputs is not None else top + 1  # a VampPrior mixes Gaussian q(z_L | u)
        heads = [FlowHead(head, flow(dims[i])) if i < flowing else head for i, head in enumerate(heads)]
    conditionals = [GaussianHead(widths[i + 1][0], dims[i], activation=activation) for i in range(top)]
    encoder = LadderEncoder(up, heads, top_down=top_down)
    net = decoder()
    if num_pseudo_inputs is not None:
        prior = VampPrior(encoder, num_pseudo_inputs, shape)
    elif prior is None:
        prior = StandardNormal(dims[top])
    return HierarchicalVAE(encoder, down, conditionals, net, likelihood, prior)
