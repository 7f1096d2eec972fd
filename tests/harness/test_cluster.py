"""`--address`: the harness joins a running cluster (here a local `ray start --head`) instead of
starting its own Ray, and runs the study on it."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.harness.conftest import LABELS, free_port, subprocess_env, tiny_study, write_study

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def cluster_env(temp: Path) -> dict[str, str]:
    """Token authentication with this cluster's own token, for the head and the driver.

    Ray >= 2.5x turns token auth on for `ray start --head` once ~/.ray/auth_token exists (any
    local `ray.init` writes it), but a driver given an explicit address does not turn it on
    itself, so it needs RAY_AUTH_MODE=token (see the report on harness/pipeline.py init_ray).
    """
    token = temp / "auth_token"
    if not token.is_file():
        token.write_text(secrets.token_hex(32))
    return {**subprocess_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


@pytest.fixture(scope="module")
def head_node():
    """A 2-CPU Ray head (no dashboard) in its own temp dir; yields (address, temp dir).

    `--block` keeps `ray start` in the foreground as the parent of the node's processes, so
    the teardown stops exactly this node with a SIGTERM to it (`ray stop` would stop every
    Ray instance on the machine, other jobs' included).
    """
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))   # socket paths must stay short
    log = temp / "head.log"
    ray_cli = Path(sys.executable).with_name("ray")
    with open(log, "w") as out:
        head = subprocess.Popen(
            [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
            stdout=out, stderr=subprocess.STDOUT, env=cluster_env(temp))
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(1)
        yield f"127.0.0.1:{port}", temp
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_address_joins_running_cluster(head_node, tiny_artifacts, harness_cache, tmp_path):
    address, head_temp = head_node
    out = tmp_path / "out"
    study = write_study(tmp_path / "tiny.yaml", tiny_study(harness_cache, out))
    proc = subprocess.run(
        [sys.executable, "-m", "harness.run", str(study), "--address", address],
        cwd=REPO, env=cluster_env(head_temp), capture_output=True, text=True, timeout=280,
        check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"[ray] joined cluster at {address}" in proc.stdout
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    summary = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.rindex('{\n "study"'):])[0]
    assert (summary["trials"], summary["failed_trials"]) == (2, 0)
    trials = sorted((out / "tiny" / "tune").glob("train_*"))
    assert len(trials) == len(LABELS)
    for trial in trials:
        rows = [json.loads(x) for x in (trial / "result.json").read_text().splitlines()]
        assert [r["iteration"] for r in rows] == [2, 4] and "final_fid" in rows[-1]
    # the Tune trials ran as actors of the head node's session
    worker_logs = (head_temp / "session_latest" / "logs").glob("worker-*.out")
    assert sum(":actor_name:ImplicitFunc" in p.read_text() for p in worker_logs) >= 1
    assert (out / "tiny" / "analysis" / "tables" / "main.md").is_file()
