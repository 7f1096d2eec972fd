"""Study -> Ray Tune: the search space, the search algorithm, the scheduler, the resources.

The study's comparison axes (method, target-set size, seed) and any `grid` entries of
`search.space` become `tune.grid_search`; ranges become Tune distributions. With Optuna or random
search, categorical axes that list several values become `tune.choice` so the searcher explores
them too (Optuna cannot take a grid).
"""

from __future__ import annotations

from typing import Any

from harness.config import (
    Choice,
    FloatRange,
    Grid,
    IntRange,
    LogUniform,
    Study,
)

COMPARISON_AXES = ("method", "target_size", "seed")
# CPU reserved for the Tune driver of a multi-worker trial (Ray rejects 0); its workers are
# scheduled by Ray Train on top.
DRIVER_CPU = 0.01


def _categorical(values: list[Any], algorithm: str) -> Any:
    if len(values) == 1:
        return values[0]
    if algorithm == "grid":
        return {"grid_search": list(values)}  # tune.grid_search's value, without importing Ray
    from ray import tune  # here, not at the top: a dry run plans without importing Ray

    return tune.choice(values)


def _space_value(spec: Any, algorithm: str) -> Any:
    if isinstance(spec, Grid):
        return _categorical(spec.grid, algorithm)
    if not isinstance(spec, Choice | IntRange | FloatRange | LogUniform):
        return spec  # a fixed value
    from ray import tune

    if isinstance(spec, Choice):
        return tune.choice(spec.choice)
    if isinstance(spec, IntRange):
        return tune.randint(spec.int[0], spec.int[1] + 1)  # inclusive upper bound in YAML
    if isinstance(spec, FloatRange):
        return tune.uniform(*spec.float)
    return tune.loguniform(*spec.loguniform)


def comparison_space(study: Study) -> dict[str, Any]:
    """The comparison axes of the Tune param space (method, target size, seed)."""
    algo = study.search.algorithm
    return {"method": _categorical([m.label for m in study.methods], algo),
            "target_size": _categorical(list(study.target_sizes), algo),
            "seed": _categorical(list(study.seeds), algo)}


def param_space(study: Study) -> dict[str, Any]:
    """The Tune param space: comparison axes + swept training keys + fixed training keys."""
    space = comparison_space(study)
    for key, spec in study.search.space.items():
        space[key] = _space_value(spec, study.search.algorithm)
    return space


def swept_axes(study: Study) -> list[str]:
    """Names of the keys that vary across trials (the analysis groups by these)."""
    axes = [a for a, n in (("method", len(study.methods)),
                           ("target_size", len(study.target_sizes)),
                           ("seed", len(study.seeds))) if n > 1 or a == "method"]
    for key, spec in study.search.space.items():
        fixed = isinstance(spec, int | float | str | bool)
        if not fixed and not (isinstance(spec, Grid) and len(spec.grid) == 1):
            axes.append(key)
    return axes


def grid_size(study: Study) -> int:
    """Trials a grid study will run (num_samples repeats the whole grid)."""
    n = len(study.methods) * len(study.target_sizes) * len(study.seeds)
    for spec in study.search.space.values():
        if isinstance(spec, Grid):
            n *= len(spec.grid)
    return n * study.search.num_samples


def search_algorithm(study: Study):
    """OptunaSearch (TPE) for `optuna`, Tune's default variant generator otherwise."""
    if study.search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=study.search.metric, mode=study.search.mode,
                            seed=study.seeds[0])
    return None


def scheduler(study: Study):
    spec = study.search.scheduler
    if spec is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # metric and mode come from TuneConfig (Ray refuses them twice)
    return ASHAScheduler(
        time_attr="iteration", max_t=study.training.iterations, grace_period=spec.grace_period,
        reduction_factor=spec.reduction_factor,
    )


def total_trial_demand(study: Study) -> dict[str, float]:
    """CPUs/GPUs one trial occupies in the cluster, workers included."""
    r = study.resources
    return {"CPU": r.workers_per_trial * r.cpus_per_worker + (DRIVER_CPU
                                                              if r.workers_per_trial > 1
                                                              else 0.0),
            "GPU": r.workers_per_trial * r.gpus_per_worker}


def max_concurrency(study: Study, cluster: dict[str, float]) -> int:
    """Concurrent trials: the study's limit, capped by what the cluster holds."""
    demand = total_trial_demand(study)
    fits = int(cluster.get("CPU", 1) // max(demand["CPU"], 1e-9))
    if demand["GPU"]:
        fits = min(fits, int(cluster.get("GPU", 0) // demand["GPU"]))
    limit = study.resources.max_concurrent_trials
    return max(1, min(fits, limit) if limit else fits)
