"""Fréchet distance between real and generated images in the feature space of a classifier trained
for their data set.

This is NOT the Inception FID of the image-generation literature: the features are the 128
penultimate activations of an [`ImageClassifier`][genvae.metrics.classifier.ImageClassifier] (or of
any module with ``features`` the caller passes), so the values rank models on one data set and are
not comparable with Inception-FID numbers. The Fréchet distance itself is
computed by torchmetrics' ``FrechetInceptionDistance`` with this custom feature module.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import positive_int
from ..data import ImageDataset
from ..protocols import LatentVariableModel

__all__ = ["fid", "sample_fid"]


class _Features(nn.Module):
    """Adapter: images → the classifier's penultimate features, as torchmetrics expects."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = int(getattr(classifier, "num_features", 128))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x.float())


@torch.no_grad()
def fid(real: Tensor, fake: Tensor, classifier: nn.Module, *, batch_size: int = 1000) -> float:
    """Fréchet distance between classifier features of ``real`` and ``fake`` ``(N, C, H, W)`` in [0, 1].

    ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½), features accumulated in float64.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("FID needs torchmetrics: pip install 'genvae[metrics]'") from err
    positive_int("batch_size", batch_size)
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"expected at least 2 real and 2 fake images, got {real.shape[0]} and {fake.shape[0]}")
    classifier.eval()
    device = next(classifier.parameters()).device
    metric = FrechetInceptionDistance(feature=_Features(classifier), normalize=True).to(device)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, images.shape[0], batch_size):
            metric.update(images[i : i + batch_size].to(device), real=is_real)
    return float(metric.compute())


@torch.no_grad()
def sample_fid(
    model: LatentVariableModel,
    data: ImageDataset,
    classifier: nn.Module,
    *,
    n: int = 10_000,
    generator: torch.Generator | None = None,
) -> float:
    """FID between ``n`` samples of ``model`` and the first ``n`` images of ``data``.

    A conditional model draws its samples for the labels of those real images, so both sets have
    the same class proportions.
    """
    n = min(positive_int("n", n), len(data))
    device = next(model.parameters()).device
    real = data.float_images()[:n]
    y = data.labels[:n].to(device) if model.num_classes is not None and data.labels is not None else None
    chunks = []
    for i in range(0, n, 1000):
        m = min(1000, n - i)
        chunks.append(model.sample(m, None if y is None else y[i : i + m], generator=generator).cpu())
    fake = torch.cat(chunks)  # (n, *data_shape)
    return fid(real, fake.clamp(0, 1), classifier)
