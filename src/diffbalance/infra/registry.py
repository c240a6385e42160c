"""Plug-ins by name: one registry shape for data sources, FID feature kinds, rebalancers, classifiers and samplers.

Each kind of plug-in is one `Registry`; an entry is a name, a one-line help, the registered object and the kind's
metadata (a rebalancer's tiny test parameters and sweepable knobs, a classifier's input sizes, ...). A plug-in
registers itself beside its definition:

    SOURCES = Registry("data source", modules=("diffbalance.data.cifar10", ...))
    @SOURCES.register("toy", help="ten flat 8×8 images per class")
    def load_toy(config): ...

    SOURCES.get("toy")              # the loader; an unknown name is a one-line DiffbalanceError listing the names
    SOURCES.entry("toy").meta       # what the kind records beside it
    SOURCES.available()             # sorted names, for --help and error messages
    SOURCES.describe()              # "name: help; …"

The built-in plug-ins are found, not listed: `modules` are imported and `discover` patterns ("package.*.module",
"package.*") searched on the first lookup, never at `import diffbalance`, so a plug-in whose imports are heavy costs
nothing until a command asks for its kind. Adding a built-in is one module in a searched place. From outside the
package a plug-in is one `@REGISTRY.register` in the user's own module, imported before the lookup, or an installed
package's entry point in the registry's `plugins` group (pyproject: [project.entry-points."diffbalance.rebalancers"]
name = "module:attr"), registered lazily: listed by name, imported when first used. `lazy(name, "module:attr", …)`
does the same by hand.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from diffbalance.infra.errors import DiffbalanceError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str  # what configs and the CLI say
    help: str  # one line: what it is and what it is for
    obj: T  # the registered object: a function, a class, a builder
    meta: Mapping[str, Any] = field(default_factory=dict)  # the kind's own facts about it (read-only)

    def __getitem__(self, key: str) -> Any:
        return self.meta[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta.get(key, default)


class Registry(Generic[T]):
    """Names → entries of one kind of plug-in (module docstring)."""

    def __init__(self, kind: str, *, modules: tuple[str, ...] = (), discover: tuple[str, ...] = (),
                 plugins: str | None = None, hint: str = "") -> None:
        self.kind = kind  # "data source", "rebalancer", ...: the noun in messages
        self.modules = modules  # imported on the first lookup (the built-ins)
        self.discover = discover  # "pkg.*.mod" / "pkg.*": every matching module imported on the first lookup
        self.plugins = plugins  # an entry-point group installed packages add plug-ins to (name = "module:attr")
        self.hint = hint  # appended to the unknown-name fix, e.g. "or timm/<model> for any timm model"
        self._entries: dict[str, Entry[T]] = {}
        self._lazy: dict[str, tuple[str, str, dict[str, Any]]] = {}  # name → ("module:attr", help, meta)
        self._resolvers: list[tuple[str, Callable[[str], Entry[T] | None]]] = []
        self._loaded = False

    # --- registering -----------------------------------------------------------------------------------------------
    def register(self, name: str | None = None, *, help: str | None = None,
                 **meta: Any) -> Callable[[T], T]:
        """Decorator: register the object as `name` (default: its `name` attribute) with `help` (default: the first
        line of its docstring) and the kind's metadata; the object comes back unchanged."""

        def register(obj: T) -> T:
            self.add(name or getattr(obj, "name"), obj, help=help, **meta)
            return obj

        return register

    def add(self, name: str, obj: T, *, help: str | None = None, **meta: Any) -> Entry[T]:
        """Register `obj` as `name`. The same definition imported twice is fine; another one under a taken name is
        an error naming both (a plug-in must not silently replace a built-in)."""
        text = help if help is not None else _first_line(obj)
        if not text or "\n" in text:
            raise ValueError(f"the help of {self.kind} {name!r} must be one non-empty line")
        taken = self._entries.get(name)
        if taken is not None and _where(taken.obj) != _where(obj):
            raise ValueError(f"{self.kind} {name!r} is registered twice ({_where(taken.obj)}, {_where(obj)})")
        entry = Entry(name, text, obj, MappingProxyType(dict(meta)))
        self._entries[name] = entry
        return entry

    def lazy(self, name: str, target: str, *, help: str, **meta: Any) -> None:
        """Register `name` as "module:attr" without importing it: the module is imported when the entry is first
        looked up (its help and metadata are known before). The module may register the name itself, too."""
        if ":" not in target:
            raise ValueError(f"the target of {self.kind} {name!r} must be 'module:attr', got {target!r}")
        if "\n" in help:
            raise ValueError(f"the help of {self.kind} {name!r} must be one non-empty line")
        self._lazy[name] = (target, help, dict(meta))

    def resolver(self, prefix: str, resolve: Callable[[str], Entry[T] | None]) -> None:
        """Names starting with `prefix` (an open family such as "timm/<model>") are resolved on demand by
        `resolve(name)`, which returns the entry or None for a name it does not know."""
        self._resolvers.append((prefix, resolve))

    def remove(self, name: str) -> None:
        """Unregister `name` (tests that register a plug-in of their own clean up with it)."""
        self._entries.pop(name, None)
        self._lazy.pop(name, None)

    # --- looking up ------------------------------------------------------------------------------------------------
    def available(self) -> list[str]:
        """The registered names, sorted (families served by a resolver are named by `describe`)."""
        self._load()
        return sorted({*self._entries, *self._lazy})

    def entries(self) -> Iterator[Entry[T]]:
        return (self._entries[name] for name in self.available())

    def entry(self, name: str, where: str = "") -> Entry[T]:
        """The entry of `name`; an unknown name is a one-line error listing the registered ones (naming the config
        key `where` when given)."""
        self._load()
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            target, text, meta = self._lazy.pop(name)
            module, _, attr = target.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            return self._entries[name] if name in self._entries else self.add(name, obj, help=text, **meta)
        for prefix, resolve in self._resolvers:
            if name.startswith(prefix):
                found = resolve(name)
                if found is not None:
                    return found
        raise DiffbalanceError(f"unknown {self.kind} {name!r}{where and ' at ' + where}",
                               f"use one of {', '.join(self.available())}{self.hint and ' ' + self.hint}")

    def get(self, name: str) -> T:
        """The registered object of `name`."""
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries or name in self._lazy

    def select(self, **meta: Any) -> list[str]:
        """The names whose metadata has every given value, e.g. `select(generative=True)`."""
        return [e.name for e in self.entries() if all(e.get(k) == v for k, v in meta.items())]

    def describe(self) -> str:
        """"name: help; …" for a command's --help (lazy entries stay unimported)."""
        return "; ".join(f"{name}: {self._entries[name].help if name in self._entries else self._lazy[name][1]}"
                         for name in self.available())

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: a module being imported may look itself up
        for module in self.modules:
            importlib.import_module(module)
        for pattern in self.discover:
            for module in _matching(pattern):
                importlib.import_module(module)
        if self.plugins:
            for point in importlib.metadata.entry_points(group=self.plugins):
                if point.name not in self._entries:
                    package = point.dist.name if point.dist is not None else point.module
                    self.lazy(point.name, point.value, help=f"a plug-in from {package}")


def _matching(pattern: str) -> list[str]:
    """The modules `pattern` names: "pkg.*" every module of pkg, "pkg.*.mod" module `mod` in every folder of pkg
    (a folder holding only mod.py counts) — found on disk, so nothing but `pkg` is imported to find them."""
    package, _, rest = pattern.partition(".*")
    paths = [Path(p) for p in importlib.import_module(package).__path__]
    if not rest:
        return sorted(f"{package}.{info.name}" for info in pkgutil.iter_modules(map(str, paths)) if not info.ispkg)
    sub = rest.lstrip(".")
    return sorted({f"{package}.{d.name}.{sub}" for p in paths for d in p.iterdir()
                   if d.is_dir() and d.name.isidentifier() and (d / f"{sub}.py").is_file()})


def _first_line(obj: Any) -> str:
    """The first paragraph of `obj`'s docstring as one line."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n", 1)[0].split())


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
