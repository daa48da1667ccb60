"""The measurements behind ``genvae.engines``'s automatic choices on a CPU.

    python benchmarks/engine.py [--quick] [--parts cost quality] [--seeds 1 2 3] [--models mlp conv]

**cost**: what compiling the step costs and saves, each loop in a fresh process (as ``genvae
train`` pays it). For the MLP VAE 784-400-20 at batch 128 on MNIST, ``fit(epochs=3)`` with the
eager float32 step and with the whole step compiled in bfloat16, the latter three times: with an
empty inductor cache (the first compile on a machine), with the cache holding another program
(the float32 step: inductor's one-time set-up is done, the program is new) and with the program
itself cached. The compile cost is the first epoch's time less the median of the later ones;
dividing it by the time saved per step gives the break-even number of steps.

**quality**: test −ELBO (single-sample, nats per image) after ``--epochs`` epochs (10), float32
eager against the engine that ``fit``'s defaults pick on this machine for a long run (the whole
step compiled, with bf16 autocast where the CPU has bfloat16 matrix units, channels-last for the
conv VAE), for each seed; the model, data and seed are otherwise the same.

Results: ``benchmarks/results/engine.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPE, LATENT = (1, 28, 28), 20

ONE_FIT = """
import json, sys, time, torch
torch.set_num_threads({threads})
from genvae import VAE
from genvae.data import load_mnist
from genvae.likelihoods import Bernoulli
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit
train = load_mnist("train"){subset}
torch.manual_seed(0)
model = VAE(MLPEncoder((1, 28, 28), 20), MLPDecoder(20, (1, 28, 28)), Bernoulli(), StandardNormal(20))
t0 = time.perf_counter()
result = fit(model, train, epochs=3, progress=False, compile={compile}, amp={amp})
print(json.dumps({{"fit_seconds": time.perf_counter() - t0, "epochs": [h.seconds for h in result.history],
                  "steps_per_epoch": -(-len(train) // 128), "engine": result.engine.describe()}}))
"""


def one_fit(compile: bool, amp: bool, cache: str, threads: int, quick: bool) -> dict:
    """``fit(epochs=3)`` of the MLP VAE in a fresh process with inductor's cache in ``cache``."""
    code = ONE_FIT.format(threads=threads, subset=".subset(8192)" if quick else "", compile=compile, amp=amp)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cost(rounds: int, threads: int, quick: bool) -> dict:
    """Compile cost and break-even steps, round robin over ``rounds`` fresh caches."""
    runs: dict[str, list[dict]] = {"eager": [], "cold": [], "new program": [], "cached": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            runs["eager"].append(one_fit(False, False, cache, threads, quick))
            runs["cold"].append(one_fit(True, True, cache, threads, quick))
        with tempfile.TemporaryDirectory() as cache:
            one_fit(True, False, cache, threads, quick)  # fills the cache with the float32 program
            runs["new program"].append(one_fit(True, True, cache, threads, quick))
            runs["cached"].append(one_fit(True, True, cache, threads, quick))
    steps = runs["eager"][0]["steps_per_epoch"]
    eager_epoch = statistics.median(s for r in runs["eager"] for s in r["epochs"][1:])
    compiled = [r for k in ("cold", "new program", "cached") for r in runs[k]]
    fast_epoch = statistics.median(s for r in compiled for s in r["epochs"][1:])
    saved_per_step = (eager_epoch - fast_epoch) / steps
    out: dict[str, object] = {
        "steps_per_epoch": steps,
        "eager_seconds_per_epoch": eager_epoch,
        "compiled_bf16_seconds_per_epoch": fast_epoch,
        "saved_ms_per_step": 1e3 * saved_per_step,
        "engine": runs["cold"][0]["engine"],
        "runs": runs,
    }
    for kind in ("cold", "new program", "cached"):
        overhead = statistics.median(r["epochs"][0] - statistics.median(r["epochs"][1:]) for r in runs[kind])
        out[f"compile_seconds_{kind.replace(' ', '_')}"] = overhead
        out[f"break_even_steps_{kind.replace(' ', '_')}"] = overhead / saved_per_step if saved_per_step > 0 else None
    return out


def quality(models: list[str], seeds: list[int], epochs: int, quick: bool) -> list[dict]:
    """Test −ELBO after ``epochs`` epochs: float32 eager against the long-run default engine."""
    from genvae import VAE
    from genvae.data import load_mnist
    from genvae.engines import choose_engine
    from genvae.likelihoods import Bernoulli
    from genvae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
    from genvae.priors import StandardNormal
    from genvae.train import fit

    nets = {
        "mlp": ("MLP 784-400-20", lambda: (MLPEncoder(SHAPE, LATENT), MLPDecoder(LATENT, SHAPE))),
        "conv": ("conv 32-64-128, z=20", lambda: (ConvEncoder(SHAPE, LATENT), ConvDecoder(LATENT, SHAPE))),
    }
    train, test = load_mnist("train"), load_mnist("test")
    if quick:
        train, test = train.subset(4096), test.subset(1000)
    rows = []
    for name in models:
        label, make = nets[name]
        for seed in seeds:
            for loop in ("float32 eager", "default (long run)"):
                torch.manual_seed(seed)
                model = VAE(*make(), Bernoulli(), StandardNormal(LATENT))
                if loop == "float32 eager":
                    options = {"compile": False, "amp": False}
                else:  # what "auto" picks for a run long enough to compile, whatever this one's length
                    engine = choose_engine(model, "cpu", 10**9)
                    options = {"compile": engine.compile, "amp": engine.amp}
                t0 = time.perf_counter()
                result = fit(model, train, test=test, epochs=epochs, seed=seed, device="cpu", progress=False, **options)
                row = {
                    "model": label,
                    "loop": loop,
                    "engine": result.engine.describe(),
                    "seed": seed,
                    "epochs": epochs,
                    "test_loss": result.history[-1].test_loss,
                    "seconds": time.perf_counter() - t0,
                }
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="subsets and 2 epochs: a smoke run")
    p.add_argument("--parts", nargs="+", choices=("cost", "quality"), default=["cost", "quality"])
    p.add_argument("--models", nargs="+", choices=("mlp", "conv"), default=["mlp", "conv"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2, help="fresh-cache repeats of the cost part")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from genvae.engines import native_bf16

    path = args.out / f"engine{'-quick' if args.quick else ''}.json"
    record: dict[str, object] = json.loads(path.read_text()) if path.is_file() else {}
    record.update(
        {
            "device": f"cpu-{platform.machine()}-{args.threads}threads",
            "torch": torch.__version__,
            "native_bf16": native_bf16("cpu"),
            "quick": args.quick,
        }
    )
    if "cost" in args.parts:
        record["cost"] = cost(1 if args.quick else args.rounds, args.threads, args.quick)
        c = record["cost"]
        print(
            f"compile: {c['compile_seconds_cold']:.1f} s cold, {c['compile_seconds_new_program']:.1f} s for a new "
            f"program, {c['compile_seconds_cached']:.1f} s cached; saves {c['saved_ms_per_step']:.2f} ms a step; "
            f"break-even {c['break_even_steps_cold']:,.0f} / {c['break_even_steps_new_program']:,.0f} / "
            f"{c['break_even_steps_cached']:,.0f} steps",
        )
    if "quality" in args.parts:
        epochs = 2 if args.quick else args.epochs
        record["quality"] = quality(args.models, args.seeds, epochs, args.quick)
        for model in sorted({r["model"] for r in record["quality"]}):
            by = {
                loop: [r["test_loss"] for r in record["quality"] if r["model"] == model and r["loop"] == loop]
                for loop in ("float32 eager", "default (long run)")
            }
            diff = statistics.mean(by["default (long run)"]) - statistics.mean(by["float32 eager"])
            print(f"{model}: test −ELBO after {epochs} epochs, default − float32 eager = {diff:+.3f} nats (mean)")
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
