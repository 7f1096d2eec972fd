"""Model families by name (`Study.model`): each glues one library package to the trials.

One family per study: a study's methods are the recipes of its `model`'s family.
"""

from __future__ import annotations

from harness.families.base import FinetuneJob, ModelFamily
from harness.families.oasis import OasisFamily
from harness.families.piti import PitiFamily

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (OasisFamily(), PitiFamily())}


def family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise KeyError(f"model family {name!r} unknown; choose from {sorted(FAMILIES)}")
    return FAMILIES[name]


__all__ = ["FAMILIES", "FinetuneJob", "ModelFamily", "family"]
