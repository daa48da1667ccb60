"""Run folders: one writer at a time, one consistent set of files per epoch, verified reads.

A run folder holds ``config.json`` (the settings, written once before training), a *set* of files
that describe one epoch (``checkpoint.pt``, ``model.safetensors``, ``history.json``), and
``manifest.json``, which names that epoch and each file's SHA-256 and size. The manifest is the
commit point of a set:

1. every file of the new set is written under a staging name (``.checkpoint.pt.new``) and
   flushed to disk;
2. the manifest is replaced atomically (written beside it, flushed, renamed): from this moment
   the new set is the run's state;
3. the staged files are renamed over the old ones.

A kill before step 2 leaves the old set and its manifest intact (the staged files are leftovers);
a kill during step 3 leaves some files of the new set under their staging names, which readers
accept when they match the manifest and the next writer renames into place. Readers verify every
byte against the manifest, so a torn or corrupt file is reported, never used.

One process writes to a run folder at a time: [`lock`][genvae.runfolder.lock] takes an OS lock
on ``.lock`` in the folder, which the kernel releases when the holder dies, so a killed run never
blocks its own resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._files import atomic_path, fsync_dir, fsync_file

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

__all__ = [
    "MANIFEST",
    "RunFolderLocked",
    "commit",
    "complete_epoch",
    "holds_lock",
    "lock",
    "read_member",
    "recover",
    "verify",
]

MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
FORMAT = "genvae.run"
VERSION = 1
_LEFTOVER = re.compile(r"^\..+\.(new|\d+\.tmp)$")  # staged files and atomic_path's temporaries
_HELD: dict[Path, list[int]] = {}  # resolved folder -> [descriptor, depth] of the locks this process holds


class RunFolderLocked(RuntimeError):
    """Another process holds the run folder's lock (it is training in it)."""


def _staged(run: Path, name: str) -> Path:
    return run / f".{name}.new"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _crash_point(point: str, epoch: int, *, half_written: Path | None = None) -> None:
    """Kill this process with SIGKILL at ``point`` when ``$GENVAE_CRASH_AT`` is ``point@epoch``.

    Used by the tests to stop a writer at each step of a commit, for real; ``half_written`` is cut
    to half its length first, as a kill in the middle of writing it would leave it.
    """
    if os.environ.get("GENVAE_CRASH_AT") == f"{point}@{epoch}":
        if half_written is not None:
            os.truncate(half_written, half_written.stat().st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- lock


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


@contextmanager
def lock(run: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the exclusive lock of run folder ``run`` (created if missing) for the ``with`` block.

    Re-entrant within a process, so ``genvae train`` and the ``fit`` it calls share one lock.
    The lock is released when the block ends or the process dies (the kernel drops it).

    Raises:
        RunFolderLocked: another process holds it; nothing has been written to the folder.
    """
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    key = run.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
    else:
        fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderLocked(
                f"run folder {str(run)!r} is in use by another process (pid {holder}); wait for it to finish "
                "or choose another folder"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[key] = [fd, 1]
    try:
        yield run
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            os.close(_HELD.pop(key)[0])  # closing the descriptor releases the lock


def holds_lock(run: str | os.PathLike[str]) -> bool:
    """Whether this process holds ``run``'s lock."""
    return Path(run).resolve() in _HELD


# --------------------------------------------------------------------------- manifest


def _read_manifest(run: Path) -> dict[str, Any] | None:
    """The manifest of ``run``, or None when it has none; a malformed one is a ValueError."""
    path = run / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
        ok = (
            manifest.get("format") == FORMAT
            and isinstance(manifest.get("epoch"), int)
            and isinstance(manifest.get("files"), dict)
            and all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in manifest["files"].values())
        )
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(
            f"expected {str(path)!r} to be a genvae run manifest (format {FORMAT!r}, an epoch and a sha256 per "
            "file), could not read it; the run folder has been edited or damaged"
        )
    return manifest


def complete_epoch(run: str | os.PathLike[str]) -> int | None:
    """The epoch of ``run``'s committed set of files, or None when it has none yet."""
    manifest = _read_manifest(Path(run))
    return None if manifest is None else int(manifest["epoch"])


def commit(run: str | os.PathLike[str], epoch: int, writers: Mapping[str, Callable[[Path], object]]) -> None:
    """Make ``writers`` (``{file name: write(path)}``) the run's set of files for ``epoch``, atomically.

    The caller must hold [`lock`][genvae.runfolder.lock]. Readers see the old set or the new one,
    whenever this process is killed.
    """
    run = Path(run)
    if not holds_lock(run):
        raise RuntimeError(f"commit to {str(run)!r} without holding its lock")
    files = {}
    for name, write in writers.items():
        staged = _staged(run, name)
        write(staged)
        _crash_point(f"writing:{name}", epoch, half_written=staged)
        fsync_file(staged)
        data = staged.read_bytes()
        files[name] = {"sha256": _sha256(data), "bytes": len(data)}
        _crash_point(f"staged:{name}", epoch)
    manifest = {"format": FORMAT, "version": VERSION, "epoch": epoch, "files": files}
    with atomic_path(run / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    _crash_point("manifest", epoch)
    for name in writers:
        os.replace(_staged(run, name), run / name)
        _crash_point(f"renamed:{name}", epoch)
    fsync_dir(run)


def recover(run: str | os.PathLike[str]) -> list[str]:
    """Finish a commit a killed writer left half done, and delete its leftovers.

    The caller must hold [`lock`][genvae.runfolder.lock]. Returns the names of the files deleted.
    """
    run = Path(run)
    if not holds_lock(run):
        raise RuntimeError(f"recover {str(run)!r} without holding its lock")
    manifest = _read_manifest(run)
    for name, entry in (manifest["files"] if manifest else {}).items():
        staged = _staged(run, name)
        if staged.is_file() and _sha256(staged.read_bytes()) == entry["sha256"]:
            os.replace(staged, run / name)
    removed = []
    for path in run.iterdir():
        if _LEFTOVER.match(path.name) and path.is_file():
            path.unlink()
            removed.append(path.name)
    fsync_dir(run)
    return sorted(removed)


def verify(run: str | os.PathLike[str]) -> int | None:
    """Check every file of ``run``'s committed set against the manifest; returns its epoch (None: no set).

    Raises:
        FileNotFoundError, ValueError: as [`read_member`][genvae.runfolder.read_member].
    """
    manifest = _read_manifest(Path(run))
    for name in manifest["files"] if manifest else ():
        read_member(run, name)
    return None if manifest is None else int(manifest["epoch"])


def read_member(run: str | os.PathLike[str], name: str) -> bytes:
    """The bytes of file ``name`` of run folder ``run``, verified against its manifest.

    A folder without a manifest (one written by [`genvae.save`][genvae.io.save]) gives the plain
    file. A commit by another process while reading is retried.

    Raises:
        FileNotFoundError: the folder has no such file.
        ValueError: the file does not match the manifest (it is corrupt or from another set).
    """
    run = Path(run)
    for _ in range(3):
        manifest = _read_manifest(run)
        if manifest is None:
            path = run / name
            if not path.is_file():
                raise FileNotFoundError(f"expected {str(path)!r} in the run folder, found no such file")
            return path.read_bytes()
        entry = manifest["files"].get(name)
        if entry is None:
            raise FileNotFoundError(
                f"expected {name!r} in the set of files of {str(run)!r}, but its manifest names only "
                f"{sorted(manifest['files'])}"
            )
        found = []
        for path in (run / name, _staged(run, name)):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            digest = _sha256(data)
            if digest == entry["sha256"]:
                return data
            found.append(digest)
        if _read_manifest(run) == manifest:  # not a commit racing with this read
            break
    got = f"got sha256 {found[0][:12]}…" if found else "the file is missing"
    raise ValueError(
        f"{str(run / name)!r} does not match the run's manifest (epoch {manifest['epoch']}: expected sha256 "
        f"{entry['sha256'][:12]}…, {got}); the file is damaged and no older complete set is kept, so train "
        "the run again (its config.json holds the settings)"
    )
