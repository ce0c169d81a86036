"""Named, listable components (recipes, detectors, backbones, ...), after timm's registry.

RECIPES = Registry("recipe")

@RECIPES.register("light", help="flips and mild colour")
def light() -> A.Compose: ...

RECIPES.get("light")  # the factory; RECIPES.names("l*") lists matches
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    help: str


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def decorator(factory: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = help or (getattr(factory, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, factory, doc)
            return factory

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name].factory
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
