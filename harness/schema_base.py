"""The strict base of every study-schema model (typos are errors, not ignored keys)."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def known_name(value: str, known: Iterable[str], what: str) -> str:
    """`value` when it is one of the registry's `known` names; else the error that lists them."""
    names = list(known)
    if value not in names:
        raise ValueError(f"unknown {what} {value!r}; expected one of {names}")
    return value
