"""Verifying cached artifacts: truncated checkpoints, half-written arrays, changed files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cat_models.data.cache import file_hash, hash_files, verify_file, verify_files
from cat_models.errors import CorruptArtifactError, InputError


@pytest.fixture
def stage(tmp_path):
    """A finished stage folder: a checkpoint, an affinity array, a summary; hashes recorded."""
    torch.save({"G": {"w": torch.arange(5000.0)}}, tmp_path / "source.pt")
    np.save(tmp_path / "affinity.npy", np.linspace(0, 1, 12 * 10).reshape(12, 10))
    (tmp_path / "summary.json").write_text(json.dumps({"train": 10}))
    (tmp_path / "notes.txt").write_text("not hashed")
    return tmp_path, hash_files(tmp_path)


def test_hashes_are_recorded_for_artifacts_and_match_the_stage_cache(stage):
    from harness.cache import file_hash as stage_file_hash

    folder, hashes = stage
    assert sorted(hashes) == ["affinity.npy", "source.pt", "summary.json"]
    assert hashes["source.pt"] == stage_file_hash(folder / "source.pt") \
        == file_hash(folder / "source.pt")
    verify_files(folder, hashes)                       # an intact folder passes


def _error(path, expected=None) -> str:
    with pytest.raises(CorruptArtifactError) as err:
        verify_file(path, expected)
    assert isinstance(err.value, InputError) and str(err.value).startswith(f"{path}: ")
    return str(err.value)


def test_truncated_checkpoint_is_found_with_or_without_its_hash(stage):
    folder, hashes = stage
    path = folder / "source.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = "cached artifact is truncated or damaged: its zip archive cannot be read"
    assert msg in _error(path)
    assert msg in _error(path, hashes["source.pt"])
    with pytest.raises(CorruptArtifactError, match="source.pt: cached artifact is truncated"):
        verify_files(folder, hashes)


def test_half_written_npy_says_how_much_is_missing(stage):
    folder, hashes = stage
    path = folder / "affinity.npy"
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    assert _error(path) == (f"{path}: cached artifact is half-written: its header says (12, 10) "
                            f"float64 ({len(data)} bytes), the file has {len(data) - 100} bytes")
    assert "half-written" in _error(path, hashes["affinity.npy"])   # said before the hash
    path.write_bytes(b"\x93NUMPY garbage")
    assert "not a readable .npy file" in _error(path)


def test_a_changed_byte_is_caught_by_the_hash_only(stage):
    folder, hashes = stage
    path = folder / "affinity.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF                                   # same size, still a valid array
    path.write_bytes(bytes(data))
    verify_file(path)                                  # the structure alone looks fine
    assert _error(path, hashes["affinity.npy"]) == (
        f"{path}: cached artifact has content hash {file_hash(path)}, not the "
        f"{hashes['affinity.npy']} recorded when it was built (changed or damaged since)")


def test_missing_empty_and_broken_json(stage):
    folder, hashes = stage
    (folder / "source.pt").unlink()
    assert _error(folder / "source.pt") == f"{folder / 'source.pt'}: cached artifact is missing"
    with pytest.raises(CorruptArtifactError, match="source.pt: cached artifact is missing"):
        verify_files(folder, hashes)
    (folder / "summary.json").write_text("")
    assert "is empty (an interrupted write)" in _error(folder / "summary.json")
    (folder / "summary.json").write_text('{"train": 1')
    assert "cached artifact is not valid JSON" in _error(folder / "summary.json")
