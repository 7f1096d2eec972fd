"""What a registry module registers, read from its source without importing it.

The recipe and estimator registries fill themselves when their module is imported, and those
modules import torch. A study names recipes, their options and estimators, and validating it
should not load torch: these functions read the same facts (the decorated functions and
their signatures) from the module's source with `ast`. Once the module is imported, the live
registry says the same (tests/harness/test_imports.py pins that both agree).
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=32)
def module_tree(module: str) -> ast.Module:
    """The parsed source of `module` (found, not imported; its packages' `__init__` runs)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{module}: no source to read its registrations from")
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8"), filename=spec.origin)


def _decorator_name(node: ast.expr) -> tuple[str, ast.expr] | None:
    """(decorator, first argument) of `@deco("name")` or `@obj.deco("name")`."""
    if not (isinstance(node, ast.Call) and node.args):
        return None
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return None if name is None else (name, node.args[0])


def decorated(module: str, decorator: str) -> dict[str, ast.FunctionDef]:
    """{registered name: function} of every top-level `@<decorator>("name")` in `module`."""
    found = {}
    for node in module_tree(module).body:
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                hit = _decorator_name(deco)
                if hit and hit[0] == decorator and isinstance(hit[1], ast.Constant):
                    found[str(hit[1].value)] = node
    return found


def call_keywords(module: str, callee: str) -> dict[str, object]:
    """The literal keyword arguments of the first top-level call of `callee` in `module`
    (e.g. a registry's constructor: `RecipeRegistry("OASIS", positional=3, ...)`)."""
    for node in ast.walk(module_tree(module)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == callee:
                return {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    raise LookupError(f"{module}: no call of {callee}")


def keyword_parameters(fn: ast.FunctionDef, skip: int) -> list[str]:
    """The positional-or-keyword parameters of `fn` after its first `skip` parameters
    (what `inspect.signature(fn).parameters` lists as POSITIONAL_OR_KEYWORD, in order)."""
    args = fn.args
    return [a.arg for a in args.args[max(0, skip - len(args.posonlyargs)):]]


def assigned_names(module: str, variable: str) -> list[str]:
    """The names held by `variable` in `module`: a dict's keys or a tuple's / list's items.

    The live value once `module` is imported (entries added at run time included); else the
    literal strings of its top-level assignment (`TEXT_BACKENDS = {"sentence": ..., ...}`).
    """
    live = getattr(sys.modules.get(module), variable, None)   # None while it is importing
    if live is not None:
        return [str(k) for k in live]
    return literal_names(module, variable)


def literal_names(module: str, variable: str) -> list[str]:
    """The literal strings of `variable`'s top-level assignment in `module`'s source."""
    for node in module_tree(module).body:
        target = (node.target if isinstance(node, ast.AnnAssign)
                  else node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == variable and node.value is not None:
            items = (node.value.keys if isinstance(node.value, ast.Dict)
                     else getattr(node.value, "elts", None))
            if items is not None:
                return [ast.literal_eval(item) for item in items if item is not None]
    raise LookupError(f"{module}: no literal assignment of {variable}")
