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

__all__ = [
    "CLASS_BOUND_FLOOR",
    "IN_MEMORY_BYTES",
    "AnyData",
    "Binarize",
    "ImageDataset",
    "as_dataset",
    "as_float",
    "check_binarize",
    "classes_from_labels",
    "collate",
    "item_tensors",
]

Binarize = Literal["none", "static", "dynamic"]
_BINARIZE = ("none", "static", "dynamic")


def check_binarize(binarize: object) -> None:
    """Refuse a binarization other than ``"none"``, ``"static"`` or ``"dynamic"``."""
    if binarize not in _BINARIZE:
        raise ValueError(f"expected binarize one of {_BINARIZE}, got {binarize!r}")


CLASS_BOUND_FLOOR = 1000
"""Where the number of classes is derived from labels ``y (N,)`` as ``max(y) + 1``, the largest
label must be less than ``max(N, CLASS_BOUND_FLOOR)``: the data bound the classes (a class may have
no example, as in a sample of a larger set, but there are not vastly more classes than examples),
so that one stray label such as 2**40 cannot make a conditional model allocate an embedding of
2**40 rows. The floor lets a small sample keep a large set's labels (ImageNet's run to 999)."""


def classes_from_labels(labels: Tensor, what: str = "labels") -> int:
    """``max(labels) + 1``, the number of classes that integer ``labels (N,)`` imply (1 if empty),
    bounded by the data: see [`CLASS_BOUND_FLOOR`][genvae.data.dataset.CLASS_BOUND_FLOOR].

    Args:
        labels: ``(N,)`` integer labels.
        what: the labels' name in error messages, e.g. ``"labels y in 'f.npz'"``.

    Raises:
        ValueError: a label is negative, or the largest is ``max(N, CLASS_BOUND_FLOOR)`` or more.
    """
    if labels.numel() == 0:
        return 1
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise ValueError(f"expected non-negative {what}, got {lo}")
    bound = max(labels.numel(), CLASS_BOUND_FLOOR)
    if hi >= bound:
        raise ValueError(
            f"expected {what} below {bound}, as the number of classes (the largest label + 1) is at most "
            f"the number of examples ({labels.numel()}) or {CLASS_BOUND_FLOOR}, whichever is larger; "
            f"got a largest label of {hi}: number the classes from 0"
        )
    return hi + 1


@dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """A data set held in memory: 8-bit images, or float arrays of any shape, with optional labels.

    Attributes:
        images: ``(N, *data_shape)``: uint8 pixels (8-bit images, which models see as pixel / 255),
            or a floating tensor kept as it is (vectors ``(N, D)``, sequences, float images).
        labels: ``(N,)`` int64 class labels in ``range(num_classes)``, or None.
        num_classes: number of classes (None without labels).
        binarize: ``"none"``, ``"static"`` or ``"dynamic"`` (see
            [`load_mnist`][genvae.data.mnist.load_mnist]); needs values in [0, 1].
        seed: seed of the static binarization.
        binary: ``(N, *data_shape)`` uint8 in {0, 1}: the static binarization, drawn once from
            Bernoulli(x) with ``torch.Generator().manual_seed(seed)``; else ``None``.
        source: where the data came from (a data set's name or a file's path), or None;
            ``fit(out=…)`` records it so that ``genvae eval`` finds the run's test data.
    """

    images: Tensor
    labels: Tensor | None = None
    num_classes: int | None = None
    binarize: Binarize = "none"
    seed: int = 0
    binary: Tensor | None = field(default=None)
    source: str | None = None

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if not isinstance(x, Tensor) or not (x.dtype == torch.uint8 or x.is_floating_point()) or x.dim() < 2:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"expected images to be a uint8 or floating tensor (N, *data_shape), got {got}")
        if y is None:
            if self.num_classes is not None:
                raise ValueError(f"expected num_classes=None without labels, got {self.num_classes}")
        else:
            if not isinstance(y, Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (len(x),):
                got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
                raise TypeError(f"expected labels to be an int64 tensor of shape ({len(x)},) or None, got {got}")
            positive_int("num_classes", self.num_classes)
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):  # type: ignore[operator]
                raise ValueError(
                    f"expected labels in range(0, {self.num_classes}), got values in [{int(y.min())}, {int(y.max())}]"
                )
        check_binarize(self.binarize)
        if self.binarize != "none" and x.is_floating_point() and x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
            raise ValueError(
                f"expected values in [0, 1] to binarize, got values in [{float(x.min()):g}, {float(x.max()):g}]"
            )
        if self.binarize == "static" and self.binary is None:
            g = torch.Generator().manual_seed(self.seed)
            b = torch.bernoulli(as_float(x.cpu(), torch.float32), generator=g).to(torch.uint8)
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
        labels: Tensor | np.ndarray | None = None,
        num_classes: int | None = None,
        binarize: Binarize = "none",
        seed: int = 0,
        source: str | None = None,
    ) -> ImageDataset:
        """Build a data set from ``images (N, *data_shape)`` and optional integer ``labels (N,)``.

        uint8 data are 8-bit pixels; floating data are kept as they are (they must be finite);
        ``num_classes`` defaults to ``max(labels) + 1``, which must be at most
        ``max(N, CLASS_BOUND_FLOOR)`` (see [`classes_from_labels`][genvae.data.dataset.classes_from_labels]);
        pass ``num_classes`` to have more classes than that.
        """
        x = torch.as_tensor(images)
        if x.dim() < 2:
            raise ValueError(f"expected images of shape (N, *data_shape), got {tuple(x.shape)}")
        if x.is_floating_point():
            if x.numel() and not bool(torch.isfinite(x).all()):
                raise ValueError("expected finite values in images, got NaN or inf")
        elif x.dtype != torch.uint8:
            raise TypeError(f"expected images with dtype uint8 (8-bit pixels) or a float dtype, got {x.dtype}")
        if labels is None:
            if num_classes is not None:
                raise ValueError(f"expected num_classes=None without labels, got {num_classes}")
            return cls(x.contiguous(), None, None, binarize, seed, source=source)
        y = torch.as_tensor(labels)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"expected labels with an integer dtype, got {y.dtype}")
        if tuple(y.shape) != (len(x),):
            raise ValueError(f"expected labels of shape ({len(x)},) to match the {len(x)} images, got {tuple(y.shape)}")
        y = y.to(torch.int64)
        if num_classes is None:
            num_classes = classes_from_labels(y)
        return cls(x.contiguous(), y.contiguous(), num_classes, binarize, seed, source=source)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (
            f"ImageDataset(n={len(self)}, data_shape={self.data_shape}, num_classes={self.num_classes}, "
            f"binarize={self.binarize!r}, device={self.images.device})"
        )

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(C, H, W)``."""
        return tuple(self.images.shape[1:])

    @property
    def eight_bit(self) -> bool:
        """Whether the data are 8-bit pixels (uint8, seen by models as pixel / 255)."""
        return self.images.dtype == torch.uint8

    def _replace(self, images: Tensor, labels: Tensor | None, binary: Tensor | None) -> ImageDataset:
        return dataclasses.replace(self, images=images, labels=labels, binary=binary)

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same data set with its tensors on ``device``."""
        b = self.binary.to(device) if self.binary is not None else None
        y = self.labels.to(device) if self.labels is not None else None
        return self._replace(self.images.to(device), y, b)

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
        return self._replace(self.images[idx], self.labels[idx] if self.labels is not None else None, b)

    def split_by_labels(self, keep: Iterable[int]) -> tuple[ImageDataset, ImageDataset]:
        """``(images whose label is in keep, the others)``, e.g. normal vs. anomalous classes."""
        keep = sorted(set(keep))
        if self.labels is None or self.num_classes is None:
            raise ValueError("expected a labelled data set to split by labels, got one without labels")
        if any(not isinstance(k, int) or not 0 <= k < self.num_classes for k in keep):
            raise ValueError(f"expected keep to hold labels in range(0, {self.num_classes}), got {keep}")
        mask = torch.isin(self.labels, torch.tensor(keep, dtype=torch.int64, device=self.labels.device))
        return self.subset(mask), self.subset(~mask)

    def float_images(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(N, *data_shape)`` of ``dtype``: pixels / 255, float data as they are, or the fixed 0/1 draw if static."""
        return self.binary.to(dtype) if self.binary is not None else as_float(self.images, dtype)


def as_float(x: Tensor, dtype: torch.dtype) -> Tensor:
    """What models see of data ``x``: uint8 pixels as pixel / 255, floating data cast to ``dtype``."""
    return x.to(dtype).div_(255) if x.dtype == torch.uint8 else x.to(dtype)


AnyData = ImageDataset | torch.utils.data.Dataset | Tensor | np.ndarray | tuple[Tensor, Tensor | None]
"""What ``fit`` and the metrics take: see [`as_dataset`][genvae.data.dataset.as_dataset]."""

IN_MEMORY_BYTES = 2**31
"""A map-style data set whose examples take more bytes than this is streamed by ``fit`` (through a
``DataLoader``) instead of being held in memory whole."""


def item_tensors(item: object) -> tuple[Tensor, Tensor | None]:
    """One example of a map-style data set (``x`` or ``(x, y)``) as ``(x, y)`` tensors.

    ``x`` may be a tensor, a numpy array or a PIL image (as torchvision's data sets give without a
    transform: it becomes uint8 ``(C, H, W)``); ``y`` an integer or a 0-d integer tensor.
    """
    x, y = (item[0], item[1] if len(item) > 1 else None) if isinstance(item, (tuple, list)) else (item, None)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif not isinstance(x, Tensor) and hasattr(x, "getbands"):  # a PIL image
        from torchvision.transforms.functional import pil_to_tensor

        x = pil_to_tensor(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"expected examples x or (x, y) with x a tensor, array or PIL image, got {type(x).__name__}")
    return x, None if y is None else torch.as_tensor(y)


def collate(items: list[object]) -> tuple[Tensor, Tensor | None]:
    """A batch of examples (``x`` or ``(x, y)``) as ``(x (B, *shape), y (B,) or None)``."""
    pairs = [item_tensors(item) for item in items]
    x = torch.stack([p[0] for p in pairs])
    y = None if pairs[0][1] is None else torch.stack([p[1] for p in pairs]).to(torch.int64)  # type: ignore[misc]
    return x, y


def as_dataset(
    data: object, name: str = "data", *, in_memory: bool | None = None
) -> ImageDataset | torch.utils.data.Dataset:
    """Any data ``fit`` and the metrics take, as an [`ImageDataset`][genvae.data.dataset.ImageDataset]
    or, for a map-style data set too large to hold, that data set itself (to stream).

    Args:
        data: an ``ImageDataset``; a tensor or array ``x (N, *shape)``; a pair ``(x, y)``; or a
            map-style ``torch.utils.data.Dataset`` whose items are ``x`` or ``(x, y)``.
        name: the argument's name, for error messages.
        in_memory: for a map-style data set, hold it in memory (True), stream it (False), or
            decide by its size against [`IN_MEMORY_BYTES`][genvae.data.dataset.IN_MEMORY_BYTES].
    """
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, (Tensor, np.ndarray)):
        return ImageDataset.from_tensors(data)
    if isinstance(data, tuple) and len(data) == 2:
        return ImageDataset.from_tensors(*data)
    if isinstance(data, torch.utils.data.IterableDataset) or not (
        hasattr(data, "__getitem__") and hasattr(data, "__len__")
    ):
        raise TypeError(
            f"expected {name} to be a genvae ImageDataset, a tensor x, a pair (x, y) or a map-style "
            f"torch.utils.data.Dataset, got {type(data).__name__}"
        )
    n = len(data)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError(f"expected {name} to hold at least one example, got an empty {type(data).__name__}")
    x0, _ = item_tensors(data[0])  # type: ignore[index]
    if in_memory is False or (in_memory is None and n * x0.numel() * x0.element_size() > IN_MEMORY_BYTES):
        return data  # type: ignore[return-value]
    loader = torch.utils.data.DataLoader(data, batch_size=1024, collate_fn=collate)  # type: ignore[arg-type]
    xs, ys = zip(*loader)
    y = None if ys[0] is None else torch.cat(ys)  # type: ignore[arg-type]
    return ImageDataset.from_tensors(torch.cat(xs), y)
