"""The in-memory data set: images (or any arrays) and their labels, held as tensors."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .._checks import positive_int

__all__ = ["Binarize", "ImageDataset", "check_binarize"]

Binarize = Literal["none", "static", "dynamic"]
_BINARIZE = ("none", "static", "dynamic")


def check_binarize(binarize: object) -> None:
    """Refuse a binarization other than ``"none"``, ``"static"`` or ``"dynamic"``."""
    if binarize not in _BINARIZE:
        raise ValueError(f"expected binarize one of {_BINARIZE}, got {binarize!r}")


@dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """A labelled image set held in memory.

    Attributes:
        images: ``(N, C, H, W)`` uint8 pixels.
        labels: ``(N,)`` int64 class labels in ``range(num_classes)``.
        num_classes: number of classes.
        binarize: ``"none"``, ``"static"`` or ``"dynamic"`` (see :func:`load_mnist`).
        seed: seed of the static binarization.
        binary: ``(N, C, H, W)`` uint8 in {0, 1}: the static binarization, drawn once from
            Bernoulli(pixel / 255) with ``torch.Generator().manual_seed(seed)``; else ``None``.
    """

    images: Tensor
    labels: Tensor
    num_classes: int
    binarize: Binarize = "none"
    seed: int = 0
    binary: Tensor | None = field(default=None)

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"expected images to be a uint8 tensor (N, C, H, W), got {got}")
        if not isinstance(y, Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (len(x),):
            got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
            raise TypeError(f"expected labels to be an int64 tensor of shape ({len(x)},), got {got}")
        positive_int("num_classes", self.num_classes)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"expected labels in range(0, {self.num_classes}), got values in [{int(y.min())}, {int(y.max())}]"
            )
        check_binarize(self.binarize)
        if self.binarize == "static" and self.binary is None:
            g = torch.Generator().manual_seed(self.seed)
            b = torch.bernoulli(x.cpu().float().div_(255), generator=g).to(torch.uint8)
            object.__setattr__(self, "binary", b.to(x.device))
        elif self.binary is not None and (self.binary.shape != x.shape or self.binary.dtype != torch.uint8):
            raise ValueError(
                f"expected binary uint8 {tuple(x.shape)}, got {self.binary.dtype} {tuple(self.binary.shape)}"
            )
        elif self.binarize != "static" and self.binary is not None:
            raise ValueError(f"expected binary=None unless binarize='static', got binarize={self.binarize!r}")

    @classmethod
    def from_tensors(
        cls,
        images: Tensor | np.ndarray,
        labels: Tensor | np.ndarray,
        num_classes: int | None = None,
        binarize: Binarize = "none",
        seed: int = 0,
    ) -> ImageDataset:
        """Build a data set from ``images (N, C, H, W)``, uint8 or float in [0, 1] (rounded to
        k/255), and integer ``labels (N,)``; ``num_classes`` defaults to ``max(labels) + 1``."""
        x = torch.as_tensor(images)
        y = torch.as_tensor(labels)
        if x.dim() != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")
        if x.is_floating_point():
            if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
                raise ValueError(f"expected float images in [0, 1], got values in [{float(x.min())}, {float(x.max())}]")
            x = x.mul(255).round_().to(torch.uint8)
        elif x.dtype != torch.uint8:
            raise TypeError(f"expected images with dtype uint8 or a float dtype, got {x.dtype}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"expected labels with an integer dtype, got {y.dtype}")
        if tuple(y.shape) != (len(x),):
            raise ValueError(f"expected labels of shape ({len(x)},), got {tuple(y.shape)}")
        y = y.to(torch.int64)
        if num_classes is None:
            num_classes = int(y.max()) + 1 if y.numel() else 1
        return cls(x.contiguous(), y.contiguous(), num_classes, binarize, seed)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (
            f"ImageDataset(n={len(self)}, data_shape={self.data_shape}, num_classes={self.num_classes}, "
            f"binarize={self.binarize!r}, device={self.images.device})"
        )

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    def _replace(self, images: Tensor, labels: Tensor, binary: Tensor | None) -> ImageDataset:
        return dataclasses.replace(self, images=images, labels=labels, binary=binary)

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same data set with its tensors on ``device``."""
        b = self.binary.to(device) if self.binary is not None else None
        return self._replace(self.images.to(device), self.labels.to(device), b)

    def subset(self, n_or_indices: int | Tensor | Iterable[int]) -> ImageDataset:
        """The first ``n`` images (views, no copy), or the images at ``(M,)`` indices or an ``(N,)`` bool mask."""
        arg = n_or_indices
        idx: Tensor | slice
        if isinstance(arg, int) and not isinstance(arg, bool):
            if not 0 <= arg <= len(self):
                raise ValueError(f"expected n_or_indices in 0..{len(self)}, got {arg}")
            idx = slice(0, arg)
        else:
            idx = arg if isinstance(arg, Tensor) else torch.tensor(list(arg), dtype=torch.int64)  # type: ignore[arg-type]
            if idx.dtype == torch.bool and tuple(idx.shape) == (len(self),):
                idx = idx.nonzero().squeeze(1)
            if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool or idx.dim() != 1:
                raise ValueError(
                    f"expected n_or_indices to be an int or 1-D integer indices, got {idx.dtype} {tuple(idx.shape)}"
                )
            idx = idx.to(self.images.device, torch.int64)
            if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < len(self)):
                raise ValueError(
                    f"expected n_or_indices in range(0, {len(self)}), got [{int(idx.min())}, {int(idx.max())}]"
                )
        b = self.binary[idx] if self.binary is not None else None
        return self._replace(self.images[idx], self.labels[idx], b)

    def split_by_labels(self, keep: Iterable[int]) -> tuple[ImageDataset, ImageDataset]:
        """``(images whose label is in keep, the others)``, e.g. normal vs. anomalous classes."""
        keep = sorted(set(keep))
        if any(not isinstance(k, int) or not 0 <= k < self.num_classes for k in keep):
            raise ValueError(f"expected keep to hold labels in range(0, {self.num_classes}), got {keep}")
        mask = torch.isin(self.labels, torch.tensor(keep, dtype=torch.int64, device=self.labels.device))
        return self.subset(mask), self.subset(~mask)

    def float_images(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(N, C, H, W)`` in [0, 1] of ``dtype``: pixels / 255, or the fixed 0/1 draw if static."""
        return self.binary.to(dtype) if self.binary is not None else self.images.to(dtype).div_(255)
