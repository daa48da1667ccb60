"""Properties of the mathematical core that the mutation run (``benchmarks/mutate.py``) found no
other test asserting: each test here fails for at least one mutant of the module it names.

KLs against torch.distributions on batches of more than one dimension, schedules against their
formulas, objectives' values and gradients against float64 computations by hand, the IW pass sizes,
and the flow steps against their matrices.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Independent, Laplace, Normal
from torch.distributions import kl_divergence as torch_kl

from genvae import ELBO, IWAE, STL, DReG, FreeBits, LatentLayer, Terms
from genvae.kl import StandardNormalDistribution, kl_divergence, kl_normal_normal, kl_normal_std, kl_on_draws
from genvae.schedules import Constant, Cyclical, LinearWarmup, as_schedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def gaussian(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    return Independent(Normal(loc, scale), 1)


# ------------------------------------------------------------------ kl.py


def test_closed_form_kls_reduce_the_last_dim_of_a_three_dim_batch() -> None:
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(2, 3, 4, generator=g, dtype=F64), torch.randn(2, 3, 4, generator=g, dtype=F64)
    lv_q, lv_p = torch.randn(2, 3, 4, generator=g, dtype=F64), torch.randn(2, 3, 4, generator=g, dtype=F64)
    q, p = gaussian(mu_q, (0.5 * lv_q).exp()), gaussian(mu_p, (0.5 * lv_p).exp())
    std = gaussian(torch.zeros_like(mu_q), torch.ones_like(mu_q))
    torch.testing.assert_close(kl_normal_normal(mu_q, lv_q, mu_p, lv_p), torch_kl(q, p))
    torch.testing.assert_close(kl_normal_std(mu_q, lv_q), torch_kl(q, std))
    torch.testing.assert_close(kl_divergence(q, StandardNormalDistribution(torch.zeros_like(mu_q))), torch_kl(q, std))


def test_the_generic_rule_sums_a_factorised_non_normal_posterior_over_its_event_dim() -> None:
    g = torch.Generator().manual_seed(1)
    loc, scale = torch.randn(2, 3, 4, generator=g, dtype=F64), torch.rand(2, 3, 4, generator=g, dtype=F64) + 0.5
    q = Independent(Laplace(loc, scale), 1)
    expected = torch_kl(Laplace(loc, scale), Normal(torch.zeros_like(loc), torch.ones_like(loc))).sum(-1)
    torch.testing.assert_close(kl_divergence(q, StandardNormalDistribution(torch.zeros_like(loc))), expected)


def test_one_monte_carlo_draw_is_a_valid_request() -> None:
    q = gaussian(torch.zeros(3, 2), torch.ones(3, 2))
    p = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(2)), gaussian(torch.zeros(2, 2), torch.ones(2, 2))
    )
    assert kl_divergence(q, p, mc_samples=1).shape == (3,)


def test_kl_on_draws_broadcasts_the_closed_form_over_the_draws() -> None:
    q = gaussian(torch.randn(3, 2, dtype=F64), torch.rand(3, 2, dtype=F64) + 0.5)
    p = gaussian(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64))
    z = q.rsample((5,))  # (5, 3, 2)
    kl = kl_on_draws(q, p, z)
    assert kl.shape == (5, 3)
    torch.testing.assert_close(kl, torch_kl(q, p).expand(5, 3))


# ------------------------------------------------------------------ schedules.py


@settings(max_examples=60, deadline=None)
@given(step=st.integers(0, 50), steps=st.integers(1, 20), beta=st.floats(0.0, 4.0))
def test_linear_warmup_is_beta_times_the_clipped_fraction_of_warmup_done(step: int, steps: int, beta: float) -> None:
    expected = beta * min(1.0, step / steps)
    schedule = LinearWarmup(beta, steps=steps)
    assert schedule.value(step) == pytest.approx(expected)
    assert float(schedule.value(torch.tensor(step))) == pytest.approx(expected, rel=1e-6, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(step=st.integers(1, 60), period=st.integers(1, 12), ratio=st.sampled_from([0.25, 0.5, 0.75, 1.0]))
def test_cyclical_rises_from_zero_over_the_first_part_of_each_cycle(step: int, period: int, ratio: float) -> None:
    into = (step - 1) - period * ((step - 1) // period)  # steps into the current cycle, from 0
    expected = 2.0 * min(1.0, into / (period * ratio))
    schedule = Cyclical(2.0, period=period, ratio=ratio)
    assert schedule.value(step) == pytest.approx(expected)
    assert float(schedule.value(torch.tensor(step))) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_schedules_accept_the_edges_of_their_ranges_and_refuse_what_is_beyond() -> None:
    assert Constant(0).value(3) == 0.0 and LinearWarmup(0.0, steps=1).value(1) == 0.0
    assert Cyclical(1.0, period=1, ratio=1.0).value(5) == 0.0
    assert as_schedule(0.0).value(1) == 0.0 and as_schedule(2).value(1) == 2.0
    schedule = LinearWarmup(1.0, steps=4)
    assert as_schedule(schedule) is schedule
    for bad in (-1e-9, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="beta"):
            Constant(bad)
        with pytest.raises(ValueError, match="beta"):
            as_schedule(bad)
    with pytest.raises(TypeError, match="beta"):
        as_schedule(True)
    with pytest.raises(ValueError, match="steps"):
        LinearWarmup(1.0, steps=0)
    with pytest.raises(ValueError, match="ratio"):
        Cyclical(1.0, period=2, ratio=0.0)
    with pytest.raises(ValueError, match="ratio"):
        Cyclical(1.0, period=2, ratio=1.5)


# ------------------------------------------------------------------ objectives.py and terms.py


def synthetic_terms(k: int = 4, b: int = 3, d: int = 2, seed: int = 0) -> tuple[Terms, dict[str, torch.Tensor]]:
    """Terms of a toy model in float64 whose log-likelihood is a known function of the draws:
    log p(x | z) = −½ ‖z − x‖², with a Gaussian posterior whose parameters are leaves."""
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(b, d, generator=g, dtype=F64).requires_grad_()
    log_scale = (0.3 * torch.randn(b, d, generator=g, dtype=F64)).requires_grad_()
    x = torch.randn(b, d, generator=g, dtype=F64)
    eps = torch.randn(k, b, d, generator=g, dtype=F64)
    z = loc + log_scale.exp() * eps  # (k, B, D)
    q = gaussian(loc, log_scale.exp())
    p = gaussian(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64))
    ll = -0.5 * (z - x).square().sum(-1)  # (k, B)
    return Terms(ll, (LatentLayer(q, p, z),)), {"loc": loc, "log_scale": log_scale, "x": x, "eps": eps}


def by_hand(parts: dict[str, torch.Tensor], *, stop_q: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(x|z), log p(z), log q(z|x) ``(k, B)`` written out; q's parameters detached if ``stop_q``."""
    loc, log_scale = parts["loc"], parts["log_scale"]
    z = loc + log_scale.exp() * parts["eps"]
    ql, qs = (loc.detach(), log_scale.detach()) if stop_q else (loc, log_scale)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    log_q = (-0.5 * ((z - ql) / qs.exp()).square() - qs - half_log_2pi).sum(-1)
    log_p = (-0.5 * z.square() - half_log_2pi).sum(-1)
    ll = -0.5 * (z - parts["x"]).square().sum(-1)
    return ll, log_p, log_q


def grads(loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, (parts["loc"], parts["log_scale"]))


def test_terms_count_the_draws_not_the_batch() -> None:
    terms, _ = synthetic_terms(k=4, b=3)
    assert terms.k == 4


def test_elbo_with_beta_weighs_the_kl_in_the_loss_but_not_in_the_bound() -> None:
    terms, parts = synthetic_terms()
    ll, _, _ = by_hand(parts, stop_q=False)
    q = gaussian(parts["loc"], parts["log_scale"].exp())
    kl = torch_kl(q, gaussian(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)))  # (B,)
    out = ELBO(beta=0.3)(terms)
    torch.testing.assert_close(out.loss, -(ll - 0.3 * kl).mean())
    torch.testing.assert_close(out.bound, (ll - kl).mean(0))


def test_iwae_with_beta_raises_the_prior_to_posterior_ratio_to_beta() -> None:
    terms, parts = synthetic_terms()
    ll, log_p, log_q = by_hand(parts, stop_q=False)
    out = IWAE(k=4, beta=0.5)(terms, step=1)
    expected_bound = torch.logsumexp(ll + log_p - log_q, 0) - math.log(4)
    tempered = torch.logsumexp(ll + 0.5 * (log_p - log_q), 0) - math.log(4)
    torch.testing.assert_close(out.bound, expected_bound)
    torch.testing.assert_close(out.loss, -tempered.mean())
    torch.testing.assert_close(IWAE(k=4, beta=LinearWarmup(1.0, steps=1))(terms, step=1).loss, -expected_bound.mean())


def test_stl_value_is_the_elbo_and_its_gradient_is_the_path_derivative_alone() -> None:
    terms, parts = synthetic_terms()
    out = STL(k=4)(terms)
    ll, log_p, log_q = by_hand(parts, stop_q=False)
    torch.testing.assert_close(out.loss, -(ll + log_p - log_q).mean())
    torch.testing.assert_close(out.bound, (ll + log_p - log_q).mean(0))
    ll, log_p, log_q_stopped = by_hand(parts, stop_q=True)
    for got, want in zip(grads(out.loss, parts), grads(-(ll + log_p - log_q_stopped).mean(), parts)):
        torch.testing.assert_close(got, want)


def test_dreg_gradient_is_the_squared_normalised_weights_times_the_path_derivative() -> None:
    terms, parts = synthetic_terms()
    out = DReG(k=4)(terms)
    ll, log_p, log_q = by_hand(parts, stop_q=False)
    torch.testing.assert_close(out.loss, -(torch.logsumexp(ll + log_p - log_q, 0) - math.log(4)).mean())
    ll, log_p, log_q_stopped = by_hand(parts, stop_q=True)
    log_w = ll + log_p - log_q_stopped  # (k, B)
    w2 = torch.softmax(log_w.detach(), 0).square()
    for got, want in zip(grads(out.loss, parts), grads(-(w2 * log_w).sum(0).mean(), parts)):
        torch.testing.assert_close(got, want)


def test_free_bits_loss_floors_the_batch_mean_kl_of_each_dimension() -> None:
    terms, parts = synthetic_terms(k=2, b=3)
    ll, _, _ = by_hand(parts, stop_q=False)
    q = Normal(parts["loc"], parts["log_scale"].exp())
    per_dim = torch_kl(q, Normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)))  # (B, D)
    means = per_dim.detach().mean(0)  # (D,)
    lam = float(means.min() + means.max()) / 2  # binds in one dimension, not the other
    out = FreeBits(lam, beta=0.5)(terms)
    torch.testing.assert_close(out.loss, -ll.mean() + 0.5 * per_dim.mean(0).clamp(min=lam).sum())
    torch.testing.assert_close(out.bound, (ll - per_dim.sum(-1)).mean(0))
    torch.testing.assert_close(FreeBits(0)(terms).loss, -ll.mean() + per_dim.mean(0).sum())


# ------------------------------------------------------------------ metrics/likelihood.py


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 500), most=st.integers(1, 100))
def test_even_parts_are_as_few_as_possible_and_never_over_the_limit(total: int, most: int) -> None:
    from genvae.metrics.likelihood import _even

    size = _even(total, most)
    parts = math.ceil(total / most)
    assert 1 <= size <= most
    assert math.ceil(total / size) == parts  # no more parts than the fewest possible
    assert total - (parts - 1) * size <= size  # the last part is the smallest


def test_an_iw_summary_reads_as_its_nll() -> None:
    from genvae.metrics.likelihood import IWSummary

    summary = IWSummary(nll=91.25, stderr=0.5, k=100, num_examples=7)
    assert float(summary) == 91.25
    assert str(summary) == "IW-NLL (K=100) 91.25 ± 0.50 nats (7 examples)"


def test_evaluate_elbo_reports_means_over_examples_whatever_the_batch_size() -> None:
    from genvae import VAE
    from genvae.likelihoods import Bernoulli
    from genvae.metrics.likelihood import evaluate_elbo, evaluate_iw_nll
    from genvae.nets import MLPDecoder, MLPEncoder
    from genvae.priors import StandardNormal

    torch.manual_seed(0)
    model = VAE(MLPEncoder((6,), 2), MLPDecoder(2, (6,)), Bernoulli(), StandardNormal(2))
    x = torch.rand(7, 6).round()
    with torch.no_grad():
        q = model.encode(x)
        kl = torch_kl(q, gaussian(torch.zeros(2), torch.ones(2))).double().mean()  # closed form: no draws
    for batch_size in (3, 7):
        summary = evaluate_elbo(model, x, batch_size=batch_size)
        assert summary.num_examples == 7
        assert summary.kl == pytest.approx(float(kl), rel=1e-5)
        assert summary.loss == pytest.approx(summary.kl - summary.log_likelihood, rel=1e-5)
    one = evaluate_iw_nll(model, x[:1], 3)
    assert one.num_examples == 1 and math.isnan(one.stderr) and math.isfinite(one.nll)


# ------------------------------------------------------------------ flows.py


def jacobian(f, z: torch.Tensor) -> torch.Tensor:
    """``(B, D, D)`` Jacobian of ``f`` at each row of ``z (B, D)``, one example at a time."""
    return torch.stack([torch.autograd.functional.jacobian(f, row[None])[0, :, 0] for row in z])


def test_a_householder_step_is_the_reflection_matrix_and_its_own_inverse() -> None:
    from genvae.flows import Householder

    step = Householder(3).double()
    z = torch.randn(5, 3, dtype=F64)
    v = step.v.detach()
    matrix = torch.eye(3, dtype=F64) - 2 * torch.outer(v, v) / v.dot(v)
    transform = step(torch.zeros(5, 0, dtype=F64))
    y = transform(z)
    torch.testing.assert_close(y, z @ matrix.T)
    torch.testing.assert_close(transform.inv(y), z)
    assert transform.log_abs_det_jacobian(z, y).shape == (5,)
    with torch.no_grad():
        step.v.zero_()
    torch.testing.assert_close(step(torch.zeros(5, 0, dtype=F64))(z), z)  # v = 0: the identity, not NaN


def test_a_planar_step_keeps_w_u_hat_above_minus_one_and_its_log_det_is_the_jacobians() -> None:
    from genvae.flows import Planar

    torch.manual_seed(0)
    step = Planar(3).double()
    with torch.no_grad():
        step.params.copy_(torch.tensor([2.0, -1.0, 0.5, -1.5, 1.0, 0.3, 0.2], dtype=F64))  # wᵀu < −1
    transform = step(torch.zeros(4, 0, dtype=F64))
    u, w, b = step.params.detach()[:3], step.params.detach()[3:6], step.params.detach()[6:]
    wu = w.dot(u)
    assert float(transform.w_u_hat.detach()) == pytest.approx(float(torch.nn.functional.softplus(wu) - 1))
    z = torch.randn(4, 3, dtype=F64)
    u_hat = transform.u_hat.detach()
    torch.testing.assert_close(transform(z), z + u_hat * torch.tanh(z @ w + b)[:, None])
    jac = jacobian(lambda t: step(torch.zeros(1, 0, dtype=F64))._call(t), z)
    torch.testing.assert_close(transform.log_abs_det_jacobian(z, transform(z)), torch.linalg.slogdet(jac)[1])


def test_an_iaf_step_inverts_and_its_log_det_is_the_jacobians() -> None:
    from genvae.flows import IAF

    torch.manual_seed(0)
    step = IAF(3, hidden=(8,), gate_bias=0.0).double()
    transform = step(torch.zeros(4, 0, dtype=F64))
    z = torch.randn(4, 3, dtype=F64)
    y = transform(z)
    jac = jacobian(lambda t: step(torch.zeros(1, 0, dtype=F64))._call(t), z)
    torch.testing.assert_close(transform.log_abs_det_jacobian(z, y), torch.linalg.slogdet(jac)[1])
    unflipped = jac.flip(1)  # output i (before the reversal) depends on z_{<=i} only
    torch.testing.assert_close(unflipped, unflipped.tril())
    torch.testing.assert_close(step(torch.zeros(4, 0, dtype=F64)).inv(y), z)


def test_a_flow_mean_is_the_base_mean_pushed_through_the_steps_and_keeps_the_draws() -> None:
    from genvae.flows import FlowDistribution, Householder, Planar

    torch.manual_seed(1)
    steps = [Householder(2).double(), Planar(2).double()]
    base = gaussian(torch.randn(3, 2, dtype=F64), torch.ones(3, 2, dtype=F64))
    transforms = [s(torch.zeros(3, 0, dtype=F64)) for s in steps]
    flow = FlowDistribution(base, transforms)
    z = flow.rsample((2,))
    log_q = flow.log_prob(z)
    expected = base.mean
    for t in transforms:
        expected = t._call(expected)
    torch.testing.assert_close(flow.mean, expected)
    torch.testing.assert_close(flow.log_prob(z), log_q)  # the planar step still inverts its own draw


# ------------------------------------------------------------------ hierarchy.py


def test_kl_on_draws_is_its_base_under_another_type() -> None:
    from genvae.hierarchy import KLOnDraws, _kl_on_draws, _merge

    base = Normal(torch.randn(3, 2, dtype=F64, requires_grad=True), torch.rand(3, 2, dtype=F64) + 0.5)
    wrapped = KLOnDraws(base)
    assert wrapped.rsample().requires_grad and not wrapped.sample().requires_grad
    z = torch.randn(3, 2, dtype=F64)
    torch.testing.assert_close(wrapped.log_prob(z), base.log_prob(z))
    torch.testing.assert_close(wrapped.mean, base.mean)
    torch.testing.assert_close(wrapped.mode, base.mode)
    torch.testing.assert_close(wrapped.variance, base.variance)
    torch.testing.assert_close(wrapped.entropy(), base.entropy())
    assert wrapped.has_rsample and wrapped.rsample((4,)).shape == (4, 3, 2) and wrapped.sample().shape == (3, 2)
    assert wrapped.expand((5, 3, 2)).batch_shape == (5, 3, 2)
    factorised = _kl_on_draws(Independent(base, 1))
    assert isinstance(factorised, Independent) and factorised.event_shape == (2,)
    torch.testing.assert_close(factorised.log_prob(z), base.log_prob(z).sum(-1))
    h, t = torch.randn(3, 4), torch.randn(5, 3, 2)
    merged = _merge(h, t)
    assert merged.shape == (5, 3, 6)
    torch.testing.assert_close(merged[..., :4], h.expand(5, 3, 4))
    torch.testing.assert_close(merged[..., 4:], t)
