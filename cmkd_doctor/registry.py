"""Registries: a name picks an implementation, and an unknown name lists the valid ones.

Distances, normalisations, estimators, teacher modes, fills, datasets and experiments
are each one :class:`Registry`. Code looks implementations up by name; nothing
dispatches on names with if/else, and a name that is not registered is an error, never
a silent default.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from cmkd_doctor.errors import unknown_name

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered implementation and the sentence that describes it."""

    name: str
    value: T
    description: str


class Registry(Generic[T]):
    """Names -> implementations, in registration order.

    Parameters
    ----------
    option
        The option (or phrase) that names an entry, for the error message: ``dist``
        gives ``--dist must be one of mse, l1, kl; got 'l2'``.
    """

    def __init__(self, option: str):
        self.option = option
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, description: str) -> T:
        """Register ``value`` under ``name``; returns it (usable as a decorator's body)."""
        if name in self._entries:
            raise ValueError(f"{self.option}: {name!r} is registered twice")
        self._entries[name] = Entry(name, value, description)
        return value

    def register(self, name: str, description: str):
        """Decorator form of :meth:`add` for functions."""
        def decorate(value: T) -> T:
            return self.add(name, value, description)
        return decorate

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise unknown_name(self.option, self._entries, name) from None

    def __getitem__(self, name: str) -> T:
        """The implementation registered as ``name``; an unknown name raises
        :class:`~cmkd_doctor.errors.InputError` listing the valid ones."""
        return self.entry(name).value

    def check(self, name: str) -> str:
        """``name`` when it is registered, else the same error as a lookup."""
        self.entry(name)
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
        return [e.value for e in self._entries.values()]

    def describe(self, sep: str = "; ") -> str:
        """``name: description`` for every entry, for help texts."""
        return sep.join(f"{e.name}: {e.description}" for e in self._entries.values())
