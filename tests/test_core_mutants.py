"""Properties of the mathematical core that the mutation run (``benchmarks/mutate.py``) found no
other test asserting: each test here fails for at least one mutant of the module it names.

KLs against torch.distributions on batches of more than one dimension, schedules against their
formulas, objectives' values and gradients against float64 computations by hand, the IW pass sizes,
and the flow steps against their matrices.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Independent, Laplace, Normal
from torch.distributions import kl_divergence as torch_kl

from genvae import ELBO, IWAE, STL, VAE, DReG, FreeBits, LatentLayer, Terms
from genvae.kl import (
    StandardNormalDistribution,
    kl_divergence,
    kl_normal_normal,
    kl_normal_std,
    kl_on_draws,
    kl_per_dim,
)
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


def test_a_nan_draw_has_a_nan_standard_normal_density_not_a_validation_error() -> None:
    # fit reports a diverging run as a non-finite loss (FloatingPointError); the prior must not raise first
    prior = StandardNormalDistribution(torch.zeros(3, 2, dtype=F64))
    z = torch.tensor([[0.0, 1.0], [math.nan, 0.0], [2.0, -1.0]], dtype=F64)
    log_p = prior.log_prob(z)
    expected = (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)  # (3,)
    torch.testing.assert_close(log_p, expected, equal_nan=True)
    assert log_p.isnan().tolist() == [False, True, False]


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


def test_kl_per_dim_is_the_kl_or_log_ratio_of_each_factor_and_sums_to_kl_on_draws() -> None:
    g = torch.Generator().manual_seed(2)
    loc, scale = torch.randn(3, 4, generator=g, dtype=F64), torch.rand(3, 4, generator=g, dtype=F64) + 0.5
    q = gaussian(loc, scale)
    z = q.rsample((5,))  # (5, 3, 4)
    normal = gaussian(torch.zeros(4, dtype=F64), torch.full((4,), 2.0, dtype=F64))
    torch.testing.assert_close(kl_per_dim(q, normal, z), torch_kl(q.base_dist, normal.base_dist).expand(5, 3, 4))
    # No closed form for Normal ‖ StudentT: the log ratio of each factor at the draws.
    t = torch.distributions.StudentT(torch.full((4,), 3.0, dtype=F64), torch.zeros(4, dtype=F64), 2.0)
    student = Independent(t, 1)
    expected = Normal(loc, scale).log_prob(z) - t.log_prob(z)  # (5, 3, 4)
    torch.testing.assert_close(kl_per_dim(q, student, z), expected)
    torch.testing.assert_close(kl_on_draws(q, student, z), expected.sum(-1))


def test_kl_per_dim_refuses_a_posterior_or_a_prior_that_does_not_factorise() -> None:
    q = gaussian(torch.zeros(3, 4), torch.ones(3, 4))
    z = q.rsample((2,))
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(2)), gaussian(torch.zeros(2, 4), torch.ones(2, 4))
    )
    for posterior, prior in ((q, mixture), (mixture, q)):
        with pytest.raises(ValueError, match="factorise"):
            kl_per_dim(posterior, prior, z)
    matrix = Independent(Normal(torch.zeros(3, 2, 2), torch.ones(3, 2, 2)), 2)  # event (2, 2): a KL per element
    with pytest.raises(ValueError, match="same event shape"):
        kl_per_dim(q, matrix, z)


def test_a_posterior_without_rsample_gets_a_monte_carlo_kl_from_plain_draws() -> None:
    torch.manual_seed(0)
    q = torch.distributions.Categorical(torch.tensor([0.5, 0.3, 0.2], dtype=F64))
    p = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.tensor([0.4, 0.6], dtype=F64)),
        torch.distributions.Categorical(torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]], dtype=F64)),
    )
    values = torch.arange(3)
    exact = (q.probs * (q.log_prob(values) - p.log_prob(values))).sum()
    estimate = kl_divergence(q, p, mc_samples=20_000)
    assert abs(float(estimate - exact)) < 0.03


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


def test_as_schedule_refuses_non_numbers_and_bad_numbers_naming_the_argument() -> None:
    for bad in (None, "0.5", [1.0]):
        with pytest.raises(TypeError, match="gamma"):
            as_schedule(bad, name="gamma")  # type: ignore[arg-type]
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="gamma"):  # its own check, not Constant's message about beta
            as_schedule(bad, name="gamma")


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
    doubled = torch.logsumexp(ll + 2.0 * (log_p - log_q), 0) - math.log(4)  # β = 2: no shortcut but β = 1's
    torch.testing.assert_close(IWAE(k=4, beta=2.0)(terms).loss, -doubled.mean())


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


def test_free_bits_refuses_a_floor_that_is_negative_or_not_finite() -> None:
    assert FreeBits(0).lambda_ == 0.0
    for bad in (-1e-9, math.inf, math.nan):
        with pytest.raises(ValueError, match="lambda_"):
            FreeBits(bad)


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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one example: NaN for the standard error, without torch's warning
        one = evaluate_iw_nll(model, x[:1], 3)
    assert one.num_examples == 1 and math.isnan(one.stderr) and math.isfinite(one.nll)
    empty = evaluate_elbo(model, (x[:0], None))  # a pair of tensors is taken as it is, even empty
    assert (empty.loss, empty.kl, empty.log_likelihood, empty.num_examples) == (0.0, 0.0, 0.0, 0)


def test_the_iw_progress_bar_counts_the_examples_and_shows_the_running_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    from genvae.metrics import likelihood

    bars: list[Bar] = []

    class Bar:
        def __init__(self, *, total: int | None, disable: bool, leave: bool, **kwargs: object) -> None:
            self.total, self.disable, self.leave = total, disable, leave
            self.updates: list[int] = []
            self.shown: list[str] = []
            bars.append(self)

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *args: object) -> None:
            pass

        def update(self, n: int) -> None:
            self.updates.append(n)

        def set_postfix(self, *, nll: str) -> None:
            self.shown.append(nll)

    monkeypatch.setattr(likelihood, "tqdm", Bar)
    model, x = tiny_vae(), torch.rand(7, 6, dtype=F64).round()
    summary = likelihood.evaluate_iw_nll(model, x, 2, batch_size=3, progress=True)
    likelihood.evaluate_iw_nll(model, x, 2, batch_size=3)
    shown, hidden = bars
    assert (shown.total, shown.disable, shown.leave, shown.updates) == (7, False, False, [3, 3, 1])
    assert hidden.disable
    with likelihood.evaluating(model, seed=0):  # the evaluation's seeded draws, batch by batch
        per_example = torch.cat([likelihood.iw_nll(model, x[i : i + 3], 2) for i in range(0, 7, 3)])
    running = [f"{float(per_example[:n].mean()):.2f}" for n in (3, 6, 7)]
    assert shown.shown == running and shown.shown[-1] == f"{summary.nll:.2f}"


def test_the_warning_that_compilation_failed_points_at_the_callers_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._dynamo.exc import TorchDynamoException

    from genvae.metrics import likelihood

    def fail(*args: object, **kwargs: object) -> torch.Tensor:
        raise TorchDynamoException("no C++ compiler")

    monkeypatch.setattr(likelihood, "_compiled_log_weights", lambda: fail)
    monkeypatch.setattr(likelihood, "IW_COMPILE_SAMPLES", 12)  # 4 examples × 3 draws: compiled by default
    with pytest.warns(UserWarning, match="evaluating eagerly") as caught:
        likelihood.evaluate_iw_nll(tiny_vae(), torch.rand(4, 6, dtype=F64).round(), 3)
    assert [w.filename for w in caught] == [__file__]


def test_iw_nll_of_a_conditional_model_weighs_the_draws_given_the_labels() -> None:
    from genvae import CVAE
    from genvae.likelihoods import Bernoulli
    from genvae.metrics.likelihood import iw_nll
    from genvae.nets import MLPDecoder, MLPEncoder
    from genvae.priors import ConditionalNormal

    torch.manual_seed(0)
    model = CVAE(
        MLPEncoder((6,), 2, hidden=(8,), num_classes=3),
        MLPDecoder(2, (6,), hidden=(8,), num_classes=3),
        Bernoulli(),
        ConditionalNormal(3, 2),
    ).double()
    x, y = torch.rand(5, 6, dtype=F64).round(), torch.tensor([0, 1, 2, 1, 0])
    torch.manual_seed(1)
    got = iw_nll(model, x, 8, y=y)
    torch.manual_seed(1)  # the same draws: one pass of all 8
    with torch.no_grad():
        log_w = model.terms(x, y, k=8).log_weights()  # (8, 5)
    torch.testing.assert_close(got, -(torch.logsumexp(log_w, 0) - math.log(8)))


def tiny_vae() -> VAE:
    from genvae.likelihoods import Bernoulli
    from genvae.nets import MLPDecoder, MLPEncoder
    from genvae.priors import StandardNormal

    torch.manual_seed(0)
    model = VAE(MLPEncoder((6,), 2, hidden=(8,)), MLPDecoder(2, (6,), hidden=(8,)), Bernoulli(), StandardNormal(2))
    return model.double()


def record_passes(monkeypatch: pytest.MonkeyPatch, model: VAE) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every pass the model makes from now on: the examples ``xb`` (a slice of x) and the log weights ``(k, b)``."""
    passes: list[tuple[torch.Tensor, torch.Tensor]] = []
    terms = model.terms

    def record(xb: torch.Tensor, y: torch.Tensor | None = None, *, k: int = 1) -> Terms:
        out = terms(xb, y, k=k)
        passes.append((xb, out.log_weights()))
        return out

    monkeypatch.setattr(model, "terms", record)
    return passes


def assert_every_draw_counted_once(
    passes: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor, k: int, got: torch.Tensor
) -> None:
    per_example: list[list[torch.Tensor]] = [[] for _ in range(x.shape[0])]
    for xb, w in passes:
        first = (xb.data_ptr() - x.data_ptr()) // x[:1].nbytes  # xb is a slice of x: where it starts
        for j in range(xb.shape[0]):
            per_example[first + j].append(w[:, j])
    for i, parts in enumerate(per_example):
        draws = torch.cat(parts)
        assert draws.shape == (k,)
        torch.testing.assert_close(got[i], -(torch.logsumexp(draws, 0) - math.log(k)))


@pytest.mark.parametrize(
    ("limit", "k", "chunk", "b"),
    [(4, 5, None, 3), (12, 5, None, 3), (30, 4, None, 7), (60, 7, 3, 5), (10**6, 6, None, 4), (10**6, 6, 4, 4)],
)
def test_iw_passes_fit_the_limit_draws_first_and_count_each_draw_once(
    monkeypatch: pytest.MonkeyPatch, limit: int, k: int, chunk: int | None, b: int
) -> None:
    import genvae.models
    from genvae.metrics.likelihood import iw_nll

    monkeypatch.setattr(genvae.models, "IW_CHUNK_ELEMENTS", limit)
    model = tiny_vae()
    x = torch.rand(b, 6, dtype=F64).round()
    passes = record_passes(monkeypatch, model)
    got = iw_nll(model, x, k, chunk=chunk)
    most = min(k, chunk or max(1, limit // 6))  # draws per pass: as many as the limit allows, before examples
    assert max(w.shape[0] for _, w in passes) == most
    assert all(w.shape[0] * w.shape[1] * 6 <= max(limit, 6) for _, w in passes)  # within the limit
    groups = math.ceil(b / max(1, limit // (most * 6)))  # the fewest groups of examples that fit
    assert len(passes) <= groups * math.ceil(k / most)
    assert_every_draw_counted_once(passes, x, k, got)


@pytest.mark.parametrize(("k", "chunk", "compiled_sizes"), [(8, 4, [4, 3]), (10, 3, [3, 3, 3]), (9, 3, [3, 3, 2])])
def test_compiled_iw_passes_follow_one_checked_draw_and_split_the_rest_evenly(
    monkeypatch: pytest.MonkeyPatch, k: int, chunk: int, compiled_sizes: list[int]
) -> None:
    from genvae.metrics import likelihood

    compiled: list[int] = []

    def passes_as_compiled(model: VAE, xb: torch.Tensor, yb: torch.Tensor | None, r: int) -> torch.Tensor:
        compiled.append(r)
        return likelihood._log_weights(model, xb, yb, r)

    monkeypatch.setattr(likelihood, "_compiled_log_weights", lambda: passes_as_compiled)
    model = tiny_vae()
    x = torch.rand(3, 6, dtype=F64).round()
    passes = record_passes(monkeypatch, model)
    got = likelihood.iw_nll(model, x, k, chunk=chunk, compile=True)
    assert passes[0][1].shape == (1, 3)  # the checked pass: one draw, eagerly
    assert compiled == compiled_sizes  # the other k − 1 draws in as few even passes as fit
    assert_every_draw_counted_once(passes, x, k, got)


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


def test_an_iaf_step_is_a_masked_mlp_with_linear_outputs_and_its_gate_bias() -> None:
    from genvae.flows import IAF

    torch.manual_seed(0)
    d, hidden = 3, (8, 6)
    step = IAF(d, hidden=hidden, context_features=2, gate_bias=1.5).double()
    torch.testing.assert_close(step.layers[-1].bias[d:], torch.full((d,), 1.5, dtype=F64))  # the last layer's s
    assert not any("mask" in name for name in step.state_dict())  # derived from the sizes
    z, context = torch.randn(5, 4, d, dtype=F64), torch.randn(4, 2, dtype=F64)
    context_hidden = step.context_layer(context)  # (4, 8)
    h = z
    for i, layer in enumerate(step.layers):
        h = h @ (layer.weight * getattr(step, f"mask{i}")).T + layer.bias
        if i == 0:
            h = h + context_hidden
        if i < len(hidden):  # ELU between layers, none after the last: m and s are unbounded
            h = torch.nn.functional.elu(h)
    m, s = step.made(z, context_hidden)
    torch.testing.assert_close(m, h[..., :d])
    torch.testing.assert_close(s, h[..., d:])


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


def test_a_conditional_mlp_block_maps_each_draw_of_a_sample_dim_as_it_maps_one() -> None:
    from genvae.hierarchy import MLPBlock

    torch.manual_seed(0)
    block = MLPBlock(4, 3, hidden=(5,), num_classes=2).double()
    h, y = torch.randn(6, 2, 4, dtype=F64), torch.tensor([1, 0])  # (S, B, F), (B,)
    out = block(h, y)
    assert out.shape == (6, 2, 3)
    for draw in range(6):
        torch.testing.assert_close(out[draw], block(h[draw], y))


@pytest.mark.parametrize("top_down", [True, False])
def test_every_layer_of_a_hierarchy_is_a_reparameterised_draw(top_down: bool) -> None:
    from genvae.hierarchy import mlp_hierarchy
    from genvae.likelihoods import Bernoulli

    torch.manual_seed(0)
    model = mlp_hierarchy((6,), (4, 3, 2), likelihood=Bernoulli(), hidden=8, top_down=top_down).double()
    terms = model.terms(torch.rand(5, 6, dtype=F64).round(), k=2)
    assert [layer.z.shape for layer in terms.layers] == [(2, 5, 2), (2, 5, 3), (2, 5, 4)]
    assert all(layer.z.requires_grad for layer in terms.layers)  # the encoder's gradient reaches every layer


def test_a_conditional_hierarchy_refuses_labels_out_of_range_when_sampling() -> None:
    from genvae.hierarchy import mlp_hierarchy
    from genvae.likelihoods import Bernoulli

    model = mlp_hierarchy((6,), (3, 2), likelihood=Bernoulli(), hidden=8, num_classes=3)
    assert model.sample(3, torch.tensor([0, 1, 2])).shape == (3, 6)
    with pytest.raises(ValueError, match="range"):
        model.sample(3, torch.tensor([0, 1, 3]))


def test_kl_on_draws_is_its_base_under_another_type() -> None:
    from genvae.hierarchy.cells import KLOnDraws, _kl_on_draws, _merge

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
