"""What every model family's transfer recipes share: parameter-name predicates, the stage
schedule, and a registry of recipes by name whose options are read from their signatures.

A recipe is a function `recipe(<the family's positional inputs>, *, option=default, ...)`
returning the family's `TransferPlan`; its keyword parameters are the options a study may set
(`RecipeRegistry.options`), so a new recipe is one decorated function and the study schema
learns its name and options from here (`declared_recipes`: the same, read from the recipe
module's source while it is not imported, so validating a study needs no torch).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from cat_models import registered

if TYPE_CHECKING:        # annotations only: a study validates without importing torch
    from torch import nn

NamePredicate = Callable[[str], bool]


def everything(_: str) -> bool:
    return True


def nothing(_: str) -> bool:
    return False


def under(*prefixes: str) -> NamePredicate:
    """Parameters named `prefix` or inside module `prefix`, for any of the prefixes."""
    return lambda name: any(name == p or name.startswith(p + ".") for p in prefixes)


def set_trainable(module: nn.Module, predicate: NamePredicate) -> None:
    for name, p in module.named_parameters():
        p.requires_grad_(predicate(name))


def trainable_names(module: nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.requires_grad}


class HasIters(Protocol):
    iters: int | None


def stage_index(stages: Sequence[HasIters], step: int) -> int:
    """Index of the stage active at `step`: stages run in order, each for `iters` steps
    (None = until the end); past the last one the last stays active."""
    end = 0
    for i, stage in enumerate(stages):
        if stage.iters is None:
            return i
        end += stage.iters
        if step < end:
            return i
    return len(stages) - 1


class RecipeRegistry(dict):
    """{name: recipe} for one model family. `positional` is how many leading parameters
    every recipe of the family takes as inputs (models, class count); the rest are options."""

    def __init__(self, family: str, positional: int, internal: tuple[str, ...] = ()):
        super().__init__()
        self.family, self.positional, self.internal = family, positional, internal

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self[name] = fn
            return fn
        return deco

    def get_recipe(self, name: str) -> Callable[..., Any]:
        if name not in self:
            raise KeyError(f"{self.family} transfer method {name!r} unknown; choose from "
                           f"{sorted(self)}")
        return self[name]

    def options(self, name: str) -> list[str]:
        """The keyword options recipe `name` declares (minus the family's internal ones,
        which its `build_plan` passes itself)."""
        params = list(inspect.signature(self.get_recipe(name)).parameters.values())
        return [p.name for p in params[self.positional:]
                if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in self.internal]


def declared_recipes(module: str, registry: str) -> dict[str, list[str]]:
    """{recipe: options} of the `RecipeRegistry` named `registry` in `module`, as its
    `options` gives them: the live registry once `module` is imported, else read from the
    module's source (its `@register("name")` functions and the registry's `positional` and
    `internal`), which does not import the module and the networks it imports."""
    live = getattr(sys.modules.get(module), registry, None)   # None while it is importing
    if live is not None:
        return {name: live.options(name) for name in live}
    return recipes_in_source(module)


def recipes_in_source(module: str) -> dict[str, list[str]]:
    """{recipe: options} of the `RecipeRegistry` in `module`, read from its source."""
    settings = registered.call_keywords(module, RecipeRegistry.__name__)
    positional = int(settings.get("positional", 0))
    internal = tuple(settings.get("internal", ()))
    return {name: [p for p in registered.keyword_parameters(fn, positional) if p not in internal]
            for name, fn in registered.decorated(module, "register").items()}
