"""Package attributes imported on first use (PEP 562 module `__getattr__`).

A package's `__init__` that imported every submodule made `import cat_models.piti.config`
(a dataclass) load the networks, diffusers and torch; validating a study needs only such
light modules. A lazy package lists what it exports, by submodule, and imports a submodule
when one of its names is first read: `from cat_models.piti import PitiModel` still works.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """`__getattr__`, `__dir__` and `__all__` of `package`, which exports `exports`
    ({submodule: names}); a name is imported from its submodule when first read."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(where[name]), name)
        setattr(sys.modules[package], name, value)    # read once; later reads are plain
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__, sorted(where)
