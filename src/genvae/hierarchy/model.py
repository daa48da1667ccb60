"""The hierarchical VAE: L cells, bottom first, around a decoder, a likelihood and a top prior.

    [`Ladder`][genvae.hierarchy.Ladder]           the cells and the route of inference; q(z_L | x) when called
    [`HierarchicalVAE`][genvae.hierarchy.HierarchicalVAE]  the model: terms, sampling, reconstruction

The loop over the cells is written once here for each route; a cell knows its own parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, TransformedDistribution

from .._checks import positive_int
from ..models import (
    attach_parts,
    check_input,
    chunk_size,
    chunked_log_likelihood,
    elbo,
    interpolate,
    sample,
    sample_with,
    value_checks,
)
from ..protocols import Decoder, Likelihood, Prior
from ..registry import register
from ..terms import ELBOOutput, LatentLayer, Terms
from .cells import KLOnDraws, _agree, _kl_on_draws, _parts, _size

__all__ = ["HierarchicalVAE", "Ladder"]


def _first_block(block: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """The data-facing block: called with the label where it is conditional (declares ``num_classes``)."""
    return block(x, y) if getattr(block, "num_classes", None) is not None else block(x)


@register("block", "ladder")
class Ladder(nn.Module):
    """The cells of a hierarchy, bottom first, and its route of inference.

    Called as an [`Encoder`][genvae.protocols.Encoder], it returns the top posterior q(z_L | x), so
    that a [`VampPrior`][genvae.priors.VampPrior] can share it. With top-down inference that is the
    top cell's posterior after one pass up the cells' blocks; with bottom-up inference q(z_L | x)
    has no closed form and the call returns q(z_L | z_{L−1}) with each lower z_l at its posterior
    mean.

    Args:
        cells: L cells ([`GaussianCell`][genvae.hierarchy.GaussianCell],
            [`SpatialCell`][genvae.hierarchy.SpatialCell]), bottom first; every cell but the top
            has a prior head, every cell but the bottom a projection down.
        top_down: infer top-down (Ladder VAE, https://arxiv.org/abs/1602.02282) or bottom-up
            (IWAE, https://arxiv.org/abs/1509.00519).

    Raises:
        ValueError: no cells, a prior head at the top or none below it, a projection at the bottom
            or none above it, or declared sizes that disagree between neighbouring cells.
    """

    def __init__(self, cells: Sequence[nn.Module], *, top_down: bool = True) -> None:
        super().__init__()
        stack = _parts("cells", cells)
        if len(stack) == 0:
            raise ValueError("expected at least one latent layer, got 0")
        if not isinstance(top_down, bool):
            raise TypeError(f"expected top_down to be a bool, got {type(top_down).__name__} {top_down!r}")
        top = len(stack) - 1
        for i, cell in enumerate(stack):
            for part in ("up", "posterior", "prior_head", "down"):
                if not hasattr(cell, part):
                    raise TypeError(f"expected cells[{i}] to be a cell with {part}, got {type(cell).__name__}")
            if (cell.prior_head is None) != (i == top):
                raise ValueError(f"expected a prior_head on every cell below the top, got cells[{i}] of {top + 1}")
            if (cell.down is None) != (i == 0):
                raise ValueError(f"expected a down projection on every cell above the bottom, got cells[{i}]")
        self.stack = nn.ModuleList(stack)
        self.top_down = top_down
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Compare the vector sizes the cells declare; the others are compared at the first call."""
        cells = self.cells
        for i in range(1, len(cells)):
            if self.top_down:
                below, source = _size(cells[i - 1].up, "out_features"), f"cells[{i - 1}].up.out_features"
            else:
                below, source = _size(cells[i - 1].posterior, "latent_dim"), f"cells[{i - 1}].posterior.latent_dim"
            _agree(f"cells[{i}].up.in_features", below, _size(cells[i].up, "in_features"), source)
            t = _size(cells[i].down, "out_features")
            _agree(f"cells[{i - 1}].prior_head.in_features", t, _size(cells[i - 1].prior_head, "in_features"),
                   f"cells[{i}].down.out_features")  # fmt: skip
        for i, cell in enumerate(cells):
            h = _size(cell.up, "out_features")
            if self.top_down and i < len(cells) - 1:
                t = _size(cells[i + 1].down, "out_features")
                h = None if h is None or t is None else h + t
                why = f"cells[{i}].up.out_features + cells[{i + 1}].down.out_features, h and t side by side"
            else:
                why = f"cells[{i}].up.out_features"
            _agree(f"cells[{i}].posterior.in_features", h, _size(cell.posterior, "in_features"), why)

    @property
    def cells(self) -> tuple[nn.Module, ...]:
        """The cells, bottom first."""
        return tuple(self.stack)

    @property
    def up(self) -> tuple[nn.Module, ...]:
        """The cells' blocks of the inference network, bottom first."""
        return tuple(cell.up for cell in self.stack)

    @property
    def heads(self) -> tuple[nn.Module, ...]:
        """The cells' posterior heads, bottom first."""
        return tuple(cell.posterior for cell in self.stack)

    @property
    def num_classes(self) -> int | None:
        """The data-facing block's ``num_classes`` (None: unconditional)."""
        return getattr(self.stack[0].up, "num_classes", None)

    @property
    def latent_dims(self) -> tuple[int | None, ...]:
        """D_l per layer, bottom first, where the posterior heads declare it."""
        return tuple(_size(cell.posterior, "latent_dim") for cell in self.stack)

    def features(self, x: Tensor, y: Tensor | None = None) -> list[Tensor]:
        """The bottom-up pass of top-down inference: ``[h_1 … h_L]``, each ``(B, *F_l)``."""
        hs = [_first_block(self.stack[0].up, x, y)]
        for cell in self.stack[1:]:
            hs.append(cell.up(hs[-1]))
        return hs

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """``x (B, *data_shape)``, ``y (B,)`` → q(z_L | x), batch ``(B,)``, event that of the top layer."""
        if self.top_down:
            return self.stack[-1].infer(self.features(x, y)[-1])
        q = self.stack[0].infer(_first_block(self.stack[0].up, x, y))
        for cell in self.stack[1:]:
            q = cell.infer(cell.up(q.mean))
        return q


# --------------------------------------------------------------------------- draws in passes of bounded size


def _reparameterise(d: Distribution, eps: Tensor) -> Tensor | None:
    """``d.rsample()`` with its standard-normal noise ``eps`` given, where ``d`` is a Normal, or an
    Independent or a flow of one (what ``rsample`` computes, to the bit); else None."""
    if isinstance(d, Independent):
        return _reparameterise(d.base_dist, eps)
    if isinstance(d, TransformedDistribution):
        z = _reparameterise(d.base_dist, eps)
        for transform in d.transforms if z is not None else ():
            z = transform(z)  # as TransformedDistribution.rsample, which caches (z, f(z)) for log_prob
        return z
    return d.loc + eps * d.scale if type(d) is Normal else None  # Normal.rsample


class _Noise:
    """The standard-normal noise of each layer's k draws, drawn whole at the layer's first pass, so
    that draws made in passes over the k are those of one pass over all of them."""

    def __init__(self, k: int, passes: int) -> None:
        self.k, self.passes = k, passes
        self.eps: dict[int, Tensor] = {}

    def draw(self, layer: int, q: Distribution, part: slice) -> Tensor:
        """z ~ q for the draws ``part`` of the k; q has batch ``(len(part), B)``."""
        if self.passes == 1:
            return q.rsample()  # (k, B, *event)
        if layer not in self.eps:
            loc = q.mean
            self.eps[layer] = torch.empty((self.k, *loc.shape[1:]), dtype=loc.dtype, device=loc.device).normal_()
        z = _reparameterise(q, self.eps[layer][part])
        return q.rsample() if z is None else z  # another posterior: its own draws, pass by pass


def _joined(parts: list[Distribution], draws: list[Tensor], joined: Tensor) -> Distribution:
    """The passes' distributions, batch ``(k_i, B)`` each, as one of batch ``(Σ k_i, B)``; ``draws``
    are each pass's draws and ``joined`` their concatenation."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if all(type(p) is type(first) for p in parts):
        if type(first) is Independent:
            bases = _joined([p.base_dist for p in parts], draws, joined)
            return Independent(bases, first.reinterpreted_batch_ndims, validate_args=False)
        if type(first) is Normal:
            loc, scale = torch.cat([p.loc for p in parts]), torch.cat([p.scale for p in parts])
            return Normal(loc, scale, validate_args=False)
        if type(first) is KLOnDraws:
            return KLOnDraws(_joined([p.base for p in parts], draws, joined))
    return _Passes(parts, draws, joined)


_Chain = tuple[dict[int, Distribution], dict[int, Distribution], dict[int, Tensor]]
"""What one pass of the chain makes: posteriors, priors and draws, by layer (0-based, bottom first)."""


class _Passes(Distribution):
    """Distributions of batch ``(k_i, B)`` side by side along the first batch dim (flow posteriors,
    which cannot be joined): ``log_prob`` evaluates each on its part of the value, on the very
    draws it made where the value is their concatenation (a flow's log_prob is exact there)."""

    arg_constraints: dict = {}

    def __init__(self, parts: list[Distribution], draws: list[Tensor], joined: Tensor) -> None:
        self.parts, self.draws, self.joined = tuple(parts), tuple(draws), joined
        self.sizes = [p.batch_shape[0] for p in parts]
        batch = torch.Size([sum(self.sizes), *parts[0].batch_shape[1:]])
        super().__init__(batch, parts[0].event_shape, validate_args=False)

    @property
    def mean(self) -> Tensor:
        return torch.cat([p.mean for p in self.parts])

    def log_prob(self, value: Tensor) -> Tensor:
        values = self.draws if value is self.joined else value.split(self.sizes)  # a flow's own draws: exact
        return torch.cat([p.log_prob(v) for p, v in zip(self.parts, values)])


# --------------------------------------------------------------------------- the model


class HierarchicalVAE(nn.Module):
    """A VAE with L ≥ 1 stochastic layers, each a cell with its own posterior and conditional prior.

    Satisfies [`LatentVariableModel`][genvae.protocols.LatentVariableModel], so
    [`fit`][genvae.train.fit], the metrics, the figures and [`save`][genvae.save] take it as they
    take a [`VAE`][genvae.VAE]; with L = 1 it is that VAE. Per-layer KLs are in closed form where
    torch registers one (Gaussian posterior and prior), except below the top with bottom-up
    inference, where the conditioning draw comes after the layer's own (see
    [`KLOnDraws`][genvae.hierarchy.KLOnDraws]).

    The decoder sees z_1 only. Generation is ancestral (`sample`); `encode` gives the top posterior
    (see [`Ladder`][genvae.hierarchy.Ladder]); `decode` takes a top code and sets each lower layer
    to its conditional prior mean; `reconstruct` takes posterior means all the way down;
    `interpolate` decodes, as `decode` does, points between two top posterior means.

    Args:
        encoder: the [`Ladder`][genvae.hierarchy.Ladder]: the cells and the route of inference.
        decoder: z_1 ``(*S, B, *event_1)`` → likelihood parameters, as a VAE's.
        likelihood: parameters → p(x | z_1).
        prior: p(z_L[ | y]), any genvae prior ([`VampPrior`][genvae.priors.VampPrior] with
            ``encoder=`` this model's ladder).

    Raises:
        TypeError: an encoder that is not a ladder of cells.
        ValueError: declared latent sizes of the decoder or the prior that disagree with the cells'.
    """

    label_required = False

    def __init__(self, encoder: Ladder, decoder: Decoder, likelihood: Likelihood, prior: Prior) -> None:
        super().__init__()
        if not all(hasattr(encoder, a) for a in ("cells", "top_down", "features")):
            raise TypeError(f"expected encoder to be a Ladder (cells and a route), got {type(encoder).__name__}")
        attach_parts(self, encoder=encoder, decoder=decoder, likelihood=likelihood, prior=prior)
        dims, top = encoder.latent_dims, len(encoder.cells) - 1
        _agree(
            "decoder.latent_dim",
            dims[0],
            _size(decoder, "latent_dim"),
            "the size of z_1, cells[0].posterior.latent_dim",
        )
        _agree("prior.latent_dim", dims[top], _size(prior, "latent_dim"), f"the top layer's, cells[{top}].posterior")
        if getattr(prior, "encoder", None) is encoder and encoder.num_classes is not None:
            raise ValueError(
                f"expected an unconditional encoder for a prior that shares it (a VampPrior encodes its "
                f"pseudo-inputs without labels), got one with num_classes={encoder.num_classes}"
            )

    @property
    def cells(self) -> tuple[nn.Module, ...]:
        """The cells, bottom first."""
        return self.encoder.cells

    @property
    def down(self) -> tuple[nn.Module, ...]:
        """The cells' projections into the top-down path, bottom first (L − 1, from z_2 up)."""
        return tuple(cell.down for cell in self.cells[1:])

    @property
    def priors(self) -> tuple[nn.Module, ...]:
        """The cells' prior heads p(z_l | z_{l+1}), bottom first (L − 1, below the top)."""
        return tuple(cell.prior_head for cell in self.cells[:-1])

    @property
    def num_layers(self) -> int:
        """L."""
        return len(self.cells)

    @property
    def top_down(self) -> bool:
        """Whether inference runs top-down (else bottom-up)."""
        return bool(self.encoder.top_down)

    @property
    def latent_dim(self) -> int | None:
        """D_L of the top layer, where a part declares it."""
        top = self.encoder.latent_dims[-1]
        return top if top is not None else _size(self.prior, "latent_dim")

    @property
    def latent_shape(self) -> tuple[int, ...] | None:
        """The event shape of the top layer, which `decode` takes: ``(D_L,)`` or a map's ``(C, H, W)``."""
        shape = self.cells[-1].latent_shape
        if shape is None and self.num_classes is None:
            shape = tuple(self.prior().event_shape)
        return shape

    def validate_args(self, enabled: bool = True) -> AbstractContextManager[None]:
        """Within the block, check (``True``) or skip (``False``) the input's values; see
        [`value_checks`][genvae.models.value_checks]."""
        return value_checks(self, enabled)

    # ------------------------------------------------------------------ inference
    def _layers(self, x: Tensor, y: Tensor | None, k: int | None) -> list[LatentLayer]:
        """Each layer's (q, p, z), top first: ``k`` reparameterised draws ``(k, B, *event_l)`` per
        example, or (``k=None``) the posterior means ``(B, *event_l)``.

        The first draw (the top's, top-down; the bottom's, bottom-up) is made for all k at once;
        the chain of cells after it runs in passes of at most [`chunk_size`][genvae.models.chunk_size]
        draws, with the noise that one pass over all k would draw, so that a large k runs in
        bounded memory with the same draws."""
        cells, top = self.cells, self.num_layers - 1
        if self.top_down:
            hs = self.encoder.features(x, y)  # [(B, *F_l)], bottom first
            start = top
        else:
            hs = [_first_block(cells[0].up, x, y)]  # (B, *F_1)
            start = 0
        q = cells[start].infer(hs[start])  # batch (B,)
        first = q.mean if k is None else q.rsample((k,))  # (k, B, *event)
        size = chunk_size(x) if k is not None else None
        parts = [slice(i, i + size) for i in range(0, k, size)] if k is not None else [slice(None)]
        noise = _Noise(k or 1, len(parts))
        chain = self._top_down if self.top_down else self._bottom_up
        passes = [chain(hs, first[part], part, noise, k is None) for part in parts]  # [(qs, ps, zs)]
        zs = {i: torch.cat([p[2][i] for p in passes]) if len(passes) > 1 else passes[0][2][i] for i in passes[0][2]}
        zs[start] = first

        def joined(column: int, i: int) -> Distribution:
            draws = [p[2].get(i, first[part]) for p, part in zip(passes, parts)]
            return _joined([p[column][i] for p in passes], draws, zs[i])

        qs = {i: joined(0, i) for i in passes[0][0]}
        ps = {i: joined(1, i) for i in passes[0][1]}
        qs[start], ps[top] = q, self.prior(y)
        return [self._layer(i, qs[i], ps[i], zs[i]) for i in reversed(range(self.num_layers))]

    def _top_down(self, hs: list[Tensor], z: Tensor, part: slice, noise: _Noise, means: bool) -> _Chain:
        """Layers L−1 … 1 below the top draws ``z``: p from the projection of the layer above, q
        from h_l ‖ t_l, and a draw (or the mean)."""
        qs, ps, zs = {}, {}, {}
        for i in reversed(range(self.num_layers - 1)):  # cells[i] is z_{i+1}
            t = self.cells[i + 1].project(z)  # (*S, B, *T)
            ps[i], qs[i] = self.cells[i].generate(t), self.cells[i].infer(hs[i], t)  # batch (*S, B) each
            z = zs[i] = qs[i].mean if means else noise.draw(i, qs[i], part)
        return qs, ps, zs

    def _bottom_up(self, hs: list[Tensor], z: Tensor, part: slice, noise: _Noise, means: bool) -> _Chain:
        """Layers 2 … L above the bottom draws ``z``, each from q(z_l | z_{l−1}); then the prior of
        each layer below the top from the draw above it, taken on the draws (it was drawn after)."""
        qs, ps, zs = {}, {}, {0: z}
        for i in range(1, self.num_layers):  # cells[i] is z_{i+1}
            qs[i] = self.cells[i].infer(self.cells[i].up(zs[i - 1]))  # q(z_{i+1} | z_i), batch (*S, B)
            zs[i] = qs[i].mean if means else noise.draw(i, qs[i], part)
        for i in range(self.num_layers - 1):
            ps[i] = _kl_on_draws(self.cells[i].generate(self.cells[i + 1].project(zs[i + 1])))
        del zs[0]  # the first draw, made whole
        return qs, ps, zs

    def _layer(self, i: int, q: Distribution, p: Distribution, z: Tensor) -> LatentLayer:
        """Layer ``i`` (0-based, bottom first), its two distributions checked to be over one space."""
        if q.event_shape != p.event_shape:
            top = i == self.num_layers - 1
            prior = f"p(z_{i + 1})" if top else f"p(z_{i + 1} | z_{i + 2})"
            where = "prior" if top else f"cells[{i}].prior_head"
            raise ValueError(
                f"expected {prior} and q(z_{i + 1} | ...) over the same space, got event shapes "
                f"{tuple(p.event_shape)} from {where} and {tuple(q.event_shape)} from cells[{i}].posterior"
            )
        return LatentLayer(q, p, z)

    def terms(self, x: Tensor, y: Tensor | None = None, *, k: int = 1) -> Terms:
        """What every objective needs, for ``k`` reparameterised draws of every layer per example.

        Args:
            x: ``(B, *data_shape)``.
            y: ``(B,)`` labels where the model uses them.
            k: draws per example; each of the k chains is drawn through all L layers, in passes of
                bounded size (see [`chunked_log_likelihood`][genvae.models.chunked_log_likelihood]
                for the decoder's; the cells' passes keep their activations when gradients are on).

        Returns:
            [`Terms`][genvae.terms.Terms]: log p(x | z_1) ``(k, B)`` and the L layers, top first,
            each (q, p, z ``(k, B, *event_l)``); q and p have batch ``(k, B)`` below the first draw.
        """
        check_input(self, x, y)
        layers = self._layers(x, y, positive_int("k", k))
        return Terms(chunked_log_likelihood(self, layers[-1].z, x, y), tuple(layers))

    def elbo(self, x: Tensor, y: Tensor | None = None, *, beta: float = 1.0, k: int = 1) -> ELBOOutput:
        """The ELBO terms of ``x (B, *data_shape)``: [`genvae.models.elbo`][genvae.models.elbo]."""
        return elbo(self, x, y, beta=beta, k=k)

    def forward(self, x: Tensor, y: Tensor | None = None, *, k: int = 1) -> Terms:
        """Same as `terms` (so that wrappers such as DDP see the computation)."""
        return self.terms(x, y, k=k)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """The top posterior q(z_L | x[, y]): batch ``(B,)``, event that of the top layer (see
        [`Ladder`][genvae.hierarchy.Ladder] for bottom-up inference)."""
        check_input(self, x, y)
        return self.encoder(x, y)

    def _descend(self, z: Tensor, generator: torch.Generator | None, mean: bool) -> Tensor:
        """z_L ``(*S, B, *event_L)`` → z_1 through p(z_l | z_{l+1}): its means, or draws."""
        for i in reversed(range(self.num_layers - 1)):
            p = self.cells[i].generate(self.cells[i + 1].project(z))
            z = p.mean if mean else sample_with(p, (), generator)  # (*S, B, *event_i)
        return z

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x | z_L[, y]) for a top code ``z (*S, B, *event_L)``, each lower layer at its conditional
        prior mean: event shape = data shape, batch ``(*S, B)``."""
        return self.likelihood(self.decoder(self._descend(z, None, mean=True), y))

    # ------------------------------------------------------------------ generation
    def sample(
        self, n: int, y: Tensor | None = None, *, generator: torch.Generator | None = None, mean: bool = True
    ) -> Tensor:
        """``(n, *data_shape)`` drawn ancestrally: z_L ~ p(z_L[|y]), z_l ~ p(z_l | z_{l+1}) down to z_1,
        then the mean of p(x | z_1) (or a draw, ``mean=False``); labels ``y (n,)`` for a conditional
        model, a ``generator`` on the model's device for reproducible draws (see
        [`genvae.models.sample`][genvae.models.sample])."""

        def descend(z: Tensor, y: Tensor | None) -> Distribution:  # z_L (n, *event_L) → p(x | z_1)
            return self.likelihood(self.decoder(self._descend(z, generator, mean=False), y))

        return sample(self, n, y, generator=generator, mean=mean, decode=descend)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean of p(x | z_1) with every layer at its posterior mean: ``(B, *data_shape)`` → same shape."""
        check_input(self, x, y)
        return self.likelihood(self.decoder(self._layers(x, y, None)[-1].z, y)).mean

    def interpolate(self, x0: Tensor, x1: Tensor, steps: int = 10, y: Tensor | None = None) -> Tensor:
        """``(steps, *data_shape)`` decoded between two top posterior means (see
        [`genvae.models.interpolate`][genvae.models.interpolate])."""
        return interpolate(self, x0, x1, steps, y)
