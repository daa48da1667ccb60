"""What moves the conv VAE's training step on a CPU: memory order, bfloat16, the whole-step compile.

    python benchmarks/conv_cpu.py [--rounds 3] [--threads 2] [--images 8192]

Two parts, each timed round robin with medians over ``--rounds``:

**Layers.** The step's two largest convolutions (batch 128): the encoder's 3×3 stride-2 conv from
32 channels at 14×14 to 64 at 7×7 and the decoder's transposed conv back, forward and backward
(gradients for input, weight and bias), in float32, float32 channels-last, bf16 autocast, bf16
channels-last and, for the conv, as unfold + matmul; milliseconds per call and GFLOP/s against
the float32 and bfloat16 matmul rates (a 2048² product).

**Steps.** ``fit`` on the first ``--images`` MNIST training images, batch 128, two epochs, the
second timed: eager float32, eager channels-last, eager bf16, the whole step compiled (float32
and bf16, with and without channels-last weights) and the loss alone compiled in float32
(``fit(compile=True)`` with an optimizer factory keeps it off the whole-step path).

Results: ``benchmarks/results/conv_cpu.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from unittest.mock import patch

import torch
import torch.nn.functional as F

import genvae.engines.choice

sys.path.insert(0, str(Path(__file__).parent))
from throughput import matmul_rate  # noqa: E402

from genvae import VAE
from genvae.data import load_mnist
from genvae.likelihoods import Bernoulli
from genvae.nets import ConvDecoder, ConvEncoder
from genvae.priors import StandardNormal
from genvae.train import fit

SHAPE, LATENT, BATCH = (1, 28, 28), 20, 128


def layer_calls() -> dict[str, tuple[Callable[[], None], float, bool]]:
    """name → (one forward and backward, its FLOPs, whether it runs in bf16)."""
    torch.manual_seed(0)
    x = torch.randn(BATCH, 32, 14, 14, requires_grad=True)
    w = torch.randn(64, 32, 3, 3, requires_grad=True)
    b = torch.randn(64, requires_grad=True)
    xd = torch.randn(BATCH, 64, 7, 7, requires_grad=True)
    wd = torch.randn(64, 32, 3, 3, requires_grad=True)
    bd = torch.randn(32, requires_grad=True)
    flops = 3 * 2 * BATCH * 64 * 7 * 7 * 32 * 9  # forward, input gradient, weight gradient

    def conv(bf16: bool, channels_last: bool) -> Callable[[], None]:
        xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        ww = w.contiguous(memory_format=torch.channels_last) if channels_last else w

        def call() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = F.conv2d(xx, ww, b, stride=2, padding=1)
            y.float().sum().backward()

        return call

    def unfold_conv() -> None:
        cols = F.unfold(x, 3, padding=1, stride=2)  # (B, 288, 49)
        y = w.flatten(1) @ cols + b[:, None]  # (B, 64, 49)
        y.sum().backward()

    def deconv(bf16: bool, channels_last: bool) -> Callable[[], None]:
        xx = xd.contiguous(memory_format=torch.channels_last) if channels_last else xd
        ww = wd.contiguous(memory_format=torch.channels_last) if channels_last else wd

        def call() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = F.conv_transpose2d(xx, ww, bd, stride=2, padding=1, output_padding=1)
            y.float().sum().backward()

        return call

    calls: dict[str, tuple[Callable[[], None], float, bool]] = {}
    for name, make in (("conv 32→64", conv), ("transposed conv 64→32", deconv)):
        for bf16 in (False, True):
            for channels_last in (False, True):
                label = f"{name}, {'bf16' if bf16 else 'float32'}{', channels-last' if channels_last else ''}"
                calls[label] = (make(bf16, channels_last), flops, bf16)
    calls["conv 32→64, float32, unfold + matmul"] = (unfold_conv, flops, False)
    return calls


def time_call(call: Callable[[], None], n: int = 20) -> float:
    for _ in range(3):
        call()
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t0) / n


def conv_vae(channels_last: bool) -> VAE:
    torch.manual_seed(0)
    model = VAE(ConvEncoder(SHAPE, LATENT), ConvDecoder(LATENT, SHAPE), Bernoulli(), StandardNormal(LATENT))
    return model.to(memory_format=torch.channels_last) if channels_last else model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=8192)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "conv_cpu.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    calls = layer_calls()
    layer_times: dict[str, list[float]] = defaultdict(list)
    peaks: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        peaks["float32"].append(matmul_rate(torch.device("cpu"), torch.float32, 2048))
        peaks["bfloat16"].append(matmul_rate(torch.device("cpu"), torch.bfloat16, 2048))
        for name, (call, _, _) in calls.items():
            layer_times[name].append(time_call(call))
    peak = {k: statistics.median(v) for k, v in peaks.items()}
    layers = {}
    for name, (_, flops, bf16) in calls.items():
        seconds = statistics.median(layer_times[name])
        layers[name] = {
            "ms": 1e3 * seconds,
            "gflop_per_second": flops / seconds / 1e9,
            "fraction_of_matmul": flops / seconds / peak["bfloat16" if bf16 else "float32"],
        }
        print(f"{name:45s} {1e3 * seconds:6.2f} ms  {flops / seconds / 1e9:6.1f} GFLOP/s", file=sys.stderr)

    data = load_mnist("train").subset(args.images)
    off = {"compile": False, "amp": False, "cuda_graph": False}
    # fit puts a conv model's weights channels-last under the whole-step compile; these rows keep
    # the default memory order (the engine's check answers "no convolutions").
    keep_order = {"whole step compiled", "whole step compiled, bf16"}
    loops: dict[str, tuple[bool, dict]] = {
        "eager": (False, off),
        "eager, channels-last": (True, off),
        "eager, bf16": (False, {**off, "amp": True}),
        "loss compiled": (False, {**off, "compile": True, "optimizer": lambda ps: torch.optim.Adam(ps, fused=True)}),
        "whole step compiled": (False, {**off, "compile": True}),
        "whole step compiled, bf16": (False, {**off, "compile": True, "amp": True}),
        "whole step compiled, channels-last": (True, {**off, "compile": True}),
        "whole step compiled, channels-last, bf16": (True, {**off, "compile": True, "amp": True}),
    }
    rates: dict[str, list[float]] = defaultdict(list)
    engines = {}
    for _ in range(args.rounds):
        for name, (channels_last, options) in loops.items():
            model = conv_vae(channels_last)
            keep = patch.object(genvae.engines.choice, "convolutional", lambda m: False)
            with keep if name in keep_order else nullcontext():
                result = fit(model, data, epochs=2, batch_size=BATCH, device="cpu", progress=False, **options)
            rates[name].append(result.history[-1].images_per_second)
            engines[name] = result.engine.describe()
    base = statistics.median(rates["eager"])
    steps = {}
    print("| loop | engine | images/s | × eager | rounds |\n|---|---|---|---|---|")
    for name, values in rates.items():
        median = statistics.median(values)
        steps[name] = {"images_per_second": median, "vs_eager": median / base, "rounds": values}
        rounds = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {name} | {engines[name]} | {median:,.0f} | {median / base:.2f}× | {rounds} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "device": f"cpu-{platform.machine()}-{args.threads}threads",
        "torch": torch.__version__,
        "rounds": args.rounds,
        "matmul_flops_per_second": peak,
        "layers": layers,
        "steps": steps,
        "command": "python " + " ".join(sys.argv),
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
