"""Users' parts: modules imported by name (``--plugin MODULE``) or declared by installed packages
under the entry-point group ``genvae.parts``; their ``@register`` decorators fill the registry.

Only the user decides what is imported: a model file or a run folder names parts, never modules,
and reading one never imports anything.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

__all__ = ["ENTRY_POINT_GROUP", "PluginError", "import_plugins", "installed_plugins", "not_imported"]

ENTRY_POINT_GROUP = "genvae.parts"
"""The entry-point group under which an installed package declares its part modules."""


class PluginError(ValueError):
    """A plugin module that could not be imported; the message names it and says why."""


def import_plugins(modules: list[str] | tuple[str, ...]) -> list[str]:
    """Import each module of ``modules`` (dotted names such as ``"myproject.parts"``), in order.

    Returns:
        The names, as given.

    Raises:
        PluginError: a name that is not a dotted module name, or a module that fails to import
            (the message names it and gives the error's first line).
    """
    from ._checks import error_line

    for name in modules:
        if not (isinstance(name, str) and name and all(word.isidentifier() for word in name.split("."))):
            raise PluginError(f"expected --plugin to name a module such as myproject.parts, got {name!r}")
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any failure of the user's module is one line
            why = "it is not installed or not on sys.path" if isinstance(err, ModuleNotFoundError) else error_line(err)
            raise PluginError(f"could not import plugin {name!r}: {type(err).__name__}: {why}") from None
    return list(modules)


def installed_plugins() -> list[str]:
    """The modules installed packages declare under ``genvae.parts``, imported.

    Raises:
        PluginError: a declared module that fails to import.
    """
    names = sorted({ep.value.split(":")[0] for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})
    return import_plugins(names)


def not_imported(modules: list[str] | tuple[str, ...]) -> list[str]:
    """Those of ``modules`` that are not imported in this process."""
    return [name for name in modules if name not in sys.modules]
