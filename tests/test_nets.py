"""Encoders and decoders: shapes for many data shapes, sample dims, conditioning, gradients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

import genvae
from genvae import VAE
from genvae.kl import kl_normal_std
from genvae.likelihoods import Bernoulli
from genvae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 3
B = 4
CONV_SHAPES = [(1, 28, 28), (3, 17, 9), (2, 5, 5), (1, 1, 1), (1, 12, 12)]
MLP_SHAPES = [(784,), (3, 4), (1, 12, 12)]
PairMaker = Callable[..., tuple[nn.Module, nn.Module]]


def conv_pair(shape: tuple[int, ...], num_classes: int | None = None) -> tuple[nn.Module, nn.Module]:
    return (
        ConvEncoder(shape, D, channels=(4, 8), hidden=16, num_classes=num_classes),
        ConvDecoder(D, shape, channels=(8, 4), hidden=16, num_classes=num_classes),
    )


def mlp_pair(shape: tuple[int, ...], num_classes: int | None = None) -> tuple[nn.Module, nn.Module]:
    return (
        MLPEncoder(shape, D, hidden=(16, 8), num_classes=num_classes),
        MLPDecoder(D, shape, hidden=(8, 16), num_classes=num_classes),
    )


PAIRS = [pytest.param(conv_pair, s, id=f"conv{s}") for s in CONV_SHAPES] + [
    pytest.param(mlp_pair, s, id=f"mlp{s}") for s in MLP_SHAPES
]


def check_posterior(q: Distribution, batch: int) -> None:
    assert isinstance(q, Distribution)
    assert q.batch_shape == (batch,) and q.event_shape == (D,)
    z = q.rsample()
    assert z.shape == (batch, D) and bool(torch.isfinite(z).all())


@pytest.mark.parametrize(("make", "shape"), PAIRS)
def test_shapes_and_sample_dims(make: PairMaker, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    enc, dec = make(shape)
    assert isinstance(enc, genvae.Encoder) and isinstance(dec, genvae.Decoder)
    x = torch.rand(B, *shape)
    check_posterior(enc(x), B)
    z = torch.randn(B, D)
    assert dec(z).shape == (B, *shape)
    zk = torch.randn(5, B, D)
    out = dec(zk)
    assert out.shape == (5, B, *shape)
    for k in range(5):  # each sample slice is decoded exactly as it would be alone
        torch.testing.assert_close(out[k], dec(zk[k]), rtol=1e-5, atol=1e-6)
    assert dec(torch.randn(2, 3, B, D)).shape == (2, 3, B, *shape)


def test_conv_defaults_on_mnist_shape() -> None:
    enc, dec = ConvEncoder((1, 28, 28), 20), ConvDecoder(20, (1, 28, 28))
    assert enc(torch.rand(2, 1, 28, 28)).event_shape == (20,)
    assert dec(torch.randn(2, 20)).shape == (2, 1, 28, 28)
    # 28 → 14 → 7 with the default channels (32, 64)
    assert dec.start == (64, 7, 7)


def test_encoder_parameterises_sigma_as_exp_half_logvar() -> None:
    torch.manual_seed(0)
    enc = MLPEncoder((3, 4), D, hidden=(8,))
    x = torch.rand(B, 3, 4)
    stats = enc.net(x.flatten(1))
    q = enc(x)
    torch.testing.assert_close(q.mean, stats[:, :D])
    torch.testing.assert_close(q.stddev, (0.5 * stats[:, D:]).exp())


@pytest.mark.parametrize(("make", "shape"), [(conv_pair, (2, 5, 5)), (mlp_pair, (3, 4))], ids=["conv", "mlp"])
def test_conditional_nets_depend_on_the_label(make: PairMaker, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    enc, dec = make(shape, num_classes=5)
    x = torch.rand(B, *shape)
    y0, y1 = torch.zeros(B, dtype=torch.long), torch.full((B,), 3)
    check_posterior(enc(x, y0), B)
    assert not torch.allclose(enc(x, y0).mean, enc(x, y1).mean)
    z = torch.randn(B, D)
    assert not torch.allclose(dec(z, y0), dec(z, y1))
    # with leading sample dims the label broadcasts over them
    zk = torch.randn(3, B, D)
    y = torch.tensor([0, 1, 2, 4])
    out = dec(zk, y)
    assert out.shape == (3, B, *shape)
    torch.testing.assert_close(out[1], dec(zk[1], y), rtol=1e-5, atol=1e-6)
    for net, arg in ((enc, x), (dec, z)):
        with pytest.raises(ValueError, match="label"):
            net(arg)


@pytest.mark.parametrize(("make", "shape"), [(conv_pair, (3, 17, 9)), (mlp_pair, (1, 12, 12))], ids=["conv", "mlp"])
@pytest.mark.parametrize("num_classes", [None, 4])
def test_gradients_reach_every_parameter(make: PairMaker, shape: tuple[int, ...], num_classes: int | None) -> None:
    torch.manual_seed(0)
    enc, dec = make(shape, num_classes=num_classes)
    model = VAE(enc, dec, Bernoulli(), StandardNormal(D))
    x = torch.rand(8, *shape)
    y = None if num_classes is None else torch.arange(8) % num_classes
    model.elbo(x, y).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_nets_are_protocol_instances_and_non_callables_are_not() -> None:
    assert isinstance(MLPEncoder((4,), D), genvae.Encoder)
    assert isinstance(MLPDecoder(D, (4,)), genvae.Decoder)
    assert isinstance(ConvEncoder((1, 4, 4), D, channels=(4, 8), hidden=16), genvae.Encoder)
    assert isinstance(ConvDecoder(D, (1, 4, 4), channels=(8, 4), hidden=16), genvae.Decoder)
    assert not isinstance(42, genvae.Encoder)


class PlainEncoder(nn.Module):
    """A user encoder with no genvae base class: one linear layer to (μ, log σ²)."""

    def __init__(self, n_in: int, latent_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * latent_dim)

    def stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.linear(x.flatten(1)).chunk(2, dim=-1)
        return mu, logvar

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        mu, logvar = self.stats(x)
        return Independent(Normal(mu, (0.5 * logvar).exp()), 1)


def test_a_plain_custom_encoder_works_inside_vae() -> None:
    torch.manual_seed(0)
    enc = PlainEncoder(9, D)
    assert isinstance(enc, genvae.Encoder)
    model = VAE(enc, MLPDecoder(D, (1, 3, 3), hidden=(8,)), Bernoulli(), StandardNormal(D))
    x = torch.rand(5, 1, 3, 3)
    out = model.elbo(x)
    mu, logvar = enc.stats(x)
    torch.testing.assert_close(out.kl, kl_normal_std(mu, logvar))
    torch.testing.assert_close(out.elbo, out.log_likelihood - out.kl)
    out.loss.backward()
    assert enc.linear.weight.grad is not None and bool(enc.linear.weight.grad.abs().sum() > 0)
    assert model.reconstruct(x).shape == x.shape
    assert model.sample(3).shape == (3, 1, 3, 3)
    # with no data_shape on the encoder the model takes it from the decoder
    assert model.data_shape == (1, 3, 3)
