"""Importance-weighted evaluation of the MLP VAE 784-400-20 on a CPU: genvae's ``iw_nll`` (eager and
compiled) against the estimator it replaced and against pythae's ``VAE.get_nll`` on the same network.

    python benchmarks/iw_eval.py [--rounds 3] [--threads 2] [--train-epochs 1] [--full-k 1000 5000]

In one run, round robin over ``--rounds`` rounds (medians reported), at K = 1000 (100 images, the
default evaluation batch) and K = 5000 (20 images): samples per second (one sample = one decoder
pass of one image) of

* ``before``: the previous ``iw_nll`` (copied below): whole batches, chunks of
  ``IW_CHUNK_ELEMENTS`` decoder outputs, the model's value checks in every chunk, ``no_grad``;
* ``eager``, ``compiled`` and (on CPUs with native bfloat16) ``compiled bf16``: today's ``iw_nll``
  with ``compile=False``, ``compile=True`` and ``compile=True, bf16=True``;
* ``pythae``: ``pythae.models.VAE.get_nll(x, n_samples=K, batch_size=K)`` (one image at a time,
  all K samples in one pass: its fastest setting) under ``no_grad``, with genvae's MLP nets.

Each rate is also given as a fraction of the float32 matmul rate (a 2048² product, timed in every
round), counting the FLOPs of one sample's decoder and prior (``FlopCounterMode``; the encoder, once
per image, is left out). The compile time is measured cold (inductor's caches off). Then, on a
model trained for ``--train-epochs`` epochs: the before and after estimates on 500 test images at
K = 1000 (the NLL must agree within the standard error), bfloat16 against float32 on 1,000 images
at K = 1000 with the same draws (emulated where the CPU has no native bfloat16), and one timed
``evaluate_iw_nll`` of the full test set with its defaults for each K of ``--full-k`` (1000).
The real MNIST test set is used when it is
available offline, else 10,000 synthetic digits of the same shape.

Results: ``benchmarks/results/iw_eval.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
import torch._inductor.config
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from genvae import VAE
from genvae.data import ImageDataset, load_mnist, synthetic_digits
from genvae.likelihoods import Bernoulli
from genvae.metrics import evaluate_iw_nll, evaluating, iw_nll, native_bf16
from genvae.metrics import likelihood as likelihood_module
from genvae.models import IW_CHUNK_ELEMENTS
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit

SHAPE, LATENT = (1, 28, 28), 20
RESULTS = Path(__file__).parent / "results" / "iw_eval.json"
TEST_IMAGES = 10_000


def mlp_vae() -> VAE:
    return VAE(MLPEncoder(SHAPE, LATENT), MLPDecoder(LATENT, SHAPE), Bernoulli(), StandardNormal(LATENT))


@torch.no_grad()
def iw_nll_before(model: VAE, x: Tensor, k: int) -> Tensor:
    """The estimator as it was before: every chunk over the whole batch, checks in every chunk."""
    chunk = max(1, IW_CHUNK_ELEMENTS // max(1, x.numel()))
    running = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    done = 0
    while done < k:
        m = min(chunk, k - done)
        log_w = model.terms(x, None, k=m).log_weights()  # (m, B)
        running = torch.logaddexp(running, torch.logsumexp(log_w.double(), 0))
        done += m
    return -(running - math.log(k)).to(x.dtype)


def pythae_vae(model: VAE):
    """pythae's VAE around genvae's MLP nets (the same modules, so the same weights), or None."""
    try:
        from pythae.models import VAE as PythaeVAE
        from pythae.models import VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
    except ImportError:
        return None

    class Enc(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = model.encoder.net

        def forward(self, x):
            loc, logvar = self.net(x.flatten(1)).chunk(2, -1)
            return ModelOutput(embedding=loc, log_covariance=logvar)

    class Dec(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = model.decoder.net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).unflatten(-1, SHAPE))

    config = VAEConfig(input_dim=SHAPE, latent_dim=LATENT, reconstruction_loss="bce")
    return PythaeVAE(config, Enc(), Dec()).eval()


def matmul_rate(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def flops_per_sample(model: VAE, m: int = 1000) -> float:
    """FLOPs of the decoder and the prior for one sample (the encoder runs once per image)."""
    z = torch.randn(m, 1, LATENT)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.prior(None).log_prob(z)
        model.decoder(z)
    return counter.get_total_flops() / m


def seconds(f: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def test_images() -> tuple[ImageDataset, str]:
    try:
        return load_mnist("test"), "MNIST test set"
    except Exception as error:  # offline without a cached copy
        print(f"MNIST unavailable ({error}); synthetic digits instead", file=sys.stderr)
        return synthetic_digits(TEST_IMAGES, seed=1), "synthetic digits (MNIST unavailable)"


def train_model(epochs: int) -> tuple[VAE, str]:
    torch.manual_seed(0)
    model = mlp_vae()
    if epochs == 0:
        return model, "random weights"
    try:
        train, source = load_mnist("train"), "MNIST"
    except Exception:
        train, source = synthetic_digits(60_000, seed=0), "synthetic digits"
    fit(model, train, epochs=epochs, batch_size=128, device="cpu", progress=False)
    return model.eval(), f"trained {epochs} epoch(s) on {source} (Adam 1e-3, batch 128)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-epochs", type=int, default=1, help="0: random weights")
    p.add_argument(
        "--full-k", nargs="*", type=int, default=[1000], help="K of the timed full-test-set runs (none: skip them)"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    test, test_source = test_images()
    x_all = test.float_images()
    model, weights = train_model(args.train_epochs)
    model.eval()
    flops = flops_per_sample(model)
    pythae = pythae_vae(model)

    # ---------------------------------------------------------------- rates, round robin
    settings = {1000: x_all[:100], 5000: x_all[:20]}  # 100,000 samples each

    def run(name: str, k: int) -> Callable[[], object]:
        x = settings[k]
        if name == "before":
            return lambda: iw_nll_before(model, x, k)
        if name == "pythae":
            return lambda: [pythae.get_nll(x[i : i + 1], n_samples=k, batch_size=k) for i in range(len(x))]
        return lambda: iw_nll(model, x, k, compile=name.startswith("compiled"), bf16=name.endswith("bf16"))

    bf16_rows = ["compiled bf16"] if native_bf16("cpu") else []
    names = ["before", "eager", "compiled", *bf16_rows] + (["pythae"] if pythae is not None else [])
    torch._inductor.config.force_disable_caches = True  # a cold compilation, as on a first run
    with evaluating(model, seed=0), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = seconds(run("compiled", 1000))
        again = seconds(run("compiled", 1000))
        compile_seconds = first - again
        times: dict[str, list[float]] = defaultdict(list)
        peaks: list[float] = []
        bf16_peaks: list[float] = []
        for r in range(args.rounds):
            peaks.append(matmul_rate())
            bf16_peaks.append(matmul_rate(dtype=torch.bfloat16))
            for name in names:
                for k in settings:
                    times[f"{name} K={k}"].append(seconds(run(name, k)))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    peak = statistics.median(peaks)
    bf16_peak = statistics.median(bf16_peaks)
    samples = {k: len(x) * k for k, x in settings.items()}
    rates = {key: samples[int(key.split("=")[1])] / statistics.median(t) for key, t in times.items()}
    rows = {}
    for key, rate in rates.items():
        k = key.split(" K=")[1]
        rows[key] = {
            "samples_per_second": rate,
            "fraction_of_float32_matmul": rate * flops / peak,
            "fraction_of_bfloat16_matmul": rate * flops / bf16_peak if "bf16" in key else None,
            "vs_before": rate / rates[f"before K={k}"],
            "vs_pythae": rate / rates[f"pythae K={k}"] if f"pythae K={k}" in rates else None,
        }
        print(f"{key:16s} {rate:10,.0f} samples/s  {rate * flops / peak:6.1%} of matmul", file=sys.stderr)

    # ---------------------------------------------------------------- the estimate: before = after
    x500 = x_all[:500]
    with evaluating(model, seed=1):
        before = torch.cat([iw_nll_before(model, x500[i : i + 100], 1000) for i in range(0, 500, 100)]).double()
    t0 = time.perf_counter()
    after = evaluate_iw_nll(model, x500, 1000, seed=2, compile=True)
    after_seconds = time.perf_counter() - t0
    before_se = float(before.std()) / math.sqrt(len(before))
    # bfloat16 against float32: the same 1,000 images and draws at K = 1000 (emulated without
    # native bfloat16), compiled as the defaults run it.
    f32 = evaluate_iw_nll(model, x_all[:1000], 1000, seed=3, compile=True, bf16=False)
    bf16 = evaluate_iw_nll(model, x_all[:1000], 1000, seed=3, compile=True, bf16=True)
    pythae_nll = None
    if pythae is not None:  # its sign: get_nll returns the mean log-likelihood estimate
        with evaluating(model, seed=4):
            pythae_nll = -float(pythae.get_nll(x_all[:20], n_samples=1000, batch_size=1000))
            genvae_nll = float(iw_nll(model, x_all[:20], 1000).double().mean())
    agreement = {
        "images": 500,
        "k": 1000,
        "before_nll": float(before.mean()),
        "before_stderr": before_se,
        "after_nll": after.nll,
        "after_stderr": after.stderr,
        "difference": after.nll - float(before.mean()),
        "after_seconds": after_seconds,
        "float32_nll_1000_images_k1000": f32.nll,
        "bf16_nll_1000_images_k1000": bf16.nll,
        "bf16_minus_float32_nll_1000_images_k1000_same_seed": bf16.nll - f32.nll,
        "pythae_nll_20_images_k1000": pythae_nll,
        "genvae_nll_20_images_k1000": genvae_nll if pythae is not None else None,
    }
    print(f"before {agreement['before_nll']:.2f} ± {before_se:.2f}, after {after}", file=sys.stderr)

    full = []
    for k in args.full_k:
        t0 = time.perf_counter()
        summary = evaluate_iw_nll(model, test, k)  # the defaults: compiled, bf16 where native
        full.append(
            {
                "data": test_source,
                "k": k,
                "nll": summary.nll,
                "stderr": summary.stderr,
                "num_examples": summary.num_examples,
                "bf16": native_bf16("cpu"),
                "seconds": time.perf_counter() - t0,
            }
        )
        print(f"full test set: {summary} in {full[-1]['seconds']:.0f} s", file=sys.stderr)

    record = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16: {native_bf16('cpu')}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "rounds": args.rounds,
        "model": f"MLP VAE 784-400-20, Bernoulli, N(0, I); {weights}",
        "flops_per_sample": flops,
        "float32_matmul_flops_per_second": peak,
        "bfloat16_matmul_flops_per_second": bf16_peak,
        "compile_seconds": compile_seconds,
        "compile_samples_threshold": likelihood_module.IW_COMPILE_SAMPLES,
        "rates": rows,
        "full_test_set_seconds_extrapolated": {
            f"K={k}": {
                name: TEST_IMAGES * k / rates[f"{name} K={k}"]
                + (compile_seconds if name.startswith("compiled") else 0.0)
                for name in names
            }
            for k in settings
        },
        "nll_agreement": agreement,
        "full_test_set": full,
        "command": "python " + " ".join(sys.argv),
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
