"""The model-family seam: OASIS trials give the library's own numbers through it; PITI
trials report FID / KID / mIoU, checkpoint and resume exactly; the study schema takes a
`piti:` block, one family per study; `--dry-run` of a PITI study lists its source stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from trial_recording import Recorder

from harness.config import StudyError, parse_study
from harness.families import FAMILIES, family
from harness.trial import TrialSpec, run_trial
from tests.harness.conftest import BASE_STUDY, PITI_STUDY, merge


def _run(art, tmp: Path, name: str, params: dict, restore: Path | None = None) -> Recorder:
    rec = Recorder(tmp / f"{name}-kept")
    run_trial(dict(params), art, rec, trial_dir=tmp / name, restore=restore, threads=1)
    return rec


# ----------------------------------------------------------------------------- OASIS
def test_oasis_trial_equals_the_library_path(tiny_artifacts, tmp_path):
    """run_trial through the seam == finetune_oasis called directly with the same settings."""
    from cat_models.metrics.evaluator import Evaluator
    from cat_models.oasis.finetune import finetune_oasis
    from cat_models.oasis.sampling import sample_images
    from cat_models.segmenters import load_segmenter
    from harness.stages_common import open_source

    study, art = tiny_artifacts
    params = {"method": "freezed", "target_size": 20, "seed": 0}
    seam = _run(art, tmp_path, "seam", params)

    torch.manual_seed(0)
    np.random.seed(0)
    source = open_source(art)
    data = art.target_ref.open("train", augment=True).subset(art.subset(TrialSpec.from_params(
        params, study).shot))
    test = art.target_ref.open("val")
    evaluator = Evaluator(test, test, load_segmenter(art.eval_segmenter), feature_net=None,
                          n_samples=min(study.evaluation.n_samples, len(test)),
                          cache_dir=art.stats_cache, seed=0)
    t = study.training
    cfg = source.cfg.replace(lr_g=t.lr_g, lr_d=t.lr_d, batch_size=t.batch_size,
                             ema_decay=t.ema_decay or source.cfg.ema_decay,
                             lambda_labelmix=t.labelmix_lambda, amp=t.amp)
    direct: list[dict] = []

    def evaluate(ema, step):
        m = evaluator.evaluate(lambda labels: sample_images(ema, labels, seed=0))
        return {"fid": float(m["fid"]), "kid": float(m["kid"]), "miou": float(m["miou"])}

    finetune_oasis("freezed", source, data, t.iterations, cfg, seed=0, device="cpu",
                   on_report=lambda r: direct.append(r) if "fid" in r else None,
                   report_every=t.eval_every, evaluate_fn=evaluate, eval_every=t.eval_every,
                   freeze_d=t.freeze_d)
    assert [r["iteration"] for r in seam.reports] == [r["iteration"] for r in direct] == [2, 4]
    for key in ("fid", "kid", "miou", "g_total", "d_total"):
        assert [r[key] for r in seam.reports] == [float(r[key]) for r in direct], key


def test_families_derive_their_recipes_from_the_library_registries():
    from cat_models.oasis.baselines import BASELINES
    from cat_models.piti.recipes import RECIPES, recipe_options

    assert family("oasis").recipes() == list(BASELINES)
    assert family("piti").recipes() == list(RECIPES)
    assert family("piti").recipe_options("cat") == recipe_options("cat")
    assert set(FAMILIES) == {"oasis", "piti"}


# ----------------------------------------------------------------------------- PITI trials
PITI_PARAMS = {"method": "cat-random", "target_size": 20, "seed": 0}


@pytest.fixture(scope="module")
def piti_straight(tiny_piti_artifacts, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("piti-trial")
    return tmp, _run(tiny_piti_artifacts[1], tmp, "straight", PITI_PARAMS)


def test_piti_trial_reports_metrics_and_checkpoints(piti_straight, tiny_piti_artifacts):
    tmp, rec = piti_straight
    assert [r["iteration"] for r in rec.reports] == [2, 4]
    for r in rec.reports:
        assert np.isfinite(r["fid"]) and r["fid"] > 0 and np.isfinite(r["kid"])
        assert 0 <= r["miou"] <= 1 and np.isfinite(r["loss"])
    last = rec.reports[-1]
    assert last["done"] and last["final_fid"] == last["fid"]
    assert last["source_ckpt_hash"] == tiny_piti_artifacts[1].source_hash
    assert sorted(rec.checkpoints) == [2, 4]
    for folder in rec.checkpoints.values():
        assert {p.name for p in folder.iterdir()} >= {"latest.pt", "history.json", "stage.json"}
    assert (tmp / "straight" / "samples" / "final.png").is_file()


def test_piti_resume_repeats_the_next_steps_exactly(piti_straight, tiny_piti_artifacts,
                                                    tmp_path):
    _, straight = piti_straight
    resumed = _run(tiny_piti_artifacts[1], tmp_path, "resumed", PITI_PARAMS,
                   restore=straight.checkpoints[2])
    assert [r["iteration"] for r in resumed.reports] == [4]
    for key in ("loss", "mse", "vb", "fid", "kid", "miou", "best_fid"):
        assert resumed.reports[0][key] == straight.reports[-1][key], key


def test_piti_from_glide_trains_in_two_stages(tiny_piti_artifacts, tmp_path):
    rec = _run(tiny_piti_artifacts[1], tmp_path, "glide",
               {"method": "from_glide", "target_size": 20, "seed": 0})
    assert [(r["iteration"], r["stage"]) for r in rec.reports] == [(2, 0), (4, 1)]


def test_piti_from_glide_starts_from_the_mask_free_generic_model(tiny_piti_artifacts):
    """from_glide's decoder is the generic-model stage's (pretrained with the empty mask only),
    not the source model's; the stage is built for a study with from_glide and no other."""
    from harness.families import FinetuneJob
    from harness.families.piti import load_source
    from harness.stages_piti import needs_generic, piti_source_inputs
    from harness.trial import recipe_settings

    study, art = tiny_piti_artifacts
    assert Path(art.generic_checkpoint).parent.parent.name == "generic-model"
    generic, source = load_source(art.generic_checkpoint), load_source(art.source_checkpoint)
    fam = family("piti")
    assert not fam.needs_source("from_glide") and fam.needs_source("cat")
    trial = TrialSpec.from_params({"method": "from_glide", "target_size": 20, "seed": 0}, study)
    job = FinetuneJob(art, trial, None, art.target_ref.open("train"),
                      recipe_settings(trial.method, trial.training, fam), 4, "cpu", None, None,
                      lambda _: None, lambda *_: {})
    decoder = fam.plan(job).model.decoder.state_dict()
    kept = generic.decoder.state_dict()
    assert all(torch.equal(decoder[k], v) for k, v in kept.items())
    assert not all(torch.equal(v, source.decoder.state_dict()[k]) for k, v in kept.items())
    # the same pretraining as the source model but for the masks: always the empty one
    ours, theirs = (piti_source_inputs(study, art.source_ref, generic=g) for g in (True, False))
    assert ours["train"]["uncond_p"] == 1.0 and theirs["train"]["uncond_p"] == 0.2
    assert {k: v for k, v in ours.items() if k != "train"} == {
        k: v for k, v in theirs.items() if k != "train"}
    cat_only = parse_study(merge(study.model_dump(mode="json"), {
        "methods": [m for m in study.model_dump(mode="json")["methods"]
                    if m["baseline"] != "from_glide"]}))
    assert needs_generic(study) and not needs_generic(cat_only)


def test_piti_training_free_scores_the_source_behind_a(tiny_piti_artifacts, tmp_path):
    import dataclasses

    study, art = tiny_piti_artifacts
    free = parse_study(merge(study.model_dump(mode="json"), {"training_free": True}))
    rec = _run(dataclasses.replace(art, study=free), tmp_path, "free", PITI_PARAMS)
    (r,) = rec.reports
    assert r["iteration"] == 0 and r["done"] and np.isfinite(r["fid"]) and 0 <= r["miou"] <= 1


# ----------------------------------------------------------------------------- schema
def test_schema_takes_a_piti_block_and_derives_methods_from_its_recipes():
    study = parse_study(merge(PITI_STUDY, {
        "methods": [{"baseline": "cat", "affinity": "random"},
                    {"label": "prompts", "baseline": "cat", "options": {"use_affinity": False}}],
        "piti": {"sampler": "dpmsolver++", "sampling_steps": 10, "guidance_scale": 2.0},
        "search": {"space": {"prompt_count": {"grid": [0, 4]},
                             "guidance_scale": {"grid": [1.0, 1.3]}}}}))
    assert study.model == "piti" and study.piti.sampler == "dpmsolver++"
    spec = study.piti.for_trial({"prompt_count": 0, "guidance_scale": 1.0})
    assert (spec.prompt_count, spec.guidance_scale, spec.sampling_steps) == (0, 1.0, 10)
    assert [m.label for m in study.methods] == ["cat-random", "prompts"]
    with pytest.raises(StudyError, match="prompt_count fixes what search.space.prompt_count"):
        parse_study(merge(study.model_dump(mode="json"), {"methods": [
            {"baseline": "cat", "affinity": "random", "options": {"prompt_count": 1}}]}))


@pytest.mark.parametrize(("changes", "message"), [
    ({"methods": [{"baseline": "freezed"}]}, (r"methods\.0\.baseline.*'freezed' is a oasis "
     r"recipe, but the study's model is 'piti': a study uses one model family")),
    ({"oasis": {"preset": "bench64"}}, r"`oasis` is set but the study's model is 'piti'"),
    ({"methods": [{"baseline": "cat", "affinity": "random", "options": {"split": True}}]},
     (r"options \['split'\] are not options of 'cat'; it takes \['use_affinity', "
     r"'prompt_count', 'fix_decoder'\]")),
    ({"search": {"space": {"lr_d": {"grid": [1e-4]}}}},
     r"search.space: \['lr_d'\] are not settings of 'piti' trials"),
    ({"piti": {"sampler": "euler"}}, r"piti: .*sampler.*'euler' unknown"),
    ({"methods": [{"baseline": "training_free", "affinity": "random"}]},
     r"methods\.0\.baseline: 'training_free' trains nothing"),
    ({"piti": {"pretrain": {"lr_schedule": "step"}}},
     (r"piti.pretrain.lr_schedule: .*unknown learning-rate schedule 'step'; expected one of "
      r"\['constant', 'cosine'\]")),
])
def test_schema_refuses_mixed_families_and_unknown_recipe_options(changes, message):
    with pytest.raises(StudyError, match=message):
        parse_study(merge(PITI_STUDY, changes), "piti.yaml")


def test_pretraining_settings_reach_the_source_models_cache_key(tiny_piti_artifacts):
    """Every `piti.pretrain` training field (null: the library's default) is in the key."""
    from cat_models.piti.settings import PRETRAIN_SETTINGS
    from harness.stages_piti import piti_source_inputs

    study, art = tiny_piti_artifacts
    train = piti_source_inputs(study, art.source_ref)["train"]
    assert train["lr_schedule"] == PRETRAIN_SETTINGS.lr_schedule
    changed = parse_study(merge(study.model_dump(mode="json"), {
        "piti": {"pretrain": {"lr_schedule": "cosine", "lr_final": 0.25}}}))
    other = piti_source_inputs(changed, art.source_ref)["train"]
    assert (other["lr_schedule"], other["lr_final"]) == ("cosine", 0.25)
    assert {k: v for k, v in other.items() if k not in ("lr_schedule", "lr_final")} == {
        k: v for k, v in train.items() if k not in ("lr_schedule", "lr_final")}


def test_an_oasis_study_refuses_piti_settings():
    with pytest.raises(StudyError, match=r"\['prompt_count'\] are not settings of 'oasis' "
                                         r"trials \(they are PITI's"):
        parse_study(merge(BASE_STUDY, {"search": {"space": {"prompt_count": 4}}}))
    with pytest.raises(StudyError, match=r"`piti` is set but the study's model is 'oasis'"):
        parse_study(merge(BASE_STUDY, {"piti": {"sampling_steps": 4}}))


def test_dry_run_of_a_piti_study_lists_the_piti_source_stage(tiny_piti_artifacts,
                                                            harness_cache):
    from harness.stages import planned_stages

    study, _ = tiny_piti_artifacts
    assert dict(planned_stages(study, harness_cache))["source-model"] is True
    longer = parse_study(merge(study.model_dump(mode="json"),
                               {"piti": {"pretrain": {"iterations": 5}}}))
    assert dict(planned_stages(longer, harness_cache))["source-model"] is False


# ----------------------------------------------------------------------------- the combination
def _random_matrices(art, folder: Path) -> dict[str, str]:
    from cat_models.affinity.matrix import AffinityMatrix
    from harness.stages_common import BASE_METHODS

    source = tuple(art.source_ref.open("train").class_names)
    target = tuple(art.target_ref.open("train").class_names)
    rng = np.random.default_rng(0)
    paths = {}
    for method in BASE_METHODS:
        values = rng.random((len(source), len(target)))
        paths[method] = str(AffinityMatrix(values / values.sum(0), source, target,
                                           method).save(folder / method))
    return paths


@pytest.mark.parametrize("model", ["oasis", "piti"])
def test_combination_tie_break_ranks_by_the_familys_training_free_fid(
        model, tiny_artifacts, tiny_piti_artifacts, tmp_path):
    """The combination's training-free FID ranking draws samples through the study's family
    (a PITI study's used to fail opening its source model as an OASIS checkpoint); for OASIS it
    gives what the OASIS library's training-free generator gives."""
    from cat_models.metrics.evaluator import Evaluator
    from cat_models.segmenters import load_segmenter
    from harness.stages import FewShotSet
    from harness.stages_affinity import RANKING_REAL, RANKING_SAMPLES, training_free_ranking
    from harness.stages_common import BASE_METHODS

    study, art = tiny_artifacts if model == "oasis" else tiny_piti_artifacts
    study = parse_study(merge(study.model_dump(mode="json"), {"methods": [
        {"label": "cat-combination", "baseline": "cat", "affinity": "combination"}]}))
    shot = FewShotSet(20, 0)
    matrices = _random_matrices(art, tmp_path)
    lines: list[str] = []
    ranking, scores = training_free_ranking(study, art, matrices, shot, lines.append)
    assert sorted(ranking) == sorted(BASE_METHODS) and set(scores) == set(BASE_METHODS)
    assert all(np.isfinite(v) and v > 0 for v in scores.values())
    assert ranking == sorted(scores, key=scores.get)
    assert lines[0].startswith("[stage] affinity-combination (20 images): training-free ")
    assert all(f"{m} FID {scores[m]:.1f} / mIoU " in lines[0] for m in ranking)
    if model == "oasis":
        from cat_models.affinity.matrix import AffinityMatrix
        from cat_models.oasis.sampling import sample_images, training_free_generator
        from harness.stages_common import open_source

        subset = art.target_ref.open("train").subset(art.subset(shot))
        evaluator = Evaluator(subset, subset, load_segmenter(art.eval_segmenter),
                              feature_net=art.feature_net,
                              n_samples=max(2, min(RANKING_SAMPLES, len(subset))),
                              cache_dir=art.stats_cache, max_real_images=RANKING_REAL)
        g = training_free_generator(open_source(art), AffinityMatrix.load(matrices["text"]))
        with torch.no_grad():
            direct = evaluator.evaluate(lambda labels: sample_images(g, labels, seed=0))["fid"]
        assert scores["text"] == pytest.approx(direct, rel=1e-6)
