"""Hierarchical VAEs: the terms against a float64 computation by hand, the one-layer case against
VAE, the bounds, both inference routes trained by fit, the VampPrior at the top, save and load,
and errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Independent, MixtureSameFamily, Normal
from torch.distributions import kl_divergence as torch_kl

import genvae
from genvae import ELBO, IWAE, STL, VAE, DReG, FreeBits
from genvae.flows import IAF, FlowDistribution, FlowHead, Householder, Planar
from genvae.hierarchy import (
    ConvBlock,
    GaussianHead,
    HierarchicalVAE,
    KLOnDraws,
    Ladder,
    LadderEncoder,
    MLPBlock,
    cells_of,
    conv_hierarchy,
    from_ladder,
    mlp_hierarchy,
)
from genvae.likelihoods import Bernoulli
from genvae.metrics import evaluate_elbo, iw_nll
from genvae.nets import ConvDecoder, MLPDecoder, MLPEncoder, ResNetDecoder
from genvae.priors import StandardNormal, VampPrior
from genvae.train import fit

if TYPE_CHECKING:
    from conftest import LabelledImages

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRUSTED = ("genvae.hierarchy",)
ROUTES = {"top-down": True, "bottom-up": False}


def small(top_down: bool = True, seed: int = 0, **kwargs) -> HierarchicalVAE:
    """Three layers over 6 binary values, float64."""
    torch.manual_seed(seed)
    options = {"likelihood": Bernoulli(), "hidden": ((10, 8), (7,), (6,)), "top_down": top_down, **kwargs}
    return mlp_hierarchy((6,), (4, 3, 2), **options).double()


def binary(n: int, size: int = 6, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, size, generator=g, dtype=torch.float64).bernoulli(generator=g)


def gaussian(stats: Tensor) -> Normal:
    """N(μ, exp(½ logvar)) per dimension, built here from a head's raw output."""
    mu, logvar = stats.chunk(2, dim=-1)
    return Normal(mu, (0.5 * logvar).exp())


def standard_normal_draw(shape: tuple[int, ...]) -> Tensor:
    """The ε that Normal.rsample draws next from the global generator (its own call, replayed)."""
    return torch.empty(shape, dtype=torch.float64).normal_()


def by_hand(model: HierarchicalVAE, x: Tensor, k: int, seed: int) -> dict[str, list[Tensor] | Tensor]:
    """z, log p(x | z_1), each layer's log q, log p and closed-form KL (top first), with the model's
    draws replayed from ``seed``: the composition of the hierarchy written out from its maths."""
    up, heads = model.encoder.up, model.encoder.heads
    down, priors, L = model.down, model.priors, model.num_layers
    b = x.shape[0]
    torch.manual_seed(seed)
    zs, qs, ps = [None] * L, [None] * L, [None] * L
    if model.top_down:
        hs = [up[0].net(x)]
        for block in up[1:]:
            hs.append(block.net(hs[-1]))
        qs[-1] = gaussian(heads[-1].net(hs[-1]))
        zs[-1] = qs[-1].loc + qs[-1].scale * standard_normal_draw((k, b, qs[-1].loc.shape[-1]))
        for i in reversed(range(L - 1)):
            t = down[i].net(zs[i + 1])
            ps[i] = gaussian(priors[i].net(t))
            qs[i] = gaussian(heads[i].net(torch.cat([hs[i].expand(k, b, -1), t], -1)))
            zs[i] = qs[i].loc + qs[i].scale * standard_normal_draw((k, b, qs[i].loc.shape[-1]))
    else:
        qs[0] = gaussian(heads[0].net(up[0].net(x)))
        zs[0] = qs[0].loc + qs[0].scale * standard_normal_draw((k, b, qs[0].loc.shape[-1]))
        for i in range(1, L):
            qs[i] = gaussian(heads[i].net(up[i].net(zs[i - 1])))
            zs[i] = qs[i].loc + qs[i].scale * standard_normal_draw((k, b, qs[i].loc.shape[-1]))
        for i in range(L - 1):
            ps[i] = gaussian(priors[i].net(down[i].net(zs[i + 1])))
    ps[-1] = Normal(torch.zeros_like(qs[-1].loc), torch.ones_like(qs[-1].loc))
    logits = model.decoder.net(zs[0])
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    top_first = list(reversed(range(L)))
    return {
        "z": [zs[i] for i in top_first],
        "log_q": [qs[i].log_prob(zs[i]).sum(-1) for i in top_first],
        "log_p": [ps[i].log_prob(zs[i]).sum(-1) for i in top_first],
        "closed_kl": [torch_kl(qs[i], ps[i]).sum(-1).expand(k, b) for i in top_first],
        "log_px": log_px,
    }


# --------------------------------------------------------------------------- the terms


def test_top_down_terms_match_a_float64_computation_by_hand() -> None:
    model, x = small(top_down=True), binary(5)
    torch.manual_seed(7)
    terms = model.terms(x, k=3)
    ref = by_hand(model, x, 3, seed=7)
    assert len(terms.layers) == 3 and [layer.z.shape[-1] for layer in terms.layers] == [2, 3, 4]  # top first
    for layer, z in zip(terms.layers, ref["z"]):
        torch.testing.assert_close(layer.z, z)
    torch.testing.assert_close(terms.log_likelihood, ref["log_px"])
    for layer, kl in zip(terms.layers, ref["closed_kl"]):  # top-down: every layer's KL in closed form
        torch.testing.assert_close(layer.kl(), kl)
    log_w = ref["log_px"] + sum(p - q for p, q in zip(ref["log_p"], ref["log_q"]))
    torch.testing.assert_close(terms.log_weights(), log_w)
    torch.testing.assert_close(ELBO()(terms).bound, (ref["log_px"] - sum(ref["closed_kl"])).mean(0))
    torch.testing.assert_close(IWAE(3)(terms).bound, torch.logsumexp(log_w, 0) - math.log(3))


def test_bottom_up_terms_match_a_float64_computation_by_hand_with_lower_kls_on_the_draws() -> None:
    model, x = small(top_down=False), binary(5)
    torch.manual_seed(8)
    terms = model.terms(x, k=3)
    ref = by_hand(model, x, 3, seed=8)
    for layer, z in zip(terms.layers, ref["z"]):
        torch.testing.assert_close(layer.z, z)
    torch.testing.assert_close(terms.log_likelihood, ref["log_px"])
    top, *lower = terms.layers
    torch.testing.assert_close(top.kl(), ref["closed_kl"][0])  # q(z_L | z_{L-1}) ‖ p(z_L): drawn last
    for layer, log_q, log_p in zip(lower, ref["log_q"][1:], ref["log_p"][1:]):
        assert isinstance(layer.prior, Independent) and isinstance(layer.prior.base_dist, KLOnDraws)
        torch.testing.assert_close(layer.kl(), log_q - log_p)
        torch.testing.assert_close(layer.kl_per_dim().sum(-1), log_q - log_p)
    log_w = ref["log_px"] + sum(p - q for p, q in zip(ref["log_p"], ref["log_q"]))
    torch.testing.assert_close(terms.log_weights(), log_w)


@pytest.mark.parametrize("route", ROUTES)
def test_the_elbo_is_unbiased_where_a_closed_form_kl_at_a_bottom_up_layer_would_not_be(route: str) -> None:
    """E_q[log p(x|z) − Σ KL] = E_q[log w]: each layer's KL may be in closed form only given the
    draws made before it. Bottom-up, p(z_1 | z_2) depends on z_2, drawn after z_1 (from it)."""
    model, x = small(ROUTES[route], seed=3), binary(3, seed=4)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # strongly coupled layers, so that a bias would be large
        torch.manual_seed(0)
        terms = model.terms(x, k=20000)
    log_w = terms.log_weights()
    gap = terms.log_likelihood - terms.kl() - log_w  # (k, B), mean 0 for an unbiased ELBO
    se = gap.std(0) / math.sqrt(gap.shape[0])
    assert (gap.mean(0).abs() < 5 * se + 1e-9).all(), (gap.mean(0), se)
    if route == "bottom-up":
        layer = terms.layers[-1]  # z_1
        closed = torch_kl(layer.posterior, Independent(layer.prior.base_dist.base, 1))
        biased = terms.log_likelihood - sum(lay.kl() for lay in terms.layers[:-1]) - closed - log_w
        assert (biased.mean(0).abs() > 20 * biased.std(0) / math.sqrt(gap.shape[0])).all()


def test_a_one_layer_hierarchy_is_the_plain_vae_with_the_same_weights() -> None:
    torch.manual_seed(0)
    model = mlp_hierarchy((1, 3, 4), 3, likelihood=Bernoulli(), hidden=9)
    vae = VAE(
        MLPEncoder((1, 3, 4), 3, hidden=(9,), activation=nn.Tanh),
        MLPDecoder(3, (1, 3, 4), hidden=(9,), activation=nn.Tanh),
        Bernoulli(),
        StandardNormal(3),
    )
    with torch.no_grad():
        vae.encoder.net[0].load_state_dict(model.encoder.up[0].net[0][0].state_dict())
        vae.encoder.net[2].load_state_dict(model.encoder.heads[0].net[0].state_dict())
        vae.decoder.load_state_dict(model.decoder.state_dict())
    x = torch.rand(5, 1, 3, 4).bernoulli()
    for k in (1, 4):
        torch.manual_seed(k)
        ours = model.terms(x, k=k)
        torch.manual_seed(k)
        theirs = vae.terms(x, k=k)
        torch.testing.assert_close(ours.layers[0].z, theirs.layers[0].z)
        torch.testing.assert_close(ours.log_likelihood, theirs.log_likelihood)
        torch.testing.assert_close(ours.kl(), theirs.kl())
        torch.manual_seed(k)
        a = model.elbo(x, k=k)
        torch.manual_seed(k)
        b = vae.elbo(x, k=k)
        for name in ("elbo", "log_likelihood", "kl", "loss"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name))
    torch.testing.assert_close(model.reconstruct(x), vae.reconstruct(x))
    torch.testing.assert_close(model.interpolate(x[0], x[1], 4), vae.interpolate(x[0], x[1], 4))


FLOWS = {"gaussian": None, "iaf": lambda d: [IAF(d, hidden=(6,), context_features=2 * d)]}


@pytest.mark.parametrize("posterior", FLOWS)
@pytest.mark.parametrize("route", ROUTES)
def test_the_importance_weighted_bound_is_above_the_elbo_and_tightens_with_k(route: str, posterior: str) -> None:
    model, x = small(ROUTES[route], seed=2, flow=FLOWS[posterior]), binary(64, seed=5)
    bounds = {}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)  # posteriors further from the true ones: the bound's gain from k is clear
        for k in (1, 10, 100):
            torch.manual_seed(k)
            bounds[k] = IWAE(k)(model.terms(x, k=k)).bound.mean().item()
        torch.manual_seed(0)
        elbo = model.elbo(x).elbo.mean().item()
    # Here the gains are several nats from k = 1 to 10 and over half a nat from 10 to 100 (seeds
    # 2-4, both routes); the margins are a fraction of them.
    assert bounds[1] + 1.0 < bounds[10] < bounds[100] - 0.2, bounds
    assert elbo < bounds[100] - 1.0


def block_log_dets(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """log |det ∂f(z)_n / ∂z_n| for each point of ``z (*batch, D)``, from autograd's full Jacobian."""
    d, batch = z.shape[-1], z.shape[:-1]
    n = batch.numel()
    jac = torch.autograd.functional.jacobian(f, z).reshape(n, d, n, d)  # (N, D, N, D), block-diagonal
    return torch.linalg.slogdet(jac.diagonal(dim1=0, dim2=2).permute(2, 0, 1))[1].reshape(batch)


@pytest.mark.parametrize("route", ROUTES)
def test_flow_heads_give_each_layer_its_change_of_variables_density_and_a_kl_on_the_draws(route: str) -> None:
    flow = lambda d: [IAF(d, hidden=(6,), context_features=2 * d), Planar(d, context_features=2 * d)]  # noqa: E731
    model, x = small(ROUTES[route], seed=4, flow=flow), binary(5)
    terms = model.terms(x, k=3)
    assert all(isinstance(head, FlowHead) for head in model.encoder.heads)
    for layer in terms.layers:  # no closed form: the KL is log q − log p at the draws
        assert isinstance(layer.posterior, FlowDistribution)
        torch.testing.assert_close(layer.kl(), layer.posterior.log_prob(layer.z) - layer.prior.log_prob(layer.z))
    for i, layer in enumerate(terms.layers):  # q's density against the change of variables, in float64
        q = layer.posterior
        torch.manual_seed(10 + i)
        z = q.rsample()  # (*batch, D)
        torch.manual_seed(10 + i)
        z0 = q.base_dist.rsample()  # the same base draw, replayed

        def f(points: Tensor, q=q) -> Tensor:
            for t in q.transforms:
                points = t._call(points)
            return points

        torch.testing.assert_close(f(z0), z)
        expected = q.base_dist.log_prob(z0) - block_log_dets(f, z0)
        torch.testing.assert_close(q.log_prob(z), expected)


def test_a_flow_head_refuses_what_it_cannot_push() -> None:
    with pytest.raises(ValueError, match="expected flows to hold at least one flow step, got an empty sequence"):
        small(flow=lambda d: [])
    with pytest.raises(ValueError, match=r"latent_dim to be the head's latent_dim=4, got flows\[0\].latent_dim=5"):
        small(flow=lambda d: [Planar(5)])
    with pytest.raises(ValueError, match=r"flows\[0\].context_features to be 2 \* latent_dim = 8"):
        small(flow=lambda d: [Householder(d, context_features=3)])
    with pytest.raises(TypeError, match="expected flow to be a function latent_dim -> flow steps, got int"):
        small(flow=2)

    class BernoulliHead(nn.Module):
        latent_dim = 4

        def forward(self, h: Tensor) -> Independent:
            return Independent(torch.distributions.Bernoulli(logits=h), 1)

    bernoulli_head = FlowHead(BernoulliHead(), [Planar(4)])
    with pytest.raises(ValueError, match=r"expected a Gaussian base posterior Independent\(Normal\(…\), 1\)"):
        bernoulli_head(torch.zeros(2, 4))


# --------------------------------------------------------------------------- training and generation


@pytest.mark.parametrize("route", ROUTES)
def test_both_routes_train_with_fit_and_generate_in_range(route: str, bars_train: LabelledImages) -> None:
    x = (bars_train.x[:300] > 0.5).float()
    held_out = (bars_train.x[300:400] > 0.5).float()
    torch.manual_seed(0)
    model = mlp_hierarchy((1, 12, 12), (8, 4), likelihood=Bernoulli(), hidden=32, top_down=ROUTES[route])
    before = evaluate_elbo(model, held_out).loss
    result = fit(model, x, epochs=1, test=held_out, batch_size=32, lr=3e-3, device="cpu")
    after = result.history[-1].test_loss
    assert math.isfinite(after) and after < before - 5, (before, after)
    model.eval()
    torch.manual_seed(0)
    nll = iw_nll(model, held_out[:20], k=50)
    assert nll.shape == (20,) and torch.isfinite(nll).all()
    torch.manual_seed(0)
    assert nll.mean() < -model.elbo(held_out[:20]).elbo.mean() + 0.5  # the IW bound is the tighter one
    shapes = {
        "sample": model.sample(5, generator=torch.Generator().manual_seed(0)),
        "sample-draws": model.sample(5, generator=torch.Generator().manual_seed(0), mean=False),
        "reconstruct": model.reconstruct(held_out[:6]),
        "interpolate": model.interpolate(held_out[0], held_out[1], 7),
    }
    for name, n in (("sample", 5), ("sample-draws", 5), ("reconstruct", 6), ("interpolate", 7)):
        out = shapes[name]
        assert out.shape == (n, 1, 12, 12) and bool(((out >= 0) & (out <= 1)).all()), name
    assert set(shapes["sample-draws"].unique().tolist()) <= {0.0, 1.0}


def test_sampling_is_ancestral_and_reproducible_with_a_generator() -> None:
    model = small(seed=4)
    a = model.sample(6, generator=torch.Generator().manual_seed(1))
    b = model.sample(6, generator=torch.Generator().manual_seed(1))
    c = model.sample(6, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Ancestral: with the generator's stream replayed, z_L then each z_l ~ p(z_l | z_{l+1}), then the mean.
    g = torch.Generator().manual_seed(1)
    seeds = [int(torch.randint(2**62, (), generator=g)) for _ in range(3)]
    torch.manual_seed(seeds[0])
    z = torch.randn(6, 2, dtype=torch.float64)
    for i, seed in zip((1, 0), seeds[1:]):
        p = gaussian(model.priors[i].net(model.down[i].net(z)))
        torch.manual_seed(seed)
        z = p.loc + p.scale * torch.randn(p.loc.shape, dtype=torch.float64)
    torch.testing.assert_close(a, torch.sigmoid(model.decoder.net(z)))


def test_decode_sets_the_lower_layers_to_their_conditional_prior_means() -> None:
    model = small(seed=5)
    z3 = torch.randn(2, 4, 2, dtype=torch.float64)  # (S, B, D_L)
    z2 = gaussian(model.priors[1].net(model.down[1].net(z3))).mean
    z1 = gaussian(model.priors[0].net(model.down[0].net(z2))).mean
    px = model.decode(z3)
    assert px.batch_shape == (2, 4) and px.event_shape == (6,)
    torch.testing.assert_close(px.mean, torch.sigmoid(model.decoder.net(z1)))
    x = binary(4)
    q3 = model.encode(x)
    assert q3.batch_shape == (4,) and q3.event_shape == (2,)
    torch.testing.assert_close(model.interpolate(x[0], x[1], 3)[0], model.decode(q3.mean[:1]).mean[0])


@pytest.mark.parametrize("route", ROUTES)
def test_reconstruct_decodes_posterior_means_all_the_way_down(route: str) -> None:
    model, x = small(ROUTES[route], seed=6), binary(4)
    up, heads = model.encoder.up, model.encoder.heads
    if model.top_down:
        h1 = up[0].net(x)
        h2 = up[1].net(h1)
        h3 = up[2].net(h2)
        z = gaussian(heads[2].net(h3)).mean
        for i, h in ((1, h2), (0, h1)):
            z = gaussian(heads[i].net(torch.cat([h, model.down[i].net(z)], -1))).mean
    else:
        z = gaussian(heads[0].net(up[0].net(x))).mean
    torch.testing.assert_close(model.reconstruct(x), torch.sigmoid(model.decoder.net(z)))


def test_labels_reach_the_data_block_and_the_decoder() -> None:
    torch.manual_seed(0)
    model = mlp_hierarchy((6,), (3, 2), likelihood=Bernoulli(), hidden=8, num_classes=3).double()
    assert model.num_classes == 3
    x = binary(4)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.full((4,), 2)
    torch.manual_seed(0)
    a = model.terms(x, y0)
    torch.manual_seed(0)
    b = model.terms(x, y1)
    assert not torch.allclose(a.log_likelihood, b.log_likelihood)
    assert not torch.allclose(a.layers[0].posterior.mean, b.layers[0].posterior.mean)  # through the data block
    assert model.sample(4, y1).shape == (4, 6)
    with pytest.raises(ValueError, match="expected a label tensor y"):
        model.terms(x)
    with pytest.raises(ValueError, match=r"expected y in range\(0, 3\)"):
        model.terms(x, torch.full((4,), 3))


# --------------------------------------------------------------------------- VampPrior and objectives


def test_a_vampprior_at_the_top_shares_the_encoder_and_trains_its_pseudo_inputs() -> None:
    torch.manual_seed(0)
    model = mlp_hierarchy((6,), (3, 2), likelihood=Bernoulli(), hidden=8, num_pseudo_inputs=5)
    assert isinstance(model.prior, VampPrior) and model.prior.encoder is model.encoder
    x = binary(4).float()
    torch.manual_seed(0)
    terms = model.terms(x, k=2)
    top = terms.layers[0]
    assert isinstance(top.prior, MixtureSameFamily)
    torch.testing.assert_close(top.kl(), top.posterior.log_prob(top.z) - top.prior.log_prob(top.z))  # on the draws
    mixture = top.prior.component_distribution
    torch.testing.assert_close(mixture.mean, model.encoder(model.prior.pseudo_inputs()).mean)  # q(z_L | u_k)
    model.elbo(x).loss.backward()
    grad = model.prior.raw_pseudo_inputs.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and grad.abs().sum() > 0


@pytest.mark.parametrize("route", ROUTES)
def test_objectives_read_the_layers_and_dreg_refuses_more_than_one(route: str) -> None:
    model, x = small(ROUTES[route], seed=7), binary(5)
    torch.manual_seed(0)
    terms = model.terms(x, k=4)
    elbo = ELBO(k=4)(terms).bound
    free = FreeBits(0.0, k=4)(terms)
    torch.testing.assert_close(free.bound, elbo)
    per_dim = sum(layer.kl_per_dim().flatten(0, 1).mean(0).sum() for layer in terms.layers)
    torch.testing.assert_close(free.loss, -terms.log_likelihood.mean() + per_dim)
    floored = FreeBits(100.0, k=4)(terms)  # every dimension under the floor: the KL term is a constant
    torch.testing.assert_close(floored.loss, -terms.log_likelihood.mean() + 100.0 * (4 + 3 + 2))
    iw = IWAE(4)(terms)
    torch.testing.assert_close(iw.bound, torch.logsumexp(terms.log_weights(), 0) - math.log(4))
    assert torch.isfinite(STL(k=4)(terms).loss)
    with pytest.raises(ValueError, match="expected a model with one stochastic layer for DReG, got 3"):
        DReG(4)(terms)


# --------------------------------------------------------------------------- save and load


@pytest.mark.parametrize(
    "variant",
    [
        {"top_down": True},
        {"top_down": False},
        {"top_down": True, "num_pseudo_inputs": 4},
        {"top_down": True, "num_classes": 3},
        {"top_down": True, "flow": lambda d: [IAF(d, hidden=(5,), context_features=2 * d), Householder(d)]},
        {"top_down": False, "num_pseudo_inputs": 4, "flow": lambda d: [Planar(d, context_features=2 * d)]},
    ],
    ids=["top-down", "bottom-up", "vampprior", "conditional", "iaf", "bottom-up-planar-vampprior"],
)
def test_save_and_load_give_back_the_same_terms(variant: dict, tmp_path) -> None:
    torch.manual_seed(0)
    model = mlp_hierarchy((1, 3, 3), (4, 3, 2), likelihood=Bernoulli(), hidden=((8,), (6, 5), (4,)), **variant)
    path = genvae.save(model, tmp_path / "model.safetensors")
    loaded = genvae.load(path, trusted=TRUSTED)
    assert isinstance(loaded, HierarchicalVAE) and loaded.top_down == variant["top_down"]
    if "num_pseudo_inputs" in variant:
        assert loaded.prior.encoder is loaded.encoder  # still shared, not copied
    if "flow" in variant:
        assert [type(h) for h in loaded.encoder.heads] == [type(h) for h in model.encoder.heads]
    x = torch.rand(5, 1, 3, 3).bernoulli()
    y = torch.tensor([0, 1, 2, 1, 0]) if "num_classes" in variant else None
    model.eval()
    torch.manual_seed(3)
    a = model.terms(x, y, k=3)
    torch.manual_seed(3)
    b = loaded.terms(x, y, k=3)
    torch.testing.assert_close(a.log_weights(), b.log_weights(), rtol=0, atol=0)
    torch.testing.assert_close(a.kl(), b.kl(), rtol=0, atol=0)


# --------------------------------------------------------------------------- the builder


def linear_sizes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_the_builder_makes_the_iwae_papers_two_layer_net() -> None:
    model = mlp_hierarchy((1, 28, 28), (100, 50), likelihood=Bernoulli(), hidden=((100, 100), (50, 50)), top_down=False)
    up, heads = model.encoder.up, model.encoder.heads
    assert linear_sizes(up[0]) == [(784, 100), (100, 100)] and linear_sizes(heads[0]) == [(100, 200)]
    assert linear_sizes(up[1]) == [(100, 50), (50, 50)] and linear_sizes(heads[1]) == [(50, 100)]  # from z_1
    assert linear_sizes(model.down[0]) == [(50, 50), (50, 50)] and linear_sizes(model.priors[0]) == [(50, 200)]
    assert linear_sizes(model.decoder) == [(100, 100), (100, 100), (100, 784)]
    assert all(not isinstance(m, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 2 + 2 + 2 + 2
    assert model.latent_dim == 50 and isinstance(model.prior, StandardNormal) and not model.top_down


def test_the_builder_makes_a_top_down_hvae_with_a_vampprior() -> None:
    model = mlp_hierarchy((1, 28, 28), (40, 40), likelihood=Bernoulli(), hidden=300, num_pseudo_inputs=500)
    up, heads = model.encoder.up, model.encoder.heads
    assert linear_sizes(up[0]) == [(784, 300)] and linear_sizes(up[1]) == [(300, 300)]
    assert linear_sizes(heads[1]) == [(300, 80)]  # q(z_2 | x): x → 300 → 300 → z_2
    assert linear_sizes(heads[0]) == [(600, 300), (300, 80)]  # q(z_1 | x, z_2): h_1 ‖ t_1 → 300 → z_1
    assert linear_sizes(model.down[0]) == [(40, 300)] and linear_sizes(model.priors[0]) == [(300, 80)]
    assert model.prior.num_pseudo_inputs == 500 and model.prior.encoder is model.encoder and model.top_down


@pytest.mark.parametrize("blocks", [0, 1], ids=["conv", "resnet"])
def test_the_conv_builder_puts_convolutions_at_the_data_and_its_bounds_hold(blocks, tmp_path) -> None:
    """The first block and the decoder are convolutional, the layers above as in mlp_hierarchy; the
    model's IW bound is at least its ELBO, and save → load gives the same terms."""
    torch.manual_seed(0)
    model = conv_hierarchy(
        (1, 12, 12),
        (4, 3),
        likelihood=Bernoulli(),
        channels=(3, 5),
        blocks=blocks,
        hidden=((16,), (8,)),
        num_pseudo_inputs=6,
    ).double()
    first = model.encoder.up[0]
    assert isinstance(first, ConvBlock) and first.out_features == 16 and first.blocks == blocks
    assert isinstance(model.decoder, ResNetDecoder if blocks else ConvDecoder)
    assert model.decoder.channels == (5, 3) and model.decoder.hidden == 16
    assert linear_sizes(first.out) == [(5 * 3 * 3, 16)] and linear_sizes(model.encoder.up[1]) == [(16, 8)]
    assert model.prior.encoder is model.encoder and model.sample(3).shape == (3, 1, 12, 12)
    x = torch.rand(5, 1, 12, 12, dtype=torch.float64).bernoulli()
    with model.validate_args(False):
        torch.manual_seed(1)
        elbo = evaluate_elbo(model, x).loss
        iw = float(iw_nll(model, x, 200).mean())
    assert iw <= elbo + 0.5
    loaded = genvae.load(genvae.save(model, tmp_path / "conv.safetensors"))
    torch.manual_seed(2)
    expected = model.terms(x, k=3).log_weights()
    torch.manual_seed(2)
    torch.testing.assert_close(loaded.terms(x, k=3).log_weights(), expected, rtol=0, atol=0)


def test_the_conv_block_conditions_on_the_label() -> None:
    torch.manual_seed(0)
    block = ConvBlock((1, 8, 8), 6, channels=(4,), num_classes=3)
    x = torch.rand(2, 1, 8, 8)
    a, b = block(x, torch.tensor([0, 0])), block(x, torch.tensor([0, 2]))
    assert a.shape == (2, 6) and torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])


def test_the_conv_builder_refuses_what_it_cannot_build() -> None:
    with pytest.raises(ValueError, match=r"expected data_shape \(C, H, W\) for ConvBlock, got \(6,\)"):
        conv_hierarchy((6,), (4, 3), likelihood=Bernoulli())
    with pytest.raises(ValueError, match=r"expected one width for the first layer .* got hidden\[0\] = \(8, 4\)"):
        conv_hierarchy((1, 8, 8), (4, 3), likelihood=Bernoulli(), hidden=((8, 4), (4,)))
    with pytest.raises(ValueError, match="expected blocks to be an int >= 0, got -1"):
        conv_hierarchy((1, 8, 8), (4, 3), likelihood=Bernoulli(), blocks=-1)
    with pytest.raises(ValueError, match="expected at least one latent layer, got 0"):
        conv_hierarchy((1, 8, 8), (), likelihood=Bernoulli())


# --------------------------------------------------------------------------- bad input


def parts(dims=(4, 3), width=5, data=6):
    """Hand-built top-down parts for two layers, for the error tests."""
    up = [MLPBlock(data, width), MLPBlock(width, width)]
    heads = [GaussianHead(2 * width, dims[0]), GaussianHead(width, dims[1])]
    return up, heads, [MLPBlock(dims[1], width)], [GaussianHead(width, dims[0])]


def test_no_latent_layer_is_refused() -> None:
    with pytest.raises(ValueError, match="expected at least one latent layer, got 0"):
        LadderEncoder([], [])
    with pytest.raises(ValueError, match="expected at least one latent layer, got 0"):
        mlp_hierarchy((6,), (), likelihood=Bernoulli())


def test_latent_sizes_that_disagree_are_refused_at_construction() -> None:
    up, heads, down, priors = parts()
    encoder = LadderEncoder(up, heads)
    from_ladder(encoder, down, priors, MLPDecoder(4, (6,)), Bernoulli(), StandardNormal(3))  # sizes agree
    with pytest.raises(ValueError, match=r"expected prior_head.latent_dim to be 4 \(posterior.latent_dim\), got 5"):
        from_ladder(encoder, down, [GaussianHead(5, 5)], MLPDecoder(4, (6,)), Bernoulli(), StandardNormal(3))
    with pytest.raises(ValueError, match=r"expected down.in_features to be 3 \(posterior.latent_dim\), got 2"):
        from_ladder(encoder, [MLPBlock(2, 5)], priors, MLPDecoder(4, (6,)), Bernoulli(), StandardNormal(3))
    with pytest.raises(
        ValueError, match=r"expected cells\[0\].posterior.in_features to be 9 \(cells\[0\].up.out_features"
    ):
        from_ladder(
            encoder, [MLPBlock(3, 4)], [GaussianHead(4, 4)], MLPDecoder(4, (6,)), Bernoulli(), StandardNormal(3)
        )
    with pytest.raises(ValueError, match=r"expected prior.latent_dim to be 3 .*, got 4"):
        from_ladder(encoder, down, priors, MLPDecoder(4, (6,)), Bernoulli(), StandardNormal(4))
    with pytest.raises(
        ValueError, match=r"expected cells\[1\].up.in_features to be 5 \(cells\[0\].up.out_features\), got 7"
    ):
        Ladder(cells_of([MLPBlock(6, 5), MLPBlock(7, 5)], heads, down, priors))
    with pytest.raises(
        ValueError, match=r"expected cells\[1\].up.in_features to be 4 \(cells\[0\].posterior.latent_dim\)"
    ):
        Ladder(cells_of([MLPBlock(6, 5), MLPBlock(5, 5)], [GaussianHead(5, 4), GaussianHead(5, 3)], down, priors),
               top_down=False)  # fmt: skip
    with pytest.raises(ValueError, match="expected one head per block, got 2 blocks in up and 1 heads"):
        LadderEncoder(up, heads[:1])
    with pytest.raises(ValueError, match=r"expected L - 1 = 1 top-down blocks .* got 0 in down and 1 in conditionals"):
        from_ladder(encoder, [], priors, MLPDecoder(4, (6,)), Bernoulli(), StandardNormal(3))


def test_a_decoder_of_another_latent_size_is_refused() -> None:
    up, heads, down, priors = parts()
    with pytest.raises(ValueError, match=r"expected decoder.latent_dim to be 4 \(the size of z_1.*\), got 3"):
        from_ladder(LadderEncoder(up, heads), down, priors, MLPDecoder(3, (6,)), Bernoulli(), StandardNormal(3))


def test_parts_that_declare_no_sizes_are_checked_at_the_first_call() -> None:
    class Head(nn.Module):  # declares no latent_dim
        def __init__(self, latent_dim: int) -> None:
            super().__init__()
            self.net = nn.LazyLinear(2 * latent_dim)

        def forward(self, h: Tensor) -> Independent:
            return Independent(gaussian(self.net(h)), 1)

    up, heads, down, _ = parts()
    model = from_ladder(LadderEncoder(up, heads), down, [Head(2)], MLPDecoder(4, (6,)), Bernoulli(), StandardNormal(3))
    with pytest.raises(ValueError, match=r"expected p\(z_1 \| z_2\) and q\(z_1 \| \.\.\.\) over the same space, got"):
        model.terms(binary(3).float())

    class Prior(nn.Module):  # declares no latent_dim
        def forward(self, y: Tensor | None = None) -> Independent:
            return Independent(Normal(torch.zeros(5), torch.ones(5)), 1)

    up, heads, down, priors = parts()
    model = from_ladder(LadderEncoder(up, heads), down, priors, MLPDecoder(4, (6,)), Bernoulli(), Prior())
    with pytest.raises(
        ValueError,
        match=r"expected p\(z_2\) and q\(z_2 \| \.\.\.\) .* \(5,\) from prior and \(3,\) from cells\[1\].posterior",
    ):
        model.terms(binary(3).float())


def test_bad_builder_and_data_arguments_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"expected hidden with one tuple of widths per latent layer \(2\), got 3"):
        mlp_hierarchy((6,), (3, 2), likelihood=Bernoulli(), hidden=((4,), (4,), (4,)))
    with pytest.raises(ValueError, match="expected prior or num_pseudo_inputs, got both"):
        mlp_hierarchy((6,), (3, 2), likelihood=Bernoulli(), prior=StandardNormal(2), num_pseudo_inputs=3)
    with pytest.raises(ValueError, match="expected num_classes=None with num_pseudo_inputs"):
        mlp_hierarchy((6,), (3, 2), likelihood=Bernoulli(), num_classes=3, num_pseudo_inputs=3)
    model = mlp_hierarchy((6,), (3, 2), likelihood=Bernoulli(), hidden=4)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 6\), got \(2, 5\)"):
        model.terms(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="expected x in the support of Bernoulli"):
        model.terms(torch.full((2, 6), 2.0))
    with pytest.raises(ValueError, match="expected k to be a positive int, got 0"):
        model.terms(torch.zeros(2, 6), k=0)
    with pytest.raises(TypeError, match="expected encoder to be a LadderEncoder"):
        from_ladder(MLPEncoder((6,), 2), [], [], MLPDecoder(2, (6,)), Bernoulli(), StandardNormal(2))
