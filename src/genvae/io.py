"""Save and load models without pickle: weights in safetensors, the parts described in JSON.

A model is described by walking its constructor arguments: each part becomes its constructor's
arguments, read back from its attributes of the same names, under the name that says what to build.
The description (format ``genvae.model``, version 2) is stored in the safetensors header, so one
file holds everything:

- a registered part (``@register("prior", "vamp")``, see [`genvae.registry`][genvae.registry]) is
  named by its kind and registry name: ``{"part": "prior/vamp", "args": {...}}``; ``args`` are the
  arguments of the class's constructor (not the options of the entry's builder);
- a part that no entry names (a torch layer, your own class) is named by its module path:
  ``{"class": "torch.nn.modules.linear.Linear", "args": {...}}``;
- a class argument (an activation) is named by its module path:
  ``{"type": "torch.nn.modules.activation.ReLU"}``;
- a module seen twice (the encoder shared by a VampPrior) is a reference to where it was first
  described: ``{"ref": "model.encoder"}``.

A model file may come from anyone, so loading trusts nothing in it:

1. nothing is imported because a file names it. A registered part is looked up among the parts
   registered so far: genvae's own, and those of the plugin modules the caller imported
   (``--plugin MODULE`` on the command line, ``import`` in Python). A module path is allowed only
   under torch's layer modules (``torch.nn.modules.``), under a prefix the caller trusts
   (``trusted=``), or, for genvae's own classes that no entry names yet, in genvae's part modules
   (``PART_MODULES``), which are imported whatever the file says and searched, not imported from;
   the module is read from the name before anything is imported;
2. the header and the description are parsed only if they hold at most ``_MAX_JSON_VALUES``
   values, counted from their commas, colons and brackets (a value takes up to about 64 bytes
   once parsed), and the description is read at most ``_MAX_DEPTH`` deep;
3. the model is built on a budget taken from the file, whose header is read here, and what its
   parts create is counted before it is created: the tensors they make by size (``torch.empty``,
   ``torch.zeros``...), from data (``torch.tensor``) or by copying, repeating or joining tensors
   (``clone``, ``zeros_like``, ``repeat``, ``torch.cat``...) may take at most twice the bytes of
   the file's tensors plus a fixed allowance; the modules, parameters and buffers that are built
   from the description, registered or deep-copied (``TransformerEncoder`` copies its layer
   ``num_layers`` times) are counted too, each also as ``_OBJECT_BYTES`` bytes, so that a
   description of a million layers, or of a million copies of one, stops early;
4. each tensor of the model is compared with the file's (name, shape, dtype), and only then are
   the weights read into it.

Every flaw in a file is a ``ValueError`` of one line that names the file and, for the description,
the JSON path of the flaw (``model.args.encoder.args.hidden[1]``), with what was expected and what
came.

Version 1 (genvae 0.2) named every part by module path, ``{"class": "genvae.priors.VampPrior",
...}``; such files still load, through the same checks. A genvae name ``M.X`` (``M`` one of
``PART_MODULES``) is the class of qualified name ``X`` defined in ``M`` or in a module under it
(``genvae.hierarchy.GaussianHead`` is found in ``genvae.hierarchy`` or ``genvae.hierarchy.<sub>``),
found among the modules imported already (those of ``PART_MODULES`` in ``M``'s package are imported
first, whatever the file names). A version-1 ``HierarchicalVAE`` as the file's model, whose
arguments were ``encoder``, ``down``, ``priors``, ``decoder``, ``likelihood`` and ``prior``, is
built as those parts, its weights are read into them under their version-1 names
(``down_blocks.0...``, ``prior_blocks.0...``), and the model is then made of them by
``genvae.hierarchy.from_ladder``, which must keep the file's weights: a model with a tensor the
file does not hold is refused.
"""

from __future__ import annotations

import copy
import copyreg
import importlib
import inspect
import json
import math
import operator
import os
import reprlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MethodType
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_model
from torch import nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode

from . import registry
from ._files import atomic_path

__all__ = ["describe", "load", "save"]

FORMAT = "genvae.model"
VERSION = 2
#: The versions ``load`` reads: 1 named every part by module path; 2 names registered parts.
READABLE_VERSIONS = (1, 2)
MODEL_FILE = "model.safetensors"

#: The genvae modules whose classes a file may name by module path (version 1 named every part so;
#: version 2 names so only what no entry names yet), each searched with the modules under it; a class
#: elsewhere in genvae (``genvae.__main__`` runs the command line when imported) can never be named
#: by a file. A registered part needs no entry here.
PART_MODULES = (
    "genvae.models",
    "genvae.nets",
    "genvae.priors",
    "genvae.likelihoods",
    "genvae.hierarchy",
    "genvae.hierarchy.blocks",
    "genvae.hierarchy.cells",
    "genvae.hierarchy.legacy",
    "genvae.hierarchy.model",
    "genvae.flows",
)
#: torch's layers (activations, ``Linear``...) live in the modules under this prefix.
_TORCH_LAYERS = "torch.nn.modules."
#: How a version-2 file names a registered part: ``kind/name``.
_PART_SEPARATOR = "/"
#: A version-1 ``HierarchicalVAE``: its name, its arguments, and the attributes its weights are named
#: under (``down_blocks.0.net.0.0.weight``), argument by argument.
_LADDER_CLASS = "genvae.hierarchy.HierarchicalVAE"
_LADDER_ATTRIBUTES = {
    "encoder": "encoder",
    "down": "down_blocks",
    "priors": "prior_blocks",
    "decoder": "decoder",
    "likelihood": "likelihood",
    "prior": "prior",
}
#: What a plugin's part needs before a file can name it, said where a name is not registered.
_PLUGIN_HINT = (
    "a plugin's parts are registered once its module is imported (--plugin MODULE on the command line, "
    "import MODULE in Python)"
)

#: Largest safetensors header read: a description of thousands of parts takes a fraction of it.
_MAX_HEADER_BYTES = 16 * 2**20
#: Most values (numbers, strings, keys, lists, objects) a header or a description may hold, counted
#: before it is parsed: a description takes about 20 per part and a header about 10 per tensor,
#: and parsed, this many take at most about 8 MiB of Python objects besides the strings' text.
_MAX_JSON_VALUES = 2**17
#: Deepest nesting of objects and lists in a description, far deeper than any model's needs.
_MAX_DEPTH = 64
#: Modules, parameters and buffers a description may build, register or copy while it is built,
#: per tensor in the file, plus a constant: a layer registers itself and its weight and bias, and
#: parts without weights (activations, a fixed prior) need the constant.
_REGISTRATIONS_PER_TENSOR = 4
_REGISTRATIONS_BASE = 64
#: Bytes that the tensors created while a description is built may take, as a multiple of the
#: bytes of the file's tensors, plus a constant: each weight is created once, and buffers the file
#: does not hold (a fixed prior's mean, a fixed σ, sized by the description alone) and weights
#: stored in a narrower dtype than the model's take the rest.
_CREATED_PER_STORED_BYTE = 2
_CREATED_ALLOWANCE = 16 * 2**20
#: Bytes counted for each module, parameter or buffer besides its tensor's bytes: a module takes
#: about 2 KiB of Python objects even without weights (an activation, a copy of one).
_OBJECT_BYTES = 2048

#: safetensors dtype names read from a header.
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}

#: Tensor factories given a size; what each makes is measured by repeating the call on the meta
#: device, where nothing is allocated.
_SIZED_FACTORIES: frozenset[Callable[..., Any]] = frozenset(
    {
        torch.empty,
        torch.empty_strided,
        torch.empty_permuted,
        torch.zeros,
        torch.ones,
        torch.full,
        torch.rand,
        torch.randn,
        torch.randint,
        torch.randperm,
        torch.arange,
        torch.range,
        torch.linspace,
        torch.logspace,
        torch.eye,
        torch.bartlett_window,
        torch.blackman_window,
        torch.hamming_window,
        torch.hann_window,
        torch.kaiser_window,
        torch.Tensor.new_empty,
        torch.Tensor.new_empty_strided,
        torch.Tensor.new_zeros,
        torch.Tensor.new_ones,
        torch.Tensor.new_full,
    }
)
#: Arguments of a factory that do not change the size of what it makes, dropped when the call is
#: repeated on the meta device to learn that size.
_PLACEMENT_ARGS = ("device", "generator", "out", "pin_memory", "requires_grad")
#: Factories of a tensor shaped like another: as many elements as it, an expanded view's too.
_LIKE_FACTORIES: frozenset[Callable[..., Any]] = frozenset(
    {
        torch.empty_like,
        torch.zeros_like,
        torch.ones_like,
        torch.full_like,
        torch.rand_like,
        torch.randn_like,
        torch.randint_like,
    }
)
#: Tensors made from data: nested lists or tuples, a range, another tensor.
_FROM_DATA: frozenset[Callable[..., Any]] = frozenset(
    {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}
)
#: Tensors made by repeating one as a whole (``repeat(*sizes)``, ``tile(dims)``).
_REPEATS: frozenset[Callable[..., Any]] = frozenset({torch.Tensor.repeat, torch.Tensor.tile, torch.tile})
#: Tensors made by repeating each element of one.
_INTERLEAVES: frozenset[Callable[..., Any]] = frozenset({torch.Tensor.repeat_interleave, torch.repeat_interleave})
#: Tensors joined from a sequence of others.
_JOINS: frozenset[Callable[..., Any]] = frozenset(
    {
        torch.cat,
        torch.concat,
        torch.concatenate,
        torch.stack,
        torch.hstack,
        torch.vstack,
        torch.dstack,
        torch.column_stack,
        torch.row_stack,
    }
)

_show = reprlib.Repr()
_show.maxstring = _show.maxother = 80


def _one_line(text: str) -> str:
    """``text`` with its line breaks made spaces: a message that quotes an error of torch's stays one line."""
    return " ".join(text.splitlines())


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------- describe and save


def _describe_args(obj: nn.Module, path: str, seen: dict[int, str]) -> dict[str, Any]:
    """The constructor arguments of ``obj``, read back from its attributes of the same names."""
    cls = type(obj)
    args = {}
    for name, param in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"cannot describe {_qualname(cls)} at {path}: expected named constructor arguments, got "
                f"{'*' if param.kind == param.VAR_POSITIONAL else '**'}{name}; give the class named arguments "
                "kept as attributes of the same names"
            )
        if not hasattr(obj, name):
            raise TypeError(
                f"cannot describe {_qualname(cls)} at {path}: expected constructor argument {name!r} to be "
                f"readable as an attribute of the same name, got no attribute {name!r}; give the class "
                f"attributes named after its constructor arguments, e.g. self.{name} = {name}"
            )
        args[name] = _describe(getattr(obj, name), f"{path}.{name}", seen)
    return args


def _describe(obj: Any, path: str, seen: dict[int, str]) -> Any:
    if isinstance(obj, nn.Module):
        if id(obj) in seen:
            return {"ref": seen[id(obj)]}
        seen[id(obj)] = path
        entry = registry.entry_of(type(obj))
        name = {"part": f"{entry.kind}{_PART_SEPARATOR}{entry.name}"} if entry else {"class": _qualname(type(obj))}
        return {**name, "args": _describe_args(obj, path, seen)}
    if isinstance(obj, type):
        return {"type": _qualname(obj)}
    if isinstance(obj, (tuple, list)):
        return [_describe(v, f"{path}[{i}]", seen) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"cannot describe {path}: expected a module, class, number, string or tuple, got {type(obj).__name__}; "
        "keep constructor arguments to such values (pass a size, not a tensor)"
    )


def describe(model: nn.Module) -> dict[str, Any]:
    """The JSON-ready description from which [`load`][genvae.io.load] rebuilds ``model``: each
    registered part named ``{"part": "kind/name", "args": {...}}``, every other part by its module
    path (see the module docstring).

    Raises:
        TypeError: a part whose constructor arguments cannot be read back from its attributes.
    """
    return {"format": FORMAT, "version": VERSION, "model": _describe(model, "model", {})}


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


# --------------------------------------------------------------------------- reading a file


class _Stored(NamedTuple):
    """A tensor as the file's header declares it."""

    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _read(path: Path) -> tuple[bytes, str]:
    """The bytes of the model file at ``path`` (a file or a run folder), and its name for messages."""
    if path.is_dir():
        from .runfolder import read_member

        return read_member(path, MODEL_FILE), str(path / MODEL_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"expected a genvae model file or run folder, got {str(path)!r}, which does not exist")
    return path.read_bytes(), str(path)


def _check_json_values(text: str | bytes, what: str) -> None:
    """Refuse JSON ``text`` (``what`` names it) of more than ``_MAX_JSON_VALUES`` values before it
    is parsed. Counted from above: a value is the first, or follows a comma or a colon, or opens a
    list or an object (those marks within strings count too)."""
    data = text.encode() if isinstance(text, str) else text
    values = 1 + sum(data.count(mark) for mark in (b",", b":", b"[", b"{"))
    if values > _MAX_JSON_VALUES:
        raise ValueError(
            f"expected {what} of at most {_MAX_JSON_VALUES} values (counted as its commas, colons and opening "
            f"brackets, plus one), got {values}"
        )


def _header(data: bytes, file: str) -> tuple[dict[str, Any], int]:
    """The safetensors header of ``data`` and the offset where the tensors' bytes start.

    Read here rather than by safetensors so that every size is known before anything is built.
    The layout: 8 bytes of little-endian header length, the header (JSON), the tensors' bytes.
    """
    if len(data) < 8:
        raise ValueError(f"expected a safetensors file at {file!r}, got {len(data)} bytes, too few for a header length")
    size = int.from_bytes(data[:8], "little")
    limit = min(len(data) - 8, _MAX_HEADER_BYTES)
    if size > limit:
        raise ValueError(
            f"expected a safetensors file at {file!r} with a header of at most {limit} bytes (what follows the "
            f"header length, and at most {_MAX_HEADER_BYTES // 2**20} MiB), got a header length of {size}"
        )
    text = data[8 : 8 + size]
    _check_json_values(text, f"a safetensors file at {file!r} with a header")
    try:
        header = json.loads(text)
    except RecursionError:
        raise ValueError(f"expected a safetensors file at {file!r}, got a header nested too deeply to read") from None
    except ValueError as err:
        raise ValueError(f"expected a safetensors file at {file!r}, got a header that is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise ValueError(f"expected a safetensors file at {file!r}, got a header that is {_show.repr(header)}")
    return header, 8 + size


def _stored_entry(entry: Any) -> tuple[_Stored, int, int] | None:
    """``(tensor, start, end)`` from one header entry, or None where it is malformed."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str) or entry["dtype"] not in _DTYPES:
        return None
    shape, span = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and isinstance(span, list) and len(span) == 2):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in [*shape, *span]):
        return None
    tensor, (start, end) = _Stored(_DTYPES[entry["dtype"]], tuple(shape)), span
    if end - start != tensor.nbytes:
        return None
    return tensor, start, end


def _stored_tensors(header: dict[str, Any], payload: int, file: str) -> dict[str, _Stored]:
    """The tensors the header declares, each checked to lie within the ``payload`` bytes after it.

    The declared tensors together hold at most ``payload`` bytes, so a model whose tensors match
    them is no larger than the file.
    """
    tensors, total = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        found = _stored_entry(entry)
        if found is None or found[2] > payload:
            raise ValueError(
                f"expected a safetensors file at {file!r}: tensor {name!r} should be declared as "
                f"{{'dtype': one of {list(_DTYPES)}, 'shape': [sizes], 'data_offsets': [start, end]}} with "
                f"end - start its size in bytes, within the {payload} bytes of tensors, got {_show.repr(entry)}"
            )
        tensor, start, end = found
        tensors[name] = tensor
        total += end - start
    if total > payload:
        raise ValueError(
            f"expected the tensors of {file!r} to fit in its {payload} bytes of tensors, got tensors of {total} bytes"
        )
    return tensors


def _description(header: dict[str, Any], file: str) -> dict[str, Any]:
    """The genvae description in the header's metadata, checked for format and a version read here."""
    metadata = header.get("__metadata__")
    text = metadata.get(FORMAT) if isinstance(metadata, dict) else None
    if not isinstance(text, str):
        raise ValueError(f"expected a genvae description in the header of {file!r}, found none")
    _check_json_values(text, f"a description in {file!r}")
    try:
        spec = json.loads(text)
    except RecursionError:
        raise ValueError(
            f"expected a description in {file!r} nested at most {_MAX_DEPTH} deep, got one nested too deeply to read"
        ) from None
    except ValueError as err:
        raise ValueError(f"expected the description in {file!r} to be JSON, got invalid JSON: {err}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"expected the description in {file!r} to be a JSON object, got {_show.repr(spec)}")
    version = spec.get("version")
    if spec.get("format") != FORMAT or type(version) is not int or version not in READABLE_VERSIONS:
        raise ValueError(
            f"expected format {FORMAT!r} version {' or '.join(map(str, READABLE_VERSIONS))} in {file!r}, "
            f"got format {_show.repr(spec.get('format'))} version {_show.repr(spec.get('version'))}"
        )
    return spec


# --------------------------------------------------------------------------- rebuilding


def _under(module: str, prefix: str) -> bool:
    """Whether ``module`` is ``prefix`` or a module under it."""
    return module == prefix or module.startswith(f"{prefix}.")


def _allowed(module: str, trusted: tuple[str, ...]) -> bool:
    """Whether classes may be imported from ``module``: torch's layers, or trusted.

    A package's ``__main__`` runs a program when imported, so it is refused even under a trusted
    prefix.
    """
    if module.endswith(".__main__"):
        return False
    return f"{module}.".startswith((_TORCH_LAYERS, *trusted))


def _own_class(module: str, name: str) -> list[type]:
    """The classes of qualified name ``name`` defined in genvae's module ``module`` or in a module
    under it, found among the modules imported already, once the part modules of its package are
    (``genvae.hierarchy`` and those listed under it): a file never names what is imported."""
    package = ".".join(module.split(".")[:2])  # genvae.hierarchy of genvae.hierarchy.cells
    for part_module in PART_MODULES:
        if _under(part_module, package):
            try:
                importlib.import_module(part_module)
            except ModuleNotFoundError as err:  # a listed module genvae does not have (yet)
                if err.name != part_module:
                    raise
    found = []
    for loaded, value in list(sys.modules.items()):
        cls = vars(value).get(name) if value is not None and _under(loaded, module) else None
        if isinstance(cls, type) and cls.__module__ == loaded and cls.__qualname__ == name:
            found.append(cls)
    return found


def _prefixes(trusted: Iterable[str]) -> tuple[str, ...]:
    """The module prefixes ``trusted`` names; one string is refused, as ``tuple`` would split it into
    letters, each of which would be trusted."""
    prefixes = () if isinstance(trusted, str) else tuple(trusted)
    if isinstance(trusted, str) or not all(isinstance(prefix, str) for prefix in prefixes):
        raise TypeError(f"expected trusted to be a tuple of module prefixes such as ('myproject.',), got {trusted!r}")
    return prefixes


class _OverBudget(Exception):
    """A description asked for more than its file allows; ``expected`` says what the file allows."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


class _Rebuild:
    """One rebuild of a description of ``version``: builds only registered parts and allowed classes;
    errors name the JSON path.

    ``finish``, where set, makes the model out of what was built, once its weights are read: a
    version-1 ``HierarchicalVAE`` is built as the container of its parts that its weights are named
    after (see ``ladder``).
    """

    def __init__(self, file: str, trusted: tuple[str, ...], budget: _Budget, version: int) -> None:
        self.file, self.trusted, self.budget, self.version = file, trusted, budget, version
        self.built: dict[str, nn.Module] = {}  # reference ("model.encoder") -> part
        self.classes: dict[str, type] = {}  # module path -> class, each name looked up once
        self.finish: Callable[[], nn.Module] | None = None

    def error(self, where: str, expected: str, got: str) -> ValueError:
        return ValueError(_one_line(f"{where} in {self.file!r}: expected {expected}, got {got}"))

    def model(self, spec: Any) -> nn.Module:
        """The model that ``spec`` (the description's ``"model"``) describes."""
        if not (isinstance(spec, dict) and ("class" in spec or ("part" in spec and self.version >= 2))):
            raise self.error("model", f"a part {self.part_keys}", _show.repr(spec))
        return self.value(spec, "model", "model", 2)

    @property
    def part_keys(self) -> str:
        """How a part is written in this version."""
        by_class = '{"class": ..., "args": {...}}'
        return by_class if self.version < 2 else '{"part": "kind/name", "args": {...}} or ' + by_class

    def value(self, spec: Any, where: str, ref: str, depth: int) -> Any:
        """The value ``spec`` describes, found at JSON path ``where``, ``depth`` levels deep.

        ``ref`` is the name other parts use to refer to it: the path without its ``args``.
        """
        if depth > _MAX_DEPTH:
            raise self.error(where, f"a description nested at most {_MAX_DEPTH} deep", "one nested deeper")
        if isinstance(spec, list):  # plain values are taken as they are: a long list costs little
            return tuple(
                self.value(v, f"{where}[{i}]", f"{ref}[{i}]", depth + 1) if isinstance(v, (list, dict)) else v
                for i, v in enumerate(spec)
            )
        if not isinstance(spec, dict):
            return spec
        keys = sorted(spec)
        if keys == ["ref"]:
            return self.reference(spec["ref"], f"{where}.ref")
        if keys == ["type"]:
            return self.named_class(spec["type"], f"{where}.type", module_class=False)
        if keys == ["args", "class"]:
            cls = self.named_class(spec["class"], f"{where}.class", module_class=True)
            if where == "model" and self.is_ladder(spec):
                return self.ladder(spec, depth)
            return self.part(cls, spec["args"], where, ref, depth)
        if keys == ["args", "part"] and self.version >= 2:
            return self.part(self.registered(spec["part"], f"{where}.part"), spec["args"], where, ref, depth)
        raise self.error(
            where,
            f'a part {self.part_keys}, a class {{"type": ...}} or a reference {{"ref": ...}}',
            f"an object with keys {_show.repr(keys)}",
        )

    def reference(self, name: Any, where: str) -> nn.Module:
        if not isinstance(name, str) or name not in self.built:
            raise self.error(where, f"a part built before this one, one of {sorted(self.built)}", _show.repr(name))
        return self.built[name]

    def arguments(self, args: Any, where: str, ref: str, depth: int) -> dict[str, Any]:
        """The constructor arguments ``args`` (at ``where.args``) describe, rebuilt."""
        if not isinstance(args, dict):
            raise self.error(f"{where}.args", "an object of constructor arguments", _show.repr(args))
        return {name: self.value(v, f"{where}.args.{name}", f"{ref}.{name}", depth + 2) for name, v in args.items()}

    def call(
        self, make: Callable[..., nn.Module], args: dict[str, Any], where: str, what: str, *positional: Any
    ) -> nn.Module:
        """``make(*positional, **args)``, counted as one module first; its failures name ``where`` and ``what``."""
        try:
            self.budget.spend(objects=1)  # before it is built: a part without weights registers nothing
            return make(*positional, **args)
        except _OverBudget as err:
            raise self.error(where, err.expected, f"{what} asking for more") from None
        except Exception as err:
            raise self.error(where, f"arguments that {what} accepts", f"{type(err).__name__}: {err}") from err

    def part(self, cls: type, args: Any, where: str, ref: str, depth: int) -> nn.Module:
        """The module of class ``cls`` built from the rebuilt arguments ``args``."""
        part = self.call(cls, self.arguments(args, where, ref, depth), where, _qualname(cls))
        self.built[ref] = part
        return part

    def registered(self, name: Any, where: str) -> type:
        """The class registered as ``name`` ("prior/vamp"), among the parts registered so far."""
        kind, _, short = name.partition(_PART_SEPARATOR) if isinstance(name, str) else ("", "", "")
        if kind not in registry.KINDS or not short:
            kinds = ", ".join(registry.KINDS)
            raise self.error(where, f"a registered part 'kind/name' (kind one of {kinds})", _show.repr(name))
        names = registry.names(kind)
        if short not in names:
            listed = ", ".join(repr(n) for n in names) or "none"
            raise self.error(where, f"a registered {kind}, one of {listed}", f"{_show.repr(short)}; {_PLUGIN_HINT}")
        cls = registry.entry(kind, short).obj
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise self.error(where, "a part whose entry is a module class", f"{name!r}, which is {_show.repr(cls)}")
        return cls

    def named_class(self, name: Any, where: str, *, module_class: bool) -> type:
        """The class ``name`` ("pkg.mod.Class") names, imported only from an allowed module.

        The module is the name up to its last dot, decided before anything is imported; the class
        must be defined in that module (not reached through another module's attributes, so a
        file cannot name ``genvae.io.os.system``), or, for genvae's, under it; and be an
        ``nn.Module`` where ``module_class``.
        """
        if isinstance(name, str) and name in self.classes:
            cls = self.classes[name]
        else:
            cls = self.find_class(name, where)
            self.classes[name] = cls
        if module_class and not issubclass(cls, nn.Module):
            raise self.refusal(where, name)
        return cls

    def refusal(self, where: str, name: Any) -> ValueError:
        registered = " or a registered part" if self.version >= 2 else ""
        return self.error(
            where,
            f"a class defined in one of {list(PART_MODULES)}, under {_TORCH_LAYERS!r} or under a trusted prefix "
            f"{list(self.trusted)}{registered}; pass trusted=('yourpackage.',) to load(...) to allow your own parts",
            _show.repr(name),
        )

    def find_class(self, name: Any, where: str) -> type:
        if not isinstance(name, str) or not all(word.isidentifier() for word in name.split(".")):
            raise self.refusal(where, name)
        module_name, _, class_name = name.rpartition(".")
        if any(_under(module_name, own) for own in PART_MODULES):
            found = _own_class(module_name, class_name)
            if len(found) > 1:
                classes = ", ".join(sorted(map(_qualname, found)))
                raise self.error(where, "the name of one of genvae's classes", f"{name!r}, the name of {classes}")
            if not found:
                raise self.refusal(where, name)
            return found[0]
        if not module_name or not _allowed(module_name, self.trusted):
            raise self.refusal(where, name)
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise self.refusal(where, name) from None
        cls = vars(module).get(class_name)
        if not isinstance(cls, type) or cls.__module__ != module_name or cls.__qualname__ != class_name:
            raise self.refusal(where, name)
        return cls

    @staticmethod
    def is_ladder(spec: dict[str, Any]) -> bool:
        """Whether ``spec`` is a ``HierarchicalVAE`` of version 1's arguments, which ``from_ladder``
        makes."""
        return (
            spec["class"] == _LADDER_CLASS
            and isinstance(spec["args"], dict)
            and sorted(spec["args"]) == sorted(_LADDER_ATTRIBUTES)
        )

    def ladder(self, spec: dict[str, Any], depth: int) -> nn.Module:
        """A version-1 ``HierarchicalVAE``'s parts in a plain module under the attributes its weights
        are named after; ``finish`` makes the model of them with ``from_ladder``."""
        args = self.arguments(spec["args"], "model", "model", depth)

        def container(**parts: Any) -> nn.Module:
            held = nn.Module()
            for name, attribute in _LADDER_ATTRIBUTES.items():
                many = name in ("down", "priors")
                if not isinstance(parts[name], tuple if many else nn.Module):
                    raise TypeError(f"expected {name} to be {'a list of parts' if many else 'a part'}")
                setattr(held, attribute, nn.ModuleList(parts[name]) if many else parts[name])
            return held

        held = self.call(container, args, "model", "a version-1 HierarchicalVAE")
        from .hierarchy import from_ladder
        parts = [args[name] for name in _LADDER_ATTRIBUTES]  # encoder, down, priors, decoder, likelihood, prior
        self.finish = lambda: self.call(from_ladder, {}, "model", "from_ladder", *parts)
        return held


class _Budget:
    """What building a description may create, taken from its file: bytes of tensors, and modules,
    parameters and buffers (objects, each also counted as ``_OBJECT_BYTES`` bytes).

    ``spend`` raises ``_OverBudget`` once either runs out; its callers count what is about to be
    created wherever it can be counted before it is.
    """

    def __init__(self, stored: dict[str, _Stored]) -> None:
        stored_bytes = sum(tensor.nbytes for tensor in stored.values())
        self.max_bytes = _CREATED_PER_STORED_BYTE * stored_bytes + _CREATED_ALLOWANCE
        self.max_objects = _REGISTRATIONS_PER_TENSOR * len(stored) + _REGISTRATIONS_BASE
        self.bytes = self.objects = 0
        self.bytes_expected = (
            f"tensors of at most {self.max_bytes} bytes in all ({_CREATED_PER_STORED_BYTE} times the file's "
            f"{stored_bytes} bytes of tensors, plus {_CREATED_ALLOWANCE}; each module, parameter and buffer "
            f"counted as {_OBJECT_BYTES} bytes more)"
        )
        self.objects_expected = (
            f"at most {self.max_objects} modules, parameters and buffers in all ({_REGISTRATIONS_PER_TENSOR} per "
            f"tensor in the file, plus {_REGISTRATIONS_BASE}; each built, registered or copied counted once)"
        )

    def spend(self, nbytes: int = 0, objects: int = 0) -> None:
        self.objects += objects
        self.bytes += nbytes + objects * _OBJECT_BYTES
        if self.objects > self.max_objects:
            raise _OverBudget(self.objects_expected)
        if self.bytes > self.max_bytes:
            raise _OverBudget(self.bytes_expected)


#: The budget of the build under way in this thread, if any. The hooks that count registrations and
#: copies of modules are global (torch holds them for every thread); they count only what the
#: building thread makes.
_ACTIVE: ContextVar[_Budget | None] = ContextVar("genvae_io_budget", default=None)


# How many bytes a call creates, measured before the call from its arguments; each measure takes
# the function, its positional and its keyword arguments.
_Measure = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], int]


def _created_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The bytes the factory call ``func(*args, **kwargs)`` would allocate, learnt by repeating it on
    the meta device, where nothing is allocated.

    ``torch.randn`` is measured as ``torch.rand``, which takes the same arguments: on the meta
    device it would load torch's Python meta kernels, a cost paid once but out of scale here.
    """
    probe = torch.rand if func is torch.randn else func
    kept = {name: value for name, value in kwargs.items() if name not in _PLACEMENT_ARGS}
    return probe(*args, **kept, device="meta").untyped_storage().nbytes()


def _source(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """The tensor a call works on: its first argument, or ``input``."""
    return args[0] if args else kwargs["input"]


def _elements_bytes(tensor: torch.Tensor) -> int:
    """The bytes of a copy of ``tensor``'s elements: an expanded view's every element included."""
    return tensor.numel() * tensor.element_size()


def _counts(values: tuple[Any, ...]) -> tuple[int, ...]:
    """The counts given as ``f(2, 3)`` or ``f((2, 3))`` (``repeat``, ``resize_``), negatives as 0."""
    if len(values) == 1 and isinstance(values[0], (list, tuple)):
        values = tuple(values[0])
    return tuple(max(0, operator.index(value)) for value in values)


def _like_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    source = _source(args, kwargs)
    return source.numel() * (kwargs.get("dtype") or source.dtype).itemsize


def _copy_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    return _elements_bytes(_source(args, kwargs))


def _contiguous_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    layout = args[1] if len(args) > 1 else kwargs.get("memory_format", torch.contiguous_format)
    return 0 if args[0].is_contiguous(memory_format=layout) else _elements_bytes(args[0])


def _deepcopy_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """``Tensor.__deepcopy__`` copies the whole storage of a view."""
    tensor = args[0]
    return tensor.untyped_storage().nbytes() if tensor.layout == torch.strided else _elements_bytes(tensor)


def _elements(data: Any) -> int:
    """The elements of a tensor made from ``data``: a tensor, nested lists or tuples, a range."""
    if isinstance(data, torch.Tensor):
        return data.numel()
    if isinstance(data, (list, tuple)):
        return sum(_elements(item) for item in data)
    return len(data) if isinstance(data, range) else 1


def _data_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """A tensor made from data takes at most 8 bytes an element (int64, float64) unless a dtype or
    the data's own says otherwise."""
    if func is torch.Tensor.new_tensor:
        data = args[1] if len(args) > 1 else kwargs["data"]
    else:
        data = args[0] if args else kwargs.get("data", kwargs.get("obj"))
    dtype = next((value for value in (*args[1:], *kwargs.values()) if isinstance(value, torch.dtype)), None)
    itemsize = dtype.itemsize if dtype else data.element_size() if isinstance(data, torch.Tensor) else 8
    return _elements(data) * itemsize


def _repeat_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    times = args[1:] if len(args) > 1 else (kwargs.get("repeats", kwargs.get("dims", ())),)
    return _elements_bytes(_source(args, kwargs)) * math.prod(_counts(times))


def _interleave_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """At most the elements of the source times its largest repeat; ``repeat_interleave(repeats)``
    makes int64 indices, each repeated."""
    source = _source(args, kwargs)
    repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
    itemsize = source.element_size() if repeats is not None else 8
    repeats = source if repeats is None else repeats
    if isinstance(repeats, torch.Tensor):
        most = int(repeats.max()) if repeats.numel() else 0
    else:
        most = operator.index(repeats)
    return source.numel() * max(0, most) * itemsize


def _join_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    tensors = [t for t in (args[0] if args else kwargs["tensors"]) if isinstance(t, torch.Tensor)]
    return sum(t.numel() for t in tensors) * max((t.element_size() for t in tensors), default=0)


def _resize_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """``resize_`` grows the storage in place, to the new size past the view's offset."""
    tensor = args[0]
    wanted = (tensor.storage_offset() + math.prod(_counts(args[1:]))) * tensor.element_size()
    return max(0, wanted - tensor.untyped_storage().nbytes())


def _indices_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """``tril_indices(rows, cols)``: at most two indices of each of rows × cols elements (measured
    here: on the meta device it would load torch's compiler)."""
    rows = args[0] if args else kwargs["row"]
    cols = args[1] if len(args) > 1 else kwargs["col"]
    dtype = kwargs.get("dtype") or torch.int64
    return 2 * math.prod(_counts((rows, cols))) * dtype.itemsize


def _normal_bytes(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """``torch.normal(mean, std, size)`` makes a tensor of ``size``; from tensors of means and
    deviations, one as large as they are, which is not counted (see ``_SizeBudget``)."""
    size = args[2] if len(args) > 2 else kwargs.get("size")
    if size is None:
        return 0
    return _created_bytes(torch.empty, (size,), {"dtype": kwargs.get("dtype")})


#: The calls counted by ``_SizeBudget``, and how many bytes each would create.
_MEASURES: dict[Callable[..., Any], _Measure] = {
    **dict.fromkeys(_SIZED_FACTORIES, _created_bytes),
    **dict.fromkeys(_LIKE_FACTORIES, _like_bytes),
    **dict.fromkeys(_FROM_DATA, _data_bytes),
    **dict.fromkeys(_REPEATS, _repeat_bytes),
    **dict.fromkeys(_INTERLEAVES, _interleave_bytes),
    **dict.fromkeys(_JOINS, _join_bytes),
    torch.Tensor.clone: _copy_bytes,
    torch.clone: _copy_bytes,
    torch.Tensor.__deepcopy__: _deepcopy_bytes,
    torch.Tensor.contiguous: _contiguous_bytes,
    torch.Tensor.resize_: _resize_bytes,
    torch.tril_indices: _indices_bytes,
    torch.triu_indices: _indices_bytes,
    torch.normal: _normal_bytes,
}
#: Calls that copy one tensor: a deep copy of a module clones its parameters and copies its buffers
#: without registering them, so each copy is counted as one more tensor too.
_TENSOR_COPIES: frozenset[Callable[..., Any]] = frozenset({torch.Tensor.clone, torch.clone, torch.Tensor.__deepcopy__})


class _SizeBudget(TorchFunctionMode):
    """Count the bytes of each tensor that a counted call (``_MEASURES``) would create against
    ``budget``, before the call, and each copy of a tensor as one more object.

    Tensors computed from others by arithmetic (``0.1 * torch.randn(...)``, a mask compared from two
    ranges) are not counted: in genvae's parts and torch's layers they are no larger than the
    tensors they are computed from, or than a weight counted before them (IAF's masks, the size of
    the layers they mask).
    """

    def __init__(self, budget: _Budget) -> None:
        super().__init__()
        self.budget = budget

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        measure = _MEASURES.get(func)
        if measure is not None:
            self.budget.spend(measure(func, args, kwargs), objects=int(func in _TENSOR_COPIES))
        return func(*args, **kwargs)


@contextmanager
def _registration_limit(budget: _Budget) -> Iterator[None]:
    """Count each module, parameter and buffer registered in the block by this thread against
    ``budget``, once it is registered."""

    def count_one(module: nn.Module, name: str, value: object) -> None:
        if _ACTIVE.get() is budget:
            budget.spend(objects=1)

    registers = (
        register_module_module_registration_hook,
        register_module_parameter_registration_hook,
        register_module_buffer_registration_hook,
    )
    handles = [register(count_one) for register in registers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


#: The attribute of ``nn.Module`` that ``copy.deepcopy`` calls; torch defines none so far.
_DEEPCOPY = "__deepcopy__"
#: ``nn.Module.__deepcopy__`` as torch defines it, if it does; how many builds are under way.
_module_deepcopy: Callable[[nn.Module, dict[int, Any]], Any] | None = None
_copying_builds = 0
_copying_lock = threading.Lock()


def _counted_deepcopy(module: nn.Module, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy(module)``, counted first as one more module against the building thread's
    budget (its tensors are counted as ``_SizeBudget`` sees them copied)."""
    budget = _ACTIVE.get()
    if budget is not None:
        budget.spend(objects=1)
    if _module_deepcopy is not None:
        return _module_deepcopy(module, memo)
    # as copy.deepcopy copies an object whose class defines no __deepcopy__
    reductor = copyreg.dispatch_table.get(type(module))
    reduced = reductor(module) if reductor is not None else module.__reduce_ex__(4)
    if isinstance(reduced, str):
        return module
    return copy._reconstruct(module, memo, *reduced)  # type: ignore[attr-defined]


class _CountedDeepcopy:
    """``nn.Module.__deepcopy__`` while builds are under way: ``_counted_deepcopy`` bound to a module,
    where ``copy.deepcopy`` looks for it, but absent from the classes, where torch's
    ``register_parametrization`` looks (finding one, it would not give the classes it makes the
    deep copy they need)."""

    def __get__(self, module: nn.Module | None, owner: type | None = None) -> Callable[[dict[int, Any]], Any]:
        if module is None:
            raise AttributeError(_DEEPCOPY)
        return MethodType(_counted_deepcopy, module)


@contextmanager
def _counting_module_copies() -> Iterator[None]:
    """Count every module deep-copied by the building thread in the block, before it is copied.

    A deep copy registers nothing (``TransformerEncoder`` copies its layer ``num_layers`` times
    before it registers any copy), and ``copy.deepcopy`` has no hook, so modules have a
    ``__deepcopy__`` (``_CountedDeepcopy``) while any build is under way; other threads' copies are
    made as before, and not counted.
    """
    global _module_deepcopy, _copying_builds
    with _copying_lock:
        if _copying_builds == 0:
            _module_deepcopy = vars(nn.Module).get(_DEEPCOPY)
            setattr(nn.Module, _DEEPCOPY, _CountedDeepcopy())
        _copying_builds += 1
    try:
        yield
    finally:
        with _copying_lock:
            _copying_builds -= 1
            if _copying_builds == 0:
                if _module_deepcopy is None:
                    delattr(nn.Module, _DEEPCOPY)
                else:
                    setattr(nn.Module, _DEEPCOPY, _module_deepcopy)


@contextmanager
def _on_budget(budget: _Budget) -> Iterator[None]:
    """Count what this thread creates, registers and copies in the block against ``budget``."""
    active = _ACTIVE.set(budget)
    try:
        with _SizeBudget(budget), _registration_limit(budget), _counting_module_copies():
            yield
    finally:
        _ACTIVE.reset(active)


# --------------------------------------------------------------------------- checking the tensors


def _shared_names(model: nn.Module) -> list[tuple[torch.Tensor, list[str]]]:
    """Each tensor of ``model``'s state dict with all its names (a VampPrior's encoder has two)."""
    groups: dict[int, tuple[torch.Tensor, list[str]]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), (tensor, []))[1].append(name)
    return list(groups.values())


def _fits(tensor: torch.Tensor, stored: _Stored) -> bool:
    """Whether ``stored`` loads into ``tensor``: the same shape, and the same dtype, or both
    floating (the model is then cast to the file's precision)."""
    same_kind = stored.dtype == tensor.dtype or (stored.dtype.is_floating_point and tensor.dtype.is_floating_point)
    return tuple(tensor.shape) == stored.shape and same_kind


def _check_tensors(model: nn.Module, stored: dict[str, _Stored], file: str) -> dict[str, list[str]]:
    """Check that the file holds exactly ``model``'s tensors, each under one of its names.

    Shared tensors are stored once (as ``safetensors.torch.save_model`` writes them). Returns, for
    each stored name, the model's other names of the same tensor.
    """
    mismatch = f"the weights in {file!r} do not match their description"
    aliases, known = {}, set()
    for tensor, names in _shared_names(model):
        if is_lazy(tensor):
            raise ValueError(
                f"{mismatch}: expected a tensor {names[0]!r} of a known size, got a lazy module's, "
                "whose size is unknown until it is run"
            )
        known.update(names)
        found = [name for name in names if name in stored]
        if not found:
            raise ValueError(
                f"{mismatch}: expected a tensor {names[0]!r} of shape {tuple(tensor.shape)} {tensor.dtype}, "
                "got no such tensor in the file"
            )
        for name in found:
            if not _fits(tensor, stored[name]):
                raise ValueError(
                    f"{mismatch}: expected {name!r} of shape {tuple(tensor.shape)} {tensor.dtype}, "
                    f"got shape {stored[name].shape} {stored[name].dtype} in the file"
                )
        aliases[found[0]] = [name for name in names if name not in stored]
    unexpected = sorted(set(stored) - known)
    if unexpected:
        raise ValueError(
            f"{mismatch}: expected only the description's tensors, got {unexpected[0]!r} of shape "
            f"{stored[unexpected[0]].shape}, which the description does not build"
        )
    return aliases


def _read_tensors(data: bytes, file: str) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``data``, copied out of it."""
    try:
        return load_tensors(data)
    except SafetensorError as err:
        raise ValueError(f"expected a safetensors file at {file!r}, could not read its tensors: {err}") from None


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], aliases: dict[str, list[str]], file: str) -> None:
    """Copy ``tensors`` into ``model``, each shared tensor under all its names."""
    for name, others in aliases.items():
        for other in others:
            tensors[other] = tensors[name]
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(_one_line(f"the weights in {file!r} do not match their description: {err}")) from None


def _kept_weights(model: nn.Module, parts: nn.Module, file: str) -> nn.Module:
    """``model``, made of ``parts`` once their weights were read, checked to hold no other tensor."""
    read = {id(tensor) for tensor in parts.state_dict(keep_vars=True).values()}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in read:
            raise ValueError(
                f"model in {file!r}: expected a model made of the file's weights, got {name!r}, which the file "
                "does not hold"
            )
    return model


# --------------------------------------------------------------------------- load


def load(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    trusted: Iterable[str] = (),
) -> nn.Module:
    """Rebuild a model saved by [`save`][genvae.io.save] (or a run folder holding ``model.safetensors``).

    Nothing in the file is trusted, and nothing is imported because it names it: parts come only
    from the registry (genvae's own, and a plugin's once you have imported its module), torch's
    layers and ``trusted``; the model is built on a budget of memory and modules taken from the
    file's tensors (your own parts' constructors too), and its tensors are compared with the file's
    before the weights are read (see the module docstring). Files of version 1 load too. A run
    folder's model file is verified against its manifest.

    Args:
        path: the file or run folder.
        map_location: device for the weights.
        trusted: extra module prefixes whose classes a file may name by module path, and which are
            then imported, e.g. ``("myproject.",)``; a registered part needs none.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: no such file or run folder.
        TypeError: ``trusted`` is not a collection of strings.
        ValueError: not a genvae file of a version read here, a description that is malformed, names
            a part that is not registered or a class outside the allowed modules, weights that do
            not match the description, or a run folder's file that does not match its manifest.
    """
    prefixes = _prefixes(trusted)
    data, file = _read(Path(path))
    header, start = _header(data, file)
    stored = _stored_tensors(header, len(data) - start, file)
    spec = _description(header, file)
    tensors = _read_tensors(data, file)
    del data  # the tensors hold a copy: the model is built without the file's bytes held as well
    rebuild = _Rebuild(file, prefixes, _Budget(stored), spec["version"])
    with _on_budget(rebuild.budget):
        model = rebuild.model(spec.get("model"))
    aliases = _check_tensors(model, stored, file)
    floats = {s.dtype for s in stored.values() if s.dtype.is_floating_point}
    if len(floats) == 1:
        model.to(floats.pop())  # the precision it was saved in: a float64 model loads as float64
    _load_weights(model, tensors, aliases, file)
    if rebuild.finish is not None:
        with _on_budget(rebuild.budget):
            model = _kept_weights(rebuild.finish(), model, file)
    return model.to(map_location).eval()
