"""The device-resident loader: a whole split as one tensor on the device, one gather per batch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .._checks import positive_int
from .dataset import ImageDataset

__all__ = ["BatchLoader"]


class BatchLoader:
    """Shuffled mini-batches from a split held as one float32 tensor on ``device``.

    Each epoch draws one permutation with ``torch.randperm(n, generator=generator)``; a batch is one
    gather ``x[idx]``. Unshuffled on one rank, batches are views (slices): do not modify them in
    place. With ``binarize="dynamic"`` each batch is a fresh ``torch.bernoulli`` draw, from a
    device generator seeded once per epoch from ``generator``, so ``generator.get_state()`` at an
    epoch boundary is all it takes to reproduce the rest of a run.

    Args:
        dataset: the images and labels.
        batch_size: images per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: draw a new order every epoch; else the data set order.
        drop_last: skip the last incomplete batch.
        generator: the CPU (or device) generator behind the order and the dynamic binarization;
            default: a new one seeded from torch's global generator.
        device: where the data and batches live; default: where ``dataset`` is.
        rank: this process's shard is ``perm[rank::world_size]``, cut to
            ``len(dataset) // world_size`` images so that every rank gets as many batches.
        world_size: number of processes sharing each epoch.
        dtype: the floating dtype of the batches (a float64 model wants float64).

    Iterating yields ``(x, y)``: ``x (B, C, H, W)`` in [0, 1] of ``dtype`` and ``y (B,)`` int64,
    on ``device``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not isinstance(dataset, ImageDataset):
            raise TypeError(f"expected dataset to be a genvae.data.ImageDataset, got {type(dataset).__name__}")
        self.batch_size = positive_int("batch_size", batch_size)
        self.world_size = positive_int("world_size", world_size)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"expected rank in range(0, {world_size}), got {rank!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"expected generator to be a torch.Generator or None, got {type(generator).__name__}")
        self.rank, self.shuffle, self.drop_last = rank, bool(shuffle), bool(drop_last)
        self.num_samples = len(dataset) // world_size  # per rank and epoch
        if self.num_samples == 0:
            raise ValueError(f"expected dataset with at least world_size={world_size} images, got {len(dataset)}")
        if self.drop_last and self.num_samples < self.batch_size:
            raise ValueError(
                f"expected batch_size <= {self.num_samples} images per rank with drop_last=True "
                f"(else there is no batch), got {batch_size}"
            )
        self.generator = (
            generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        )
        self.device = torch.device(device) if device is not None else dataset.images.device
        self.dynamic = dataset.binarize == "dynamic"
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"expected dtype to be a floating torch.dtype, got {dtype!r}")
        self.x = dataset.to(self.device).float_images(dtype)  # (N, C, H, W), converted once
        self.y = dataset.labels.to(self.device)  # (N,) int64

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        g, n, r, w = self.generator, self.num_samples, self.rank, self.world_size
        if self.shuffle:
            perm = torch.randperm(len(self.x), generator=g, device=g.device)
            idx: Tensor | None = perm[r::w][:n].to(self.device)
        elif w > 1:
            idx = torch.arange(r, len(self.x), w, device=self.device)[:n]
        else:
            idx = None
        y = self.y.index_select(0, idx) if idx is not None else self.y[:n]  # one gather per epoch
        bern = None
        if self.dynamic:
            seed = int(torch.randint(2**62, (), generator=g, device=g.device))
            bern = torch.Generator(device=self.device).manual_seed(seed)
        for i in range(len(self)):
            s = slice(i * self.batch_size, min((i + 1) * self.batch_size, n))
            xb = self.x.index_select(0, idx[s]) if idx is not None else self.x[s]
            if bern is not None:
                xb = torch.bernoulli(xb, generator=bern)
            yield xb, y[s]
