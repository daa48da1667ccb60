"""The user's own data: an ``.npz``, ``.npy`` or ``.pt`` file, or a folder of images, one sub-folder per class.

[`load_file`][genvae.data.files.load_file] reads the whole file;
[`load_file_split`][genvae.data.files.load_file_split] holds out a fixed tenth of it as the test split.

* ``.npz``: an array ``x`` and an optional ``y`` (``np.savez``), read with ``allow_pickle=False``.
* ``.npy``: an array ``x`` (``np.save``), read with ``allow_pickle=False``.
* ``.pt``: a tensor ``x``, or a dict ``{"x": x, "y": y}`` with ``y`` optional (``torch.save``), read
  with ``torch.load(weights_only=True)``.
* a folder: torchvision's ``ImageFolder`` layout, ``FOLDER/CLASS/IMAGE`` (PNG, JPEG, and the other
  suffixes of ``torchvision.datasets.folder.IMG_EXTENSIONS``), read in torchvision's order; classes
  are numbered in sorted order of their folder names. Every image must have the first one's size
  and mode, grayscale (``L``) giving ``(1, H, W)`` and RGB ``(3, H, W)``, and at most
  [`MAX_IMAGE_PIXELS`][genvae.data.files.MAX_IMAGE_PIXELS] pixels, checked from its header before it
  is decoded. Links (to folders and to images) are followed, and every folder and image is read
  once: a link loop (a folder reached again from inside itself), a folder or image reached twice
  (through two links, or a link and its target) and an image that is not a regular file (a FIFO,
  a device) are refused, naming the path.

``x`` of dtype uint8 is 8-bit images, ``(N, C, H, W)`` or ``(N, H, W)`` (one channel); floating
``x`` (float16, bfloat16, float32, float64) is kept as it is, of any shape ``(N, ...)``, and must
be finite; any other dtype is refused (int64 could be pixels or counts: convert it). Labels ``y``
are ``N`` non-negative integers, and the largest is less than
``max(N, CLASS_BOUND_FLOOR)`` (see [`classes_from_labels`][genvae.data.dataset.classes_from_labels]).
A file's arrays and tensors must be plain ones: sparse (any layout but ``torch.strided``),
quantized, complex, nested, meta-device and expanded tensors (more elements than the file stores),
and object, structured, string and date arrays are refused with an
[`UnsupportedDataError`][genvae.data.files.UnsupportedDataError].
Nothing in a file is executed: no reader unpickles anything beyond tensors and plain arrays.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import error_line
from ._raw import Split, check_split
from .dataset import Binarize, ImageDataset, check_binarize, classes_from_labels

__all__ = [
    "MAX_IMAGE_PIXELS",
    "SPLIT_SEED",
    "SUFFIXES",
    "TEST_ONE_IN",
    "UnsupportedDataError",
    "load_file",
    "load_file_split",
]

log = logging.getLogger("genvae.data")

#: One sample in this many (rounded up) is held out as a file's test split.
TEST_ONE_IN = 10
#: Seed of the permutation that draws the held-out samples: fixed, so the split of a file is the
#: same in every run, whatever the binarization seed.
SPLIT_SEED = 0
MAX_IMAGE_PIXELS = 4096 * 4096
"""The most pixels (width × height) one image of a folder may have: 4096 × 4096, 48 MiB decoded as
RGB, far above the sizes VAEs train on. An image's size is read from its header and checked
before its pixels are decoded, so a small file that declares a huge image (a decompression bomb)
is refused, naming it, without being decoded. PIL's own global limit,
``PIL.Image.MAX_IMAGE_PIXELS``, is left as it is (an image beyond twice it is refused by PIL
first, with genvae's message)."""

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_NPY_MAGIC = (b"\x93NUMPY",)
_TORCH_MAGIC = (*_ZIP_MAGIC, b"\x80")  # torch.save's zip format, its legacy pickle format

_Arrays = tuple[object, object | None, int | None]  # (x, y or None, num_classes or None)
_Key = tuple[int, int] | str  # what identifies a file or folder: (device, inode), else its real path

# The dtypes a file's tensors may have (x: uint8 or floating, checked later; y: integer) ...
_DTYPES: tuple[torch.dtype, ...] = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_DTYPES += (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# ... and torch >= 2.3's uint16, uint32 and uint64 (labels), which lack min and max: read through numpy
_WIDE_UNSIGNED = tuple(getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name))


class UnsupportedDataError(ValueError, TypeError):
    """A data file holds a tensor or array that is not plain data: a sparse, quantized, complex,
    nested, meta-device or expanded tensor, or an array of objects, records, strings or dates.

    A ``ValueError`` (the file's content is wrong) and, as other refused dtypes are, a ``TypeError``.
    """


def _name(path: Path) -> str:
    return repr(str(path))


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """Turn any error of the OS, numpy or Pillow while reading ``what`` (e.g. ``"image 'a.png'"``)
    into a one-line ValueError naming it: Pillow's errors alone are of many types (OSError,
    SyntaxError, ValueError, DecompressionBombError)."""
    try:
        yield
    except Exception as err:
        raise ValueError(f"could not read {what}: {error_line(err)}") from None


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
        raise ValueError(f"expected {_name(path)} to be {what}, got: {error_line(err)}") from None
    others = [m for m in members if not m.endswith(".npy")]
    if others:
        raise ValueError(f"expected {_name(path)} to be {what}, got a zip holding {others[0]!r}")
    arrays = {m.removesuffix(".npy") for m in members}
    if "x" not in arrays:
        raise ValueError(f"expected an array named 'x' in {_name(path)}, got arrays {sorted(arrays)}")
    if arrays - {"x", "y"}:
        log.info("ignoring arrays %s in %s: only x and y are read", sorted(arrays - {"x", "y"}), path)
    with _reading(f"{_name(path)} as {what}"):
        npz = np.load(path, allow_pickle=False)
    with npz:
        return _npz_array(path, npz, "x"), _npz_array(path, npz, "y") if "y" in arrays else None, None


def _npz_array(path: Path, npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """Array ``key`` of an open ``.npz``; a pickled (object) one is refused, as is a corrupt one."""
    try:
        return npz[key]
    except Exception as err:
        raise ValueError(f"could not read array {key!r} of {_name(path)}: {error_line(err)}") from None


def _read_npy(path: Path) -> _Arrays:
    what = "an .npy array (as np.save writes)"
    _require_magic(path, _NPY_MAGIC, what)
    try:
        return np.load(path, allow_pickle=False), None, None
    except Exception as err:  # a pickled (object) array, a truncated file
        raise ValueError(f"could not read {_name(path)} as {what}: {error_line(err)}") from None


def _read_pt(path: Path) -> _Arrays:
    what = "a file written by torch.save"
    _require_magic(path, _TORCH_MAGIC, what)
    # torch.load warns about what it reads (sparse tensors validated, quantized storages): logged
    # here, as the content is then checked and refused with one line of its own.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a refused global, a corrupt archive, a sparse tensor out of bounds
            raise ValueError(
                f"could not read {_name(path)} with torch.load(weights_only=True): {error_line(err)}"
            ) from None
    for w in caught:
        log.info("torch.load warned while reading %s: %s", path, w.message)
    if isinstance(obj, Tensor):
        return obj, None, None
    if isinstance(obj, dict) and isinstance(obj.get("x"), Tensor) and isinstance(obj.get("y"), (Tensor, type(None))):
        if set(obj) - {"x", "y"}:
            log.info("ignoring entries %s in %s: only x and y are read", sorted(map(str, set(obj) - {"x", "y"})), path)
        return obj["x"], obj.get("y"), None
    got = f"a dict with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"expected a tensor, or a dict with a tensor 'x' and optional 'y', in {_name(path)}, got {got}")


def _identity(path: str) -> tuple[os.stat_result, _Key]:
    """``path``'s status, links followed, and what identifies the file or folder it leads to: its
    device and inode (so a link, a hard link or a bind mount is seen as its target), else, where the
    file system gives no inode, its real path."""
    st = os.stat(path)
    return st, ((st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(path))


def _walk(root: Path, top: str, seen: dict[_Key, str]) -> list[tuple[str, list[str]]]:
    """``(folder, the names of its image files, sorted)`` for class folder ``top`` of ``root`` and
    every folder under it, following links; ``seen`` maps each folder and image already read to
    its path.

    Raises:
        ValueError: a folder is reached again from inside itself (a link loop) or reached twice.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    found = []
    stack: list[tuple[str, tuple[_Key, ...]]] = [(top, (_identity(str(root))[1],))]  # (a folder, those it lies in)
    while stack:
        folder, above = stack.pop()
        with _reading(f"folder {folder!r}"):
            key = _identity(folder)[1]
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda entry: entry.name)
            is_dir = [entry.is_dir() for entry in entries]  # links to folders included
        if key in above:
            raise ValueError(
                f"expected the folders of {_name(root)} to form a tree, got a link loop: {folder!r} leads back "
                f"to {os.path.realpath(folder)!r}, a folder it lies in"
            )
        if key in seen:
            raise ValueError(
                f"expected each folder of {_name(root)} to be reached once, got {folder!r} and {seen[key]!r}, "
                f"both the folder {os.path.realpath(folder)!r}"
            )
        seen[key] = folder
        names = [
            e.name for e, d in zip(entries, is_dir) if not d and has_file_allowed_extension(e.name, IMG_EXTENSIONS)
        ]
        found.append((folder, names))
        dirs = [e.path for e, d in zip(entries, is_dir) if d]
        stack.extend((d, (*above, key)) for d in reversed(dirs))  # popped in sorted order
    return found


def _image_files(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    """``(image, class index)`` for every image under ``root``'s class folders, in the order of
    torchvision's ``make_dataset`` (class by class; within one, folders by path and the files of a
    folder by name), each folder and image read once.

    Raises:
        ValueError: a link loop, a folder or image reached twice, or an image that is not a regular file.
    """
    seen: dict[_Key, str] = {_identity(str(root))[1]: str(root)}
    samples = []
    for label, cls in enumerate(classes):
        for folder, names in sorted(_walk(root, os.path.join(root, cls), seen)):
            for file in (os.path.join(folder, name) for name in names):
                with _reading(f"image {file!r}"):
                    st, key = _identity(file)
                if not stat.S_ISREG(st.st_mode):  # opening a FIFO would wait for a writer
                    raise ValueError(
                        f"expected image files in {_name(root)}, got {file!r}, which is not a regular file"
                    )
                if key in seen:
                    raise ValueError(
                        f"expected each image of {_name(root)} to be reached once, got {file!r} and {seen[key]!r}, "
                        f"both the file {os.path.realpath(file)!r}"
                    )
                seen[key] = file
                samples.append((file, label))
    return samples


def _read_image(file: str) -> tuple[str, tuple[int, int], np.ndarray]:
    """An image's mode, size ``(W, H)`` and pixels, ``(H, W)`` for L and ``(H, W, 3)`` for RGB; its
    size and mode are checked from its header (``Image.open`` decodes nothing) before the pixels are.

    ``Image.open`` itself refuses an image of more than twice PIL's ``Image.MAX_IMAGE_PIXELS`` (and
    warns above it, a warning silenced here, as genvae's own limit is lower); such an image is
    refused with genvae's message and PIL's reason.
    """
    from PIL import Image

    too_large = f"expected images of at most {MAX_IMAGE_PIXELS:,} pixels (genvae.data.files.MAX_IMAGE_PIXELS), got"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(file)
    except Image.DecompressionBombError as err:
        raise ValueError(f"{too_large} a larger one in {file!r}: {err}") from None
    except Exception as err:  # Pillow's errors are of many types (OSError, SyntaxError, ValueError)
        raise ValueError(f"could not read image {file!r}: {error_line(err)}") from None
    with im:
        (width, height), mode = im.size, im.mode
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{too_large} {width} × {height} = {width * height:,} pixels in {file!r}")
        if mode not in ("L", "RGB"):
            raise ValueError(f"expected grayscale (L) or RGB images, got mode {mode} in {file!r}: convert it")
        with _reading(f"image {file!r}"):
            return mode, im.size, np.asarray(im)


def _read_folder(path: Path) -> _Arrays:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

    try:
        classes, _ = find_classes(path)
    except FileNotFoundError:
        raise ValueError(f"expected {_name(path)} to hold one sub-folder of images per class, got none") from None
    samples = _image_files(path, classes)
    if not samples:
        suffixes = ", ".join(IMG_EXTENSIONS)
        raise ValueError(f"expected images ({suffixes}) in the class folders of {_name(path)}, got none")
    pixels, first = [], None
    for file, _ in samples:
        mode, size, image = _read_image(file)
        pixels.append(image)
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


def _check_tensor(path: Path, name: str, t: Tensor) -> None:
    """Refuse a tensor that is not plain data: dense, of a real dtype, on the CPU, with as many
    elements as its storage (that is, the file) holds."""
    got, remedy = None, ""
    if t.is_nested:
        got, remedy = "a nested tensor", f"pad it to one shape with {name}.to_padded_tensor(0)"
    elif t.layout != torch.strided:
        got, remedy = f"layout {t.layout}", f"save {name}.to_dense()"
    elif t.is_quantized:
        got, remedy = f"the quantized dtype {t.dtype}", f"save {name}.dequantize()"
    elif t.device.type != "cpu":
        got, remedy = f"a tensor on the {t.device.type} device", "save a tensor that holds its values"
    elif t.dtype not in _DTYPES + _WIDE_UNSIGNED:
        got, remedy = f"dtype {t.dtype}", "convert it to float32 (uint8 for 8-bit pixels, int64 for labels)"
    elif t.numel() * t.element_size() > t.untyped_storage().nbytes():
        got = f"{t.numel():,} elements of which {t.untyped_storage().nbytes() // t.element_size():,} are stored"
        got += " (an expanded view)"
        remedy = f"save {name}.contiguous()"
    if got is not None:
        raise UnsupportedDataError(
            f"expected {name} in {_name(path)} to be a dense tensor of real numbers, got {got}: {remedy}"
        )


def _check_array(path: Path, name: str, arr: np.ndarray) -> None:
    """Refuse an array of anything but booleans, integers and float16/32/64: objects, records
    (structured dtypes), strings, dates, complex numbers, long doubles."""
    if arr.dtype.kind not in "biuf" or arr.dtype.itemsize > 8:
        raise UnsupportedDataError(
            f"expected {name} in {_name(path)} to be a numeric array (integers or float16/32/64), got dtype {arr.dtype}"
        )


def _as_tensor(path: Path, name: str, a: object) -> Tensor:
    """Array or tensor ``name`` of ``path`` as a CPU tensor, once checked to be plain data."""
    if isinstance(a, Tensor):
        _check_tensor(path, name, a)
        return a.detach()
    arr = np.asarray(a)
    _check_array(path, name, arr)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(arr)
    except TypeError:  # uint16, uint32, uint64 before torch 2.3
        raise UnsupportedDataError(
            f"expected {name} in {_name(path)} to be a numeric array that torch reads, got dtype {arr.dtype}"
        ) from None


def _labels(path: Path, y: object, n: int) -> Tensor:
    """Labels ``y`` of ``path`` as int64 ``(n,)``; non-integer labels, or unsigned ones beyond int64, are refused."""
    labels = _as_tensor(path, "y", y)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"expected integer labels y in {_name(path)}, got {labels.dtype}")
    if tuple(labels.shape) != (n,):
        raise ValueError(
            f"expected labels y of shape ({n},), one per sample of x, in {_name(path)}, got {tuple(labels.shape)}"
        )
    if labels.dtype in _WIDE_UNSIGNED and n:  # torch's uint16/32/64 lack max: numpy's has it
        top = int(labels.numpy().max())
        if top > torch.iinfo(torch.int64).max:
            raise ValueError(f"expected labels y in {_name(path)} that fit int64, got {top}")
    return labels.to(torch.int64)


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
    labels = None if y is None else _labels(path, y, len(x))
    if labels is not None and num_classes is None:
        num_classes = classes_from_labels(labels, f"labels y in {_name(path)}")
    return ImageDataset.from_tensors(x, labels, num_classes=num_classes, binarize=binarize, seed=seed)


def load_file(path: str | os.PathLike[str], *, binarize: Binarize = "none", seed: int = 0) -> ImageDataset:
    """The whole of a data file or image folder as an [`ImageDataset`][genvae.data.dataset.ImageDataset].

    An image of a folder may have at most [`MAX_IMAGE_PIXELS`][genvae.data.files.MAX_IMAGE_PIXELS]
    pixels (4096 × 4096), checked from its header before it is decoded. Links in a folder are
    followed, but a link loop, and a folder or image reached twice, are refused: no image is read
    twice. A file's labels must be less than ``max(N, CLASS_BOUND_FLOOR)`` (1000) for ``N`` samples
    (see [`classes_from_labels`][genvae.data.dataset.classes_from_labels]).

    Returns:
        uint8 images ``(N, C, H, W)``, or floating data ``(N, ...)``, with int64 labels ``(N,)`` or
        none; an image folder's ``num_classes`` is its number of class folders, a file's is
        ``max(y) + 1``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsupportedDataError: a tensor or array of the file is not plain data (a sparse, quantized,
            complex, nested, meta-device or expanded tensor; an array of objects, records, strings
            or dates). It is both a ValueError and a TypeError.
        ValueError: the suffix is unknown, the path is neither a file nor a folder (a FIFO, a
            device), the file is not what its suffix says, an ``.npz`` has no ``x``, labels do not
            match the data or imply too many classes, float data is not finite, a folder has no
            images, images of different sizes or modes or of more than ``MAX_IMAGE_PIXELS`` pixels,
            a link loop, a folder or image reached twice, or an image that is not a regular file.
        TypeError: ``x`` is neither uint8 nor floating, or ``y`` is not integer.
    """
    check_binarize(binarize)
    p = Path(path).expanduser()
    if p.is_dir():
        return _dataset(p, _read_folder(p), binarize, seed)
    if not p.is_file():
        if p.exists():  # reading a FIFO would wait for a writer
            raise ValueError(
                f"expected a data file or folder, got {_name(p)}, which is neither (a FIFO, device or socket)"
            )
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
