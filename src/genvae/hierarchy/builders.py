"""Builders of hierarchical VAEs: the cells, the decoder and the top prior for a data shape.

[`mlp_hierarchy`][genvae.hierarchy.mlp_hierarchy] and
[`conv_hierarchy`][genvae.hierarchy.conv_hierarchy] make every part; [`build_hvae`][genvae.hierarchy.build_hvae]
is the registry's builder of ``--model hvae``, from a run's facts and its options. The model itself
([`HierarchicalVAE`][genvae.hierarchy.HierarchicalVAE]) takes the parts, however made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

from torch import nn

from .._checks import shape_tuple
from ..flows import FlowHead
from ..nets import ConvDecoder, MLPDecoder, ResNetDecoder
from ..priors import StandardNormal, VampPrior
from ..protocols import Likelihood, Prior
from ..registry import register
from .blocks import ConvBlock, ConvGaussianHead, ConvStage, ConvTrunk, GaussianHead, LinearToMap, MapDecoder, MLPBlock
from .cells import GaussianCell, SpatialCell
from .legacy import cells_of
from .model import HierarchicalVAE, Ladder

__all__ = ["TopPrior", "build_hvae", "conv_hierarchy", "mlp_hierarchy", "spatial_hierarchy"]

TopPrior = Prior | Callable[[nn.Module], Prior] | None
"""The top prior a builder takes: a prior, a function of the model's encoder (the
[`Ladder`][genvae.hierarchy.Ladder], whose call is q(z_L | x)) that returns one, such as
``lambda encoder: VampPrior(encoder, 500, (1, 28, 28))``, or None for N(0, I)."""


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
    prior: TopPrior = None,
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
        prior: the top prior, or a function of the model's encoder that returns one
            ([`TopPrior`][genvae.hierarchy.builders.TopPrior]); by default N(0, I).
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
    out_shape = _param_shape(likelihood, shape)
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
    prior: TopPrior = None,
    num_pseudo_inputs: int | None = None,
    activation: type[nn.Module] = nn.Tanh,
    flow: Callable[[int], Sequence[nn.Module]] | None = None,
    spatial_latents: bool = False,
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
        prior: the top prior, or a function of the model's encoder that returns one; by default N(0, I).
        num_pseudo_inputs: a VampPrior at the top with this many pseudo-inputs, sharing the encoder.
        activation: nonlinearity class of the MLP layers and of the first block's output.
        flow: flow posteriors, as in ``mlp_hierarchy``.
        spatial_latents: every layer below the top a map of ``latent_dims[l]`` channels at the
            trunk's resolution (event ``(D_l, h, w)``, a [`SpatialCell`][genvae.hierarchy.SpatialCell]
            with convolutional posterior and prior, as in NVAE and VDVAE), the top a vector of
            ``latent_dims[-1]`` under any genvae prior; the decoder a
            [`MapDecoder`][genvae.hierarchy.MapDecoder]. See `spatial_hierarchy`.

    Raises:
        ValueError: no latent layers, data that are not images, more than one width for the first
            layer, ``blocks`` below 0, or the top-prior conflicts of ``mlp_hierarchy``; with
            ``spatial_latents``, one layer, a label or flow steps.
    """
    shape, dims = _shape_and_dims(data_shape, latent_dims)
    if spatial_latents:
        options = {"channels": channels, "blocks": blocks, "gated": gated, "hidden": hidden, "top_down": top_down}
        if num_classes is not None or flow is not None:
            raise ValueError(
                f"expected num_classes=None and flow=None with spatial latents, got num_classes={num_classes} and "
                f"flow={flow!r}"
            )
        return spatial_hierarchy(shape, dims, likelihood=likelihood, prior=prior, num_pseudo_inputs=num_pseudo_inputs,
                                 activation=activation, **options)  # fmt: skip
    widths = _layer_widths(hidden, len(dims))
    if len(widths[0]) != 1:
        raise ValueError(f"expected one width for the first layer of a conv hierarchy, got hidden[0] = {widths[0]}")
    _check_top(prior, num_pseudo_inputs, num_classes)
    first = ConvBlock(
        shape, widths[0][0], channels=channels, blocks=blocks, gated=gated, num_classes=num_classes,
        activation=activation,
    )  # fmt: skip
    out_shape = _param_shape(likelihood, shape)
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


def _param_shape(likelihood: Likelihood, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The decoder's output per example: the likelihood's ``param_shape``, else the data shape."""
    return tuple(likelihood.param_shape(shape)) if hasattr(likelihood, "param_shape") else shape


def _check_top(prior: TopPrior, num_pseudo_inputs: int | None, num_classes: int | None) -> None:
    if prior is not None and num_pseudo_inputs is not None:
        raise ValueError(
            f"expected prior or num_pseudo_inputs, got both: {type(prior).__name__} and {num_pseudo_inputs}"
        )
    if num_pseudo_inputs is not None and num_classes is not None:
        raise ValueError(
            f"expected num_classes=None with num_pseudo_inputs (a VampPrior encodes its pseudo-inputs without "
            f"labels), got num_classes={num_classes}"
        )
    if prior is not None and not callable(prior):
        raise TypeError(
            f"expected prior to be a Prior, a function encoder -> Prior, or None, got {type(prior).__name__}"
        )


def _model(
    cells: list[nn.Module],
    top_down: bool,
    decoder: nn.Module,
    likelihood: Likelihood,
    prior: TopPrior,
    num_pseudo_inputs: int | None,
    shape: tuple[int, ...],
    top_dim: int,
    top_steps: Sequence[nn.Module] | None = None,
) -> HierarchicalVAE:
    """The model of ``cells`` with its top prior: ``prior`` itself where it is a module, else built
    over the ladder by the function ``prior``, a VampPrior of ``num_pseudo_inputs``, or N(0, I).
    The top posterior becomes a flow of ``top_steps`` unless the prior shares the ladder (a
    VampPrior's mixture is over Gaussian top posteriors)."""

    ladder = Ladder(cells, top_down=top_down)
    if num_pseudo_inputs is not None:
        top: Prior = VampPrior(ladder, num_pseudo_inputs, shape)
    elif isinstance(prior, nn.Module):  # a Prior module is callable too: told apart from a function here
        top = prior
    elif prior is not None:
        top = prior(ladder)
    else:
        top = StandardNormal(top_dim)
    if top_steps is not None and getattr(top, "encoder", None) is not ladder:
        cells[-1].posterior = FlowHead(cells[-1].posterior, top_steps)
    return HierarchicalVAE(ladder, decoder, likelihood, top)


def _assemble(
    shape: tuple[int, ...],
    dims: tuple[int, ...],
    widths: tuple[tuple[int, ...], ...],
    first: nn.Module,
    decoder: Callable[[], nn.Module],
    likelihood: Likelihood,
    top_down: bool,
    prior: TopPrior,
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
    top_steps = None
    if flow is not None:
        if not callable(flow):
            raise TypeError(f"expected flow to be a function latent_dim -> flow steps, got {type(flow).__name__}")
        heads[:top] = [FlowHead(head, flow(dims[i])) for i, head in enumerate(heads[:top])]
        top_steps = flow(dims[top]) if num_pseudo_inputs is None else None  # a VampPrior mixes Gaussian q(z_L | u)
    conditionals = [GaussianHead(widths[i + 1][0], dims[i], activation=activation) for i in range(top)]
    cells = cells_of(up, heads, down, conditionals)
    return _model(cells, top_down, decoder(), likelihood, prior, num_pseudo_inputs, shape, dims[top], top_steps)


def spatial_hierarchy(
    data_shape: Sequence[int],
    latent_dims: Sequence[int] = (8, 32),
    *,
    likelihood: Likelihood,
    channels: Sequence[int] = (32, 64),
    blocks: int = 0,
    gated: bool = False,
    hidden: int | Sequence[int] | Sequence[Sequence[int]] = 300,
    top_down: bool = True,
    prior: TopPrior = None,
    num_pseudo_inputs: int | None = None,
    activation: type[nn.Module] = nn.ReLU,
) -> HierarchicalVAE:
    """A convolutional hierarchy whose layers below the top are latent maps (NVAE, VDVAE).

    With ``channels=(32, 64)`` on 28×28 images and ``latent_dims=(8, 8, 32)``: a
    [`ConvTrunk`][genvae.hierarchy.ConvTrunk] maps x to h_1, 64@7×7; each spatial layer l has a
    [`ConvStage`][genvae.hierarchy.ConvStage] up (h_{l−1} → h_l, 64@7×7), convolutional posterior
    and prior heads ([`ConvGaussianHead`][genvae.hierarchy.ConvGaussianHead], q on h_l ‖ t_l) over
    z_l, 8@7×7, and a ConvStage down (z_l → t_{l−1}); the top layer is a vector z_L of 32 read from
    the flattened h_L through an [`MLPBlock`][genvae.hierarchy.MLPBlock] of ``hidden``, and projected
    into the 64@7×7 path by a [`LinearToMap`][genvae.hierarchy.LinearToMap]; the
    [`MapDecoder`][genvae.hierarchy.MapDecoder] reads z_1. Bottom-up, each layer's block reads the
    map z_{l−1} instead. The top is a vector so that every genvae prior (a VampPrior included)
    fits it.

    Args:
        data_shape: ``(C, H, W)``.
        latent_dims: channels of each spatial layer, bottom first, then D of the top layer; at
            least two layers.
        likelihood: a genvae likelihood; the decoder is built for its ``param_shape``.
        channels: channels of the trunk's stages (the decoder's, reversed); the last is the width
            of every map of the top-down and bottom-up paths.
        blocks: residual blocks per stage of the trunk (0: plain stride-2 convs).
        gated: gated residual blocks instead of plain ones.
        hidden: widths of the top layer's block (the last of one tuple per layer, if so given).
        top_down: top-down inference, else bottom-up.
        prior: the top prior, or a function of the model's encoder that returns one; by default N(0, I).
        num_pseudo_inputs: a VampPrior at the top with this many pseudo-inputs, sharing the encoder.
        activation: nonlinearity class of the blocks.

    Raises:
        ValueError: fewer than two layers, data that are not images, or both ``prior`` and
            ``num_pseudo_inputs``.
    """
    shape, dims = _shape_and_dims(data_shape, latent_dims)
    if len(dims) < 2:
        raise ValueError(f"expected at least two latent layers with spatial latents (the top is a vector), got {dims}")
    _check_top(prior, num_pseudo_inputs, None)
    top, widths = len(dims) - 1, _layer_widths(hidden, len(dims))[-1]
    trunk = ConvTrunk(shape, channels=channels, blocks=blocks, gated=gated)
    c, h, w = trunk.out_shape
    cells: list[nn.Module] = []
    for i in range(top):
        up = trunk if i == 0 else ConvStage(c if top_down else dims[i - 1], c, activation=activation)
        posterior = ConvGaussianHead(2 * c if top_down else c, dims[i])
        down = None if i == 0 else ConvStage(dims[i], c, activation=activation)
        cells.append(SpatialCell(up, posterior, prior_head=ConvGaussianHead(c, dims[i]), down=down))
    source = (c, h, w) if top_down else (dims[top - 1], h, w)
    block = MLPBlock(source, widths[-1], hidden=widths[:-1], activation=activation)
    head = GaussianHead(widths[-1], dims[top], activation=activation)
    cells.append(GaussianCell(block, head, down=LinearToMap(dims[top], (c, h, w), activation=activation)))
    out_shape = _param_shape(likelihood, shape)
    decoder = MapDecoder((dims[0], h, w), out_shape, channels=trunk.channels[::-1], activation=activation)
    return _model(cells, top_down, decoder, likelihood, prior, num_pseudo_inputs, shape, dims[top])


def build_hvae(
    arch: str,
    data_shape: tuple[int, ...],
    latent_dim: int,
    likelihood: Likelihood,
    flow: Callable[[int], Sequence[nn.Module]] | None = None,
    num_classes: int | None = None,
    prior: TopPrior = None,
    *,
    layers: int = 2,
    inference: Literal["top-down", "bottom-up"] = "top-down",
    hidden: tuple[int, ...] = (400,),
    channels: tuple[int, ...] = (32, 64),
    spatial_latents: bool = False,
    latent_channels: int = 8,
) -> HierarchicalVAE:
    """A hierarchical VAE of L stochastic layers of ``latent_dim`` each (the registry's ``hvae``).

    ``arch`` ``"mlp"`` builds [`mlp_hierarchy`][genvae.hierarchy.mlp_hierarchy]; ``"conv"`` and
    ``"resnet"`` build [`conv_hierarchy`][genvae.hierarchy.conv_hierarchy], the latter with one
    residual block per stage; every nonlinearity is a ReLU.

    Args:
        arch: the run's architecture: ``"mlp"``, ``"conv"`` or ``"resnet"``.
        data_shape: the shape of one example.
        latent_dim: D of each vector layer.
        likelihood: the likelihood p(x | z_1).
        flow: a function latent_dim -> flow steps for each posterior, or None.
        num_classes: condition the data-facing block and the decoder on a label (None: unconditional).
        prior: the top prior: a Prior, a function encoder -> Prior (a VampPrior over the top
            posterior), or None for N(0, I).
        layers: stochastic layers L.
        inference: the route of inference: top-down (Ladder VAE, NVAE) or bottom-up (IWAE).
        hidden: widths of each layer's deterministic block (conv: the first one's output width).
        channels: channels of the conv stages (conv and resnet).
        spatial_latents: every layer below the top a latent map of ``latent_channels`` channels
            (conv and resnet; NVAE, https://arxiv.org/abs/2007.03898).
        latent_channels: channels of each spatial layer's latent map.

    Raises:
        ValueError: an unknown arch, conv layers for data that are not images, or options that
            do not fit together (spatial latents with the mlp arch, a label or a flow).
    """
    if arch not in ("mlp", "conv", "resnet"):
        raise ValueError(f"expected arch 'mlp', 'conv' or 'resnet', got {arch!r}")
    if inference not in ("top-down", "bottom-up"):
        raise ValueError(f"expected inference 'top-down' or 'bottom-up', got {inference!r}")
    top_down = inference == "top-down"
    common = {"likelihood": likelihood, "top_down": top_down, "prior": prior, "activation": nn.ReLU}
    if arch == "mlp":
        if spatial_latents:
            raise ValueError("expected arch 'conv' or 'resnet' with spatial latents, got 'mlp'")
        dims = (latent_dim,) * layers
        return mlp_hierarchy(data_shape, dims, hidden=hidden, num_classes=num_classes, flow=flow, **common)
    blocks = int(arch == "resnet")
    if spatial_latents:
        dims = (latent_channels,) * (layers - 1) + (latent_dim,)
        return conv_hierarchy(data_shape, dims, channels=channels, blocks=blocks, hidden=hidden[0],
                              num_classes=num_classes, flow=flow, spatial_latents=True, **common)  # fmt: skip
    return conv_hierarchy(data_shape, (latent_dim,) * layers, channels=channels, blocks=blocks, hidden=hidden[0],
                          num_classes=num_classes, flow=flow, **common)  # fmt: skip


# The model a run names "hvae": registered beside its builder, which the command line calls.
register("model", "hvae", build=build_hvae, provides={"conditional": False})(HierarchicalVAE)
