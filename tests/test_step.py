"""The whole training step compiled as one program (fit's CPU path with compile=True)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._inductor.config as inductor_config
from conftest import OBJECTIVES
from torch.distributions import Independent, Normal

from genvae import CVAE, ELBO, VAE
from genvae.data import synthetic_digits
from genvae.engines import Batch
from genvae.engines.whole_step import CompiledAdamStep, compiles_whole
from genvae.likelihoods import Bernoulli
from genvae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from genvae.priors import ConditionalNormal, StandardNormal, VampPrior
from genvae.train import fit

SHAPE = (1, 28, 28)


def small_vae(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(MLPEncoder(SHAPE, 4, hidden=(32,)), MLPDecoder(4, SHAPE, hidden=(32,)), Bernoulli(), StandardNormal(4))


def eager_step(model, opt, objective, count, running, grad_clip):
    """The reference: the objective on the model's terms, autograd and torch.optim.Adam's own step."""

    def step(batch):
        x, y = batch
        count.add_(1)
        loss = objective(model.terms(x, y, k=objective.k), count).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        running.add_(loss.detach())

    return step


@pytest.fixture
def aten_random():
    """Compiled code draws its noise with torch's own generator, so it can match eager bit for bit."""
    torch.compiler.reset()
    with inductor_config.patch(fallback_random=True):
        yield
    torch.compiler.reset()


@pytest.fixture
def float64():
    """Float64 throughout, Adam's step counter included (its bias corrections are computed from it)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize(
    "kind,objective", [(kind, "elbo-warmup") for kind in ("cvae", "conv")] + [("mlp", o) for o in OBJECTIVES]
)
def test_compiled_step_matches_torch_adam(aten_random, float64, kind, objective, request):
    """In float64 the only differences are rounding: weights, Adam's state and the summed loss
    agree with autograd + torch.optim.Adam over steps with weight decay, clipping that bites, a
    learning rate, betas, ε and weight decay changed between steps and a last batch of another
    shape, for every objective (β schedules read the step counter inside the program). The MLP
    with the warm-up ELBO goes through inductor; the others run the traced program as traced."""
    if (kind, objective) != ("mlp", "elbo-warmup"):
        request.getfixturevalue("light_compile")
    torch.manual_seed(0)
    conditional = kind == "cvae"
    if kind == "cvae":
        ref = CVAE(
            MLPEncoder(SHAPE, 4, hidden=(32,), num_classes=10),
            MLPDecoder(4, SHAPE, hidden=(32,), num_classes=10),
            Bernoulli(),
            ConditionalNormal(10, 4),
        )
    elif kind == "conv":
        ref = VAE(
            ConvEncoder(SHAPE, 4, channels=(4, 8), hidden=16),
            ConvDecoder(4, SHAPE, channels=(8, 4), hidden=16),
            Bernoulli(),
            StandardNormal(4),
        )
    else:
        ref = small_vae()
    ref.validating = False
    new = copy.deepcopy(ref)
    kw = dict(lr=3e-3, weight_decay=0.01)
    opt_ref, opt_new = torch.optim.Adam(ref.parameters(), **kw), torch.optim.Adam(new.parameters(), **kw)
    obj = OBJECTIVES[objective]()
    count_ref, count_new = torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)
    run_ref, run_new = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    clip = 5.0
    step_ref = eager_step(ref, opt_ref, obj, count_ref, run_ref, clip)
    step_new = CompiledAdamStep(
        eager_step(new, opt_new, obj, count_new, run_new, clip), new, obj, opt_new, count_new, run_new, grad_clip=clip
    )
    data = synthetic_digits(96, seed=3)
    x, y = data.float_images().double(), data.labels
    for i, (a, b) in enumerate([(0, 32), (32, 64), (64, 96), (0, 32), (32, 48)]):
        for opt in (opt_ref, opt_new):
            if i == 2:
                opt.param_groups[0]["lr"] = 1e-3
            if i == 3:  # as OneCycleLR moves β1; ε and weight decay as a user might
                opt.param_groups[0].update(betas=(0.85, 0.99), eps=1e-6, weight_decay=0.02)
        xb, yb = x[a:b], (y[a:b] if conditional else None)
        torch.manual_seed(100 + i)
        step_ref(Batch(xb, yb))
        torch.manual_seed(100 + i)
        step_new(Batch(xb, yb))
    grads = [p.grad for p in ref.parameters() if p.grad is not None]
    # clip_grad_norm_ rescaled the last step's gradients to norm `clip`: the clipping bit
    assert float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) == pytest.approx(clip, rel=1e-6)
    torch.testing.assert_close(run_new, run_ref, rtol=1e-10, atol=0)
    assert step_new.compiled is not None and int(count_new) == int(count_ref) == 5
    for (name, p), q in zip(ref.named_parameters(), new.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12, msg=name)
    for p, q in zip(ref.parameters(), new.parameters()):
        s_ref, s_new = opt_ref.state[p], opt_new.state[q]
        assert float(s_new["step"]) == float(s_ref["step"]) == 5
        torch.testing.assert_close(s_new["exp_avg_sq"], s_ref["exp_avg_sq"], rtol=1e-9, atol=1e-15)


class BatchNormEncoder(torch.nn.Module):
    """An encoder with batch norm, whose running statistics change in every training step."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(784, 32),
            torch.nn.BatchNorm1d(32),
            torch.nn.ReLU(),
            torch.nn.Linear(32, 2 * latent_dim),
        )

    def forward(self, x, y=None):
        loc, log_scale = self.net(x).chunk(2, dim=-1)  # (B, D) each
        return Independent(Normal(loc, log_scale.exp()), 1)


def twin_steps(encoder: torch.nn.Module):
    """A VAE on ``encoder`` and its copy, stepped by autograd + torch.optim.Adam and by the compiled
    step: ``(ref, new, step_ref, step_new, run_ref, run_new)``."""
    ref = VAE(encoder, MLPDecoder(4, SHAPE, hidden=(32,)), Bernoulli(), StandardNormal(4))
    ref.validating = False
    new = copy.deepcopy(ref)
    opt_ref, opt_new = torch.optim.Adam(ref.parameters()), torch.optim.Adam(new.parameters())
    run_ref, run_new = torch.zeros(()), torch.zeros(())
    counts = torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)
    step_ref = eager_step(ref, opt_ref, ELBO(), counts[0], run_ref, None)
    step_new = CompiledAdamStep(
        eager_step(new, opt_new, ELBO(), counts[1], run_new, None), new, ELBO(), opt_new, counts[1], run_new
    )
    return ref, new, step_ref, step_new, run_ref, run_new


def step_both(step_ref, step_new, batches) -> None:
    """One step of each on every batch, with the same noise."""
    for i, xb in enumerate(batches):
        torch.manual_seed(i)
        step_ref(Batch(xb))
        torch.manual_seed(i)
        step_new(Batch(xb))


def test_compiled_step_updates_buffers_like_eager(aten_random, float64):
    """Buffers are updated inside the compiled step as eagerly (batch norm's running statistics and
    batch count), and tracing the step leaves them untouched."""
    torch.manual_seed(0)
    ref, new, step_ref, step_new, _, _ = twin_steps(BatchNormEncoder(4))
    x = synthetic_digits(64, seed=4).float_images().double()
    step_both(step_ref, step_new, [x[a:b] for a, b in [(0, 16), (16, 32), (32, 48), (48, 60)]])
    assert int(new.encoder.net[2].num_batches_tracked) == 4
    # Gradients near Adam's ε (1e-8) turn a rounding difference of 1e-16 into one of about 1e-11 in
    # the update; float32 rounding would show as 1e-4 here.
    for (name, b_ref), b_new in zip(ref.named_buffers(), new.buffers()):
        torch.testing.assert_close(b_new, b_ref, rtol=1e-7, atol=1e-9, msg=name)
    for (name, p), q in zip(ref.named_parameters(), new.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-7, atol=1e-9, msg=name)


class HostReadingEncoder(torch.nn.Module):
    """An MLP encoder that checks its input's range on the host, which tracing cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = MLPEncoder(SHAPE, 4, hidden=(32,))

    def forward(self, x, y=None):
        if float(x.amax()) > 1:
            raise ValueError("expected pixels in [0, 1]")
        return self.inner(x, y)


def test_untraceable_model_warns_and_trains_eagerly(float64):
    """A forward pass that reads tensor values on the host cannot become one program: the step says
    so once and runs the eager step, which trains exactly as without compilation."""
    torch.manual_seed(0)
    ref, new, step_ref, step_new, run_ref, run_new = twin_steps(HostReadingEncoder())
    x = synthetic_digits(48, seed=5).float_images().double()
    with pytest.warns(UserWarning, match="reads tensor values on the host") as caught:
        step_both(step_ref, step_new, x.split(16))
    assert len(caught) == 1
    assert step_new.compiled is None
    for p, q in zip(ref.parameters(), new.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(run_new, run_ref)


def test_shared_parameters_compile_the_loss_alone():
    """A VampPrior reuses the encoder, which the gradient transform cannot compile: the compiled step
    refuses it with a clear error, and fit(compile=True) trains it with the loss compiled."""
    torch.manual_seed(0)
    encoder = MLPEncoder(SHAPE, 4, hidden=(32,))
    model = VAE(encoder, MLPDecoder(4, SHAPE, hidden=(32,)), Bernoulli(), VampPrior(encoder, 8, SHAPE))
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="share no parameters"):
        CompiledAdamStep(lambda batch: None, model, ELBO(), opt, torch.zeros((), dtype=torch.int64), torch.zeros(()))
    train = synthetic_digits(128, seed=0)
    history = fit(model, train, test=train, epochs=2, batch_size=32, device="cpu", compile=True, progress=False).history
    assert history[1].test_loss < history[0].test_loss


def test_which_models_compile_whole():
    """Models compile their whole step, but for shared parameters: the loss alone."""
    encoder = MLPEncoder(SHAPE, 4, hidden=(32,))
    assert compiles_whole(small_vae())
    assert compiles_whole(VAE(ConvEncoder(SHAPE, 4), ConvDecoder(4, SHAPE), Bernoulli(), StandardNormal(4)))
    assert not compiles_whole(VAE(encoder, MLPDecoder(4, SHAPE), Bernoulli(), VampPrior(encoder, 8, SHAPE)))


def test_compiled_step_refuses_other_optimizers():
    model = small_vae()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="expected a torch.optim.Adam .* got SGD"):
        CompiledAdamStep(lambda batch: None, model, ELBO(), sgd, torch.zeros((), dtype=torch.int64), torch.zeros(()))
    for option in ("amsgrad", "decoupled_weight_decay"):  # other update rules
        adam = torch.optim.Adam(model.parameters(), **{option: True})
        with pytest.raises(ValueError, match=f"'{option}': True"):
            CompiledAdamStep(
                lambda batch: None, model, ELBO(), adam, torch.zeros((), dtype=torch.int64), torch.zeros(())
            )


def test_fit_compile_resumes_bit_identically_and_checkpoints_adam_state(tmp_path):
    """The compiled step keeps its state in torch.optim.Adam's: a run cut in two and resumed ends
    bit for bit where the uninterrupted one does, and an eager Adam can load the checkpoint."""
    train, test = synthetic_digits(200, seed=0), synthetic_digits(64, seed=1)
    opts = dict(test=test, batch_size=32, device="cpu", compile=True, progress=False)
    straight = small_vae()
    fit(straight, train, epochs=2, out=tmp_path / "a", **opts)
    cut = small_vae()
    fit(cut, train, epochs=1, out=tmp_path / "b", **opts)
    resumed = small_vae(seed=7)
    history = fit(resumed, train, epochs=2, out=tmp_path / "b", resume=True, **opts).history
    assert history[-1].test_loss < history[0].test_loss
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["optimizer"]
    steps = -(-200 // 32) * 2
    assert all(float(s["step"]) == steps for s in state["state"].values())
    torch.optim.Adam(small_vae().parameters()).load_state_dict(state)
