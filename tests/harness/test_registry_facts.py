"""Facts the study schema and the stages derive from the registries that own them: a method,
estimator or backend registered in one place is accepted everywhere, and nothing is repeated."""

from __future__ import annotations

import pytest

from cat_models.affinity import registry as affinity_registry
from cat_models.affinity.combination import DEFAULT_ORDER
from cat_models.oasis import baselines
from harness.config import (
    SEARCHABLE,
    UNSEARCHABLE,
    MethodSpec,
    StudyError,
    TextBackend,
    TrainingSpec,
    parse_study,
)
from harness.stages_common import BASE_METHODS, needed_affinities
from harness.trial import recipe_settings
from tests.harness.conftest import BASE_STUDY, merge


@pytest.fixture
def my_estimator():
    affinity_registry.available_estimators()        # the built-ins first
    affinity_registry.register_estimator("my_estimator")(lambda inputs, **_: None)
    yield "my_estimator"
    del affinity_registry.ESTIMATORS["my_estimator"]


@pytest.fixture
def my_recipe():
    def recipe(source_g, source_d, target_classes, freeze_d: int = 2, depth: int = 1):
        raise AssertionError("not built here")

    baselines.register("my_recipe")(recipe)
    yield "my_recipe"
    del baselines.BASELINES["my_recipe"]


def test_a_registered_estimator_is_an_accepted_affinity(my_estimator):
    spec = MethodSpec(baseline="cat", affinity=my_estimator)
    assert spec.label == "cat-my_estimator"
    study = parse_study(merge(BASE_STUDY, {"methods": [{"affinity": my_estimator},
                                                       {"affinity": "combination"}]}))
    assert needed_affinities(study) == [*DEFAULT_ORDER, my_estimator, "combination"]
    with pytest.raises(ValueError, match="my_estimator"):   # the message lists the registry
        MethodSpec(baseline="cat", affinity="no_such_estimator")


def test_a_registered_recipe_is_an_accepted_method_with_its_own_options(my_recipe):
    spec = MethodSpec(baseline=my_recipe, options={"depth": 3})
    assert spec.label == my_recipe
    with pytest.raises(ValueError, match=r"'split'\] are not options of 'my_recipe'; it takes "
                                         r"\['freeze_d', 'depth'\]"):
        MethodSpec(baseline=my_recipe, options={"split": False})
    with pytest.raises(StudyError, match="unknown method 'no_such_recipe'.*my_recipe"):
        parse_study(merge(BASE_STUDY, {"methods": [{"baseline": "no_such_recipe"}]}))


def test_training_settings_reach_the_recipes_that_declare_them(my_recipe):
    training = TrainingSpec(freeze_d=4, stage1_iterations=7, iterations=10)
    assert recipe_settings(MethodSpec(baseline=my_recipe), training) == {"freeze_d": 4}
    assert recipe_settings(MethodSpec(baseline="minegan"), training) == {"stage1_iters": 7}
    assert recipe_settings(MethodSpec(baseline="transfergan"), training) == {}
    cat = MethodSpec(baseline="cat", affinity="text", options={"freeze_d": 1})
    assert recipe_settings(cat, training) == {"freeze_d": 1, "stage1_iters": 7}


def test_a_recipe_refuses_an_option_it_does_not_declare():
    with pytest.raises(TypeError, match=r"'transfergan' takes no option\(s\) \['freeze_d'\]"):
        baselines.build_plan("transfergan", None, None, 3, freeze_d=2)


def test_searchable_keys_are_the_training_settings():
    assert set(SEARCHABLE) == set(TrainingSpec.model_fields) - set(UNSEARCHABLE)
    values = {"iterations": 9, "stage1_iterations": 3, "batch_size": 2, "lr_g": 0.5,
              "lr_d": 0.25, "freeze_d": 2, "labelmix_lambda": 1.0, "ema_decay": 0.5,
              "affinity_temperature": 2.0, "affinity_top_k": 3, "d_augment": "color"}
    assert set(values) == set(SEARCHABLE)
    trial = TrainingSpec().for_trial({**values, "method": "x", "eval_every": 1})
    assert {k: getattr(trial, k) for k in values} == values
    assert trial.eval_every == TrainingSpec().eval_every       # not a trial parameter
    study = merge(BASE_STUDY, {"search": {"space": {"amp": {"grid": [True, False]}}}})
    with pytest.raises(StudyError, match=r"cannot search over \['amp'\]"):
        parse_study(study)


def test_base_methods_are_the_combination_order():
    assert BASE_METHODS == DEFAULT_ORDER


def test_text_backends_come_from_the_encoder_registry(monkeypatch):
    from cat_models.affinity import text_backends

    monkeypatch.setitem(text_backends.TEXT_BACKENDS, "my_encoder", lambda **_: None)
    assert TextBackend(backend="my_encoder").options() == {"backend": "my_encoder"}
    with pytest.raises(ValueError, match="unknown text backend 'nope'"):
        TextBackend(backend="nope")


def test_affinity_backends_are_typed_and_strict():
    study = parse_study(merge(BASE_STUDY, {"affinity_backends": {
        "features": {"backend": "timm", "checkpoint": "/m/ibot.pth"},
        "text": {"sentence_model": "/m/minilm"}}}))
    from harness.stages_affinity import affinity_options

    assert affinity_options(study, "features") == {
        "backend": "timm", "max_source_images": 200,
        "backend_options": {"model_name": "vit_small_patch16_224", "checkpoint": "/m/ibot.pth"}}
    assert affinity_options(study, "text") == {"model_path": "/m/minilm"}
    assert affinity_options(parse_study(BASE_STUDY), "features")["backend_options"] == {
        "layer": "mixed_7", "input_size": 128}
    with pytest.raises(StudyError, match="affinity_backends.text.sentence_modle"):
        parse_study(merge(BASE_STUDY, {"affinity_backends": {"text": {"sentence_modle": "x"}}}))
    with pytest.raises(StudyError, match="affinity_backends.features"):
        parse_study(merge(BASE_STUDY, {"affinity_backends": {"features": {"layer": "mixed_99"}}}))


def test_the_plan_and_the_run_find_the_benchmark_in_one_folder(tmp_path):
    from cat_models.data.synthetic import benchmark_folders, ensure_benchmark

    planned = benchmark_folders(tmp_path, resolution=32, seed=1, n_source=20, n_target=20)
    assert not planned.root.exists()
    assert ensure_benchmark(tmp_path, resolution=32, seed=1, n_source=20, n_target=20) == planned
    assert (planned.target_root / "classes.txt").is_file() or any(planned.target_root.iterdir())


def test_fid_and_feature_affinity_share_one_inception():
    from cat_models.affinity.feature_backends import InceptionPatchFeatures
    from cat_models.metrics.feature_net import load_feature_net

    fid = load_feature_net()
    patches = InceptionPatchFeatures(layer="mixed_2")
    first = next(iter(fid.layers.children()))
    assert patches.stages[0] is first                     # loaded and unwrapped once
