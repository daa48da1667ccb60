"""The binarized-MNIST likelihood table: train a row of the published line, follow its test NLL
against wall-clock time, and evaluate the last weights with the importance-weighted bound.

    python benchmarks/nll.py --row vamp --minutes 150 [--device cpu] [--final-k 5000]

Data: MNIST dynamically binarized (a fresh Bernoulli draw of every training image at every pass;
the test set binarized once, seed 0). Training runs through ``fit`` in slices of epochs resumed from
the run folder, so the run can stop at a time budget; after each slice of about ``--curve-every``
minutes the IW bound (``--curve-k`` samples) on the first ``--curve-n`` test images is recorded
with the training time so far. At the end the IW bound with ``--final-k`` samples on the full test
set (or its first ``--final-n`` images) gives the row's NLL with its standard error over images;
``--evaluate`` does only that, on the weights a run left in its folder, and ``--resume`` continues
a stopped run up to ``--minutes`` of training in all. The record goes to
``benchmarks/results/nll/<row>-<device>.json``; ``--report`` prints the table of all records and
draws their curves (``docs/img/nll/nll_vs_time.png``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.optim.lr_scheduler import ExponentialLR

import genvae
import genvae.runfolder
from genvae import ELBO, IWAE, VAE, Objective
from genvae.data import load_mnist
from genvae.hierarchy import conv_hierarchy, mlp_hierarchy
from genvae.likelihoods import Bernoulli
from genvae.metrics import evaluate_elbo, evaluate_iw_nll, native_bf16
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal, VampPrior
from genvae.schedules import LinearWarmup
from genvae.train import fit

SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class Row:
    """One row of the table: the model, its objective and the published figure it is set against."""

    title: str
    build: Callable[[], nn.Module]
    objective: Callable[[int], Objective]  # steps per epoch → objective
    published: float | None
    source: str
    batch_size: int = 100
    lr: float = 1e-3
    lr_decay: float | None = None  # the learning rate's factor per epoch (ExponentialLR), if any


def burda_vae() -> nn.Module:
    """Burda et al.'s one-layer network: 784-200-200-(z=50)-200-200-784, tanh."""
    enc = MLPEncoder(SHAPE, 50, hidden=(200, 200), activation=nn.Tanh)
    return VAE(enc, MLPDecoder(50, SHAPE, hidden=(200, 200), activation=nn.Tanh), Bernoulli(), StandardNormal(50))


def vamp_vae() -> nn.Module:
    """Tomczak & Welling's VAE + VampPrior: z = 40, two hidden layers of 300, 500 pseudo-inputs."""
    enc = MLPEncoder(SHAPE, 40, hidden=(300, 300))
    return VAE(enc, MLPDecoder(40, SHAPE, hidden=(300, 300)), Bernoulli(), VampPrior(enc, 500, SHAPE))


def iwae_two_layers() -> nn.Module:
    """Burda et al.'s two-layer network, bottom-up: 784-100-100-(z1=100)-50-50-(z2=50), tanh."""
    return mlp_hierarchy(SHAPE, (100, 50), likelihood=Bernoulli(), hidden=((100, 100), (50, 50)), top_down=False)


def hvae(pseudo_inputs: int | None = None) -> Callable[[], nn.Module]:
    """A two-layer top-down hierarchy (z1 = z2 = 40, layers of 300, ReLU), as Tomczak & Welling's HVAE."""
    return lambda: mlp_hierarchy(
        SHAPE, (40, 40), likelihood=Bernoulli(), hidden=300, activation=nn.ReLU, num_pseudo_inputs=pseudo_inputs
    )


def conv_hvae_vamp() -> nn.Module:
    """Tomczak & Welling's convolutional HVAE (L = 2) + VampPrior, approximately: a gated residual
    block after each stride-2 conv (32, 64 channels) at the data and in the decoder, layers of 300,
    z1 = z2 = 40, 500 pseudo-inputs."""
    return conv_hierarchy(
        SHAPE, (40, 40), likelihood=Bernoulli(), channels=(32, 64), blocks=1, gated=True, hidden=300,
        activation=nn.ReLU, num_pseudo_inputs=500,
    )  # fmt: skip


ROWS: dict[str, Row] = {
    "vae": Row("VAE, 1 layer, MLP 200-200, z = 50", burda_vae, lambda s: ELBO(), 86.76, "Burda et al. 2015"),
    "iwae": Row("IWAE k = 50, 1 layer", burda_vae, lambda s: IWAE(50), 84.78, "Burda et al. 2015"),
    "vamp": Row(
        "VAE + VampPrior",
        vamp_vae,
        lambda s: ELBO(LinearWarmup(1.0, steps=5 * s)),
        82.38,
        "Tomczak & Welling 2018",
    ),
    "iwae2": Row(
        "IWAE k = 50, 2 layers (100 + 50 latents)", iwae_two_layers, lambda s: IWAE(50), 82.90, "Burda et al. 2015"
    ),
    "hvae": Row(
        "HVAE (L = 2), top-down, standard normal prior",
        hvae(),
        lambda s: ELBO(LinearWarmup(1.0, steps=20 * s)),
        None,
        "—",
    ),
    "hvae-vamp": Row(
        "HVAE (L = 2) + VampPrior",
        hvae(500),
        lambda s: ELBO(LinearWarmup(1.0, steps=20 * s)),
        81.24,
        "Tomczak & Welling 2018",
        lr_decay=0.993,
    ),
    "conv-hvae-vamp": Row(
        "convolutional HVAE (L = 2) + VampPrior",
        conv_hvae_vamp,
        lambda s: ELBO(LinearWarmup(1.0, steps=20 * s)),
        79.75,
        "Tomczak & Welling 2018",
    ),
}


def nll_summary(model: nn.Module, data, k: int, *, batch_size: int) -> tuple[float, float, int]:
    """Mean IW bound −log p̂(x) (K = ``k``) over ``data``, its standard error over images, and N."""
    summary = evaluate_iw_nll(model, data, k, batch_size=batch_size)
    return summary.nll, summary.stderr, summary.num_examples


def _row(r: dict) -> str:
    """One line of the table for the record ``r``."""
    final = r.get("final")
    published = f"{r['published_nll']:.2f}" if r["published_nll"] is not None else "—"
    if final is None:
        measured = estimator = missed = elbo = "not evaluated"
    else:
        measured = f"{final['nll']:.2f} ± {final['stderr']:.2f}"
        images = "full test set" if final["test_images"] == 10_000 else f"first {final['test_images']:,} test images"
        bf16 = ", bf16 products" if final.get("bf16_products") else ""
        estimator = f"{final['estimator']}, {images}{bf16}"
        gap = final["nll"] - r["published_nll"] if r["published_nll"] is not None else None
        missed = "—" if gap is None else f"{gap:.2f} nats" if gap > 1.0 else f"reached ({gap:+.2f})"
        elbo = f"{final['test_neg_elbo']:.2f}"
    return (
        f"| {r['model']} ({r['objective']}) | {published} | {r['source']} | {measured} | {estimator} | {missed} | "
        f"{elbo} | {r['epochs']} | {r['device']} | {r['train_seconds'] / 60:.0f} min | {r['parameters']:,} |"
    )


def _curve_key(r: dict) -> str:
    """The name under which the record's curve points hold their bound, ``iw_nll_k<K>_n<N>``."""
    return next(k for k in r["curve"][0] if k.startswith("iw_nll"))


def _curve(r: dict) -> str:
    """A sentence on the record's curve: its points, and whether it still fell where it stopped."""
    key = _curve_key(r)
    k, n = key.removeprefix("iw_nll_k").split("_n")
    points = ", ".join(f"{c[key]:.2f} after {c['train_seconds'] / 60:.0f} min" for c in r["curve"])
    end = r["curve"][-1]
    before = [c for c in r["curve"][1:] if c["train_seconds"] <= end["train_seconds"] - 300]  # ≥ 5 minutes back
    trend = ""
    if before:
        start = before[-1]
        minutes = (end["train_seconds"] - start["train_seconds"]) / 60
        fell = start[key] - end[key]
        trend = f"; over its last {minutes:.0f} minutes it fell {fell:.2f} nats" if fell > 0 else "; flat at the end"
    return f"- {r['model']}: IW bound, K = {k}, first {int(n):,} test images: {points}{trend}."


def report(records: Path, figure: Path) -> str:
    """The Markdown table of every record under ``records``, its curves in words, and their figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = [json.loads(f.read_text()) for f in sorted(records.glob("*.json"))]
    found.sort(key=lambda r: -(r["published_nll"] or 0.0))  # the published line, top down
    lines = [
        "| model | published NLL | source | genvae NLL | estimator | missed by | test −ELBO | epochs | device | "
        "training time | parameters |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for r in found:
        lines.append(_row(r))
        key = _curve_key(r)
        ax.plot(
            [c["train_seconds"] / 60 for c in r["curve"]], [c[key] for c in r["curve"]], marker="o", label=r["model"]
        )
        if r["published_nll"] is not None:
            ax.axhline(r["published_nll"], ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.axhline(84.0, color="grey", ls="--", lw=0.8, label="84 nats (the 2.5-hour CPU target)")
    ax.set_ylim(76, 112)  # the first points of a run lie far above; the frontier is what matters
    ax.set(xlabel="training time (minutes)", ylabel="test NLL, IW bound (nats)", title="binarized MNIST")
    ax.legend(fontsize=7)
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    return "\n".join([*lines, "", *(_curve(r) for r in found)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="print the table of the records and draw their curves")
    p.add_argument("--row", choices=list(ROWS))
    p.add_argument("--minutes", type=float, default=60.0, help="training budget in wall-clock minutes")
    p.add_argument("--max-epochs", type=int, default=10_000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads on a CPU (default: torch's)")
    p.add_argument("--curve-every", type=float, default=10.0, help="minutes between curve points")
    p.add_argument("--curve-k", type=int, default=500)
    p.add_argument("--curve-n", type=int, default=1000)
    p.add_argument("--final-k", type=int, default=5000, help="0: no final evaluation")
    p.add_argument("--final-n", type=int, default=None, help="the first N test images (default: all)")
    p.add_argument("--evaluate", action="store_true", help="only the final evaluation of the run folder's weights")
    p.add_argument("--resume", action="store_true", help="continue the row's run until --minutes of training in all")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="fit(compile=True): on a CPU the whole step, for MLPs")
    p.add_argument("--runs", type=Path, default=Path("runs/nll"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.report:
        print(report(Path("benchmarks/results/nll"), Path("docs/img/nll/nll_vs_time.png")))
        return
    if args.row is None:
        p.error("expected --row NAME or --report")
    if args.threads:
        torch.set_num_threads(args.threads)
    row = ROWS[args.row]
    device = genvae.train.resolve_device(args.device)
    out = args.out or Path("benchmarks/results/nll") / f"{args.row}-{device.type}.json"
    run = args.runs / f"{args.row}-{device.type}"
    train, test = load_mnist("train", binarize="dynamic"), load_mnist("test", binarize="dynamic", seed=0)
    curve_test = test.subset(args.curve_n)
    torch.manual_seed(args.seed)
    model = row.build().to(device)
    objective = row.objective(-(-len(train) // row.batch_size))
    record: dict[str, object] = {
        "row": args.row,
        "model": row.title,
        "published_nll": row.published,
        "source": row.source,
        "objective": repr(objective),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": row.batch_size,
        "lr": row.lr,
        "lr_decay_per_epoch": row.lr_decay,
        "budget_minutes": args.minutes,
        "compile": args.compile,
        "curve": [],
    }
    trained, epochs, per_epoch = 0.0, 0, None
    if args.evaluate or args.resume:  # the run folder's last weights, and the record its training wrote
        record = {**json.loads(out.read_text()), "budget_minutes": args.minutes}
        if args.resume:
            record["threads_after_resume"] = torch.get_num_threads()
        history = json.loads(genvae.runfolder.read_member(run, "history.json"))
        history = history if isinstance(history, list) else history["history"]
        late = [h["seconds"] for h in history if h["epoch"] > record["epochs"]]  # after the last curve point
        record.update(epochs=len(history), train_seconds=round(record["train_seconds"] + sum(late), 1))
        trained, epochs = record["train_seconds"], record["epochs"]
        if args.evaluate:
            model, args.max_epochs = genvae.load(run).to(device), 0
    while trained < 60 * args.minutes and epochs < args.max_epochs:
        left = 60 * args.minutes - trained
        slice_s = min(60 * args.curve_every, left)
        n = 1 if per_epoch is None else max(1, min(int(slice_s / per_epoch), args.max_epochs - epochs))
        if per_epoch is not None and n * per_epoch > left + 0.5 * per_epoch and n == 1:
            break
        started = time.perf_counter()
        history = fit(
            model, train, test=test, epochs=epochs + n, objective=objective, batch_size=row.batch_size, lr=row.lr,
            device=device, seed=args.seed, out=run, resume=epochs > 0, progress=False, compile=args.compile,
            scheduler=None if row.lr_decay is None else partial(ExponentialLR, gamma=row.lr_decay),
            amp=False,  # float32 throughout; the engine must not change between the resumed slices
        ).history  # fmt: skip
        trained += time.perf_counter() - started
        per_epoch = history[-1].seconds
        epochs += n
        nll, se, _ = nll_summary(model, curve_test, args.curve_k, batch_size=100)
        point = {"epoch": epochs, "train_seconds": round(trained, 1), "test_elbo_loss": history[-1].test_loss,
                 f"iw_nll_k{args.curve_k}_n{args.curve_n}": nll, "stderr": se}  # fmt: skip
        record["curve"].append(point)  # type: ignore[union-attr]
        print(json.dumps(point), flush=True)
        record.update(epochs=epochs, train_seconds=round(trained, 1))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")
    if args.final_k == 0:
        return
    started = time.perf_counter()
    final_test = test.subset(args.final_n) if args.final_n else test
    nll, se, n_test = nll_summary(model, final_test, args.final_k, batch_size=100)
    record.update(
        final={
            "estimator": f"IW bound, K = {args.final_k}",
            "bf16_products": native_bf16(device),  # evaluate_iw_nll's default: on CPUs with bf16 units
            "test_neg_elbo": evaluate_elbo(model, test).loss,
            "nll": nll,
            "stderr": se,
            "test_images": n_test,
            "eval_seconds": round(time.perf_counter() - started, 1),
        }  # fmt: skip
    )
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["final"]), flush=True)


if __name__ == "__main__":
    main()
