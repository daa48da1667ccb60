"""Figures: valid PNGs, the manifold grid in the documented orientation, exact embeddings for D ≤ 2."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Independent, Normal

from genvae import VAE
from genvae.data import synthetic_digits
from genvae.likelihoods import Bernoulli
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.viz import embed_latents, save_image_rows, save_latent_scatter, save_manifold, save_traversal


class _CoordinateDecoder(nn.Module):
    """Decodes z = (z1, z2) into an image whose left half has intensity sigmoid⁻¹-free z1 and right half z2."""

    latent_dim = 2

    def forward(self, z, y=None):
        left = z[..., 0, None, None, None].expand(*z.shape[:-1], 1, 4, 2)
        right = z[..., 1, None, None, None].expand(*z.shape[:-1], 1, 4, 2)
        return torch.cat([left, right], -1)  # (.., 1, 4, 4): "logits" = coordinates


class _Identity(nn.Module):
    def forward(self, params):
        return Independent(TorchBernoulli(probs=params.clamp(0, 1), validate_args=False), 3)


class _Enc(nn.Module):
    latent_dim = 2

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x, y=None):
        loc = torch.stack([x.mean((1, 2, 3)), x.amax((1, 2, 3))], -1) * self.w
        return Independent(Normal(loc, torch.ones_like(loc)), 1)


def test_manifold_orientation(tmp_path, monkeypatch):
    model = VAE(_Enc(), _CoordinateDecoder(), _Identity(), StandardNormal(2))
    captured = {}
    import genvae.viz as viz

    original = viz._grid_image
    monkeypatch.setattr(
        viz, "_grid_image", lambda images, nrow: captured.setdefault("x", images) is not None and original(images, nrow)
    )
    path = save_manifold(model, tmp_path / "m.png", n=3, limit=1.0)
    images = captured["x"]  # (9, 1, 4, 4), row-major, clamped to [0, 1]
    z1 = images[:, 0, 0, 0].reshape(3, 3)
    z2 = images[:, 0, 0, -1].reshape(3, 3)
    assert torch.allclose(z1[0], torch.tensor([0.0, 0.0, 1.0]))  # left → right: −1, 0, +1 (clamped)
    assert torch.allclose(z2[:, 0], torch.tensor([1.0, 0.0, 0.0]))  # top → bottom: +1, 0, −1
    assert mpimg.imread(path).ndim == 3


def _vae(z: int) -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder((1, 28, 28), z, hidden=(16,)), MLPDecoder(z, (1, 28, 28), hidden=(16,)), Bernoulli(),
               StandardNormal(z))  # fmt: skip


def test_embed_latents_is_exact_for_two_dims_and_tsne_for_more():
    data = synthetic_digits(60, seed=0)
    model = _vae(2)
    xy, labels = embed_latents(model, data, n=50)
    with torch.no_grad():
        expected = model.encode(data.float_images()[:50]).mean.double().numpy()
    assert np.allclose(xy, expected, atol=1e-6)
    assert (labels == data.labels[:50].numpy()).all()
    xy5, _ = embed_latents(_vae(5), data, n=50, method="tsne")
    assert xy5.shape == (50, 2) and np.isfinite(xy5).all()
    with pytest.raises(ValueError, match="latent_dim <= 2"):
        embed_latents(_vae(5), data, n=10, method="direct")


def test_figures_are_pngs_of_the_right_layout(tmp_path):
    data = synthetic_digits(40, seed=0)
    model = _vae(3)
    traversal = mpimg.imread(save_traversal(model, tmp_path / "t.png", values=torch.linspace(-2, 2, 5)))
    two = mpimg.imread(save_traversal(model, tmp_path / "t2.png", dims=[0], values=torch.linspace(-2, 2, 5)))
    assert traversal.shape[0] > two.shape[0]  # three rows are taller than one
    assert mpimg.imread(save_latent_scatter(model, data, tmp_path / "s.png", n=40, method="pca")).ndim == 3
    rows = [torch.rand(4, 1, 28, 28), torch.rand(2, 1, 28, 28)]
    assert mpimg.imread(save_image_rows(rows, ["a", "b"], tmp_path / "r.png")).ndim == 3
    with pytest.raises(ValueError, match="one label per row"):
        save_image_rows(rows, ["a"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="latent_dim 1 or 2"):
        save_manifold(model, tmp_path / "m.png")


class _MapModel(torch.nn.Module):
    """Decodes a latent map (2, 1, 1): image pixel value = sigmoid(z[0]) everywhere; records its codes."""

    latent_shape = (2, 1, 1)
    latent_dim = None
    num_classes = None

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.codes: list[torch.Tensor] = []

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.distributions.Distribution:
        self.codes.append(z)
        probs = torch.sigmoid(self.scale * z[:, :1]).expand(-1, 1, 4, 4)  # (N, 1, 4, 4)
        return torch.distributions.Independent(torch.distributions.Bernoulli(probs=probs), 3)


def test_figures_decode_codes_of_the_models_latent_map_shape(tmp_path) -> None:
    from genvae.viz import latent_shape, save_manifold, save_traversal

    model = _MapModel()
    assert latent_shape(model) == (2, 1, 1)
    save_manifold(model, tmp_path / "manifold.png", n=3, limit=1.0)
    z = model.codes[-1]
    assert z.shape == (9, 2, 1, 1)
    torch.testing.assert_close(z[:3, 0, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))  # z₁ along a row
    torch.testing.assert_close(z[::3, 1, 0, 0], torch.tensor([1.0, 0.0, -1.0]))  # z₂ down the rows
    save_traversal(model, tmp_path / "traversal.png", values=torch.tensor([-2.0, 2.0]))
    first, second = model.codes[-2:]  # one row per element of the map
    assert first.shape == second.shape == (2, 2, 1, 1)
    torch.testing.assert_close(first[:, 0, 0, 0], torch.tensor([-2.0, 2.0]))
    torch.testing.assert_close(first[:, 1], torch.zeros(2, 1, 1))
    torch.testing.assert_close(second[:, 1, 0, 0], torch.tensor([-2.0, 2.0]))
