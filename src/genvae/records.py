"""The JSON records of a run folder, read back and checked against what genvae writes.

A run folder may have been edited (or come from someone else), so a record is read without
following a link ([`runfolder.read_file`][genvae.runfolder.read_file] and
[`read_member`][genvae.runfolder.read_member]) and each field is checked for its type before a
command uses it: an edited ``history.json`` or ``fit.json`` is a ``ValueError`` that names the
file, the field, what was expected and what came, never a ``KeyError`` deep in a command.
"""

from __future__ import annotations

import json
import os
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import runfolder
from .train import FIT_FILE, HISTORY_FILE, EpochStats

__all__ = ["read_fit_record", "read_history", "read_json"]

_show = reprlib.Repr()
_show.maxstring = _show.maxother = 60


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or check(v)


def _string(v: object) -> bool:
    return isinstance(v, str)


def _metrics(v: object) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items())


def _ints(v: object) -> bool:
    return isinstance(v, list) and all(_count(x) for x in v)


#: Each field of a ``history.json`` record, with its check and what it should be.
_EPOCH_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "epoch": (lambda v: _count(v) and v >= 1, "an int >= 1"),  # type: ignore[operator]
    "train_loss": (_number, "a number"),
    "test_loss": (_optional(_number), "a number or null"),
    "test_kl": (_optional(_number), "a number or null"),
    "test_log_likelihood": (_optional(_number), "a number or null"),
    "seconds": (_number, "a number"),
    "images_per_second": (_number, "a number"),
    "metrics": (_metrics, "an object of numbers"),
}
#: The fields of ``fit.json`` that commands read, and of its ``train`` and ``test`` objects.
_FIT_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "train": (_optional(lambda v: isinstance(v, dict)), "an object or null"),
    "test": (_optional(lambda v: isinstance(v, dict)), "an object or null"),
    "objective": (_string, "a string"),
    "epochs": (_count, "an int >= 0"),
    "batch_size": (_count, "an int >= 0"),
    "lr": (_number, "a number"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
    "engine": (_optional(lambda v: isinstance(v, dict)), "an object or null"),
}
_DATA_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "source": (_optional(_string), "a string or null"),
    "binarize": (_string, "a string"),
    "size": (_count, "an int >= 0"),
    "data_shape": (_ints, "a list of sizes"),
    "type": (_string, "a string"),
}
_ENGINE_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "name": (_string, "a string"),
    "reason": (_string, "a string"),
}


def _check(
    record: dict[str, Any], fields: dict[str, tuple[Callable[[object], bool], str]], where: str, file: str
) -> None:
    for name, (ok, expected) in fields.items():
        if name in record and not ok(record[name]):
            raise ValueError(
                f"expected {where}.{name} in {file!r} to be {expected}, got {_show.repr(record[name])}; the file has "
                "been edited"
            )


def _parse(data: bytes, file: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"expected {file!r} to be UTF-8 JSON, got bytes that are not UTF-8") from None
    except (ValueError, RecursionError) as err:
        raise ValueError(f"expected {file!r} to be JSON, could not read it: {err}") from None


def read_json(run: str | os.PathLike[str], name: str) -> Any:
    """The JSON value of file ``name`` of run folder ``run`` (outside the committed set).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not UTF-8 JSON, or a link or not a regular file.
    """
    return _parse(runfolder.read_file(run, name), str(Path(run) / name))


def read_history(run: str | os.PathLike[str]) -> list[EpochStats]:
    """The per-epoch records of ``run`` (its verified ``history.json``), each field checked.

    Raises:
        FileNotFoundError: the folder has no history yet.
        ValueError: the file does not match the manifest, is not JSON, or a record is not what
            [`fit`][genvae.train.fit] writes.
    """
    file = str(Path(run) / HISTORY_FILE)
    records = _parse(runfolder.read_member(run, HISTORY_FILE), file)
    if not isinstance(records, list):
        raise ValueError(f"expected {file!r} to be a list of epoch records, got {_show.repr(records)}")
    history = []
    for i, record in enumerate(records):
        missing = [f for f in _EPOCH_FIELDS if f != "metrics" and not (isinstance(record, dict) and f in record)]
        if not isinstance(record, dict) or missing or set(record) - set(_EPOCH_FIELDS):
            raise ValueError(
                f"expected record [{i}] of {file!r} to be an object with the fields {list(_EPOCH_FIELDS)}, got "
                f"{_show.repr(record)}; the file has been edited"
            )
        _check(record, _EPOCH_FIELDS, f"[{i}]", file)
        history.append(EpochStats(**record))
    return history


def read_fit_record(run: str | os.PathLike[str]) -> dict[str, Any]:
    """``fit.json`` of ``run`` (the data and the training call), each field checked; {} without one.

    Raises:
        ValueError: the file is not JSON, or a field is not what [`fit`][genvae.train.fit] writes.
    """
    file = str(Path(run) / FIT_FILE)
    try:
        record = read_json(run, FIT_FILE)
    except FileNotFoundError:
        return {}
    if not isinstance(record, dict):
        raise ValueError(f"expected {file!r} to be a JSON object, got {_show.repr(record)}; the file has been edited")
    _check(record, _FIT_FIELDS, "fit", file)
    for part in ("train", "test"):
        if isinstance(record.get(part), dict):
            _check(record[part], _DATA_FIELDS, part, file)
    if isinstance(record.get("engine"), dict):
        _check(record["engine"], _ENGINE_FIELDS, "engine", file)
    return record
