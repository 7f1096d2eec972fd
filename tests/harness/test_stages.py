"""Stage caching: artifacts keyed by a hash of their inputs are built once and reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness import stages, stages_common, stages_data
from harness.cache import cached_stage, input_hash, is_cached, stage_dir
from harness.config import StudyError, parse_study
from harness.study_checks import check_study
from tests.harness.conftest import merge, run_stage_tasks_inline, tiny_study

DATA_STAGES = ("dataset-source", "dataset-target", "subsets")


def _stage_lines(log: list[str]) -> dict[str, str]:
    """stage name -> 'building' | 'cached' from the `[stage] name: ...` messages."""
    states = {}
    for line in log:
        if line.startswith("[stage] ") and ": " in line:
            name, rest = line[len("[stage] "):].split(": ", 1)
            if rest.startswith(("building", "cached")):
                states[name] = rest.split(" ")[0]
    return states


def _data_stages(study, cache):
    log: list[str] = []
    source, target = stages.stage_datasets(study, cache, "tiny.yaml", log.append)
    subsets = stages.stage_subsets(study, target, cache, "tiny.yaml", log.append)
    return log, source, target, subsets


def test_data_stages_build_once_and_rebuild_on_changed_inputs(tmp_path):
    cache = tmp_path / "cache"
    study = parse_study(tiny_study(cache, tmp_path / "out", target_sizes=[10, 20],
                                   seeds=[0, 1]))
    first, source, target, subsets = _data_stages(study, cache)
    assert _stage_lines(first) == dict.fromkeys(DATA_STAGES, "building")
    assert sorted(subsets) == [(10, 0), (10, 1), (20, 0), (20, 1)]
    assert len(subsets[(20, 0)]) == 20 and len(set(subsets[(20, 0)])) == 20
    assert subsets[(20, 0)][:10] == subsets[(10, 0)]          # greedy sets are nested
    assert subsets[(20, 0)] != subsets[(20, 1)]
    built = {p.name: p.stat().st_mtime_ns
             for p in (cache / "stages" / "subsets").iterdir()}

    second, source2, target2, subsets2 = _data_stages(study, cache)
    assert _stage_lines(second) == dict.fromkeys(DATA_STAGES, "cached")
    assert (source2, target2, subsets2) == (source, target, subsets)
    assert {p.name: p.stat().st_mtime_ns
            for p in (cache / "stages" / "subsets").iterdir()} == built

    changed = parse_study(tiny_study(cache, tmp_path / "out", target_sizes=[10, 30],
                                     seeds=[0, 1]))
    third, _, _, subsets3 = _data_stages(changed, cache)
    assert _stage_lines(third) == {"dataset-source": "cached", "dataset-target": "cached",
                                   "subsets": "building"}
    assert len(list((cache / "stages" / "subsets").iterdir())) == 2
    assert subsets3[(10, 0)] == subsets[(10, 0)] and len(subsets3[(30, 1)]) == 30


def test_planned_stages_report_cached_after_build(tmp_path):
    cache = tmp_path / "cache"
    study = parse_study(tiny_study(cache, tmp_path / "out"))
    before = dict(stages.planned_stages(study, cache))
    assert not any(before.values())
    assert list(before) == [*DATA_STAGES, "source-model", "segmenter-target",
                            "real-statistics", "trials", "analysis"]
    _data_stages(study, cache)
    after = dict(stages.planned_stages(study, cache))
    assert {k: after[k] for k in DATA_STAGES} == dict.fromkeys(DATA_STAGES, True)
    assert after["source-model"] is False and after["segmenter-target"] is False
    other = parse_study(tiny_study(cache, tmp_path / "out", seeds=[3]))
    assert dict(stages.planned_stages(other, cache))["subsets"] is False


def test_model_stages_are_reused(tiny_artifacts, harness_cache, tmp_path, monkeypatch):
    """Everything the session fixture built is found again; no Ray task would be started."""
    study, art = tiny_artifacts
    planned = dict(stages.planned_stages(study, harness_cache))
    assert all(planned[k] for k in planned if k not in ("trials", "analysis")), planned

    def no_task(*args, **kwargs):
        raise AssertionError("a cached stage started a task")

    monkeypatch.setattr(stages_common, "run_task", no_task)
    log, source, target, subsets = _data_stages(study, harness_cache)
    again = stages.prepare_artifacts(study, source, target, subsets, harness_cache,
                                     tmp_path / "out", log.append, {"CPU": 1})
    states = _stage_lines(log)
    assert states == {**dict.fromkeys(DATA_STAGES, "cached"), "source-model": "cached",
                      "segmenter-target": "cached", "real statistics": "cached"}
    assert (again.source_checkpoint, again.source_hash) == (art.source_checkpoint,
                                                            art.source_hash)
    assert again.eval_segmenter == art.eval_segmenter and again.subsets == art.subsets


def test_segmenter_stage_keeps_its_real_image_iou_per_class(tiny_artifacts):
    from cat_models.segmenters import load_segmenter

    _, art = tiny_artifacts
    real = json.loads((Path(art.eval_segmenter).parent / "real_miou.json").read_text())
    per_class = real["val_iou"]
    # named by the segmenter's classes; their mean is the stage's mIoU
    assert per_class and set(per_class) <= set(load_segmenter(art.eval_segmenter).class_names)
    assert all(0.0 <= v <= 1.0 for v in per_class.values())
    assert real["val_miou"] == pytest.approx(sum(per_class.values()) / len(per_class))


def test_weak_classes_are_those_below_the_bar_worst_first():
    scores = {"sky": 0.98, "automobile": 0.10, "house": 0.49, "lawn": 0.5}
    assert stages.weak_classes(scores) == [("automobile", 0.10), ("house", 0.49)]
    assert stages.weak_classes({"sky": 0.9}) == []


@pytest.mark.slow
def test_affinities_per_few_shot_set_and_their_plan(tiny_artifacts, harness_cache, tmp_path,
                                                   monkeypatch):
    """The combination's matrices are built per (size, seed) from its base estimators; the
    dry-run plan finds exactly these cache entries again, and a changed source model makes
    only the combination (whose tie-break samples it) run again."""
    study, _ = tiny_artifacts
    changes = {"methods": [{"baseline": "cat", "affinity": "combination"}],
               "target_sizes": [10, 20]}
    study = parse_study(tiny_study(harness_cache, tmp_path / "out", **changes))
    rows = dict(stages.planned_stages(study, harness_cache))
    assert rows["affinity-text"] is False and rows["affinity-combination (per few-shot set)"] is False
    monkeypatch.setattr(stages_common, "run_task", run_stage_tasks_inline)
    log, source, target, subsets = _data_stages(study, harness_cache)
    art = stages.prepare_artifacts(study, source, target, subsets, harness_cache,
                                   tmp_path / "out", log.append, {"CPU": 1})
    assert sorted(map(str, art.affinities)) == sorted(
        ["text"] + [f"{m}@{n}-0" for m in ("segmentation", "features", "combination")
                    for n in (10, 20)])
    combined = np.load(art.affinities[stages.AffinityKey("combination",
                                                         stages.FewShotSet(10, 0))])
    assert combined.shape == (12, 10) and set(np.unique(combined)) == {0.0, 1.0}
    assert (tmp_path / "out" / "affinities" / "combination.npy").is_file()
    _check_weighted_vote(study, art, harness_cache, tmp_path, monkeypatch)

    rows = dict(stages.planned_stages(study, harness_cache))
    assert all(v for k, v in rows.items() if k not in ("trials", "analysis")), rows
    longer = parse_study(tiny_study(harness_cache, tmp_path / "out", **changes,
                                    source={"pretrain": {"iterations": 11}}))
    rows = dict(stages.planned_stages(longer, harness_cache))
    assert rows["source-model"] is False and rows["affinity-combination (2 sets)"] is False
    assert rows["affinity-segmentation (2 sets)"] and rows["affinity-features (2 sets)"]


def _check_weighted_vote(study, art, harness_cache, tmp_path, monkeypatch):
    """A study's `weighted_vote` is built per few-shot set from the same base matrices, each
    vote weighted by its method's training-free mIoU on that set (kept beside the matrix)."""
    from cat_models.affinity.combination import weighted_vote
    from cat_models.affinity.matrix import AffinityMatrix

    voted = parse_study(tiny_study(harness_cache, tmp_path / "out", target_sizes=[10, 20],
                                   methods=[{"baseline": "cat", "affinity": "weighted_vote"}]))
    log, source, target, subsets = _data_stages(voted, harness_cache)
    again = stages.prepare_artifacts(voted, source, target, subsets, harness_cache,
                                     tmp_path / "out", log.append, {"CPU": 1})
    shot = stages.FewShotSet(10, 0)
    path = Path(again.affinities[stages.AffinityKey("weighted_vote", shot)])
    scores = json.loads((path.parent / "training_free_scores.json").read_text())
    assert set(scores) == {"text", "segmentation", "features"}
    assert all(0 <= s["miou"] <= 1 and s["fid"] > 0 for s in scores.values())
    bases = {m: AffinityMatrix.load(art.affinities[stages.AffinityKey(
        m, None if m == "text" else shot)]) for m in scores}
    expected = weighted_vote(bases, {m: s["miou"] for m, s in scores.items()})
    assert np.array_equal(AffinityMatrix.load(path).values, expected.values)
    assert any("affinity-weighted_vote (10 images): training-free" in line for line in log)


def test_source_model_key_follows_its_inputs(tiny_artifacts, harness_cache):
    study, _ = tiny_artifacts
    source = stages.planned_ref(study, harness_cache, "source")
    base = stages.source_inputs(study, source)
    longer = parse_study({**study.model_dump(mode="json"),
                          "source": {"pretrain": {"iterations": 11, "batch_size": 4}}})
    assert input_hash(stages.source_inputs(longer, source)) != input_hash(base)
    # a field added later enters the key only when set: older cached models keep their keys
    assert "d_augment" not in base["cfg"]
    augmented = parse_study(merge(study.model_dump(mode="json"),
                                  {"oasis": {"overrides": {"d_augment": "color"}}}))
    assert stages.source_inputs(augmented, source)["cfg"]["d_augment"] == "color"
    assert dict(stages.planned_stages(longer, harness_cache))["source-model"] is False


def test_interrupted_build_leaves_nothing_trusted(tmp_path):
    cache = tmp_path / "cache"
    inputs = {"x": 1}

    def broken(out):
        (out / "half.bin").write_bytes(b"12")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cached_stage(cache, "demo", inputs, broken, log=lambda _: None)
    assert not is_cached(cache, "demo", inputs)
    assert list((cache / "stages" / "demo").iterdir()) == []    # the temporary folder is gone

    calls = []
    result = cached_stage(cache, "demo", inputs, lambda out: calls.append(out),
                          log=lambda _: None)
    assert not result.cached and len(calls) == 1
    assert result.path == stage_dir(cache, "demo", inputs)
    marker = json.loads((result.path / "STAGE.json").read_text())
    assert marker == {"stage": "demo", "inputs": inputs, "files": {}}   # no artifact files
    assert cached_stage(cache, "demo", inputs, calls.append, log=lambda _: None).cached
    assert len(calls) == 1


def test_a_killed_builds_folder_is_removed_by_the_next_build(tmp_path):
    """SIGKILL leaves the temporary folder behind; the next build of the key removes it."""
    import os
    import signal
    import subprocess
    import sys

    from harness.cache import _host

    cache = tmp_path / "cache"
    inputs = {"x": 2}
    final = stage_dir(cache, "demo", inputs)
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from harness.cache import cached_stage\n"
        "def build(out):\n"
        "    (out / 'half.bin').write_bytes(b'12')\n"
        "    print('half written', flush=True)\n"
        "    time.sleep(60)\n"
        f"cached_stage(Path({str(cache)!r}), 'demo', {inputs!r}, build)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        while "half written" not in (line := proc.stdout.readline()):   # the folder exists
            assert line, "the build process ended early"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    (killed,) = final.parent.glob(f"{final.name}.tmp-*")
    assert (killed / "half.bin").exists()
    live = final.parent / f"{final.name}.tmp-{_host()}-{os.getpid()}-1"   # this test's own
    other_host = final.parent / f"{final.name}.tmp-elsewhere-{proc.pid}-1"
    live.mkdir()
    other_host.mkdir()

    lines = []
    result = cached_stage(cache, "demo", inputs, lambda out: None, log=lines.append)
    assert not result.cached
    assert not killed.exists()
    assert any(str(killed) in line and f"pid {proc.pid}" in line for line in lines)
    assert live.is_dir() and other_host.is_dir()      # a running build, another host's


def test_target_size_larger_than_pool_names_file_and_field(tmp_path):
    cache = tmp_path / "cache"
    study = parse_study(tiny_study(cache, tmp_path / "out", target_sizes=[20, 61]))
    _, target = stages.stage_datasets(study, cache, "tiny.yaml", lambda _: None)
    with pytest.raises(StudyError, match=r"^tiny\.yaml: target_sizes: \[61\] exceed the 60 "):
        stages.stage_subsets(study, target, cache, "tiny.yaml", lambda _: None)


def test_a_combinations_key_follows_its_rule_version(tiny_artifacts, monkeypatch):
    """Matrices combined by an older rule (before methods abstained on classes they have no
    evidence for) are not reused: the combinations' keys carry the rule's version."""
    from cat_models.affinity.combination import RULE_VERSION
    from harness import stages_affinity

    study, art = tiny_artifacts
    shot = next(iter(art.subsets))

    def inputs(method):
        key = stages.AffinityKey(method, None if method == "text" else shot)
        return stages_affinity.affinity_inputs(study, art, key, {}, "segmenter.pt")

    assert inputs("average")["rule"] == inputs("combination")["rule"] == RULE_VERSION >= 2
    assert "rule" not in inputs("text") and "rule" not in inputs("features")
    before = input_hash(inputs("average"))
    monkeypatch.setattr(stages_affinity, "RULE_VERSION", RULE_VERSION + 1)
    assert input_hash(inputs("average")) != before


def test_rare_class_sampler_leaves_the_named_classes_out_and_keys_its_own_stage(tmp_path):
    """`target.subset` draws the long-tail probe's sets in the study: the named classes are
    in no image of any set, the sets stay nested, and the subsets stage is keyed by the
    sampler (the default sampler keeps the key earlier caches were built under)."""
    cache = tmp_path / "cache"
    plain = parse_study(tiny_study(cache, tmp_path / "out", target_sizes=[10, 20]))
    _, _, target, greedy = _data_stages(plain, cache)
    assert "subset" not in stages_data.subset_inputs(plain, target)
    rare = ["house", "beach"]
    study = parse_study(tiny_study(cache, tmp_path / "out", target_sizes=[10, 20], target={
        "subset": {"sampler": "rare_classes", "rare_classes": rare, "rare_images": 0}}))
    log, _, target, subsets = _data_stages(study, cache)
    assert _stage_lines(log)["subsets"] == "building"
    names = target.open("train").class_names
    ids = [names.index(c) + 1 for c in rare]
    pool = target.open("train")
    shown = [any((pool.labels_at(i) == c).any() for i in subsets[(20, 0)]) for c in ids]
    assert shown == [False, False]
    assert any((pool.labels_at(i) == ids[0]).any() for i in greedy[(20, 0)])
    assert set(subsets[(10, 0)]) <= set(subsets[(20, 0)])
    files = [json.loads(f.read_text())
             for f in (cache / "stages" / "subsets").glob("*/size20-seed0.json")]
    assert sorted(f["sampler"] for f in files) == ["kl_greedy", "rare_classes"]
    assert [f["rare_classes"] for f in files if f["sampler"] == "rare_classes"] == [rare]


def test_rare_class_sampler_errors_name_the_field(tmp_path):
    cache = tmp_path / "cache"
    study = parse_study(tiny_study(cache, tmp_path / "out", target_sizes=[20], target={
        "subset": {"sampler": "rare_classes", "rare_classes": ["house"], "rare_images": 20}}))
    _, target = stages.stage_datasets(study, cache, "tiny.yaml", lambda _: None)
    with pytest.raises(StudyError, match=r"^tiny\.yaml: target\.subset \(rare_classes\), size "
                                         r"20, seed 0: subset size 20 must exceed the 20 "):
        stages.stage_subsets(study, target, cache, "tiny.yaml", lambda _: None)
    with pytest.raises(StudyError, match=r"^x\.yaml: target\.subset\.rare_classes: \['lake'\] "
                                         r"are not classes of the embedded target"):
        check_study(parse_study(tiny_study(cache, tmp_path / "out", target={
            "subset": {"sampler": "rare_classes", "rare_classes": ["lake"]}}), "x.yaml"),
            "x.yaml")
