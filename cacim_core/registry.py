"""One registry helper for everything built by name (quantizers, noise models, models, experiments).

Like mmengine's `Registry` and timm's `register_model`, but small: `reg.register("name")` is a decorator,
`reg.get("name")` returns what was registered, `reg.build("name", **kw)` calls it, and an unknown name is
an error that lists the known ones.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object (a class or a factory function) for one kind of thing."""

    def __init__(self, kind: str, check: Callable[[Any], None] | None = None) -> None:
        self.kind = kind
        self._check = check
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator; without a name, the function's or class's own `__name__` is used (as timm does)."""

        def wrap(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if self._check is not None:
                self._check(obj)
            if key in self._items and self._items[key] is not obj:
                old = self._items[key]
                if getattr(old, "__qualname__", None) != getattr(obj, "__qualname__", None) or getattr(
                    old, "__module__", None
                ) != getattr(obj, "__module__", None):
                    raise ValueError(f"{self.kind} name {key!r} is taken by {old!r}; pick another")
            self._items[key] = obj  # the same definition imported again (a reloaded plugin) replaces itself
            return obj

        return wrap

    def get(self, name: str) -> T:
        if name not in self._items:
            load_installed_plugins()  # a pip-installed plugin package registers on first need
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._items[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        load_installed_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            load_installed_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


#: The entry-point group a pip-installed plugin package declares, e.g. in its pyproject.toml:
#: [project.entry-points."cacim.plugins"] mine = "my_package.quantizers" (a module its decorators run in).
ENTRY_POINT_GROUP = "cacim.plugins"
_INSTALLED: dict[str, ModuleType] = {}
_SCANNED = False


def load_installed_plugins(rescan: bool = False) -> dict[str, ModuleType]:
    """Import every module that an installed package exposes in `cacim.plugins`, so its quantizers, models
    and experiments are found without `--plugin`. The environment is scanned once per process (`rescan`
    after installing one mid-process). One-line ImportError naming the package for one that fails."""
    global _SCANNED
    if _SCANNED and not rescan:
        return dict(_INSTALLED)
    _SCANNED = True  # before importing: a plugin that asks a registry for names must not rescan
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value in _INSTALLED:
            continue
        owner = ep.dist.name if ep.dist is not None else "unknown"
        try:
            _INSTALLED[ep.value] = importlib.import_module(ep.module)
        except Exception as exc:
            raise ImportError(
                f"cannot load installed plugin {ep.name} = {ep.value} (package {owner}, entry-point group "
                f"{ENTRY_POINT_GROUP}): {_failure(exc)}; fix or uninstall that package"
            ) from exc
    return dict(_INSTALLED)


def load_plugin(name: str) -> ModuleType:
    """Import a user module by name (the working directory is importable) or by .py file path: its
    decorators register what it defines. One-line ImportError: a plugin not found names the two accepted
    forms; one that fails while it runs (a SyntaxError, any exception) names the error and its line."""
    path = Path(name)
    by_file = name.endswith(".py") or path.is_file()
    if by_file and not path.is_file():
        raise ImportError(
            f"cannot import plugin {name!r} (no such file {name}): pass a module name or a .py file"
        )
    try:
        if by_file:
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[path.stem] = module
            try:
                spec.loader.exec_module(module)  # type: ignore[union-attr]
            except BaseException:
                del sys.modules[path.stem]  # a half-run module must not be found by a later import
                raise
            return module
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if not by_file and exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise ImportError(
                f"cannot import plugin {name!r} ({exc}): pass a module name or a .py file"
            ) from exc
        raise ImportError(f"cannot load plugin {name}: {_failure(exc)}; fix the file") from exc
    except SyntaxError as exc:
        where = "" if exc.filename and Path(exc.filename).name == path.name else f"{exc.filename} "
        message = f"SyntaxError at {where}line {exc.lineno}: {exc.msg}"
        raise ImportError(f"cannot load plugin {name}: {message}; fix the file") from exc
    except Exception as exc:
        raise ImportError(f"cannot load plugin {name}: {_failure(exc)}; fix the file") from exc


def _failure(exc: BaseException) -> str:
    """`Type: message` on one line (the message's whitespace, newlines included, collapsed)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
