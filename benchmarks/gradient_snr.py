"""Signal-to-noise ratio of the encoder's gradient under IWAE and DReG, as k grows.

    python benchmarks/gradient_snr.py [--model mnist|toy] [--ks 1 5 64] [--draws 200] [--per-image]

Rainforth et al. (2018, https://arxiv.org/abs/1802.04537) define the SNR of a gradient estimator
per parameter as |E[Δ]| / σ[Δ] over independent draws of the estimate Δ; they show that IWAE's
SNR for the inference network falls as O(1/√k), and Tucker et al. (2018) that DReG's does not
fall. Here: the IWAE paper's one-layer network (MLP 784-200-200-50, tanh) trained with the ELBO
for a few epochs on dynamically binarized MNIST, then, on one fixed batch of 100 test images,
``--draws`` independent gradient estimates of the encoder's and the decoder's parameters for
each objective and k. Reported: the mean over parameters of the per-parameter SNR (and the
median). ``--model toy`` measures instead Rainforth et al.'s Gaussian model, where q is near the
exact posterior (``--per-image``: each data point's own gradient, the SNR averaged over points).
Writes ``benchmarks/results/gradient_snr.json`` (``gradient_snr_toy.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from objectives import build  # noqa: E402  (benchmarks/objectives.py)
from torch import nn
from torch.distributions import Independent, Normal

from genvae import IWAE, VAE, DReG
from genvae.data import load_mnist
from genvae.likelihoods import Gaussian
from genvae.priors import LearnedNormal
from genvae.train import fit


def snr(grads: torch.Tensor) -> tuple[float, float]:
    """``(draws, P)`` gradient estimates → (mean, median) over parameters of |mean| / std."""
    ratio = grads.mean(0).abs() / grads.std(0).clamp_min(1e-30)
    return float(ratio.mean()), float(ratio.median())


class AffineEncoder(nn.Module):
    """q(z | x) = N(A x + b, diag σ²) with a fixed σ: Rainforth et al.'s toy inference network."""

    def __init__(self, dim: int, std: float) -> None:
        super().__init__()
        self.A, self.b = nn.Parameter(torch.eye(dim) / 2), nn.Parameter(torch.zeros(dim))
        self.std = std

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Independent:
        loc = x @ self.A.T + self.b
        return Independent(Normal(loc, torch.full_like(loc, self.std)), 1)


class Identity(nn.Module):
    """p(x | z) has mean z."""

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return z


def toy(dim: int = 20, seed: int = 0) -> tuple[VAE, torch.Tensor]:
    """Rainforth et al.'s (2018, section 4) Gaussian model: p(z) = N(μ, I), p(x | z) = N(z, I), the
    encoder's A = I/2 and b = μ/2 (the posterior mean) perturbed by N(0, 0.01²), σ² = 2/3; 1,024
    points drawn from the model."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(dim, generator=g)
    prior = LearnedNormal(dim)
    with torch.no_grad():
        prior.loc.copy_(mu)
    encoder = AffineEncoder(dim, (2 / 3) ** 0.5)
    with torch.no_grad():
        encoder.A.add_(0.01 * torch.randn(dim, dim, generator=g))
        encoder.b.copy_(mu / 2 + 0.01 * torch.randn(dim, generator=g))
    model = VAE(encoder, Identity(), Gaussian(event_dims=1), prior)
    x = mu + torch.randn(1024, dim, generator=g) * 2**0.5  # p(x) = N(μ, 2I)
    return model, x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 64])
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--warmup-epochs", type=int, default=3)
    p.add_argument("--images", type=int, default=100, help="test images")
    p.add_argument(
        "--per-image", action="store_true", help="the SNR of each image's own gradient, averaged over images"
    )
    p.add_argument("--model", choices=["mnist", "toy"], default="mnist", help="the MNIST net, or the Gaussian toy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="default: benchmarks/results/gradient_snr.json (_toy.json for the toy)")
    args = p.parse_args()
    results = Path(__file__).parent / "results"
    args.out = args.out or results / ("gradient_snr_toy.json" if args.model == "toy" else "gradient_snr.json")
    torch.manual_seed(args.seed)
    if args.model == "toy":
        model, x = toy(seed=args.seed)
        x = x[: args.images]
        groups = {"encoder": list(model.encoder.parameters()), "decoder": list(model.prior.parameters())}
    else:
        train = load_mnist("train", binarize="dynamic", seed=args.seed)
        test = load_mnist("test", binarize="static", seed=args.seed)
        model = build()
        fit(model, train, epochs=args.warmup_epochs, batch_size=100, seed=args.seed, device="cpu", progress=False)
        x = test.float_images()[: args.images]
        groups = {"encoder": list(model.encoder.parameters()), "decoder": list(model.decoder.parameters())}
    batches = x.split(1) if args.per_image else [x]
    rows = []
    for k in args.ks:
        for objective in (IWAE(k), DReG(k)):
            torch.manual_seed(args.seed)
            ratios: dict[str, list[tuple[float, float]]] = {name: [] for name in groups}
            for batch in batches:
                draws: dict[str, list[torch.Tensor]] = {name: [] for name in groups}
                for _ in range(args.draws):
                    loss = objective(model.terms(batch, k=k)).loss
                    grads = torch.autograd.grad(loss, [q for ps in groups.values() for q in ps])
                    i = 0
                    for name, ps in groups.items():
                        draws[name].append(torch.cat([g.flatten() for g in grads[i : i + len(ps)]]))
                        i += len(ps)
                for name, values in draws.items():
                    ratios[name].append(snr(torch.stack(values)))
            row = {"objective": type(objective).__name__, "k": k}
            for name, values in ratios.items():
                row[f"{name}_snr_mean"] = sum(v[0] for v in values) / len(values)
                row[f"{name}_snr_median"] = sum(v[1] for v in values) / len(values)
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = {
        "definition": "per-parameter |mean| / std over independent gradient draws (Rainforth et al. 2018), "
        "averaged (and median) over the parameters of each network",
        "model": (
            "MLP 784-200-200-50 tanh, Bernoulli, N(0, I); "
            f"ELBO-trained {args.warmup_epochs} epochs on dynamically binarized MNIST"
            if args.model == "mnist"
            else "Rainforth et al.'s Gaussian toy: p(z) = N(μ, I), p(x|z) = N(z, I), D = 20, q(z|x) = N(Ax + b, 2/3 I) "
            "near the posterior; 'decoder' is the prior's learnable mean and scale"
        ),
        "batch": (f"each of the first {args.images} " if args.per_image else f"the first {args.images} ")
        + ("test images, binarized once" if args.model == "mnist" else "points drawn from the model"),
        "draws": args.draws,
        "command": f"python benchmarks/gradient_snr.py --model {args.model} --ks {' '.join(map(str, args.ks))} "
        f"--draws {args.draws} --images {args.images}"
        + (" --per-image" if args.per_image else "")
        + (f" --warmup-epochs {args.warmup_epochs}" if args.model == "mnist" else ""),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
