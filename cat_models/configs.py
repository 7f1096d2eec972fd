"""What every model family's frozen config dataclass shares: copies with changes, and a
round trip through plain dicts (checkpoints, study files) that refuses unknown fields."""

from __future__ import annotations

import dataclasses
from typing import Any, Self


class ConfigData:
    """Mixin for frozen dataclasses (`OasisConfig`, `PitiConfig`)."""

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**values)
