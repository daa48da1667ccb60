"""Hierarchies in the 0.2 layout: an inference network of blocks and heads beside parallel lists.

Model files written by genvae 0.2 describe a hierarchy as
``HierarchicalVAE(encoder=LadderEncoder(up, heads, top_down), down, priors, decoder, likelihood,
prior)``. [`from_ladder`][genvae.hierarchy.from_ladder] turns those parts, the very module objects,
into today's model of cells, so weights read into them carry over.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..protocols import Decoder, Likelihood, Prior
from ..registry import register
from .cells import GaussianCell, _parts
from .model import HierarchicalVAE, Ladder

__all__ = ["LadderEncoder", "cells_of", "from_ladder"]


@register("block", "ladder-encoder")
class LadderEncoder(nn.Module):
    """The 0.2 inference network: per layer, bottom first, a deterministic block and a posterior head.

    A container of the parts [`from_ladder`][genvae.hierarchy.from_ladder] reads (its state-dict
    names are the 0.2 files'); today's route of inference is the [`Ladder`][genvae.hierarchy.Ladder].

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
        ValueError: no layers, or not one head per block.
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

    @property
    def up(self) -> tuple[nn.Module, ...]:
        """The blocks, bottom first."""
        return tuple(self.up_blocks)

    @property
    def heads(self) -> tuple[nn.Module, ...]:
        """The posterior heads, bottom first."""
        return tuple(self.head_blocks)


def cells_of(
    up: Sequence[nn.Module], heads: Sequence[nn.Module], down: Sequence[nn.Module], conditionals: Sequence[nn.Module]
) -> list[GaussianCell]:
    """The L cells of parallel lists, bottom first: cell l takes ``up[l]``, ``heads[l]``, the prior
    head ``conditionals[l]`` (below the top) and the projection ``down[l − 1]`` (above the bottom).

    Raises:
        ValueError: not L − 1 projections and prior heads for L blocks and heads.
    """
    blocks, posteriors = _parts("up", up), _parts("heads", heads)
    projections, prior_heads = _parts("down", down), _parts("conditionals", conditionals)
    top = len(blocks) - 1
    if len(posteriors) != len(blocks):
        raise ValueError(f"expected one head per block, got {len(blocks)} blocks in up and {len(posteriors)} heads")
    if len(projections) != top or len(prior_heads) != top:
        raise ValueError(
            f"expected L - 1 = {top} top-down blocks and conditional priors (one per layer below the "
            f"top), got {len(projections)} in down and {len(prior_heads)} in conditionals"
        )
    return [
        GaussianCell(
            blocks[i],
            posteriors[i],
            prior_head=prior_heads[i] if i < top else None,
            down=projections[i - 1] if i else None,
        )
        for i in range(len(blocks))
    ]


def from_ladder(
    encoder: LadderEncoder,
    down: Sequence[nn.Module],
    conditionals: Sequence[nn.Module],
    decoder: Decoder,
    likelihood: Likelihood,
    prior: Prior,
) -> HierarchicalVAE:
    """Today's [`HierarchicalVAE`][genvae.hierarchy.HierarchicalVAE] of the 0.2 layout's parts,
    reusing the very module objects (so weights read into them carry over).

    Args:
        encoder: a [`LadderEncoder`][genvae.hierarchy.LadderEncoder]: blocks ``up``, posterior
            ``heads`` and the route ``top_down``.
        down: the L − 1 top-down blocks, bottom first (``down[l]`` reads z_{l+2}).
        conditionals: the L − 1 conditional priors, bottom first (0.2's ``priors``).
        decoder: z_1 → likelihood parameters.
        likelihood: parameters → p(x | z_1).
        prior: the top prior; a [`VampPrior`][genvae.priors.VampPrior] over ``encoder`` is given
            the new model's [`Ladder`][genvae.hierarchy.Ladder], which computes the same q(z_L | x).

    Returns:
        The model, whose log-weights for the same draws are those of the 0.2 model, to the bit.
    """

    if not all(hasattr(encoder, a) for a in ("up", "heads", "top_down")):
        raise TypeError(
            f"expected encoder to be a LadderEncoder (blocks, heads and a route), got {type(encoder).__name__}"
        )
    ladder = Ladder(cells_of(encoder.up, encoder.heads, down, conditionals), top_down=encoder.top_down)
    if getattr(prior, "encoder", None) is encoder:
        prior.encoder = ladder  # type: ignore[union-attr]
    return HierarchicalVAE(ladder, decoder, likelihood, prior)
