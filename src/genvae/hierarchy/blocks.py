"""The deterministic blocks and the heads of a hierarchy's cells.

Vector layers (event ``(D,)``): [`MLPBlock`][genvae.hierarchy.MLPBlock] and
[`ConvBlock`][genvae.hierarchy.ConvBlock] make flat features ``(*S, B, F)``,
[`GaussianHead`][genvae.hierarchy.GaussianHead] turns them into N(μ, diag σ²).

Spatial layers (event ``(C, H, W)``, as in NVAE, https://arxiv.org/abs/2007.03898, and VDVAE,
https://arxiv.org/abs/2011.10650): [`ConvTrunk`][genvae.hierarchy.ConvTrunk] and
[`ConvStage`][genvae.hierarchy.ConvStage] make feature maps ``(*S, B, C, H, W)``,
[`ConvGaussianHead`][genvae.hierarchy.ConvGaussianHead] turns them into a Gaussian per element,
[`LinearToMap`][genvae.hierarchy.LinearToMap] projects a vector code into a map, and
[`MapDecoder`][genvae.hierarchy.MapDecoder] decodes a spatial code into the likelihood's
parameters. Every block passes leading sample dims ``*S`` through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from .._checks import optional_num_classes, positive_int, shape_tuple
from ..nets import (
    _activation,
    _flag,
    _gaussian,
    _image_shape,
    _map_sizes,
    _mlp,
    _upsampling,
    _with_label,
    _with_label_planes,
    residual_trunk,
)
from ..registry import register

__all__ = [
    "ConvBlock",
    "ConvGaussianHead",
    "ConvStage",
    "ConvTrunk",
    "GaussianHead",
    "LinearToMap",
    "MLPBlock",
    "MapDecoder",
]


def _widths(name: str, value: int | Sequence[int]) -> tuple[int, ...]:
    """Hidden widths: a positive int, a tuple of them, or ``()`` for none."""
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 0:
        return ()
    return shape_tuple(name, value)


def on_maps(net: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``net`` (a 2-d conv stack, ``(N, C, H, W)`` → ``(N, C', H', W')``) applied to maps with any
    leading dims: ``x (*S, B, C, H, W)`` → ``(*S, B, C', H', W')``."""
    lead = x.shape[:-3]
    return net(x.reshape(-1, *x.shape[-3:])).unflatten(0, lead)  # (*S, B, C', H', W')


@register("block", "mlp-block")
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
        return self.net(_with_label(h, y, self.num_classes))  # reads (*S, B, F + K)


@register("block", "conv-block")
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
        self.trunk = residual_trunk(self.data_shape[0] + (self.num_classes or 0), self.channels, blocks, gated=gated)
        hs, ws = _map_sizes(self.data_shape, self.channels)
        self.out = nn.Sequential(nn.Linear(self.channels[-1] * hs[-1] * ws[-1], self.out_features), self.activation())

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``x (B, C, H, W)``, ``y (B,)`` → ``(B, out_features)``."""
        return self.out(self.trunk(_with_label_planes(x, y, self.num_classes)).flatten(start_dim=1))


@register("block", "gaussian-head")
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


@register("block", "conv-trunk")
class ConvTrunk(nn.Module):
    """``x (B, C, H, W)`` [‖ label planes] → stride-2 convs → a feature map ``(B, channels[-1], h, w)``.

    The data-facing block of a hierarchy with spatial latents: a
    [`ConvBlock`][genvae.hierarchy.ConvBlock] without the flatten and the linear layer, so that the
    layer above reads a map ([`residual_trunk`][genvae.nets.residual_trunk], ending with a ReLU).

    Args:
        data_shape: ``(C, H, W)``.
        channels: channels of each stage; one halving of the spatial size per stage.
        blocks: residual blocks per stage (0: plain stride-2 convs).
        gated: gated residual blocks (Tomczak & Welling 2018) instead of plain ones.
        num_classes: condition on a label (``None``: unconditional).
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        *,
        channels: Sequence[int] = (32, 64),
        blocks: int = 0,
        gated: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.data_shape = _image_shape(data_shape, "ConvTrunk")
        self.channels = shape_tuple("channels", channels)
        self.blocks = blocks
        self.gated = _flag("gated", gated)
        self.num_classes = optional_num_classes(num_classes)
        self.trunk = residual_trunk(self.data_shape[0] + (self.num_classes or 0), self.channels, blocks, gated=gated)
        hs, ws = _map_sizes(self.data_shape, self.channels)
        self.out_shape = (self.channels[-1], hs[-1], ws[-1])

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``x (B, C, H, W)``, ``y (B,)`` → ``(B, *out_shape)``."""
        return self.trunk(_with_label_planes(x, y, self.num_classes))


@register("block", "conv-stage")
class ConvStage(nn.Module):
    """``(*S, B, in_channels, H, W)`` → 3×3 conv (stride 1) → activation → ``(*S, B, out_channels, H, W)``.

    A deterministic block between spatial layers: up the inference network (h_{l−1} → h_l, or
    z_{l−1} → features) and down the generative one (z_l → t_{l−1}).

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map.
        activation: nonlinearity class after the conv.
    """

    def __init__(self, in_channels: int, out_channels: int, *, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.activation = _activation(activation)
        self.net = nn.Sequential(nn.Conv2d(self.in_channels, self.out_channels, 3, padding=1), self.activation())

    def forward(self, h: Tensor) -> Tensor:
        """``h (*S, B, in_channels, H, W)`` → ``(*S, B, out_channels, H, W)``."""
        return on_maps(self.net, h)


@register("block", "conv-gaussian-head")
class ConvGaussianHead(nn.Module):
    """A feature map ``(*S, B, in_channels, H, W)`` → N(μ, diag σ²) over ``(latent_channels, H, W)``.

    One 3×3 conv gives (μ, log σ²) per element; σ = exp(½ · logvar), not clamped, as in
    [`GaussianHead`][genvae.hierarchy.GaussianHead]. The distribution is
    ``Independent(Normal(μ, σ), 3)``: batch ``(*S, B)``, event ``(latent_channels, H, W)``.

    Args:
        in_channels: channels of the features.
        latent_channels: channels C of the layer's latent map.
    """

    def __init__(self, in_channels: int, latent_channels: int) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.latent_channels = positive_int("latent_channels", latent_channels)
        self.net = nn.Conv2d(self.in_channels, 2 * self.latent_channels, 3, padding=1)

    def forward(self, h: Tensor) -> Distribution:
        """``h (*S, B, in_channels, H, W)`` → batch ``(*S, B)``, event ``(latent_channels, H, W)``."""
        stats = on_maps(self.net, h)  # (*S, B, 2C, H, W)
        loc, logvar = stats.to(torch.promote_types(stats.dtype, torch.float32)).chunk(2, dim=-3)
        return Independent(Normal(loc, (0.5 * logvar).exp(), validate_args=False), 3, validate_args=False)


@register("block", "linear-to-map")
class LinearToMap(nn.Module):
    """A vector ``(*S, B, in_features)`` → Linear → activation → a map ``(*S, B, *out_shape)``.

    Projects a vector layer's code into the top-down path of spatial layers below it.

    Args:
        in_features: the width of the input (D of the layer above).
        out_shape: ``(C, H, W)`` of the map.
        activation: nonlinearity class after the linear layer.
    """

    def __init__(self, in_features: int, out_shape: Sequence[int], *, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.in_features = positive_int("in_features", in_features)
        self.out_shape = shape_tuple("out_shape", out_shape)
        self.activation = _activation(activation)
        self.net = nn.Sequential(nn.Linear(self.in_features, math.prod(self.out_shape)), self.activation())

    def forward(self, z: Tensor) -> Tensor:
        """``z (*S, B, in_features)`` → ``(*S, B, *out_shape)``."""
        return self.net(z).unflatten(-1, self.out_shape)


@register("block", "map-decoder")
class MapDecoder(nn.Module):
    """A spatial code ``(*S, B, *latent_shape)`` → 3×3 conv → stride-2 transposed convs → ``(*S, B, C, H, W)``.

    The decoder of a hierarchy whose bottom layer is spatial: the mirror of a
    [`ConvTrunk`][genvae.hierarchy.ConvTrunk]. A 3×3 conv lifts the code to ``channels[0]``, then
    each transposed conv doubles the size (output paddings make odd sizes come out exact), the
    last to the output channels, with no activation after it.

    Args:
        latent_shape: ``(c, h, w)`` of the code, h and w the trunk's output size.
        data_shape: ``(C, H, W)`` of the output: the likelihood's parameter shape.
        channels: input channels of each transposed conv (the last maps to C).
        activation: nonlinearity class between layers.
    """

    def __init__(
        self,
        latent_shape: Sequence[int],
        data_shape: Sequence[int],
        *,
        channels: Sequence[int] = (64, 32),
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.latent_shape = _image_shape(latent_shape, "MapDecoder's latent_shape")
        self.data_shape = _image_shape(data_shape, "MapDecoder")
        self.channels = shape_tuple("channels", channels)
        self.activation = _activation(activation)
        c, h, w = self.data_shape
        hs, ws = _map_sizes(self.data_shape, self.channels)
        if self.latent_shape[1:] != (hs[-1], ws[-1]):
            raise ValueError(
                f"expected a latent map of size {hs[-1]}x{ws[-1]} ({len(self.channels)} halvings of {h}x{w}), "
                f"got latent_shape {self.latent_shape}"
            )
        layers: list[nn.Module] = [nn.Conv2d(self.latent_shape[0], self.channels[0], 3, padding=1)]
        for c_in, c_out, pad in _upsampling(self.channels, c, hs, ws):
            layers += [self.activation(), nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``z (*S, B, *latent_shape)`` → ``(*S, B, *data_shape)``; ``y`` is ignored (unconditional)."""
        return on_maps(self.net, z)
