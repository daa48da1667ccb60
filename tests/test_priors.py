"""Priors: protocol, shapes, gradients, and log-densities against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.distributions import Distribution

import genvae
from genvae.nets import MLPEncoder
from genvae.priors import (
    ConditionalNormal,
    LearnedNormal,
    MixtureOfGaussians,
    StandardNormal,
    VampPrior,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 3
SHAPE = (1, 4, 4)
SEEDS = settings(max_examples=15, deadline=None)
LOG_2PI = math.log(2 * math.pi)


def diag_normal_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z; loc, diag scale²) summed over the last dim, written out by hand."""
    return (-0.5 * ((z - loc) / scale).square() - scale.log() - 0.5 * LOG_2PI).sum(-1)


def unconditional_priors() -> list[nn.Module]:
    torch.manual_seed(0)
    return [
        StandardNormal(D),
        LearnedNormal(D),
        MixtureOfGaussians(D, 4),
        VampPrior(MLPEncoder(SHAPE, D, hidden=(8,)), 5, SHAPE),
    ]


def labels(n: int, num_classes: int = 4) -> torch.Tensor:
    return torch.arange(n) % num_classes


@pytest.mark.parametrize("prior", unconditional_priors(), ids=lambda p: type(p).__name__)
def test_unconditional_prior_protocol_and_shapes(prior: nn.Module) -> None:
    assert isinstance(prior, genvae.Prior)
    p = prior()
    assert isinstance(p, Distribution)
    assert p.event_shape == (D,) and p.batch_shape == ()
    z = p.sample((7,))
    assert z.shape == (7, D)
    assert p.log_prob(z).shape == (7,)
    assert bool(torch.isfinite(p.log_prob(z)).all())


@pytest.mark.parametrize("prior", unconditional_priors(), ids=lambda p: type(p).__name__)
def test_unconditional_prior_ignores_y(prior: nn.Module) -> None:
    z = torch.randn(6, D)
    torch.testing.assert_close(prior(labels(6)).log_prob(z), prior().log_prob(z), rtol=0, atol=0)
    assert prior(labels(6)).batch_shape == ()


def test_conditional_normal_protocol_and_shapes() -> None:
    prior = ConditionalNormal(4, D)
    assert isinstance(prior, genvae.Prior)
    p = prior(labels(5))
    assert p.event_shape == (D,) and p.batch_shape == (5,)
    assert p.sample().shape == (5, D)
    with pytest.raises(ValueError, match="label"):
        prior()


def test_non_callables_are_not_priors() -> None:
    assert not isinstance(object(), genvae.Prior)


@SEEDS
@given(st.integers(0, 2**31 - 1))
def test_standard_normal_log_prob(seed: int) -> None:
    z = torch.randn(5, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = -0.5 * z.square().sum(-1) - 0.5 * D * LOG_2PI
    torch.testing.assert_close(StandardNormal(D).double()().log_prob(z), expected)


@SEEDS
@given(st.integers(0, 2**31 - 1))
def test_learned_normal_log_prob(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    prior = LearnedNormal(D).double()
    z = torch.randn(5, D, generator=g, dtype=torch.float64)
    torch.testing.assert_close(prior().log_prob(z), -0.5 * z.square().sum(-1) - 0.5 * D * LOG_2PI)
    with torch.no_grad():
        prior.loc.copy_(torch.randn(D, generator=g))
        prior.log_scale.copy_(torch.randn(D, generator=g))
    expected = diag_normal_log_prob(z, prior.loc.detach(), prior.log_scale.detach().exp())
    torch.testing.assert_close(prior().log_prob(z), expected)


@SEEDS
@given(st.integers(0, 2**31 - 1), st.integers(1, 5))
def test_mixture_of_gaussians_log_prob_is_a_logsumexp(seed: int, k: int) -> None:
    g = torch.Generator().manual_seed(seed)
    prior = MixtureOfGaussians(D, k).double()
    with torch.no_grad():
        prior.logits.copy_(torch.randn(k, generator=g))
        prior.log_scales.copy_(0.5 * torch.randn(k, D, generator=g))
    z = 2 * torch.randn(6, D, generator=g, dtype=torch.float64)
    log_w = prior.logits.detach().log_softmax(0)  # (k,)
    locs, scales = prior.locs.detach(), prior.log_scales.detach().exp()
    comp = diag_normal_log_prob(z[:, None, :], locs, scales)  # (6, k)
    expected = torch.logsumexp(log_w + comp, dim=1)
    torch.testing.assert_close(prior().log_prob(z), expected, rtol=1e-12, atol=1e-12)


@SEEDS
@given(st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_vamp_prior_log_prob_is_the_mean_of_posteriors(seed: int, k: int) -> None:
    torch.manual_seed(seed)
    encoder = MLPEncoder(SHAPE, D, hidden=(8,)).double()
    prior = VampPrior(encoder, k, SHAPE).double()
    z = torch.randn(6, D, dtype=torch.float64)
    with torch.no_grad():
        u = prior.pseudo_inputs()
        stats = encoder.net(u.flatten(1))  # (k, 2D): μ ‖ log σ²
        loc, logvar = stats[:, :D], stats[:, D:]
        comp = diag_normal_log_prob(z[:, None, :], loc, (0.5 * logvar).exp())  # (6, k)
        expected = torch.logsumexp(comp, dim=1) - math.log(k)
        torch.testing.assert_close(prior().log_prob(z), expected, rtol=1e-12, atol=1e-12)


def test_vamp_prior_is_exact_in_float64() -> None:
    torch.manual_seed(0)
    encoder = MLPEncoder(SHAPE, D, hidden=(8,)).double()
    prior = VampPrior(encoder, 3, SHAPE).double()
    p = prior()
    assert p.mixture_distribution.logits.dtype == torch.float64
    z = torch.randn(4, D, dtype=torch.float64)
    with torch.no_grad():
        expected = torch.logsumexp(p.component_distribution.log_prob(z[:, None, :]), dim=1) - math.log(3)
        torch.testing.assert_close(p.log_prob(z), expected, rtol=1e-12, atol=1e-12)


def test_vamp_prior_pseudo_inputs_lie_in_the_unit_interval() -> None:
    torch.manual_seed(0)
    prior = VampPrior(MLPEncoder(SHAPE, D, hidden=(8,)), 5, SHAPE)
    u = prior.pseudo_inputs()
    assert u.shape == (5, *SHAPE)
    assert bool(((u >= 0) & (u <= 1)).all())
    with torch.no_grad():
        prior.raw_pseudo_inputs.mul_(1e4)  # saturate the sigmoid both ways
    u = prior.pseudo_inputs()
    assert bool(((u >= 0) & (u <= 1)).all())
    assert bool((u == 0).any()) and bool((u == 1).any())


def test_vamp_prior_shares_the_encoder() -> None:
    encoder = MLPEncoder(SHAPE, D, hidden=(8,))
    prior = VampPrior(encoder, 3, SHAPE)
    assert prior.encoder is encoder


def _grads_of(prior: nn.Module, y: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
    torch.manual_seed(1)
    z = torch.randn(8, D)
    prior.zero_grad()
    (-prior(y).log_prob(z).sum()).backward()
    return {name: p.grad for name, p in prior.named_parameters()}


@pytest.mark.parametrize("prior", unconditional_priors()[1:], ids=lambda p: type(p).__name__)
def test_learned_priors_get_gradients_through_log_prob(prior: nn.Module) -> None:
    grads = _grads_of(prior)
    assert grads, "prior has no parameters"
    for name, grad in grads.items():
        assert grad is not None and bool(grad.abs().sum() > 0), name


def test_vamp_prior_gradient_reaches_pseudo_inputs_and_encoder() -> None:
    torch.manual_seed(0)
    encoder = MLPEncoder(SHAPE, D, hidden=(8,))
    grads = _grads_of(VampPrior(encoder, 4, SHAPE))
    assert grads["raw_pseudo_inputs"] is not None and bool(grads["raw_pseudo_inputs"].abs().sum() > 0)
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in encoder.parameters())


def test_conditional_normal_gradients_and_classes_separate_after_a_step() -> None:
    prior = ConditionalNormal(4, D)
    z = torch.zeros(4, D)
    z[0], z[1] = 1.0, -1.0
    y = torch.tensor([0, 1, 0, 1])
    z = z[[0, 1, 0, 1]]
    before = [prior(torch.tensor([c])).log_prob(torch.ones(1, D)).item() for c in range(4)]
    assert before == [before[0]] * 4  # all classes start equal, as N(0, I)
    opt = torch.optim.SGD(prior.parameters(), lr=0.1)
    opt.zero_grad()
    (-prior(y).log_prob(z).sum()).backward()
    assert prior.loc.grad is not None and prior.log_scale.grad is not None
    assert bool(prior.loc.grad[:2].abs().sum(-1).gt(0).all())
    assert bool(prior.loc.grad[2:].eq(0).all())  # unseen classes get no gradient
    opt.step()
    after = [prior(torch.tensor([c])).log_prob(torch.ones(1, D)).item() for c in range(4)]
    assert after[0] > before[0] > after[1]  # class 0 moved towards +1, class 1 away
    assert after[2] == after[3] == before[2]
    torch.testing.assert_close(prior(torch.tensor([0])).mean, -prior(torch.tensor([1])).mean)
    assert bool((prior(torch.tensor([0])).mean > 0).all())


def test_conditional_normal_log_prob_by_hand() -> None:
    torch.manual_seed(0)
    prior = ConditionalNormal(3, D).double()
    with torch.no_grad():
        prior.loc.copy_(torch.randn(3, D))
        prior.log_scale.copy_(0.3 * torch.randn(3, D))
    y = torch.tensor([2, 0, 1, 2])
    z = torch.randn(4, D, dtype=torch.float64)
    expected = diag_normal_log_prob(z, prior.loc.detach()[y], prior.log_scale.detach()[y].exp())
    torch.testing.assert_close(prior(y).log_prob(z), expected)


@SEEDS
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 40),
    d=st.integers(1, 12),
    log_scale_range=st.sampled_from([(-0.5, 0.5), (-5.0, 0.0), (-1.0, 4.0)]),
)
def test_mixture_log_prob_by_matrix_products_matches_torchs_broadcast(seed, k, d, log_scale_range) -> None:
    """The mixtures that MixtureOfGaussians and VampPrior return give torch's MixtureSameFamily
    log-density and gradients (float64 reference), in float32 and under bf16 autocast too."""
    g = torch.Generator().manual_seed(seed)
    low, high = log_scale_range
    loc = (3 * torch.randn(k, d, generator=g, dtype=torch.float64)).requires_grad_()
    log_scale = (low + (high - low) * torch.rand(k, d, generator=g, dtype=torch.float64)).requires_grad_()
    logits = torch.randn(k, generator=g, dtype=torch.float64).requires_grad_()
    z = (4 * torch.randn(3, 5, d, generator=g, dtype=torch.float64)).requires_grad_()
    prior = MixtureOfGaussians(d, k).double()
    with torch.no_grad():
        prior.locs.copy_(loc), prior.log_scales.copy_(log_scale), prior.logits.copy_(logits)
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits),
        torch.distributions.Independent(torch.distributions.Normal(loc, log_scale.exp()), 1),
    ).log_prob(z)  # (3, 5)
    fast = prior().log_prob(z)
    torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-9)
    wanted = torch.autograd.grad(reference.sum(), (loc, log_scale, logits, z))
    got = torch.autograd.grad(fast.sum(), (*prior.parameters(), z))
    by_name = dict(zip(("logits", "locs", "log_scales"), got[:3]))
    for name, want in zip(("locs", "log_scales", "logits"), wanted[:3]):
        torch.testing.assert_close(by_name[name], want, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(got[3], wanted[3], rtol=1e-7, atol=1e-8)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # no bf16 products inside: float32 accuracy
        single = prior.float()().log_prob(z.detach().float())
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), reference.detach(), rtol=1e-5, atol=1e-4)


def test_a_vampprior_over_a_gaussian_encoder_is_the_fast_mixture_and_matches_torchs() -> None:
    torch.manual_seed(0)
    encoder = MLPEncoder((1, 4, 4), 3, hidden=(8,)).double()
    prior = VampPrior(encoder, 7, (1, 4, 4)).double()
    p = prior()
    assert type(p).__name__ == "_DiagonalGaussianMixture"
    z = torch.randn(6, 2, 3, dtype=torch.float64)
    reference = torch.distributions.MixtureSameFamily(p.mixture_distribution, p.component_distribution)
    torch.testing.assert_close(p.log_prob(z), reference.log_prob(z), rtol=1e-10, atol=1e-10)
