"""Residual conv nets: shapes for MNIST, colour and odd sizes, the residual identity, the gated
layer against its formula, a short fit, likelihood parameter shapes, save/load, bad arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import genvae
from genvae import VAE
from genvae.likelihoods import Bernoulli, DiscretizedLogistic
from genvae.nets import GatedConv2d, ResidualBlock, ResNetDecoder, ResNetEncoder
from genvae.priors import StandardNormal
from genvae.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 3
B = 2
SHAPES = [(1, 28, 28), (3, 32, 32), (2, 27, 29)]
TRUSTED = ("genvae.nets",)


def pair(
    shape: tuple[int, ...], *, num_classes: int | None = None, gated: bool = False, out_shape: tuple[int, ...] = ()
) -> tuple[ResNetEncoder, ResNetDecoder]:
    return (
        ResNetEncoder(shape, D, channels=(4, 6), hidden=8, num_classes=num_classes, gated=gated),
        ResNetDecoder(D, out_shape or shape, channels=(6, 4), hidden=8, num_classes=num_classes, gated=gated),
    )


def halve(n: int) -> int:
    """The output side of a stride-2, pad-1, 3×3 conv, computed independently: ⌈n / 2⌉."""
    return -(-n // 2)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("num_classes", [None, 4], ids=["unconditional", "labels"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_encoder_and_decoder_shapes_follow_the_image_and_pass_sample_dims_through(
    shape: tuple[int, int, int], num_classes: int | None, gated: bool
) -> None:
    torch.manual_seed(0)
    enc, dec = pair(shape, num_classes=num_classes, gated=gated)
    assert isinstance(enc, genvae.Encoder) and isinstance(dec, genvae.Decoder)
    y = torch.tensor([0, 3]) if num_classes else None
    x = torch.rand(B, *shape)
    q = enc(x, y)
    assert q.batch_shape == (B,) and q.event_shape == (D,)
    assert bool(torch.isfinite(q.rsample()).all())
    c, h, w = shape
    assert enc.out_features == 6 * halve(halve(h)) * halve(halve(w))
    assert enc.features(x, y).shape == (B, enc.out_features)
    assert dec.start == (6, halve(halve(h)), halve(halve(w)))
    assert dec(torch.randn(B, D), y).shape == (B, *shape)
    zk = torch.randn(5, B, D)
    out = dec(zk, y)
    assert out.shape == (5, B, *shape)
    for k in range(5):  # each sample slice is decoded exactly as it would be alone
        torch.testing.assert_close(out[k], dec(zk[k], y), rtol=1e-5, atol=1e-6)
    assert dec(torch.randn(2, 3, B, D), y).shape == (2, 3, B, *shape)


def test_labels_change_the_posterior_and_the_decoding() -> None:
    torch.manual_seed(0)
    enc, dec = pair((1, 12, 12), num_classes=3)
    x, z = torch.rand(1, 1, 12, 12), torch.randn(1, D)
    y0, y1 = torch.tensor([0]), torch.tensor([2])
    assert not torch.allclose(enc(x, y0).mean, enc(x, y1).mean)
    assert not torch.allclose(dec(z, y0), dec(z, y1))
    with pytest.raises(ValueError, match="num_classes=3"):
        enc(x)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_a_block_whose_last_conv_is_zero_is_the_identity(gated: bool) -> None:
    torch.manual_seed(0)
    block = ResidualBlock(3, gated=gated)
    x = torch.randn(2, 3, 5, 7)
    assert not torch.allclose(block(x), x)  # a live branch moves x
    last = block.conv2.h if isinstance(block.conv2, GatedConv2d) else block.conv2
    assert isinstance(last, nn.Conv2d) and last.bias is not None
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_plain_block_is_x_plus_preactivated_convs_in_float64() -> None:
    torch.manual_seed(0)
    block = ResidualBlock(3).double()
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    c1, c2 = block.conv1, block.conv2
    assert isinstance(c1, nn.Conv2d) and isinstance(c2, nn.Conv2d)
    branch = F.conv2d(F.relu(F.conv2d(F.relu(x), c1.weight, c1.bias, padding=1)), c2.weight, c2.bias, padding=1)
    torch.testing.assert_close(block(x), x + branch, rtol=1e-12, atol=1e-12)


def conv_by_hand(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv`` (3×3, pad 1) applied as explicit sums over shifted windows, without torch's conv."""
    weight, bias = conv.weight, conv.bias
    assert bias is not None
    _, _, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1))
    out = bias[None, :, None, None].expand(x.shape[0], -1, h, w).clone()
    for i in range(3):
        for j in range(3):
            window = xp[:, :, i : i + h, j : j + w]  # (B, C_in, H, W)
            out = out + torch.einsum("bchw,oc->bohw", window, weight[:, :, i, j])
    return out


def test_gated_conv_is_w_conv_x_times_sigmoid_of_v_conv_x_in_float64() -> None:
    torch.manual_seed(0)
    layer = GatedConv2d(2, 3).double()
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64)
    expected = conv_by_hand(x, layer.h) * torch.sigmoid(conv_by_hand(x, layer.g))
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    block = ResidualBlock(2, gated=True).double()  # a gated block composes two such layers on the skip
    torch.testing.assert_close(block(x), x + block.conv2(block.conv1(x)), rtol=0, atol=0)


def binary_images(n: int, seed: int) -> Tensor:
    """``(n, 1, 28, 28)`` binary images: one of four 8-pixel-wide squares, with 5 % of pixels flipped."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.zeros(4, 1, 28, 28)
    for k, (r, c) in enumerate([(2, 2), (2, 18), (18, 2), (18, 18)]):
        patterns[k, 0, r : r + 8, c : c + 8] = 1.0
    x = patterns[torch.randint(0, 4, (n,), generator=g)]
    flips = torch.rand(x.shape, generator=g) < 0.05
    return torch.where(flips, 1.0 - x, x)


def test_a_resnet_vae_with_bernoulli_trains_one_epoch_to_a_finite_lower_loss() -> None:
    torch.manual_seed(0)
    x = binary_images(256, seed=0)
    enc, dec = pair((1, 28, 28), gated=True)
    model = VAE(enc, dec, Bernoulli(), StandardNormal(D))
    with torch.no_grad():
        before = float(model.elbo(x).loss)
    result = fit(model, x, test=x, epochs=1, batch_size=32, lr=1e-2, device="cpu", progress=False)
    after = result.history[0].test_loss
    assert after is not None and torch.isfinite(torch.tensor([before, after])).all()
    assert after < before - 50.0  # 8 Adam steps fit much of the pixel frequencies


def test_decoder_gives_the_discretized_logistic_param_shape_for_colour_images() -> None:
    torch.manual_seed(0)
    shape = (3, 32, 32)
    likelihood = DiscretizedLogistic()
    out_shape = likelihood.param_shape(shape)
    assert out_shape == (6, 32, 32)
    enc, dec = pair(shape, out_shape=out_shape)
    model = VAE(enc, dec, likelihood, StandardNormal(D))
    x = torch.randint(0, 256, (B, *shape)).float() / 255  # 8-bit pixels as k / 255
    assert dec(enc(x).rsample((4,))).shape == (4, B, *out_shape)
    out = model.elbo(x)
    assert out.elbo.shape == (B,) and bool(torch.isfinite(out.elbo).all())
    assert bool((out.log_likelihood <= 0).all())  # a log probability mass


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_save_then_load_rebuilds_the_same_model(tmp_path: Path, gated: bool) -> None:
    torch.manual_seed(0)
    enc, dec = pair((1, 13, 11), num_classes=3, gated=gated)
    model = genvae.CVAE(enc, dec, Bernoulli(), StandardNormal(D))
    loaded = genvae.load(genvae.save(model, tmp_path / "m.safetensors"), trusted=TRUSTED)
    assert isinstance(loaded.encoder, ResNetEncoder) and isinstance(loaded.decoder, ResNetDecoder)
    for name in ("data_shape", "latent_dim", "channels", "blocks", "hidden", "num_classes", "gated"):
        assert getattr(loaded.encoder, name) == getattr(enc, name)
        assert getattr(loaded.decoder, name) == getattr(dec, name)
    x, y, z = torch.rand(B, 1, 13, 11), torch.tensor([0, 2]), torch.randn(B, D)
    torch.testing.assert_close(loaded.encoder(x, y).mean, enc(x, y).mean, rtol=0, atol=0)
    torch.testing.assert_close(loaded.decoder(z, y), dec(z, y), rtol=0, atol=0)


def test_channels_last_input_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    enc, dec = pair((3, 9, 10))
    x = torch.rand(B, 3, 9, 10)
    torch.testing.assert_close(
        enc.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last)).mean,
        enc(x).mean,
        rtol=1e-5,
        atol=1e-6,
    )
    z = torch.randn(4, B, D)
    expected = dec(z)
    torch.testing.assert_close(dec.to(memory_format=torch.channels_last)(z), expected, rtol=1e-5, atol=1e-6)


def test_more_blocks_add_parameters_without_changing_shapes() -> None:
    one = ResNetEncoder((1, 8, 8), D, channels=(4,), blocks=1, hidden=8)
    three = ResNetEncoder((1, 8, 8), D, channels=(4,), blocks=3, hidden=8)
    per_block = sum(p.numel() for p in ResidualBlock(4).parameters())
    n_one, n_three = (sum(p.numel() for p in m.parameters()) for m in (one, three))
    assert n_three - n_one == 2 * per_block
    assert one.out_features == three.out_features == 4 * 4 * 4


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: ResNetEncoder((28, 28), D), ValueError, r"data_shape \(C, H, W\).*\(28, 28\)"),
        (lambda: ResNetDecoder(D, (1, 2, 28, 28)), ValueError, r"data_shape \(C, H, W\)"),
        (lambda: ResNetEncoder((1, 8, 8), D, channels=()), TypeError, "channels"),
        (lambda: ResNetDecoder(D, (1, 8, 8), channels=(4, 0)), ValueError, r"channels\[1\].*got 0"),
        (lambda: ResNetEncoder((1, 8, 8), D, blocks=0), ValueError, "blocks.*got 0"),
        (lambda: ResNetDecoder(D, (1, 8, 8), blocks=1.5), TypeError, "blocks"),  # type: ignore[arg-type]
        (lambda: ResNetEncoder((1, 8, 8), D, gated=1), TypeError, "gated to be a bool"),  # type: ignore[arg-type]
        (lambda: ResNetDecoder(D, (1, 8, 8), hidden=0), ValueError, "hidden"),
        (lambda: ResNetEncoder((1, 8, 8), D, num_classes=1), ValueError, "num_classes >= 2"),
        (lambda: ResidualBlock(0), ValueError, "channels"),
        (lambda: GatedConv2d(2, 3, kernel_size=0), ValueError, "kernel_size"),
    ],
)
def test_bad_arguments_raise_errors_that_name_them(make: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()  # type: ignore[operator]
