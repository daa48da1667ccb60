"""Training loop: learning, exact resume, crash safety, NaN guard, hot-loop budget, DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import OBJECTIVES, PoisonedAdam

from genvae import ELBO, IWAE, VAE, DReG, FreeBits, load
from genvae.data import BatchLoader, synthetic_digits
from genvae.likelihoods import Bernoulli
from genvae.metrics import evaluate_iw_nll
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.schedules import Cyclical, Epochs, LinearWarmup, in_steps
from genvae.train import fit

SHAPE = (1, 28, 28)


def small_vae(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(MLPEncoder(SHAPE, 4, hidden=(32,)), MLPDecoder(4, SHAPE, hidden=(32,)), Bernoulli(), StandardNormal(4))


@pytest.fixture(scope="module")
def data():
    return synthetic_digits(384, seed=0), synthetic_digits(128, seed=1)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fit_lowers_test_loss_and_writes_history(data, tmp_path):
    train, test = data
    model = small_vae()
    result = fit(model, train, test=test, epochs=4, batch_size=32, lr=3e-3, device="cpu", out=tmp_path, progress=False)
    losses = [h.test_loss for h in result.history]
    assert losses[-1] < losses[0] - 20, losses  # measured: ~50 nats lower after 4 epochs
    records = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert set(records[0]) == {
        "epoch",
        "train_loss",
        "test_loss",
        "test_kl",
        "test_log_likelihood",
        "seconds",
        "images_per_second",
        "metrics",
    }
    for r in records:  # −ELBO = KL − E log p(x|z), per image
        assert r["test_loss"] == pytest.approx(r["test_kl"] - r["test_log_likelihood"], rel=1e-6)
    reloaded = load(tmp_path)
    for k, v in model.state_dict().items():
        assert torch.equal(v.cpu(), reloaded.state_dict()[k])


def test_resume_is_bit_identical(data, tmp_path):
    train, test = data
    straight = small_vae()
    fit(straight, train, test=test, epochs=4, batch_size=32, device="cpu", out=tmp_path / "a", progress=False)
    first = small_vae()
    fit(first, train, test=test, epochs=2, batch_size=32, device="cpu", out=tmp_path / "b", progress=False)
    resumed = small_vae(seed=123)  # different initial weights: everything must come from the checkpoint
    result = fit(
        resumed,
        train,
        test=test,
        epochs=4,
        batch_size=32,
        device="cpu",
        out=tmp_path / "b",
        resume=True,
        progress=False,
    )
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]
    for k, v in weights(straight).items():
        assert torch.equal(v, resumed.state_dict()[k]), k


class _CrashAfter(torch.optim.Adam):
    """Adam that raises on its ``limit``-th step, to simulate a crash in the middle of an epoch."""

    def __init__(self, params, limit: int) -> None:
        super().__init__(params, lr=1e-3)
        self.calls, self.limit = 0, limit

    def step(self, closure=None):  # type: ignore[override]
        self.calls += 1
        if self.calls == self.limit:
            raise KeyboardInterrupt("simulated crash")
        return super().step(closure)


def test_crash_mid_epoch_keeps_checkpoint_and_resume_matches(data, tmp_path):
    train, _ = data
    never = lambda p: _CrashAfter(p, limit=-1)  # noqa: E731 - the same optimizer class in every run
    straight = small_vae()
    fit(straight, train, epochs=3, batch_size=32, device="cpu", out=tmp_path / "a", progress=False, optimizer=never)
    crashing = small_vae()
    steps_per_epoch = len(BatchLoader(train, 32))
    with pytest.raises(KeyboardInterrupt):
        fit(
            crashing,
            train,
            epochs=3,
            batch_size=32,
            device="cpu",
            out=tmp_path / "b",
            progress=False,
            optimizer=lambda p: _CrashAfter(p, limit=steps_per_epoch + 5),
        )  # mid epoch 2
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.endswith(".tmp")]
    resumed = small_vae(seed=7)
    fit(
        resumed,
        train,
        epochs=3,
        batch_size=32,
        device="cpu",
        out=tmp_path / "b",
        resume=True,
        progress=False,
        optimizer=never,
    )
    for k, v in weights(straight).items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(data, tmp_path):
    train, _ = data
    steps_per_epoch = len(BatchLoader(train, 32))
    with pytest.raises(FloatingPointError, match=r"epoch 2, step \d+"):
        fit(
            small_vae(),
            train,
            epochs=3,
            batch_size=32,
            device="cpu",
            out=tmp_path,
            progress=False,
            log_every=2,
            optimizer=lambda p: PoisonedAdam(p, at=steps_per_epoch + 3),
        )
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_existing_run_needs_resume(data, tmp_path):
    train, _ = data
    fit(small_vae(), train, epochs=1, batch_size=64, device="cpu", out=tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(small_vae(), train, epochs=1, batch_size=64, device="cpu", out=tmp_path, progress=False)


@pytest.mark.parametrize("compile", [False, True])
def test_hot_loop_budget(data, monkeypatch, compile):
    """An epoch gathers whole batches (never one example at a time) and reads the loss back to the
    host at most once per logging interval, eagerly and with the whole step compiled (counted after
    the compilation, whose tracing is not part of the loop)."""
    train, _ = data
    batch_size, log_every = 16, 6
    steps = len(BatchLoader(train, batch_size))
    counts = {"getitem": 0, "host": 0}
    original_getitem = torch.Tensor.__getitem__

    def counting_getitem(self, idx):
        counts["getitem"] += 1
        return original_getitem(self, idx)

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, **k):
            counts["host"] += 1
            return original(self, *a, **k)

        return wrapper

    model = small_vae()
    model.validating = False
    loader_reads = []
    monkeypatch.setattr(torch.Tensor, "__getitem__", counting_getitem)
    for name in ("item", "__float__", "__bool__", "tolist", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    # The loader alone: one gather per batch at most (plus a constant).
    counts["getitem"] = 0
    for _ in BatchLoader(train, batch_size, generator=torch.Generator().manual_seed(0)):
        pass
    loader_reads.append(counts["getitem"])
    counts["host"] = 0
    if compile:  # count the second epoch: the first one compiles the step
        counts_after_first = {}

        def snapshot(stats, model):
            if stats.epoch == 1:
                counts_after_first.update(counts)

        fit(
            model,
            train,
            epochs=2,
            batch_size=batch_size,
            device="cpu",
            progress=False,
            log_every=log_every,
            compile=True,
            callbacks=[snapshot],
        )
        counts["host"] -= counts_after_first["host"]
    else:
        fit(model, train, epochs=1, batch_size=batch_size, device="cpu", progress=False, log_every=log_every)
    monkeypatch.undo()
    assert loader_reads[0] <= 2 * steps + 2, (loader_reads, steps)
    assert counts["host"] <= steps // log_every + 1 + 8, (counts, steps)


def free_port() -> int:
    """A TCP port nothing listens on now (tests may run in parallel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["elbo", "dreg"])
def test_ddp_two_processes_end_with_identical_weights(tmp_path, objective):
    script = Path(__file__).with_name("ddp_worker.py")
    env = dict(os.environ, GENVAE_BACKEND="gloo", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(script),
            str(tmp_path),
            objective,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert any(not torch.equal(w0[k], init[k]) for k in w0)  # they trained
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_cuda_graph_needs_a_cuda_device(data):
    train, _ = data
    with pytest.raises(ValueError, match="cuda_graph=True on a single CUDA device, got device 'cpu'"):
        fit(small_vae(), train, epochs=1, device="cpu", cuda_graph=True, progress=False)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize(
    "compile,objective", [(False, "elbo-warmup"), (True, "elbo-warmup")] + [(False, o) for o in OBJECTIVES]
)
def test_cuda_graph_trains_like_eager(data, compile, objective):
    """The replayed step is the eager step: same data, same optimizer, only the noise draws differ.
    With 384 images at batch 32 (12 full batches an epoch) the graph replays 9 of the first epoch's
    steps and all later ones; the test losses after 6 epochs agree to within the noise of z, for
    every objective (DReG's gradient hook and the β schedule's step counter are captured too)."""
    train, test = data
    runs = {}
    for graph in (False, True):
        model = small_vae()
        result = fit(
            model,
            train,
            test=test,
            epochs=6,
            batch_size=32,
            lr=3e-3,
            device="cuda",
            cuda_graph=graph,
            compile=compile and graph,
            objective=OBJECTIVES[objective](),
            progress=False,
        )
        runs[graph] = [h.test_loss for h in result.history]
    eager, graphed = runs[False], runs[True]
    assert graphed[-1] < graphed[0] - 20, graphed  # it learns
    assert abs(graphed[-1] - eager[-1]) < 0.05 * eager[-1], (eager, graphed)


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_sees_scheduler_updates_and_the_last_partial_batch(data):
    """lr = 1e-3, 0, 1e-3 in the three epochs: the replayed graph must follow the scheduler. With
    384 % 100 = 84 images in the last batch, that batch runs eagerly; every image is seen once an
    epoch."""
    train, _ = data
    snapshots = []
    result = fit(
        small_vae(),
        train,
        epochs=3,
        batch_size=100,
        device="cuda",
        cuda_graph=True,
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.0 if epoch == 1 else 1.0),
        callbacks=[lambda stats, model: snapshots.append(weights(model))],
        progress=False,
    )
    assert all(h.images_per_second * h.seconds == pytest.approx(len(train), rel=1e-6) for h in result.history)
    for k in snapshots[0]:  # epoch 2, lr = 0: replays and the eager last batch leave the weights
        assert torch.equal(snapshots[0][k], snapshots[1][k]), k
    assert any(not torch.equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[1])  # epoch 3 trains


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_refuses_a_non_capturable_optimizer(data):
    train, _ = data
    with pytest.raises(ValueError, match="capturable=True"):
        fit(
            small_vae(),
            train,
            epochs=1,
            device="cuda",
            cuda_graph=True,
            optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
            progress=False,
        )


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_resumes_and_clips(data, tmp_path):
    """A graphed run with gradient clipping checkpoints and resumes: Adam's device-side step counts
    come back and training goes on."""
    train, test = data
    options = dict(test=test, batch_size=32, device="cuda", cuda_graph=True, grad_clip=1.0, progress=False)
    fit(small_vae(), train, epochs=2, out=tmp_path, **options)
    resumed = small_vae(seed=7)
    result = fit(resumed, train, epochs=4, out=tmp_path, resume=True, **options)
    losses = [h.test_loss for h in result.history]
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]
    assert losses[3] < losses[1], losses  # it kept training after the resume
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["optimizer"]["state"]
    assert all(int(s["step"]) == 4 * (len(train) // 32) for s in state.values())


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_trains_a_cvae(data):
    """Labels go through the graph's static label buffer: a CVAE trains as it does eagerly."""
    from genvae import CVAE

    train, test = data
    torch.manual_seed(0)
    model = CVAE(
        MLPEncoder(SHAPE, 4, hidden=(32,), num_classes=train.num_classes),
        MLPDecoder(4, SHAPE, hidden=(32,), num_classes=train.num_classes),
        Bernoulli(),
        StandardNormal(4),
    )
    result = fit(
        model, train, test=test, epochs=4, batch_size=32, lr=3e-3, device="cuda", cuda_graph=True, progress=False
    )
    losses = [h.test_loss for h in result.history]
    assert losses[-1] < losses[0] - 20, losses


@pytest.fixture
def aten_random():
    """Compiled code draws its noise with torch's own generator, so it can match eager."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_engine_trains_every_objective_as_eager(data, aten_random, objective, request):
    """Eager, the compiled loss (an optimizer factory keeps fit off the whole-step path) and the
    compiled whole CPU step train the same model on the same draws: the losses of every epoch agree
    to 1e-4 relative (float32 rounding in differently fused kernels), and the model learned. DReG
    (a gradient hook under dynamo) goes through inductor; the others compile without code generation."""
    if objective != "dreg":
        request.getfixturevalue("light_compile")
    train, test = data
    runs = {}
    for engine, options in {
        "eager": {"compile": False, "amp": False},
        "compiled loss": {"compile": True, "amp": False, "optimizer": lambda p: torch.optim.Adam(p, lr=3e-3)},
        "compiled step": {"compile": True, "amp": False, "lr": 3e-3},
    }.items():
        options = {"lr": 3e-3, **options} if "optimizer" not in options else options
        model = small_vae()
        history = fit(
            model,
            train,
            test=test,
            epochs=2,
            batch_size=32,
            device="cpu",
            progress=False,
            objective=OBJECTIVES[objective](),
            **options,
        ).history
        runs[engine] = [h.train_loss for h in history] + [h.test_loss for h in history]
    for engine in ("compiled loss", "compiled step"):
        assert runs[engine] == pytest.approx(runs["eager"], rel=1e-4), (engine, runs)
    assert runs["eager"][1] < runs["eager"][0]


def test_a_resumed_run_continues_the_schedule_bit_for_bit(data, tmp_path):
    """The step counter that drives β is in the checkpoint: a run cut after epoch 1 and resumed
    ends with the uninterrupted run's weights, mid-warm-up and mid-cycle."""
    train, _ = data
    steps = -(-len(train) // 32)
    for name, make in {
        "warmup": lambda: ELBO(LinearWarmup(1.0, steps=2 * steps)),
        "cyclical": lambda: IWAE(3, beta=Cyclical(1.0, period=steps + 5)),
    }.items():
        opts = dict(batch_size=32, device="cpu", progress=False)
        straight = small_vae()
        fit(straight, train, epochs=2, objective=make(), out=tmp_path / name / "a", **opts)
        cut = small_vae()
        fit(cut, train, epochs=1, objective=make(), out=tmp_path / name / "b", **opts)
        resumed = small_vae(seed=9)
        fit(resumed, train, epochs=2, objective=make(), out=tmp_path / name / "b", resume=True, **opts)
        for (key, p), q in zip(straight.named_parameters(), resumed.parameters()):
            assert torch.equal(p, q), (name, key)
        state = torch.load(tmp_path / name / "b" / "checkpoint.pt", weights_only=True)
        assert state["step"] == 2 * steps


def test_schedule_lengths_in_epochs_become_the_steps_of_the_runs_epochs(data, tmp_path):
    """ELBO(LinearWarmup(β, steps=Epochs(2))) trains exactly as LinearWarmup(β, 2 epochs of steps),
    and a cyclical IWAE with its period in epochs as the one with the period in steps; fit.json
    records the objective in steps. A schedule left in epochs gives no value outside fit."""
    train, _ = data
    steps = -(-len(train) // 32)
    opts = dict(epochs=1, batch_size=32, device="cpu", progress=False)
    for in_epochs, counted in [
        (ELBO(LinearWarmup(0.5, steps=Epochs(2))), ELBO(LinearWarmup(0.5, steps=2 * steps))),
        (IWAE(2, beta=Cyclical(1.0, period=Epochs(2))), IWAE(2, beta=Cyclical(1.0, period=2 * steps))),
    ]:
        a, b = small_vae(), small_vae()
        fit(a, train, objective=in_epochs, out=tmp_path / type(in_epochs).__name__, **opts)
        fit(b, train, objective=counted, **opts)
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)
        record = json.loads((tmp_path / type(in_epochs).__name__ / "fit.json").read_text())
        assert record["objective"] == repr(counted)
    with pytest.raises(ValueError, match=r"length in optimizer steps; fit converts Epochs"):
        LinearWarmup(1.0, steps=Epochs(3)).value(1)


def test_in_steps_converts_every_length_in_epochs_and_leaves_the_rest_alone():
    """At any depth of dataclasses; what holds no Epochs comes back as the same object."""
    nested = FreeBits(0.1, beta=Cyclical(2.0, period=Epochs(3), ratio=0.25), k=2)
    converted = in_steps(nested, 7)
    assert converted == FreeBits(0.1, beta=Cyclical(2.0, period=21, ratio=0.25), k=2)
    assert converted.schedule.value(6) == 2.0 * 5 / (21 * 0.25)
    for unchanged in (DReG(3), ELBO(LinearWarmup(1.0, steps=4)), LinearWarmup(1.0, steps=4), 0.5):
        assert in_steps(unchanged, 7) is unchanged
    assert in_steps(Epochs(2), 5) == 10
    with pytest.raises(ValueError, match="Epochs.*positive int, got 0"):
        Epochs(0)
    with pytest.raises(ValueError, match="steps_per_epoch to be a positive int"):
        in_steps(nested, 0)


def test_metrics_are_recorded_per_epoch_and_do_not_change_training(data, tmp_path):
    train, test = data
    plain, measured = small_vae(), small_vae()
    opts = dict(epochs=2, batch_size=32, device="cpu", progress=False)
    fit(plain, train, **opts)
    result = fit(
        measured,
        train,
        out=tmp_path,
        metrics={"iw_nll_k10": lambda m: evaluate_iw_nll(m, test, 10).nll, "training": lambda m: float(m.training)},
        **opts,
    )
    for p, q in zip(plain.parameters(), measured.parameters()):
        assert torch.equal(p, q)  # evaluation draws do not touch the training stream
    records = json.loads((tmp_path / "history.json").read_text())
    for stats, record in zip(result.history, records):
        assert set(stats.metrics) == {"iw_nll_k10", "training"} and stats.metrics["training"] == 0.0
        assert record["metrics"] == stats.metrics
    assert result.history[1].metrics["iw_nll_k10"] < result.history[0].metrics["iw_nll_k10"]
    with pytest.raises(TypeError, match="metrics as"):
        fit(small_vae(), train, metrics={"x": 3}, **opts)


@pytest.mark.slow
def test_compiled_fits_keep_their_own_cache_and_never_reset_the_process(data, monkeypatch):
    """With a recompile limit of 1, a second fit of another architecture still compiles its loss
    (dynamo would otherwise run it eagerly, silently), and no fit clears the process's caches."""
    import torch._dynamo.config as dynamo_config
    from torch._dynamo.utils import counters

    train, _ = data
    # config.patch restores the limit as the config module keeps it (monkeypatch's restore hides it)
    monkeypatch.setattr(torch.compiler, "reset", lambda: pytest.fail("fit reset torch.compile's caches"))
    graphs = []
    with dynamo_config.patch(recompile_limit=1):
        for hidden in (16, 24):
            torch.manual_seed(0)
            model = VAE(
                MLPEncoder(SHAPE, 4, hidden=(hidden,)),
                MLPDecoder(4, SHAPE, hidden=(hidden,)),
                Bernoulli(),
                StandardNormal(4),
            )
            fit(
                model,
                train.subset(64),
                epochs=1,
                batch_size=32,
                device="cpu",
                compile=True,
                progress=False,
                optimizer=lambda p: torch.optim.Adam(p),
            )
            graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[1] > graphs[0]


class _Opaque(torch.nn.Module):
    """An encoder whose constructor argument is not kept as an attribute: it cannot be described."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2 * latent_dim))

    def forward(self, x, y=None):
        loc, log_scale = self.net(x).chunk(2, dim=-1)
        return torch.distributions.Independent(torch.distributions.Normal(loc, log_scale.exp()), 1)


def test_fit_refuses_a_model_it_could_not_save_before_the_first_step(data, tmp_path):
    model = VAE(_Opaque(4), MLPDecoder(4, SHAPE, hidden=(32,)), Bernoulli(), StandardNormal(4))
    epochs_run = []
    with pytest.raises(TypeError, match=r"cannot be described.*latent_dim.*self\.latent_dim = latent_dim"):
        fit(model, data[0], epochs=1, device="cpu", out=tmp_path / "run", callbacks=[epochs_run.append])
    assert epochs_run == [] and not (tmp_path / "run").exists()
    fit(model, data[0], epochs=1, device="cpu", progress=False)  # without a run folder it trains


def test_a_float64_model_trains_in_float64(data):
    model = small_vae().double()
    result = fit(model, data[0], test=data[1], epochs=2, batch_size=64, device="cpu", progress=False)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert result.history[-1].test_loss < result.history[0].test_loss
    with pytest.raises(ValueError, match=r"model's dtype torch\.float64, got torch\.float32"):
        model.elbo(data[1].float_images()[:4])


class _Digits(torch.utils.data.Dataset):
    """A map-style data set of (uint8 image, int label) items, as a user's or torchvision's."""

    def __init__(self, data) -> None:
        self.images, self.labels = data.images, data.labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def test_any_data_trains_and_a_streamed_set_trains_exactly_as_a_held_one(data, tmp_path):
    train, test = data
    options = {"epochs": 2, "batch_size": 64, "device": "cpu", "progress": False}
    held = small_vae()
    fit(held, train, test=test, **options)
    for kind, source, extra in [
        ("pair", (train.images, train.labels), {}),
        ("tensor", train.images, {}),
        ("dataset", _Digits(train), {}),
        ("streamed", _Digits(train), {"in_memory": False, "num_workers": 0}),
        ("streamed with a worker", _Digits(train), {"in_memory": False, "num_workers": 1}),
    ]:
        model = small_vae()
        fit(model, source, test=_Digits(test) if "streamed" in kind else test, **options, **extra)
        for k, v in held.state_dict().items():
            assert torch.equal(v, model.state_dict()[k]), (kind, k)


def test_a_streamed_run_resumes_bit_for_bit(data, tmp_path):
    train, _ = data
    options = {"batch_size": 64, "device": "cpu", "progress": False, "in_memory": False, "num_workers": 0}
    straight = small_vae()
    fit(straight, _Digits(train), epochs=3, **options)
    fit(small_vae(), _Digits(train), epochs=1, out=tmp_path, **options)
    resumed = small_vae(seed=5)
    fit(resumed, _Digits(train), epochs=3, out=tmp_path, resume=True, **options)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_vectors_in_float64_with_a_gaussian_likelihood(tmp_path):
    from genvae.likelihoods import Gaussian

    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 10, generator=g, dtype=torch.float64)
    x = torch.randn(512, 2, generator=g, dtype=torch.float64) @ w + 0.1 * torch.randn(
        512, 10, generator=g, dtype=torch.float64
    )
    model = VAE(
        MLPEncoder((10,), 2, hidden=(16,)), MLPDecoder(2, (10,), hidden=(16,)), Gaussian(0.1), StandardNormal(2)
    )
    model.double()
    result = fit(
        model, x[:448], test=x[448:], epochs=5, batch_size=32, lr=3e-3, device="cpu", out=tmp_path, progress=False
    )
    assert result.history[-1].test_loss < result.history[0].test_loss
    assert load(tmp_path).encoder.net[0].weight.dtype == torch.float64


def test_a_plateau_scheduler_gets_the_test_loss_or_else_the_train_loss(data):
    train, test = data
    seen: list[float] = []

    class Spy(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics, epoch=None):  # type: ignore[override]
            seen.append(float(metrics))
            super().step(metrics)

    options = {"epochs": 2, "batch_size": 64, "device": "cpu", "progress": False, "scheduler": Spy}
    result = fit(small_vae(), train, test=test, **options)
    assert seen == [h.test_loss for h in result.history]
    seen.clear()
    result = fit(small_vae(), train, **options)
    assert seen == [h.train_loss for h in result.history]


def test_a_conditional_model_needs_labels(data):
    from genvae import CVAE
    from genvae.priors import ConditionalNormal

    cvae = CVAE(
        MLPEncoder(SHAPE, 4, hidden=(16,), num_classes=10),
        MLPDecoder(4, SHAPE, hidden=(16,), num_classes=10),
        Bernoulli(),
        ConditionalNormal(10, 4),
    )
    with pytest.raises(ValueError, match="labelled train data for a conditional model"):
        fit(cvae, data[0].images, epochs=1, device="cpu", progress=False)
