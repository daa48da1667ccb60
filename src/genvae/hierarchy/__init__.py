"""Hierarchical VAEs: L stochastic layers, inferred top-down (Ladder VAE, NVAE) or bottom-up (IWAE).

Layers are numbered from the data up, z_1 … z_L; a model's cells are listed bottom first. Each
layer is one cell (module ``cells``) that owns its block of the
inference network, its posterior head, its prior head and the projection of its code into the
top-down path. The generative model is the same for both routes:

    z_L ~ p(z_L | y)                           the model's Prior part (any genvae prior)
    t_l = cells[l+1].project(z_{l+1})          deterministic top-down features, l = L−1 … 1
    z_l ~ p(z_l | z_{l+1}) = cells[l].generate(t_l)
    x ~ p(x | z_1) = likelihood(decoder(z_1, y))

Top-down inference (Sønderby et al. 2016, https://arxiv.org/abs/1602.02282; Vahdat & Kautz
2020, https://arxiv.org/abs/2007.03898) makes one deterministic pass up the data and then draws
from the top, sharing t_l with the prior:

    h_1 = cells[1].up(x[, y]),  h_l = cells[l].up(h_{l−1})
    q(z_L | x) = cells[L].infer(h_L)
    q(z_l | x, z_{>l}) = cells[l].infer(h_l, t_l)          the posterior head on h_l ‖ t_l

Bottom-up inference (the two-layer model of Burda et al. 2015, https://arxiv.org/abs/1509.00519)
draws from the bottom:

    q(z_1 | x) = cells[1].infer(cells[1].up(x[, y])),  q(z_l | z_{l−1}) = cells[l].infer(cells[l].up(z_{l−1}))

``model.terms`` returns the layers top first, which every objective
([`genvae.objectives`][genvae.objectives]) reads unchanged. A layer is a vector of D latents
([`GaussianCell`][genvae.hierarchy.GaussianCell]) or a map ``(C, H, W)``
([`SpatialCell`][genvae.hierarchy.SpatialCell]); a head may return any distribution over its
layer: with ``flow=`` the builders make the vector posteriors [`FlowHead`][genvae.flows.FlowHead]s.

Modules: ``blocks`` (deterministic blocks and heads), ``cells``, ``model`` (the
[`Ladder`][genvae.hierarchy.Ladder] and [`HierarchicalVAE`][genvae.hierarchy.HierarchicalVAE]),
``builders`` ([`mlp_hierarchy`][genvae.hierarchy.mlp_hierarchy],
[`conv_hierarchy`][genvae.hierarchy.conv_hierarchy], [`build_hvae`][genvae.hierarchy.build_hvae]),
``legacy`` (the 0.2 layout and [`from_ladder`][genvae.hierarchy.from_ladder]).
"""

from .blocks import ConvBlock, ConvGaussianHead, ConvStage, ConvTrunk, GaussianHead, LinearToMap, MapDecoder, MLPBlock
from .builders import TopPrior, build_hvae, conv_hierarchy, mlp_hierarchy, spatial_hierarchy
from .cells import GaussianCell, KLOnDraws, SpatialCell
from .legacy import LadderEncoder, cells_of, from_ladder
from .model import HierarchicalVAE, Ladder

__all__ = [
    "ConvBlock",
    "ConvGaussianHead",
    "ConvStage",
    "ConvTrunk",
    "GaussianCell",
    "GaussianHead",
    "HierarchicalVAE",
    "KLOnDraws",
    "Ladder",
    "LadderEncoder",
    "LinearToMap",
    "MLPBlock",
    "MapDecoder",
    "SpatialCell",
    "TopPrior",
    "build_hvae",
    "cells_of",
    "conv_hierarchy",
    "from_ladder",
    "mlp_hierarchy",
    "spatial_hierarchy",
]
