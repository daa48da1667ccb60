"""Objectives against independent computations in float64: values by direct formulas on a
linear-Gaussian model with a closed-form log p(x), gradient estimators in expectation and in
variance, free bits' floor, schedules, and bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.distributions import Independent, MultivariateNormal, Normal

from genvae import ELBO, IWAE, STL, VAE, DReG, FreeBits, LatentLayer, LatentVariableModel, Terms
from genvae.likelihoods import Bernoulli, Gaussian
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import MixtureOfGaussians, StandardNormal
from genvae.schedules import Constant, Cyclical, LinearWarmup

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


class LinearDecoder(nn.Module):
    """p(x | z) has mean W z + b (W, b trainable)."""

    def __init__(self, W: Tensor, b: Tensor) -> None:
        super().__init__()
        self.W, self.b = nn.Parameter(W.clone()), nn.Parameter(b.clone())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return z @ self.W.T + self.b


class LinearEncoder(nn.Module):
    """q(z | x) = N(A (x − c), diag σ²), all trainable; starts at the given values."""

    def __init__(self, A: Tensor, c: Tensor, std: Tensor) -> None:
        super().__init__()
        self.A, self.c, self.log_std = nn.Parameter(A.clone()), nn.Parameter(c.clone()), nn.Parameter(std.log())

    def forward(self, x: Tensor, y: Tensor | None = None) -> Independent:
        loc = (x - self.c) @ self.A.T
        return Independent(Normal(loc, self.log_std.exp().expand_as(loc)), 1)


def linear_gaussian(seed: int = 0, *, n: int = 5, d: int = 2, sigma: float = 0.5, offset: float = 0.0, inflate=1.0):
    """A linear-Gaussian VAE whose W has orthogonal columns, so the exact posterior is diagonal:
    with ``offset = 0`` and ``inflate = 1`` the encoder starts at the exact posterior.

    Returns ``(model, x, log p(x))`` with the exact log marginal of one example ``x (1, n)``.
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=F64))[0] * torch.tensor([1.5, 0.7], dtype=F64)[:d]
    b = torch.randn(n, generator=g, dtype=F64)
    cov = torch.linalg.inv(torch.eye(d, dtype=F64) + W.T @ W / sigma**2)  # diagonal
    A = cov @ W.T / sigma**2
    encoder = LinearEncoder(A + offset, b, inflate * cov.diagonal().sqrt())
    model = VAE(encoder, LinearDecoder(W, b), Gaussian(sigma=sigma, event_dims=1), StandardNormal(d)).double()
    x = (b + W @ torch.randn(d, generator=g, dtype=F64) + sigma * torch.randn(n, generator=g, dtype=F64))[None]
    log_px = MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(n, dtype=F64)).log_prob(x[0]).item()
    return model, x, log_px


def direct_log_weights(model: VAE, x: Tensor, z: Tensor, sigma: float = 0.5) -> tuple[Tensor, Tensor]:
    """log p(x|z), log p(z) − log q(z|x) by hand: Gaussian densities written out, ``(k, B)`` each."""
    enc, dec = model.encoder, model.decoder
    mean = z @ dec.W.T + dec.b  # (k, B, n)
    log_lik = (-0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)
    loc, std = (x - enc.c) @ enc.A.T, enc.log_std.exp()
    log_q = (-0.5 * ((z - loc) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_p = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    return log_lik, log_p - log_q


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("k", [1, 7])
def test_elbo_and_iwae_values_equal_the_direct_formulas(k: int) -> None:
    model, x, _ = linear_gaussian(offset=0.3, inflate=1.5)
    x = x.expand(3, -1)
    terms = model.terms(x, k=k)
    z = terms.layers[0].z
    log_lik, log_ratio = direct_log_weights(model, x, z)
    torch.testing.assert_close(terms.log_likelihood, log_lik)
    # ELBO: closed-form KL to N(0, I), ½ Σ (σ² + μ² − 1 − log σ²)
    loc, std = (x - model.encoder.c) @ model.encoder.A.T, model.encoder.log_std.exp()
    kl = 0.5 * (std**2 + loc**2 - 1 - 2 * std.log()).sum(-1)
    out = ELBO(beta=0.25, k=k)(terms)
    torch.testing.assert_close(out.bound, log_lik.mean(0) - kl)
    torch.testing.assert_close(out.loss, -(log_lik - 0.25 * kl).mean())
    # IWAE: log of the mean importance weight
    iw = IWAE(k)(terms)
    torch.testing.assert_close(iw.bound, torch.logsumexp(log_lik + log_ratio, 0) - math.log(k))
    torch.testing.assert_close(iw.loss, -iw.bound.mean())
    # DReG's and STL's values are IWAE's and the ELBO's
    torch.testing.assert_close(DReG(k)(terms).bound, iw.bound)
    torch.testing.assert_close(DReG(k)(terms).loss, iw.loss)
    torch.testing.assert_close(STL(k)(terms).bound, (log_lik + log_ratio).mean(0))


def test_iwae_bound_reaches_the_exact_log_marginal_and_stays_below_it() -> None:
    model, x, log_px = linear_gaussian(offset=0.2, inflate=2.0)
    with torch.no_grad():
        bounds = {k: IWAE(k)(model.terms(x.expand(400, -1), k=k)).bound for k in (1, 50, 2000)}
    mean = {k: float(b.mean()) for k, b in bounds.items()}
    se = {k: float(b.std()) / math.sqrt(400) for k, b in bounds.items()}
    assert mean[1] + 4 * math.hypot(se[1], se[50]) < mean[50] < log_px + 4 * se[50]
    assert abs(mean[2000] - log_px) < 0.01 + 4 * se[2000]


# ------------------------------------------------------------------ gradients


def encoder_and_decoder_grads(model: VAE, objective, x: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    torch.manual_seed(seed)
    loss = objective(model.terms(x, k=objective.k)).loss
    enc = torch.autograd.grad(loss, list(model.encoder.parameters()), retain_graph=True)
    dec = torch.autograd.grad(loss, list(model.decoder.parameters()))
    return torch.cat([g.flatten() for g in enc]), torch.cat([g.flatten() for g in dec])


@pytest.mark.parametrize("pair", [(IWAE(5), DReG(5)), (ELBO(), STL())], ids=["dreg-vs-iwae", "stl-vs-elbo"])
def test_path_estimators_agree_in_expectation_and_have_less_variance(pair) -> None:
    """Over many draws the encoder's gradient has the same mean (within 4.5 standard errors), and a
    smaller variance near the posterior, as Tucker et al. and Roeder et al. show; the decoder's
    gradient is the same draw for draw."""
    reference, path = pair
    model, x, _ = linear_gaussian(offset=0.15, inflate=1.3)
    x = x.expand(2, -1)
    draws = 800
    ref_enc, path_enc = [], []
    for seed in range(draws):
        e_ref, d_ref = encoder_and_decoder_grads(model, reference, x, seed)
        e_path, d_path = encoder_and_decoder_grads(model, path, x, seed)
        if seed < 20:
            torch.testing.assert_close(d_path, d_ref)
        ref_enc.append(e_ref)
        path_enc.append(e_path)
    ref_g, path_g = torch.stack(ref_enc), torch.stack(path_enc)  # (draws, P)
    diff = path_g.mean(0) - ref_g.mean(0)
    se = torch.sqrt((ref_g.var(0) + path_g.var(0)) / draws)
    assert bool((diff.abs() < 4.5 * se + 1e-9).all()), diff / se
    assert float(path_g.var(0).sum()) < 0.5 * float(ref_g.var(0).sum())


@pytest.mark.parametrize("objective", [STL(), DReG(1), DReG(8)])
def test_path_estimators_give_the_encoder_no_gradient_at_the_exact_posterior(objective) -> None:
    """With q the exact posterior, log p(x, z) − log q(z|x) does not depend on z: the path gradient
    of STL and DReG is zero for every draw (Roeder et al.'s 'sticking the landing')."""
    model, x, _ = linear_gaussian()
    for seed in range(5):
        enc, dec = encoder_and_decoder_grads(model, objective, x, seed)
        assert float(enc.abs().max()) < 1e-10
        assert float(dec.abs().max()) > 1e-3  # the decoder still learns
    enc, _ = encoder_and_decoder_grads(model, IWAE(8), x, 0)
    assert float(enc.abs().max()) > 1e-3  # the score term IWAE keeps is noise with mean zero


def test_free_bits_give_no_gradient_to_a_dimension_under_its_floor() -> None:
    """KL per dimension (batch mean): dimension 0 is under λ = 0.5, dimension 1 above it."""
    loc = torch.tensor([[0.1, 2.0], [-0.1, 1.5]], dtype=F64, requires_grad=True)  # (B, D)
    q = Independent(Normal(loc, torch.ones_like(loc)), 1)
    p = Independent(Normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)), 1)
    terms = Terms(torch.zeros(1, 2, dtype=F64), (LatentLayer(q, p, q.rsample((1,))),))
    out = FreeBits(0.5)(terms)
    (grad,) = torch.autograd.grad(out.loss, loc)
    assert torch.equal(grad[:, 0], torch.zeros(2, dtype=F64))
    torch.testing.assert_close(grad[:, 1], loc[:, 1].detach() / 2)  # d/dμ of mean_B ½ μ²
    kl = 0.5 * loc.detach() ** 2  # per example and dimension
    torch.testing.assert_close(out.loss, 0.5 + kl[:, 1].mean())
    torch.testing.assert_close(out.bound, -kl.sum(-1))  # the bound is the plain ELBO
    # with λ = 0 free bits is the ELBO
    torch.testing.assert_close(FreeBits(0.0)(terms).loss, ELBO()(terms).loss)


def test_free_bits_floors_the_batch_mean_of_a_dimension_not_each_example() -> None:
    """Examples on both sides of λ = 0.5 in each dimension, KL = ½ μ² per example (unit variances):
    dimension 0 has KLs 0.02 and 1.28, mean 0.65 over λ, so it counts 0.65 and both examples get
    its gradient μ / B; dimension 1 has 0.005 and 0.72, mean 0.3625 under λ, so it counts λ and gives
    no gradient to either. A floor per example would count 0.89 and 0.61, and pass a gradient to the
    second example of dimension 1."""
    loc = torch.tensor([[0.2, 0.1], [1.6, 1.2]], dtype=F64, requires_grad=True)  # (B, D)
    q = Independent(Normal(loc, torch.ones_like(loc)), 1)
    p = Independent(Normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)), 1)
    terms = Terms(torch.zeros(3, 2, dtype=F64), (LatentLayer(q, p, q.rsample((3,))),))  # k = 3 draws
    out = FreeBits(0.5, beta=2.0, k=3)(terms)
    torch.testing.assert_close(out.loss, torch.tensor(2.0 * (0.65 + 0.5), dtype=F64))
    (grad,) = torch.autograd.grad(out.loss, loc)
    expected = torch.tensor([[2.0 * 0.2 / 2, 0.0], [2.0 * 1.6 / 2, 0.0]], dtype=F64)  # β μ / B, then 0
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(out.bound, -torch.tensor([0.02 + 0.005, 1.28 + 0.72], dtype=F64))


def test_free_bits_needs_a_kl_per_dimension() -> None:
    model = VAE(MLPEncoder((6,), 2), MLPDecoder(2, (6,)), Bernoulli(), MixtureOfGaussians(2, 3))
    with pytest.raises(ValueError, match="factorise over latent dimensions"):
        FreeBits(0.1)(model.terms(torch.rand(4, 6)))


# ------------------------------------------------------------------ schedules


def test_schedule_values_at_chosen_steps() -> None:
    warm = LinearWarmup(2.0, steps=4)
    assert [warm.value(t) for t in (1, 2, 4, 9)] == [0.5, 1.0, 2.0, 2.0]
    cyc = Cyclical(1.0, period=4, ratio=0.5)  # rises over 2 steps, holds for 2, then again
    assert [cyc.value(t) for t in range(1, 10)] == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0]
    assert Constant(0.3).value(10**6) == 0.3


@settings(max_examples=50, deadline=None)
@given(step=st.integers(1, 10**6), steps=st.integers(1, 10**4), beta=st.floats(0, 10))
def test_schedules_read_a_step_tensor_as_they_read_an_int(step: int, steps: int, beta: float) -> None:
    for schedule in (LinearWarmup(beta, steps=steps), Cyclical(beta, period=steps, ratio=0.25)):
        value = schedule.value(step)
        assert 0.0 <= value <= beta
        assert float(schedule.value(torch.tensor(step))) == pytest.approx(value, rel=1e-6, abs=1e-9)


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: ELBO(beta=-1), "beta .* >= 0, got -1"),
        (lambda: IWAE(0), "k .* positive int, got 0"),
        (lambda: DReG(-3), "k .* positive int, got -3"),
        (lambda: FreeBits(-1), "lambda_ .* >= 0.*got -1"),
        (lambda: LinearWarmup(1.0, steps=-5), "steps .* positive int.*got -5"),
        (lambda: Cyclical(1.0, period=0), "period .* positive int.*got 0"),
        (lambda: Cyclical(1.0, period=10, ratio=0.0), r"ratio in \(0, 1\], got 0.0"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_elbo_with_a_negative_beta_is_refused() -> None:
    model = VAE(MLPEncoder((6,), 2), MLPDecoder(2, (6,)), Bernoulli(), StandardNormal(2))
    with pytest.raises(ValueError, match="beta .* >= 0, got -1"):
        model.elbo(torch.rand(4, 6), beta=-1)
    with pytest.raises(ValueError, match="k .* positive int, got 0"):
        model.elbo(torch.rand(4, 6), k=0)


# ------------------------------------------------------------------ the likelihood and the data shape


@pytest.mark.parametrize("shape", [(50,), (12, 10), (1, 28, 28)])
def test_the_likelihood_takes_the_models_data_shape(shape: tuple[int, ...]) -> None:
    """With event_dims unset the model sets it: log p(x|z) is per example, equal to the summed BCE."""
    torch.manual_seed(0)
    model = VAE(MLPEncoder(shape, 3), MLPDecoder(3, shape), Bernoulli(), StandardNormal(3))
    x = torch.rand(4, *shape).round()
    terms = model.terms(x, k=2)
    assert terms.log_likelihood.shape == (2, 4)
    logits = model.decoder(terms.layers[0].z)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    torch.testing.assert_close(terms.log_likelihood, -bce.flatten(2).sum(-1))


@pytest.mark.parametrize("shape", [(50,), (12, 10), (1, 28, 28)])
def test_a_likelihood_that_disagrees_with_the_data_shape_is_refused_at_construction(shape) -> None:
    wrong = 2 if len(shape) != 2 else 3
    with pytest.raises(ValueError, match=rf"event_dims={len(shape)} for data of shape {re_tuple(shape)}"):
        VAE(MLPEncoder(shape, 3), MLPDecoder(3, shape), Bernoulli(event_dims=wrong), StandardNormal(3))


def re_tuple(shape: tuple[int, ...]) -> str:
    return str(shape).replace("(", r"\(").replace(")", r"\)")


def test_a_custom_likelihood_with_the_wrong_event_shape_is_an_error_not_a_wrong_sum() -> None:
    class PerPixel(nn.Module):  # forgets to declare the event dims
        def forward(self, params: Tensor) -> Normal:
            return Normal(params, 1.0)

    model = VAE(MLPEncoder((12, 10), 3), MLPDecoder(3, (12, 10)), PerPixel(), StandardNormal(3))
    with pytest.raises(ValueError, match=r"event shape to be the data shape \(12, 10\), got \(\)"):
        model.elbo(torch.rand(4, 12, 10))


# ------------------------------------------------------------------ the model contract and memory


def test_vae_satisfies_the_public_model_contract() -> None:
    model = VAE(MLPEncoder((6,), 2), MLPDecoder(2, (6,)), Bernoulli(), StandardNormal(2))
    assert isinstance(model, LatentVariableModel)
    assert not isinstance(nn.Linear(2, 2), LatentVariableModel)


def test_a_large_k_runs_in_bounded_memory(tmp_path) -> None:
    """elbo(x, k=5000) on 40 MNIST-sized images with the 784-400-20 MLP, gradients on: the draws
    are decoded in chunks (recomputed in the backward pass), so the peak stays under 0.8 GB (the
    unchunked decoder output alone would be 0.63 GB, its log-density and activations as much again)."""
    import subprocess
    import sys

    script = """
import resource, torch
from genvae import VAE
from genvae.nets import MLPEncoder, MLPDecoder
from genvae.likelihoods import Bernoulli
from genvae.priors import StandardNormal
torch.set_num_threads(1)
model = VAE(MLPEncoder((1, 28, 28), 20), MLPDecoder(20, (1, 28, 28)), Bernoulli(), StandardNormal(20))
x = torch.rand(40, 1, 28, 28).round()
model.elbo(x[:2], k=2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = model.elbo(x, k=5000)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 2**20, out.elbo.shape[0], bool(out.elbo.requires_grad))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    gib, batch, grad = result.stdout.split()
    assert int(batch) == 40 and grad == "True"
    assert float(gib) < 0.8
