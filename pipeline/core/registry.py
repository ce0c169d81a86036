"""Named, listable components (recipes, detectors, backbones, ...), after timm's registry.

RECIPES = Registry("recipe")

@RECIPES.register("light", help="flips and mild colour")
def light() -> A.Compose: ...

RECIPES.get("light")  # the factory; RECIPES.names("l*") lists matches

An entry can be the default of a domain (``default_for=("faces",)``): a params value
``auto`` then resolves to it (``RECIPES.resolve("auto", "objects")``), so the top-level
``domain`` picks each stage's component without any branch on the domain in a stage.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
AUTO = "auto"  # a params value meaning "the default of the current domain"


class UnknownNameError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    help: str
    default_for: tuple[str, ...] = ()  # the domains whose `auto` means this entry


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, help: str = "", default_for: tuple[str, ...] = ()
    ) -> Callable[[T], T]:
        def decorator(factory: T) -> T:
            if name in self._entries or name == AUTO:
                raise ValueError(f"{self.kind} {name!r} is registered twice or reserved")
            taken = [d for d in default_for if self.default_name(d) is not None]
            if taken:
                raise ValueError(f"{self.kind} {name!r}: {taken[0]!r} already has a default")
            doc = help or (getattr(factory, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, factory, doc, tuple(default_for))
            return factory

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name].factory
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def default_name(self, domain: str) -> str | None:
        """The entry registered as ``domain``'s default, or None."""
        return next((e.name for e in self._entries.values() if domain in e.default_for), None)

    def resolve(self, name: str, domain: str) -> str:
        """``name`` itself, or for ``auto`` the default of ``domain``; unknown names fail."""
        if name == AUTO:
            chosen = self.default_name(domain)
            if chosen is None:
                raise UnknownNameError(f"no {self.kind} is the default for domain {domain!r}")
            return chosen
        self.get(name)  # an unknown name fails here, listing the known ones
        return name

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
