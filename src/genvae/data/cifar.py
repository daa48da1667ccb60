"""CIFAR-10 from torchvision's python-pickle batches, read by an unpickler that builds numpy arrays only.

The batches live in ``ROOT/cifar-10-batches-py`` (``data_batch_1`` … ``data_batch_5``,
``test_batch``), ``ROOT`` being the ``root`` argument, else ``$GENVAE_DATA``, else
``~/.cache/genvae``: torchvision's layout, so ``torchvision.datasets.CIFAR10(ROOT)`` reads the same
files. Each is a Python 2 pickle of a dict: ``data`` a uint8 array ``(10000, 3072)``, ``labels`` a
list of ints, ``batch_label`` and ``filenames``. Every batch is checked against the MD5 sum torchvision
publishes for it, and unpickled by an unpickler that admits numpy arrays alone: a pickle
that names any other global (``os.system``, ``builtins.eval``, …) is refused before anything in it runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..registry import register
from ._raw import Split, cache_dir, check_split, load_numpy_pickle, torchvision_download, verified
from .dataset import Binarize, ImageDataset, check_binarize

__all__ = ["BATCHES", "FOLDER", "MD5", "load_cifar10"]

log = logging.getLogger("genvae.data")

FOLDER = "cifar-10-batches-py"
BATCHES: dict[Split, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_NUM_CLASSES = 10
_SHAPE = (3, 32, 32)  # each row of ``data``: 1024 red, then 1024 green, then 1024 blue pixels, row-major

#: ``{batch file name: md5}``: the sums torchvision publishes (``CIFAR10.train_list`` and
#: ``test_list``), read on first use.
MD5: dict[str, str] = {}


def _checksums() -> dict[str, str]:
    if not MD5:
        import torchvision

        cls = torchvision.datasets.CIFAR10
        MD5.update({name: md5 for name, md5 in cls.train_list + cls.test_list})
    return MD5


def _download(root: Path) -> None:
    """Ask torchvision to download and extract CIFAR-10 into ``root``; log and return on failure."""

    def download() -> None:
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=True, download=True)

    torchvision_download("CIFAR-10", download)


def _verified(path: Path) -> Path:
    remedy = "delete it and call again to extract it anew, or replace it with the file from cifar-10-python.tar.gz."
    return verified(path, _checksums().get(path.name), "CIFAR-10", remedy)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data (n, 3072) uint8, labels (n,) int64)`` of one batch file."""
    try:
        with open(path, "rb") as f:
            batch = load_numpy_pickle(f, encoding="bytes")
    except Exception as err:  # a refused global, or bytes that are not a pickle: nothing in it has run
        raise ValueError(f"{str(path)!r} is not a CIFAR-10 batch: {str(err).splitlines()[0]}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"expected {str(path)!r} to hold a dict (a CIFAR-10 batch), got {type(batch).__name__}")
    fields = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = fields.get("data"), fields.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"expected 'data' in {str(path)!r} to be a uint8 array (N, 3072), got {got}")
    y = np.asarray(labels) if isinstance(labels, (list, np.ndarray)) else None
    if y is None or y.dtype.kind not in "iu" or y.shape != (len(data),):
        got = f"{y.dtype} {y.shape}" if y is not None else type(labels).__name__
        raise ValueError(f"expected 'labels' in {str(path)!r} to be {len(data)} integers, got {got}")
    if y.size and (y.min() < 0 or y.max() >= _NUM_CLASSES):
        raise ValueError(f"expected labels in range(0, {_NUM_CLASSES}) in {str(path)!r}, got [{y.min()}, {y.max()}]")
    return data, y.astype(np.int64)


@register("data", "cifar10")
def load_cifar10(
    split: Split,
    *,
    root: str | os.PathLike[str] | None = None,
    binarize: Binarize = "none",
    seed: int = 0,
) -> ImageDataset:
    """CIFAR-10 as an [`ImageDataset`][genvae.data.dataset.ImageDataset]: images ``(N, 3, 32, 32)``
    uint8, labels ``(N,)`` int64 in 0..9. ``root``, ``binarize`` and ``seed`` are those of
    [`load_mnist`][genvae.data.mnist.load_mnist].

    Args:
        split: ``"train"`` (the five data batches, 50,000 images) or ``"test"`` (10,000 images).

    Raises:
        FileNotFoundError: a batch is missing and torchvision could not download it.
        RuntimeError: a batch does not match torchvision's MD5 sum.
        ValueError: a batch is not a CIFAR-10 batch, or its pickle names a global other than numpy's.
    """
    check_split(split)
    check_binarize(binarize)
    root_dir = cache_dir(root)
    folder = root_dir / FOLDER
    names = BATCHES[split]
    if any(not (folder / n).is_file() for n in names):
        _download(root_dir)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 {split} files not found: put {', '.join(missing)} in {str(folder)!r} (extract "
            "cifar-10-python.tar.gz into its parent, as torchvision does), or run where torchvision can download it."
        )
    parts = [_read_batch(_verified(folder / n)) for n in names]
    images = torch.from_numpy(np.concatenate([data for data, _ in parts]).reshape(-1, *_SHAPE))  # (N, 3, 32, 32)
    labels = torch.from_numpy(np.concatenate([y for _, y in parts]))  # (N,)
    log.info("loaded CIFAR-10 %s: %d images", split, len(labels))
    return ImageDataset.from_tensors(images, labels, num_classes=_NUM_CLASSES, binarize=binarize, seed=seed)
