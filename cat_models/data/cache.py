"""Where expensive artifacts (generated datasets, checkpoints, statistics) are cached."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "CAT_HARNESS_CACHE"


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache directory: `override`, else $CAT_HARNESS_CACHE, else ~/.cache/cat-harness.

    The directory is created if missing.
    """
    if override is not None:
        root = Path(override)
    elif os.environ.get(CACHE_ENV_VAR):
        root = Path(os.environ[CACHE_ENV_VAR])
    else:
        root = Path.home() / ".cache" / "cat-harness"
    root = root.expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
