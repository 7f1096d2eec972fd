"""When a Tune trial's rows reach its `result.json` in the experiment folder, with and without
process reuse (`reuse_actors`).

    python benchmarks/tune_row_latency.py [--trials 3] [--iterations 4] [--step-s 1.0]

A trivial function trainable (one report per `--step-s`), `--trials` trials one at a time,
run twice: new process per trial, then `reuse_actors=True`. A Tune callback prints when the
driver receives each result; a thread polls the experiment folder under `storage_path` and
prints when a trial's `result.json` gains rows. The gap between the two is Tune's copying of
its driver-side staging folder to `storage_path` (the experiment-state snapshot, every
`TUNE_GLOBAL_CHECKPOINT_S`, "auto" = at least 10 s, or forced when a trial has checkpointed
`num_to_keep` times), not the trial process: the scheduler and callbacks get every result as it
is reported in both modes.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path


def run(reuse: bool, trials: int, iterations: int, step_s: float) -> list[tuple[float, str]]:
    from ray import tune

    store = Path(tempfile.mkdtemp(prefix=f"row-latency-{int(reuse)}-"))
    events: list[tuple[float, str]] = []
    start = time.monotonic()

    def note(what: str) -> None:
        events.append((round(time.monotonic() - start, 2), what))

    def trainable(config: dict) -> None:
        for i in range(1, iterations + 1):
            time.sleep(step_s)
            tune.report({"it": i, "trial": config["trial"]})

    class Seen(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            note(f"driver got trial {result['trial']} row {result['it']}")

    rows: dict[str, int] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for path in sorted(glob.glob(str(store / "exp" / "*" / "result.json"))):
                n = len(Path(path).read_text().splitlines())
                if rows.get(path) != n:
                    rows[path] = n
                    note(f"file of {Path(path).parent.name.split('_')[2]} has {n} row(s)")
            time.sleep(0.1)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    tune.Tuner(trainable, param_space={"trial": tune.grid_search(list(range(trials)))},
               tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=reuse),
               run_config=tune.RunConfig(name="exp", storage_path=str(store), verbose=0,
                                         callbacks=[Seen()])).fit()
    time.sleep(1.0)
    done.set()
    watcher.join()
    shutil.rmtree(store, ignore_errors=True)
    return events


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--step-s", type=float, default=1.0)
    args = p.parse_args()
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for reuse in (False, True):
            print(f"\n## reuse_actors={reuse}")
            for t, what in run(reuse, args.trials, args.iterations, args.step_s):
                print(f"{t:7.2f} s  {what}")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
