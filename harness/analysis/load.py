"""A study's trials on disk -> tidy pandas DataFrames (one row per eval step; one per trial).

Reads the files Ray Tune writes into each trial folder (`params.json`, `result.json` one JSON
object per `tune.report`) directly, not through Ray Tune's public `ResultGrid` /
`ExperimentAnalysis`, because (read in ray 2.60, `ray/tune/analysis/experiment_analysis.py`)
those cannot load the studies this analysis is for:

* `ExperimentAnalysis(path)` raises ValueError when the folder holds no
  `experiment_state-*.json` (a driver killed before its first snapshot, a copy without it);
* its per-trial frames parse every line of `result.json` with `json.loads`, so the torn last
  line of a killed trial raises instead of being dropped (see `read_result_lines`);
* it lists a trial's results only if the driver's last (periodic) snapshot saw one, so a study
  that is still running, or was interrupted between snapshots, loses its latest evaluations.

The driver snapshot (`experiment_state-*.json`) only adds each trial's Tune status (its one
field that is not in the trial folder) when it is there; `ray_statuses` reads that field alone
and treats any other content as absent.

Columns: the trial's parameters (nested dicts flattened with ".", a method's `options` merged
without prefix), the study-level facts (`study`, `pair`, `model`, `training_free`), the metrics,
`iteration`, `wall_time_s`, the provenance keys, and `trial_id` / `trial_dir` / `status`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from harness.analysis.metrics import EVAL_METRICS, PROVENANCE_KEYS

# Keys Tune adds to every report that say nothing about the experiment.
TUNE_NOISE = ("config", "pid", "date", "time_this_iter_s", "time_since_restore",
              "iterations_since_restore", "checkpoint_dir_name", "node_ip")
STUDY_LEVEL = ("study", "pair", "model", "training_free")
ANALYSIS_DIRNAME = "analysis"
# Short dataset names for the transfer-pair label (paper Tables 1–3 headers, "COCO→ADE").
DATASET_SHORT = {"ade20k": "ADE", "coco_stuff": "COCO", "cityscapes": "Cityscapes",
                 "synthetic_source": "Synth-src", "synthetic_target": "Synth-tgt",
                 "synthetic_aerial": "Synth-aerial", "synthetic_longtail": "Synth-longtail"}


def is_missing(value: Any) -> bool:
    """None or NaN (a scalar cell that holds no value)."""
    return value is None or (isinstance(value, float | np.floating) and bool(np.isnan(value)))


class ResultsError(ValueError):
    """A study folder that cannot be analysed; the message names the path and the problem."""


@dataclass
class StudyMeta:
    """What `study.yaml` says about a study (empty config for a bare Ray experiment)."""

    name: str
    path: Path
    config: dict[str, Any]
    axes: list[str]
    pair: str
    method_order: list[str]


@dataclass
class StudyResults:
    steps: pd.DataFrame           # one row per (trial, report)
    final: pd.DataFrame           # one row per trial
    axes: list[str]               # swept keys, in declared order (seed included)
    studies: list[StudyMeta] = field(default_factory=list)

    @property
    def method_order(self) -> list[str]:
        order: list[str] = []
        for s in self.studies:
            order += [m for m in s.method_order if m not in order]
        return order


# ----------------------------------------------------------------------------- files
def read_result_lines(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of a `result.json`. A torn *last* line (the writer was killed mid-line)
    is dropped; a bad line before it is corruption, not an interruption, and raises."""
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in
             enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    rows = []
    for k, (number, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if k == len(lines) - 1:
                break
            raise ResultsError(f"{path}: line {number}: not valid JSON ({err.msg}); only the "
                               "last line may be incomplete. Fix or delete that line.") from None
        if not isinstance(row, dict):
            raise ResultsError(f"{path}: line {number}: expected a JSON object, got "
                               f"{type(row).__name__}")
        rows.append(row)
    return rows


def _scalar(value: Any) -> Any:
    """Nested report values (a dict or list Tune or a trainer added) -> JSON text."""
    return json.dumps(value, default=str) if isinstance(value, dict | list | tuple) else value


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys; `options` (a method's switches) merged without prefix;
    lists -> JSON text so every cell is a scalar (Parquet needs one type per column)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = prefix if key == "options" and isinstance(value, dict) else f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}." if name else ""))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def ray_statuses(experiment_dir: Path) -> dict[str, str]:
    """{trial folder name: Tune status} from the newest `experiment_state-*.json`, if any."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"),
                    key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except (json.JSONDecodeError, OSError):
        return {}
    out = {}
    for entry in data.get("trial_data", []):
        try:
            trial = json.loads(entry[0]) if isinstance(entry, list) else entry
            out[Path(trial["relative_logdir"]).name] = str(trial["status"])
        except (KeyError, TypeError, json.JSONDecodeError):
            continue
    return out


def trial_status(rows: list[dict[str, Any]], trial_dir: Path, ray_status: str | None) -> str:
    """complete | stopped (scheduler ended it early) | error | interrupted | pending."""
    finished = any(r.get("done") is True or any(k.startswith("final_") for k in r)
                   for r in rows)
    if finished:
        return "complete"
    if (trial_dir / "error.txt").is_file() or ray_status == "ERROR":
        return "error"
    if not rows:
        return "pending"
    return "stopped" if ray_status == "TERMINATED" else "interrupted"


def find_trial_dirs(root: Path) -> list[Path]:
    """Folders holding a `params.json` under `root` (our own analysis output excluded)."""
    found = [p.parent for p in root.rglob("params.json")
             if ANALYSIS_DIRNAME not in p.relative_to(root).parts[:-1]]
    return sorted(found)


# ----------------------------------------------------------------------------- study meta
def _dataset_short(spec: dict[str, Any] | None, default: str) -> str:
    if not isinstance(spec, dict):
        return default
    kind = str(spec.get("kind", default))
    if kind == "folder" and spec.get("root"):
        return Path(str(spec["root"])).name
    return DATASET_SHORT.get(kind, kind)


def read_study_meta(study_dir: Path) -> StudyMeta:
    """`study.yaml` (written by `harness.run`) -> StudyMeta; defaults for a bare Ray dir."""
    path = study_dir / "study.yaml"
    config: dict[str, Any] = {}
    if path.is_file():
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ResultsError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(config, dict):
            raise ResultsError(f"{path}: expected a mapping, got {type(config).__name__}")
    axes = config.get("axes") or []
    if not isinstance(axes, list) or not all(isinstance(a, str) for a in axes):
        raise ResultsError(f"{path}: axes: expected a list of key names, got {axes!r}")
    src = _dataset_short((config.get("source") or {}).get("dataset"), "source")
    tgt = _dataset_short((config.get("target") or {}).get("dataset"), "target")
    methods = [m.get("label") or m.get("baseline") for m in config.get("methods") or []
               if isinstance(m, dict)]
    return StudyMeta(name=str(config.get("name", study_dir.name)), path=study_dir,
                     config=config, axes=list(axes), pair=f"{src}→{tgt}",
                     method_order=[m for m in methods if m])


def source_seed(config: dict[str, Any]) -> int | None:
    """The study's source-pretraining seed (its family's `pretrain.seed`); None when the
    source model is a checkpoint or the study file does not say."""
    if (config.get("source") or {}).get("checkpoint"):
        return None
    block = config.get("piti") if config.get("model") == "piti" else config.get("source")
    seed = ((block or {}).get("pretrain") or {}).get("seed")
    return int(seed) if isinstance(seed, int) else None


def _method_columns(meta: StudyMeta) -> dict[str, dict[str, Any]]:
    """{method label: baseline/affinity/options} from study.yaml, to fill what params lack."""
    out = {}
    for m in meta.config.get("methods") or []:
        if isinstance(m, dict) and (m.get("label") or m.get("baseline")):
            info = {"baseline": m.get("baseline"), "affinity": m.get("affinity"),
                    **flatten_params(m.get("options") or {})}
            out[m.get("label") or m["baseline"]] = info
    return out


# ----------------------------------------------------------------------------- loading
def _trial_frame(trial_dir: Path, study_dir: Path, meta: StudyMeta,
                 statuses: dict[str, str]) -> pd.DataFrame:
    params_path = trial_dir / "params.json"
    try:
        params = json.loads(params_path.read_text())
    except json.JSONDecodeError as err:
        raise ResultsError(f"{params_path}: not valid JSON: {err}") from None
    params = flatten_params(params if isinstance(params, dict) else {})
    for key, value in _method_columns(meta).get(str(params.get("method")), {}).items():
        params.setdefault(key, value)
    rows = read_result_lines(trial_dir / "result.json")
    status = trial_status(rows, trial_dir, statuses.get(trial_dir.name))
    fixed = {"study": meta.name, "pair": params.pop("pair", meta.pair),
             "model": meta.config.get("model", params.get("model")),
             "source_seed": source_seed(meta.config),
             "training_free": bool(meta.config.get("training_free", False)),
             "trial_dir": str(trial_dir.relative_to(study_dir)), "status": status}
    records = []
    for row in rows or [{}]:
        metrics = {k: _scalar(v) for k, v in row.items() if k not in TUNE_NOISE}
        clash = {f"param_{k}" if k in metrics else k: v for k, v in params.items()}
        records.append({**clash, **metrics, **fixed})
    frame = pd.DataFrame.from_records(records)
    frame["trial_id"] = frame.get("trial_id", trial_dir.name)
    frame["trial_id"] = frame["trial_id"].fillna(trial_dir.name)
    if not rows:
        frame["iteration"] = np.nan
    return frame


def _infer_axes(frame: pd.DataFrame, params_keys: list[str]) -> list[str]:
    """Without study.yaml: the parameters that differ between trials, method first, skipping
    those the axes before them already fix (a method's `affinity`, `baseline`)."""
    per_trial = frame.drop_duplicates("trial_dir")
    keys = sorted((k for k in params_keys if k in per_trial),
                  key=lambda a: (a != "method", params_keys.index(a)))
    axes: list[str] = []
    for key in keys:
        if axes:
            varies = per_trial.groupby(axes, dropna=False)[key].nunique(dropna=False).max() > 1
        else:
            varies = per_trial[key].nunique(dropna=False) > 1
        if varies:
            axes.append(key)
    return axes


def final_view(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: parameters, then each metric's final value.

    `final_<m>` when the trial reported it (the end-of-training evaluation), otherwise the
    last evaluated `<m>` — so an interrupted trial still contributes its latest numbers
    (`status` says which it is).
    """
    if steps.empty:
        return steps.copy()
    ordered = steps.sort_values(["trial_dir", "iteration"], na_position="first", kind="stable")
    last = ordered.groupby("trial_dir", sort=False).last()  # last non-null per column
    for m in EVAL_METRICS:
        if f"final_{m}" in last:
            last[m] = last[f"final_{m}"].fillna(last.get(m, np.nan))
    last["n_evals"] = ordered.groupby("trial_dir", sort=False)["iteration"].count()
    for key in PROVENANCE_KEYS:  # always present, so a report can say "not recorded"
        if key not in last:
            last[key] = None
    return last.reset_index()


def load_study(study_dir: str | Path) -> StudyResults:
    """All trials of one study folder (finished, interrupted or failed) as DataFrames."""
    study_dir = Path(study_dir).resolve()
    if not study_dir.is_dir():
        raise ResultsError(f"{study_dir}: study folder not found")
    nested = ([] if (study_dir / "study.yaml").is_file()
              else sorted(p.parent for p in study_dir.glob("*/**/study.yaml")))
    if nested:
        names = ", ".join(str(p.relative_to(study_dir)) for p in nested[:5])
        raise ResultsError(f"{study_dir}: not a study folder, but it holds studies ({names}"
                           f"{', …' if len(nested) > 5 else ''}); pass those folders (several "
                           "need --output)")
    meta = read_study_meta(study_dir)
    roots = [study_dir]
    storage = meta.config.get("storage_path")
    if storage and "://" not in str(storage) and (Path(storage) / meta.name).is_dir():
        roots.append(Path(storage).resolve() / meta.name)
    trial_dirs = sorted({d for r in roots for d in find_trial_dirs(r)})
    if not trial_dirs:
        raise ResultsError(f"{study_dir}: no trial folders (with params.json) found; is this "
                           "the study's output folder?")
    frames = []
    for d in trial_dirs:
        base = next(r for r in roots if d.is_relative_to(r))
        frames.append(_trial_frame(d, base, meta, ray_statuses(d.parent)))
    steps = pd.concat(frames, ignore_index=True, sort=False)
    if steps["iteration"].isna().all() and "training_iteration" in steps:
        steps["iteration"] = steps["training_iteration"]  # a trainable that reports no step
    params_keys = list(flatten_params(json.loads((trial_dirs[0] / "params.json").read_text())))
    axes = [a for a in meta.axes if a in steps] or _infer_axes(steps, params_keys)
    if not meta.method_order and "method" in steps:
        meta.method_order = list(dict.fromkeys(steps["method"].dropna().astype(str)))
    return StudyResults(steps=steps, final=final_view(steps), axes=axes, studies=[meta])


def load_studies(study_dirs: list[str | Path]) -> StudyResults:
    """Several studies in one frame (e.g. one per transfer pair, as paper Tables 1–2 need).

    Study-level facts that differ between them (pair, model, training_free) become axes.
    """
    loaded = [load_study(d) for d in study_dirs]
    if len(loaded) == 1:
        return loaded[0]
    steps = pd.concat([r.steps for r in loaded], ignore_index=True, sort=False)
    steps["trial_dir"] = steps["study"].astype(str) + "/" + steps["trial_dir"].astype(str)
    axes: list[str] = []
    for r in loaded:
        axes += [a for a in r.axes if a not in axes]
    axes += [k for k in STUDY_LEVEL[1:] if steps[k].nunique(dropna=False) > 1]
    return StudyResults(steps=steps, final=final_view(steps), axes=axes,
                        studies=[s for r in loaded for s in r.studies])


# ----------------------------------------------------------------------------- saving
def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing value types (e.g. 0.5 and "auto") become text for Parquet."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds = {type(v) for v in out[col].dropna()}
            if len(kinds) > 1:
                out[col] = out[col].map(lambda v: v if is_missing(v) else str(v))
    return out


def parquet_engine() -> str | None:
    """The installed Parquet engine pandas can use (pyarrow, else fastparquet), or None."""
    import importlib.util

    return next((m for m in ("pyarrow", "fastparquet") if importlib.util.find_spec(m)), None)


def save_results(results: StudyResults, out_dir: str | Path,
                 parquet: bool | None = None) -> dict[str, Path]:
    """`results_steps` / `results_final` as CSV, and as Parquet when an engine is installed
    (`parquet=None`: when available; False: never). Returns the written paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if parquet is None:
        parquet = parquet_engine() is not None
    written = {}
    for name, frame in (("steps", results.steps), ("final", results.final)):
        frame = _storable(frame)
        if parquet:
            written[f"{name}_parquet"] = out_dir / f"results_{name}.parquet"
            frame.to_parquet(written[f"{name}_parquet"], index=False)
        written[f"{name}_csv"] = out_dir / f"results_{name}.csv"
        frame.to_csv(written[f"{name}_csv"], index=False)
    return written
