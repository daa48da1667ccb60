"""Raw data files shared by the data sources: the cache root, MD5 checks, IDX files, a numpy-only
unpickler and torchvision downloads under a socket timeout."""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import pickle
import socket
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

import numpy as np

from .._files import atomic_path

log = logging.getLogger("genvae.data")

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

#: Seconds a torchvision download may wait on a socket before the source gives up on the network.
DOWNLOAD_TIMEOUT_S = 10.0

_VERIFIED: set[tuple[str, int, int, str]] = set()  # (path, size, mtime_ns, md5) of files that matched


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The data cache root: ``root``, else ``$GENVAE_DATA``, else ``~/.cache/genvae``."""
    return Path(root if root is not None else os.environ.get("GENVAE_DATA") or "~/.cache/genvae").expanduser()


def check_split(split: object) -> None:
    """Refuse a split other than ``"train"`` or ``"test"``."""
    if split not in SPLITS:
        raise ValueError(f"expected split 'train' or 'test', got {split!r}")


def md5(path: Path) -> str:
    """The MD5 hex digest of the file at ``path``."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def md5_mismatch(path: Path, expected: str, digest: Callable[[Path], str] = md5) -> str | None:
    """``None`` if ``path`` has MD5 ``expected``, else its actual MD5.

    A match is remembered for this version of the file (path, size, mtime) and this sum for the
    rest of the process, so a file is hashed once however often it is loaded.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
    if key in _VERIFIED:
        return None
    actual = digest(path)
    if actual != expected:
        return actual
    _VERIFIED.add(key)
    log.debug("verified %s (md5 %s)", path, actual)
    return None


def verified(path: Path, expected: str | None, what: str, remedy: str) -> Path:
    """``path`` if its MD5 is ``expected`` (or there is no published sum: logged), else a one-line
    RuntimeError naming the file, both sums and ``remedy``."""
    if expected is None:
        log.info("torchvision publishes no checksum for %s; reading it unverified", path)
        return path
    actual = md5_mismatch(path, expected)
    if actual is not None:
        raise RuntimeError(
            f"{what} file {str(path)!r} does not match torchvision's checksum (expected md5 {expected}, "
            f"got {actual}): {remedy}"
        )
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (big-endian header: 0, 0, 0x08, ndim, then the dims)."""
    if array.dtype != np.uint8:
        raise TypeError(f"expected array with dtype uint8, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(np.ascontiguousarray(array).tobytes())


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic 2049 for 1-D, 2051 for 3-D) into a uint8 array.

    A name ending in ``.gz`` is decompressed first, as torchvision's archives are stored.
    """
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                buf = np.frombuffer(bytearray(f.read()), dtype=np.uint8)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"expected {str(path)!r} to be a gzip-compressed IDX file, got: {err}") from None
    else:
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


class NumpyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays (and plain containers) and nothing else.

    Every global a pickle names goes through ``find_class``; only ``ndarray``, ``dtype`` and
    numpy's ``_reconstruct`` pass, so no function from the file is ever called.
    """

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


def load_numpy_pickle(f: IO[bytes] | gzip.GzipFile, encoding: str = "latin1") -> object:
    """Unpickle a (Python 2 era) pickle of numpy arrays from ``f`` with ``NumpyUnpickler``.

    ``encoding`` decodes Python 2 ``str`` objects: ``"latin1"`` gives ``str``, ``"bytes"`` keeps ``bytes``.
    """
    return NumpyUnpickler(f, encoding=encoding).load()


def torchvision_download(what: str, download: Callable[[], object]) -> None:
    """Run ``download`` (a torchvision data set built with ``download=True``) with sockets that
    time out after ``DOWNLOAD_TIMEOUT_S``; log and return if it fails."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        log.info("downloading %s with torchvision", what)
        download()
    except Exception as err:  # no network, a mirror down: the caller says which files are missing
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.info("torchvision could not download %s (%s)", what, reason)
    finally:
        socket.setdefaulttimeout(old)
