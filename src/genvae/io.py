"""Save and load models without pickle: weights in safetensors, the parts described in JSON.

A model is described by walking its constructor arguments: a genvae part (or any module whose
constructor arguments are readable as attributes of the same name) becomes
``{"class": "genvae.nets.MLPEncoder", "args": {...}}``; an ``nn.Module`` class argument (an
activation) becomes ``{"type": "torch.nn.modules.activation.ReLU"}``; a module seen twice (the
encoder shared by a VampPrior) becomes ``{"ref": "model.encoder"}``. The description is stored in
the safetensors header, so one file holds everything. Loading imports classes only from ``genvae``
and ``torch.nn`` unless more module prefixes are trusted explicitly.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from ._files import atomic_path

__all__ = ["describe", "load", "save"]

FORMAT = "genvae.model"
VERSION = 1
MODEL_FILE = "model.safetensors"
_DEFAULT_TRUSTED = ("genvae.", "torch.nn.")


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _describe(obj: Any, path: str, seen: dict[int, str]) -> Any:
    if isinstance(obj, nn.Module):
        if id(obj) in seen:
            return {"ref": seen[id(obj)]}
        seen[id(obj)] = path
        cls = type(obj)
        args = {}
        for name, param in list(inspect.signature(cls.__init__).parameters.items())[1:]:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or not hasattr(obj, name):
                raise TypeError(
                    f"cannot describe {_qualname(cls)} at {path}: expected constructor argument "
                    f"{name!r} to be readable as an attribute of the same name"
                )
            args[name] = _describe(getattr(obj, name), f"{path}.{name}", seen)
        return {"class": _qualname(cls), "args": args}
    if isinstance(obj, type):
        return {"type": _qualname(obj)}
    if isinstance(obj, (tuple, list)):
        return [_describe(v, f"{path}[{i}]", seen) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"cannot describe {path}: expected a module, class, number, string or tuple, got {type(obj).__name__}"
    )


def describe(model: nn.Module) -> dict[str, Any]:
    """The JSON-ready description from which :func:`load` rebuilds ``model``."""
    return {"format": FORMAT, "version": VERSION, "model": _describe(model, "model", {})}


def _import(name: str, trusted: tuple[str, ...], *, module_class: bool) -> type:
    """Import the class ``name`` ("pkg.mod.Class"), refusing anything outside ``trusted``.

    The class itself (not only the string) must live in a trusted module, must be reached without
    walking through another module's attributes, and must be an ``nn.Module`` subclass where
    ``module_class`` is set: a crafted file cannot name ``genvae.io.os.system``.
    """
    refuse = ValueError(
        f"refusing to import {name!r}: expected a class defined under one of {list(trusted)}; "
        "pass trusted=('yourpackage.',) to load(...) to allow your own parts"
    )
    if not name.startswith(trusted):
        raise refuse
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None or isinstance(obj, ModuleType):
                raise refuse
        break
    else:
        raise refuse
    if not isinstance(obj, type) or not f"{obj.__module__}.".startswith(trusted) or _qualname(obj) != name:
        raise refuse
    if module_class and not issubclass(obj, nn.Module):
        raise refuse
    return obj


def _build(spec: Any, path: str, built: dict[str, Any], trusted: tuple[str, ...]) -> Any:
    if isinstance(spec, list):
        return tuple(_build(v, f"{path}[{i}]", built, trusted) for i, v in enumerate(spec))
    if not isinstance(spec, dict):
        return spec
    if "ref" in spec:
        return built[spec["ref"]]
    if "type" in spec:
        return _import(spec["type"], trusted, module_class=False)
    cls = _import(spec["class"], trusted, module_class=True)
    args = {name: _build(v, f"{path}.{name}", built, trusted) for name, v in spec["args"].items()}
    built[path] = obj = cls(**args)
    return obj


def save(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path`` (a ``.safetensors`` file, or a folder that gets ``model.safetensors``).

    The file is written under a temporary name and renamed, so a crash never leaves half a file.
    Shared tensors (a VampPrior's encoder) are stored once.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    header = json.dumps(describe(model))
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={FORMAT: header})
    return path


def load(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    trusted: Iterable[str] = (),
) -> nn.Module:
    """Rebuild a model saved by :func:`save` (or a run folder holding ``model.safetensors``).

    Args:
        path: the file or run folder.
        map_location: device for the weights.
        trusted: extra module prefixes whose classes may be imported, e.g. ``("myproject.",)``.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: no such file or run folder.
        ValueError: not a genvae file, or weights that do not match the description.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"expected a genvae model file or run folder, got {str(path)!r}, which does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(FORMAT)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"expected a safetensors file at {str(path)!r}, could not read it: {err}") from None
    if header is None:
        raise ValueError(f"expected a genvae description in the header of {str(path)!r}, found none")
    spec = json.loads(header)
    if spec.get("format") != FORMAT or spec.get("version") != VERSION:
        raise ValueError(
            f"expected format {FORMAT!r} version {VERSION} in {str(path)!r}, "
            f"got {spec.get('format')!r} version {spec.get('version')!r}"
        )
    model = _build(spec["model"], "model", {}, _DEFAULT_TRUSTED + tuple(trusted))
    try:
        load_model(model, str(path), strict=True, device=str(map_location))
    except (RuntimeError, SafetensorError) as err:
        raise ValueError(f"the weights in {str(path)!r} do not match their description: {err}") from None
    return model.to(map_location).eval()
