"""A small registry per slot: short names in YAML, an error listing the known ones otherwise."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

from zlora.config import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, slot: str):
        self.slot = slot
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.slot} '{name}' registered twice")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(f"unknown {self.slot} '{name}'; known: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) in registration order."""
        return list(self._items.items())

    def __contains__(self, name: str) -> bool:
        return name in self._items


class ModuleRegistry(Registry[T]):
    """A Registry whose entries register themselves where they are defined: before it is first
    read it imports ``modules`` (each a module, or a package and every module in it), so adding an
    entry means adding (or editing) only its own module. Unknown names are a ConfigError."""

    def __init__(self, slot: str, modules: tuple[str, ...]):
        super().__init__(slot)
        self._modules, self._loaded = modules, False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True       # first: a module imported here may itself read the registry
        try:
            for name in self._modules:
                mod = importlib.import_module(name)
                for sub in pkgutil.iter_modules(getattr(mod, "__path__", [])):
                    if not sub.name.startswith("_"):
                        importlib.import_module(f"{name}.{sub.name}")
        except BaseException:
            self._loaded = False
            raise

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise ConfigError(f"unknown {self.slot} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return super().names()

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return super().items()

    def __contains__(self, name: str) -> bool:
        self._load()
        return super().__contains__(name)

    def unregister(self, name: str) -> None:
        """Remove an entry (one a test or a plug-in registered, when it is done with it)."""
        self._items.pop(name, None)
