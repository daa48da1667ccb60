"""The importance-weighted evaluation: ``iw_nll`` against a float64 computation by hand from the same
draws and against exact marginal likelihoods (linear-Gaussian models with one and with two latent
layers), chunking, the data-set summary with its standard error, the compiled passes and bfloat16."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

import genvae.metrics.likelihood as likelihood
import genvae.models
from genvae import VAE
from genvae.likelihoods import Bernoulli, Gaussian
from genvae.metrics import IWSummary, evaluate_iw_nll, evaluating, iw_nll, native_bf16
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.objectives import ELBO, IWAE
from genvae.priors import StandardNormal
from genvae.protocols import LatentVariableModel
from genvae.terms import ELBOOutput, LatentLayer, Terms

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- one latent layer, exact log p(x)


class LinearDecoder(nn.Module):
    """p(x | z) has mean W z + b."""

    def __init__(self, W: Tensor, b: Tensor) -> None:
        super().__init__()
        self.W, self.b = nn.Parameter(W), nn.Parameter(b)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return z @ self.W.T + self.b  # (*S, B, n)


class LinearEncoder(nn.Module):
    """q(z | x) = N(A (x − b), diag std²)."""

    def __init__(self, A: Tensor, b: Tensor, std: Tensor) -> None:
        super().__init__()
        self.A, self.b, self.std = nn.Parameter(A), nn.Parameter(b), nn.Parameter(std)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        loc = (x - self.b) @ self.A.T  # (B, d)
        return Independent(Normal(loc, self.std.expand_as(loc)), 1)


def linear_gaussian(num: int = 6, *, inflate: float = 1.0, seed: int = 0) -> tuple[VAE, Tensor, Tensor]:
    """x = W z + b + σ ε in 5 dimensions, z ~ N(0, I₂), W with orthogonal columns so that the exact
    posterior is diagonal; the encoder is that posterior with its scales times ``inflate``.

    Returns ``(model, x (num, 5), exact log p(x) (num,))``.
    """
    n, d, sigma = 5, 2, 0.5
    g = torch.Generator().manual_seed(seed)
    W = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=F64))[0] * torch.tensor([1.5, 0.7], dtype=F64)
    b = torch.randn(n, generator=g, dtype=F64)
    cov = torch.linalg.inv(torch.eye(d, dtype=F64) + W.T @ W / sigma**2)  # diagonal
    encoder = LinearEncoder(cov @ W.T / sigma**2, b.clone(), inflate * cov.diagonal().sqrt())
    model = VAE(encoder, LinearDecoder(W, b), Gaussian(sigma=sigma, event_dims=1), StandardNormal(d)).double()
    marginal = MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(n, dtype=F64))
    x = b + torch.randn(num, d, generator=g, dtype=F64) @ W.T + sigma * torch.randn(num, n, generator=g, dtype=F64)
    return model, x, marginal.log_prob(x)


@contextmanager
def recording(model: nn.Module) -> Iterator[list[tuple[Tensor, Tensor]]]:
    """Within the block, every ``model.terms`` call appends ``(x, z)``: the examples and the draws."""
    calls: list[tuple[Tensor, Tensor]] = []
    terms = model.terms

    def record(x: Tensor, y: Tensor | None = None, *, k: int = 1) -> Terms:
        out = terms(x, y, k=k)
        calls.append((x, out.layers[0].z))
        return out

    model.terms = record  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        del model.terms


@torch.no_grad()
def log_weights_by_hand(model: VAE, x: Tensor, z: Tensor) -> Tensor:
    """log p(x | z) + log p(z) − log q(z | x) in float64 from torch.distributions: ``(k, b)``."""
    enc, dec = model.encoder, model.decoder
    loc = (x - enc.b) @ enc.A.T  # (b, d)
    log_q = Normal(loc, enc.std).log_prob(z).sum(-1)  # (k, b)
    log_p = Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_lik = Normal(z @ dec.W.T + dec.b, 0.5).log_prob(x).sum(-1)
    return log_lik + log_p - log_q


@pytest.mark.parametrize(("k", "chunk", "elements"), [(1, None, None), (10, 3, None), (50, None, 60), (17, 4, 40)])
def test_iw_nll_equals_a_float64_computation_by_hand_from_the_same_draws(monkeypatch, k, chunk, elements) -> None:
    if elements is not None:  # passes of a few examples: the batch is split as well as the draws
        monkeypatch.setattr(genvae.models, "IW_CHUNK_ELEMENTS", elements)
    model, x, _ = linear_gaussian(7, inflate=1.8)
    torch.manual_seed(0)
    with recording(model) as calls:
        got = iw_nll(model, x, k, chunk=chunk)
    per_example: list[list[Tensor]] = [[] for _ in range(len(x))]
    for xb, z in calls:
        rows = torch.cdist(xb, x).argmin(1)  # which examples the pass held
        assert torch.equal(x[rows], xb)
        for j, row in enumerate(rows.tolist()):
            per_example[row].append(log_weights_by_hand(model, xb, z)[:, j])
    draws = [torch.cat(w) for w in per_example]
    assert [len(w) for w in draws] == [k] * len(x)  # every example got exactly k draws
    expected = -torch.stack([torch.logsumexp(w, 0) - math.log(k) for w in draws])
    assert got.dtype == F64 and got.shape == (len(x),)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-10)
    if elements is not None:
        assert max(len(xb) for xb, _ in calls[1:]) < len(x)


def test_iw_nll_falls_to_the_exact_nll_as_k_grows_and_stays_above_it() -> None:
    model, x, log_px = linear_gaussian(1, inflate=2.0, seed=3)
    copies = 1000
    torch.manual_seed(1)
    mean, se = {}, {}
    for k in (1, 4, 1000):
        nll = iw_nll(model, x.expand(copies, -1), k)  # (copies,) independent estimates
        mean[k], se[k] = float(nll.mean()), float(nll.std()) / math.sqrt(copies)
    exact = -float(log_px[0])
    for k in mean:  # an upper bound on the NLL in expectation
        assert mean[k] > exact - 4 * se[k] - 1e-9, (k, mean[k], exact)
    assert mean[1] - 4 * math.hypot(se[1], se[4]) > mean[4]
    assert mean[4] - 4 * math.hypot(se[4], se[1000]) > mean[1000]
    assert mean[1000] - exact < 0.01


@pytest.mark.parametrize("chunk", [1, 2, 7, None])
@pytest.mark.parametrize("elements", [None, 10, 35])
def test_with_the_exact_posterior_every_chunking_gives_the_exact_nll(monkeypatch, chunk, elements) -> None:
    if elements is not None:
        monkeypatch.setattr(genvae.models, "IW_CHUNK_ELEMENTS", elements)
    model, x, log_px = linear_gaussian(9)  # q(z | x) = p(z | x): every weight is p(x)
    torch.testing.assert_close(iw_nll(model, x, 20, chunk=chunk), -log_px, rtol=0, atol=1e-10)


def test_chunking_does_not_change_the_estimators_distribution() -> None:
    model, x, _ = linear_gaussian(1, inflate=2.5, seed=4)
    copies, k = 400, 20
    torch.manual_seed(2)
    one = iw_nll(model, x.expand(copies, -1), k, chunk=1)  # 19 passes of one draw after the first
    every = iw_nll(model, x.expand(copies, -1), k)  # one pass for the other 19
    se = math.hypot(float(one.std()), float(every.std())) / math.sqrt(copies)
    assert abs(float(one.mean() - every.mean())) < 4 * se
    assert 0.8 < float(one.std() / every.std()) < 1.25
    assert not torch.equal(one, every)  # different draws, same estimator


# ---------------------------------------------------------------- the data-set summary


def test_evaluate_iw_nll_reports_the_mean_and_its_standard_error_over_examples() -> None:
    model, x, log_px = linear_gaussian(37)
    summary = evaluate_iw_nll(model, (x, None), 8, batch_size=10)
    exact = (-log_px).tolist()
    assert isinstance(summary, IWSummary)
    assert summary.k == 8 and summary.num_examples == 37
    assert summary.nll == pytest.approx(statistics.fmean(exact), rel=1e-12)
    assert summary.stderr == pytest.approx(statistics.stdev(exact) / math.sqrt(37), rel=1e-9)
    assert float(summary) == summary.nll
    assert f"{summary.nll:.2f} ± {summary.stderr:.2f}" in str(summary)
    with pytest.raises(AttributeError):  # frozen
        summary.nll = 0.0  # type: ignore[misc]


def test_the_summary_is_the_mean_and_stderr_of_the_seeded_per_example_estimates() -> None:
    model, x, _ = linear_gaussian(23, inflate=2.0)
    summary = evaluate_iw_nll(model, (x, None), 5, batch_size=10, seed=3)
    with evaluating(model, seed=3):  # the same draws, batch by batch
        per_example = torch.cat([iw_nll(model, x[i : i + 10], 5) for i in range(0, 23, 10)]).tolist()
    assert summary.nll == pytest.approx(statistics.fmean(per_example), rel=1e-12)
    assert summary.stderr == pytest.approx(statistics.stdev(per_example) / math.sqrt(23), rel=1e-9)
    assert evaluate_iw_nll(model, (x, None), 5, batch_size=10, seed=3) == summary
    assert evaluate_iw_nll(model, (x, None), 5, batch_size=10, seed=4).nll != summary.nll
    assert math.isnan(evaluate_iw_nll(model, (x[:1], None), 5).stderr)  # one example: no spread


def test_bad_arguments_are_refused_with_their_names() -> None:
    model, x, _ = linear_gaussian(3)
    with pytest.raises(ValueError, match="expected k to be a positive int, got 0"):
        iw_nll(model, x, 0)
    with pytest.raises(TypeError, match="expected k to be a positive int"):
        evaluate_iw_nll(model, x, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected chunk to be a positive int, got 0"):
        iw_nll(model, x, 5, chunk=0)
    with pytest.raises(ValueError, match="expected data with at least one example, got none"):
        evaluate_iw_nll(model, (x[:0], None), 5)
    bad = x.clone()
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match="expected finite values in x"):  # checked, though k is large
        iw_nll(model, bad, 1000)


# ---------------------------------------------------------------- two latent layers


class TwoLayerLinearGaussian(nn.Module):
    """p(z₂) = N(0, I), p(z₁ | z₂) = N(C z₂, s² I), p(x | z₁) = N(W z₁ + b, σ² I), with the
    posterior q(z₂ | x) q(z₁ | x, z₂) = the exact posterior's two factors, their scales times
    ``inflate``. Every member of the protocol, by hand; ``checks`` counts the value checks."""

    def __init__(self, *, inflate: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n, d1, d2, self.s, self.sigma, self.inflate = 4, 2, 1, 0.7, 0.5, inflate
        self.C = nn.Parameter(torch.randn(d1, d2, generator=g, dtype=F64))
        self.W = nn.Parameter(torch.randn(n, d1, generator=g, dtype=F64))
        self.b = nn.Parameter(torch.randn(n, generator=g, dtype=F64))
        self.data_shape, self.num_classes, self.validating, self.checks = (n,), None, True, 0
        with torch.no_grad():
            # u = (z₂, z₁) ~ N(0, S), x = M u + b + σ ε: the posterior of u is N(G (x − b), Σ)
            C, I1, I2 = self.C, torch.eye(d1, dtype=F64), torch.eye(d2, dtype=F64)
            S = torch.cat([torch.cat([I2, C.T], 1), torch.cat([C, C @ C.T + self.s**2 * I1], 1)])  # (d2 + d1,)²
            M = torch.cat([torch.zeros(n, d2, dtype=F64), self.W], 1)  # (n, d2 + d1)
            self.marginal_cov = M @ S @ M.T + self.sigma**2 * torch.eye(n, dtype=F64)
            cov = torch.linalg.inv(torch.linalg.inv(S) + M.T @ M / self.sigma**2)
            G = cov @ M.T / self.sigma**2
            self.G2, self.G1 = G[:d2], G[d2:]  # (d2, n), (d1, n)
            self.K = cov[d2:, :d2] @ torch.linalg.inv(cov[:d2, :d2])  # (d1, d2): E[z₁ | z₂, x]'s slope
            self.L2 = torch.linalg.cholesky(cov[:d2, :d2])
            self.L1 = torch.linalg.cholesky(cov[d2:, d2:] - self.K @ cov[:d2, d2:])

    @property
    def latent_dim(self) -> int:
        return 1

    def exact_log_px(self, x: Tensor) -> Tensor:
        return MultivariateNormal(self.b, self.marginal_cov).log_prob(x).detach()

    @contextmanager
    def validate_args(self, enabled: bool = True) -> Iterator[None]:
        before, self.validating = self.validating, enabled
        try:
            yield
        finally:
            self.validating = before

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        return MultivariateNormal((x - self.b) @ self.G2.T, scale_tril=self.inflate * self.L2)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        return Independent(Normal(z @ self.C.T @ self.W.T + self.b, self.sigma), 1)  # z₁ at its mean C z₂

    def terms(self, x: Tensor, y: Tensor | None = None, *, k: int = 1) -> Terms:
        if self.validating:
            self.checks += 1
            if not bool(torch.isfinite(x).all()):
                raise ValueError("expected finite values in x, got NaN or inf")
        q2 = self.encode(x)  # batch (B,)
        z2 = q2.rsample((k,))  # (k, B, d2)
        loc1 = (x - self.b) @ self.G1.T + (z2 - q2.mean) @ self.K.T  # (k, B, d1)
        q1 = MultivariateNormal(loc1, scale_tril=self.inflate * self.L1)  # batch (k, B)
        z1 = q1.rsample()  # (k, B, d1)
        p2 = MultivariateNormal(torch.zeros(1, dtype=F64), torch.eye(1, dtype=F64))
        p1 = Independent(Normal(z2 @ self.C.T, self.s), 1)  # batch (k, B)
        log_px = Independent(Normal(z1 @ self.W.T + self.b, self.sigma), 1).log_prob(x)  # (k, B)
        return Terms(log_px, (LatentLayer(q2, p2, z2), LatentLayer(q1, p1, z1)))

    def elbo(self, x: Tensor, y: Tensor | None = None, *, beta: float = 1.0, k: int = 1) -> ELBOOutput:
        terms, objective = self.terms(x, k=k), ELBO(beta) if k == 1 else IWAE(k, beta=beta)
        value = objective(terms)
        return ELBOOutput(value.bound, terms.log_likelihood.mean(0), -terms.log_ratio().mean(0), value.loss)

    def sample(self, n: int, y: Tensor | None = None, *, generator=None, mean: bool = True) -> Tensor:
        z2 = torch.randn(n, 1, dtype=F64, generator=generator)
        return self.decode(z2).mean

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x).mean).mean

    def interpolate(self, x0: Tensor, x1: Tensor, steps: int = 10, y: Tensor | None = None) -> Tensor:
        t = torch.linspace(0, 1, steps, dtype=F64)[:, None]  # (steps, 1)
        return (1 - t) * self.reconstruct(x0[None]) + t * self.reconstruct(x1[None])


def test_a_model_with_two_latent_layers_gets_its_exact_nll_from_both_layers_weights(monkeypatch) -> None:
    model = TwoLayerLinearGaussian()
    assert isinstance(model, LatentVariableModel)
    x = torch.randn(11, 4, dtype=F64, generator=torch.Generator().manual_seed(5)) * 2
    exact = -model.exact_log_px(x)
    for chunk in (1, 3, None):  # the exact posterior: every weight is p(x), whichever the chunking
        torch.testing.assert_close(iw_nll(model, x, 12, chunk=chunk), exact, rtol=0, atol=1e-10)
    model.checks = 0
    summary = evaluate_iw_nll(model, (x, None), 12, batch_size=4)
    assert summary.nll == pytest.approx(float(exact.mean()), rel=1e-12)
    assert model.checks == 3  # the values are checked once per batch, not in every pass
    model.checks = 0
    iw_nll(model, x, 12, chunk=2)
    assert model.checks == 1
    monkeypatch.setattr(genvae.models, "IW_CHUNK_ELEMENTS", 16)  # passes of a few examples
    torch.testing.assert_close(iw_nll(model, x, 12), exact, rtol=0, atol=1e-10)
    assert model.validating  # and the model's setting is restored


def test_a_two_layer_bound_falls_to_the_exact_nll_and_stays_above_it() -> None:
    model = TwoLayerLinearGaussian(inflate=1.7, seed=1)
    x = torch.randn(1, 4, dtype=F64, generator=torch.Generator().manual_seed(6))
    exact = -float(model.exact_log_px(x)[0])
    torch.manual_seed(3)
    copies = 200
    few, many = iw_nll(model, x.expand(copies, -1), 2), iw_nll(model, x.expand(copies, -1), 500)
    se_few, se_many = float(few.std()) / math.sqrt(copies), float(many.std()) / math.sqrt(copies)
    assert float(few.mean()) > exact + 4 * se_few  # an inflated posterior: a loose bound at k = 2
    assert float(many.mean()) > exact - 4 * se_many
    assert float(many.mean()) - exact < 0.02


# ---------------------------------------------------------------- compiled passes, bfloat16


@pytest.mark.slow
def test_compiled_passes_give_the_exact_nll_for_every_batch_and_sample_count(monkeypatch) -> None:
    # aot_eager: dynamo traces the pass as inductor would receive it, without generating code
    compiled = torch.compile(likelihood._log_weights, backend="aot_eager", dynamic=True)
    monkeypatch.setattr(likelihood, "_compiled_log_weights", lambda: compiled)
    model, x, log_px = linear_gaussian(9)
    for k, chunk in ((20, None), (9, 4)):
        torch.testing.assert_close(iw_nll(model, x, k, chunk=chunk, compile=True), -log_px, rtol=0, atol=1e-10)
    summary = evaluate_iw_nll(model, (x, None), 6, batch_size=4, compile=True)
    assert summary.nll == pytest.approx(float(-log_px.mean()), rel=1e-12)


def fail_to_compile():
    from torch._dynamo.exc import TorchDynamoException

    def passes(*args, **kwargs):
        raise TorchDynamoException("no C++ compiler")

    return passes


def test_a_large_evaluation_compiles_and_falls_back_to_eager_when_compilation_fails(monkeypatch) -> None:
    model, x, log_px = linear_gaussian(8)
    monkeypatch.setattr(likelihood, "_compiled_log_weights", fail_to_compile)
    summary = evaluate_iw_nll(model, (x, None), 8)  # small: 8 × 8 samples, no compilation
    assert summary.nll == pytest.approx(float(-log_px.mean()), rel=1e-12)
    with pytest.raises(Exception, match="no C\\+\\+ compiler"):  # asked for: the error stands
        evaluate_iw_nll(model, (x, None), 8, compile=True)
    monkeypatch.setattr(likelihood, "IW_COMPILE_SAMPLES", 64)  # 8 × 8: large enough to compile
    with pytest.warns(UserWarning, match="torch.compile failed .*no C\\+\\+ compiler.*; evaluating eagerly"):
        summary = evaluate_iw_nll(model, (x, None), 8, batch_size=3)
    assert summary.nll == pytest.approx(float(-log_px.mean()), rel=1e-12) and summary.num_examples == 8


def test_compiled_passes_leave_single_examples_and_single_draws_to_eager_ones(monkeypatch) -> None:
    # a compiled program specialises to sizes of 1: those passes must not reach it
    monkeypatch.setattr(likelihood, "_compiled_log_weights", fail_to_compile)
    model, x, log_px = linear_gaussian(3)
    torch.testing.assert_close(iw_nll(model, x[:1], 30, compile=True), -log_px[:1], rtol=0, atol=1e-10)
    torch.testing.assert_close(iw_nll(model, x, 2, compile=True), -log_px, rtol=0, atol=1e-10)
    torch.testing.assert_close(iw_nll(model, x, 1, compile=True), -log_px, rtol=0, atol=1e-10)
    with pytest.raises(Exception, match="no C\\+\\+ compiler"):  # two examples, two draws: compiled
        iw_nll(model, x[:2], 3, compile=True)


def small_mlp_vae() -> tuple[VAE, Tensor]:
    torch.manual_seed(0)
    shape = (1, 6, 6)
    model = VAE(MLPEncoder(shape, 3, hidden=(32,)), MLPDecoder(3, shape, hidden=(32,)), Bernoulli(), StandardNormal(3))
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)  # confident logits, as a trained decoder's
    return model, torch.rand(64, *shape)


def test_bf16_is_opt_in_off_this_kind_of_host_and_moves_the_nll_by_little() -> None:
    flags = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    capable = any(getattr(torch.cpu, flag, lambda: False)() for flag in flags)
    assert native_bf16("cpu") == capable and native_bf16(torch.device("cpu")) == capable
    assert not native_bf16("meta")  # accelerators: opt-in only
    model, x = small_mlp_vae()
    f32 = evaluate_iw_nll(model, x, 50, bf16=False)
    bf16 = evaluate_iw_nll(model, x, 50, bf16=True)
    assert bf16.nll != f32.nll  # the products did run in bfloat16
    assert abs(bf16.nll - f32.nll) < 0.05 + 2 * f32.stderr / math.sqrt(len(x))
    if not capable:  # the default here is float32
        assert evaluate_iw_nll(model, x, 50) == f32


@pytest.mark.slow
def test_inductor_compiled_passes_equal_eager_ones_on_the_same_draws_to_float32_rounding(monkeypatch) -> None:
    """Inductor's code for the pass, on eager's random numbers (``fallback_random``), against eager
    passes of the same sizes (``compile=True`` with the eager pass in the compiled one's place), from
    one seed: the same draws, so the NLLs differ only by float32 rounding. Each log-weight sums 36
    pixels' terms and 3 latent terms, and each logit sums 32 hidden units: a different order of the
    same float32 operations moves it by at most about 71 float32 epsilons of its magnitude."""
    model, x = small_mlp_vae()

    def passes(model: VAE, x: Tensor, y: Tensor | None, m: int) -> Tensor:
        return likelihood._log_weights(model, x, y, m)

    compiled = torch.compile(passes, dynamic=True, options={"fallback_random": True})  # as _compiled_log_weights
    nll = {}
    for name, program in (("compiled", compiled), ("eager", likelihood._log_weights)):
        monkeypatch.setattr(likelihood, "_compiled_log_weights", lambda program=program: program)
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nll[name] = iw_nll(model, x, 40, compile=True, bf16=False)  # (64,): passes of 1 draw, then 39
    rtol = (36 + 3 + 32) * torch.finfo(torch.float32).eps
    torch.testing.assert_close(nll["compiled"], nll["eager"], rtol=rtol, atol=0)
    torch.manual_seed(1)
    other = iw_nll(model, x, 40, compile=True, bf16=False)
    assert float(((other - nll["eager"]) / nll["eager"]).abs().max()) > 100 * rtol  # other draws: far apart


@pytest.mark.slow
def test_inductor_draws_its_own_seeded_numbers_and_agrees_with_eager_within_monte_carlo_error() -> None:
    """With its own random numbers the compiled program's draws differ from eager's: the two agree in
    distribution only, but a seed repeats them exactly."""
    model, x = small_mlp_vae()
    x = x[:16].expand(8, -1, -1, -1, -1).reshape(-1, *x.shape[1:])  # 8 copies of 16 images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = [evaluate_iw_nll(model, x, 40, compile=True, bf16=False, seed=s) for s in (0, 0, 1)]
    assert compiled[0] == compiled[1]  # seeded: the compiled program's draws are reproducible
    assert compiled[0].nll != compiled[2].nll
    eager = evaluate_iw_nll(model, x, 40, compile=False, bf16=False)
    se = math.hypot(compiled[0].stderr, eager.stderr)
    assert abs(compiled[0].nll - eager.nll) < 4 * se
