"""The data sources by name: each registers itself (``@register("data", name)``), so adding a data
set is one decorated function.

[`load_data`][genvae.data.sources.load_data] takes a registered name (``"mnist"``,
``"fashion-mnist"``, ``"kmnist"``, ``"emnist"``, ``"cifar10"``, and those of the plugins imported)
or the path of an existing data file or image folder, read by
[`load_file_split`][genvae.data.files.load_file_split]. A name wins over a file of the same name:
write ``./mnist`` for the folder.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Protocol

from .. import registry
from . import cifar, mnist, mnist_like  # noqa: F401 - their sources register themselves
from ._raw import Split, check_split
from .dataset import Binarize, ImageDataset, check_binarize
from .files import SUFFIXES, load_file_split

__all__ = ["Source", "datasets", "load_data"]


class Source(Protocol):
    """A named data set: returns its ``split``, reading (and if need be fetching) files under ``root``.

    Register one with ``@register("data", "name")`` on the function.
    """

    def __call__(
        self, split: Split, *, root: str | os.PathLike[str] | None, binarize: Binarize, seed: int
    ) -> ImageDataset: ...


def datasets() -> tuple[str, ...]:
    """The names ``load_data`` knows: genvae's sources and those of the plugins imported."""
    return registry.names("data")


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
        name_or_path: one of [`datasets()`][genvae.data.sources.datasets], else an existing file
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
    if isinstance(name_or_path, str) and name_or_path in datasets():
        source = registry.entry("data", name_or_path).build
        data = source(split, root=root, binarize=binarize, seed=seed)
        return dataclasses.replace(data, source=name_or_path)
    path = Path(name_or_path).expanduser()
    if path.exists():
        data = load_file_split(path, split, binarize=binarize, seed=seed)
        return dataclasses.replace(data, source=str(path.resolve()))
    raise ValueError(
        f"expected a data set name ({', '.join(datasets())}) or an existing file ({', '.join(SUFFIXES)}) "
        f"or image folder, got {str(name_or_path)!r}"
    )
