"""Registries: a name picks an implementation, and an unknown name lists the valid ones.

Distances, normalisations, estimators, teacher modes, fills, datasets and experiments
are each one :class:`Registry`. Code looks implementations up by name; nothing
dispatches on names with if/else, and a name that is not registered is an error, never
a silent default.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cmkd_doctor.errors import unknown_name

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered implementation and the sentence that describes it."""

    name: str
    value: T
    description: str


_UNBOUND: Any = object()  # a declared name whose implementation is not loaded yet


class Registry(Generic[T]):
    """Names -> implementations, in registration order.

    A registry whose implementations need heavy imports (torch) is *declared* in a
    light module, names and descriptions only (:meth:`declare`), with the module that
    implements it (``source``); that module binds each name (:meth:`add`) when it is
    imported, which the first lookup of an implementation does. So the help, the option
    checks and the docs read the names without importing torch.

    Parameters
    ----------
    option
        The option (or phrase) that names an entry, for the error message: ``dist``
        gives ``--dist must be one of mse, l1, kl; got 'l2'``.
    source
        The module that binds the declared names' implementations.
    """

    def __init__(self, option: str, source: str | None = None):
        self.option, self.source = option, source
        self._entries: dict[str, Entry[T]] = {}

    def declare(self, name: str, description: str) -> None:
        """Declare ``name`` with its description; :attr:`source` binds its value."""
        if name in self._entries:
            raise ValueError(f"{self.option}: {name!r} is declared twice")
        self._entries[name] = Entry(name, _UNBOUND, description)

    def add(self, name: str, value: T, description: str | None = None) -> T:
        """Register ``value`` under ``name`` (a declared name keeps its description);
        returns it (usable as a decorator's body)."""
        found = self._entries.get(name)
        if found is not None and found.value is not _UNBOUND:
            raise ValueError(f"{self.option}: {name!r} is registered twice")
        if found is None and description is None:
            raise ValueError(f"{self.option}: {name!r} needs a description")
        self._entries[name] = Entry(name, value, description or found.description)
        return value

    def register(self, name: str, description: str | None = None):
        """Decorator form of :meth:`add` for functions."""
        def decorate(value: T) -> T:
            return self.add(name, value, description)
        return decorate

    def entry(self, name: str) -> Entry[T]:
        try:
            found = self._entries[name]
        except (KeyError, TypeError):
            raise unknown_name(self.option, self._entries, name) from None
        if found.value is _UNBOUND and self.source is not None:
            importlib.import_module(self.source)  # binds every declared name
            found = self._entries[name]
        if found.value is _UNBOUND:
            raise LookupError(f"{self.option}: {name!r} is declared but not implemented")
        return found

    def __getitem__(self, name: str) -> T:
        """The implementation registered as ``name``; an unknown name raises
        :class:`~cmkd_doctor.errors.InputError` listing the valid ones."""
        return self.entry(name).value

    def check(self, name: str) -> str:
        """``name`` when it is registered (or declared: nothing is imported), else the
        same error as a lookup."""
        try:
            known = name in self._entries
        except TypeError:  # an unhashable value
            known = False
        if not known:
            raise unknown_name(self.option, self._entries, name)
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def values(self) -> list[T]:
        return [self[name] for name in self._entries]

    def describe(self, sep: str = "; ") -> str:
        """``name: description`` for every entry, for help texts."""
        return sep.join(f"{e.name}: {e.description}" for e in self._entries.values())
