"""The sweep behind ``genvae train --model cvae``'s defaults: conditional accuracy after 10 epochs.

Each row runs the command a user types, ``genvae train --model cvae --latent-dim 15`` plus the
row's flags, for 10 epochs on MNIST, then draws 1,000 samples per digit (``model.sample(n, y)``,
as ``genvae sample --label c`` does) and asks genvae's MNIST classifier which digit each one is.
The test −ELBO (single-sample, the run's ``metrics.json``) is reported beside it.

    python benchmarks/cvae_defaults.py [--rows NAME ...] [--out benchmarks/results/cvae_defaults.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import genvae
from genvae.metrics import conditional_accuracy
from genvae.metrics.classifier import classifier_for

#: row name → extra flags after ``genvae train --model cvae --latent-dim 15 --epochs 10``.
ROWS: dict[str, list[str]] = {
    "beta 1 (previous default)": ["--beta", "1"],
    "beta 2": ["--beta", "2"],
    "beta 3": ["--beta", "3"],
    "beta 1, conditional prior": ["--beta", "1", "--prior", "conditional"],
    "beta 2, conditional prior": ["--beta", "2", "--prior", "conditional"],
    "beta 2, hidden 512,256": ["--beta", "2", "--hidden", "512,256"],
    "beta 3, hidden 512,256": ["--beta", "3", "--hidden", "512,256"],
    "beta 3, conditional prior": ["--beta", "3", "--prior", "conditional"],
    "beta 2, hidden 400,400": ["--beta", "2", "--hidden", "400,400"],
    "beta 2, hidden 400,400, conditional prior": ["--beta", "2", "--hidden", "400,400", "--prior", "conditional"],
    "beta 3, hidden 400,400, conditional prior": ["--beta", "3", "--hidden", "400,400", "--prior", "conditional"],
    "defaults": [],
}


def run_row(name: str, flags: list[str], folder: Path, seed: int) -> dict[str, object]:
    out = folder / name.replace(" ", "_").replace(",", "")
    command = [sys.executable, "-m", "genvae", "train", "--model", "cvae", "--latent-dim", "15", "--epochs", "10"]
    command += [*flags, "--seed", str(seed), "--out", str(out), "--no-progress"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    model = genvae.load(out)
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    accuracy = conditional_accuracy(model, classifier_for("mnist"), generator=torch.Generator().manual_seed(0))
    return {
        "row": name,
        "flags": flags,
        "beta": config["beta"],
        "prior": config["prior"],
        "hidden": config["hidden"],
        "conditional_accuracy": accuracy,
        "test_neg_elbo": metrics["test_loss"],
        "seconds": round(seconds, 1),
        "seed": seed,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="*", default=[1])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/cvae_defaults.json"))
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("GENVAE_THREADS", "2")))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name in args.rows:
                row = run_row(name, ROWS[name], Path(tmp), seed)
                results.append(row)
                print(
                    f"{name:28s} seed {seed}  accuracy {row['conditional_accuracy']:.4f}  "
                    f"test -ELBO {row['test_neg_elbo']:.2f}  {row['seconds']:.0f} s",
                    flush=True,
                )
    record = {
        "command": "genvae train --model cvae --latent-dim 15 --epochs 10 [row flags]; 1000 samples per digit",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "rows": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
