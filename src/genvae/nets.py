"""Ready-made encoders and decoders: MLPs for any data shape, and stride-2 conv stacks for images.

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

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"]


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


def _mlp(sizes: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _gaussian(stats: Tensor) -> Distribution:
    """``(B, 2D)`` → Independent(Normal(μ, exp(½ logvar)), 1) with batch ``(B,)``, event ``(D,)``."""
    loc, logvar = stats.chunk(2, dim=-1)
    return Independent(Normal(loc, (0.5 * logvar).exp(), validate_args=False), 1, validate_args=False)


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
        self.data_shape = shape_tuple("data_shape", data_shape)
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.hidden = _hidden(hidden)
        self.num_classes = optional_num_classes(num_classes)
        self.activation = _activation(activation)
        n_in = int(torch.tensor(self.data_shape).prod()) + (self.num_classes or 0)
        self.net = _mlp((n_in, *self.hidden, 2 * self.latent_dim), self.activation)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """``x (B, *data_shape)``, ``y (B,)`` → q(z | x[, y]), batch ``(B,)``, event ``(D,)``."""
        h = x.flatten(start_dim=x.dim() - len(self.data_shape))  # (B, C·H·W)
        onehot = _one_hot(y, self.num_classes, h)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=-1)  # (B, C·H·W + K)
        return _gaussian(self.net(h))


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
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.data_shape = shape_tuple("data_shape", data_shape)
        self.hidden = _hidden(hidden)
        self.num_classes = optional_num_classes(num_classes)
        self.activation = _activation(activation)
        n_out = int(torch.tensor(self.data_shape).prod())
        self.net = _mlp((self.latent_dim + (self.num_classes or 0), *self.hidden, n_out), self.activation)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``z (*S, B, D)``, ``y (B,)`` → ``(*S, B, *data_shape)``."""
        onehot = _one_hot(y, self.num_classes, z)
        if onehot is not None:
            z = torch.cat([z, onehot], dim=-1)  # (*S, B, D + K)
        return self.net(z).unflatten(-1, self.data_shape)


def _halvings(size: int, n: int) -> list[int]:
    """Spatial sizes after each of ``n`` stride-2, pad-1, 3×3 convs: ``[size, ⌈size/2⌉, …]``."""
    sizes = [size]
    for _ in range(n):
        sizes.append((sizes[-1] - 1) // 2 + 1)
    return sizes


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
        self.data_shape = shape_tuple("data_shape", data_shape)
        if len(self.data_shape) != 3:
            raise ValueError(f"expected data_shape (C, H, W) for ConvEncoder, got {self.data_shape}")
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.channels = shape_tuple("channels", channels)
        self.hidden = positive_int("hidden", hidden)
        self.num_classes = optional_num_classes(num_classes)
        c, h, w = self.data_shape
        convs: list[nn.Module] = []
        c_in = c + (self.num_classes or 0)
        for c_out in self.channels:
            convs += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
        self.convs = nn.Sequential(*convs)
        h_out, w_out = _halvings(h, len(self.channels))[-1], _halvings(w, len(self.channels))[-1]
        self.head = nn.Sequential(
            nn.Linear(c_in * h_out * w_out, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 2 * self.latent_dim)
        )

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """``x (B, C, H, W)``, ``y (B,)`` → q(z | x[, y]), batch ``(B,)``, event ``(D,)``."""
        onehot = _one_hot(y, self.num_classes, x[:, 0, 0, :1])  # (B, K)
        if onehot is not None:
            planes = onehot[:, :, None, None].expand(-1, -1, *x.shape[-2:])  # (B, K, H, W)
            x = torch.cat([x, planes], dim=1)
        h = rearrange(self.convs(x), "b c h w -> b (c h w)")
        return _gaussian(self.head(h))


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
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.data_shape = shape_tuple("data_shape", data_shape)
        if len(self.data_shape) != 3:
            raise ValueError(f"expected data_shape (C, H, W) for ConvDecoder, got {self.data_shape}")
        self.channels = shape_tuple("channels", channels)
        self.hidden = positive_int("hidden", hidden)
        self.num_classes = optional_num_classes(num_classes)
        c, h, w = self.data_shape
        hs, ws = _halvings(h, len(self.channels)), _halvings(w, len(self.channels))
        self.start = (self.channels[0], hs[-1], ws[-1])
        self.head = nn.Sequential(
            nn.Linear(self.latent_dim + (self.num_classes or 0), self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, self.channels[0] * hs[-1] * ws[-1]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        outs = (*self.channels[1:], c)
        for i, (c_in, c_out) in enumerate(zip(self.channels, outs)):
            h_in, w_in = hs[-1 - i], ws[-1 - i]
            h_t, w_t = hs[-2 - i], ws[-2 - i]
            pad = (h_t - 2 * h_in + 1, w_t - 2 * w_in + 1)  # 0 or 1: makes the output exactly h_t×w_t
            layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad))
            if i < len(self.channels) - 1:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``z (*S, B, D)``, ``y (B,)`` → ``(*S, B, C, H, W)``."""
        onehot = _one_hot(y, self.num_classes, z)
        if onehot is not None:
            z = torch.cat([z, onehot], dim=-1)  # (*S, B, D + K)
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).unflatten(-1, self.start)  # (S·B, c0, h0, w0)
        return self.deconvs(h).unflatten(0, lead)  # (*S, B, C, H, W)
