"""A ten-line registry: names to factories, duplicates refused, unknown names explained."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from tunevision.core.errors import TunevisionError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = fn
            return fn
        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise TunevisionError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
