"""The classic MNIST VAE: MLP 784-400-20, Bernoulli likelihood on grayscale pixels, Adam 1e-3,
batch 128 (100 epochs, as in the report that gives it as its code example).

Writes samples, reconstructions and the loss curve, and reports the test −ELBO (single-sample)
and the importance-weighted NLL bound.

    python examples/mlp_vae.py            # full run
    python examples/mlp_vae.py --quick    # seconds
"""

from __future__ import annotations

import time

import torch
from _common import mnist, parse, parser, table, write_results

from genvae import VAE
from genvae.likelihoods import Bernoulli
from genvae.metrics import evaluate_elbo, evaluate_iw_nll
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit
from genvae.viz import save_grid, save_loss_curves, save_reconstructions


def main() -> None:
    p = parser(__doc__.splitlines()[0], epochs=100, name="mlp_vae")
    p.add_argument("--iw-samples", type=int, default=1000, help="K of the importance-weighted NLL (default 1000)")
    args = parse(p)
    started = time.perf_counter()
    epochs, k = (1, 10) if args.quick else (args.epochs, args.iw_samples)
    train, test = mnist(args.quick)

    torch.manual_seed(args.seed)
    shape = train.data_shape
    model = VAE(
        MLPEncoder(shape, 20, hidden=(400,)), MLPDecoder(20, shape, hidden=(400,)), Bernoulli(), StandardNormal(20)
    )
    result = fit(
        model,
        train,
        test=test,
        epochs=epochs,
        batch_size=128,
        lr=1e-3,
        seed=args.seed,
        device=args.device,
        out=args.out / "run",
        resume=True,
    )

    elbo = evaluate_elbo(model, test)
    iw = evaluate_iw_nll(model, test, k)
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(0)
    save_grid(model.sample(64, generator=g), args.out / "samples.png", nrow=8)
    x = test.float_images()[:16].to(device)
    save_reconstructions(x, model.reconstruct(x), args.out / "reconstructions.png", nrow=8)
    save_loss_curves(result.history, args.out / "loss.png", title="MLP VAE 784-400-20 on MNIST")

    row = {
        "test −ELBO (1 sample)": elbo.loss,
        "KL": elbo.kl,
        f"IW-NLL (K={k})": f"{iw.nll:.2f} ± {iw.stderr:.2f}",
        "epochs": epochs,
        "s/epoch": sum(h.seconds for h in result.history) / epochs,
    }
    print(table([row], list(row)))
    write_results(
        args.out,
        "mlp_vae",
        args,
        {
            "test_neg_elbo": elbo.loss,
            "test_kl": elbo.kl,
            "test_iw_nll": iw.nll,
            "test_iw_nll_stderr": iw.stderr,
            "iw_samples": k,
            "history": [h.__dict__ for h in result.history],
        },
        started,
    )


if __name__ == "__main__":
    main()
