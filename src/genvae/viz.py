"""Figures as PNG files: sample grids, reconstructions, loss curves, latent traversals, 2-D
manifolds and latent scatter plots. Every function writes one file and returns its path."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from ._files import atomic_path  # noqa: E402
from .data import ImageDataset  # noqa: E402
from .protocols import LatentVariableModel  # noqa: E402

__all__ = [
    "embed_latents",
    "latent_shape",
    "save_grid",
    "save_image_rows",
    "save_latent_scatter",
    "save_loss_curves",
    "save_manifold",
    "save_reconstructions",
    "save_traversal",
]


def _save(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid_image(images: Tensor, nrow: int) -> Tensor:
    """``(N, C, H, W)`` in [0, 1] → ``(H', W', C)`` grid with 1-pixel gaps."""
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=1, pad_value=1.0)
    return grid.permute(1, 2, 0)


def save_grid(
    images: Tensor,
    path: str | os.PathLike[str],
    *,
    nrow: int | None = None,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Write ``images (N, C, H, W)`` in [0, 1] as a grid of ``nrow`` images per row."""
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    grid = _grid_image(images, nrow)
    rows = math.ceil(images.shape[0] / nrow)
    fig, ax = plt.subplots(figsize=(max(2.0, nrow * 0.45), max(2.0, rows * 0.45) + (0.3 if title else 0)))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    if row_labels is not None:
        h = images.shape[-2] + 1
        ax.set_yticks([1 + h * i + h / 2 for i in range(len(row_labels))], list(row_labels))
        ax.set_xticks([])
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    else:
        ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def save_reconstructions(
    x: Tensor, x_hat: Tensor, path: str | os.PathLike[str], *, nrow: int = 8, title: str | None = None
) -> Path:
    """Write rows of originals ``x (N, C, H, W)``, each followed by a row of reconstructions."""
    if x.shape != x_hat.shape:
        raise ValueError(f"expected x and x_hat of the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    pairs = []
    for i in range(0, x.shape[0], nrow):
        pairs += [x[i : i + nrow], x_hat[i : i + nrow]]
    labels = ["input", "recon."] * (len(pairs) // 2)
    return save_grid(torch.cat(pairs), path, nrow=nrow, title=title, row_labels=labels)


def save_loss_curves(history: Sequence, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Plot train and test −ELBO (nats per image) per epoch from ``fit``'s history records."""
    epochs = [h.epoch for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(epochs, [h.train_loss for h in history], marker="o", ms=3, label="train (running mean)")
    test = [(h.epoch, h.test_loss) for h in history if h.test_loss is not None]
    if test:
        ax.plot(*zip(*test), marker="o", ms=3, label="test")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("−ELBO (nats per image)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi=120)


def save_image_rows(
    rows: Sequence[Tensor], labels: Sequence[str], path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Write several rows of images, one label per row: ``rows[i]`` is ``(N_i, C, H, W)`` in [0, 1]."""
    if len(rows) != len(labels):
        raise ValueError(f"expected one label per row, got {len(rows)} rows and {len(labels)} labels")
    width = max(r.shape[0] for r in rows)
    padded = [torch.cat([r.detach().cpu().float(), torch.ones(width - r.shape[0], *r.shape[1:])]) for r in rows]
    return save_grid(torch.cat(padded), path, nrow=width, title=title, row_labels=list(labels))


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def latent_shape(model: LatentVariableModel) -> tuple[int, ...]:
    """The event shape of the codes ``model.decode`` takes: the model's ``latent_shape`` where it
    has one (a latent map's ``(C, H, W)``), else ``(latent_dim,)``.

    Raises:
        ValueError: the model declares neither.
    """
    shape = getattr(model, "latent_shape", None) or ((model.latent_dim,) if model.latent_dim is not None else None)
    if shape is None:
        raise ValueError(f"expected a model that declares latent_dim or latent_shape, got {type(model).__name__}")
    return tuple(shape)


@torch.no_grad()
def save_traversal(
    model: LatentVariableModel,
    path: str | os.PathLike[str],
    *,
    dims: Sequence[int] | None = None,
    values: Tensor | None = None,
    base: Tensor | None = None,
    y: Tensor | None = None,
) -> Path:
    """One row per latent dim: decode ``base`` (default 0) with that dim swept over ``values``; the
    dims of a latent map ``(C, H, W)`` are its elements in order.

    Args:
        model: a VAE or CVAE.
        dims: latent dims to sweep (default: all).
        values: the values, default 11 points on [-3, 3].
        base: the code ``(D,)`` the sweep starts from.
        y: one label (0-d tensor) for a conditional model.
    """
    shape = latent_shape(model)
    d = math.prod(shape)
    device = _device(model)
    values = (values if values is not None else torch.linspace(-3, 3, 11)).to(device)
    dims = list(range(d)) if dims is None else list(dims)
    base = torch.zeros(shape, device=device) if base is None else base.to(device)
    rows = []
    for i in dims:
        z = base.reshape(1, d).expand(len(values), d).clone()  # (V, D), a map's elements in order
        z[:, i] = values
        yy = None if y is None else y.to(device).reshape(1).expand(len(values))
        rows.append(model.decode(z.unflatten(1, shape), yy).mean.cpu())  # z (V, *event)
    return save_image_rows(rows, [f"z[{i}]" for i in dims], path, title="latent traversal")


@torch.no_grad()
def save_manifold(
    model, path: str | os.PathLike[str], *, n: int = 20, limit: float = 5.0, y: Tensor | None = None
) -> Path:
    """Decode a regular grid of a 1-D or 2-D latent space.

    z = 2: an ``n×n`` grid over [-limit, limit]²; columns go from z₁ = −limit (left) to +limit
    (right), rows from z₂ = +limit (top) to −limit (bottom). z = 1: ``n`` values in one row.
    """
    shape = latent_shape(model)
    d = math.prod(shape)
    if d not in (1, 2):
        raise ValueError(f"expected a model with latent_dim 1 or 2 for a manifold, got a latent of shape {shape}")
    device = _device(model)
    t = torch.linspace(-limit, limit, n, device=device)
    if d == 1:
        z = t[:, None]  # (n, 1)
    else:
        z2, z1 = torch.meshgrid(t.flip(0), t, indexing="ij")  # rows: z2 from +limit down
        z = torch.stack([z1, z2], -1).reshape(-1, 2)  # (n·n, 2), row-major
    yy = None if y is None else y.to(device).reshape(1).expand(len(z))
    images = model.decode(z.unflatten(1, shape), yy).mean.clamp(0, 1).cpu()  # (n·n, C, H, W)
    grid = _grid_image(images, n)
    h, w = images.shape[-2] + 1, images.shape[-1] + 1
    rows = 1 if d == 1 else n
    fig, ax = plt.subplots(figsize=(max(3.0, n * 0.35), max(1.2, rows * 0.35) + 0.5))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    ticks = list(range(0, n, max(1, n // 5)))
    labels = [f"{v:.1f}" for v in t.cpu().tolist()]
    ax.set_xticks([1 + w * i + w / 2 for i in ticks], [labels[i] for i in ticks])
    ax.set_xlabel("z₁" if d == 2 else "z")
    if d == 2:
        ax.set_yticks([1 + h * i + h / 2 for i in ticks], [labels[::-1][i] for i in ticks])
        ax.set_ylabel("z₂")
    else:
        ax.set_yticks([])
    return _save(fig, path, dpi=110)


@torch.no_grad()
def embed_latents(
    model: LatentVariableModel, data: ImageDataset, *, n: int = 5000, method: str = "auto", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates of the posterior means of the first ``n`` images of ``data`` and their labels.

    ``method``: ``"direct"`` (D ≤ 2; D = 1 is paired with a small label-free jitter), ``"pca"``,
    ``"tsne"`` (scikit-learn, the ``genvae[viz]`` extra), or ``"auto"`` (direct for D ≤ 2, else t-SNE).

    Returns:
        ``(n, 2)`` coordinates and ``(n,)`` labels.
    """
    from .metrics.likelihood import _batches

    device = _device(model)
    n = min(n, len(data))
    subset = data.subset(n)
    means, labels = [], []
    for x, y in _batches(subset, 1000):
        yy = y.to(device) if model.num_classes is not None else None
        means.append(model.encode(x.to(device), yy).mean.flatten(1).cpu())  # (B, D): a map's elements in order
        labels.append(y.cpu())
    z = torch.cat(means).double().numpy()
    lab = torch.cat(labels).numpy()
    d = z.shape[1]
    method = ("direct" if d <= 2 else "tsne") if method == "auto" else method
    if method == "direct":
        if d > 2:
            raise ValueError(f"expected latent_dim <= 2 for method='direct', got {d}")
        if d == 1:
            jitter = np.random.default_rng(seed).uniform(-0.4, 0.4, size=len(z))
            return np.stack([z[:, 0], jitter], 1), lab
        return z, lab
    if method == "pca":
        centred = z - z.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, lab
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("t-SNE needs scikit-learn: pip install 'genvae[viz]'") from err
        return TSNE(n_components=2, init="pca", random_state=seed).fit_transform(z), lab
    raise ValueError(f"expected method 'auto', 'direct', 'pca' or 'tsne', got {method!r}")


def save_latent_scatter(
    model: LatentVariableModel,
    data: ImageDataset,
    path: str | os.PathLike[str],
    *,
    n: int = 5000,
    method: str = "auto",
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Scatter the posterior means of ``n`` images coloured by label (t-SNE for D > 2), see
    [`embed_latents`][genvae.viz.embed_latents]."""
    xy, labels = embed_latents(model, data, n=n, method=method, seed=seed)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for c in np.unique(labels):
        pts = xy[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.6, color=plt.cm.tab10(int(c) % 10), label=str(c))
    ax.legend(markerscale=4, fontsize=7, loc="best", ncol=2)
    d = math.prod(latent_shape(model))
    ax.set_xlabel("z₁" if d and d <= 2 else "embedding 1")
    ax.set_ylabel("z₂" if d == 2 else ("jitter" if d == 1 else "embedding 2"))
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi=110)
