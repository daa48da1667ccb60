"""Run folders: one writer at a time, one consistent set of files per epoch, verified reads, and
a boundary that a folder from someone else cannot cross.

A run folder holds ``config.json`` (the settings, written once before training), a *set* of files
that describe one epoch (``checkpoint.pt``, ``model.safetensors``, ``history.json``), and
``manifest.json``, which names that epoch and each file's SHA-256 and size. The manifest is the
commit point of a set:

1. every file of the new set is written under a staging name (``.checkpoint.pt.new``), created
   afresh (whatever stood under that name is removed, never written through) and flushed to disk;
2. the manifest is replaced atomically (written beside it, flushed, renamed): from this moment
   the new set is the run's state;
3. the staged files are renamed over the old ones.

A kill before step 2 leaves the old set and its manifest intact (the staged files are leftovers);
a kill during step 3 leaves some files of the new set under their staging names, which readers
accept when they match the manifest and the next writer renames into place. Readers verify every
byte against the manifest, so a torn or corrupt file is reported, never used. A reader beside a
writer reads the staged file before the final one and checks the manifest again after a
mismatch, so a commit in progress makes it read again, never report damage (see
[`read_member`][genvae.runfolder.read_member]).

One process writes to a run folder at a time: [`lock`][genvae.runfolder.lock] takes an OS lock
on ``.lock`` in the folder, which the kernel releases when the holder dies, so a killed run never
blocks its own resume.

A run folder may come from someone else, so nothing in it is trusted: a manifest may name only
the declared members ([`MEMBERS`][genvae.runfolder.MEMBERS], extended by
[`declare_member`][genvae.runfolder.declare_member]), plain file names that cannot leave the
folder; members, staged files, records and the lock are opened without following symbolic
links; and a folder whose manifest names anything else is refused before anything in it is read
or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._checks import error_line
from ._files import atomic_path, create_exclusive, fsync_dir, fsync_file, open_regular, read_regular

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

__all__ = [
    "MANIFEST",
    "MEMBERS",
    "RunFolderChanging",
    "RunFolderLocked",
    "RunFolderWriteError",
    "commit",
    "complete_epoch",
    "declare_member",
    "holds_lock",
    "lock",
    "read_file",
    "read_member",
    "read_set",
    "recover",
    "verify",
]

MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
FORMAT = "genvae.run"
VERSION = 1
_LEFTOVER = re.compile(r"^\..+\.(new|\d+\.tmp)$")  # staged files and atomic_path's temporaries
#: A plain file name: it cannot name a folder above (``..``), an absolute path or a subfolder.
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MEMBERS: set[str] = {"checkpoint.pt", "model.safetensors", "history.json"}
"""The files a manifest may name. Work that adds a member to the committed set declares it with
[`declare_member`][genvae.runfolder.declare_member]; a manifest naming anything else is refused."""
#: Largest manifest read: one names a handful of files in a few hundred bytes.
MAX_MANIFEST_BYTES = 2**20
#: Largest file outside the committed set read by [`read_file`][genvae.runfolder.read_file]: the
#: JSON records (``config.json``, ``fit.json``, ``metrics.json``, ``eval.json``) take a few KiB.
MAX_RECORD_BYTES = 16 * 2**20
#: Largest member read from a folder without a manifest (a model file of any size a machine holds).
_MAX_PLAIN_MEMBER_BYTES = 2**40
#: Reads of a set that a writer's commits may restart before a reader gives up (about a second).
_READ_ATTEMPTS = 40
_READ_PAUSE_S = 0.025
_HELD: dict[Path, list[int]] = {}  # resolved folder -> [descriptor, depth] of the locks this process holds


class RunFolderLocked(RuntimeError):
    """Another process holds the run folder's lock (it is training in it)."""


class RunFolderChanging(RuntimeError):
    """A writer kept committing new sets while this process read one (nothing was found damaged)."""


class RunFolderWriteError(OSError):
    """A set could not be written (a full disk, a file-size limit); the last committed set is intact."""


def declare_member(name: str) -> None:
    """Allow file ``name`` in the committed set of run folders (in manifests, commits and reads).

    Raises:
        ValueError: ``name`` is not a plain file name (letters, digits, ``_``, ``.``, ``-``, not
            starting with a dot) or is the manifest's or the lock's.
    """
    if name == MANIFEST:
        raise ValueError(f"expected a member's name other than {MANIFEST!r}, got {name!r}")
    MEMBERS.add(_plain(name, "a member's name"))


def _plain(name: object, what: str) -> str:
    """``name`` if it is a plain file name (letters, digits, ``_``, ``.``, ``-``, not starting with
    a dot), which cannot leave a folder; else a ValueError naming ``what``."""
    if not (isinstance(name, str) and _FILE_NAME.match(name)):
        raise ValueError(
            f"expected {what} to be a plain file name (letters, digits, '_', '.', '-', not starting with a dot), "
            f"got {name!r}"
        )
    return name


def _member(run: Path, name: str) -> Path:
    """``run / name`` for a declared member (a plain name, checked when it was declared)."""
    if name not in MEMBERS:
        raise ValueError(f"expected a member of a run folder's set ({sorted(MEMBERS)}), got {name!r}")
    return run / name


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
        ValueError: ``.lock`` is a symbolic link, a folder or another non-regular file.
    """
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    key = run.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
    else:
        try:  # never through a link: the pid written below would land wherever it points
            fd = open_regular(run / LOCK_FILE, os.O_RDWR | os.O_CREAT)
        except ValueError as err:
            raise ValueError(f"{err}; it is the run folder's lock file: remove it, or choose another folder") from None
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


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _valid_entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) is not None
        and _is_count(entry.get("bytes"))
    )


def _read_manifest(run: Path) -> dict[str, Any] | None:
    """The manifest of ``run``, or None when it has none.

    Raises:
        ValueError: it is not a manifest (not a regular file, not UTF-8 JSON, malformed), or it
            names a file that is not a declared member; nothing in the folder has been touched.
    """
    path = run / MANIFEST
    edited = "the run folder has been edited or damaged; nothing in it was read or changed"
    try:
        raw = read_regular(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise ValueError(f"{err}; {edited}") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"expected {str(path)!r} to be UTF-8 JSON, got a byte {err.object[err.start]:#04x} at offset "
                         f"{err.start} that is not UTF-8; {edited}") from None  # fmt: skip
    except (ValueError, RecursionError) as err:
        raise ValueError(f"expected {str(path)!r} to be JSON, could not read it: {err}; {edited}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not (
        isinstance(manifest, dict)
        and manifest.get("format") == FORMAT
        and _is_count(manifest.get("epoch"))
        and isinstance(files, dict)
        and all(_valid_entry(v) for v in files.values())
    ):
        raise ValueError(
            f"expected {str(path)!r} to be a genvae run manifest (format {FORMAT!r}, an epoch and a sha256 and size "
            f"per file), got something else; {edited}"
        )
    for name in files:
        if name not in MEMBERS:
            raise ValueError(
                f"expected {str(path)!r} to name only members of a run folder ({', '.join(sorted(MEMBERS))}), got "
                f"{name!r}; {edited}"
            )
    return manifest


def complete_epoch(run: str | os.PathLike[str]) -> int | None:
    """The epoch of ``run``'s committed set of files, or None when it has none yet."""
    manifest = _read_manifest(Path(run))
    return None if manifest is None else int(manifest["epoch"])


def commit(run: str | os.PathLike[str], epoch: int, writers: Mapping[str, Callable[[Path], object]]) -> None:
    """Make ``writers`` (``{member name: write(path)}``) the run's set of files for ``epoch``, atomically.

    The caller must hold [`lock`][genvae.runfolder.lock]. Readers see the old set or the new one,
    whenever this process is killed. Each ``write`` gets a freshly created regular file to write.

    Raises:
        RunFolderWriteError: a file of the set or the manifest could not be written (a full disk);
            the staged files are removed and the last committed set is intact.
        ValueError: a name that is not a declared member, or a folder under a staging name.
    """
    run = Path(run)
    if not holds_lock(run):
        raise RuntimeError(f"commit to {str(run)!r} without holding its lock")
    for name in writers:
        _member(run, name)
    files: dict[str, dict[str, Any]] = {}
    name = MANIFEST
    try:
        for name, write in writers.items():
            staged = _staged(run, name)
            create_exclusive(staged)  # whatever stood there (a planted link) is removed, not written through
            write(staged)
            _crash_point(f"writing:{name}", epoch, half_written=staged)
            fsync_file(staged)
            data = read_regular(staged, os.lstat(staged).st_size)
            files[name] = {"sha256": _sha256(data), "bytes": len(data)}
            _crash_point(f"staged:{name}", epoch)
        name = MANIFEST
        manifest = {"format": FORMAT, "version": VERSION, "epoch": epoch, "files": files}
        with atomic_path(run / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    except (OSError, RuntimeError) as err:
        for staged_name in writers:
            _remove_entry(_staged(run, staged_name))
        last = complete_epoch(run)
        intact = "no epoch was committed before" if last is None else f"the last committed epoch {last} is intact"
        raise RunFolderWriteError(
            f"could not write {name!r} in {str(run)!r} (disk full?): {error_line(err)}; {intact}"
        ) from err
    _crash_point("manifest", epoch)
    for name in writers:
        os.replace(_staged(run, name), run / name)  # replaces a link at the final name, never follows it
        _crash_point(f"renamed:{name}", epoch)
    fsync_dir(run)


def _remove_entry(path: Path) -> bool:
    """Remove ``path`` if it is a file, a symbolic link (not what it points to), a FIFO or a socket."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def recover(run: str | os.PathLike[str]) -> list[str]:
    """Finish a commit a killed writer left half done, and delete its leftovers.

    The caller must hold [`lock`][genvae.runfolder.lock]. Only regular files under the staging
    names of the manifest's members are renamed into place; leftovers that are links are removed
    as links. Returns the names of the entries deleted.

    Raises:
        ValueError: the manifest is malformed or names a file that is not a member; nothing in
            the folder has been changed.
    """
    run = Path(run)
    if not holds_lock(run):
        raise RuntimeError(f"recover {str(run)!r} without holding its lock")
    manifest = _read_manifest(run)
    for name, entry in (manifest["files"] if manifest else {}).items():
        staged = _staged(run, name)  # a member's name: _read_manifest refuses any other
        data = _read_if_regular(staged, entry["bytes"])
        if data is not None and _sha256(data) == entry["sha256"]:
            os.replace(staged, run / name)
    removed = [path.name for path in sorted(run.iterdir()) if _LEFTOVER.match(path.name) and _remove_entry(path)]
    fsync_dir(run)
    return removed


def verify(run: str | os.PathLike[str]) -> int | None:
    """Check every file of ``run``'s committed set against the manifest; returns its epoch (None: no set).

    Raises:
        FileNotFoundError, ValueError: as [`read_member`][genvae.runfolder.read_member].
    """
    manifest = _read_manifest(Path(run))
    if manifest is None:
        return None
    epoch, _ = read_set(run, sorted(manifest["files"]))
    return epoch


def _read_if_regular(path: Path, size: int) -> bytes | None:
    """The bytes of ``path`` when it is a regular file of ``size`` bytes, else None (missing, a
    link, another size)."""
    try:
        data = read_regular(path, size)
    except (FileNotFoundError, ValueError):
        return None
    return data if len(data) == size else None


def read_set(run: str | os.PathLike[str], names: list[str] | tuple[str, ...]) -> tuple[int | None, dict[str, bytes]]:
    """The bytes of files ``names`` of ``run``'s committed set, all of one epoch, each verified.

    A reader beside a writer reads each file under its staging name first, then under its final
    name: the writer stages every file before it replaces the manifest and renames them only
    after, so for the manifest read first one of the two holds the committed bytes unless the
    manifest has changed since. The manifest is read again after a mismatch; when it has changed,
    the whole set is read again (up to about a second of commits). Damage is reported only when
    the bytes still disagree with a manifest that did not change while they were read, twice.

    A folder without a manifest (one written by [`genvae.save`][genvae.io.save]) gives the plain
    files, with epoch None.

    Raises:
        FileNotFoundError: the folder has no such file.
        ValueError: a file does not match the manifest (it is corrupt or from another set), a
            member is a link or not a regular file, or the manifest is not one.
        RunFolderChanging: a writer kept committing new sets for the whole time.
    """
    run = Path(run)
    paths = {name: _member(run, name) for name in names}
    mismatches = 0
    for _ in range(_READ_ATTEMPTS):
        manifest = _read_manifest(run)
        if manifest is None:
            return None, {name: _plain_member(path) for name, path in paths.items()}
        missing = [name for name in names if name not in manifest["files"]]
        if missing:
            raise FileNotFoundError(
                f"expected {missing[0]!r} in the set of files of {str(run)!r}, but its manifest names only "
                f"{sorted(manifest['files'])}"
            )
        found, bad = {}, None
        for name, path in paths.items():
            entry = manifest["files"][name]
            for candidate in (_staged(run, name), path):  # staged first: see above
                data = _read_if_regular(candidate, entry["bytes"])
                if data is not None and _sha256(data) == entry["sha256"]:
                    found[name] = data
                    break
            else:
                bad = name
                break
        if bad is None:
            return int(manifest["epoch"]), found
        if _read_manifest(run) == manifest:  # not a commit racing with this read
            mismatches += 1
            if mismatches == 2:
                _raise_damaged(run, bad, manifest)
        time.sleep(_READ_PAUSE_S)
    raise RunFolderChanging(
        f"{str(run)!r} committed new sets of files for as long as they were read ({_READ_ATTEMPTS} tries); its "
        "files are not damaged: read it again"
    )


def _plain_member(path: Path) -> bytes:
    """A member of a folder without a manifest (one [`genvae.save`][genvae.io.save] wrote)."""
    try:
        return read_regular(path, _MAX_PLAIN_MEMBER_BYTES)
    except FileNotFoundError:
        raise FileNotFoundError(f"expected {str(path)!r} in the run folder, found no such file") from None


def _raise_damaged(run: Path, name: str, manifest: dict[str, Any]) -> None:
    """Raise the error that says why member ``name`` does not match ``manifest``."""
    entry, path = manifest["files"][name], run / name
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        got = "the file is missing"
    else:
        if not stat.S_ISREG(found.st_mode):  # a link or a folder: never followed
            read_regular(path, entry["bytes"])  # raises the ValueError that names what stands there
        data = _read_if_regular(path, entry["bytes"])
        sizes = f"got {found.st_size} bytes, not {entry['bytes']}"
        got = sizes if data is None else f"got sha256 {_sha256(data)[:12]}…"
    raise ValueError(
        f"{str(path)!r} does not match the run's manifest (epoch {manifest['epoch']}: expected sha256 "
        f"{entry['sha256'][:12]}…, {got}); the file is damaged and no older complete set is kept, so train "
        "the run again (its config.json holds the settings)"
    )


def read_member(run: str | os.PathLike[str], name: str) -> bytes:
    """The bytes of file ``name`` of run folder ``run``, verified against its manifest.

    A folder without a manifest (one written by [`genvae.save`][genvae.io.save]) gives the plain
    file. A commit by another process while reading is read again, never reported as damage (see
    [`read_set`][genvae.runfolder.read_set]).

    Raises:
        FileNotFoundError: the folder has no such file.
        ValueError: the file does not match the manifest (it is corrupt or from another set), or
            it is a symbolic link or not a regular file.
        RunFolderChanging: a writer kept committing new sets for the whole time.
    """
    return read_set(run, [name])[1][name]


def read_file(run: str | os.PathLike[str], name: str, *, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
    """The bytes of file ``name`` of ``run`` outside the committed set (``config.json``, ``fit.json``…).

    ``name`` is a plain file name, so the path never leaves the folder; the file is read only if
    it is a regular file (never through a symbolic link) of at most ``max_bytes`` bytes.

    Raises:
        FileNotFoundError: the folder has no such file.
        ValueError: ``name`` is not a plain file name, or the file is a link, not a regular file
            or too large.
    """
    return read_regular(Path(run) / _plain(name, "a file of a run folder"), max_bytes)
