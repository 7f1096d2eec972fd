"""Package attributes imported on first use (PEP 562 module `__getattr__`).

A package's `__init__` that imported every submodule made `import cat_models.piti.config`
(a dataclass) load the networks, diffusers and torch; validating a study needs only such
light modules. A lazy package lists what it exports, by submodule, and imports a submodule
when one of its names is first read: `from cat_models.piti import PitiModel` still works.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any


class _LazyPackage(types.ModuleType):
    """A lazy package whose export may share its submodule's name (`metrics.fid`, the function
    in `metrics/fid.py`): importing the submodule binds it on the package, and the export wins,
    as when the package imported it eagerly (`from cat_models.metrics import fid` is the
    function)."""

    _lazy_where: dict[str, str]

    def __setattr__(self, name: str, value: Any) -> None:
        if (isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}"
                and self.__dict__.get("_lazy_where", {}).get(name) == value.__name__):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """`__getattr__`, `__dir__` and `__all__` of `package`, which exports `exports`
    ({submodule: names}); a name is imported from its submodule when first read."""
    where = {name: module for module, names in exports.items() for name in names}
    module = sys.modules[package]
    if any(f"{package}.{name}" == where[name] for name in where):
        module.__class__ = _LazyPackage
        module._lazy_where = where

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(where[name]), name)
        setattr(sys.modules[package], name, value)    # read once; later reads are plain
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__, sorted(where)
