"""Where expensive artifacts (generated datasets, checkpoints, statistics) are cached, and how
a cached file is verified before it is used.

A stage records `hash_files(folder)` when it finishes building (e.g. in its completion
marker) and calls `verify_files(folder, recorded)` before handing the files on: a truncated
`source.pt`, a half-written `.npy`, a file changed or removed since then raises one
`CorruptArtifactError` naming the path, instead of failing later inside a trial (or, worse,
being used). `verify_file` also checks a file's structure by type when no hash is known.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from cat_models.errors import CorruptArtifactError

CACHE_ENV_VAR = "CAT_HARNESS_CACHE"
HASHED_SUFFIXES = (".pt", ".pth", ".npy", ".npz", ".json", ".safetensors")


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


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, first 16 hex digits (the stage cache's content hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(chunk):
            h.update(data)
    return h.hexdigest()[:16]


def hash_files(folder: str | Path, suffixes: Iterable[str] = HASHED_SUFFIXES) -> dict[str, str]:
    """{relative path: file_hash} of the files under `folder` with one of `suffixes`."""
    folder = Path(folder)
    wanted = tuple(suffixes)
    return {p.relative_to(folder).as_posix(): file_hash(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name.endswith(wanted)}


def verify_files(folder: str | Path, hashes: Mapping[str, str]) -> None:
    """`verify_file` on each recorded file of `folder` (a file added since is not an error)."""
    folder = Path(folder)
    for name, expected in sorted(hashes.items()):
        verify_file(folder / name, expected)


def verify_file(path: str | Path, expected_hash: str | None = None) -> None:
    """Raise `CorruptArtifactError` naming `path` if it is missing, empty, structurally
    incomplete for its type (`.pt` zip archive, `.npy` array, `.json`) or, when
    `expected_hash` is given, if its content hash differs."""
    path = Path(path)
    if not path.is_file():
        raise CorruptArtifactError(f"{path}: cached artifact is missing")
    size = path.stat().st_size
    if size == 0:
        raise CorruptArtifactError(f"{path}: cached artifact is empty (an interrupted write)")
    problem = _structure_problem(path, size)
    if problem:
        raise CorruptArtifactError(f"{path}: cached artifact is {problem}")
    if expected_hash is not None:
        actual = file_hash(path)
        if actual != expected_hash:
            raise CorruptArtifactError(
                f"{path}: cached artifact has content hash {actual}, not the {expected_hash} "
                "recorded when it was built (changed or damaged since)")


def _structure_problem(path: Path, size: int) -> str:
    """What is wrong with the file's structure for its type ("" if nothing is found)."""
    if path.suffix in (".pt", ".pth", ".npz"):
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return ""              # a legacy (non-zip) torch file: only its hash can tell
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.infolist()
        except (zipfile.BadZipFile, OSError) as err:
            return f"truncated or damaged: its zip archive cannot be read ({err})"
        end = max((m.header_offset + m.compress_size for m in members), default=0)
        if end > size:
            return f"truncated: its zip members need {end} bytes, the file has {size}"
    elif path.suffix == ".npy":
        fmt = np.lib.format
        try:
            with open(path, "rb") as f:
                version = fmt.read_magic(f)
                if version == (3, 0):
                    return ""          # 3.0 headers (unicode field names): only the hash tells
                if version not in ((1, 0), (2, 0)):
                    return f"not a readable .npy file (format version {version})"
                read_header = fmt.read_array_header_1_0 if version == (1, 0) \
                    else fmt.read_array_header_2_0
                shape, _, dtype = read_header(f)
                offset = f.tell()
        except (ValueError, OSError, SyntaxError) as err:
            return f"not a readable .npy file ({err})"
        if not dtype.hasobject:
            need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if size < need:
                return (f"half-written: its header says {tuple(shape)} {dtype} ({need} bytes), "
                        f"the file has {size} bytes")
    elif path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            return f"not valid JSON ({err})"
    return ""
