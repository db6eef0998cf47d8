"""A small name -> builder registry shared by encoders and fusion strategies (timm-style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from ._errors import InputError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    builder: Callable[..., T]
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps names to builders; an unknown name fails with the list of valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name].builder is not builder:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, builder, dict(meta))
            return builder

        return decorator

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            valid = ", ".join(sorted(self._entries)) or "(none)"
            raise InputError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        return self.entry(name).builder(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
