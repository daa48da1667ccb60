"""Ready-made encoders and decoders: MLPs for any data shape, stride-2 conv stacks for images, and
residual conv nets for images (plain or gated residual blocks).

Encoders return q(z | x[, y]) = N(μ, diag σ²) as ``Independent(Normal(μ, σ), 1)`` with
σ = exp(½ · logvar); log-variances are not clamped. Decoders return likelihood parameters (logits
or means) of the data shape and pass leading sample dimensions through. With ``num_classes`` set,
a one-hot label is concatenated to the encoder input and to z (a conditional VAE).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from ._checks import optional_num_classes, positive_int, shape_tuple
from .registry import register

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "GatedConv2d",
    "MLPDecoder",
    "MLPEncoder",
    "ResNetDecoder",
    "ResNetEncoder",
    "ResidualBlock",
    "residual_trunk",
]


def _hidden(value: int | Sequence[int]) -> tuple[int, ...]:
    return shape_tuple("hidden", value)


def _activation(value: object) -> type[nn.Module]:
    if not (isinstance(value, type) and issubclass(value, nn.Module)):
        raise TypeError(f"expected activation to be an nn.Module class such as nn.ReLU, got {value!r}")
    return value


def _one_hot(y: Tensor | None, num_classes: int | None, like: Tensor) -> Tensor | None:
    """One-hot ``(B, K)`` of ``like``'s dtype, broadcast to ``like``'s leading dims; None if unconditional."""
    if num_classes is None:
        return None
    if y is None:
        raise ValueError(f"expected a label tensor y of shape (B,) for a net with num_classes={num_classes}, got None")
    # A comparison rather than F.one_hot, which reads the labels' range on the host (a sync, and a
    # data-dependent value that tracing cannot see); the model checks the labels' range once.
    onehot = (y.unsqueeze(-1) == torch.arange(num_classes, device=y.device)).to(like.dtype)  # (B, K)
    return onehot.expand(*like.shape[:-1], num_classes)


def _with_label_planes(x: Tensor, y: Tensor | None, num_classes: int | None) -> Tensor:
    """``x (B, C, H, W)`` with the one-hot label of ``y (B,)`` appended as K constant channels,
    ``(B, C + K, H, W)``; ``x`` itself when unconditional."""
    onehot = _one_hot(y, num_classes, x[:, 0, 0, :1])  # (B, K)
    if onehot is None:
        return x
    planes = onehot[:, :, None, None].expand(-1, -1, *x.shape[-2:])  # (B, K, H, W)
    return torch.cat([x, planes], dim=1)


def _with_label(h: Tensor, y: Tensor | None, num_classes: int | None) -> Tensor:
    """``h (*S, B, F)`` with the one-hot label of ``y (B,)`` appended, ``(*S, B, F + K)``; ``h``
    itself when unconditional."""
    onehot = _one_hot(y, num_classes, h)
    return h if onehot is None else torch.cat([h, onehot], dim=-1)


def _mlp(sizes: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _mlp_arguments(
    data_shape: object, latent_dim: object, hidden: int | Sequence[int], num_classes: object, activation: object
) -> tuple[tuple[int, ...], int, tuple[int, ...], int | None, type[nn.Module]]:
    """An MLP net's arguments, checked, in this order; the net keeps each as the attribute of its
    name, from which a saved model rebuilds it."""
    return (
        shape_tuple("data_shape", data_shape),
        positive_int("latent_dim", latent_dim),
        _hidden(hidden),
        optional_num_classes(num_classes),
        _activation(activation),
    )


def _gaussian(stats: Tensor) -> Distribution:
    """``(B, 2D)`` → Independent(Normal(μ, exp(½ logvar)), 1) with batch ``(B,)``, event ``(D,)``.

    The parameters are float32 at least: under bf16 autocast the head's matrix product is bf16,
    and densities computed in it would keep three significant digits."""
    loc, logvar = stats.to(torch.promote_types(stats.dtype, torch.float32)).chunk(2, dim=-1)
    return Independent(Normal(loc, (0.5 * logvar).exp(), validate_args=False), 1, validate_args=False)


@register("encoder", "mlp")
class MLPEncoder(nn.Module):
    """x ``(B, *data_shape)`` → flatten [‖ one-hot y] → hidden layers → (μ, logvar) ``(B, D)`` each.

    Args:
        data_shape: shape of one example, e.g. ``(1, 28, 28)``.
        latent_dim: D.
        hidden: sizes of the hidden layers.
        num_classes: condition on a label with this many classes (``None``: unconditional).
        activation: nonlinearity class between layers.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        *,
        hidden: int | Sequence[int] = (400,),
        num_classes: int | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.data_shape, self.latent_dim, self.hidden, self.num_classes, self.activation = _mlp_arguments(
            data_shape, latent_dim, hidden, num_classes, activation
        )
        n_in = int(torch.tensor(self.data_shape).prod()) + (self.num_classes or 0)
        self.net = _mlp((n_in, *self.hidden, 2 * self.latent_dim), self.activation)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """``x (B, *data_shape)``, ``y (B,)`` → q(z | x[, y]), batch ``(B,)``, event ``(D,)``."""
        h = x.flatten(start_dim=x.dim() - len(self.data_shape))  # (B, C·H·W)
        return _gaussian(self.net(_with_label(h, y, self.num_classes)))  # reads (B, C·H·W + K)


@register("decoder", "mlp")
class MLPDecoder(nn.Module):
    """z ``(*S, B, D)`` [‖ one-hot y] → hidden layers → parameters ``(*S, B, *data_shape)``.

    Args:
        latent_dim: D.
        data_shape: shape of one example.
        hidden: sizes of the hidden layers.
        num_classes: condition on a label with this many classes (``None``: unconditional).
        activation: nonlinearity class between layers.
    """

    def __init__(
        self,
        latent_dim: int,
        data_shape: Sequence[int],
        *,
        hidden: int | Sequence[int] = (400,),
        num_classes: int | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.data_shape, self.latent_dim, self.hidden, self.num_classes, self.activation = _mlp_arguments(
            data_shape, latent_dim, hidden, num_classes, activation
        )
        n_out = int(torch.tensor(self.data_shape).prod())
        self.net = _mlp((self.latent_dim + (self.num_classes or 0), *self.hidden, n_out), self.activation)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``z (*S, B, D)``, ``y (B,)`` → ``(*S, B, *data_shape)``."""
        return self.net(_with_label(z, y, self.num_classes)).unflatten(-1, self.data_shape)  # reads (*S, B, D + K)


def _halvings(size: int, n: int) -> list[int]:
    """Spatial sizes after each of ``n`` stride-2, pad-1, 3×3 convs: ``[size, ⌈size/2⌉, …]``."""
    sizes = [size]
    for _ in range(n):
        sizes.append((sizes[-1] - 1) // 2 + 1)
    return sizes


def _image_shape(value: object, owner: str) -> tuple[int, ...]:
    shape = shape_tuple("data_shape", value)
    if len(shape) != 3:
        raise ValueError(f"expected data_shape (C, H, W) for {owner}, got {shape}")
    return shape


def _conv_arguments(
    owner: str, data_shape: object, latent_dim: object, channels: object, hidden: object, num_classes: object
) -> tuple[tuple[int, ...], int, tuple[int, ...], int, int | None]:
    """The arguments every conv net takes, checked, in this order (``owner`` names the net in an
    error); the net keeps each as the attribute of its name, from which a saved model rebuilds it."""
    return (
        _image_shape(data_shape, owner),
        positive_int("latent_dim", latent_dim),
        shape_tuple("channels", channels),
        positive_int("hidden", hidden),
        optional_num_classes(num_classes),
    )


def _map_sizes(data_shape: tuple[int, ...], channels: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """Heights and widths of ``(C, H, W)`` images after each stride-2 stage: ``[H, ⌈H/2⌉, …]``, ``[W, …]``."""
    return _halvings(data_shape[1], len(channels)), _halvings(data_shape[2], len(channels))


def _encoder_head(in_features: int, hidden: int, latent_dim: int) -> nn.Sequential:
    """``(B, in_features)`` → a hidden layer and a ReLU → (μ, logvar), ``(B, 2D)``."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))


def _decoder_head(in_features: int, hidden: int, start: tuple[int, int, int]) -> list[nn.Module]:
    """``(B, in_features)`` → a hidden layer and a ReLU → the first map ``start``, flattened."""
    return [nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, start[0] * start[1] * start[2])]


def _upsampling(
    channels: tuple[int, ...], out_channels: int, hs: list[int], ws: list[int]
) -> list[tuple[int, int, tuple[int, int]]]:
    """``(c_in, c_out, output_padding)`` of each stride-2 3×3 transposed conv of a decoder that
    mirrors an encoder of stage sizes ``hs``, ``ws``: ``channels`` in, the last to ``out_channels``;
    each padding (0 or 1) makes the output exactly the size of the encoder's map one stage up."""
    stages = []
    for i, (c_in, c_out) in enumerate(zip(channels, (*channels[1:], out_channels))):
        h_in, w_in = hs[-1 - i], ws[-1 - i]
        h_t, w_t = hs[-2 - i], ws[-2 - i]
        stages.append((c_in, c_out, (h_t - 2 * h_in + 1, w_t - 2 * w_in + 1)))
    return stages


def _decode_maps(z: Tensor, head: nn.Module, start: tuple[int, int, int], body: nn.Module) -> Tensor:
    """``z (*S, B, F)`` → ``head`` → maps ``(S·B, *start)`` → ``body`` → ``(*S, B, C, H, W)``."""
    lead = z.shape[:-1]
    h = head(z.reshape(-1, z.shape[-1])).unflatten(-1, start)  # (S·B, c0, h0, w0)
    return body(h).unflatten(0, lead)  # (*S, B, C, H, W)


@register("encoder", "conv", requires={"image": True})
class ConvEncoder(nn.Module):
    """Stride-2 3×3 convs ``C[+K] → channels[0] → …`` then a hidden layer → (μ, logvar).

    Sizes follow the image: 28×28 with two convs gives 14×14 then 7×7. With ``num_classes``, the
    one-hot label is concatenated to the image as K constant channels.

    Args:
        data_shape: ``(C, H, W)``.
        latent_dim: D.
        channels: output channels of each conv.
        hidden: width of the fully connected layer.
        num_classes: condition on a label (``None``: unconditional).
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        *,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.data_shape, self.latent_dim, self.channels, self.hidden, self.num_classes = _conv_arguments(
            "ConvEncoder", data_shape, latent_dim, channels, hidden, num_classes
        )
        convs: list[nn.Module] = []
        c_in = self.data_shape[0] + (self.num_classes or 0)
        for c_out in self.channels:
            convs += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
        self.convs = nn.Sequential(*convs)
        hs, ws = _map_sizes(self.data_shape, self.channels)
        self.head = _encoder_head(c_in * hs[-1] * ws[-1], self.hidden, self.latent_dim)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """``x (B, C, H, W)``, ``y (B,)`` → q(z | x[, y]), batch ``(B,)``, event ``(D,)``."""
        h = rearrange(self.convs(_with_label_planes(x, y, self.num_classes)), "b c h w -> b (c h w)")
        return _gaussian(self.head(h))


@register("decoder", "conv", requires={"image": True})
class ConvDecoder(nn.Module):
    """z [‖ one-hot y] → hidden layer → ``channels[0]×h×w`` → stride-2 transposed convs → ``(C, H, W)``.

    Mirrors [`ConvEncoder`][genvae.nets.ConvEncoder]: with ``channels=(64, 32)`` on 28×28 it maps 64@7×7 → 32@14×14 →
    C@28×28; output paddings are chosen so odd sizes come out exact.

    Args:
        latent_dim: D.
        data_shape: ``(C, H, W)``.
        channels: input channels of each transposed conv (the last maps to C).
        hidden: width of the fully connected layer.
        num_classes: condition on a label (``None``: unconditional).
    """

    def __init__(
        self,
        latent_dim: int,
        data_shape: Sequence[int],
        *,
        channels: Sequence[int] = (64, 32),
        hidden: int = 128,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.data_shape, self.latent_dim, self.channels, self.hidden, self.num_classes = _conv_arguments(
            "ConvDecoder", data_shape, latent_dim, channels, hidden, num_classes
        )
        hs, ws = _map_sizes(self.data_shape, self.channels)
        self.start = (self.channels[0], hs[-1], ws[-1])
        self.head = nn.Sequential(
            *_decoder_head(self.latent_dim + (self.num_classes or 0), self.hidden, self.start), nn.ReLU()
        )
        layers: list[nn.Module] = []
        for i, (c_in, c_out, pad) in enumerate(_upsampling(self.channels, self.data_shape[0], hs, ws)):
            if i > 0:
                layers.append(nn.ReLU())
            layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``z (*S, B, D)``, ``y (B,)`` → ``(*S, B, C, H, W)``."""
        return _decode_maps(_with_label(z, y, self.num_classes), self.head, self.start, self.deconvs)


# --------------------------------------------------------------------------- residual conv nets


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected {name} to be a bool, got {type(value).__name__} {value!r}")
    return value


@register("block", "gated-conv2d")
class GatedConv2d(nn.Module):
    """Gated convolution h = (W ∗ x + b) ⊙ σ(V ∗ x + c), stride 1, padding ``kernel_size // 2``.

    The layer of the VampPrior paper's conv nets
    ([Tomczak & Welling 2018](https://arxiv.org/abs/1705.07120)); ``h`` holds (W, b), ``g`` holds
    (V, c). With an odd kernel the output has the input's spatial size.

    Args:
        in_channels: channels of x.
        out_channels: channels of h.
        kernel_size: side of both square kernels.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        pad = self.kernel_size // 2
        self.h = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, padding=pad)
        self.g = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, padding=pad)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C_in, H, W)`` → ``(B, C_out, H, W)`` for an odd kernel."""
        return self.h(x) * torch.sigmoid(self.g(x))


class ResidualBlock(nn.Module):
    """x + F(x) at a fixed number of channels and spatial size; two 3×3 convs in F.

    Plain (``gated=False``), pre-activation as in [He et al. 2016](https://arxiv.org/abs/1603.05027):
    F(x) = conv2(relu(conv1(relu(x)))). Gated (``gated=True``), two
    [`GatedConv2d`][genvae.nets.GatedConv2d] layers as in the VampPrior paper
    ([Tomczak & Welling 2018](https://arxiv.org/abs/1705.07120)): F(x) = conv2(conv1(x)). Either way
    the skip path is the identity, so a block whose ``conv2`` is zero is the identity.

    Args:
        channels: channels of x and of F's hidden layer.
        gated: gated convs in F instead of ReLU and plain convs.
    """

    def __init__(self, channels: int, *, gated: bool = False) -> None:
        super().__init__()
        self.channels = positive_int("channels", channels)
        self.gated = _flag("gated", gated)
        c = self.channels
        if self.gated:
            self.conv1: nn.Module = GatedConv2d(c, c)
            self.conv2: nn.Module = GatedConv2d(c, c)
        else:
            self.conv1 = nn.Conv2d(c, c, 3, padding=1)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C, H, W)`` → ``(B, C, H, W)``."""
        if self.gated:
            return x + self.conv2(self.conv1(x))
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


def residual_trunk(in_channels: int, channels: Sequence[int], blocks: int, *, gated: bool = False) -> nn.Sequential:
    """Stride-2 3×3 convs to each of ``channels``, each followed by ``blocks``
    [`ResidualBlock`][genvae.nets.ResidualBlock]s, a ReLU before every later conv and at the end:
    ``(B, in_channels, H, W)`` → ``(B, channels[-1], ⌈H/2^n⌉, ⌈W/2^n⌉)``. With ``blocks=0`` it is
    a plain stack of stride-2 convs and ReLUs, as in [`ConvEncoder`][genvae.nets.ConvEncoder]."""
    in_channels = positive_int("in_channels", in_channels)
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        raise ValueError(f"expected blocks to be an int >= 0, got {blocks!r}")
    layers: list[nn.Module] = []
    c_in = in_channels
    for i, c_out in enumerate(shape_tuple("channels", channels)):
        if i > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1))
        layers += [ResidualBlock(c_out, gated=gated) for _ in range(blocks)]
        c_in = c_out
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@register("encoder", "resnet", requires={"image": True})
class ResNetEncoder(nn.Module):
    """Stages of residual blocks between stride-2 convs, then a hidden layer → (μ, logvar).

    Stage i is a stride-2 3×3 conv to ``channels[i]`` followed by ``blocks``
    [`ResidualBlock`][genvae.nets.ResidualBlock]s, as in the ResNet VAE of the IAF paper
    ([Kingma et al. 2016](https://arxiv.org/abs/1606.04934)). The blocks are pre-activation, so the
    residual stream stays linear and a ReLU comes before every later conv and before the head.
    Sizes follow the image as in [`ConvEncoder`][genvae.nets.ConvEncoder]: 28×28 with two stages
    gives 14×14 then 7×7, an odd side n gives ⌈n/2⌉. With ``num_classes``, the one-hot label is
    concatenated to the image as K constant channels.

    The deterministic trunk is callable on its own: [`features`][genvae.nets.ResNetEncoder.features]
    gives ``(B, out_features)``, for a hierarchical model to build on.

    Args:
        data_shape: ``(C, H, W)``.
        latent_dim: D.
        channels: channels of each stage; one halving of the spatial size per stage.
        blocks: residual blocks per stage.
        hidden: width of the fully connected layer of the head.
        num_classes: condition on a label (``None``: unconditional).
        gated: gated residual blocks ([Tomczak & Welling 2018](https://arxiv.org/abs/1705.07120))
            instead of plain ones.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        *,
        channels: Sequence[int] = (32, 64),
        blocks: int = 1,
        hidden: int = 128,
        num_classes: int | None = None,
        gated: bool = False,
    ) -> None:
        super().__init__()
        self.data_shape, self.latent_dim, self.channels, self.hidden, self.num_classes = _conv_arguments(
            "ResNetEncoder", data_shape, latent_dim, channels, hidden, num_classes
        )
        self.blocks = positive_int("blocks", blocks)
        self.gated = _flag("gated", gated)
        c_in = self.data_shape[0] + (self.num_classes or 0)
        self.trunk = residual_trunk(c_in, self.channels, self.blocks, gated=self.gated)
        hs, ws = _map_sizes(self.data_shape, self.channels)
        # F, the width of features(): channels[-1] · h · w of the last stage
        self.out_features = self.channels[-1] * hs[-1] * ws[-1]
        self.head = _encoder_head(self.out_features, self.hidden, self.latent_dim)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The deterministic trunk: ``x (B, C, H, W)``, ``y (B,)`` → ``(B, out_features)``, after a ReLU."""
        return rearrange(self.trunk(_with_label_planes(x, y, self.num_classes)), "b c h w -> b (c h w)")

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """``x (B, C, H, W)``, ``y (B,)`` → q(z | x[, y]), batch ``(B,)``, event ``(D,)``."""
        return _gaussian(self.head(self.features(x, y)))


@register("decoder", "resnet", requires={"image": True})
class ResNetDecoder(nn.Module):
    """z [‖ one-hot y] → hidden layer → ``channels[0]×h×w`` → residual stages with stride-2 transposed convs.

    Mirrors [`ResNetEncoder`][genvae.nets.ResNetEncoder]: stage i is ``blocks``
    [`ResidualBlock`][genvae.nets.ResidualBlock]s at ``channels[i]``, then a ReLU and a stride-2
    3×3 transposed conv to the next stage's channels (the last to C). With ``channels=(64, 32)`` on
    28×28 it maps 64@7×7 → 32@14×14 → C@28×28; output paddings make odd sizes come out exact. The
    last transposed conv gives the likelihood's parameters, with no activation after it.

    ``data_shape`` is the shape of the output per example: pass the likelihood's
    ``param_shape(data_shape)`` (e.g. ``(2C, H, W)`` for
    [`DiscretizedLogistic`][genvae.likelihoods.DiscretizedLogistic]), as for
    [`ConvDecoder`][genvae.nets.ConvDecoder]. Any leading dims of z pass through, so the whole net
    also serves as the top-down trunk of a hierarchical model.

    Args:
        latent_dim: D.
        data_shape: ``(C, H, W)`` of the output.
        channels: channels of each stage; one doubling of the spatial size per stage.
        blocks: residual blocks per stage.
        hidden: width of the fully connected layer of the head.
        num_classes: condition on a label (``None``: unconditional).
        gated: gated residual blocks ([Tomczak & Welling 2018](https://arxiv.org/abs/1705.07120))
            instead of plain ones.
    """

    def __init__(
        self,
        latent_dim: int,
        data_shape: Sequence[int],
        *,
        channels: Sequence[int] = (64, 32),
        blocks: int = 1,
        hidden: int = 128,
        num_classes: int | None = None,
        gated: bool = False,
    ) -> None:
        super().__init__()
        self.data_shape, self.latent_dim, self.channels, self.hidden, self.num_classes = _conv_arguments(
            "ResNetDecoder", data_shape, latent_dim, channels, hidden, num_classes
        )
        self.blocks = positive_int("blocks", blocks)
        self.gated = _flag("gated", gated)
        hs, ws = _map_sizes(self.data_shape, self.channels)
        self.start = (self.channels[0], hs[-1], ws[-1])
        self.head = nn.Sequential(*_decoder_head(self.latent_dim + (self.num_classes or 0), self.hidden, self.start))
        layers: list[nn.Module] = []
        for c_in, c_out, pad in _upsampling(self.channels, self.data_shape[0], hs, ws):
            layers += [ResidualBlock(c_in, gated=self.gated) for _ in range(self.blocks)]
            layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad)]
        self.trunk = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``z (*S, B, D)``, ``y (B,)`` → ``(*S, B, C, H, W)``."""
        return _decode_maps(_with_label(z, y, self.num_classes), self.head, self.start, self.trunk)
