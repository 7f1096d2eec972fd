"""Content-addressed stage artifacts: a stage's folder is keyed by a hash of its inputs.

`cached_stage("affinities", inputs, build)` returns `<cache>/stages/affinities/<hash>/`, calling
`build(tmp_dir)` only when no completed folder for those inputs exists. Building happens in a
temporary sibling that is renamed into place when done, so an interrupted build never leaves a
half-written artifact that a later run would trust. The temporary folder is named
`<hash>.tmp-<host>-<pid>-<ns>` (host: its name and pid namespace); a process killed
mid-build (SIGKILL, a lost node) cannot remove its own, so the next build of the same key
removes those of this host whose process is gone, saying so (another host's, on a shared
cache, are left to that host).

The completion marker `STAGE.json` records the inputs and `hash_files` of the finished folder;
every use of a cached folder (building or planning) checks those files with `verify_files`
first. A folder whose files are missing, truncated or changed since, or that has no marker, is
rebuilt, with one line saying which file and why: a damaged artifact is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cat_models.data.cache import file_hash as _library_file_hash
from cat_models.data.cache import hash_files, verify_file, verify_files
from cat_models.errors import CorruptArtifactError

MARKER = "STAGE.json"


def input_hash(inputs: Any) -> str:
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# One content hash for the whole project: the library's (also used by `hash_files`).
file_hash = _library_file_hash


@dataclass(frozen=True)
class StageResult:
    name: str
    path: Path
    cached: bool
    seconds: float


def stage_dir(cache: Path, name: str, inputs: Any) -> Path:
    return cache / "stages" / name / input_hash(inputs)


def is_cached(cache: Path, name: str, inputs: Any) -> bool:
    return check_folder(stage_dir(cache, name, inputs)) is None


def recorded_hashes(folder: Path) -> dict[str, str]:
    """The `{file: hash}` the folder's marker recorded (raises for a damaged marker)."""
    marker = folder / MARKER
    verify_file(marker)
    hashes = json.loads(marker.read_text()).get("files")
    if hashes is None:
        # a folder built before hashes were recorded: check each artifact's structure
        return {name: None for name in hash_files(folder) if name != MARKER}
    return hashes


def check_folder(folder: Path) -> str | None:
    """None if `folder` is a finished, intact stage folder; else why not (one line)."""
    if not folder.is_dir():
        return "not built"
    if not (folder / MARKER).is_file():
        return f"{folder}: no completion marker {MARKER} (an interrupted build)"
    try:
        verify_files(folder, recorded_hashes(folder))
    except CorruptArtifactError as err:
        return str(err)
    return None


def _host() -> str:
    """This host and process-id namespace, as a folder-name token ('-' separates the fields):
    containers that share a host name (host networking) have pid namespaces of their own."""
    try:
        namespace = f"_{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        namespace = ""
    return (socket.gethostname().replace("-", "_") or "host") + namespace


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # alive, another user's
        pass
    return True


def remove_abandoned_builds(final: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Remove `final`'s temporary build folders left by dead processes of this host."""
    removed = []
    prefix = f"{final.name}.tmp-{_host()}-"
    for tmp in final.parent.glob(f"{final.name}.tmp-*"):
        if not tmp.name.startswith(prefix):
            continue
        pid = tmp.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        if not tmp.exists():
            log(f"[stage] removed {tmp}: a build whose process (pid {pid}) is gone")
            removed.append(tmp)
    return removed


def cached_stage(
    cache: Path,
    name: str,
    inputs: Any,
    build: Callable[[Path], None],
    log: Callable[[str], None] = print,
) -> StageResult:
    final = stage_dir(cache, name, inputs)
    problem = check_folder(final)
    if problem is None:
        log(f"[stage] {name}: cached ({final})")
        return StageResult(name, final, True, 0.0)
    if final.exists():
        log(f"[stage] {name}: rebuilding: {problem}")
    else:
        log(f"[stage] {name}: building ...")
    remove_abandoned_builds(final, log)     # (none when the stage's folder is new)
    tmp = final.with_name(f"{final.name}.tmp-{_host()}-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    try:
        build(tmp)
        (tmp / MARKER).write_text(json.dumps({"stage": name, "inputs": inputs,
                                              "files": hash_files(tmp)}, default=str,
                                             indent=1, sort_keys=True))
        if final.exists():  # a stale, unmarked or damaged folder
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    log(f"[stage] {name}: done in {seconds:.1f}s ({final})")
    return StageResult(name, final, False, seconds)


class StageRunner:
    """Runs the stages of a study, or (`plan=True`) only reports which of them are cached.

    The stage functions call `runner.stage(name, inputs, build)` once each, with the cache key's
    inputs they would build from: building, it is `cached_stage`; planning, it records
    `(name, cached?)` in `rows` and returns the cached folder, or None when the stage would run
    (a later stage whose inputs are then unknown records itself as one that will run). So the
    `--dry-run` plan and the run come from the same code.
    """

    def __init__(self, cache: Path, log: Callable[[str], None] = print,
                 plan: bool = False) -> None:
        self.cache, self.log, self.plan = cache, log, plan
        self.rows: dict[str, bool] = {}

    def stage(self, name: str, inputs: Any, build: Callable[[Path], None],
              log: Callable[[str], None] | None = None, group: str | None = None
              ) -> Path | None:
        """The stage's folder (built if needed); planning, None when it is not cached.

        `group` gathers several keys of one stage (e.g. one matrix per few-shot set) into one
        plan row, cached when all of them are.
        """
        if not self.plan:
            return cached_stage(self.cache, name, inputs, build, log or self.log).path
        folder = stage_dir(self.cache, name, inputs)
        problem = check_folder(folder)
        cached = problem is None
        if folder.exists() and not cached:   # said once, before the plan's table
            self.log(f"[plan] {name}: will be rebuilt: {problem}")
        self.report(group or name, cached)
        return folder if cached else None

    def report(self, row: str, cached: bool) -> None:
        """A plan row (for stages whose inputs are not known yet, or that are not folders)."""
        self.rows[row] = self.rows.get(row, True) and cached
