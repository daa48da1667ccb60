"""Observation models: log-densities against torch and closed forms, learned σ, shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

import genvae
from genvae.likelihoods import Bernoulli, ContinuousBernoulli, Gaussian

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MATH = settings(max_examples=30, deadline=None)


@st.composite
def images(draw: st.DrawFn, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(params, x) float64 of one drawn shape ``(B, C, H, W)``: params in [lo, hi], x in [0, 1]."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=4, max_size=4)))
    params = draw(hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False)))
    x = draw(hnp.arrays(np.float64, shape, elements=st.floats(0.0, 1.0)))
    return torch.from_numpy(params), torch.from_numpy(x)


# ---------------------------------------------------------------- Bernoulli


@MATH
@given(images(-20.0, 20.0))
def test_bernoulli_is_minus_bce_with_logits_on_grayscale(
    data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    logits, x = data
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    got = Bernoulli(event_dims=3)(logits).log_prob(x)
    assert got.shape == x.shape[:1]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_extreme_logits_are_finite(dtype: torch.dtype) -> None:
    logits = torch.tensor([80.0, -80.0, 80.0, -80.0, 80.0, -80.0], dtype=dtype).reshape(1, 1, 2, 3)
    x = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3, 0.7], dtype=dtype).reshape(1, 1, 2, 3)
    got = Bernoulli(event_dims=3)(logits).log_prob(x)
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    assert bool(torch.isfinite(got).all())
    # -(0 + 0 + 80 + 80 + 0.7·80 + 0.7·80) up to exp(-80) terms
    torch.testing.assert_close(got, torch.tensor([-272.0], dtype=dtype))
    torch.testing.assert_close(got, expected)
    logits.requires_grad_(True)
    Bernoulli(event_dims=3)(logits).log_prob(x).sum().backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_bernoulli_mean_is_sigmoid() -> None:
    logits = torch.randn(2, 1, 3, 3)
    torch.testing.assert_close(Bernoulli(event_dims=3)(logits).mean, torch.sigmoid(logits))


# ---------------------------------------------------------------- Continuous Bernoulli


@MATH
@given(images(-10.0, 10.0))
def test_continuous_bernoulli_matches_torch(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, x = data
    expected = torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(ContinuousBernoulli(event_dims=3)(logits).log_prob(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("logit", [-6.0, -1.0, -1e-3, 0.0, 1e-4, 0.5, 3.0, 6.0])
def test_continuous_bernoulli_integrates_to_one(logit: float) -> None:
    grid = torch.linspace(0.0, 1.0, 200_001, dtype=torch.float64)[:, None]  # (G, 1)
    params = torch.full_like(grid, logit)
    density = ContinuousBernoulli(event_dims=1)(params).log_prob(grid).exp()  # (G,)
    assert bool((density > 0).all())
    assert torch.trapezoid(density, grid[:, 0]).item() == pytest.approx(1.0, abs=1e-6)


def test_continuous_bernoulli_integrates_to_one_in_float32_near_logit_zero() -> None:
    grid = torch.linspace(0.0, 1.0, 20_001)[:, None]
    for logit in (-1e-3, 0.0, 1e-3):
        density = ContinuousBernoulli(event_dims=1)(torch.full_like(grid, logit)).log_prob(grid).exp()
        assert torch.trapezoid(density, grid[:, 0]).item() == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------- Gaussian


@MATH
@given(images(-3.0, 3.0))
def test_gaussian_unit_sigma_is_half_squared_error(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    mu, x = data
    n = x[0].numel()
    expected = -0.5 * (x - mu).square().sum((1, 2, 3)) - 0.5 * n * math.log(2 * math.pi)
    torch.testing.assert_close(Gaussian(event_dims=3)(mu).log_prob(x), expected, rtol=1e-12, atol=1e-12)


@MATH
@given(images(-3.0, 3.0), st.floats(0.05, 5.0))
def test_gaussian_fixed_sigma_closed_form(data: tuple[torch.Tensor, torch.Tensor], sigma: float) -> None:
    mu, x = data
    n = x[0].numel()
    expected = -0.5 * ((x - mu) / sigma).square().sum((1, 2, 3)) - n * math.log(sigma) - 0.5 * n * math.log(2 * math.pi)
    lik = Gaussian(sigma, event_dims=3)
    torch.testing.assert_close(lik(mu).log_prob(x), expected, rtol=1e-10, atol=1e-10)
    assert list(lik.parameters()) == []


def test_gaussian_fixed_sigma_is_exact_in_float64() -> None:
    mu, x = (
        torch.zeros(1, 1, 1, 1, dtype=torch.float64),
        torch.ones(1, 1, 1, 1, dtype=torch.float64),
    )
    expected = -0.5 / 0.05**2 - math.log(0.05) - 0.5 * math.log(2 * math.pi)
    assert Gaussian(0.05, event_dims=3)(mu).log_prob(x).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape", [(), (1, 4, 4)])
def test_learned_sigma_gets_gradients_and_has_its_shape(shape: tuple[int, ...]) -> None:
    lik = Gaussian(0.7, learned=True, shape=shape, event_dims=3)
    assert [p.shape for p in lik.parameters()] == [torch.Size(shape)]
    torch.testing.assert_close(lik.scale(), torch.full(shape, 0.7))
    torch.manual_seed(0)
    mu, x = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    lik(mu).log_prob(x).sum().backward()
    (raw,) = lik.parameters()
    assert raw.grad is not None and raw.grad.shape == torch.Size(shape)
    assert bool((raw.grad != 0).all())


def test_learned_per_pixel_sigma_log_prob_uses_each_pixel_sigma() -> None:
    torch.manual_seed(0)
    lik = Gaussian(0.5, learned=True, shape=(1, 2, 3), event_dims=3)
    with torch.no_grad():
        lik.raw_sigma.copy_(torch.randn(1, 2, 3))
    mu, x = (
        torch.randn(4, 1, 2, 3, dtype=torch.float64),
        torch.randn(4, 1, 2, 3, dtype=torch.float64),
    )
    sigma = lik.scale().detach().double()
    expected = (-0.5 * ((x - mu) / sigma).square() - sigma.log() - 0.5 * math.log(2 * math.pi)).sum((1, 2, 3))
    torch.testing.assert_close(lik(mu).log_prob(x), expected)


@pytest.mark.parametrize("shape", [(), (1, 3, 3)])
def test_learned_sigma_never_goes_below_min_sigma(shape: tuple[int, ...]) -> None:
    lik = Gaussian(1.0, learned=True, shape=shape, min_sigma=0.05, event_dims=3)
    with torch.no_grad():
        lik.raw_sigma.fill_(-1e4)
    assert bool((lik.scale() >= 0.05).all())
    torch.testing.assert_close(lik.scale(), torch.full(shape, 0.05))
    mu = torch.zeros(2, 1, 3, 3)
    assert bool(torch.isfinite(lik(mu).log_prob(mu)).all())
    # Maximising the likelihood of a perfect reconstruction pushes σ down, but never past the floor.
    lik = Gaussian(1.0, learned=True, shape=shape, min_sigma=0.05, event_dims=3)
    opt = torch.optim.Adam(lik.parameters(), lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        (-lik(mu).log_prob(mu + 1e-4).sum()).backward()
        opt.step()
    assert bool((lik.scale() >= 0.05).all())
    assert lik.scale().max().item() < 0.06


def test_learned_sigma_at_or_below_the_floor_is_rejected() -> None:
    with pytest.raises(ValueError, match="min_sigma"):
        Gaussian(0.01, learned=True, min_sigma=0.01)


# ---------------------------------------------------------------- shapes, protocol


ALL = [Bernoulli, ContinuousBernoulli, Gaussian]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("data_shape", [(1, 5, 7), (3, 2, 2)])
def test_event_shape_is_the_data_shape(cls: type[nn.Module], data_shape: tuple[int, ...]) -> None:
    lik = cls(event_dims=len(data_shape))
    assert isinstance(lik, genvae.Likelihood)
    d = lik(torch.zeros(6, *data_shape))
    assert isinstance(d, torch.distributions.Distribution)
    assert d.event_shape == data_shape and d.batch_shape == (6,)


@pytest.mark.parametrize("cls", ALL)
def test_leading_sample_dims_pass_through(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    lik = cls(event_dims=3)
    params = torch.randn(5, 3, 1, 4, 4)  # (K, B, C, H, W)
    x = torch.rand(3, 1, 4, 4)
    lp = lik(params).log_prob(x)
    assert lp.shape == (5, 3)
    for k in range(5):
        torch.testing.assert_close(lp[k], lik(params[k]).log_prob(x))


@pytest.mark.parametrize("cls", ALL)
def test_event_dims_one_on_flat_data(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    lik = cls(event_dims=1)
    params, x = torch.randn(4, 9), torch.rand(4, 9)
    d = lik(params)
    assert d.event_shape == (9,) and d.batch_shape == (4,)
    torch.testing.assert_close(
        d.log_prob(x), cls(event_dims=3)(params.reshape(4, 1, 3, 3)).log_prob(x.reshape(4, 1, 3, 3))
    )


def test_supports() -> None:
    inside, outside = torch.tensor([0.0, 0.5, 1.0]), torch.tensor([-0.1, 1.1])
    for cls in (Bernoulli, ContinuousBernoulli):
        assert bool(cls.support.check(inside).all()) and not bool(cls.support.check(outside).any())
    assert bool(Gaussian.support.check(torch.tensor([-5.0, 5.0])).all())


@pytest.mark.parametrize("cls", ALL)
def test_a_likelihood_without_event_dims_says_how_to_get_them(cls: type[nn.Module]) -> None:
    with pytest.raises(ValueError, match="know the data's number of dimensions"):
        cls()(torch.zeros(2, 1, 3, 3))
