"""Closed-form KL functions and the ``kl_divergence`` dispatcher against torch and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, MixtureSameFamily, Normal
from torch.distributions import kl_divergence as torch_kl

import genvae
from genvae.kl import (
    StandardNormalDistribution,
    kl_bernoulli,
    kl_categorical,
    kl_divergence,
    kl_normal_normal,
    kl_normal_std,
)
from genvae.priors import MixtureOfGaussians, StandardNormal

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RTOL, ATOL = 1e-10, 1e-12
MATH = settings(max_examples=40, deadline=None)
MC = settings(max_examples=8, deadline=None)
MC_DRAWS = 20_000


@st.composite
def shaped(draw: st.DrawFn, n: int, lo: float, hi: float, max_last: int = 6) -> list[torch.Tensor]:
    """``n`` float64 tensors of one drawn shape ``(*batch, last)`` with entries in [lo, hi]."""
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    shape = (*batch, draw(st.integers(1, max_last)))
    elements = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return [torch.from_numpy(draw(hnp.arrays(np.float64, shape, elements=elements))) for _ in range(n)]


def diag_normal(mu: torch.Tensor, logvar: torch.Tensor) -> Distribution:
    return Independent(Normal(mu, (0.5 * logvar).exp()), 1)


def bernoullis(logits: torch.Tensor) -> Distribution:
    return Independent(Bernoulli(logits=logits), 1)


def mc_kl(q: Distribution, p: Distribution, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo KL(q‖p) over ``n`` draws and its standard error, per batch element."""
    z = q.sample((n,))
    terms = q.log_prob(z) - p.log_prob(z)
    return terms.mean(0), terms.std(0) / math.sqrt(n)


# ---------------------------------------------------------------- closed forms vs torch


@MATH
@given(shaped(2, -5.0, 5.0))
def test_kl_normal_std_matches_torch(params: list[torch.Tensor]) -> None:
    mu, logvar = params
    expected = torch_kl(diag_normal(mu, logvar), diag_normal(torch.zeros_like(mu), torch.zeros_like(mu)))
    got = kl_normal_std(mu, logvar)
    assert got.shape == mu.shape[:-1]
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


@MATH
@given(shaped(4, -5.0, 5.0))
def test_kl_normal_normal_matches_torch(params: list[torch.Tensor]) -> None:
    mu_q, lv_q, mu_p, lv_p = params
    got = kl_normal_normal(mu_q, lv_q, mu_p, lv_p)
    assert got.shape == mu_q.shape[:-1]
    torch.testing.assert_close(got, torch_kl(diag_normal(mu_q, lv_q), diag_normal(mu_p, lv_p)), rtol=RTOL, atol=ATOL)


@MATH
@given(shaped(4, -5.0, 5.0))
def test_kl_normal_normal_broadcasts_an_unbatched_p(params: list[torch.Tensor]) -> None:
    mu_q, lv_q, mu_p, lv_p = params
    mu_p, lv_p = mu_p.reshape(-1, mu_p.shape[-1])[0], lv_p.reshape(-1, lv_p.shape[-1])[0]  # (D,)
    got = kl_normal_normal(mu_q, lv_q, mu_p, lv_p)
    assert got.shape == mu_q.shape[:-1]
    torch.testing.assert_close(got, torch_kl(diag_normal(mu_q, lv_q), diag_normal(mu_p, lv_p)), rtol=RTOL, atol=ATOL)


@MATH
@given(shaped(2, -12.0, 12.0))
def test_kl_bernoulli_matches_torch(params: list[torch.Tensor]) -> None:
    lq, lp = params
    got = kl_bernoulli(lq, lp)
    assert got.shape == lq.shape[:-1]
    torch.testing.assert_close(got, torch_kl(bernoullis(lq), bernoullis(lp)), rtol=RTOL, atol=ATOL)


@MATH
@given(shaped(2, -10.0, 10.0, max_last=8))
def test_kl_categorical_matches_torch(params: list[torch.Tensor]) -> None:
    lq, lp = params
    got = kl_categorical(lq, lp)
    assert got.shape == lq.shape[:-1]
    torch.testing.assert_close(got, torch_kl(Categorical(logits=lq), Categorical(logits=lp)), rtol=RTOL, atol=ATOL)


@MATH
@given(shaped(2, -10.0, 10.0, max_last=8), st.floats(-50, 50))
def test_kl_categorical_ignores_a_constant_shift_of_the_logits(params: list[torch.Tensor], shift: float) -> None:
    lq, lp = params
    torch.testing.assert_close(kl_categorical(lq + shift, lp - shift), kl_categorical(lq, lp), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- KL(q, q) = 0 and KL >= 0


@MATH
@given(shaped(4, -8.0, 8.0))
def test_kl_of_a_distribution_with_itself_is_zero(params: list[torch.Tensor]) -> None:
    a, b, _, _ = params
    zero = torch.zeros(a.shape[:-1], dtype=a.dtype)
    torch.testing.assert_close(kl_normal_normal(a, b, a, b), zero, rtol=0, atol=ATOL)
    torch.testing.assert_close(kl_normal_std(torch.zeros_like(a), torch.zeros_like(a)), zero, rtol=0, atol=ATOL)
    torch.testing.assert_close(kl_bernoulli(a, a), zero, rtol=0, atol=ATOL)
    torch.testing.assert_close(kl_categorical(a, a), zero, rtol=0, atol=ATOL)


@MATH
@given(shaped(4, -8.0, 8.0))
def test_kl_is_non_negative(params: list[torch.Tensor]) -> None:
    a, b, c, d = params
    for kl in (
        kl_normal_std(a, b),
        kl_normal_normal(a, b, c, d),
        kl_bernoulli(a, c),
        kl_categorical(a, c),
    ):
        assert bool((kl >= -ATOL).all()), kl


# ---------------------------------------------------------------- closed forms vs Monte Carlo


@MC
@given(shaped(4, -2.0, 2.0, max_last=4), st.integers(0, 2**31 - 1))
def test_gaussian_kls_match_monte_carlo(params: list[torch.Tensor], seed: int) -> None:
    torch.manual_seed(seed)
    mu_q, lv_q, mu_p, lv_p = params
    q = diag_normal(mu_q, lv_q)
    for p, closed in (
        (diag_normal(mu_p, lv_p), kl_normal_normal(mu_q, lv_q, mu_p, lv_p)),
        (diag_normal(torch.zeros_like(mu_p), torch.zeros_like(lv_p)), kl_normal_std(mu_q, lv_q)),
    ):
        estimate, se = mc_kl(q, p, MC_DRAWS)
        assert bool(((estimate - closed).abs() <= 5 * se + 1e-9).all()), (estimate, closed, se)


@MC
@given(shaped(2, -4.0, 4.0, max_last=4), st.integers(0, 2**31 - 1))
def test_kl_bernoulli_matches_monte_carlo(params: list[torch.Tensor], seed: int) -> None:
    torch.manual_seed(seed)
    lq, lp = params
    estimate, se = mc_kl(bernoullis(lq), bernoullis(lp), MC_DRAWS)
    assert bool(((estimate - kl_bernoulli(lq, lp)).abs() <= 5 * se + 1e-9).all())


@MC
@given(shaped(2, -4.0, 4.0, max_last=6), st.integers(0, 2**31 - 1))
def test_kl_categorical_matches_monte_carlo(params: list[torch.Tensor], seed: int) -> None:
    torch.manual_seed(seed)
    lq, lp = params
    estimate, se = mc_kl(Categorical(logits=lq), Categorical(logits=lp), MC_DRAWS)
    assert bool(((estimate - kl_categorical(lq, lp)).abs() <= 5 * se + 1e-9).all())


def test_kl_categorical_with_masked_logits_is_finite() -> None:
    lq = torch.tensor([0.0, -math.inf, 1.0], dtype=torch.float64)
    lp = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    expected = torch_kl(Categorical(logits=lq), Categorical(logits=lp))
    torch.testing.assert_close(kl_categorical(lq, lp), expected, rtol=RTOL, atol=ATOL)


def test_kl_bernoulli_with_certain_q_is_finite() -> None:
    lq = torch.tensor([math.inf, -math.inf, 0.0], dtype=torch.float64)
    lp = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    expected = torch_kl(bernoullis(lq), bernoullis(lp))  # log 2 + softplus(1) + KL(½ ‖ σ(−2))
    torch.testing.assert_close(kl_bernoulli(lq, lp), expected, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- the dispatcher


@MATH
@given(shaped(2, -5.0, 5.0))
def test_dispatch_to_the_standard_normal_prior(params: list[torch.Tensor]) -> None:
    mu, logvar = params
    q = diag_normal(mu, logvar)
    p = StandardNormal(mu.shape[-1]).double()()
    assert isinstance(p, StandardNormalDistribution)
    reference = torch_kl(q, Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1))
    for got in (kl_divergence(q, p), genvae.kl_divergence(q, p), torch_kl(q, p)):
        torch.testing.assert_close(got, kl_normal_std(mu, logvar), rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(got, reference, rtol=RTOL, atol=ATOL)


def test_standard_normal_distribution_is_n01() -> None:
    p = StandardNormalDistribution(torch.zeros(3, dtype=torch.float64))
    z = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(p.log_prob(z), -0.5 * z.square().sum(-1) - 1.5 * math.log(2 * math.pi))
    assert p.event_shape == (3,) and p.batch_shape == ()


def test_dispatch_to_a_factorised_non_normal_q_uses_the_generic_rule() -> None:
    """An Independent q that is not Normal still gets base-KL summed over the event dims."""
    from torch.distributions import Laplace

    loc, scale = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64) + 0.5
    q = Independent(Laplace(loc, scale), 1)
    p = StandardNormal(3).double()()
    reference = torch_kl(q, Independent(Normal(torch.zeros(3, dtype=torch.float64), 1.0), 1))
    torch.testing.assert_close(kl_divergence(q, p), reference, rtol=RTOL, atol=ATOL)


def _posterior_and_mixture(batch: int = 3, dim: int = 2) -> tuple[Distribution, Distribution]:
    torch.manual_seed(0)
    q = diag_normal(
        torch.randn(batch, dim, dtype=torch.float64),
        0.5 * torch.randn(batch, dim, dtype=torch.float64),
    )
    return q, MixtureOfGaussians(dim, 3).double()()


def test_mixture_prior_without_mc_samples_raises() -> None:
    q, p = _posterior_and_mixture()
    with pytest.raises(NotImplementedError, match="mc_samples"):
        kl_divergence(q, p)


def test_mixture_prior_monte_carlo_matches_a_high_sample_reference() -> None:
    q, p = _posterior_and_mixture()
    torch.manual_seed(1)
    reference, ref_se = mc_kl(q, p, 200_000)
    n = 2000
    z = q.sample((n,))
    se = (q.log_prob(z) - p.log_prob(z)).std(0) / math.sqrt(n)
    torch.manual_seed(2)
    estimate = kl_divergence(q, p, mc_samples=n)
    assert estimate.shape == (3,)
    assert bool(((estimate - reference).abs() <= 5 * (se + ref_se)).all()), (
        estimate,
        reference,
        se,
    )


def test_mixture_prior_monte_carlo_is_differentiable() -> None:
    prior = MixtureOfGaussians(2, 3).double()
    mu = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)
    kl_divergence(diag_normal(mu, torch.zeros_like(mu)), prior(), mc_samples=16).sum().backward()
    assert mu.grad is not None and bool(mu.grad.abs().sum() > 0)
    assert all(p.grad is not None for p in prior.parameters())


def test_monte_carlo_kl_gradient_is_the_closed_form_gradient_through_the_draws() -> None:
    """The fallback's gradient flows through the reparameterised draws z = μ + σ·ε.

    p is N(m, s²) written as a one-component mixture, which has no registered KL, so the Monte-Carlo
    fallback runs while the closed-form KL (and its gradient) is known. q has N identical rows, each
    a leaf of its own, so one backward pass gives N independent one-draw gradients: their mean must
    match the closed-form gradient within 5 standard errors. Without the path through z (``sample``
    instead of ``rsample``) only the score ∇ log q(z) remains, whose mean is 0.
    """
    n = 4000
    mu0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    lv0 = torch.tensor([0.5, 0.3, 1.0], dtype=torch.float64)
    m = torch.tensor([-1.0, 0.5, 0.5], dtype=torch.float64)
    lv_p = torch.tensor([-0.5, -0.6, 0.0], dtype=torch.float64)
    one = MixtureSameFamily(
        Categorical(logits=torch.zeros(1, dtype=torch.float64)), diag_normal(m[None], lv_p[None])
    )  # N(m, exp(lv_p)), one component
    mu, lv = mu0.repeat(n, 1).requires_grad_(), lv0.repeat(n, 1).requires_grad_()  # (N, D) each
    torch.manual_seed(0)
    kl_divergence(diag_normal(mu, lv), one, mc_samples=1).sum().backward()  # (N,) one-draw estimates
    closed_mu, closed_lv = mu0.clone().requires_grad_(), lv0.clone().requires_grad_()
    expected = torch.autograd.grad(kl_normal_normal(closed_mu, closed_lv, m, lv_p), (closed_mu, closed_lv))
    for per_draw, exact in zip((mu.grad, lv.grad), expected, strict=True):
        assert per_draw is not None
        estimate, se = per_draw.mean(0), per_draw.std(0) / math.sqrt(n)
        assert bool(((estimate - exact).abs() <= 5 * se).all()), (estimate, exact, se)
        assert bool((exact.abs() > 10 * se).all())  # the test can tell the gradient from 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10"])
def test_bad_mc_samples_raise(bad: object) -> None:
    q, p = _posterior_and_mixture()
    with pytest.raises(ValueError, match="mc_samples"):
        kl_divergence(q, p, mc_samples=bad)  # type: ignore[arg-type]


def test_bool_mc_samples_raise() -> None:
    q, p = _posterior_and_mixture()
    with pytest.raises(ValueError, match="mc_samples"):
        kl_divergence(q, p, mc_samples=True)


def test_mismatched_event_shapes_raise() -> None:
    q = diag_normal(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"event shape.*\(3,\).*\(4,\)"):
        kl_divergence(q, StandardNormal(4)())
    with pytest.raises(ValueError, match="event shape"):
        kl_divergence(q, MixtureOfGaussians(4, 2)(), mc_samples=10)
