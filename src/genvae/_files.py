"""Crash-safe file writes (write under a temporary name in the same folder, flush, rename) and
reads and creations that never follow a symbolic link."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() gives a new file, whatever mode a library writes with
#: Flags that keep ``os.open`` on the entry itself: a symbolic link is refused (ELOOP), a FIFO
#: does not block the open, and the descriptor is not inherited by child processes.
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a FIFO, socket or device"


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """A descriptor of the regular file ``path``, opened without following a symbolic link.

    Raises:
        ValueError: ``path`` is a symbolic link, a folder, a FIFO, a socket or a device.
        OSError: it cannot be opened for another reason (missing: ``FileNotFoundError``).
    """
    try:
        fd = os.open(path, flags | NO_FOLLOW, mode)
    except OSError as err:
        try:
            found = os.lstat(path).st_mode
        except OSError:
            raise err from None
        if stat.S_ISREG(found):
            raise
        raise ValueError(f"expected {str(path)!r} to be a regular file, got {_kind(found)}") from None
    found = os.fstat(fd).st_mode
    if not stat.S_ISREG(found):
        os.close(fd)
        raise ValueError(f"expected {str(path)!r} to be a regular file, got {_kind(found)}")
    return fd


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (never through a symbolic link), at most ``max_bytes``.

    Raises:
        ValueError: ``path`` is not a regular file, or holds more than ``max_bytes`` bytes.
        OSError: it cannot be read (missing: ``FileNotFoundError``).
    """
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size > max_bytes:  # checked before anything is read or allocated
            raise ValueError(f"expected {str(path)!r} to hold at most {max_bytes} bytes, got {size}")
        data = f.read()
    if len(data) > max_bytes:  # it grew while being read
        raise ValueError(f"expected {str(path)!r} to hold at most {max_bytes} bytes, got {len(data)}")
    return data


def create_exclusive(path: str | os.PathLike[str]) -> None:
    """Create ``path`` as a new, empty regular file, after removing a file, symbolic link, FIFO or
    socket that stands in its way (a link is removed, never followed).

    A library that then writes to ``path`` by name writes into this file, wherever the old entry
    pointed.

    Raises:
        ValueError: a folder stands in the way; it is left as it is.
    """
    try:
        found = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(found):
            raise ValueError(f"expected no folder at {str(path)!r}, where a file is to be written; remove it")
        os.unlink(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, _FILE_MODE))


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path``'s data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush folder ``path``'s entries (renames, new files) to disk, where the OS allows it."""
    if os.name != "posix":  # pragma: no cover - folders cannot be opened on Windows
        return
    fsync_file(path)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success flush it and rename it over ``path``, else delete it.

    The file gets the mode a new file gets from the umask (libraries that write 0600 files are
    overruled), and both it and its folder are flushed, so the rename survives a power cut. The
    rename replaces a symbolic link at ``path`` itself: nothing is written where it points.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        create_exclusive(tmp)  # a link planted under the temporary name is removed, not written through
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
