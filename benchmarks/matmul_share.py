"""How much of the MLP VAE's CPU training step is matrix products: the eager step and the compiled
step of ``fit(compile=True)`` against their eleven matrix products alone (same shapes, same thread
count), and a large matmul for the machine's rate.

    python benchmarks/matmul_share.py [--batch 128] [--rounds 7]

Rounds are interleaved (step, products, large matmul) and the medians are printed, so that a drift
in the machine's speed falls on all three alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from genvae import ELBO, VAE
from genvae.engines import Batch, Step, train_step
from genvae.engines.whole_step import CompiledAdamStep
from genvae.likelihoods import Bernoulli
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal

SHAPE, LATENT, HIDDEN, PIXELS = (1, 28, 28), 20, 400, 784
FLOPS_PER_IMAGE = 3.28e6  # one training step, counted by FlopCounterMode (benchmarks/throughput.py)


def seconds_per_call(f: Callable[[int], object], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        f(i)
    return (time.perf_counter() - t0) / n


def vae_and_adam(fused: bool | None = None) -> tuple[VAE, torch.optim.Adam]:
    """The MLP VAE 784-400-20 without per-step value checks, and an Adam on its parameters."""
    model = VAE(MLPEncoder(SHAPE, LATENT), MLPDecoder(LATENT, SHAPE), Bernoulli(), StandardNormal(LATENT))
    model.validating = False
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)


def adam_step(model: VAE, opt: torch.optim.Adam, count: torch.Tensor) -> Step:
    """The eager training step: genvae's train_step (loss, autograd, Adam)."""

    def step(batch: Batch) -> None:
        train_step(model, ELBO(), opt, batch, step=count)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    b = args.batch
    torch.manual_seed(0)
    data = torch.rand(60000, *SHAPE)
    batches = torch.randperm(60000)[: (60000 // b) * b].view(-1, b)  # (steps, B)
    eager = adam_step(*vae_and_adam(fused=True), torch.zeros((), dtype=torch.int64))
    # fit(compile=True)'s CPU step: the whole step (gradients and Adam) as one compiled program.
    model, opt = vae_and_adam()
    count = torch.zeros((), dtype=torch.int64)
    whole = CompiledAdamStep(adam_step(model, opt, count), model, ELBO(), opt, count, torch.zeros(()))

    def step(i: int) -> None:
        eager(Batch(data.index_select(0, batches[i % len(batches)])))  # (B, 1, 28, 28)

    def compiled(i: int) -> None:
        whole(Batch(data.index_select(0, batches[i % len(batches)])))

    # The products of one step: 4 forward (with bias), 4 weight gradients, 3 input gradients.
    r = torch.rand
    x, h, z = r(b, PIXELS), r(b, HIDDEN), r(b, LATENT)
    w1, w2, w3, w4 = r(HIDDEN, PIXELS), r(2 * LATENT, HIDDEN), r(HIDDEN, LATENT), r(PIXELS, HIDDEN)
    b1, b2, b3, b4 = r(HIDDEN), r(2 * LATENT), r(HIDDEN), r(PIXELS)
    g1, g2, g3, g4 = r(b, HIDDEN), r(b, 2 * LATENT), r(b, HIDDEN), r(b, PIXELS)

    def products(i: int) -> None:
        torch.addmm(b1, x, w1.t()), torch.addmm(b2, h, w2.t()), torch.addmm(b3, z, w3.t())
        torch.addmm(b4, h, w4.t())
        g1.t() @ x, g2.t() @ h, g3.t() @ z, g4.t() @ h
        g2 @ w2, g3 @ w3, g4 @ w4

    a, c = torch.randn(2048, 2048), torch.randn(2048, 2048)

    def matmul(i: int) -> None:
        a @ c

    for f in (step, compiled, products, matmul):
        seconds_per_call(f, 20)  # warm-up (and the compilation)
    times: dict[str, list[float]] = {"step": [], "compiled": [], "products": [], "matmul": []}
    for _ in range(args.rounds):
        times["step"].append(seconds_per_call(step, 100))
        times["compiled"].append(seconds_per_call(compiled, 100))
        times["products"].append(seconds_per_call(products, 100))
        times["matmul"].append(seconds_per_call(matmul, 5))
    t = {k: statistics.median(v) for k, v in times.items()}
    peak = 2 * 2048**3 / t["matmul"]
    flops = FLOPS_PER_IMAGE * b
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {b}")
    print(f"large matmul      {peak / 1e9:8.1f} GFLOP/s")
    for name, key in (("eager step", "step"), ("compiled step", "compiled"), ("products only", "products")):
        print(f"{name:17s} {t[key] * 1e3:8.2f} ms  {flops / t[key] / peak:6.1%} of the matmul rate")
    share = {k: t["products"] / t[k] for k in ("step", "compiled")}
    print(f"products' share of the step: eager {share['step']:.0%}, compiled {share['compiled']:.0%}")


if __name__ == "__main__":
    main()
