"""The local Ray a driver started, recorded so that a later run can clean it up.

`ray.shutdown()` stops the local Ray's daemons, but a driver killed with SIGKILL never gets
there: its `gcs_server`, `raylet`, dashboard, `ray::DashboardAgent`, `ray::RuntimeEnvAgent`
and workers keep running (and holding CPUs and memory). So after `ray.init` the driver records
its pid and every process it started (pid + start time, which tells a reused pid apart) in
`$TMPDIR/cat-harness-ray-<uid>/<driver pid>.json`, and removes the record after `ray.shutdown`.
The next run that starts a local Ray first stops the processes of every record whose driver is
gone (`clean_stale`). By hand, `ray stop --force` does the same for all local Ray processes.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path


def records_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"cat-harness-ray-{os.getuid()}"


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def descendants(root: int) -> list[int]:
    """Pids of every living process below `root` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def record(session_dir: str | None = None) -> Path | None:
    """Record this driver and the processes it started (call after `ray.init`)."""
    if not Path("/proc").is_dir():
        return None
    me = os.getpid()
    procs = {str(p): start_time(p) for p in descendants(me)}
    folder = records_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{me}.json"
    path.write_text(json.dumps({"driver": me, "driver_start": start_time(me),
                                "session_dir": session_dir, "processes": procs}))
    return path


def forget() -> None:
    """Drop this driver's record (after `ray.shutdown`)."""
    (records_dir() / f"{os.getpid()}.json").unlink(missing_ok=True)


def clean_stale(log: Callable[[str], None] = print) -> int:
    """SIGKILL the recorded processes of drivers that are gone; returns how many."""
    folder = records_dir()
    if not folder.is_dir():
        return 0
    killed = 0
    for path in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if start_time(rec["driver"]) == rec["driver_start"]:
            continue                       # that driver still runs: its Ray is in use
        alive = [int(p) for p, t in rec["processes"].items() if t and start_time(int(p)) == t]
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        if alive:
            log(f"[ray] stopped {len(alive)} process(es) left by an earlier run whose driver "
                f"(pid {rec['driver']}) was killed ({rec.get('session_dir') or 'local Ray'})")
        path.unlink(missing_ok=True)
    return killed
