"""Parts by name: a decorator beside each part, read by the command line, config files and model files.

    @register("prior", "mog")
    class MixtureOfGaussians(nn.Module):
        def __init__(self, latent_dim: int, num_components: int = 10) -> None: ...

An entry knows how to build its part from a run's facts and the user's options. The parameters of
its builder (the class itself, or ``build=``) named like a fact ([`FACTS`][genvae.registry.FACTS]:
``latent_dim``, ``data_shape``, ``num_classes``…) are filled in from the run; every other keyword
parameter is a user option, typed by its annotation, with its default, and helped by the line that
describes it in the docstring's ``Args:`` section. Requirements (``requires={"layers": 1}``) and
what a part brings to a run (``provides={"conditional": True}``) are data that
[`check`][genvae.registry.check] compares, so no central table says which part goes with which.

Python use needs no registration: a name is needed only where text names a part. ``import genvae``
imports genvae's own part modules, so their entries are here before any is looked up; this module
imports nothing of genvae's.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeVar, Union

__all__ = [
    "FACTS",
    "KINDS",
    "Entry",
    "Option",
    "add_kind",
    "build",
    "check",
    "entries",
    "entry",
    "entry_of",
    "names",
    "register",
]

T = TypeVar("T")

KINDS: list[str] = [
    "encoder",
    "decoder",
    "likelihood",
    "prior",
    "objective",
    "flow",
    "layer",
    "latent",
    "model",
    "sampler",
    "classifier",
    "data",
    "metric",
    "block",
]
"""The kinds of part; [`add_kind`][genvae.registry.add_kind] adds one. ``block`` is a building block
that a model file may name (a hierarchy's deterministic block, a flow-wrapped encoder)."""

FACTS: dict[str, str] = {
    "data_shape": "the shape of one example, e.g. (1, 28, 28); a decoder's is its likelihood's parameter shape",
    "event_dims": "the number of dimensions of one example",
    "num_classes": "the number of classes of the labels (None where the model is unconditional)",
    "latent_dim": "the size D of a latent layer",
    "context_features": "the width of the context a flow step is amortised on",
    "encoder": "the Gaussian encoder q(z | x) of the model",
    "decoder": "the decoder of the model",
    "likelihood": "the likelihood p(x | z) of the model",
    "prior": "the prior p(z) of the model (None where the model builds its own)",
    "flow": "a function latent_dim -> flow steps for the posterior, or None",
    "arch": "the name of the run's encoder and decoder architecture",
}
"""Names of the run's facts: a builder's parameter of one of these names is filled in, not an option."""

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_REGISTRY: dict[str, dict[str, Entry]] = {}
_BY_OBJECT: dict[int, Entry] = {}


@dataclass(frozen=True)
class Option:
    """A user option of a part: a keyword parameter of its builder that is not a run fact.

    Attributes:
        name: the parameter's name (``num_components``).
        annotation: its type hint, resolved (``int``, ``tuple[int, ...]``, ``Literal[...]``…).
        default: its default, or ``inspect.Parameter.empty`` where it must be given.
        help: the line that describes it in the builder's docstring.
    """

    name: str
    annotation: Any
    default: Any
    help: str

    @property
    def required(self) -> bool:
        """Whether the option has no default."""
        return self.default is inspect.Parameter.empty

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The allowed values of a ``Literal`` option, else None."""
        for arm in _arms(self.annotation):
            if typing.get_origin(arm) is Literal:
                return typing.get_args(arm)
        return None

    @property
    def textual(self) -> bool:
        """Whether a value can be written as text (a flag or a config value): numbers, strings,
        booleans, choices and tuples of numbers; a class or a module is set from Python only."""
        return any(_parser(arm) is not None for arm in _arms(self.annotation))

    def parse(self, text: str) -> Any:
        """The value ``text`` writes, e.g. ``"512,256"`` for ``tuple[int, ...]``.

        Raises:
            ValueError: the text is not a value of this option's type.
        """
        arms = _arms(self.annotation)
        if text.lower() == "none" and type(None) in arms:
            return None
        for arm in arms:
            parse = _parser(arm)
            if parse is not None:
                try:
                    return parse(text)
                except ValueError:
                    continue
        raise ValueError(f"expected {self.describe()}, got {text!r}")

    def describe(self) -> str:
        """What a value must be, in words: ``an int``, ``one of 'none', 'global'``…"""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        words = [_WORDS[arm] for arm in _arms(self.annotation) if arm in _WORDS]
        words += ["comma-separated ints" for arm in _arms(self.annotation) if _tuple_of(arm) is int]
        words += ["comma-separated numbers" for arm in _arms(self.annotation) if _tuple_of(arm) is float]
        return " or ".join(dict.fromkeys(words)) or "a value set from Python"


_WORDS = {int: "an int", float: "a number", bool: "true or false", str: "a string", type(None): "none"}


def _arms(annotation: Any) -> tuple[Any, ...]:
    """The members of a union (``int | None`` -> ``(int, NoneType)``), else the annotation alone."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _tuple_of(annotation: Any) -> type | None:
    """``int`` for ``tuple[int, ...]`` or ``Sequence[int]``, else None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (tuple, Sequence, list) and args and args[0] in (int, float):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return None
        return args[0]
    return None


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(text)


def _parser(arm: Any) -> Callable[[str], Any] | None:
    if arm in (int, float, str):
        return arm  # type: ignore[no-any-return]
    if arm is bool:
        return _boolean
    if typing.get_origin(arm) is Literal:
        allowed = typing.get_args(arm)

        def choice(text: str) -> Any:
            if text not in allowed:
                raise ValueError(text)
            return text

        return choice
    item = _tuple_of(arm)
    if item is not None:
        return lambda text: tuple(item(v) for v in text.split(","))
    return None


@dataclass(frozen=True)
class Entry:
    """A registered part: its kind and name, what was decorated, and how to build it.

    Attributes:
        kind: one of [`KINDS`][genvae.registry.KINDS].
        name: its name within the kind (``"vamp"``).
        obj: the decorated class or function (what a model file names).
        build: what is called to build the part (``obj`` unless ``build=`` was given).
        requires: run facts or choices this part needs, each with the value or values it allows.
        provides: facts this part brings to a run (``{"conditional": True}``).
    """

    kind: str
    name: str
    obj: Any
    build: Callable[..., Any]
    requires: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    provides: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def facts(self) -> tuple[str, ...]:
        """The run facts its builder takes."""
        return tuple(name for name in _parameters(self.build) if name in FACTS)

    @cached_property
    def options(self) -> tuple[Option, ...]:
        """The user options of its builder, in order."""
        hints = _hints(self.build)
        helps = _arg_help(self.build, self.obj)
        return tuple(
            Option(name, hints.get(name, Any), param.default, helps.get(name, ""))
            for name, param in _parameters(self.build).items()
            if name not in FACTS
        )

    def option(self, name: str) -> Option:
        """The option ``name``.

        Raises:
            KeyError: the part has no such option (the message lists its options).
        """
        for option in self.options:
            if option.name == name:
                return option
        known = ", ".join(o.name for o in self.options) or "none"
        raise KeyError(f"{self.kind} {self.name!r} has no option {name!r}; its options: {known}")


def _parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The named parameters of ``fn`` (a class: of its constructor), without ``self``, *args, **kwargs."""
    target = fn.__init__ if isinstance(fn, type) else fn  # type: ignore[misc]
    params = inspect.signature(target).parameters
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    named = {name: p for name, p in params.items() if p.kind not in kinds}
    if isinstance(fn, type):
        named.pop(next(iter(params)), None)  # self
    return named


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The builder's type hints, resolved one by one: a hint that names what its module imports only
    for type checkers (a fact's type, usually) stays unresolved and is left out."""
    target = fn.__init__ if isinstance(fn, type) else fn  # type: ignore[misc]
    try:
        return typing.get_type_hints(target)
    except (NameError, TypeError):
        pass
    hints = {}
    namespace = getattr(inspect.unwrap(target), "__globals__", {})
    for name, param in inspect.signature(target).parameters.items():
        hint = param.annotation
        if isinstance(hint, str):  # the builder's own annotation, from the source of its module
            try:
                hint = eval(hint, dict(namespace))  # noqa: S307
            except Exception:  # noqa: BLE001 - an unresolvable hint is left out
                continue
        if hint is not inspect.Parameter.empty:
            hints[name] = hint
    return hints


_ARG_LINE = re.compile(r"^(\w+)(?: \([^)]*\))?:\s*(.*)$")


def _arg_help(*sources: Any) -> dict[str, str]:
    """Each argument's description in the ``Args:`` section of the sources' docstrings (first wins)."""
    helps: dict[str, str] = {}
    for source in sources:
        for doc in (inspect.getdoc(source), inspect.getdoc(getattr(source, "__init__", None))):
            if not doc or "Args:" not in doc:
                continue
            current = None
            for line in doc.split("Args:", 1)[1].splitlines()[1:]:
                indent = len(line) - len(line.lstrip())
                if line.strip() and indent == 0:
                    break  # the next section
                match = _ARG_LINE.match(line.strip())
                if match and indent <= 4:
                    current = match.group(1) if match.group(1) not in helps else None
                    if current is not None:
                        helps[current] = match.group(2).strip()
                elif current is not None and line.strip():
                    helps[current] = f"{helps[current]} {line.strip()}"
    return helps


def add_kind(kind: str) -> None:
    """Allow ``kind`` as a kind of part (a no-op where it is one already).

    Raises:
        ValueError: ``kind`` is not a lowercase name such as ``"sampler"``.
    """
    if not (isinstance(kind, str) and _NAME.match(kind)):
        raise ValueError(f"expected kind to be a lowercase name such as 'sampler', got {kind!r}")
    if kind not in KINDS:
        KINDS.append(kind)


def _check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise ValueError(f"expected kind to be one of {', '.join(KINDS)}, got {kind!r}; add_kind adds one")
    return kind  # type: ignore[return-value]


def _allowed(requires: Mapping[str, Any] | None) -> dict[str, tuple[Any, ...]]:
    out = {}
    for key, value in (requires or {}).items():
        if not isinstance(key, str):
            raise TypeError(f"expected requires to map names to allowed values, got key {key!r}")
        out[key] = tuple(value) if isinstance(value, (tuple, list, set, frozenset)) else (value,)
    return out


def register(
    kind: str,
    name: str,
    *,
    build: Callable[..., Any] | None = None,
    requires: Mapping[str, Any] | None = None,
    provides: Mapping[str, Any] | None = None,
) -> Callable[[T], T]:
    """A decorator that registers the class or function below it as the part ``name`` of ``kind``.

    Args:
        kind: one of [`KINDS`][genvae.registry.KINDS].
        name: a lowercase name, words joined by dashes (``"logistic-mixture"``), unique within ``kind``.
        build: what builds the part from facts and options, where the decorated class is not
            built from them directly (a likelihood whose options map onto several arguments).
        requires: run facts or choices the part needs, each with the value or tuple of values it
            allows, e.g. ``{"layers": 1}`` or ``{"conditional": False}``.
        provides: facts the part brings to a run, e.g. ``{"conditional": True}``.

    Returns:
        The decorator, which returns what it decorates unchanged.

    Raises:
        ValueError: an unknown kind, a malformed name, or a name taken by another part of the kind.
    """
    _check_kind(kind)
    if not (isinstance(name, str) and _NAME.match(name)):
        raise ValueError(f"expected name to be a lowercase name such as 'logistic-mixture', got {name!r}")
    if build is not None and not callable(build):
        raise TypeError(f"expected build to be a callable, got {build!r}")
    allowed = _allowed(requires)
    brings = dict(provides or {})

    def decorate(obj: T) -> T:
        if not callable(obj):
            raise TypeError(f"expected @register({kind!r}, {name!r}) on a class or function, got {obj!r}")
        new = Entry(kind, name, obj, build or obj, allowed, brings)  # type: ignore[arg-type]
        old = _REGISTRY.setdefault(kind, {}).get(name)
        if old is not None and _qualified(old.obj) != _qualified(obj):
            raise ValueError(
                f"expected a new name for {_qualified(obj)}, got {kind} {name!r}, which is "
                f"{_qualified(old.obj)} already"
            )
        _REGISTRY[kind][name] = new  # the same definition again (a reloaded module) replaces itself
        _BY_OBJECT[id(obj)] = new
        return obj

    return decorate


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def names(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind``, in the order they were registered."""
    _check_kind(kind)
    return tuple(_REGISTRY.get(kind, {}))


def entries(kind: str) -> tuple[Entry, ...]:
    """The entries of ``kind``, in the order they were registered."""
    _check_kind(kind)
    return tuple(_REGISTRY.get(kind, {}).values())


def entry(kind: str, name: str) -> Entry:
    """The part ``name`` of ``kind``.

    Raises:
        ValueError: no such kind, or no part of that name (the message lists the names).
    """
    _check_kind(kind)
    found = _REGISTRY.get(kind, {}).get(name)
    if found is None:
        raise ValueError(f"expected {kind} to be one of {', '.join(names(kind))}, got {name!r}")
    return found


def entry_of(obj: Any) -> Entry | None:
    """The entry whose decorated class or function is ``obj``, else None."""
    found = _BY_OBJECT.get(id(obj))
    return found if found is not None and found.obj is obj else None


def build(part: Entry, facts: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
    """Build ``part``: its fact parameters from ``facts`` (read only where the builder takes them, so
    ``facts`` may compute them on demand), its options from ``options``, the rest by default.

    Raises:
        ValueError: an option the part does not have, a required option or fact missing, or a
            value the part refuses (the message names the part and the option).
    """
    params = _parameters(part.build)
    unknown = [name for name in options if name not in params or name in FACTS]
    if unknown:
        part.option(unknown[0])  # raises, listing the options
    kwargs = {}
    for name, param in params.items():
        if name in FACTS and name not in options:
            if name in facts:
                kwargs[name] = facts[name]
            elif param.default is inspect.Parameter.empty:
                raise ValueError(f"{part.kind} {part.name!r} needs the run fact {name!r}, which this run lacks")
        elif name in options:
            kwargs[name] = options[name]
        elif param.default is inspect.Parameter.empty:
            raise ValueError(f"{part.kind} {part.name!r} needs its option {name!r}; none was given")
    try:
        return part.build(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{part.kind} {part.name!r}: {err}") from err


def check(chosen: Sequence[Entry], run: Mapping[str, Any]) -> None:
    """Check the requirements of the ``chosen`` parts against the ``run``'s choices and facts and
    what the chosen parts provide; a requirement on something ``run`` does not know yet is skipped.

    Raises:
        ValueError: the first requirement not met, naming the part, what it needs and what came.
    """
    known = dict(run)
    source = {}
    for part in chosen:
        for key, value in part.provides.items():
            if key not in known:
                known[key], source[key] = value, f" from {part.kind} {part.name!r}"
    for part in chosen:
        for key, allowed in part.requires.items():
            if key in known and known[key] not in allowed:
                wanted = " or ".join(repr(a) for a in allowed)
                raise ValueError(
                    f"{part.kind} {part.name!r} needs {key} {wanted}, got {known[key]!r}{source.get(key, '')}"
                )
