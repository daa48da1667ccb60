"""Every example script runs end to end on real MNIST in --quick mode and writes its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["mlp_vae", "latent_dim_ablation", "latent_manifold", "cvae", "conv_vae", "anomaly_detection"]


@pytest.mark.mnist
@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_example_quick(name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=EXAMPLES,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((out / "results.json").read_text())
    assert record["example"] == name and record["quick"] is True
    pngs = list(out.glob("*.png"))
    assert pngs, "no figure written"
    assert all(p.stat().st_size > 1000 for p in pngs)
