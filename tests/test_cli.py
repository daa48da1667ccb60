"""The genvae command: a short real MNIST run end to end, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

import genvae
from genvae.cli import main
from genvae.config import RunConfig, build_model
from genvae.data import MNIST_MD5, synthetic_digits
from genvae.train import fit

RUN_FILES = {
    "config.json",
    "model.safetensors",
    "history.json",
    "metrics.json",
    "samples.png",
    "reconstructions.png",
    "loss.png",
    "checkpoint.pt",
}


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "vae"
    code = main(
        [
            "train",
            "--epochs",
            "2",
            "--train-subset",
            "3000",
            "--test-subset",
            "500",
            "--latent-dim",
            "8",
            "--out",
            str(run),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    return run


@pytest.mark.mnist
def test_train_writes_a_complete_run_folder_and_the_loss_falls(mnist_run):
    assert RUN_FILES <= {p.name for p in mnist_run.iterdir()}
    history = json.loads((mnist_run / "history.json").read_text())
    assert len(history) == 2 and history[1]["test_loss"] < history[0]["test_loss"]
    metrics = json.loads((mnist_run / "metrics.json").read_text())
    assert 80 < metrics["test_loss"] < 400  # nats per image on MNIST
    assert metrics["test_loss"] == pytest.approx(metrics["test_kl"] - metrics["test_log_likelihood"], rel=1e-6)
    samples = mpimg.imread(mnist_run / "samples.png")
    assert samples.ndim == 3 and samples.shape[0] > 100
    model = genvae.load(mnist_run)
    assert model.latent_dim == 8 and model.sample(3).shape == (3, 1, 28, 28)


@pytest.mark.mnist
def test_eval_sample_info(mnist_run, tmp_path, capsys):
    assert main(["eval", str(mnist_run), "--iw-samples", "20", "--test-subset", "200", "--device", "cpu"]) == 0
    result = json.loads((mnist_run / "eval.json").read_text())
    assert result["num_test_images"] == 200 and result["iw_samples"] == 20
    # the importance-weighted bound is tighter than the single-sample ELBO (on average, by a margin here)
    assert result["test_iw_nll"] < result["test_neg_elbo"]
    out = tmp_path / "s.png"
    assert main(["sample", str(mnist_run), "--n", "16", "--seed", "3", "-o", str(out), "--device", "cpu"]) == 0
    assert mpimg.imread(out).shape[0] > 50
    assert main(["info", str(mnist_run)]) == 0
    text = capsys.readouterr().out
    assert "VAE" in text and "MLPEncoder" in text and "latent     8" in text


@pytest.mark.mnist
def test_resume_continues_a_run(mnist_run, tmp_path, capsys):
    run = tmp_path / "r"
    args = [
        "train",
        "--train-subset",
        "1000",
        "--test-subset",
        "200",
        "--latent-dim",
        "4",
        "--out",
        str(run),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "1"]) == 2  # a checkpoint is there: refuse without --resume
    saved = (run / "config.json").read_text()
    capsys.readouterr()
    for flag in (["--latent-dim", "16"], ["--lr", "0.01"], ["--train-subset", "500"], ["--model", "cvae"]):
        assert run_cli([*args, "--epochs", "2", "--resume", *flag]) == 2
        err = capsys.readouterr().err
        assert "contradicts the run's config.json" in err and err.count("\n") == 1, err
        assert (run / "config.json").read_text() == saved  # nothing written before the checks pass
    # the saved settings win over the defaults: no flag but --resume and --epochs is needed
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1, 2]
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert genvae.load(run).latent_dim == 4


@pytest.mark.mnist
def test_same_seed_repeats_a_run(tmp_path):
    """The seed fixes the initial weights as well as the batch order and noise: two runs agree."""
    args = ["train", "--epochs", "1", "--train-subset", "600", "--test-subset", "100", "--latent-dim", "4"]
    args += ["--no-progress", "--device", "cpu", "--seed", "7"]
    for name in ("a", "b"):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
    a, b = (json.loads((tmp_path / n / "history.json").read_text())[0] for n in ("a", "b"))
    assert a["train_loss"] == b["train_loss"] and a["test_loss"] == b["test_loss"]
    wa, wb = genvae.load(tmp_path / "a").state_dict(), genvae.load(tmp_path / "b").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_cvae_takes_its_own_defaults_where_the_flags_leave_them_unset():
    from genvae.config import CVAE_DEFAULTS

    def chosen(cfg):
        return cfg.option("encoder", "hidden"), cfg.option("objective", "beta"), cfg.prior

    cvae, vae = RunConfig(model="cvae"), RunConfig()
    assert chosen(cvae) == tuple(CVAE_DEFAULTS[k] for k in ("hidden", "beta", "prior"))
    assert chosen(vae) == ((400,), 1.0, "standard")
    dreg = RunConfig(model="cvae", objective="dreg")  # a bound's gradient: DReG has no β
    assert "beta" not in dreg.options.get("objective", {})
    given = RunConfig.from_settings({"model": "cvae", "beta": 1.0, "hidden": (64,), "prior": "standard"})
    assert chosen(given) == ((64,), 1.0, "standard")
    model = build_model(RunConfig(model="cvae", latent_dim=15), (1, 28, 28), 10)
    assert model.encoder.hidden == (400, 400) and type(model.prior).__name__ == "ConditionalNormal"


def test_cvae_config_from_toml(tmp_path, monkeypatch):
    """A TOML config builds the model it names; flags override it (checked without training)."""
    from genvae.config import read_config

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('model = "cvae"\nhidden = [64, 32]\nlatent-dim = 5\nprior = "conditional"\n')
    cfg = RunConfig.from_settings(read_config(cfg_file))
    model = build_model(cfg, (1, 28, 28), 10)
    assert isinstance(model, genvae.CVAE) and model.latent_dim == 5 and model.num_classes == 10
    assert model.encoder.hidden == (64, 32) and model.decoder.hidden == (32, 64)
    cfg_file.write_text('modle = "cvae"\n')
    with pytest.raises(ValueError, match="no part of this run has an option 'modle'"):
        RunConfig.from_settings(read_config(cfg_file))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--arch", "transformer"], "invalid choice: 'transformer'"),
        (["train", "--epochs", "0"], "expected a positive int, got '0'"),
        (["train", "--hidden", "400,x"], "encoder 'mlp' option 'hidden': expected an int or comma-separated ints"),
        (["eval", "/nonexistent/run"], "not a folder"),
        (["sample", "/nonexistent/run", "-o", "x.png"], "not a folder"),
        (["train", "--model", "vae", "--prior", "conditional", "--epochs", "1"], "needs conditional True, got False"),
        (["train", "--posterior-flow", "iaf", "--flow-length", "0"], "expected a positive int, got '0'"),
        (["train", "--layers", "3"], "no part of this run has an option 'layers'; the options are model 'vae': none"),
        (["train", "--model", "hvae", "--objective", "dreg"], "objective 'dreg' needs layers 1, got 2"),
        (
            ["train", "--posterior-flow", "planar", "--objective", "stl"],
            "'stl' needs factorised True, got False from flow",
        ),
        (["train", "--posterior-flow", "iaf", "--free-bits", "0.5"], "objective 'free-bits' needs factorised True"),
        (["train", "--model", "hvae", "--posterior-flow", "iaf", "--flow-length", "0"], "expected a positive int"),
        (
            ["train", "--model", "hvae", "--posterior-flow", "iaf", "--objective", "stl"],
            "objective 'stl' needs factorised",
        ),
    ],
)
def test_bad_input_is_one_line_without_traceback(argv, message, capsys):
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def run_cli(argv: list[str]) -> int:
    """``main(argv)``'s exit status, whether it returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_corrupt_run_folder_and_missing_cuda(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    assert main(["info", str(bad)]) == 2
    assert "safetensors" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert run_cli(["train", "--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "c")]) == 2
        assert "cuda" in capsys.readouterr().err.lower()
    out = tmp_path / "g"
    assert main(["train", "--cuda-graph", "--device", "cpu", "--epochs", "1", "--out", str(out)]) == 2
    assert "--cuda-graph needs a CUDA device, got --device cpu" in capsys.readouterr().err
    assert not out.exists()  # refused before any data is loaded or file written


@pytest.mark.mnist
def test_label_for_unconditional_model_fails_cleanly(mnist_run, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genvae",
            "sample",
            str(mnist_run),
            "--label",
            "3",
            "-o",
            str(tmp_path / "x.png"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--label needs a conditional model" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("epochs = 0", "expected epochs to be a positive int, got 0"),
        ('epochs = "ten"', "expected epochs to be a positive int, got str"),
        ("lr = -0.1", "expected lr to be a positive finite number"),
        ("hidden = [400, 0]", "expected hidden[1] to be a positive int"),
        ("latent-dim = 2.5", "expected latent_dim to be a positive int"),
        ('amp = "yes"', 'expected amp to be true, false or "auto"'),
        ("test-subset = -3", "expected test_subset to be a positive int"),
    ],
)
def test_a_bad_toml_config_is_refused_before_data_or_disk_are_touched(tmp_path, capsys, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(f'{toml}\nout = "{tmp_path / "run"}"\n')
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_a_corrupt_mnist_file_offline_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "cache" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_MD5:
        (raw / name).write_bytes(b"\0\0\x08\x01\0\0\0\x01x")  # an IDX header, not MNIST's bytes
    monkeypatch.setenv("GENVAE_DATA", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is corrupt" in err and "-ubyte" in err and "Traceback" not in err, err
    assert not out.exists()  # the folder of a run that never started is not left behind


def test_info_and_sample_on_a_one_epoch_run(tmp_path, capsys):
    run = tmp_path / "run"
    torch.manual_seed(0)
    cfg = RunConfig.from_settings({"epochs": 1, "latent_dim": 4, "hidden": (16,), "out": str(run)})
    model = build_model(cfg, (1, 28, 28), 10)
    fit(model, synthetic_digits(128), epochs=1, batch_size=64, device="cpu", out=run, progress=False)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    (run / "metrics.json").write_text('{"test_loss": 1.0}')
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "training   1 epoch, batch" in out and 'metrics    {"test_loss": 1.0}' in out, out
    target = tmp_path / "new" / "folder" / "s.png"
    assert main(["sample", str(run), "--n", "4", "-o", str(target), "--device", "cpu"]) == 0
    assert target.is_file() and f"created folder {target.parent}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def bars_npz(tmp_path_factory) -> Path:
    """A labelled 8-bit image file of two classes (bars across or down), 16 × 16."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (300,), generator=g)
    x = torch.zeros(300, 1, 16, 16)
    x[y == 0, 0, 6:10, 2:14] = 1
    x[y == 1, 0, 2:14, 6:10] = 1
    x = ((0.8 * x + 0.1 + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1) * 255).round().to(torch.uint8)
    path = tmp_path_factory.mktemp("data") / "bars.npz"
    np.savez(path, x=x.numpy(), y=y.numpy())
    return path


def test_train_eval_sample_and_info_on_a_users_file(bars_npz, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GENVAE_DATA", str(tmp_path / "cache"))  # the classifier trained for --fid goes here
    run = tmp_path / "run"
    args = ["train", "--data", str(bars_npz), "--epochs", "2", "--latent-dim", "2", "--hidden", "32"]
    assert main([*args, "--model", "cvae", "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    assert json.loads((run / "config.json").read_text())["dataset"] == str(bars_npz.resolve())
    monkeypatch.chdir(tmp_path)  # eval finds the data wherever it is run from
    assert main(["eval", str(run), "--iw-samples", "10", "--fid", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())
    assert result["num_test_images"] == 30 and result["iw_samples"] == 10  # a file's test split is a tenth of it
    assert result["test_iw_bits_per_dim"] == pytest.approx(result["test_iw_nll"] / (256 * np.log(2)))
    assert 0 <= result["conditional_accuracy"] <= 1 and result["fid"] >= 0
    assert "bits/dim" in out and "conditional accuracy" in out
    assert main(["sample", str(run), "--label", "1", "--n", "4", "-o", str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    assert main(["info", str(run)]) == 0
    assert f"data       {bars_npz.resolve()}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags",
    [
        ["--model", "hvae", "--layers", "3"],
        ["--model", "hvae", "--inference", "bottom-up", "--objective", "iwae", "--k", "3", "--prior", "vamp"],
        ["--posterior-flow", "iaf", "--prior", "vamp"],
        ["--posterior-flow", "householder", "--flow-length", "3", "--model", "cvae"],
        ["--arch", "resnet", "--channels", "4,8", "--likelihood", "discretized-logistic"],
        ["--model", "hvae", "--arch", "conv", "--channels", "4,8", "--prior", "vamp"],
        ["--model", "hvae", "--arch", "resnet", "--channels", "4,8", "--inference", "bottom-up"],
        ["--model", "hvae", "--posterior-flow", "iaf", "--objective", "iwae", "--k", "3"],
        ["--model", "hvae", "--layers", "3", "--posterior-flow", "planar", "--flow-length", "1", "--prior", "vamp"],
    ],
    ids=[
        "hvae",
        "hvae-bottom-up-vamp",
        "iaf-vamp",
        "householder-cvae",
        "resnet",
        "conv-hvae-vamp",
        "resnet-hvae",
        "hvae-iaf",
        "hvae-planar-vamp",
    ],  # fmt: skip
)
def test_deeper_models_train_evaluate_sample_and_load_from_the_command_line(flags, bars_npz, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(bars_npz), "--epochs", "1", "--latent-dim", "3", "--hidden", "16"]
    vamp = ["--pseudo-inputs", "4"] if "vamp" in flags else []
    assert main([*args, *vamp, *flags, "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    cfg = RunConfig.from_settings(json.loads((run / "config.json").read_text()))
    assert main(["eval", str(run), "--iw-samples", "4", "--device", "cpu"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["test_iw_nll"] <= result["test_neg_elbo"] + 1.0  # the IW bound is at least as tight, up to noise
    label = ["--label", "1"] if cfg.model == "cvae" else []
    assert main(["sample", str(run), *label, "--n", "4", "-o", str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    model = genvae.load(run)
    assert type(model).__name__ == {"hvae": "HierarchicalVAE"}.get(cfg.model, cfg.model.upper())
    if cfg.model == "hvae":
        assert model.num_layers == cfg.option("model", "layers")
        assert model.top_down == (cfg.option("model", "inference") == "top-down")
        first = {"mlp": "MLPBlock", "conv": "ConvBlock", "resnet": "ConvBlock"}[cfg.arch]
        assert type(model.encoder.up[0]).__name__ == first
    if cfg.posterior_flow != "none" and cfg.model != "hvae":
        assert type(model.encoder).__name__ == "FlowEncoder" and len(model.encoder.flows) == cfg.flow_length
    if cfg.posterior_flow != "none" and cfg.model == "hvae":  # a flow head per layer, but the top one under a VampPrior
        flowing = [type(head).__name__ == "FlowHead" for head in model.encoder.heads]
        assert flowing == [True] * (model.num_layers - 1) + [cfg.prior != "vamp"]
        assert all(len(head.flows) == cfg.flow_length for head in model.encoder.heads if hasattr(head, "flows"))
    assert main(["info", str(run)]) == 0


def test_eval_and_info_on_a_folder_fit_wrote(bars_npz, tmp_path, capsys):
    from genvae.data import load_data

    run = tmp_path / "run"
    torch.manual_seed(0)
    model = build_model(RunConfig.from_settings({"latent_dim": 2, "hidden": (16,)}), (1, 16, 16), 2)
    fit(model, load_data(bars_npz, "train"), epochs=1, batch_size=64, device="cpu", out=run, progress=False)
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"data       {bars_npz.resolve()}, binarize none, 270 train examples" in out and "1 epoch," in out
    assert main(["eval", str(run), "--iw-samples", "5", "--device", "cpu"]) == 0  # the data fit.json records
    assert json.loads((run / "eval.json").read_text())["num_test_images"] == 30
    tensors = tmp_path / "tensors"
    fit(model, load_data(bars_npz, "train").images, epochs=1, device="cpu", out=tensors, progress=False)
    assert main(["eval", str(tensors), "--device", "cpu"]) == 2
    assert "pass --data" in capsys.readouterr().err
    assert main(["eval", str(tensors), "--data", str(bars_npz), "--iw-samples", "5", "--device", "cpu"]) == 0


def test_vectors_from_a_file_and_flags_that_do_not_fit_them(tmp_path, capsys):
    path = tmp_path / "v.npy"
    np.save(path, np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32))
    base = ["train", "--data", str(path), "--epochs", "1", "--device", "cpu", "--no-progress"]
    assert main([*base, "--arch", "conv", "--likelihood", "gaussian", "--out", str(tmp_path / "a")]) == 2
    assert "encoder 'conv' needs image True, got False" in capsys.readouterr().err
    assert main([*base, "--model", "cvae", "--likelihood", "gaussian", "--out", str(tmp_path / "b")]) == 2
    assert "model 'cvae' needs labelled True, got False" in capsys.readouterr().err
    assert main([*base, "--likelihood", "gaussian", "--out", str(tmp_path / "c")]) == 0
    assert not (tmp_path / "c" / "samples.png").exists()  # no figures of vectors
    assert main(["sample", str(tmp_path / "c"), "-o", str(tmp_path / "x.png"), "--device", "cpu"]) == 2
    assert "images (C, H, W)" in capsys.readouterr().err


def test_the_cli_page_lists_every_option_with_the_parsers_defaults():
    """docs/cli.md's synopsis names every option of every command, and a value it shows as the
    default is the parser's (train's defaults are RunConfig's)."""
    import argparse
    import re
    from dataclasses import fields

    from genvae.cli import _parser, parts_table

    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    synopsis = page[page.index("```text") : page.index("```", page.index("```text") + 3)]
    commands = re.split(r"\n(?=genvae )", synopsis)
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    config = {f.name: f.default for f in fields(RunConfig)}
    # the options of parts are the table of parts the page holds, kept equal to the registry's
    assert parts_table() in page, "docs/cli.md: the table of parts differs from genvae.cli.parts_table()"
    part_options = {a.dest for a in sub.choices["train"]._actions if "." in a.dest or a.dest not in config}
    part_options -= {"config", "resume", "no_progress", "plugin", "help"}
    for name, parser in sub.choices.items():
        text = next(c for c in commands if c.startswith(f"genvae {name}"))
        for action in (a for a in parser._actions if a.option_strings and a.dest not in part_options):
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in text, f"docs/cli.md: genvae {name} does not list {option}"
            default = config.get(action.dest) if name == "train" else action.default
            shown = re.search(rf"\[{re.escape(action.option_strings[-1])} ([\w.,]+)\]", text)
            if shown and re.fullmatch(r"[\d.e-]+|[\d,]+", shown.group(1)) and default is not None:
                value = ",".join(map(str, default)) if isinstance(default, tuple) else default
                assert float(shown.group(1).split(",")[0]) == float(str(value).split(",")[0]), (name, action.dest)
