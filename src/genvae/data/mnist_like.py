"""Fashion-MNIST, KMNIST and EMNIST (balanced): 28×28 grayscale IDX files in torchvision's layout.

Each set is one [`IdxImageSet`][genvae.data.mnist_like.IdxImageSet] entry read by
[`load_idx_images`][genvae.data.mnist_like.load_idx_images] from ``ROOT/<folder>/raw``, ``ROOT``
being the ``root`` argument, else ``$GENVAE_DATA``, else ``~/.cache/genvae``; the folder and file
names are torchvision's, so ``torchvision.datasets.FashionMNIST(ROOT)`` reads the same files.

A file may be there gzip-compressed (``NAME.gz``, as torchvision downloads it) or extracted
(``NAME``). The ``.gz`` archive is preferred and checked against the MD5 sum torchvision publishes
for it (``resources``); an extracted file, or an EMNIST file, has no published sum and is read
unverified, with a log line saying so. Missing files are downloaded by torchvision where a network
answers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..registry import register
from ._raw import Split, cache_dir, check_split, read_idx, torchvision_download, verified
from .dataset import Binarize, ImageDataset, check_binarize

__all__ = ["EMNIST_BALANCED", "FASHION_MNIST", "KMNIST", "MD5", "IdxImageSet", "load_idx_images"]

log = logging.getLogger("genvae.data")


@dataclass(frozen=True)
class IdxImageSet:
    """One IDX image set as torchvision stores it.

    Attributes:
        name: the name shown in messages.
        folder: torchvision's class name in ``torchvision.datasets``, also the folder under ``ROOT``.
        prefixes: the file-name prefix of each split: ``PREFIX-images-idx3-ubyte``, ``PREFIX-labels-idx1-ubyte``.
        num_classes: labels lie in ``range(num_classes)``.
        transposed: the files store each image transposed (column-major), as EMNIST's do.
        torchvision_args: keyword arguments torchvision's class needs besides ``root`` and ``download``.
    """

    name: str
    folder: str
    prefixes: Mapping[str, str]
    num_classes: int
    transposed: bool = False
    torchvision_args: Mapping[str, str] = field(default_factory=dict)

    def files(self, split: Split) -> tuple[str, str]:
        """The extracted names of the images file and the labels file of ``split``."""
        prefix = self.prefixes[split]
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


_MNIST_PREFIXES = {"train": "train", "test": "t10k"}
FASHION_MNIST = IdxImageSet("Fashion-MNIST", "FashionMNIST", _MNIST_PREFIXES, 10)
"""Zalando's Fashion-MNIST: 10 classes of clothing, MNIST's sizes and file layout."""
KMNIST = IdxImageSet("KMNIST", "KMNIST", _MNIST_PREFIXES, 10)
"""Kuzushiji-MNIST: 10 classes of cursive Japanese characters, MNIST's sizes and file layout."""
EMNIST_BALANCED = IdxImageSet(
    "EMNIST (balanced)",
    "EMNIST",
    {"train": "emnist-balanced-train", "test": "emnist-balanced-test"},
    47,
    transposed=True,
    torchvision_args={"split": "balanced"},
)
"""EMNIST's "balanced" split: 47 classes (digits, upper-case letters, and the lower-case letters
that do not look like their capitals); torchvision itself returns these images transposed."""

#: ``{folder: {file name: md5}}``: the sums torchvision publishes, read from its class attributes
#: on first use. EMNIST has none: torchvision checks only the zip it downloads all splits in.
MD5: dict[str, dict[str, str]] = {}


def _checksums(spec: IdxImageSet) -> dict[str, str]:
    if spec.folder not in MD5:
        import torchvision

        cls = getattr(torchvision.datasets, spec.folder)
        # EMNIST inherits MNIST's resources, which are not its files
        MD5[spec.folder] = {} if spec.folder == "EMNIST" else {name: md5 for name, md5 in cls.resources}
    return MD5[spec.folder]


def _download(spec: IdxImageSet, root: Path) -> None:
    """Ask torchvision to download ``spec`` into ``root/<folder>/raw``; log and return on failure."""

    def download() -> None:
        import torchvision

        getattr(torchvision.datasets, spec.folder)(str(root), download=True, **spec.torchvision_args)

    torchvision_download(spec.name, download)


def _find(raw: Path, name: str) -> Path | None:
    """``raw/name.gz`` if it exists (the archive has a checksum), else ``raw/name``, else ``None``."""
    return next((p for p in (raw / f"{name}.gz", raw / name) if p.is_file()), None)


def _locate(spec: IdxImageSet, split: Split, root: Path) -> tuple[Path, Path]:
    """The images and labels files of ``split``, downloaded if missing and checked where a sum exists."""
    raw = root / spec.folder / "raw"
    names = spec.files(split)
    if any(_find(raw, n) is None for n in names):
        _download(spec, root)
    found = [_find(raw, n) for n in names]
    missing = [n for n, path in zip(names, found) if path is None]
    if missing:
        raise FileNotFoundError(
            f"{spec.name} {split} files not found: put {' and '.join(n + '[.gz]' for n in missing)} in "
            f"{str(raw)!r} (torchvision's layout), or run where torchvision can download them."
        )
    image_path, label_path = (_verified(spec, path) for path in found if path is not None)
    return image_path, label_path


def _verified(spec: IdxImageSet, path: Path) -> Path:
    remedy = f"delete the folder {str(path.parent)!r} and call again to download it anew, or replace the file"
    return verified(path, _checksums(spec).get(path.name), spec.name, remedy + " with torchvision's copy.")


def load_idx_images(
    spec: IdxImageSet,
    split: Split,
    *,
    root: str | os.PathLike[str] | None = None,
    binarize: Binarize = "none",
    seed: int = 0,
) -> ImageDataset:
    """The ``split`` of ``spec`` as an [`ImageDataset`][genvae.data.dataset.ImageDataset]: images
    ``(N, 1, 28, 28)`` uint8 (upright, EMNIST's too), labels ``(N,)`` int64 in ``range(spec.num_classes)``.
    ``root``, ``binarize`` and ``seed`` are those of [`load_mnist`][genvae.data.mnist.load_mnist].

    Args:
        spec: which set, e.g. [`FASHION_MNIST`][genvae.data.mnist_like.FASHION_MNIST].
        split: ``"train"`` or ``"test"``.

    Raises:
        FileNotFoundError: a file is missing and torchvision could not download it.
        RuntimeError: an archive does not match torchvision's MD5 sum.
        ValueError: a file is not an IDX file, or its labels do not fit the images.
    """
    check_split(split)
    check_binarize(binarize)
    image_path, label_path = _locate(spec, split, cache_dir(root))
    images, labels = read_idx(image_path, 3), read_idx(label_path, 1)
    if len(images) != len(labels):
        raise ValueError(
            f"expected {str(label_path)!r} to hold one label per image of {str(image_path)!r} "
            f"({len(images)}), got {len(labels)}"
        )
    if labels.size and labels.max() >= spec.num_classes:
        raise ValueError(
            f"expected labels in range(0, {spec.num_classes}) in {str(label_path)!r}, got {int(labels.max())}"
        )
    if spec.transposed:
        images = images.transpose(0, 2, 1)  # (N, W, H) -> (N, H, W)
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)  # (N, 1, H, W)
    y = torch.from_numpy(labels.astype(np.int64))
    log.info("loaded %s %s: %d images", spec.name, split, len(y))
    return ImageDataset.from_tensors(x, y, num_classes=spec.num_classes, binarize=binarize, seed=seed)


for _name, _set in (("fashion-mnist", FASHION_MNIST), ("kmnist", KMNIST), ("emnist", EMNIST_BALANCED)):
    register("data", _name)(partial(load_idx_images, _set))
