"""The data sources by name: one table, so that adding a data set is one entry.

[`load_data`][genvae.data.sources.load_data] takes a name of [`SOURCES`][genvae.data.sources.SOURCES]
(``"mnist"``, ``"fashion-mnist"``, ``"kmnist"``, ``"emnist"``, ``"cifar10"``) or the path of an
existing data file or image folder, read by [`load_file_split`][genvae.data.files.load_file_split].
A name wins over a file of the same name: write ``./mnist`` for the folder.
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from pathlib import Path
from typing import Protocol

from ._raw import Split, check_split
from .cifar import load_cifar10
from .dataset import Binarize, ImageDataset, check_binarize
from .files import SUFFIXES, load_file_split
from .mnist import load_mnist
from .mnist_like import EMNIST_BALANCED, FASHION_MNIST, KMNIST, load_idx_images

__all__ = ["DATASETS", "SOURCES", "Source", "load_data"]


class Source(Protocol):
    """A named data set: returns its ``split``, reading (and if need be fetching) files under ``root``."""

    def __call__(
        self, split: Split, *, root: str | os.PathLike[str] | None, binarize: Binarize, seed: int
    ) -> ImageDataset: ...


SOURCES: dict[str, Source] = {
    "mnist": load_mnist,
    "fashion-mnist": partial(load_idx_images, FASHION_MNIST),
    "kmnist": partial(load_idx_images, KMNIST),
    "emnist": partial(load_idx_images, EMNIST_BALANCED),
    "cifar10": load_cifar10,
}
"""Each data set's name and the function that loads it."""
DATASETS: tuple[str, ...] = tuple(SOURCES)
"""The names ``load_data`` knows, e.g. for a command line's choices."""


def load_data(
    name_or_path: str | os.PathLike[str],
    split: Split,
    *,
    root: str | os.PathLike[str] | None = None,
    binarize: Binarize = "none",
    seed: int = 0,
) -> ImageDataset:
    """The ``split`` of a named data set, or of a data file or image folder, with its ``source``
    (the name, or the absolute path) recorded.

    Args:
        name_or_path: one of [`DATASETS`][genvae.data.sources.DATASETS], else an existing file
            (``.npz``, ``.npy``, ``.pt``) or folder of images.
        split: ``"train"`` or ``"test"``; a file's test split is a fixed tenth of it
            (see [`load_file_split`][genvae.data.files.load_file_split]).
        root: cache root of the named data sets; default ``$GENVAE_DATA`` or ``~/.cache/genvae``.
            A path ignores it.
        binarize: ``"none"``, ``"static"`` or ``"dynamic"`` (see [`load_mnist`][genvae.data.mnist.load_mnist]).
        seed: seed of the static binarization.

    Raises:
        ValueError: ``name_or_path`` is neither a name nor an existing path, or the data is bad
            (see each source).
    """
    check_split(split)
    check_binarize(binarize)
    if isinstance(name_or_path, str) and name_or_path in SOURCES:
        data = SOURCES[name_or_path](split, root=root, binarize=binarize, seed=seed)
        return dataclasses.replace(data, source=name_or_path)
    path = Path(name_or_path).expanduser()
    if path.exists():
        data = load_file_split(path, split, binarize=binarize, seed=seed)
        return dataclasses.replace(data, source=str(path.resolve()))
    raise ValueError(
        f"expected a data set name ({', '.join(DATASETS)}) or an existing file ({', '.join(SUFFIXES)}) "
        f"or image folder, got {str(name_or_path)!r}"
    )
