"""The study schema's `search` section: what a study sweeps and how Ray Tune searches it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.schema_base import Strict
from harness.schema_piti import PITI_SEARCHABLE
from harness.schema_training import SEARCHABLE


class Grid(Strict):
    grid: list[Any] = Field(min_length=1)


class Choice(Strict):
    choice: list[Any] = Field(min_length=1)


def _ordered(low: float, high: float, positive: bool = False) -> None:
    if low > high:
        raise ValueError(f"range [{low}, {high}]: low exceeds high")
    if positive and low <= 0:
        raise ValueError(f"loguniform range [{low}, {high}]: bounds must be > 0")


class _Range(Strict):
    """A range `[low, high]` under the subclass's one key; low must not exceed high."""

    @model_validator(mode="after")
    def _order(self) -> _Range:
        low, high = next(iter(self.model_dump().values()))
        _ordered(low, high, positive=isinstance(self, LogUniform))
        return self


class IntRange(_Range):
    int: tuple[int, int]


class FloatRange(_Range):
    float: tuple[float, float]


class LogUniform(_Range):
    loguniform: tuple[float, float]


SpaceValue = Grid | Choice | IntRange | FloatRange | LogUniform | int | float | str | bool



class SchedulerSpec(Strict):
    type: Literal["asha"] = "asha"
    grace_period: Annotated[int, Field(gt=0)] = 1
    reduction_factor: Annotated[float, Field(gt=1)] = 2.0


class SearchSpec(Strict):
    algorithm: Literal["grid", "optuna", "random"] = "grid"
    num_samples: Annotated[int, Field(gt=0)] = 1
    metric: Literal["fid", "kid", "miou"] = "fid"
    mode: Literal["min", "max"] | None = None   # default: min for fid/kid, max for miou
    space: dict[str, SpaceValue] = Field(default_factory=dict)
    scheduler: SchedulerSpec | None = None

    @field_validator("space", mode="before")
    @classmethod
    def _one_kind_each(cls, v: Any) -> Any:
        kinds = {"grid", "choice", "int", "float", "loguniform"}
        for key, spec in (v or {}).items() if isinstance(v, dict) else ():
            if isinstance(spec, dict) and (len(spec) != 1 or not set(spec) <= kinds):
                raise ValueError(f"{key}: expected a fixed value or a mapping with one of "
                                 f"{sorted(kinds)}, got keys {sorted(spec)}")
        return v

    @field_validator("space")
    @classmethod
    def _known_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        known = {*SEARCHABLE, *PITI_SEARCHABLE}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"cannot search over {unknown}; searchable: {sorted(known)}")
        return v

    @model_validator(mode="after")
    def _mode_from_metric(self) -> SearchSpec:
        better = "max" if self.metric == "miou" else "min"
        if self.mode is None:
            self.mode = better
        elif self.mode != better:
            raise ValueError(f"mode {self.mode!r} optimises {self.metric} the wrong way; "
                             f"use {better!r} (or leave mode out)")
        return self

    @model_validator(mode="after")
    def _grid_only_with_grid(self) -> SearchSpec:
        ranges = [k for k, s in self.space.items() if isinstance(s, _Range)]
        if self.algorithm == "grid" and ranges:
            raise ValueError(f"ranges {ranges} need algorithm optuna or random, not grid")
        return self
