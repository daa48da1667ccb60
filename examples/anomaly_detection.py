"""Anomaly detection with a VAE: train on the digits 0–8, then score test images by −ELBO and by
the importance-weighted NLL, and measure how well each score separates

* the held-out 9s from test digits 0–8, and
* corrupted test digits (Gaussian noise, 90° rotation) from clean ones,

as the area under the ROC curve (1.0: perfect, 0.5: chance).

    python examples/anomaly_detection.py [--quick]
"""

from __future__ import annotations

import time

import torch
from _common import mnist, parse, parser, table, write_results
from sklearn.metrics import roc_auc_score

from genvae import VAE
from genvae.likelihoods import Bernoulli
from genvae.metrics import iw_nll
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit
from genvae.viz import save_image_rows

HELD_OUT = 9
NOISE_STD = 0.3


@torch.no_grad()
def scores(model: VAE, x: torch.Tensor, k: int, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image −ELBO (one sample) and IW-NLL (k samples), in nats: higher means more anomalous."""
    device = next(model.parameters()).device
    neg_elbo, nll = [], []
    torch.manual_seed(0)
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(device)
        neg_elbo.append(-model.elbo(xb).elbo.cpu())
        nll.append(iw_nll(model, xb, k).cpu())
    return torch.cat(neg_elbo), torch.cat(nll)


def auroc(normal: torch.Tensor, anomalous: torch.Tensor) -> float:
    labels = torch.cat([torch.zeros(len(normal)), torch.ones(len(anomalous))])
    return float(roc_auc_score(labels.numpy(), torch.cat([normal, anomalous]).numpy()))


def main() -> None:
    p = parser(__doc__.splitlines()[0], epochs=30, name="anomaly_detection")
    p.add_argument("--iw-samples", type=int, default=200)
    args = parse(p)
    started = time.perf_counter()
    epochs, k = (1, 10) if args.quick else (args.epochs, args.iw_samples)
    train, test = mnist(args.quick, train_n=4000, test_n=1000)
    normal_digits = set(range(10)) - {HELD_OUT}
    train_in, _ = train.split_by_labels(normal_digits)
    test_in, test_out = test.split_by_labels(normal_digits)

    torch.manual_seed(args.seed)
    shape = train.data_shape
    model = VAE(MLPEncoder(shape, 20), MLPDecoder(20, shape), Bernoulli(), StandardNormal(20))
    fit(model, train_in, test=test_in, epochs=epochs, seed=args.seed, device=args.device)

    clean = test_in.float_images()
    g = torch.Generator().manual_seed(0)
    corrupted = {
        f"Gaussian noise σ={NOISE_STD}": (clean + NOISE_STD * torch.randn(clean.shape, generator=g)).clamp(0, 1),
        "rotated 90°": torch.rot90(clean, 1, dims=(-2, -1)),
        f"held-out digit {HELD_OUT}": test_out.float_images(),
    }
    base_elbo, base_nll = scores(model, clean, k)
    rows = []
    for name, x in corrupted.items():
        elbo, nll = scores(model, x, k)
        rows.append(
            {
                "anomaly": name,
                "AUROC by −ELBO": auroc(base_elbo, elbo),
                f"AUROC by IW-NLL (K={k})": auroc(base_nll, nll),
                "mean −ELBO normal": float(base_elbo.mean()),
                "mean −ELBO anomalous": float(elbo.mean()),
            }
        )
    save_image_rows(
        [clean[:10], *(x[:10] for x in corrupted.values())],
        ["normal", *corrupted],
        args.out / "anomalies.png",
        title="test inputs scored by the VAE trained on 0–8",
    )
    print(table(rows, list(rows[0])))
    write_results(args.out, "anomaly_detection", args, {"iw_samples": k, "rows": rows}, started)


if __name__ == "__main__":
    main()
