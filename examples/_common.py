"""Shared plumbing of the example scripts: flags, data, results files. Nothing model-specific."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from genvae.data import ImageDataset, load_mnist
from genvae.train import resolve_device


def parser(description: str, *, epochs: int, name: str) -> argparse.ArgumentParser:
    """Flags every example takes: --quick, --epochs, --device, --seed, --out."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick", action="store_true", help="a few hundred steps on a subset (seconds): checks the script runs"
    )
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default runs/examples/{name}[-quick])")
    p.set_defaults(name=name)
    return p


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the flags; ``--out`` defaults to ``runs/examples/NAME`` (``NAME-quick`` with --quick)."""
    args = p.parse_args()
    if args.out is None:
        args.out = Path("runs/examples") / (args.name + ("-quick" if args.quick else ""))
    return args


def mnist(
    quick: bool, *, binarize: str = "none", train_n: int = 2000, test_n: int = 500
) -> tuple[ImageDataset, ImageDataset]:
    """MNIST train and test splits; with ``quick`` only their first ``train_n`` / ``test_n`` images."""
    train, test = load_mnist("train", binarize=binarize), load_mnist("test", binarize=binarize)
    if quick:
        train, test = train.subset(train_n), test.subset(test_n)
    return train, test


def write_results(out: Path, name: str, args: argparse.Namespace, results: Any, started: float) -> Path:
    """Write ``results.json`` with the run's settings, device, torch version and wall time."""
    device = resolve_device(args.device)
    record = {
        "example": name,
        "quick": args.quick,
        "epochs": args.epochs,
        "seed": args.seed,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path} ({record['wall_seconds']} s)")
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table of ``rows`` (floats with 4 significant digits)."""
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def classifier(quick: bool, train: ImageDataset, test: ImageDataset, device: torch.device):
    """The MNIST classifier behind FID and conditional accuracy: the cached, ≥ 99 % accurate one;
    with ``quick``, a one-epoch stand-in trained on 512 images of the subset (its numbers mean nothing)."""
    from genvae.metrics import mnist_classifier, train_classifier

    if quick:
        return train_classifier(train.subset(min(len(train), 512)), test, epochs=1, device=device)[0]
    return mnist_classifier(device=device)
