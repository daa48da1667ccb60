"""ELBO, IWAE and DReG training compared on dynamically binarized MNIST, by test NLL.

    python benchmarks/objectives.py [--epochs 30] [--k 5] [--iw-samples 5000] [--objectives elbo iwae dreg]

The one-layer network of the IWAE paper (Burda et al. 2015, https://arxiv.org/abs/1509.00519):
MLP 784-200-200-50 with tanh, Bernoulli likelihood, standard normal prior, trained with Adam
(lr 1e-3, batch 100) from the same seed for the same number of epochs with each objective, then
evaluated by the importance-weighted bound with K samples on the full, once-binarized test set,
with the standard error over images. Writes ``benchmarks/results/objectives.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
from torch import nn

from genvae import ELBO, IWAE, STL, VAE, DReG
from genvae.data import load_mnist
from genvae.likelihoods import Bernoulli
from genvae.metrics.likelihood import eval_batches, iw_nll
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit

#: Published test NLL on dynamically binarized MNIST, one stochastic layer, IW bound with K = 5000
#: (Burda et al. 2015, table 1, 3,280 passes over the data).
PUBLISHED = {"elbo": 86.76, "iwae": {1: 86.76, 5: 85.54, 50: 84.78}}


def build(latent: int = 50, hidden: tuple[int, ...] = (200, 200)) -> VAE:
    shape = (1, 28, 28)
    return VAE(
        MLPEncoder(shape, latent, hidden=hidden, activation=nn.Tanh),
        MLPDecoder(latent, shape, hidden=hidden, activation=nn.Tanh),
        Bernoulli(),
        StandardNormal(latent),
    )


def test_nll(model: VAE, test, k: int, seed: int = 0) -> tuple[float, float]:
    """Mean IW-NLL over the test set and its standard error over images."""
    values = [iw_nll(model, x, k) for x, _ in eval_batches(model, test, batch_size=100, seed=seed)]
    nll = torch.cat(values).double()
    return float(nll.mean()), float(nll.std() / math.sqrt(nll.numel()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--k", type=int, default=5, help="importance samples for IWAE and DReG training")
    p.add_argument("--iw-samples", type=int, default=5000)
    p.add_argument("--objectives", nargs="+", default=["elbo", "iwae", "dreg"], choices=["elbo", "iwae", "dreg", "stl"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "objectives.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train = load_mnist("train", binarize="dynamic", seed=args.seed)
    test = load_mnist("test", binarize="dynamic", seed=args.seed)
    if args.train_subset:
        train = train.subset(args.train_subset)
    if args.test_subset:
        test = test.subset(args.test_subset)
    objectives = {"elbo": ELBO(), "iwae": IWAE(args.k), "dreg": DReG(args.k), "stl": STL()}
    record = json.loads(args.out.read_text()) if args.out.exists() else {"rows": {}}
    record.update(
        {
            "data": f"MNIST, dynamically binarized (test set binarized once, seed {args.seed})",
            "network": "MLP 784-200-200-50, tanh, Bernoulli likelihood, N(0, I) prior",
            "optimizer": "Adam, lr 1e-3, batch 100",
            "iw_samples": args.iw_samples,
            "estimator": f"IW bound with K = {args.iw_samples}, nats per image, ± standard error over images",
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "command": "python benchmarks/objectives.py "
            + f"--epochs {args.epochs} --k {args.k} --iw-samples {args.iw_samples}",
        }
    )
    for name in args.objectives:
        torch.manual_seed(args.seed)
        model = build()
        t0 = time.perf_counter()
        result = fit(
            model,
            train,
            epochs=args.epochs,
            objective=objectives[name],
            batch_size=100,
            seed=args.seed,
            device="cpu",
            compile=True,
            progress=False,
        )
        train_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        nll, se = test_nll(model, test, args.iw_samples, seed=args.seed)
        eval_seconds = time.perf_counter() - t0
        row = {
            "objective": repr(objectives[name]),
            "k": objectives[name].k,
            "epochs": args.epochs,
            "test_nll": nll,
            "standard_error": se,
            "test_images": len(test),
            "final_train_loss": result.history[-1].train_loss,
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
        }
        record["rows"][name] = row
        print(json.dumps({name: row}), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
