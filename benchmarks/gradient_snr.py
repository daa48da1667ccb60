"""Signal-to-noise ratio of the encoder's gradient under IWAE and DReG, as k grows.

    python benchmarks/gradient_snr.py [--ks 1 5 64] [--draws 200] [--warmup-epochs 3]

Rainforth et al. (2018, https://arxiv.org/abs/1802.04537) define the SNR of a gradient estimator
per parameter as |E[Δ]| / σ[Δ] over independent draws of the estimate Δ; they show that IWAE's
SNR for the inference network falls as O(1/√k), and Tucker et al. (2018) that DReG's does not
fall. Here: the IWAE paper's one-layer network (MLP 784-200-200-50, tanh) trained with the ELBO
for a few epochs on dynamically binarized MNIST, then, on one fixed batch of 100 test images,
``--draws`` independent gradient estimates of the encoder's and the decoder's parameters for
each objective and k. Reported: the mean over parameters of the per-parameter SNR (and the
median). Writes ``benchmarks/results/gradient_snr.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from objectives import build  # noqa: E402  (benchmarks/objectives.py)

from genvae import IWAE, DReG
from genvae.data import load_mnist
from genvae.train import fit


def snr(grads: torch.Tensor) -> tuple[float, float]:
    """``(draws, P)`` gradient estimates → (mean, median) over parameters of |mean| / std."""
    ratio = grads.mean(0).abs() / grads.std(0).clamp_min(1e-30)
    return float(ratio.mean()), float(ratio.median())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 64])
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--warmup-epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gradient_snr.json")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    train = load_mnist("train", binarize="dynamic", seed=args.seed)
    test = load_mnist("test", binarize="static", seed=args.seed)
    model = build()
    fit(model, train, epochs=args.warmup_epochs, batch_size=100, seed=args.seed, device="cpu", progress=False)
    x = test.float_images()[:100]
    groups = {"encoder": list(model.encoder.parameters()), "decoder": list(model.decoder.parameters())}
    rows = []
    for k in args.ks:
        for objective in (IWAE(k), DReG(k)):
            torch.manual_seed(args.seed)
            draws: dict[str, list[torch.Tensor]] = {name: [] for name in groups}
            for _ in range(args.draws):
                loss = objective(model.terms(x, k=k)).loss
                grads = torch.autograd.grad(loss, [q for ps in groups.values() for q in ps])
                i = 0
                for name, ps in groups.items():
                    draws[name].append(torch.cat([g.flatten() for g in grads[i : i + len(ps)]]))
                    i += len(ps)
            row = {"objective": type(objective).__name__, "k": k}
            for name, values in draws.items():
                mean, median = snr(torch.stack(values))
                row[f"{name}_snr_mean"], row[f"{name}_snr_median"] = mean, median
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = {
        "definition": "per-parameter |mean| / std over independent gradient draws (Rainforth et al. 2018), "
        "averaged (and median) over the parameters of each network",
        "model": "MLP 784-200-200-50 tanh, Bernoulli, N(0, I); "
        f"ELBO-trained {args.warmup_epochs} epochs on dynamically binarized MNIST",
        "batch": "the first 100 test images, binarized once",
        "draws": args.draws,
        "command": f"python benchmarks/gradient_snr.py --ks {' '.join(map(str, args.ks))} --draws {args.draws} "
        f"--warmup-epochs {args.warmup_epochs}",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
