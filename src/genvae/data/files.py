"""The user's own data: an ``.npz``, ``.npy`` or ``.pt`` file, or a folder of images, one sub-folder per class.

[`load_file`][genvae.data.files.load_file] reads the whole file;
[`load_file_split`][genvae.data.files.load_file_split] holds out a fixed tenth of it as the test split.

* ``.npz``: an array ``x`` and an optional ``y`` (``np.savez``), read with ``allow_pickle=False``.
* ``.npy``: an array ``x`` (``np.save``), read with ``allow_pickle=False``.
* ``.pt``: a tensor ``x``, or a dict ``{"x": x, "y": y}`` with ``y`` optional (``torch.save``), read
  with ``torch.load(weights_only=True)``.
* a folder: torchvision's ``ImageFolder`` layout, ``FOLDER/CLASS/IMAGE`` (PNG, JPEG, and the other
  suffixes of ``torchvision.datasets.folder.IMG_EXTENSIONS``); classes are numbered in sorted order
  of their folder names. Every image must have the first one's size and mode, grayscale (``L``)
  giving ``(1, H, W)`` and RGB ``(3, H, W)``.

``x`` of dtype uint8 is 8-bit images, ``(N, C, H, W)`` or ``(N, H, W)`` (one channel); floating
``x`` is kept as it is, of any shape ``(N, ...)``, and must be finite; any other dtype is refused
(int64 could be pixels or counts: convert it). Labels ``y`` are ``N`` non-negative integers.
Nothing in a file is executed: no reader unpickles anything beyond tensors and plain arrays.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._raw import Split, check_split
from .dataset import Binarize, ImageDataset, check_binarize

__all__ = ["SPLIT_SEED", "SUFFIXES", "TEST_ONE_IN", "load_file", "load_file_split"]

log = logging.getLogger("genvae.data")

#: One sample in this many (rounded up) is held out as a file's test split.
TEST_ONE_IN = 10
#: Seed of the permutation that draws the held-out samples: fixed, so the split of a file is the
#: same in every run, whatever the binarization seed.
SPLIT_SEED = 0

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_NPY_MAGIC = (b"\x93NUMPY",)
_TORCH_MAGIC = (*_ZIP_MAGIC, b"\x80")  # torch.save's zip format, its legacy pickle format

_Arrays = tuple[object, object | None, int | None]  # (x, y or None, num_classes or None)


def _name(path: Path) -> str:
    return repr(str(path))


def _reason(err: BaseException) -> str:
    """One line of ``err``'s message: the line naming a refused global, else the first."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    refused = [line for line in lines if "GLOBAL" in line]
    return (refused or lines or [type(err).__name__])[0]


def _require_magic(path: Path, magics: tuple[bytes, ...], what: str) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(magics):
        raise ValueError(f"expected {_name(path)} to be {what}, got a file that does not start like one")


def _read_npz(path: Path) -> _Arrays:
    what = "an .npz archive (a zip of .npy arrays, as np.savez writes)"
    _require_magic(path, _ZIP_MAGIC, what)
    try:
        with zipfile.ZipFile(path) as z:
            members = z.namelist()
    except zipfile.BadZipFile as err:
        raise ValueError(f"expected {_name(path)} to be {what}, got: {_reason(err)}") from None
    others = [m for m in members if not m.endswith(".npy")]
    if others:
        raise ValueError(f"expected {_name(path)} to be {what}, got a zip holding {others[0]!r}")
    arrays = {m.removesuffix(".npy") for m in members}
    if "x" not in arrays:
        raise ValueError(f"expected an array named 'x' in {_name(path)}, got arrays {sorted(arrays)}")
    if arrays - {"x", "y"}:
        log.info("ignoring arrays %s in %s: only x and y are read", sorted(arrays - {"x", "y"}), path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz["x"], npz["y"] if "y" in arrays else None, None
    except Exception as err:  # a pickled (object) array, a corrupt member
        raise ValueError(f"could not read {_name(path)} as {what}: {_reason(err)}") from None


def _read_npy(path: Path) -> _Arrays:
    what = "an .npy array (as np.save writes)"
    _require_magic(path, _NPY_MAGIC, what)
    try:
        return np.load(path, allow_pickle=False), None, None
    except Exception as err:  # a pickled (object) array, a truncated file
        raise ValueError(f"could not read {_name(path)} as {what}: {_reason(err)}") from None


def _read_pt(path: Path) -> _Arrays:
    what = "a file written by torch.save"
    _require_magic(path, _TORCH_MAGIC, what)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a refused global, a corrupt archive
        raise ValueError(f"could not read {_name(path)} with torch.load(weights_only=True): {_reason(err)}") from None
    if isinstance(obj, Tensor):
        return obj, None, None
    if isinstance(obj, dict) and isinstance(obj.get("x"), Tensor) and isinstance(obj.get("y"), (Tensor, type(None))):
        if set(obj) - {"x", "y"}:
            log.info("ignoring entries %s in %s: only x and y are read", sorted(map(str, set(obj) - {"x", "y"})), path)
        return obj["x"], obj.get("y"), None
    got = f"a dict with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"expected a tensor, or a dict with a tensor 'x' and optional 'y', in {_name(path)}, got {got}")


def _read_folder(path: Path) -> _Arrays:
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(path)
    except FileNotFoundError:
        raise ValueError(f"expected {_name(path)} to hold one sub-folder of images per class, got none") from None
    samples = make_dataset(path, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        suffixes = ", ".join(IMG_EXTENSIONS)
        raise ValueError(f"expected images ({suffixes}) in the class folders of {_name(path)}, got none")
    pixels, first = [], None
    for file, _ in samples:
        try:
            with Image.open(file) as im:
                mode, size = im.mode, im.size
                pixels.append(np.asarray(im))  # (H, W) for L, (H, W, 3) for RGB
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"could not read image {file!r}: {_reason(err)}") from None
        if mode not in ("L", "RGB"):
            raise ValueError(f"expected grayscale (L) or RGB images, got mode {mode} in {file!r}: convert it")
        if first is None:
            first = (file, mode, size)
        elif (mode, size) != first[1:]:
            raise ValueError(
                f"expected every image to have the size {first[2]} and mode {first[1]} of {first[0]!r}, "
                f"got size {size} and mode {mode} in {file!r}"
            )
    x = np.stack(pixels)  # (N, H, W) or (N, H, W, 3)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # (N, C, H, W)
    y = np.array([label for _, label in samples], dtype=np.int64)
    log.info("read %d images of %d classes from %s", len(y), len(classes), path)
    return np.ascontiguousarray(x), y, len(classes)


_READERS: dict[str, Callable[[Path], _Arrays]] = {".npz": _read_npz, ".npy": _read_npy, ".pt": _read_pt}
#: The file suffixes a data file may have (besides a folder of images).
SUFFIXES = tuple(_READERS)


def _as_tensor(path: Path, name: str, a: object) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach()
    arr = np.asarray(a)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(arr)
    except TypeError:
        raise TypeError(f"expected {name} in {_name(path)} to be a numeric array, got dtype {arr.dtype}") from None


def _dataset(path: Path, arrays: _Arrays, binarize: Binarize, seed: int) -> ImageDataset:
    """Check ``arrays`` read from ``path`` against the rules of the module docstring and wrap them."""
    x, y, num_classes = _as_tensor(path, "x", arrays[0]), arrays[1], arrays[2]
    shape = tuple(x.shape)
    if x.dtype == torch.uint8:
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        elif x.dim() != 4:
            want = "8-bit images x of shape (N, H, W) or (N, C, H, W)"
            raise ValueError(f"expected {want} in {_name(path)}, got {shape}")
    elif x.is_floating_point():
        if x.dim() < 2:
            want = "float data x of shape (N, ...), one row per sample,"
            raise ValueError(f"expected {want} in {_name(path)}, got {shape}")
        finite = torch.isfinite(x).flatten(1).all(1)  # (N,)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            raise ValueError(f"expected finite values in {_name(path)}, got NaN or inf in sample {i}")
    else:
        raise TypeError(
            f"expected x in {_name(path)} to be uint8 (8-bit images) or floating point, got {x.dtype}: "
            "convert pixels with .astype(np.uint8), other values with .astype(np.float32)"
        )
    if len(x) == 0:
        raise ValueError(f"expected at least one sample in {_name(path)}, got shape {shape}")
    labels = None
    if y is not None:
        labels = _as_tensor(path, "y", y)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"expected integer labels y in {_name(path)}, got {labels.dtype}")
        if tuple(labels.shape) != (len(x),):
            raise ValueError(
                f"expected labels y of shape ({len(x)},), one per sample of x, in {_name(path)}, "
                f"got {tuple(labels.shape)}"
            )
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError(f"expected non-negative labels y in {_name(path)}, got {int(labels.min())}")
        labels = labels.to(torch.int64)
    return ImageDataset.from_tensors(x, labels, num_classes=num_classes, binarize=binarize, seed=seed)


def load_file(path: str | os.PathLike[str], *, binarize: Binarize = "none", seed: int = 0) -> ImageDataset:
    """The whole of a data file or image folder as an [`ImageDataset`][genvae.data.dataset.ImageDataset].

    Returns:
        uint8 images ``(N, C, H, W)``, or floating data ``(N, ...)``, with int64 labels ``(N,)`` or
        none; an image folder's ``num_classes`` is its number of class folders, a file's is
        ``max(y) + 1``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the suffix is unknown, the file is not what its suffix says, an ``.npz`` has no
            ``x``, labels do not match the data, float data is not finite, a folder has no images
            or images of different sizes or modes.
        TypeError: ``x`` is neither uint8 nor floating, or ``y`` is not integer.
    """
    check_binarize(binarize)
    p = Path(path).expanduser()
    if p.is_dir():
        return _dataset(p, _read_folder(p), binarize, seed)
    if not p.is_file():
        raise FileNotFoundError(f"expected a data file or folder, got {_name(p)}, which does not exist")
    reader = _READERS.get(p.suffix.lower())
    if reader is None:
        raise ValueError(f"expected a data file ending in {', '.join(SUFFIXES)}, or a folder, got {_name(p)}")
    return _dataset(p, reader(p), binarize, seed)


def load_file_split(
    path: str | os.PathLike[str], split: Split, *, binarize: Binarize = "none", seed: int = 0
) -> ImageDataset:
    """A fixed train/test split of [`load_file`][genvae.data.files.load_file]'s data.

    The test split is ``ceil(N / TEST_ONE_IN)`` samples drawn by
    ``torch.randperm(N, generator=torch.Generator().manual_seed(SPLIT_SEED))``; the train split is
    the rest. Both keep the file's order. The draw depends on ``N`` alone, so a file splits the same
    way in every run; ``seed`` seeds only the static binarization, which is drawn over the whole
    file, so a sample has the same binary image in either split.

    Raises:
        ValueError: fewer than 2 samples, besides [`load_file`][genvae.data.files.load_file]'s errors.
    """
    check_split(split)
    data = load_file(path, binarize=binarize, seed=seed)
    n = len(data)
    if n < 2:
        raise ValueError(f"expected at least 2 samples in {_name(Path(path))} to hold out a test split, got {n}")
    n_test = -(-n // TEST_ONE_IN)  # ceil(n / TEST_ONE_IN)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    indices = perm[:n_test] if split == "test" else perm[n_test:]
    return data.subset(indices.sort().values)
