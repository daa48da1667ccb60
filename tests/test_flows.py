"""Flow posteriors: log-determinants against autograd's Jacobian, log-densities against the change of
variables computed independently, inverses, the IW bound, a banana-shaped posterior that a flow fits
better than a Gaussian, save/load, training and refusals of bad input."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.distributions import Independent, Laplace, Normal, Transform

import genvae
from genvae import ELBO, IWAE, STL, VAE, load, save
from genvae.flows import IAF, FlowDistribution, FlowEncoder, FlowStep, Householder, Planar
from genvae.io import describe
from genvae.likelihoods import Gaussian
from genvae.metrics.likelihood import iw_nll
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 3
H = 2 * D  # the default context [μ, log σ]
SHAPE = (4,)
SEEDS = settings(max_examples=10, deadline=None)
TRUSTED = ("genvae.flows",)
LOG_2PI = math.log(2 * math.pi)

#: One of each kind of step, as (name, factory of a step over D dims).
STEPS: dict[str, Callable[[], nn.Module]] = {
    "iaf": lambda: IAF(D, hidden=(8, 8), context_features=H),
    "iaf-forward-order": lambda: IAF(D, hidden=(8,), context_features=H, reverse=False),
    "iaf-global": lambda: IAF(D, hidden=(8,)),
    "planar": lambda: Planar(D, context_features=H),
    "planar-global": lambda: Planar(D),
    "householder": lambda: Householder(D, context_features=H),
    "householder-global": lambda: Householder(D),
}

#: Flows of two steps each, and one that mixes the three kinds.
FLOWS: dict[str, Callable[[], tuple[nn.Module, ...]]] = {
    "iaf": lambda: (IAF(D, hidden=(8,), context_features=H), IAF(D, hidden=(8,), context_features=H)),
    "planar": lambda: (Planar(D, context_features=H), Planar(D)),
    "householder": lambda: (Householder(D, context_features=H), Householder(D, context_features=H)),
    "mixed": lambda: (IAF(D, hidden=(8,), context_features=H), Planar(D, context_features=H), Householder(D)),
}
INVERTIBLE = ("iaf", "householder")


def flow_encoder(kind: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> FlowEncoder:
    torch.manual_seed(seed)
    return FlowEncoder(MLPEncoder(SHAPE, D, hidden=(8,)), FLOWS[kind]()).to(dtype)


def flow_vae(kind: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> VAE:
    encoder = flow_encoder(kind, seed, dtype)
    return VAE(encoder, MLPDecoder(D, SHAPE, hidden=(8,)), Gaussian(), StandardNormal(D)).to(dtype)


def push(transforms: list[Transform], z0: Tensor) -> Tensor:
    for t in transforms:
        z0 = t(z0)
    return z0


def block_log_dets(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """log |det ∂f(z)_n / ∂z_n| ``(*S, B)`` for each point of ``z (*S, B, D)``, from autograd's full
    Jacobian; asserts that f maps each point on its own (the off-diagonal blocks are zero)."""
    d = z.shape[-1]
    n = z.numel() // d
    jac = torch.autograd.functional.jacobian(f, z).reshape(n, d, n, d)  # (N, D, N, D)
    blocks = jac.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (N, D, D)
    eye = torch.eye(n, dtype=torch.bool)
    assert bool((jac.permute(0, 2, 1, 3)[~eye] == 0).all()), "one point's image depends on another point"
    sign, logdet = torch.linalg.slogdet(blocks)
    assert bool((sign != 0).all())
    return logdet.reshape(z.shape[:-1])


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return (-0.5 * z.square() - 0.5 * LOG_2PI).sum(-1)


# --------------------------------------------------------------------------- steps


@pytest.mark.parametrize("kind", STEPS)
@SEEDS
@given(seed=st.integers(0, 2**31 - 1))
def test_each_steps_log_determinant_matches_autograds_jacobian(kind: str, seed: int) -> None:
    torch.manual_seed(seed)
    step = STEPS[kind]().double()
    assert isinstance(step, FlowStep)
    context = torch.randn(2, H, dtype=torch.float64)  # (B, H)
    z = 2 * torch.randn(3, 2, D, dtype=torch.float64)  # (k, B, D)
    expected = block_log_dets(step(context), z)
    transform = step(context)
    cached = transform.log_abs_det_jacobian(z, transform(z))  # from the forward call's own values
    fresh = step(context).log_abs_det_jacobian(z, None)  # recomputed from z
    assert cached.shape == fresh.shape == (3, 2)
    torch.testing.assert_close(cached, expected)
    torch.testing.assert_close(fresh, expected)


@pytest.mark.parametrize("reverse", [False, True])
@SEEDS
@given(seed=st.integers(0, 2**31 - 1))
def test_iaf_is_autoregressive_its_jacobian_is_triangular_in_the_steps_order(reverse: bool, seed: int) -> None:
    torch.manual_seed(seed)
    d = 5
    step = IAF(d, hidden=(16, 16), context_features=4, reverse=reverse).double()
    context = torch.randn(1, 4, dtype=torch.float64)
    z = torch.randn(1, d, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(step(context), z)[0, :, 0, :]  # (D, D): ∂f_i/∂z_j
    if reverse:
        jac = jac.flip(0)  # undo the reversal of the output: rows in the update's order
    assert bool((jac.triu(1) == 0).all())
    assert bool((jac.diagonal() > 0).all()) and bool((jac.diagonal() < 1).all())  # σ_i in (0, 1)
    # Each output does depend on every earlier input (the masks keep the autoregressive paths).
    assert bool((jac.tril(-1)[torch.ones(d, d, dtype=torch.bool).tril(-1)] != 0).all())


def test_a_one_dimensional_iaf_step_is_affine_with_parameters_from_the_context() -> None:
    torch.manual_seed(0)
    step = IAF(1, hidden=(4,), context_features=2).double()
    context = torch.randn(3, 2, dtype=torch.float64)
    z = torch.randn(5, 3, 1, dtype=torch.float64)
    m, s = step.made(z, step.context_layer(context))
    assert torch.equal(m, m[:1].expand_as(m)) and torch.equal(s, s[:1].expand_as(s))  # the same for every z
    transform = step(context)
    torch.testing.assert_close(transform.log_abs_det_jacobian(z, transform(z)), block_log_dets(step(context), z))
    torch.testing.assert_close(step(context).inv(transform(z)), z)


def test_a_new_iaf_step_starts_close_to_the_identity() -> None:
    torch.manual_seed(0)
    step = IAF(4, reverse=False)
    z = torch.randn(100, 4)
    with torch.no_grad():
        gate = torch.sigmoid(step.made(z, None)[1])
    assert float(gate.mean()) > 0.8  # σ ≈ sigmoid(gate_bias = 2) ≈ 0.88


def test_planar_steps_are_invertible_whatever_u_and_w() -> None:
    """û makes wᵀû > −1 even where wᵀu is far below −1, so 1 + tanh′ · wᵀû never reaches 0."""
    step = Planar(2).double()
    with torch.no_grad():
        step.params.copy_(torch.tensor([-3.0, -3.0, 1.0, 1.0, 0.0], dtype=torch.float64))  # wᵀu = −6
    transform = step(torch.zeros(1, 0))
    z = torch.linspace(-1, 1, 11, dtype=torch.float64)[:, None].expand(11, 2).contiguous()  # through wᵀz + b = 0
    log_det = transform.log_abs_det_jacobian(z, transform(z))
    assert bool(torch.isfinite(log_det).all())
    torch.testing.assert_close(log_det, block_log_dets(step(torch.zeros(1, 0)), z))
    # Along w the map is strictly increasing: the image of a line through the hyperplane is ordered.
    a = (transform(z) * torch.tensor([1.0, 1.0], dtype=torch.float64)).sum(-1)
    assert bool((a.diff() > 0).all())


def test_a_zero_householder_vector_is_the_identity_not_nan() -> None:
    step = Householder(3)
    with torch.no_grad():
        step.v.zero_()
    z = torch.randn(4, 3)
    transform = step(torch.zeros(4, 0))
    assert torch.equal(transform(z), z)
    assert torch.equal(transform.log_abs_det_jacobian(z, z), torch.zeros(4))


# --------------------------------------------------------------------------- the posterior's density


@pytest.mark.parametrize("kind", FLOWS)
def test_log_prob_of_the_flows_own_draws_is_the_base_density_minus_the_log_determinants(kind: str) -> None:
    encoder = flow_encoder(kind)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    q = encoder(x)
    assert isinstance(q, FlowDistribution) and isinstance(encoder, genvae.Encoder)
    assert q.batch_shape == (2,) and q.event_shape == (D,)
    torch.manual_seed(1)
    z = q.rsample((3,))  # (k, B, D)
    torch.manual_seed(1)
    base = encoder.encoder(x)
    z0 = base.rsample((3,))  # the same base draws
    other = encoder(x).transforms  # the same maps, with empty caches
    torch.testing.assert_close(z, push(other, z0))
    expected = base.log_prob(z0) - block_log_dets(lambda v: push(encoder(x).transforms, v), z0)
    torch.testing.assert_close(q.log_prob(z), expected)
    torch.testing.assert_close(q.log_prob(z), expected)  # again: the caches still hold the draws


@pytest.mark.parametrize("kind", INVERTIBLE)
def test_iaf_and_householder_flows_give_log_prob_at_any_point_and_invert_exactly(kind: str) -> None:
    encoder = flow_encoder(kind)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    base = encoder.encoder(x)
    z0 = torch.randn(4, 2, D, dtype=torch.float64)  # not drawn by any flow distribution
    z = push(encoder(x).transforms, z0)
    expected = base.log_prob(z0) - block_log_dets(lambda v: push(encoder(x).transforms, v), z0)
    torch.testing.assert_close(encoder(x).log_prob(z.clone()), expected)  # a fresh q: no cache to read
    for forward, inverse in zip(encoder(x).transforms, encoder(x).transforms):
        torch.testing.assert_close(inverse.inv(forward(z0)), z0)  # inverse ∘ forward = identity
        z0 = forward(z0)


def test_a_planar_flow_refuses_log_prob_at_a_point_it_did_not_draw() -> None:
    encoder = flow_encoder("planar")
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="planar step has no closed-form inverse"):
        encoder(x).log_prob(torch.zeros(2, D, dtype=torch.float64))


def test_mean_is_the_flows_image_of_the_base_mean_and_leaves_the_draws_cached() -> None:
    encoder = flow_encoder("mixed")
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    q = encoder(x)
    z = q.rsample((5,))
    density = q.log_prob(z)
    mean = q.mean
    assert mean.shape == (2, D)
    torch.testing.assert_close(mean, push(encoder(x).transforms, encoder.encoder(x).mean))
    torch.testing.assert_close(q.log_prob(z), density)  # the planar step has no inverse: this read the caches


def test_a_householder_flows_mean_is_exact() -> None:
    """Reflections are linear, so f(μ) is E_q[z]; checked against many draws."""
    encoder = flow_encoder("householder")
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    q = encoder(x)
    torch.manual_seed(0)
    draws = q.sample((40000,))
    scale = encoder.encoder(x).base_dist.scale.max().detach()
    torch.testing.assert_close(draws.mean(0), q.mean, rtol=0, atol=float(5 * scale / math.sqrt(40000)))


# --------------------------------------------------------------------------- in a model


def seeded_base_draws(model: VAE, x: Tensor, k: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The base draws z₀ that ``model.terms(x, k=k)`` makes under ``seed``; the flow's image z; and
    log q(z | x) by the change of variables, with autograd's Jacobian."""
    torch.manual_seed(seed)
    base = model.encoder.encoder(x)
    z0 = base.rsample((k,)).detach()  # (k, B, D)
    with torch.no_grad():
        z = push(model.encoder(x).transforms, z0)
    log_q = base.log_prob(z0) - block_log_dets(lambda v: push(model.encoder(x).transforms, v), z0)
    return z0, z, log_q.detach()


@pytest.mark.parametrize("kind", FLOWS)
def test_the_kl_falls_back_to_log_q_minus_log_p_on_the_draws(kind: str) -> None:
    model = flow_vae(kind)
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    torch.manual_seed(7)
    terms = model.terms(x, k=4)
    _, z, log_q = seeded_base_draws(model, x, 4, seed=7)
    torch.testing.assert_close(terms.layers[0].z, z)
    torch.testing.assert_close(terms.kl(), log_q - standard_normal_log_prob(z))
    with pytest.raises(NotImplementedError):
        torch.distributions.kl_divergence(terms.layers[0].posterior, terms.layers[0].prior)


@pytest.mark.parametrize("kind", FLOWS)
def test_importance_weights_and_iw_nll_use_the_flows_density(kind: str) -> None:
    model = flow_vae(kind).eval()
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    torch.manual_seed(3)
    nll = iw_nll(model, x, 6, chunk=3)  # two passes of 3 draws
    torch.manual_seed(3)
    log_w = []
    for _ in range(2):
        base = model.encoder.encoder(x)
        z0 = base.rsample((3,))
        with torch.no_grad():
            z = push(model.encoder(x).transforms, z0)
        log_q = base.log_prob(z0) - block_log_dets(lambda v: push(model.encoder(x).transforms, v), z0)
        with torch.no_grad():
            log_px = model.decode(z).log_prob(x)
        log_w.append(log_px + standard_normal_log_prob(z) - log_q.detach())
    expected = -(torch.logsumexp(torch.cat(log_w), 0) - math.log(6))
    torch.testing.assert_close(nll, expected)


def test_stl_refuses_a_flow_posterior_and_iwae_trains_it() -> None:
    model = flow_vae("iaf")
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    with pytest.raises(ValueError, match="TransformedDistribution|FlowDistribution"):
        STL()(model.terms(x))
    IWAE(3)(model.terms(x, k=3)).loss.backward()
    assert all(p.grad is not None for p in model.encoder.steps.parameters())


def test_reconstruct_and_interpolate_decode_the_flows_mean() -> None:
    model = flow_vae("mixed")
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    torch.testing.assert_close(model.reconstruct(x), model.decode(model.encoder(x).mean).mean)
    path = model.interpolate(x[0], x[1], steps=3)
    torch.testing.assert_close(path[[0, 2]], model.reconstruct(x))


def test_the_default_context_is_the_base_posteriors_mean_and_log_scale() -> None:
    encoder = flow_encoder("householder")
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    normal = encoder.encoder(x).base_dist
    h = torch.cat([normal.loc, normal.scale.log()], -1)  # (B, 2D)
    torch.testing.assert_close(encoder(x).transforms[0].v, encoder.flows[0].v(h))


def test_a_conditional_encoder_passes_its_label_and_num_classes_through() -> None:
    torch.manual_seed(0)
    inner = MLPEncoder(SHAPE, D, hidden=(8,), num_classes=3)
    encoder = FlowEncoder(inner, (IAF(D, hidden=(8,), context_features=H),))
    model = genvae.CVAE(encoder, MLPDecoder(D, SHAPE, hidden=(8,), num_classes=3), Gaussian(), StandardNormal(D))
    assert model.num_classes == 3 and model.latent_dim == D
    x, y = torch.randn(4, *SHAPE), torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(encoder(x, y).base_dist.mean, inner(x, y).mean)
    assert model.terms(x, y, k=2).kl().shape == (2, 4)


# --------------------------------------------------------------------------- a non-Gaussian posterior


class Banana(nn.Module):
    """A fixed decoder x = z₂ + z₁² (plus Gaussian noise): with p(z) = N(0, I), the posterior of z
    given x lies along the parabola z₂ = x − z₁², far from any Gaussian."""

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return z[..., 1:] + z[..., :1].square()  # (*S, B, 1)


@functools.cache
def banana_elbo(kind: str) -> float:
    """The ELBO, averaged over a fixed batch and 4000 draws each, after 150 Adam steps on the encoder
    alone (the same initial encoder and seed for every kind)."""
    torch.manual_seed(0)
    encoder: nn.Module = MLPEncoder((1,), 2, hidden=(16,))
    if kind == "iaf":
        encoder = FlowEncoder(
            encoder, (IAF(2, hidden=(16,), context_features=4), IAF(2, hidden=(16,), context_features=4))
        )
    elif kind == "planar":
        encoder = FlowEncoder(encoder, tuple(Planar(2, context_features=4) for _ in range(4)))
    model = VAE(encoder, Banana(), Gaussian(0.2), StandardNormal(2))
    x = torch.linspace(-1, 2, 8)[:, None]  # (B, 1)
    optimizer = torch.optim.Adam(model.encoder.parameters(), lr=0.03)
    objective = ELBO(k=32)
    with model.validate_args(False):
        for _ in range(150):
            loss = objective(model.terms(x, k=32)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.manual_seed(1)
        with torch.no_grad():
            return float(ELBO()(model.terms(x, k=4000)).bound.mean())


@pytest.mark.parametrize("kind, margin", [("iaf", 0.25), ("planar", 0.2)])
def test_a_flow_posterior_raises_the_elbo_on_a_banana_shaped_posterior(kind: str, margin: float) -> None:
    gaussian, flow = banana_elbo("gaussian"), banana_elbo(kind)
    assert flow > gaussian + margin
    assert flow < -1.53  # log p(x) of the batch, by quadrature: no bound exceeds it


# --------------------------------------------------------------------------- save, load, fit


class ContextNet(nn.Module):
    """A user context x → h (B, H) whose constructor arguments are attributes (so it saves)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.net = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.net(x))  # (B, H)


@pytest.mark.parametrize("kind", [*FLOWS, "user-context"])
def test_save_and_load_round_trip_a_vae_with_each_flow(kind: str, tmp_path: Path) -> None:
    if kind == "user-context":
        torch.manual_seed(0)
        encoder = FlowEncoder(
            MLPEncoder(SHAPE, D, hidden=(8,)),
            [IAF(D, hidden=(8,), context_features=5), Planar(D, context_features=5), Householder(D)],
            context=ContextNet(SHAPE[0], 5),
        )
        model = VAE(encoder, MLPDecoder(D, SHAPE, hidden=(8,)), Gaussian(), StandardNormal(D))
        trusted = (*TRUSTED, ContextNet.__module__)
    else:
        model, trusted = flow_vae(kind, dtype=torch.float32), TRUSTED
    loaded = load(save(model, tmp_path / "m.safetensors"), trusted=trusted)
    assert describe(loaded) == describe(model)
    assert [type(s) for s in loaded.encoder.flows] == [type(s) for s in model.encoder.flows]
    reference = model.state_dict()
    assert all(torch.equal(t, reference[name]) for name, t in loaded.state_dict().items())
    x = torch.randn(3, *SHAPE)
    torch.manual_seed(5)
    expected = model.terms(x, k=2)
    torch.manual_seed(5)
    got = loaded.terms(x, k=2)
    assert torch.equal(got.log_weights(), expected.log_weights())
    assert torch.equal(got.kl(), expected.kl())


@pytest.mark.parametrize("objective", [None, IWAE(3)], ids=["elbo", "iwae"])
def test_fit_trains_a_flow_vae_for_an_epoch(objective: IWAE | None) -> None:
    model = flow_vae("mixed", dtype=torch.float32)
    before = {name: p.detach().clone() for name, p in model.encoder.steps.named_parameters()}
    train = torch.randn(32, *SHAPE)
    result = fit(
        model, train, test=train[:8], epochs=1, batch_size=8, device="cpu", objective=objective, progress=False
    )
    (stats,) = result.history
    assert math.isfinite(stats.train_loss) and stats.test_loss is not None and math.isfinite(stats.test_loss)
    moved = [not torch.equal(p, before[name]) for name, p in model.encoder.steps.named_parameters()]
    assert all(moved)


# --------------------------------------------------------------------------- bad input


class LaplaceEncoder(nn.Module):
    latent_dim = D

    def forward(self, x: Tensor, y: Tensor | None = None) -> Independent:
        return Independent(Laplace(x[:, :D], torch.ones(x.shape[0], D)), 1)


class BareNormalEncoder(nn.Module):
    latent_dim = D

    def forward(self, x: Tensor, y: Tensor | None = None) -> Normal:
        return Normal(x[:, :D], torch.ones(x.shape[0], D))


@pytest.mark.parametrize(
    "encoder, got", [(LaplaceEncoder(), r"Independent\(Laplace, 1\)"), (BareNormalEncoder(), "Normal")]
)
def test_a_non_gaussian_base_posterior_is_refused(encoder: nn.Module, got: str) -> None:
    flow = FlowEncoder(encoder, (Householder(D),))
    with pytest.raises(
        ValueError, match=rf"expected a Gaussian base posterior Independent\(Normal\(…\), 1\) for a flow, got {got}"
    ):
        flow(torch.randn(2, *SHAPE))


def test_an_empty_flow_is_refused() -> None:
    with pytest.raises(ValueError, match="expected flows to hold at least one flow step, got an empty"):
        FlowEncoder(MLPEncoder(SHAPE, D), ())
    with pytest.raises(TypeError, match="expected flows to be a tuple or list"):
        FlowEncoder(MLPEncoder(SHAPE, D), Householder(D))
    with pytest.raises(TypeError, match=r"expected flows\[1\] to be a flow step"):
        FlowEncoder(MLPEncoder(SHAPE, D), (Householder(D), nn.Linear(3, 3)))


def test_a_step_of_another_latent_dim_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"encoder's latent_dim=3, got flows\[1\].latent_dim=2"):
        FlowEncoder(MLPEncoder(SHAPE, D), (Householder(D), Householder(2)))


def test_a_step_whose_context_is_not_the_default_contexts_width_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected flows\[0\].context_features to be 2 \* latent_dim = 6"):
        FlowEncoder(MLPEncoder(SHAPE, D), (IAF(D, context_features=5),))
    flow = FlowEncoder(MLPEncoder(SHAPE, D), (IAF(D, context_features=5),), context=ContextNet(SHAPE[0], 7))
    with pytest.raises(ValueError, match=r"expected a context of shape \(B, 5\) for flows\[0\], got \(2, 7\)"):
        flow(torch.randn(2, *SHAPE))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: IAF(D, hidden=0), ValueError, r"hidden\[0\]"),
        (lambda: IAF(D, hidden=()), TypeError, "hidden"),
        (lambda: IAF(D, hidden=(8, -1)), ValueError, r"hidden\[1\]"),
        (lambda: IAF(0), ValueError, "latent_dim"),
        (lambda: IAF(D, context_features=0), ValueError, "context_features"),
        (lambda: IAF(D, gate_bias=float("nan")), ValueError, "gate_bias"),
        (lambda: IAF(D, reverse=1), TypeError, "reverse"),
        (lambda: IAF(D, activation=torch.tanh), TypeError, "activation"),
        (lambda: Planar(2.5), TypeError, "latent_dim"),
        (lambda: Planar(D, context_features=-2), ValueError, "context_features"),
        (lambda: Householder(D, context_features=True), TypeError, "context_features"),
        (lambda: FlowEncoder("encoder", (Householder(D),)), TypeError, "encoder"),
        (lambda: FlowEncoder(MLPEncoder(SHAPE, D), (Householder(D),), context=3), TypeError, "context"),
    ],
)
def test_bad_arguments_are_refused_with_a_message_naming_them(
    make: Callable[[], object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        make()
