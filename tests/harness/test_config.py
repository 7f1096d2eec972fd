"""Study schema: validation messages name the file and field; overrides; search space."""

from __future__ import annotations

import pytest
from ray import tune

from harness.config import StudyError, load_study, parse_study
from harness.tune import grid_size, max_concurrency, param_space, swept_axes

BASE = """
name: t
methods:
  - {affinity: combination, label: CAT}
  - {affinity: random, label: no CAT}
target_sizes: [25, 50]
seeds: [0, 1]
"""


def _write(tmp_path, text):
    p = tmp_path / "study.yaml"
    p.write_text(text)
    return p


def test_valid_study_and_defaults(tmp_path):
    s = load_study(_write(tmp_path, BASE))
    assert [m.label for m in s.methods] == ["CAT", "no CAT"]
    assert s.methods[0].baseline == "cat" and s.source.dataset.kind == "synthetic_source"
    assert grid_size(s) == 8
    assert swept_axes(s) == ["method", "target_size", "seed"]


@pytest.mark.parametrize("extra, field, message", [
    ("trainng: {iterations: 5}", "trainng", "Extra inputs are not permitted"),
    ("training: {iterations: -5}", "training.iterations", "greater than 0"),
    ("training: {iterations: 10, stage1_iterations: 20}", "training", "exceeds iterations"),
    ("search: {space: {lr: {grid: [1, 2]}}}", "search.space", "cannot search over ['lr']"),
    ("search: {space: {lr_g: {loguniform: [1.0e-5, 1.0e-3]}}}", "search",
     "need algorithm optuna or random"),
    ("target: {dataset: {kind: ade20k}}", "target.dataset", "needs `root`"),
    ("resources: {workers_per_trial: 0}", "resources.workers_per_trial", "greater than 0"),
    ("search: {metric: miou, mode: min}", "search", "optimises miou the wrong way"),
    ("search: {algorithm: optuna, space: {freeze_d: {int: [5, 2]}}}", "search.space.freeze_d",
     "low exceeds high"),
    ("search: {algorithm: optuna, space: {lr_g: {loguniform: [0, 1.0e-3]}}}",
     "search.space.lr_g", "bounds must be > 0"),
    ("benchmark: {n_target: 40}", "target_sizes", "[50] exceed the 40 images"),
    ("training: {freeze_d: 9}", "training.freeze_d", "freeze_d is 0..8"),
    ("search: {space: {freeze_d: {grid: [0, 4, 9]}}}", "search.space.freeze_d",
     "[9] out of range"),
    ("oasis: {overrides: {num_res_blocks: 3}}\ntraining: {freeze_d: 7}", "training.freeze_d",
     "freeze_d is 0..6"),
    ("training: {d_augment: 'color,flip'}", "training.d_augment", "unknown policy ['flip']"),
    ("search: {space: {d_augment: {grid: ['', 'color', 'rotate']}}}",
     "search.space.d_augment", "unknown policy ['rotate']"),
])
def test_errors_name_file_and_field(tmp_path, extra, field, message):
    path = _write(tmp_path, BASE + extra + "\n")
    with pytest.raises(StudyError) as err:
        load_study(path)
    text = str(err.value)
    assert text.startswith(f"{path}: {field}")
    assert message in text


def test_aerial_target_kind_validates_and_its_sizes_are_checked(tmp_path):
    aerial = "target: {dataset: {kind: synthetic_aerial}}\n"
    s = load_study(_write(tmp_path, BASE + aerial))
    assert s.target.dataset.kind == "synthetic_aerial" and s.target.dataset.root is None
    path = _write(tmp_path, BASE + aerial + "benchmark: {n_target: 40}\n")
    with pytest.raises(StudyError) as err:
        load_study(path)
    text = str(err.value)
    assert text.startswith(f"{path}: target_sizes: [50] exceed the 40 images"), text
    assert "(benchmark.n_target)" in text


def test_method_options_are_the_recipes_own(tmp_path):
    ok = load_study(_write(tmp_path, "name: t\nmethods: [{affinity: text, options: "
                                     "{freeze_d: 3, two_stage: false}}]\n"))
    assert ok.methods[0].options == {"freeze_d": 3, "two_stage": False}
    with pytest.raises(StudyError, match=r"methods\.0: .*\['two_stages'\] are not options of "
                                         r"'cat'; it takes \['split'"):
        load_study(_write(tmp_path, "name: t\nmethods: [{affinity: text, options: "
                                    "{two_stages: false}}]\n"))
    with pytest.raises(StudyError, match=r"methods\.0: .*\['freeze_d'\] are not options of "
                                         r"'transfergan'; it takes none"):
        load_study(_write(tmp_path, "name: t\nmethods: [{baseline: transfergan, options: "
                                    "{freeze_d: 3}}]\n"))
    with pytest.raises(StudyError, match=r"\['seed'\] are not options .*set the seed from"):
        load_study(_write(tmp_path, "name: t\nmethods: [{baseline: scratch, options: "
                                    "{seed: 3}}]\n"))


def test_mode_follows_metric(tmp_path):
    assert load_study(_write(tmp_path, BASE + "search: {metric: miou}\n")).search.mode == "max"
    assert load_study(_write(tmp_path, BASE)).search.mode == "min"


def test_unknown_method_and_duplicate_labels(tmp_path):
    with pytest.raises(StudyError, match=r"methods\.0\.baseline: .*unknown method 'catt'"):
        load_study(_write(tmp_path, "name: t\nmethods: [{baseline: catt}]\n"))
    with pytest.raises(StudyError, match="repeated: \\['x'\\]"):
        load_study(_write(tmp_path, "name: t\nmethods: [{baseline: scratch, label: x},"
                                    " {baseline: freezed, label: x}]\n"))


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = _write(tmp_path, BASE)
    s = load_study(path, ["training.iterations=420", "target_sizes=[10]", "search.metric=miou"])
    assert s.training.iterations == 420 and s.target_sizes == [10]
    with pytest.raises(StudyError, match="training.iterations"):
        load_study(path, ["training.iterations=abc"])
    with pytest.raises(StudyError, match="expected key.path=value"):
        load_study(path, ["training.iterations"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(StudyError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")
    with pytest.raises(StudyError, match="not valid YAML"):
        load_study(_write(tmp_path, "name: [unclosed\n"))


def test_param_space_grid_vs_optuna():
    s = parse_study({"name": "t", "methods": [{"affinity": "text"}], "target_sizes": [100],
                     "seeds": [0, 1], "search": {"space": {"freeze_d": {"grid": [0, 3, 6]},
                                                           "lr_g": 2e-4}}})
    space = param_space(s)
    assert space["method"] == "cat-text" and space["target_size"] == 100
    assert space["seed"] == {"grid_search": [0, 1]}
    assert space["freeze_d"] == {"grid_search": [0, 3, 6]} and space["lr_g"] == 2e-4
    assert grid_size(s) == 6 and "freeze_d" in swept_axes(s) and "lr_g" not in swept_axes(s)
    o = parse_study({"name": "t", "methods": [{"affinity": "text"}],
                     "search": {"algorithm": "optuna", "num_samples": 5,
                                "space": {"freeze_d": {"int": [0, 9]},
                                          "lr_g": {"loguniform": [1e-5, 1e-3]}}}})
    space = param_space(o)
    assert isinstance(space["freeze_d"], tune.search.sample.Integer)
    assert (space["freeze_d"].lower, space["freeze_d"].upper) == (0, 10)
    assert isinstance(space["lr_g"], tune.search.sample.Float)


def test_concurrency_is_capped_by_cluster():
    s = parse_study({"name": "t", "methods": [{"affinity": "text"}],
                     "resources": {"workers_per_trial": 2, "cpus_per_worker": 1}})
    assert max_concurrency(s, {"CPU": 8}) == 3    # 2 workers + driver share per trial
    s.resources.max_concurrent_trials = 2
    assert max_concurrency(s, {"CPU": 8}) == 2
    g = parse_study({"name": "t", "methods": [{"affinity": "text"}],
                     "resources": {"gpus_per_worker": 1}})
    assert max_concurrency(g, {"CPU": 16, "GPU": 1}) == 1


@pytest.mark.parametrize(("extra", "message"), [
    ("source_seeds: [0, 1, 0]", "source_seeds: repeated [0]"),
    ("source_seeds: []", "source_seeds"),
    ("source_seeds: [0, 1]\nsource: {checkpoint: /models/source.pt}",
     "source_seeds: the source model is the checkpoint source.checkpoint"),
])
def test_bad_source_seeds_are_refused(tmp_path, extra, message):
    path = _write(tmp_path, BASE + extra + "\n")
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_source_seed_runs_change_the_family_pretraining_seed_only(tmp_path):
    study = load_study(_write(tmp_path, BASE + "source_seeds: [3, 7]\n"))
    run = study.for_source_seed(7)
    assert (run.name, run.source.pretrain.seed, run.pretrain_seed) == ("t-source7", 7, 7)
    assert run.source_seeds is None and study.pretrain_seed == 0
    same = run.model_dump()
    same.update(name="t", source_seeds=[3, 7], source=study.source.model_dump())
    assert same == study.model_dump()     # nothing else differs
    piti = load_study(_write(tmp_path, "name: p\nmodel: piti\nsource_seeds: [1, 2]\n"
                             "methods:\n  - {baseline: cat, affinity: random}\n"))
    run = piti.for_source_seed(2)
    assert (run.piti.pretrain.seed, run.source.pretrain.seed, run.pretrain_seed) == (2, 0, 2)


def test_a_later_added_training_field_changes_the_trials_key_only_when_set():
    """`training.d_augment` came after experiments existed: at its default it is left out of
    the study part of the trials' key, so an upgrade does not move a finished experiment
    aside; set, it is part of the key."""
    from harness.trials import study_spec

    base = {"name": "t", "methods": [{"affinity": "text"}]}
    plain = study_spec(parse_study(base))
    assert "d_augment" not in plain["training"]
    augmented = study_spec(parse_study({**base, "training": {"d_augment": "color"}}))
    assert augmented["training"]["d_augment"] == "color"
    assert {k: v for k, v in augmented["training"].items() if k != "d_augment"} == \
        plain["training"]
