"""Reconstruction quality: mean squared error and SSIM of posterior-mean reconstructions.

SSIM comes from torchmetrics (the optional ``genvae[metrics]`` extra): an 11×11 Gaussian window
with σ = 1.5 on images in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..protocols import LatentVariableModel
from .likelihood import Data, eval_batches

__all__ = ["ReconstructionMetrics", "mse", "reconstruction_metrics", "ssim"]


def _torchmetrics():
    try:
        import torchmetrics.functional.image as tmf
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("SSIM and FID need torchmetrics: pip install 'genvae[metrics]'") from err
    return tmf


def mse(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean squared error per pixel of each image: ``(B, *shape)`` twice → ``(B,)``."""
    if x.shape != x_hat.shape:
        raise ValueError(f"expected x and x_hat of the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    return (x - x_hat).square().flatten(1).mean(1)


def ssim(x: Tensor, x_hat: Tensor, *, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Structural similarity (Wang et al., 2004) of ``(B, C, H, W)`` images in ``[0, data_range]``.

    Returns the mean over images (a 0-d tensor), or ``(B,)`` per image with ``reduction="none"``.
    """
    if x.shape != x_hat.shape or x.dim() != 4:
        raise ValueError(
            f"expected x and x_hat of the same shape (B, C, H, W), got {tuple(x.shape)} and {tuple(x_hat.shape)}"
        )
    per_image = _torchmetrics().structural_similarity_index_measure(
        x_hat.float(), x.float(), data_range=data_range, reduction="none"
    )
    return per_image if reduction == "none" else per_image.mean()


@dataclass(frozen=True)
class ReconstructionMetrics:
    """Means over a data set of per-image reconstruction errors.

    Attributes:
        mse: mean squared error per pixel (pixels in [0, 1]).
        ssim: SSIM, averaged over images.
        num_examples: number of images.
    """

    mse: float
    ssim: float
    num_examples: int


def reconstruction_metrics(model: LatentVariableModel, data: Data, *, batch_size: int = 1000) -> ReconstructionMetrics:
    """MSE and SSIM of ``model.reconstruct(x)`` (posterior mean decoded to the likelihood mean) over ``data``.

    Reconstructions are clamped to [0, 1] before SSIM only (a Gaussian mean can leave the range).
    """
    total_mse, total_ssim, n = 0.0, 0.0, 0
    for x, y in eval_batches(model, data, batch_size=batch_size, seed=None):
        x_hat = model.reconstruct(x, y)
        total_mse += float(mse(x, x_hat).double().sum())
        total_ssim += float(ssim(x, x_hat.clamp(0, 1), reduction="none").double().sum())
        n += x.shape[0]
    return ReconstructionMetrics(total_mse / max(n, 1), total_ssim / max(n, 1), n)
