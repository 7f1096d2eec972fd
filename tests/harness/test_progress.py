"""What a user sees while a study runs: progress lines in a log file, the dashboard's token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.pipeline import dashboard_token_hint, progress_env

LOOP = ("import time\nfrom tqdm.auto import tqdm\n"
        "for _ in tqdm(range(300), desc='work'):\n    time.sleep(0.005)\n")


def _progress_lines(env: dict[str, str]) -> int:
    """Lines a 1.5 s tqdm loop writes to a pipe (each redraw counts, as in a log file)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    proc = subprocess.run([sys.executable, "-c", LOOP], env={**clean, **env},
                          capture_output=True, text=True, check=True, timeout=60)
    return sum("work:" in part for part in proc.stderr.replace("\r", "\n").split("\n"))


def test_progress_outside_a_terminal_is_one_line_per_interval(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.delenv("CAT_PROGRESS_INTERVAL_S", raising=False)
    assert progress_env(isatty=True) == {}
    assert progress_env(isatty=False) == {"TQDM_MININTERVAL": "30"}
    monkeypatch.setenv("CAT_PROGRESS_INTERVAL_S", "0.6")
    throttled = _progress_lines(progress_env(isatty=False))
    every_redraw = _progress_lines({})
    # 1.5 s of work: the first line, ~2 at 0.6 s intervals, the last one; tqdm's own default
    # (0.1 s) writes a line per redraw
    assert 2 <= throttled <= 5 < every_redraw


def test_dashboard_hint_names_the_token_when_ray_asks_for_one(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    assert dashboard_token_hint() is None
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("HOME", str(tmp_path))
    hint = dashboard_token_hint()
    assert "ray get-auth-token" in hint and str(tmp_path / ".ray" / "auth_token") in hint
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert str(Path(tmp_path / "t")) in dashboard_token_hint()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    assert "$RAY_AUTH_TOKEN" in dashboard_token_hint()
