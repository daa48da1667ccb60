"""The genvae command: a short real MNIST run end to end, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch

import genvae
from genvae.cli import main

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
def test_resume_continues_a_run(mnist_run, tmp_path):
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
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1, 2]


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


def test_cvae_config_from_toml(tmp_path, monkeypatch):
    """A TOML config builds the model it names; flags override it (checked without training)."""
    from genvae.config import RunConfig, build_model, read_config

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('model = "cvae"\nhidden = [64, 32]\nlatent-dim = 5\nprior = "conditional"\n')
    cfg = RunConfig(**read_config(cfg_file))
    model = build_model(cfg, (1, 28, 28), 10)
    assert isinstance(model, genvae.CVAE) and model.latent_dim == 5 and model.num_classes == 10
    assert model.encoder.hidden == (64, 32) and model.decoder.hidden == (32, 64)
    cfg_file.write_text('modle = "cvae"\n')
    with pytest.raises(ValueError, match="unknown key 'modle'"):
        read_config(cfg_file)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--arch", "transformer"], "invalid choice: 'transformer'"),
        (["train", "--epochs", "0"], "expected a positive int, got '0'"),
        (["train", "--hidden", "400,x"], "comma-separated integers"),
        (["eval", "/nonexistent/run"], "not a folder"),
        (["sample", "/nonexistent/run", "-o", "x.png"], "not a folder"),
        (["train", "--model", "vae", "--prior", "conditional", "--epochs", "1"], "--model cvae"),
    ],
)
def test_bad_input_is_one_line_without_traceback(argv, message, capsys):
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def run(argv: list[str]) -> int:
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
        assert run(["train", "--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "c")]) == 2
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
