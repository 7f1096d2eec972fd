"""`python -m harness.run STUDY.yaml`: validate, prepare cached stages, run the trials, analyse.

    python -m harness.run STUDY.yaml [--address auto|ray://…] [--resume] [--dry-run]
                                     [--set key.path=value …] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from cat_models.errors import InputError
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


def check_yaml_syntax(path: str) -> None:
    """A YAML syntax error as one line (file, line, column, problem), before the schema."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError:
        return                           # load_study names a missing file
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StudyError(f"{path}: not valid YAML{where}: {err.problem or err.context}"
                         ) from None
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        raise StudyError(f"{path}: the study file is empty (a study needs at least `name` "
                         "and `methods`; see studies/README.md)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_yaml_syntax(args.study)
        study = load_study(args.study, args.overrides)
        from harness.pipeline import run_study

        summary = run_study(study, args.study, study_dir(study, args.output),
                            address=args.address, resume=args.resume, dry_run=args.dry_run)
    except (StudyError, InputError) as err:   # bad input: one line per problem, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials and cached stages are kept; to continue: "
              f"{resume_command(argv)}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one readable line instead of a Ray traceback
        return report_crash(err, args)
    if summary is None:
        return 0
    print(json.dumps(summary, indent=1, default=str))
    if summary.get("interrupted_trials"):
        print(f"interrupted: {summary['interrupted_trials']} trial(s) did not finish (the "
              "analysis is partial); to continue: " + resume_command(argv), file=sys.stderr)
        return 130
    if summary.get("failed_trials"):
        print(f"error: {summary['failed_trials']} trial(s) failed; their error files are in "
              f"{summary['output_dir']}/tune/*/error.txt (the other results and the analysis "
              "were written). A crashed trial continues with --resume; one that failed on its "
              "input or a non-finite loss is kept failed by --resume: fix the cause, then rerun "
              "(a changed study starts a new experiment; for the same study move "
              f"{summary['output_dir']}/tune aside first)", file=sys.stderr)
        return 1
    return 0


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that continues this run: its own arguments plus `--resume`."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]
    return shlex.join(["python", "-m", "harness.run", *args, "--resume"])


def report_crash(err: Exception, args: argparse.Namespace) -> int:
    """Print the root cause in one line; keep the full traceback in a log file."""
    import tempfile
    import traceback

    cause: BaseException = err
    while getattr(cause, "cause", None) is not None or cause.__cause__ is not None:
        cause = getattr(cause, "cause", None) or cause.__cause__  # RayTaskError.cause
    log = Path(tempfile.gettempdir()) / f"cat-harness-error-{int(time.time())}.log"
    log.write_text("".join(traceback.format_exception(err)))
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    print(f"error: {args.study}: {type(cause).__name__}: {lines[-1]}\n"
          f"(full traceback: {log}; finished trials and cached stages are kept)",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"[harness] finished in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    sys.exit(code)
