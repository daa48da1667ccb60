"""The built wheel, installed into a fresh virtual environment outside the repository, imports and
runs: ``genvae --version``, ``import genvae`` from the installed files, and a one-epoch ``genvae
train`` on a small data file; its declared dependencies are satisfied (``pip check``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

import genvae

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{command}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # A copy of what the build reads keeps its egg-info and build/ out of the repository.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "LICENSE", "MANIFEST.in", "DESCRIPTION.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, src, cwd=out)
    (found,) = out.glob("genvae-*.whl")
    return found


def test_the_wheel_holds_the_package_its_typing_marker_and_the_licence(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "genvae/py.typed" in names and "genvae/data/mnist.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"Version: {genvae.__version__}" in metadata
    assert "](docs/" not in metadata and "make demo" not in metadata  # the index page's links resolve


def test_the_wheel_installs_into_a_fresh_venv_and_trains_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    # The dependencies (torch, …) come from this interpreter's environment, visible after the venv's own
    # site-packages; genvae itself only from the wheel (the editable install's path hook is not processed).
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}

    assert run(venv / "bin" / "genvae", "--version", cwd=tmp_path, env=env).strip() == f"genvae {genvae.__version__}"
    where = run(python, "-c", "import genvae; print(genvae.__file__)", cwd=tmp_path, env=env).strip()
    assert Path(where).is_relative_to(venv), where
    run(sys.executable, "-m", "pip", "--python", python, "check", cwd=tmp_path, env=env)

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (300, 1, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "digits.npz", x=x, y=rng.integers(0, 3, 300))
    out = run(
        venv / "bin" / "genvae", "train", "--dataset", tmp_path / "digits.npz", "--epochs", "1", "--train-subset",
        "200", "--hidden", "32", "--latent-dim", "4", "--out", tmp_path / "run", "--no-progress",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert "epoch   1" in out, out
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "manifest.json").is_file()
