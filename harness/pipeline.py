"""A study from start to end: plan → cached stages → Ray Tune trials → analysis."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cat_models.data import cache_root
from harness import tune as study_tune
from harness.config import Study, StudyError

_LOG_LOCK = threading.Lock()
PROGRESS_INTERVAL_S = 30   # seconds between progress lines when the output is not a terminal


def log(msg: str) -> None:
    """One whole line per message: stages run in threads (the source model trains meanwhile),
    and `print` writes text and newline separately, so lines could interleave."""
    with _LOG_LOCK:
        sys.stdout.write(msg + "\n")
        sys.stdout.flush()


def print_plan(study: Study, study_file: str, out: Path, cache: Path,
               resolved: bool = False) -> None:
    from harness.stages import planned_stages

    log(f"[plan] study {study.name!r} from {study_file} (fingerprint {study.fingerprint()})")
    if resolved:
        import yaml

        text = yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False)
        log("[plan] resolved study (defaults filled in):\n" +
            "\n".join(f"    {line}" for line in text.splitlines()))
    log(f"[plan] outputs: {out}   cache: {cache}")
    for name, cached in planned_stages(study, cache, log=log):
        log(f"[plan]   stage {name:<36} {'cached' if cached else 'will run'}")
    axes = study_tune.swept_axes(study)
    if study.search.algorithm == "grid":
        log(f"[plan] trials: grid of {study_tune.grid_size(study)} over {axes}")
    else:
        log(f"[plan] trials: {study.search.algorithm} search, {study.search.num_samples} "
            f"samples over {axes}")
    declared = {k: v.model_dump() if hasattr(v, "model_dump") else v
                for k, v in study.search.space.items()}
    # the param space's keys and values, the searched ones as declared (their Tune
    # distributions would import Ray)
    for key, value in {**study_tune.comparison_space(study), **declared}.items():
        log(f"[plan]   {key}: {value}")
    r = study.resources
    log(f"[plan] resources per trial: {r.workers_per_trial} worker(s) × "
        f"{r.cpus_per_worker} CPU, {r.gpus_per_worker} GPU; "
        f"max concurrent: {r.max_concurrent_trials or 'what the cluster holds'}")


def planned_subsets(study: Study, cache: Path) -> dict:
    """The few-shot subsets if their stage is cached (so a dry run checks those images)."""
    from harness.cache import StageRunner
    from harness.stages_data import planned_ref, stage_subsets

    runner = StageRunner(cache, lambda _: None, plan=True)
    return stage_subsets(study, planned_ref(study, cache, "target"), cache, "<plan>",
                         runner=runner)


def progress_env(isatty: bool | None = None) -> dict[str, str]:
    """tqdm's settings for this process and the Ray workers (tqdm reads TQDM_* variables).

    On a terminal a bar redraws in place; in a log file (or a Ray job's output) each redraw is
    a line of its own, hundreds per bar: there, a bar writes one line every
    `CAT_PROGRESS_INTERVAL_S` (default 30) seconds, and its last one.
    """
    if isatty is None:
        isatty = sys.stdout.isatty()
    if isatty:
        return {}
    interval = os.environ.get("TQDM_MININTERVAL") or os.environ.get(
        "CAT_PROGRESS_INTERVAL_S", str(PROGRESS_INTERVAL_S))
    return {"TQDM_MININTERVAL": interval}


def write_resolved(study: Study, out: Path, axes: list[str], source_file: str) -> None:
    """OUT/study.yaml: the study with its defaults filled in, the swept axes and its file."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    resolved = study.model_dump(mode="json")
    resolved["axes"] = axes
    resolved["study_file"] = source_file
    (out / "study.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))


def worker_env() -> dict[str, str]:
    """The environment of every Ray worker the harness starts (its `runtime_env`)."""
    from harness import faults

    # Workers find our packages through the repo root on PYTHONPATH (a plain local install
    # makes this a no-op); runtime_env keeps cluster workers' environment the same.
    repo = str(Path(__file__).resolve().parents[1])
    return {"PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "RAY_TRAIN_V2_ENABLED": "1", **progress_env(),
            # one malloc arena: a reused trial process (Tune runs each trial in a new thread)
            # otherwise keeps ~100 MB per finished trial in the old threads' arenas
            # (measured: +100-130 MB per trial, +20 MB with this)
            "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "1"),
            **{k: os.environ[k] for k in faults.ENV_VARS if k in os.environ}}


def init_ray(address: str | None, log_dir: Path) -> dict[str, float]:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    env = {"env_vars": worker_env()}
    if address:
        # A `ray start --head` on this machine turns token authentication on as soon as
        # ~/.ray/auth_token exists; a driver given an address must then present the token.
        if address != "auto" and "RAY_AUTH_MODE" not in os.environ and (
                os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file()):
            os.environ["RAY_AUTH_MODE"] = "token"
        wait_for_address(address)
        ctx = ray.init(address=address, runtime_env=env, log_to_driver=True)
        log(f"[ray] joined cluster at {address}")
    else:
        from harness import ray_session

        ray_session.clean_stale(log)
        ctx = ray.init(include_dashboard=True, dashboard_host="127.0.0.1", runtime_env=env,
                       log_to_driver=True)
    url = getattr(ctx, "dashboard_url", None)
    if url:
        hint = dashboard_token_hint()
        log(f"[ray] dashboard: http://{url}" + (f"  ({hint})" if hint else ""))
    return ray.cluster_resources()


def ray_session_dir() -> str | None:
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return None if node is None else node.get_session_dir_path()


def wait_for_address(address: str) -> None:
    """Fail in bounded time when nothing listens at `address` (`CAT_CONNECT_TIMEOUT_S`, 30 s).

    Ray itself retries an unreachable GCS without limit, printing a time-out every ~40 s.
    """
    import socket

    if address == "auto":
        return                    # Ray finds the local cluster (or says there is none)
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(f"--address {address}: expected host:port, ray://host:port or auto")
    limit = float(os.environ.get("CAT_CONNECT_TIMEOUT_S", "30"))
    deadline = time.monotonic() + limit
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, limit)):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise StudyError(f"--address {address}: no Ray cluster answers at "
                                 f"{host}:{port} after {limit:g} s ({err.strerror or err}); "
                                 "start one (`ray start --head`) or fix the address "
                                 "(CAT_CONNECT_TIMEOUT_S sets the wait)") from None
        time.sleep(1.0)


def dashboard_token_hint() -> str | None:
    """How to get the token the dashboard asks for, when token authentication is on.

    Ray 2.60 turns it on for a local `ray.init()` (it sets RAY_AUTH_MODE=token in this
    process) and keeps the token in $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else
    ~/.ray/auth_token (ray/_private/authentication/authentication_token_setup.py).
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        where = "the value of $RAY_AUTH_TOKEN"
    else:
        where = str(Path(os.environ.get("RAY_AUTH_TOKEN_PATH")
                         or Path.home() / ".ray" / "auth_token"))
    return f"it asks for a token: run `ray get-auth-token`, or copy it from {where}"


def wait_for_resources(study: Study, cluster: dict[str, float]) -> dict[str, float]:
    """On a cluster, give worker nodes that are still joining time to arrive (autoscaling,
    pods starting): poll until one trial fits or `CAT_WAIT_FOR_RESOURCES_S` (300) passes."""
    import ray

    demand = study_tune.total_trial_demand(study)
    deadline = time.monotonic() + float(os.environ.get("CAT_WAIT_FOR_RESOURCES_S", "300"))
    while (demand["GPU"] > cluster.get("GPU", 0) or demand["CPU"] > cluster.get("CPU", 0)) \
            and time.monotonic() < deadline:
        log(f"[ray] waiting for nodes: a trial needs {demand['CPU']:g} CPU / "
            f"{demand['GPU']:g} GPU, the cluster has {cluster.get('CPU', 0):g} / "
            f"{cluster.get('GPU', 0):g}")
        time.sleep(10)
        cluster = ray.cluster_resources()
    return cluster


def check_fits(study: Study, cluster: dict[str, float], origin: str) -> None:
    demand = study_tune.total_trial_demand(study)
    r = study.resources
    if demand["GPU"] > cluster.get("GPU", 0):
        raise StudyError(f"{origin}: resources: one trial needs {demand['GPU']:g} GPU(s) "
                         f"({r.workers_per_trial} workers × {r.gpus_per_worker:g}) but the "
                         f"cluster has {cluster.get('GPU', 0):g}")
    if demand["CPU"] > cluster.get("CPU", 0) + 1e-6:
        raise StudyError(f"{origin}: resources.workers_per_trial: one trial needs "
                         f"{demand['CPU']:g} CPUs ({r.workers_per_trial} workers × "
                         f"{r.cpus_per_worker:g}) but the cluster has {cluster.get('CPU', 0):g}")


SOURCE_SEED_DIR = "source_seed_{}"


def run_source_seeds(study: Study, study_file: str, out: Path, address: str | None = None,
                     resume: bool = False, dry_run: bool = False) -> dict[str, Any] | None:
    """A study with `source_seeds`: one run per source-pretraining seed, each under
    OUT/source_seed_<s>/ (its own source model, affinities, trials and analysis), then one
    analysis of them all under OUT/analysis/, whose cells pool seeds and source seeds."""
    seeds = list(study.source_seeds or [])
    dirs = [out / SOURCE_SEED_DIR.format(seed) for seed in seeds]
    summaries = []
    for k, (seed, sub) in enumerate(zip(seeds, dirs, strict=True), 1):
        log(f"[harness] source seed {seed} ({k} of {len(seeds)}): {sub}")
        summaries.append(run_study(study.for_source_seed(seed), study_file, sub, address,
                                   resume, dry_run))
    if dry_run:
        return None
    from harness.analysis import analyze_studies

    log(f"[analysis] pooled over source seeds {seeds}")
    outputs = analyze_studies(dirs, out / "analysis", log=log)
    counts = ("trials", "finished_trials", "failed_trials", "interrupted_trials")
    summary = {"study": study.name, "output_dir": str(out.resolve()), "source_seeds": seeds,
               **{key: sum(s[key] for s in summaries) for key in counts},
               "minutes": round(sum(s["minutes"] for s in summaries), 1),
               "outputs": outputs.as_dict(),
               "per_source_seed": {str(seed): s["output_dir"]
                                   for seed, s in zip(seeds, summaries, strict=True)}}
    log(f"[harness] study {study.name!r} done over {len(seeds)} source seeds: {out}")
    return summary


def run_study(study: Study, study_file: str, out: Path, address: str | None = None,
              resume: bool = False, dry_run: bool = False) -> dict[str, Any] | None:
    if study.source_seeds:
        return run_source_seeds(study, study_file, out, address, resume, dry_run)
    cache = cache_root(study.cache_dir)
    out = out.resolve()
    os.environ.update(progress_env())   # the driver's own bars (dataset checks, statistics)
    from harness.checks import check_inputs, check_subset_images

    print_plan(study, study_file, out, cache, resolved=dry_run)
    if dry_run:
        # every input check of a run, on what exists now (cached subsets included)
        check_inputs(study, cache, study_file, out, planned_subsets(study, cache), log)
        log("[plan] inputs checked: datasets, source checkpoint, named files, output folder")
        return None
    start = time.perf_counter()
    check_inputs(study, cache, study_file, out, None, log)
    write_resolved(study, out, study_tune.swept_axes(study), study_file)

    from harness.stages import stage_datasets, stage_subsets

    source, target = stage_datasets(study, cache, study_file, log)
    subsets = stage_subsets(study, target, cache, study_file, log)
    check_subset_images(study, target, subsets, study_file)

    import ray

    from harness import ray_session

    cluster = init_ray(address, out)
    if not address:
        ray_session.record(ray_session_dir())
    try:
        if address:
            cluster = wait_for_resources(study, cluster)
        check_fits(study, cluster, study_file)
        from harness.stages import prepare_artifacts
        from harness.trials import run_trials

        artifacts = prepare_artifacts(study, source, target, subsets, cache, out, log, cluster)
        if not address:
            ray_session.record(ray_session_dir())   # the workers started since
        grid = run_trials(study, artifacts, out, cluster, resume, log)
    finally:
        ray.shutdown()
        if not address:
            ray_session.forget()

    from harness.analysis import analyze_study
    from harness.trials import trial_outcomes

    outcome = getattr(grid, "outcome", None) or trial_outcomes(grid)
    if outcome["interrupted"]:
        log(f"[analysis] partial: {outcome['interrupted']} of {len(grid)} trial(s) were "
            "interrupted; the tables mark their cells with † (their last evaluation)")
    outputs = analyze_study(out, log=log)
    summary = {
        "study": study.name,
        "output_dir": str(out),
        "trials": len(grid),
        "finished_trials": outcome["finished"],
        "failed_trials": outcome["failed"],
        "interrupted_trials": outcome["interrupted"],
        "minutes": round((time.perf_counter() - start) / 60, 1),
        "outputs": outputs.as_dict(),
    }
    log(f"[harness] study {study.name!r} done: {out}")
    return summary
