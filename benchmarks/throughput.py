"""Training throughput of genvae against the standard tutorial loop and pythae, on one device.

    python benchmarks/throughput.py [--device cpu|cuda] [--quick] [--models mlp conv] [--batches 128 1024]

For the MLP VAE 784-400-20 and the conv VAE of the examples, at batch 128 and 1024, it measures
images per second of a full training step (forward, backward, Adam) for genvae eager, genvae with
``torch.compile`` (on a CPU the whole step compiled as one program, also with bf16 autocast) and,
on a GPU, the whole step replayed as a CUDA graph (``fit(cuda_graph=True)``, with compile, bf16
autocast and max-autotune GEMMs); then the tutorial loop (torchvision MNIST +
ToTensor + DataLoader) and, when installed, pythae's VAE + BaseTrainer with the same networks, in
the same run. Every loop is timed once per round, round robin (``--rounds``: 3 on a CPU, whose
speed drifts on a shared machine, 1 on a GPU), and each figure is the median over rounds of the
epochs after a fit's first (which holds compilation and warm-up); the device is synchronised
before each clock read. The model's FLOPs per image (counted by torch's FlopCounterMode on one
training step) over a large matmul's rate, measured in every round in float32 and bfloat16, give
each figure as a fraction of the machine's limit: bf16 loops against the bfloat16 rate, the others
against the float32 rate.
Results: ``benchmarks/results/DEVICE.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from tutorial_loop import TutorialVAE, loss_function  # noqa: E402

from genvae import VAE  # noqa: E402
from genvae.data import ImageDataset, fetch_mnist, load_mnist  # noqa: E402
from genvae.engines import choose_engine  # noqa: E402
from genvae.likelihoods import Bernoulli  # noqa: E402
from genvae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder  # noqa: E402
from genvae.priors import StandardNormal  # noqa: E402
from genvae.train import fit, resolve_device  # noqa: E402

SHAPE, LATENT = (1, 28, 28), 20


@dataclass
class Row:
    model: str
    loop: str
    batch: int
    images_per_second: float
    seconds_per_epoch: float
    gflop_per_second: float
    fraction_of_matmul: float
    vs_tutorial: float | None = None
    vs_pythae: float | None = None
    rounds: list[float] | None = None  # images/s in each round
    vs_tutorial_rounds: list[float] | None = None  # the ratio within each round (round robin)
    vs_pythae_rounds: list[float] | None = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """FLOP/s of an n×n by n×n matmul: median over ``repeats`` after warm-up."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def mlp_vae() -> VAE:
    return VAE(MLPEncoder(SHAPE, LATENT), MLPDecoder(LATENT, SHAPE), Bernoulli(), StandardNormal(LATENT))


def conv_vae() -> VAE:
    return VAE(ConvEncoder(SHAPE, LATENT), ConvDecoder(LATENT, SHAPE), Bernoulli(), StandardNormal(LATENT))


def flops_per_image(make: Callable[[], VAE], device: torch.device, batch: int = 128) -> float:
    """FLOPs of one training step (forward and backward) divided by the batch size."""
    model = make().to(device)
    x = torch.rand(batch, *SHAPE, device=device)
    with FlopCounterMode(display=False) as counter, model.validate_args(False):
        model.elbo(x).loss.backward()
    return counter.get_total_flops() / batch


def time_genvae(make, train: ImageDataset, device, batch: int, epochs: int, **options) -> float:
    """Median images/s over the epochs after the first, as ``fit`` reports them."""
    torch.manual_seed(0)
    history = fit(make(), train, epochs=epochs, batch_size=batch, device=device, progress=False, **options).history
    return statistics.median(h.images_per_second for h in history[1:])


def time_tutorial(make_net: Callable[[], nn.Module], device, batch: int, steps: int, repeats: int) -> float:
    """images/s of the tutorial loop: torchvision MNIST + ToTensor + DataLoader, batches moved to the device."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    root = fetch_mnist().parent.parent
    loader = DataLoader(
        datasets.MNIST(root, train=True, download=False, transform=transforms.ToTensor()),
        batch_size=batch,
        shuffle=True,
    )
    torch.manual_seed(0)
    model = make_net().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for r in range(repeats + 1):
        n, it = 0, iter(loader)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            data, _ = next(it)
            data = data.to(device)
            opt.zero_grad()
            recon, mu, logvar = model(data)
            loss = loss_function(recon, data, mu, logvar)
            loss.backward()
            loss.item()  # the tutorial reads the loss every step
            opt.step()
            n += data.shape[0]
        sync(device)
        if r:  # the first repeat is warm-up
            rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def time_pythae(device, train: ImageDataset, batch: int, epochs: int) -> float | None:
    """images/s of pythae's VAE + BaseTrainer with genvae's MLP nets wrapped as pythae's encoder/decoder."""
    try:
        from pythae.models import VAE as PythaeVAE
        from pythae.models import VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
    except ImportError:
        return None

    class Enc(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = MLPEncoder(SHAPE, LATENT).net

        def forward(self, x):
            loc, logvar = self.net(x.flatten(1)).chunk(2, -1)
            return ModelOutput(embedding=loc, log_covariance=logvar)

    class Dec(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = MLPDecoder(LATENT, SHAPE).net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).unflatten(-1, SHAPE))

    from pythae.data.datasets import BaseDataset

    data = BaseDataset(train.float_images(), train.labels)

    torch.manual_seed(0)
    model = PythaeVAE(VAEConfig(input_dim=SHAPE, latent_dim=LATENT, reconstruction_loss="bce"), Enc(), Dec())
    seconds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = BaseTrainerConfig(
            output_dir=tmp,
            num_epochs=1 + epochs,
            per_device_train_batch_size=batch,
            learning_rate=1e-3,
            no_cuda=device.type != "cuda",
            steps_saving=None,
            steps_predict=None,
        )
        trainer = BaseTrainer(model=model, train_dataset=data, training_config=cfg)
        train_epoch = trainer.train_step  # one pass over the training set, as fit's epoch clock

        def timed_epoch(epoch: int):
            sync(device)
            t0 = time.perf_counter()
            loss = train_epoch(epoch)
            sync(device)
            seconds.append(time.perf_counter() - t0)
            return loss

        trainer.train_step = timed_epoch
        trainer.train()
    return len(data) / statistics.median(seconds[1:])  # the first epoch is warm-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="small subsets, one timed epoch: a smoke run")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--rounds", type=int, default=None, help="round-robin repeats (default: 3 on a CPU, 1 on a GPU)")
    p.add_argument("--models", nargs="+", choices=("mlp", "conv"), default=["mlp", "conv"], help="models to time")
    p.add_argument("--batches", nargs="+", type=int, default=[128, 1024], help="batch sizes to time")
    args = p.parse_args()
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if gpu else f"cpu-{platform.machine()}-{torch.get_num_threads()}threads"

    full = load_mnist("train")
    # Rounds: every loop is timed once per round, round robin, and the medians are reported, so that
    # the slow phases of a shared machine (a VM's neighbours) fall on every loop alike. A GPU is
    # steady: one round of four epochs there. Within a fit the first epoch (compilation, capture,
    # warm-up) is dropped.
    rounds = args.rounds if args.rounds is not None else (1 if gpu or args.quick else 3)
    epochs = 4 if rounds == 1 and not args.quick else 2
    subset = {
        "mlp": full.subset(8192) if args.quick else full,
        "conv": full.subset(2048 if args.quick else (60000 if gpu else 8192)),
    }
    matmul_n = 8192 if gpu else 2048
    peaks: dict[str, list[float]] = defaultdict(list)

    def measure_peak() -> dict[str, float]:
        rates = {
            "float32": matmul_rate(device, torch.float32, matmul_n),
            "bfloat16": matmul_rate(device, torch.bfloat16, matmul_n),
        }
        for k, v in rates.items():
            peaks[k].append(v)
        return rates

    first = measure_peak()
    print(
        f"device: {name}; torch {torch.__version__}; {rounds} round(s); matmul "
        + ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in first.items()),
        file=sys.stderr,
    )

    off = {"compile": False, "amp": False, "cuda_graph": False}  # fit's "auto" would choose for itself
    loops: dict[str, dict] = {
        "genvae default": {},  # what `genvae train` (10 epochs) picks, resolved per model and batch size
        "genvae eager": off,
        "genvae compile": {**off, "compile": True},
    }
    if gpu:
        loops["genvae compile reduce-overhead"] = {**off, "compile": "reduce-overhead"}
        loops["genvae step graph"] = {**off, "cuda_graph": True}
        loops["genvae step graph + compile"] = {**off, "cuda_graph": True, "compile": True}
        loops["genvae step graph + compile + bf16"] = {"cuda_graph": True, "compile": True, "amp": True}
        # Triton GEMMs with fused epilogues (bias, activation, casts): fewer, shorter kernels. Its
        # autotuning takes a minute or two a fit, so it is timed on the MLP only.
        loops["genvae step graph + max-autotune + bf16"] = {
            "cuda_graph": True,
            "compile": "max-autotune-no-cudagraphs",
            "amp": True,
        }
    else:
        # fit's CPU path (the whole step compiled), its products and casts in bfloat16.
        loops["genvae compile + bf16"] = {**off, "compile": True, "amp": True}
    rows: list[Row] = []
    record = {
        "device": name,
        "torch": torch.__version__,
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "epochs_per_fit": epochs,
        "flops_per_image": {"MLP": flops_per_image(mlp_vae, device), "conv": flops_per_image(conv_vae, device)},
    }
    path = args.out / f"{'cuda' if gpu else 'cpu'}{'-quick' if args.quick else ''}.json"

    def save(rows: list[Row]) -> Path:
        """Write the record with the rows so far (a run cut short keeps what it measured)."""
        args.out.mkdir(parents=True, exist_ok=True)
        median_peaks = {k: statistics.median(v) for k, v in peaks.items()}
        path.write_text(
            json.dumps({**record, "matmul_flops_per_second": median_peaks, "rows": [asdict(r) for r in rows]}, indent=2)
            + "\n"
        )
        return path

    models = {"mlp": ("MLP 784-400-20", mlp_vae), "conv": ("conv 32-64-128, z=20", conv_vae)}
    for model_name, make in (models[m] for m in args.models):
        flops = flops_per_image(make, device)
        data = subset["mlp" if make is mlp_vae else "conv"]
        for batch in args.batches:
            # `genvae train`'s defaults: the engine chosen for its 10 epochs of the full training set.
            default = choose_engine(make(), device, 10 * -(-len(full) // batch))
            loops["genvae default"] = {"compile": default.compile, "amp": default.amp, "cuda_graph": default.cuda_graph}
            print(f"{model_name} b{batch}: the default engine is {default.describe()}", file=sys.stderr)
            samples: dict[str, list[float]] = defaultdict(list)
            block_peaks: dict[str, list[float]] = defaultdict(list)
            for _ in range(rounds):
                for k, v in measure_peak().items():
                    block_peaks[k].append(v)
                if make is mlp_vae:
                    steps = 40 if args.quick else (200 if batch == 128 else 40)
                    samples["tutorial"].append(
                        time_tutorial(TutorialVAE, device, batch, steps, repeats=1 if args.quick or rounds > 1 else 3)
                    )
                    ips = time_pythae(
                        device, full.subset(4096 if args.quick else (60000 if gpu else 16384)), batch, epochs=epochs - 1
                    )
                    if ips is not None:
                        samples["pythae"].append(ips)
                for loop, options in loops.items():
                    if "max-autotune" in str(options.get("compile")) and make is not mlp_vae:
                        continue
                    samples[loop].append(time_genvae(make, data, device, batch, epochs, **options))
            ips_of = {k: statistics.median(v) for k, v in samples.items()}
            peak = {k: statistics.median(v) for k, v in block_peaks.items()}
            references = {k: ips_of.get(k) for k in ("tutorial", "pythae")}
            for loop, options in loops.items():
                if loop not in ips_of:
                    continue
                ips = ips_of[loop]
                rate = ips * flops
                rows.append(
                    Row(
                        model_name,
                        loop,
                        batch,
                        ips,
                        60000 / ips,
                        rate / 1e9,
                        rate / peak["bfloat16" if options.get("amp", False) else "float32"],
                        ips / references["tutorial"] if references["tutorial"] else None,
                        ips / references["pythae"] if references["pythae"] else None,
                        samples[loop],
                        per_round(samples, loop, "tutorial"),
                        per_round(samples, loop, "pythae"),
                    )
                )
                print(f"{model_name} b{batch} {loop}: {ips:,.0f} img/s", file=sys.stderr)
            for ref, ips in references.items():
                if ips:
                    rows.append(
                        Row(
                            model_name,
                            ref,
                            batch,
                            ips,
                            60000 / ips,
                            ips * flops / 1e9,
                            ips * flops / peak["float32"],
                            rounds=samples[ref],
                        )
                    )
            save(rows)

    print(markdown(rows))
    print(f"wrote {save(rows)}", file=sys.stderr)


def per_round(samples: dict[str, list[float]], loop: str, ref: str) -> list[float] | None:
    """``loop``'s rate over ``ref``'s in each round (None without ``ref``)."""
    if len(samples.get(ref, [])) != len(samples[loop]):
        return None
    return [a / b for a, b in zip(samples[loop], samples[ref], strict=True)]


def ratio(median: float | None, rounds: list[float] | None) -> str:
    """``4.8× (4.5–5.1)``: the median ratio and its range over rounds."""
    if not median:
        return ""
    spread = f" ({min(rounds):.1f}–{max(rounds):.1f})" if rounds and len(rounds) > 1 else ""
    return f"{median:.1f}×{spread}"


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    header = ["model", "loop", "batch", "images/s", "s/epoch", "GFLOP/s", "% of matmul", "× tutorial", "× pythae"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            r.model,
            r.loop,
            r.batch,
            f"{r.images_per_second:,.0f}",
            f"{r.seconds_per_epoch:.2f}",
            f"{r.gflop_per_second:.1f}",
            f"{100 * r.fraction_of_matmul:.0f}%",
            ratio(r.vs_tutorial, r.vs_tutorial_rounds),
            ratio(r.vs_pythae, r.vs_pythae_rounds),
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
