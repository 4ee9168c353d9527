"""Folder registries: a package whose modules each define one thing (an algorithm), found by file name.

``Registry("online algorithm", "rlvla.algos.online", shared={"pg", "explore"})``; :meth:`Registry.discover` (called
by the package's ``__init__``) imports every other module of the package, each registering under its ``Config.name``. :meth:`Registry.register` adds one from
elsewhere (anything with the same attributes, e.g. a test's toy algorithm).
"""

from __future__ import annotations

import importlib
import pkgutil


class Registry:
    def __init__(self, kind: str, package: str, shared: set[str]) -> None:
        self.kind, self.package, self.shared = kind, package, set(shared)
        self.modules: dict = {}
        self.configs: dict[str, type] = {}

    def discover(self) -> None:
        path = importlib.import_module(self.package).__path__
        for name in sorted(m.name for m in pkgutil.iter_modules(path) if m.name not in self.shared):
            self.register(importlib.import_module(f"{self.package}.{name}"))

    def register(self, module) -> None:
        name = module.Config.name
        if name in self.modules and self.modules[name] is not module:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self.modules[name] = module
        self.configs[name] = module.Config

    def get(self, name: str):
        if name not in self.modules:
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self.modules))}")
        return self.modules[name]
