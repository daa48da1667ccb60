"""Observation models: log-densities against torch, closed forms and high-precision arithmetic; learned σ;
8-bit discretized logistics (masses, sampling frequencies, PixelCNN++'s coupling); shapes."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from torch import nn
from torch.distributions import AffineTransform, SigmoidTransform, TransformedDistribution, Uniform

import genvae
from genvae.likelihoods import (
    LOG_SCALE_MIN,
    Bernoulli,
    ContinuousBernoulli,
    DiscretizedLogistic,
    DiscretizedLogisticDistribution,
    DiscretizedLogisticMixture,
    DiscretizedLogisticMixtureDistribution,
    Gaussian,
)
from genvae.nets import ConvDecoder, ConvEncoder
from genvae.priors import StandardNormal

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


ALL = [Bernoulli, ContinuousBernoulli, Gaussian, DiscretizedLogistic, DiscretizedLogisticMixture]
#: The likelihoods that treat every element alike, so that flat data is just another data shape.
ELEMENTWISE = [Bernoulli, ContinuousBernoulli, Gaussian, DiscretizedLogistic]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("data_shape", [(1, 5, 7), (3, 2, 2)])
def test_event_shape_is_the_data_shape(cls: type[nn.Module], data_shape: tuple[int, ...]) -> None:
    lik = cls(event_dims=len(data_shape))
    assert isinstance(lik, genvae.Likelihood)
    d = lik(torch.zeros(6, *lik.param_shape(data_shape)))
    assert isinstance(d, torch.distributions.Distribution)
    assert d.event_shape == data_shape and d.batch_shape == (6,)


@pytest.mark.parametrize("cls", ALL)
def test_leading_sample_dims_pass_through(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    lik = cls(event_dims=3)
    params = torch.randn(5, 3, *lik.param_shape((1, 4, 4)))  # (K, B, P, H, W)
    x = torch.rand(3, 1, 4, 4)
    lp = lik(params).log_prob(x)
    assert lp.shape == (5, 3)
    for k in range(5):
        torch.testing.assert_close(lp[k], lik(params[k]).log_prob(x))


@pytest.mark.parametrize("cls", ELEMENTWISE)
def test_event_dims_one_on_flat_data(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    lik, image = cls(event_dims=1), cls(event_dims=3)
    params, x = torch.randn(4, *lik.param_shape((9,))), torch.rand(4, 9)
    d = lik(params)
    assert d.event_shape == (9,) and d.batch_shape == (4,)
    torch.testing.assert_close(
        d.log_prob(x), image(params.reshape(4, *image.param_shape((1, 3, 3)))).log_prob(x.reshape(4, 1, 3, 3))
    )


def test_supports() -> None:
    inside, outside = torch.tensor([0.0, 0.5, 1.0]), torch.tensor([-0.1, 1.1])
    for cls in (Bernoulli, ContinuousBernoulli, DiscretizedLogistic, DiscretizedLogisticMixture):
        assert bool(cls.support.check(inside).all()) and not bool(cls.support.check(outside).any())
    assert bool(Gaussian.support.check(torch.tensor([-5.0, 5.0])).all())


@pytest.mark.parametrize("cls", ALL)
def test_a_likelihood_without_event_dims_says_how_to_get_them(cls: type[nn.Module]) -> None:
    with pytest.raises(ValueError, match="know the data's number of dimensions"):
        cls()(torch.zeros(2, *cls().param_shape((1, 3, 3))))


@pytest.mark.parametrize(
    ("lik", "data_shape", "expected"),
    [
        (Bernoulli(), (1, 28, 28), (1, 28, 28)),
        (ContinuousBernoulli(), (3, 8, 8), (3, 8, 8)),
        (Gaussian(), (5,), (5,)),
        (DiscretizedLogistic(), (3, 8, 8), (6, 8, 8)),
        (DiscretizedLogistic(), (1, 28, 28), (2, 28, 28)),
        (DiscretizedLogisticMixture(), (3, 32, 32), (100, 32, 32)),  # PixelCNN++: 10·M for RGB
        (DiscretizedLogisticMixture(5), (3, 8, 8), (50, 8, 8)),
        (DiscretizedLogisticMixture(4), (1, 28, 28), (12, 28, 28)),  # 3·M for one channel
        (DiscretizedLogisticMixture(2), (2, 4, 4), (12, 4, 4)),  # logit, 2 + 2, one coefficient
    ],
)
def test_param_shape_of_every_likelihood(
    lik: nn.Module, data_shape: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    assert lik.param_shape(data_shape) == expected
    with pytest.raises(TypeError, match="data_shape"):
        lik.param_shape("3x8x8")


# ---------------------------------------------------------------- discretized logistics: oracles

GRID = torch.arange(256, dtype=torch.float64) / 255  # the 8-bit values x = k/255


def logistic_cdf(t: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """P(X < t) for X ~ logistic(loc, s), s = e^{max(log_scale, −7)}: the logit of a uniform, moved
    and scaled, and its CDF read through the inverse transforms. (``TransformedDistribution.cdf``
    itself returns ½ + (F − ½) for a tensor scale, which rounds away small CDF values' digits.)"""
    scale = log_scale.clamp(min=-7.0).exp()
    uniform = Uniform(torch.zeros_like(loc), torch.ones_like(loc))
    d = TransformedDistribution(uniform, [SigmoidTransform().inv, AffineTransform(loc, scale)])
    for transform in reversed(d.transforms):
        t = transform.inv(t)
    return d.base_dist.cdf(t)


def oracle_mass(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """P(x's bin) by logistic CDF differences in [−1, 1] coordinates, the end bins taking the tails.

    A bin above the location is measured in the mirror image, P(l < X < u) = P(−u < −X < −l) with
    −X ~ logistic(−loc, s), so that both CDF values are small and their difference keeps its digits.
    """
    x = 2 * x - 1
    mirror = x > loc
    x, loc = torch.where(mirror, -x, x), torch.where(mirror, -loc, loc)
    upper = torch.where(x == 1, 1.0, logistic_cdf(x + 1 / 255, loc, log_scale))
    lower = torch.where(x == -1, 0.0, logistic_cdf(x - 1 / 255, loc, log_scale))
    return upper - lower


def mp_log_mass(k: int, loc: float, log_scale: float) -> float:
    """log P(bin k) by CDF differences at 120 digits, from the side where both CDF values are small."""
    with mpmath.workdps(120):
        loc, s = mpmath.mpf(loc), mpmath.exp(max(mpmath.mpf(log_scale), -7))
        centre, h = mpmath.mpf(2 * k - 255) / 255, mpmath.mpf(1) / 255

        def below(t: mpmath.mpf) -> mpmath.mpf:  # P(X < t)
            return 1 / (1 + mpmath.exp(-(t - loc) / s))

        def above(t: mpmath.mpf) -> mpmath.mpf:  # P(X > t)
            return 1 / (1 + mpmath.exp((t - loc) / s))

        if centre > loc:
            mass = (above(centre - h) if k > 0 else 1) - (above(centre + h) if k < 255 else 0)
        else:
            mass = (below(centre + h) if k < 255 else 1) - (below(centre - h) if k > 0 else 0)
        return float(mpmath.log(mass))


def mixture_params(logits: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """The documented layout, written out: per component, [logit, C locations, C log-scales, raw coefficients].

    ``logits (B, M, H, W)``, ``loc``/``log_scale (B, M, C, H, W)``, ``raw (B, M, C(C-1)/2, H, W)`` → ``(B, M·Q, H, W)``.
    """
    return torch.cat([logits[:, :, None], loc, log_scale, raw], dim=2).flatten(1, 2)


def pixelcnn_log_prob(
    logits: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, raw: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """PixelCNN++'s RGB likelihood written out: μ_G = m_G + c₀·x'_R, μ_B = m_B + c₁·x'_R + c₂·x'_G."""
    c = torch.tanh(raw)  # (B, M, 3, H, W)
    r, g = 2 * x[:, None, 0] - 1, 2 * x[:, None, 1] - 1  # (B, 1, H, W)
    mu = (loc[:, :, 0], loc[:, :, 1] + c[:, :, 0] * r, loc[:, :, 2] + c[:, :, 1] * r + c[:, :, 2] * g)
    log_mass = sum(oracle_mass(x[:, None, i], mu[i], log_scale[:, :, i]).log() for i in range(3))  # (B, M, H, W)
    return torch.logsumexp(logits.log_softmax(1) + log_mass, 1).sum((1, 2))


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's test of counts against probabilities, cells expecting under 5 pooled into one."""
    expected = counts.sum() * probs
    small = expected < 5
    observed = torch.cat([counts[~small], counts[small].sum()[None]])
    expected = torch.cat([expected[~small], expected[small].sum()[None]])
    if expected[-1] < 1e-6:  # nothing to expect in the pooled cell: nothing may fall there
        assert observed[-1] == 0
        observed, expected = observed[:-1], expected[:-1]
    return float(
        stats.chisquare(observed.numpy(), expected.numpy() * observed.sum().item() / expected.sum().item()).pvalue
    )


@st.composite
def logistic_params(draw: st.DrawFn, n: int, loc: float, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` float64 locations in [−loc, loc] and log-scales in [lo, hi]."""
    locs = draw(hnp.arrays(np.float64, (n,), elements=st.floats(-loc, loc)))
    log_scales = draw(hnp.arrays(np.float64, (n,), elements=st.floats(lo, hi)))
    return torch.from_numpy(locs), torch.from_numpy(log_scales)


#: Bins drawn with the end bins and their neighbours favoured.
BINS = st.one_of(st.sampled_from([0, 1, 254, 255]), st.integers(0, 255))


# ---------------------------------------------------------------- discretized logistic


@MATH
@given(logistic_params(12, 1.5, -9.0, 3.0), hnp.arrays(np.int64, (12,), elements=BINS))
def test_discretized_logistic_is_a_logistic_cdf_difference(
    params: tuple[torch.Tensor, torch.Tensor], bins: np.ndarray
) -> None:
    loc, log_scale = (p.reshape(2, 3, 2) for p in params)  # (B, H, W) of one channel
    x = torch.from_numpy(bins).double().reshape(2, 1, 3, 2) / 255
    lik = DiscretizedLogistic(event_dims=3)
    d = lik(torch.stack([loc, log_scale], 1))  # (B, 2, H, W): locations, then log-scales
    per_pixel = d.base_dist.log_prob(x)[:, 0]
    expected = oracle_mass(x[:, 0], loc, log_scale)
    torch.testing.assert_close(per_pixel.exp(), expected, rtol=1e-10, atol=1e-300)  # the oracle floors at 2e-308
    sure = expected > 1e-290  # a mass far in a tail may underflow in float64
    torch.testing.assert_close(per_pixel[sure], expected[sure].log(), rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(d.log_prob(x), per_pixel.sum((1, 2)))


@settings(max_examples=60, deadline=None)
@given(BINS, st.floats(-40.0, 40.0), st.floats(-12.0, 100.0))
@example(k=255, loc=-1.0, log_scale=-7.0)  # mass e^{−2200}: a CDF difference is 0 in float64
@example(k=128, loc=0.0, log_scale=-7.0)  # the narrowest bin width: log(1 − e^{−d}) for d > ln 2
@example(k=128, loc=0.0, log_scale=90.0)  # a bin width of e^{−95}: 0 in float32
@example(k=128, loc=0.0, log_scale=16.0)  # log(1 − e^{−d}) = log d − d/2 for d = e^{−20.9}
@example(k=0, loc=40.0, log_scale=-12.0)  # below the floor, far in the lower tail
def test_log_mass_is_exact_deep_in_the_tails_and_at_extreme_scales(k: int, loc: float, log_scale: float) -> None:
    expected = mp_log_mass(k, loc, log_scale)
    x = torch.tensor(k / 255, dtype=torch.float64)
    got = DiscretizedLogisticDistribution(
        torch.tensor(loc, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64)
    ).log_prob(x)
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    loc32, log_scale32 = torch.tensor(loc, dtype=torch.float32), torch.tensor(log_scale, dtype=torch.float32)
    got32 = DiscretizedLogisticDistribution(loc32, log_scale32).log_prob(x.float())
    expected32 = mp_log_mass(k, loc32.item(), log_scale32.item())  # the same bin for float32's rounded parameters
    assert got32.item() == pytest.approx(expected32, rel=1e-5, abs=1e-4)


@MATH
@given(logistic_params(8, 3.0, -10.0, 5.0))
def test_discretized_logistic_masses_over_256_values_sum_to_one(params: tuple[torch.Tensor, torch.Tensor]) -> None:
    loc, log_scale = params
    lik = DiscretizedLogistic(event_dims=3)
    d = lik(torch.stack([loc, log_scale], 1)[:, :, None, None])  # (8, 2, 1, 1): 8 one-pixel grey images
    masses = d.log_prob(GRID.reshape(256, 1, 1, 1, 1)).exp()  # (256, 8)
    torch.testing.assert_close(masses.sum(0), torch.ones(8, dtype=torch.float64), rtol=0, atol=1e-12)


@MATH
@given(logistic_params(4, 3.0, -10.0, 5.0))
def test_discretized_logistic_mean_is_the_expectation_over_the_grid(params: tuple[torch.Tensor, torch.Tensor]) -> None:
    d = DiscretizedLogisticDistribution(*params)
    masses = d.log_prob(GRID[:, None]).exp()  # (256, 4)
    torch.testing.assert_close(d.mean, (GRID[:, None] * masses).sum(0), rtol=1e-10, atol=1e-12)


def test_log_scales_below_the_floor_are_the_floor() -> None:
    assert LOG_SCALE_MIN == -7.0
    x = torch.tensor([0.0, 100 / 255, 101 / 255, 1.0], dtype=torch.float64)
    loc = torch.full((4,), 2 * 100 / 255 - 1, dtype=torch.float64)  # the centre of bin 100
    log_scale = torch.tensor([-6.0, -9.0, -30.0, -7.5], dtype=torch.float64, requires_grad=True)
    got = DiscretizedLogisticDistribution(loc, log_scale).log_prob(x)
    floor = DiscretizedLogisticDistribution(loc, torch.tensor([-6.0, -7.0, -7.0, -7.0], dtype=torch.float64)).log_prob(
        x
    )
    torch.testing.assert_close(got, floor, rtol=0, atol=0)
    got.sum().backward()
    assert log_scale.grad is not None and bool((log_scale.grad[1:] == 0).all()) and log_scale.grad[0] != 0
    # At the floor, the bin of the location holds σ(h/s) − σ(−h/s) = tanh(h/2s), h = 1/255: 97%.
    assert got[1].exp().item() == pytest.approx(math.tanh(math.exp(7) / 510), rel=1e-12)
    assert 0.97 < got[1].exp().item() < 0.98


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_parameters_give_finite_log_probs_and_gradients(dtype: torch.dtype) -> None:
    loc = torch.tensor([-50.0, 50.0, 0.0, 0.0, 0.3, -1.0], dtype=dtype)
    log_scale = torch.tensor([-30.0, -7.0, 40.0, 100.0, -7.0, 0.0], dtype=dtype)
    params = torch.stack([loc, log_scale]).reshape(1, 2, 2, 3).requires_grad_(True)  # (B, 2C, H, W), C = 1
    x = torch.tensor([255, 0, 128, 0, 77, 255], dtype=dtype).reshape(1, 1, 2, 3) / 255
    lp = DiscretizedLogistic(event_dims=3)(params).log_prob(x)
    lp.sum().backward()
    assert bool(torch.isfinite(lp).all()) and params.grad is not None and bool(torch.isfinite(params.grad).all())
    expected = sum(
        mp_log_mass(int(k), float(m), float(s)) for k, m, s in zip((x * 255).round().flatten(), loc, log_scale)
    )
    assert lp.item() == pytest.approx(expected, rel=1e-5 if dtype == torch.float32 else 1e-10)


def test_values_between_grid_points_are_snapped_and_values_outside_are_refused() -> None:
    torch.manual_seed(0)
    d = DiscretizedLogisticDistribution(torch.randn(5).double(), torch.randn(5).double() - 2, validate_args=True)
    k = torch.tensor([0.0, 3.0, 128.0, 254.0, 255.0], dtype=torch.float64)
    on_grid = d.log_prob(k / 255)
    for offset in (-0.49, 0.49):
        torch.testing.assert_close(d.log_prob(((k + offset) / 255).clamp(0, 1)), on_grid, rtol=0, atol=0)
    assert not torch.equal(d.log_prob((k + 0.51).clamp(max=255) / 255)[:4], on_grid[:4])
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.full((5,), 1.5, dtype=torch.float64))


def test_discretized_logistic_samples_lie_on_the_grid_with_the_masses_frequencies() -> None:
    torch.manual_seed(0)
    # mid-range; piled up in the last bin; at the floor between two bins; broad
    loc = torch.tensor([0.1, 0.97, 2 * 40.5 / 255 - 1, -0.3], dtype=torch.float64)
    log_scale = torch.tensor([-3.0, -2.5, -7.0, 0.5], dtype=torch.float64)
    d = DiscretizedLogisticDistribution(loc, log_scale)
    x = d.sample((20_000,))  # (N, 4)
    assert x.shape == (20_000, 4) and bool(((x >= 0) & (x <= 1)).all())
    k = (x * 255).round()
    torch.testing.assert_close(x, k / 255, rtol=0, atol=0)
    masses = d.log_prob(GRID[:, None]).exp()  # (256, 4)
    for j in range(4):
        counts = torch.bincount(k[:, j].long(), minlength=256).double()
        assert chi_square_p_value(counts, masses[:, j]) > 1e-4


# ---------------------------------------------------------------- discretized logistic mixture


@st.composite
def rgb_mixtures(draw: st.DrawFn, h: int = 2, w: int = 2) -> tuple[torch.Tensor, ...]:
    """(logits, loc, log_scale, raw coefficients, x) float64 for one RGB image of M ∈ [1, 3] components."""
    m = draw(st.integers(1, 3))

    def array(shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
        return torch.from_numpy(draw(hnp.arrays(np.float64, shape, elements=st.floats(lo, hi))))

    logits, loc = array((1, m, h, w), -3.0, 3.0), array((1, m, 3, h, w), -1.2, 1.2)
    log_scale, raw = array((1, m, 3, h, w), -2.0, 1.0), array((1, m, 3, h, w), -3.0, 3.0)
    x = torch.from_numpy(draw(hnp.arrays(np.int64, (1, 3, h, w), elements=BINS))).double() / 255
    return logits, loc, log_scale, raw, x


@MATH
@given(rgb_mixtures())
def test_rgb_mixture_is_pixelcnn_formula(data: tuple[torch.Tensor, ...]) -> None:
    logits, loc, log_scale, raw, x = data
    lik = DiscretizedLogisticMixture(logits.shape[1], event_dims=3)
    got = lik(mixture_params(logits, loc, log_scale, raw)).log_prob(x)
    torch.testing.assert_close(got, pixelcnn_log_prob(logits, loc, log_scale, raw, x), rtol=1e-10, atol=1e-12)


@MATH
@given(rgb_mixtures(), st.sampled_from([1, 3]))
def test_one_component_without_coefficients_is_a_discretized_logistic_per_channel(
    data: tuple[torch.Tensor, ...], c: int
) -> None:
    logits, loc, log_scale, raw, x = data
    loc, log_scale, x = loc[:1, :1, :c], log_scale[:1, :1, :c], x[:, :c]  # one component, c channels
    zeros = torch.zeros(1, 1, c * (c - 1) // 2, *x.shape[2:], dtype=torch.float64)
    mixture = DiscretizedLogisticMixture(1, event_dims=3)(mixture_params(logits[:, :1], loc, log_scale, zeros))
    single = DiscretizedLogistic(event_dims=3)(torch.cat([loc[:, 0], log_scale[:, 0]], 1))
    torch.testing.assert_close(mixture.log_prob(x), single.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mixture.mean, single.mean, rtol=1e-12, atol=1e-12)


@MATH
@given(rgb_mixtures(h=1, w=1), st.integers(2, 9))
def test_rgb_masses_over_every_value_sum_to_one_for_any_number_of_bins(
    data: tuple[torch.Tensor, ...], num_bins: int
) -> None:
    logits, loc, log_scale, raw, _ = data
    grid = torch.arange(num_bins, dtype=torch.float64) / (num_bins - 1)
    x = torch.cartesian_prod(grid, grid, grid).reshape(-1, 1, 3, 1, 1)  # every RGB value of one pixel
    for lik, params in (
        (DiscretizedLogisticMixture(logits.shape[1], num_bins=num_bins), mixture_params(logits, loc, log_scale, raw)),
        (DiscretizedLogistic(num_bins=num_bins), torch.cat([loc[:, 0], log_scale[:, 0]], 1)),
    ):
        lik.event_dims = 3
        assert lik(params).log_prob(x).exp().sum().item() == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=10, deadline=None)
@given(rgb_mixtures(h=1, w=1), st.lists(st.tuples(BINS, BINS), min_size=3, max_size=3))
def test_rgb_mixture_sums_to_one_over_256_values_channel_by_channel(
    data: tuple[torch.Tensor, ...], red_green: list[tuple[int, int]]
) -> None:
    """Σ_B p(r, g, B) = p(r, g), Σ_G p(r, G) = p(r), Σ_R p(R) = 1 for 256 values, p(r, g) and p(r)
    being the mixtures over the first channels (the same parameters, without the later channels')."""
    logits, loc, log_scale, raw, _ = data
    m = logits.shape[1]
    rgb = DiscretizedLogisticMixture(m, event_dims=3)(mixture_params(logits, loc, log_scale, raw))
    rg = DiscretizedLogisticMixture(m, event_dims=3)(
        mixture_params(logits, loc[:, :, :2], log_scale[:, :, :2], raw[:, :, :1])
    )
    r = DiscretizedLogisticMixture(m, event_dims=3)(
        mixture_params(logits, loc[:, :, :1], log_scale[:, :, :1], raw[:, :, :0])
    )
    grid = GRID.reshape(256, 1, 1, 1)
    torch.testing.assert_close(r.log_prob(grid).exp().sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
    for red, green in red_green:
        r_, g_ = torch.full_like(grid, red / 255), torch.full_like(grid, green / 255)
        over_blue = rgb.log_prob(torch.cat([r_, g_, grid], 1)).exp().sum()
        over_green = rg.log_prob(torch.cat([r_, grid], 1)).exp().sum()
        torch.testing.assert_close(over_blue.log(), rg.log_prob(torch.cat([r_, g_], 1)[:1])[0], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(over_green.log(), r.log_prob(r_[:1])[0], rtol=1e-9, atol=1e-9)


def test_mixture_samples_follow_the_joint_probabilities_of_coupled_channels() -> None:
    """With 4 values per channel the 64 RGB cells can be counted; strong coefficients make a sampler
    that shifted later channels by anything but the earlier channels' grid values fail."""
    torch.manual_seed(0)
    logits = torch.tensor([0.5, -0.5], dtype=torch.float64).reshape(1, 2, 1, 1)
    loc = torch.tensor([[-0.2, 0.1, 0.0], [0.5, -0.6, 0.3]], dtype=torch.float64).reshape(1, 2, 3, 1, 1)
    log_scale = torch.tensor([[-1.0, -1.5, -1.2], [-0.8, -2.0, -1.0]], dtype=torch.float64).reshape(1, 2, 3, 1, 1)
    raw = torch.tensor([[2.0, -1.5, 1.0], [-2.0, 0.5, 2.5]], dtype=torch.float64).reshape(1, 2, 3, 1, 1)
    d = DiscretizedLogisticMixture(2, event_dims=3, num_bins=4)(mixture_params(logits, loc, log_scale, raw))
    x = d.sample((20_000,))  # (N, 1, 3, 1, 1)
    assert x.shape == (20_000, 1, 3, 1, 1)
    k = (x * 3).round()
    torch.testing.assert_close(x, k / 3, rtol=0, atol=0)
    cells = (k[:, 0, :, 0, 0] * torch.tensor([16.0, 4.0, 1.0], dtype=torch.float64)).sum(1).long()
    grid = torch.arange(4, dtype=torch.float64) / 3
    every = torch.cartesian_prod(grid, grid, grid).reshape(64, 1, 3, 1, 1)  # cell 16 r + 4 g + b
    probs = d.log_prob(every).exp()[:, 0]
    assert chi_square_p_value(torch.bincount(cells, minlength=64).double(), probs) > 1e-4


def test_rgb_mixture_samples_lie_on_the_grid_with_the_red_marginal_frequencies() -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 1, 1, dtype=torch.float64)
    loc, log_scale = torch.randn(1, 3, 3, 1, 1, dtype=torch.float64), torch.rand(1, 3, 3, 1, 1).double() * 2 - 4
    raw = torch.randn(1, 3, 3, 1, 1, dtype=torch.float64)
    d = DiscretizedLogisticMixture(3, event_dims=3)(mixture_params(logits, loc, log_scale, raw))
    x = d.sample((20_000,))[:, 0, :, 0, 0]  # (N, 3)
    k = (x * 255).round()
    torch.testing.assert_close(x, k / 255, rtol=0, atol=0)
    red = DiscretizedLogisticMixture(3, event_dims=3)(
        mixture_params(logits, loc[:, :, :1], log_scale[:, :, :1], raw[:, :, :0])
    )
    probs = red.log_prob(GRID.reshape(256, 1, 1, 1)).exp()
    assert chi_square_p_value(torch.bincount(k[:, 0].long(), minlength=256).double(), probs) > 1e-4


def test_mixture_mean_is_exact_without_coupling_and_follows_the_coupling_otherwise() -> None:
    torch.manual_seed(2)
    logits = torch.randn(1, 3, 1, 1, dtype=torch.float64)
    loc, log_scale = torch.randn(1, 3, 3, 1, 1, dtype=torch.float64), torch.rand(1, 3, 3, 1, 1).double() - 2
    uncoupled = DiscretizedLogisticMixture(3, event_dims=3)(
        mixture_params(logits, loc, log_scale, torch.zeros_like(loc))
    )
    for c in range(3):  # channel c alone is the mixture of its own logistics
        alone = DiscretizedLogisticMixture(3, event_dims=3)(
            mixture_params(logits, loc[:, :, c : c + 1], log_scale[:, :, c : c + 1], loc[:, :, :0])
        )
        expected = (GRID * alone.log_prob(GRID.reshape(256, 1, 1, 1)).exp()).sum()
        assert uncoupled.mean[0, c, 0, 0].item() == pytest.approx(expected.item(), rel=1e-10)
    # Narrow logistics: each channel nearly determined by the earlier ones, so the mean must carry the
    # coupling (G: m_G + tanh(1)·x'_R) as the samples do.
    narrow = torch.full_like(log_scale, -5.0)
    raw = torch.ones_like(loc)
    coupled = DiscretizedLogisticMixture(3, event_dims=3)(mixture_params(logits, loc.clamp(-0.4, 0.4), narrow, raw))
    torch.testing.assert_close(coupled.mean, coupled.sample((4000,)).mean(0), rtol=0, atol=4e-3)


def test_mixture_gradcheck() -> None:
    torch.manual_seed(3)
    lik = DiscretizedLogisticMixture(2, event_dims=3)
    params = torch.randn(2, *lik.param_shape((3, 1, 2)), dtype=torch.float64).requires_grad_(True)
    x = torch.tensor([0, 255, 30, 254, 1, 128, 255, 0, 200, 64, 255, 7], dtype=torch.float64).reshape(2, 3, 1, 2) / 255
    assert torch.autograd.gradcheck(lambda p: lik(p).log_prob(x), (params,))
    single = DiscretizedLogistic(event_dims=3)
    params = torch.randn(2, *single.param_shape((3, 1, 2)), dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: single(p).log_prob(x), (params,))


# ---------------------------------------------------------------- arguments


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="num_components"):
        DiscretizedLogisticMixture(0)
    with pytest.raises(TypeError, match="num_components"):
        DiscretizedLogisticMixture(2.5)  # type: ignore[arg-type]
    for cls in (DiscretizedLogistic, DiscretizedLogisticMixture):
        with pytest.raises(ValueError, match="num_bins"):
            cls(num_bins=1)
    with pytest.raises(ValueError, match="params with an even number of channels"):
        DiscretizedLogistic(event_dims=3)(torch.zeros(2, 5, 4, 4))
    with pytest.raises(ValueError, match=r"params with num_components.*\(30 for C=1, 60 for C=2, 100 for C=3\)"):
        DiscretizedLogisticMixture(10, event_dims=3)(torch.zeros(2, 37, 4, 4))
    loc = torch.zeros(2, 3, 1, 4, 4)  # (B, M, C, H, W)
    with pytest.raises(ValueError, match="logits"):
        DiscretizedLogisticMixtureDistribution(torch.zeros(2, 2, 4, 4), loc, loc, event_dims=3)
    with pytest.raises(ValueError, match="coeffs"):
        DiscretizedLogisticMixtureDistribution(
            torch.zeros(2, 3, 4, 4), loc, loc, torch.zeros(2, 3, 1, 4, 4), event_dims=3
        )
    with pytest.raises(TypeError, match="log_scale"):
        DiscretizedLogisticDistribution(torch.zeros(3), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="loc and log_scale"):
        DiscretizedLogisticDistribution(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="loc"):
        DiscretizedLogisticDistribution(torch.tensor([float("nan")]), torch.zeros(1), validate_args=True)


def test_mixture_distribution_shapes_under_sample_dims() -> None:
    torch.manual_seed(4)
    lik = DiscretizedLogisticMixture(4, event_dims=3)
    params = torch.randn(5, 3, *lik.param_shape((3, 2, 2)))  # (S, B, P, H, W)
    d = lik(params)
    assert d.batch_shape == (5, 3) and d.event_shape == (3, 2, 2)
    assert d.sample().shape == (5, 3, 3, 2, 2) and d.sample((7,)).shape == (7, 5, 3, 3, 2, 2)
    assert d.mean.shape == (5, 3, 3, 2, 2) and bool(((d.mean >= 0) & (d.mean <= 1)).all())
    x = torch.randint(0, 256, (3, 3, 2, 2)) / 255
    assert bool(d.support.check(x).all()) and not bool(d.support.check(x + 1).any())
    lp = d.log_prob(x)  # x (B, ...) broadcast against (S, B)
    assert lp.shape == (5, 3)
    torch.testing.assert_close(lp[2, 1], lik(params[2, 1]).log_prob(x[1]))


# ---------------------------------------------------------------- in a VAE


@pytest.mark.parametrize("likelihood", [DiscretizedLogistic(), DiscretizedLogisticMixture(3)], ids=type)
def test_a_vae_on_8_bit_colour_images_trains_and_samples_grid_values(likelihood: nn.Module) -> None:
    torch.manual_seed(0)
    shape = (3, 8, 8)
    encoder = ConvEncoder(shape, 4, channels=(8, 16), hidden=32)
    model = genvae.VAE(
        encoder,
        ConvDecoder(4, likelihood.param_shape(shape), channels=(16, 8), hidden=32),
        likelihood,
        StandardNormal(4),
    )
    assert model.data_shape == shape and likelihood.event_dims == 3
    x = torch.randint(0, 256, (16, *shape)) / 255

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same draws of z for each evaluation
        return model.elbo(x).loss

    before = loss()
    assert bool(torch.isfinite(before))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        opt.zero_grad()
        model.elbo(x).loss.backward()
        opt.step()
    assert loss().item() < before.item() - 1.0
    assert bool(torch.isfinite(model.elbo(x, k=3).elbo).all())  # (k, B) importance samples
    draws = model.sample(2, mean=False)
    assert draws.shape == (2, *shape)
    torch.testing.assert_close(draws, (draws * 255).round() / 255, rtol=0, atol=0)
    means = model.sample(2)
    assert means.shape == (2, *shape) and bool(((means >= 0) & (means <= 1)).all())
    with pytest.raises(ValueError, match="support"):
        model.elbo(x + 1)
