"""The fixed cost of a trial inside a study, read from a finished study's output folder.

    python benchmarks/trial_fixed_cost.py OUT [OUT ...] [--concurrency 2]

OUT is what `python -m harness.run STUDY --output OUT` wrote (the folder holding
`<study>/tune/train_*/result.json`). For every trial, from its reported rows:

* `start`: when its trainable began (first row's `timestamp` − `time_total_s`), i.e. after
  its process started and imported what it needs;
* `loop`: `wall_time_s`, the training loop with its evaluations, as the trial measures it;
* `before first step`: `time_total_s − wall_time_s`, loading the source model, segmenter,
  Inception and statistics in the trial.

The trial phase runs from the first trainable's start to the last trial's end. With
`concurrency` trials at a time, slot time not spent inside a trainable
(`concurrency × phase − Σ time_total_s`) is the time between trials: a new process, imports,
Tune's hand-over (and the tail where one slot has finished and the other not). Fixed cost per
trial = (that idle time + Σ before-first-step) / trials, and its share of a slot
(`concurrency × phase / trials`). The first trials' own process start lies before the phase
and is not counted; add one between-trial gap per slot for it.

Compare two versions of the code by running the same study with each (same cache, fresh
output folders, alternating A B B A: the machine's speed drifts by ~10% between runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def trials_of(out: Path) -> list[dict]:
    rows = []
    for folder in sorted(out.glob("*/tune/train_*")):
        lines = [json.loads(x) for x in (folder / "result.json").read_text().splitlines()]
        if not lines:
            continue
        first, last = lines[0], lines[-1]
        rows.append({"trial": folder.name, "pid": last["pid"],
                     "start": first["timestamp"] - first["time_total_s"],
                     "end": last["timestamp"], "total": last["time_total_s"],
                     "loop": last["wall_time_s"],
                     "before_first_step": last["time_total_s"] - last["wall_time_s"],
                     "final": {k: last.get(k) for k in ("final_fid", "final_kid", "final_miou")}})
    if not rows:
        raise SystemExit(f"{out}: no */tune/train_*/result.json with results")
    return rows


def summary(trials: list[dict], concurrency: int) -> dict:
    n = len(trials)
    phase = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    idle = concurrency * phase - sum(t["total"] for t in trials)
    before = sum(t["before_first_step"] for t in trials)
    slot = concurrency * phase / n
    return {"trials": n, "processes": len({t["pid"] for t in trials}), "phase_s": phase,
            "between_trials_s": idle / n, "before_first_step_s": before / n,
            "fixed_s": (idle + before) / n, "slot_s": slot,
            "fixed_share": (idle + before) / n / slot}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outputs", nargs="+", type=Path)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--trials", action="store_true", help="also list every trial")
    args = p.parse_args()
    print("| output | trials | processes | trial phase | between trials | before first step "
          "| fixed per trial | share of a slot |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    listed = []
    for out in args.outputs:
        trials = trials_of(out)
        s = summary(trials, args.concurrency)
        print(f"| {out} | {s['trials']} | {s['processes']} | {s['phase_s']:.0f} s "
              f"| {s['between_trials_s']:.1f} s | {s['before_first_step_s']:.1f} s "
              f"| {s['fixed_s']:.1f} s | {100 * s['fixed_share']:.1f}% of {s['slot_s']:.0f} s |")
        listed.append((out, trials))
    if args.trials:
        for out, trials in listed:
            t0 = min(t["start"] for t in trials)
            print(f"\n{out}")
            for t in sorted(trials, key=lambda t: t["start"]):
                print(f"  {t['trial']:40s} pid {t['pid']:>7} start +{t['start'] - t0:6.1f} s "
                      f"loop {t['loop']:6.1f} s  before first step {t['before_first_step']:4.1f} s"
                      f"  final FID {t['final']['final_fid']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
