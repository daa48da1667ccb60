"""What a 1-D and a 2-D latent space learn: decoded manifolds and the latent scatter, after the
first and after the last epoch.

z = 1: 20 values evenly spaced over [-3, 3], decoded in a row. z = 2: a 20×20 grid over [-5, 5]²
and the posterior means of test digits coloured by label. The report this reproduces observed that
images near the origin are blurrier blends and that the edges repeat a few modes; this script
measures both: the mean per-pixel binary entropy (blur) of the decoded grid in its central 6×6
against its outer ring, and how many distinct classes the MNIST classifier sees in each.

    python examples/latent_manifold.py [--quick]
"""

from __future__ import annotations

import time

import torch
from _common import classifier, mnist, parse, parser, table, write_results

from genvae import VAE
from genvae.likelihoods import Bernoulli
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit
from genvae.viz import save_latent_scatter, save_manifold

GRID, LIMIT = 20, 5.0


@torch.no_grad()
def centre_vs_edge(model: VAE, clf: torch.nn.Module) -> dict[str, float]:
    """Blur (mean binary entropy per pixel, nats) and distinct predicted classes, centre vs edge."""
    device = next(model.parameters()).device
    t = torch.linspace(-LIMIT, LIMIT, GRID, device=device)
    z = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)  # (400, 2)
    p = model.decode(z).mean.clamp(1e-6, 1 - 1e-6)  # (400, 1, 28, 28)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).mean((1, 2, 3)).reshape(GRID, GRID)
    classes = clf(p).argmax(-1).reshape(GRID, GRID)
    centre = torch.zeros(GRID, GRID, dtype=torch.bool, device=device)
    centre[7:13, 7:13] = True
    edge = torch.ones_like(centre)
    edge[1:-1, 1:-1] = False
    return {
        "blur centre": float(entropy[centre].mean()),
        "blur edge": float(entropy[edge].mean()),
        "classes centre": int(classes[centre].unique().numel()),
        "classes edge": int(classes[edge].unique().numel()),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0], epochs=30, name="latent_manifold")
    args = parse(p)
    started = time.perf_counter()
    epochs = 2 if args.quick else args.epochs
    train, test = mnist(args.quick)
    shape = train.data_shape
    results = {}
    for z in (1, 2):
        torch.manual_seed(args.seed)
        model = VAE(MLPEncoder(shape, z), MLPDecoder(z, shape), Bernoulli(), StandardNormal(z))

        def snapshot(stats, m, z=z):
            if stats.epoch in (1, epochs):
                tag = "first" if stats.epoch == 1 else "last"
                save_manifold(m, args.out / f"manifold_z{z}_{tag}.png", n=GRID, limit=3.0 if z == 1 else LIMIT)
                save_latent_scatter(
                    m,
                    test,
                    args.out / f"latent_z{z}_{tag}.png",
                    n=min(len(test), 3000),
                    title=f"z={z}, after epoch {stats.epoch}",
                )

        result = fit(model, train, test=test, epochs=epochs, seed=args.seed, device=args.device, callbacks=[snapshot])
        results[f"z={z}"] = {"test −ELBO": result.history[-1].test_loss}
        if z == 2:
            clf = classifier(args.quick, train, test, next(model.parameters()).device)
            results["z=2"].update(centre_vs_edge(model, clf))
    rows = [{"latent": k, **v} for k, v in results.items()]
    print(table(rows, ["latent", "test −ELBO", "blur centre", "blur edge", "classes centre", "classes edge"]))
    write_results(args.out, "latent_manifold", args, results, started)


if __name__ == "__main__":
    main()
