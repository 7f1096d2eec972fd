"""When a rerun reuses the Tune experiment and when it moves it aside (`reuse_or_replace`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.config import parse_study
from harness.stages_common import Artifacts
from harness.stages_data import DatasetRef
from harness.trials import reuse_or_replace, trials_fingerprint
from tests.harness.conftest import merge, tiny_study


def _artifacts(tmp_path: Path, study_data: dict, source_hash: str = "aaaa") -> Artifacts:
    ref = DatasetRef(kind="synthetic_target", root=str(tmp_path / "data"), resolution=32,
                     name="target")
    return Artifacts(study=parse_study(study_data, "tiny.yaml"), source_ref=ref,
                     target_ref=ref, subsets={}, source_checkpoint="source.pt",
                     source_hash=source_hash, eval_segmenter="seg.pt", feature_net=None,
                     stats_cache="stats")


def _experiment(tmp_path: Path) -> str:
    path = tmp_path / "out" / "tune"
    path.mkdir(parents=True)
    (path / "experiment_state.json").write_text("{}")
    return str(path)


def test_a_rebuilt_artifact_keeps_the_experiment_and_says_so(tmp_path):
    data = tiny_study(tmp_path / "cache", tmp_path / "out")
    before = _artifacts(tmp_path, data)
    rebuilt = dataclasses.replace(before, source_hash="bbbb")   # e.g. a truncated source.pt
    old, key = trials_fingerprint(before.study, before), trials_fingerprint(rebuilt.study,
                                                                             rebuilt)
    assert old["study"] == key["study"] and old["artifacts"] != key["artifacts"]
    path, lines = _experiment(tmp_path), []
    assert reuse_or_replace(old, key, path, False, True, lines.append) is True
    assert Path(path).is_dir() and not list(Path(path).parent.glob("tune.replaced-*"))
    assert lines == [(f"[stage] trials: the experiment at {path} ran this same study: its "
                     "finished trials are reused, unfinished ones continue; note: stage "
                     "artifacts were rebuilt since (the finished trials were trained on the "
                     "earlier ones)")]
    lines.clear()      # the same artifacts: no note
    assert reuse_or_replace(old, old, path, False, True, lines.append) is True
    assert "note" not in lines[0]
    # a marker written before the study key existed is not known to differ: kept
    assert reuse_or_replace({"artifacts": old["artifacts"]}, key, path, False, True,
                            lines.append) is True
    assert Path(path).is_dir()


def test_a_changed_study_moves_the_experiment_aside(tmp_path):
    data = tiny_study(tmp_path / "cache", tmp_path / "out")
    art = _artifacts(tmp_path, data)
    longer = _artifacts(tmp_path, merge(data, {"training": {"iterations": 8}}))
    old, key = trials_fingerprint(art.study, art), trials_fingerprint(longer.study, longer)
    assert old["study"] != key["study"]
    # where the study runs is not part of it
    elsewhere = _artifacts(tmp_path, merge(data, {"resources": {"max_failures": 3}}))
    assert trials_fingerprint(elsewhere.study, elsewhere)["study"] == old["study"]

    path, lines = _experiment(tmp_path), []
    assert reuse_or_replace(old, key, path, True, True, lines.append) is True   # --resume
    assert Path(path).is_dir() and lines[0].startswith("[trials] warning: the study changed")
    lines.clear()
    assert reuse_or_replace(old, key, path, False, True, lines.append) is False
    (aside,) = Path(path).parent.glob("tune.replaced-*")
    assert not Path(path).exists() and (aside / "experiment_state.json").is_file()
    assert lines == [(f"[trials] the study changed since the experiment at {path}: it was "
                     f"moved to {aside} and a new one starts")]
    # nothing to restore: nothing said, nothing moved
    assert reuse_or_replace(old, key, path, False, False, lines.append) is False
    assert len(lines) == 1
