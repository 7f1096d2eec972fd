"""`python -m harness.run STUDY.yaml`: validate, prepare cached stages, run the trials, analyse.

    python -m harness.run STUDY.yaml [--address auto|ray://…] [--resume] [--dry-run]
                                     [--set key.path=value …] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from harness.config import Study, StudyError, load_study


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.run", description=__doc__.split("\n")[0])
    p.add_argument("study", help="study YAML (see studies/README.md)")
    p.add_argument("--address", default=None,
                   help="join an existing Ray cluster (auto or ray://host:port); default: "
                        "start a local Ray with the dashboard on 127.0.0.1")
    p.add_argument("--resume", action="store_true",
                   help="restore the study's Tune experiment; completed trials are not rerun")
    p.add_argument("--dry-run", action="store_true",
                   help="validate, print the plan (stages, trials, resources) and exit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a study field, e.g. --set training.iterations=100")
    p.add_argument("--output", type=Path, default=None, help="output folder (default: the "
                   "study's output_dir)")
    return p.parse_args(argv)


def study_dir(study: Study, output: Path | None) -> Path:
    return (output or study.output_dir) / study.name


def write_resolved(study: Study, out: Path, axes: list[str], source_file: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    resolved = study.model_dump(mode="json")
    resolved["axes"] = axes
    resolved["study_file"] = source_file
    (out / "study.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        study = load_study(args.study, args.overrides)
        from harness.pipeline import run_study

        summary = run_study(study, args.study, study_dir(study, args.output),
                            address=args.address, resume=args.resume, dry_run=args.dry_run)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials and cached stages are kept; rerun with --resume",
              file=sys.stderr)
        return 130
    if summary is not None:
        print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"[harness] finished in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    sys.exit(code)
