"""A user's module of parts (a prior and an objective), used from the command line with --plugin,
in a fresh process each time, and never imported because a file or a folder names it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
PLUGIN_DIR = HERE / "plugin_parts"


def _genvae(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "genvae", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained with the plugin's Laplace prior and capacity objective on a small data file."""
    root = tmp_path_factory.mktemp("plugin")
    rng = np.random.default_rng(0)
    images = (rng.random((240, 1, 8, 8)) < 0.3).astype(np.uint8) * 255
    np.savez(root / "digits.npz", x=images, y=rng.integers(0, 3, 240))
    done = _genvae(
        "train", "--plugin", "my_parts", "--data", "digits.npz", "--prior", "laplace", "--scale", "0.5",
        "--objective", "capacity", "--capacity", "2", "--latent-dim", "3", "--hidden", "16", "--epochs", "2",
        "--batch-size", "40", "--compile", "--no-progress", "--out", "run", cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root


def test_a_plugin_part_trains_and_is_recorded(trained):
    config = json.loads((trained / "run" / "config.json").read_text())
    assert config["plugins"] == ["my_parts"] and config["prior"] == "laplace"
    assert config["options"]["prior"] == {"scale": 0.5} and config["options"]["objective"] == {"capacity": 2.0}
    metrics = json.loads((trained / "run" / "metrics.json").read_text())
    assert 0 < metrics["test_loss"] < 64 * np.log(2) * 2  # a bound on 64 binary pixels, finite and sane


def test_eval_sample_and_info_take_the_plugin_back(trained):
    done = _genvae("eval", "run", "--plugin", "my_parts", "--iw-samples", "8", cwd=trained)
    assert done.returncode == 0, done.stderr
    result = json.loads((trained / "run" / "eval.json").read_text())
    assert result["test_iw_nll"] <= result["test_neg_elbo"] + 1e-3  # the IW bound is the tighter one
    done = _genvae("sample", "run", "--plugin", "my_parts", "--n", "4", "-o", "s.png", cwd=trained)
    assert done.returncode == 0 and (trained / "s.png").stat().st_size > 0, done.stderr
    done = _genvae("info", "run", "--plugin", "my_parts", cwd=trained)
    assert done.returncode == 0 and "LaplacePrior" in done.stdout and "plugins    my_parts" in done.stdout


@pytest.mark.parametrize("command", [["eval", "run"], ["sample", "run", "-o", "x.png"], ["info", "run"]])
def test_a_run_folder_never_imports_its_plugin(trained, command):
    done = _genvae(*command, cwd=trained)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "was trained with parts of my_parts; pass --plugin my_parts" in done.stderr


def test_resume_needs_the_same_plugins(trained):
    done = _genvae("train", "--resume", "--out", "run", "--epochs", "3", cwd=trained)
    assert done.returncode == 2 and "--plugin my_parts" in done.stderr and "Traceback" not in done.stderr
    done = _genvae("train", "--plugin", "my_parts", "--resume", "--out", "run", "--epochs", "3", "--no-progress",
                   cwd=trained)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(json.loads((trained / "run" / "history.json").read_text())) == 3


def test_loading_the_model_file_without_the_plugin_imports_nothing(trained):
    probe = (
        "import sys, genvae\n"
        "try:\n"
        f"    genvae.load({str(trained / 'run')!r})\n"
        "except ValueError as err:\n"
        "    print('refused:', err)\n"
        "print('imported' if 'my_parts' in sys.modules else 'not imported')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert "refused:" in done.stdout and "model.safetensors" in done.stdout, done.stdout + done.stderr
    assert done.stdout.strip().endswith("not imported")


def test_loading_it_after_importing_the_plugin_rebuilds_it(trained):
    probe = (
        "import my_parts, genvae, torch\n"
        f"m = genvae.load({str(trained / 'run')!r})\n"
        "print(type(m.prior).__name__, float(m.prior.log_scale.exp().mean()) > 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["LaplacePrior", "True"], done.stderr


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ("no_such_module_here", "could not import plugin 'no_such_module_here': ModuleNotFoundError"),
        ("bad name", "expected --plugin to name a module such as myproject.parts, got 'bad name'"),
    ],
)
def test_a_plugin_that_cannot_be_imported_is_one_line(plugin, message, tmp_path):
    done = _genvae("train", "--plugin", plugin, "--epochs", "1", cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_a_plugin_that_raises_is_one_line(tmp_path):
    (tmp_path / "broken_parts.py").write_text("raise RuntimeError('half written\\nsecond line')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "genvae", "info", "x", "--plugin", "broken_parts"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "could not import plugin 'broken_parts': RuntimeError: half written" in done.stderr


def test_an_installed_package_declares_its_parts_under_the_entry_point_group(tmp_path):
    """A distribution on the path whose entry points list my_parts under genvae.parts: every command
    imports it, with no --plugin."""
    dist = tmp_path / "my_parts_dist-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-parts-dist\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[genvae.parts]\nmy_parts = my_parts\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PLUGIN_DIR)])}
    probe = "from genvae.cli import _parser; import sys; _parser(); print('my_parts' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", f"from genvae.plugins import installed_plugins; print(installed_plugins()); {probe}"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stdout.split() == ["['my_parts']", "True"], done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "genvae", "train", "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "laplace" in done.stdout and "--prior-scale" in done.stdout, done.stderr
