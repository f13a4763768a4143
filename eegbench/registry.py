"""Name → object registries filled by plugins.

Entries may be objects or lazy ``"package.module:attr"`` strings, materialised on first
:meth:`Registry.get`, so listing never imports torch-heavy plugin code.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eegbench.errors import PluginError


@dataclass
class Entry:
    """One registered name.

    Parameters
    ----------
    name : str
    target : object or str
        The object, or a lazy ``"module:attr"`` reference.
    plugin : str
        Name of the plugin that registered it.
    summary : str
        One-line description shown by ``eegbench ls``.
    """

    name: str
    target: Any
    plugin: str
    summary: str = ""


class Registry:
    """A named collection of methods, datasets, settings, metrics or backbones.

    Parameters
    ----------
    kind : str
        What the registry holds (``"method"``, ``"dataset"``, ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._current_plugin = "?"

    def add(self, name: str, target: Any, *, summary: str = "") -> None:
        """Register ``target`` under ``name``.

        Raises
        ------
        PluginError
            If ``name`` is empty, contains whitespace, or is already registered (the message names
            both plugins).
        """
        if not name or any(c.isspace() for c in name):
            raise PluginError(f"{self.kind} name {name!r} from plugin {self._current_plugin!r} is invalid")
        if name in self._entries:
            prev = self._entries[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} registered twice: by plugin {prev!r} and by plugin {self._current_plugin!r}"
            )
        self._entries[name] = Entry(name, target, self._current_plugin, summary)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        """Entries in name order."""
        return (self._entries[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> Entry:
        """The :class:`Entry` for ``name``.

        Raises
        ------
        PluginError
            Unknown name; the message suggests close matches and lists what is available.
        """
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise PluginError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names()) or '(none)'}"
            )
        return self._entries[name]

    def get(self, name: str) -> Any:
        """The registered object, importing a lazy ``"module:attr"`` reference on first use.

        Raises
        ------
        PluginError
            Unknown name, or the lazy reference cannot be imported (names the plugin).
        """
        entry = self.entry(name)
        if isinstance(entry.target, str) and ":" in entry.target:
            module, _, attr = entry.target.partition(":")
            try:
                obj = importlib.import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                raise PluginError(
                    f"{self.kind} {name!r} from plugin {entry.plugin!r}: cannot import {entry.target} ({exc})"
                ) from exc
            entry.target = obj
        return entry.target
