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
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from ._files import atomic_path  # noqa: E402

__all__ = ["save_grid", "save_loss_curves", "save_reconstructions"]


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
    ax.set_ylabel("−ELBO (nats per image)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi=120)
