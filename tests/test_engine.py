"""The engine a fit runs: ``"auto"`` resolved from the device, the model and the planned steps."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from genvae import ELBO, VAE
from genvae.cli import main
from genvae.engines import (
    COMPILE_MIN_STEPS,
    GRAPH_MIN_STEPS,
    Batch,
    Engine,
    bf16_matrix_units,
    choice,
    choose_engine,
    make_step,
    native_bf16,
    objective_loss,
)
from genvae.engines.cuda_graph import GraphedStep
from genvae.engines.whole_step import CompiledAdamStep
from genvae.likelihoods import Bernoulli
from genvae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal, VampPrior
from genvae.train import fit

SHAPE = (1, 8, 8)


def mlp() -> VAE:
    return VAE(MLPEncoder(SHAPE, 3, hidden=(16,)), MLPDecoder(3, SHAPE, hidden=(16,)), Bernoulli(), StandardNormal(3))


def conv() -> VAE:
    return VAE(ConvEncoder(SHAPE, 3), ConvDecoder(3, SHAPE), Bernoulli(), StandardNormal(3))


def vamp() -> VAE:
    encoder = MLPEncoder(SHAPE, 3, hidden=(16,))
    return VAE(encoder, MLPDecoder(3, SHAPE, hidden=(16,)), Bernoulli(), VampPrior(encoder, 4, SHAPE))


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch):
    """A CUDA device of the given compute capability, as far as ``choose_engine`` asks."""

    def make(capability: tuple[int, int]) -> torch.device:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        return torch.device("cuda")

    return make


def test_long_cpu_run_compiles_the_whole_step_with_bf16_where_the_cpu_has_it():
    e = choose_engine(mlp(), "cpu", COMPILE_MIN_STEPS)
    assert e.compile is True and e.whole_step and not e.cuda_graph
    assert e.amp is native_bf16("cpu")
    assert "compiled" in e.reason and f"{COMPILE_MIN_STEPS:,}" in e.reason


def test_short_cpu_run_stays_eager_in_float32():
    e = choose_engine(mlp(), "cpu", COMPILE_MIN_STEPS - 1)
    assert e == Engine(False, False, False, False, False, e.reason, "cpu")
    assert "not compiled" in e.reason and e.describe() == "eager, float32"


def test_conv_model_compiles_whole_with_channels_last_weights():
    e = choose_engine(conv(), "cpu", COMPILE_MIN_STEPS)
    assert e.whole_step and e.channels_last and e.amp is native_bf16("cpu")
    assert e.describe().startswith("whole step compiled, channels-last")
    assert not choose_engine(mlp(), "cpu", COMPILE_MIN_STEPS).channels_last


def test_shared_parameters_stay_eager():
    e = choose_engine(vamp(), "cpu", 10**6)
    assert not e.compile and not e.amp and not e.whole_step
    assert "parameters shared between parts" in e.reason


@pytest.mark.parametrize("options", [{"default_optimizer": False}, {"processes": 2}])
def test_own_optimizer_or_several_processes_stay_eager(options):
    e = choose_engine(mlp(), "cpu", 10**6, **options)
    assert not e.compile and not e.whole_step
    assert "default optimizer in one process" in e.reason


def test_explicit_settings_win():
    e = choose_engine(mlp(), "cpu", 1, compile=True, amp=True, cuda_graph=False)
    assert (e.compile, e.amp, e.cuda_graph, e.whole_step) == (True, True, False, True)
    assert e.reason == "as given" and e.describe() == "whole step compiled, bf16 autocast"
    e = choose_engine(mlp(), "cpu", 10**6, compile=False)
    assert not e.compile and not e.amp  # bfloat16 only with compile
    e = choose_engine(vamp(), "cpu", 1, compile="max-autotune")
    assert e.compile == "max-autotune" and not e.whole_step
    assert e.describe().startswith("loss compiled (max-autotune)")


def test_gpu_with_bf16_units_gets_graph_compile_and_bf16(gpu):
    e = choose_engine(mlp(), gpu((9, 0)), COMPILE_MIN_STEPS)
    assert (e.cuda_graph, e.compile, e.amp, e.whole_step) == (True, True, True, False)
    assert e.describe() == "CUDA graph, loss compiled, bf16 autocast"


def test_gpu_without_bf16_units_and_short_runs(gpu):
    e = choose_engine(conv(), gpu((7, 5)), COMPILE_MIN_STEPS)
    assert (e.cuda_graph, e.compile, e.amp, e.channels_last) == (True, True, False, False)
    assert "no bfloat16 matrix units" in e.reason
    e = choose_engine(mlp(), gpu((9, 0)), GRAPH_MIN_STEPS - 1)
    assert (e.cuda_graph, e.compile, e.amp) == (False, False, False)
    e = choose_engine(mlp(), gpu((9, 0)), 10**6, default_optimizer=False)
    assert not e.cuda_graph and e.compile is True  # the loss compiles with any optimizer


@pytest.mark.parametrize(
    "name, value", [("compile", ""), ("compile", 1), ("amp", "yes"), ("amp", None), ("cuda_graph", "on")]
)
def test_bad_settings_are_named(name, value):
    with pytest.raises(ValueError, match=f"expected {name} to be .*got {value!r}"):
        choose_engine(mlp(), "cpu", 1, **{name: value})


def test_fit_reports_and_records_the_engine(tmp_path):
    x = torch.rand(64, *SHAPE)
    result = fit(mlp(), x, epochs=1, batch_size=32, out=tmp_path / "run", progress=False)
    assert result.engine.describe() == "eager, float32"
    record = json.loads((tmp_path / "run" / "fit.json").read_text())["engine"]
    assert record["compile"] is False and record["name"] == "eager, float32"
    assert "2 planned steps" in record["reason"]


def test_fit_compiles_from_the_threshold(monkeypatch, light_compile):
    monkeypatch.setattr(choice, "COMPILE_MIN_STEPS", 4)
    x = torch.rand(64, *SHAPE)
    short = fit(mlp(), x, epochs=1, batch_size=32, progress=False)  # 2 steps
    long = fit(mlp(), x, epochs=2, batch_size=32, progress=False)  # 4 steps
    assert not short.engine.compile
    assert long.engine.compile is True and long.engine.whole_step and long.engine.amp is native_bf16("cpu")
    assert all(torch.isfinite(torch.tensor(h.train_loss)) for h in long.history)
    model = conv()
    result = fit(model, x, epochs=2, batch_size=32, progress=False)
    assert result.engine.channels_last and result.engine.whole_step
    weight = model.encoder.convs[2].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_a_resumed_fit_repeats_the_engine_its_checkpoint_records(tmp_path, monkeypatch, light_compile):
    """With a lower threshold a new run would compile; the resumed one, its settings at "auto",
    runs the engine the run started with. An explicit setting still wins, and a recorded engine of
    another kind of device is not repeated."""
    x, run = torch.rand(64, *SHAPE), tmp_path / "run"
    first = fit(mlp(), x, epochs=1, batch_size=32, out=run, progress=False)
    assert not first.engine.compile
    monkeypatch.setattr(choice, "COMPILE_MIN_STEPS", 2)
    resumed = fit(mlp(), x, epochs=2, batch_size=32, out=run, resume=True, progress=False)
    assert resumed.engine.describe() == "eager, float32"
    assert resumed.engine.reason == "compile, amp, cuda_graph as the run started"
    assert json.loads((run / "fit.json").read_text())["engine"]["reason"] == resumed.engine.reason
    assert torch.load(run / "checkpoint.pt", weights_only=True)["engine"]["compile"] is False
    flagged = fit(mlp(), x, epochs=3, batch_size=32, out=run, resume=True, compile=True, progress=False)
    assert flagged.engine.compile is True and flagged.engine.reason.startswith("amp, cuda_graph as the run started")
    gpu_run = choice.Engine(True, True, True, False, False, "on a GPU", "cuda")
    fresh = choose_engine(mlp(), "cpu", 1, recorded=gpu_run)
    assert (fresh.compile, fresh.amp, fresh.cuda_graph) == (False, False, False)
    assert "as the run started" not in fresh.reason


def test_cli_lets_fit_choose_the_engine_and_resume_repeat_it(tmp_path, capsys, monkeypatch, light_compile):
    """config.json keeps the settings as given ("auto"); fit.json and the printed line say what ran."""
    data = tmp_path / "x.pt"
    torch.save(torch.rand(96, *SHAPE), data)
    run = tmp_path / "run"
    common = ["train", "--dataset", str(data), "--hidden", "16", "--latent-dim", "3", "--batch-size", "32"]
    assert main([*common, "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "engine: eager, float32 (not compiled: 3 planned steps < 2,000" in err
    saved = json.loads((run / "config.json").read_text())
    assert (saved["compile"], saved["amp"], saved["cuda_graph"]) == ("auto", "auto", "auto")

    monkeypatch.setattr(choice, "COMPILE_MIN_STEPS", 2)
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert json.loads((run / "fit.json").read_text())["engine"]["compile"] is False
    assert main(["info", str(run)]) == 0
    assert "engine     eager, float32 (compile, amp, cuda_graph as the run started)" in capsys.readouterr().out

    flagged = tmp_path / "flagged"
    assert main([*common, "--epochs", "1", "--compile", "--no-amp", "--out", str(flagged), "--no-progress"]) == 0
    saved = json.loads((flagged / "config.json").read_text())
    assert (saved["compile"], saved["amp"]) == (True, False)


def test_make_step_builds_the_step_each_engine_names():
    """Eager, compiled loss, whole step and CUDA graph each wrap the one train_step; the eager one
    takes exactly the step of autograd and torch.optim.Adam on the objective's loss."""
    torch.manual_seed(0)
    model, reference = mlp(), mlp()
    reference.load_state_dict(model.state_dict())
    opt, opt_ref = torch.optim.Adam(model.parameters()), torch.optim.Adam(reference.parameters())
    count, running = torch.zeros((), dtype=torch.int64), torch.zeros(())
    plain = Engine(False, False, False, False, False, "as given", "cpu")

    def make(optimizer=opt, **changes) -> object:
        engine = dataclasses.replace(plain, **changes)
        return make_step(model, ELBO(), optimizer, engine, step=count, running=running)

    x = torch.rand(8, *SHAPE)
    torch.manual_seed(1)
    make()(Batch(x))
    torch.manual_seed(1)
    loss = ELBO()(reference.terms(x), 1).loss
    loss.backward()
    opt_ref.step()
    assert int(count) == 1 and torch.equal(running, loss.detach())
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    assert make(compile=True).keywords["loss"] is not objective_loss  # the compiled loss
    assert make().keywords["loss"] is objective_loss
    assert isinstance(make(compile=True, whole_step=True), CompiledAdamStep)
    capturable = torch.optim.Adam(model.parameters(), capturable=True)
    assert isinstance(make(capturable, cuda_graph=True), GraphedStep)
    with pytest.raises(ValueError, match="capturable=True for cuda_graph=True, got Adam with capturable=False"):
        make(cuda_graph=True)


def test_bf16_matrix_units_are_the_cpus_native_bf16_or_a_gpus_compute_capability(gpu):
    assert bf16_matrix_units("cpu") is native_bf16("cpu")
    assert bf16_matrix_units(gpu((8, 0))) and not bf16_matrix_units(gpu((7, 5)))
    assert not native_bf16(gpu((9, 0)))


@pytest.mark.parametrize(
    "changes",
    [{"compile": "auto"}, {"compile": ""}, {"amp": 1}, {"whole_step": None}, {"device": "mps"}, {"reason": 3}],
)
def test_an_engine_refuses_what_no_choice_gives(changes):
    """A recorded engine read back from a checkpoint is built as any other, and checked so."""
    fields = dict(
        compile=False, amp=False, cuda_graph=False, whole_step=False, channels_last=False, reason="", device="cpu"
    )
    with pytest.raises(ValueError, match=f"expected an Engine .*got .*{next(iter(changes))}="):
        Engine(**{**fields, **changes})
