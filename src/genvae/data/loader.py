"""Loaders: the device-resident one (a whole split as one tensor on the device, one gather per
batch) for data that fit in memory, and a streaming one (a ``DataLoader`` with workers) for data
that do not; both draw the same order from the same generator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from .._checks import positive_int
from .dataset import ImageDataset, as_float, collate

__all__ = ["BatchLoader", "StreamingLoader", "default_workers", "head", "make_loader"]


def _order_arguments(
    n: int, batch_size: int, rank: int, world_size: int, drop_last: bool, generator: torch.Generator | None
) -> tuple[int, int, int, torch.Generator]:
    """Check what both loaders take to draw their order; returns the batch size, the world size, the
    examples per rank and epoch, and the generator (a new one seeded from torch's global one if None)."""
    positive_int("batch_size", batch_size)
    positive_int("world_size", world_size)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"expected rank in range(0, {world_size}), got {rank!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"expected generator to be a torch.Generator or None, got {type(generator).__name__}")
    per_rank = n // world_size
    if per_rank == 0:
        raise ValueError(f"expected dataset with at least world_size={world_size} examples, got {n}")
    if drop_last and per_rank < batch_size:
        raise ValueError(
            f"expected batch_size <= {per_rank} examples per rank with drop_last=True (else there is no batch), "
            f"got {batch_size}"
        )
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    return batch_size, world_size, per_rank, generator


def _num_batches(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches in an epoch of ``num_samples`` examples; the last one is partial unless ``drop_last``."""
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def _shard(
    size: int, num_samples: int, shuffle: bool, generator: torch.Generator, rank: int, world_size: int
) -> Tensor:
    """This rank's indices into a data set of ``size`` for one epoch, ``(num_samples,)`` int64:
    ``perm[rank::world_size]`` of one ``torch.randperm(size)`` drawn from ``generator`` (on its
    device) when shuffling, else ``range(rank, size, world_size)``; cut to ``num_samples``."""
    if shuffle:
        return torch.randperm(size, generator=generator, device=generator.device)[rank::world_size][:num_samples]
    return torch.arange(rank, size, world_size)[:num_samples]


class BatchLoader:
    """Shuffled mini-batches from a data set held as one floating tensor on ``device``.

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

    Iterating yields ``(x, y)`` on ``device``: ``x (B, *data_shape)`` of ``dtype`` (8-bit pixels as
    pixel / 255) and ``y (B,)`` int64, or None for a data set without labels.
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
        self.batch_size, self.world_size, self.num_samples, self.generator = _order_arguments(
            len(dataset), batch_size, rank, world_size, drop_last, generator
        )
        self.rank, self.shuffle, self.drop_last = rank, bool(shuffle), bool(drop_last)
        self.device = torch.device(device) if device is not None else dataset.images.device
        self.dynamic = dataset.binarize == "dynamic"
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"expected dtype to be a floating torch.dtype, got {dtype!r}")
        self.x = dataset.to(self.device).float_images(dtype)  # (N, C, H, W), converted once
        self.y = dataset.labels.to(self.device) if dataset.labels is not None else None  # (N,) int64

    def __len__(self) -> int:
        return _num_batches(self.num_samples, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        g, n = self.generator, self.num_samples
        idx = None  # unshuffled on one rank: batches are slices
        if self.shuffle or self.world_size > 1:
            idx = _shard(len(self.x), n, self.shuffle, g, self.rank, self.world_size).to(self.device)
        y = self.y
        if y is not None:
            y = y.index_select(0, idx) if idx is not None else y[:n]  # one gather per epoch
        bern = None
        if self.dynamic:
            seed = int(torch.randint(2**62, (), generator=g, device=g.device))
            bern = torch.Generator(device=self.device).manual_seed(seed)
        for i in range(len(self)):
            s = slice(i * self.batch_size, min((i + 1) * self.batch_size, n))
            xb = self.x.index_select(0, idx[s]) if idx is not None else self.x[s]
            if bern is not None:
                xb = torch.bernoulli(xb, generator=bern)
            yield xb, None if y is None else y[s]


def default_workers() -> int:
    """Worker processes of a streaming loader: one per core but one, at most four."""
    return min(4, max(0, (os.cpu_count() or 1) - 1))


class StreamingLoader:
    """Shuffled mini-batches streamed from a map-style data set through a ``torch.utils.data.DataLoader``.

    For data that do not fit in memory. The order is drawn as [`BatchLoader`][genvae.data.loader.BatchLoader]
    draws it (one ``torch.randperm`` per epoch from ``generator``, sharded by rank), so
    ``generator.get_state()`` at an epoch boundary is all a checkpoint needs to resume bit for bit.
    Workers read and collate the examples; pinned host memory speeds the copy to a GPU.

    The other arguments are those of [`BatchLoader`][genvae.data.loader.BatchLoader].

    Args:
        dataset: a map-style data set whose items are ``x`` or ``(x, y)``.
        num_workers: worker processes (default [`default_workers`][genvae.data.loader.default_workers]).

    Iterating yields ``(x, y)`` on ``device``: ``x (B, *shape)`` of ``dtype`` (uint8 items as
    pixel / 255) and ``y (B,)`` int64, or None for items without labels.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
        num_workers: int | None = None,
    ) -> None:
        self.dataset = dataset
        size = len(dataset)  # type: ignore[arg-type]
        self.batch_size, self.world_size, self.num_samples, self.generator = _order_arguments(
            size, batch_size, rank, world_size, drop_last, generator
        )
        self.rank, self.shuffle, self.drop_last = rank, bool(shuffle), bool(drop_last)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.num_workers = default_workers() if num_workers is None else num_workers

    def __len__(self) -> int:
        return _num_batches(self.num_samples, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        size = len(self.dataset)  # type: ignore[arg-type]
        order = _shard(size, self.num_samples, self.shuffle, self.generator, self.rank, self.world_size)
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=order.tolist(),
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            # Its own generator: the DataLoader draws a base seed for its workers, which must not
            # come from (and so move) the global random state the model's draws use.
            generator=torch.Generator().manual_seed(0),
        )
        for x, y in loader:
            x = as_float(x.to(self.device, non_blocking=True), self.dtype)
            yield x, None if y is None else y.to(self.device, non_blocking=True)


def make_loader(
    data: ImageDataset | torch.utils.data.Dataset, batch_size: int, **options: Any
) -> BatchLoader | StreamingLoader:
    """A [`BatchLoader`][genvae.data.loader.BatchLoader] for an ``ImageDataset`` (held on the device),
    a [`StreamingLoader`][genvae.data.loader.StreamingLoader] for any other map-style data set."""
    if isinstance(data, ImageDataset):
        options.pop("num_workers", None)
        return BatchLoader(data, batch_size, **options)
    return StreamingLoader(data, batch_size, **options)


def head(data: ImageDataset | torch.utils.data.Dataset, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """The first ``n`` examples as the loaders give them (``x`` of ``dtype``, ``y`` or None), on the CPU."""
    if isinstance(data, ImageDataset):
        return data.float_images(dtype)[:n], None if data.labels is None else data.labels[:n]
    x, y = collate([data[i] for i in range(min(n, len(data)))])  # type: ignore[arg-type]
    return as_float(x, dtype), y
