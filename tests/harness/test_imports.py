"""Validating a study and `--dry-run` import no torch, Ray or model libraries, and still run
every input check; the names the schema reads without importing the registries are the
registries' own.

What imports what on the dry-run path: the schema reads recipe, estimator and backend names
from their modules' source (`cat_models.registered`), the PITI settings from
`cat_models.piti.settings`; the plan opens no dataset (the statistics file is named from the
split's files, `cat_models.metrics.stats_key`) and builds Tune's grid axes without Ray. Only
checks that need a network import torch, when the study names one: the source checkpoint
(`cat_models.oasis.source`) and a named segmenter (`cat_models.segmenters`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.conftest import subprocess_env
from tests.harness.test_run_cli import BAD_INPUTS, _bad_study

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted((REPO / "studies").glob("*.yaml"))
HEAVY = ("torch", "torchvision", "ray", "diffusers", "transformers", "scipy", "timm",
         "open_clip", "sentence_transformers")
# A small embedded benchmark instead of each study's (the same kinds and checks, seconds to draw).
BENCH = {"resolution": 32, "seed": 0, "n_source": 40, "n_target": 40}
SMALL = [f"--set=benchmark.{k}={v}" for k, v in BENCH.items()] + ["--set=target_sizes=[10]",
                                                                  "--set=resolution=32"]
# Bad inputs whose check needs a network file read (torch is imported for those only).
NEEDS_TORCH = {"not-a-checkpoint", "wrong-architecture-checkpoint",
               "wrong-resolution-checkpoint", "missing-checkpoint"}
# a named network is loaded by its own library (timm, transformers, open_clip)
LOADS_A_NETWORK = {"wrong-timm-checkpoint", "unknown-timm-model", "wrong-sentence-model",
                   "open-clip-weights-not-a-checkpoint"}

DRY_RUN = f"""
import json, sys
from harness.run import main
code = main(sys.argv[1:])
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def _dry_run(*args: str) -> tuple[dict, str, str]:
    """`harness.run`'s main with --dry-run in a fresh interpreter: (result, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-c", DRY_RUN, *args, "--dry-run"], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    *lines, last = proc.stdout.strip().splitlines() or ["{}"]
    return json.loads(last), "\n".join(lines), proc.stderr


@pytest.fixture(scope="module")
def drawn_cache(tmp_path_factory) -> Path:
    """A stage cache holding the drawn benchmark (every target domain), so the dry run checks
    its datasets."""
    from cat_models.data.synthetic import ensure_benchmark
    from cat_models.data.synthetic_domains import SEPARATE_TARGETS

    cache = tmp_path_factory.mktemp("cache")
    ensure_benchmark(cache / "synthetic", **BENCH)
    for target in SEPARATE_TARGETS.values():
        target.ensure(cache / "synthetic", BENCH["resolution"], BENCH["seed"], BENCH["n_target"])
    return cache


@pytest.mark.parametrize("study", STUDIES, ids=[p.stem for p in STUDIES])
def test_dry_run_of_a_shipped_study_imports_no_heavy_module(study, drawn_cache, tmp_path):
    result, out, err = _dry_run(str(study), f"--set=cache_dir={drawn_cache}",
                                "--output", str(tmp_path / "out"), *SMALL)
    assert result["code"] == 0, err
    assert result["heavy"] == [], result
    # the input checks ran on the drawn datasets, and the plan read the cache
    assert "[check] source dataset" in out and "[check] target dataset" in out, out
    assert "40 training" in out and "drawn by the run" not in out
    assert "[plan]   stage dataset-target" in out and "[plan] inputs checked" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", [c for c in BAD_INPUTS
                                  if c not in NEEDS_TORCH | LOADS_A_NETWORK])
def test_bad_input_fails_the_dry_run_without_heavy_imports(tmp_path, case):
    """The torch-free dry run keeps every check: one line naming file and field, exit 2."""
    path, field, message = _bad_study(tmp_path, case)
    result, _, err = _dry_run(str(path))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert result["code"] == 2, err
    assert len(errors) == 1 and message in errors[0], err
    assert errors[0].startswith(f"error: {path}: {field}"), err
    assert result["heavy"] == [], result


@pytest.mark.parametrize("case", sorted(NEEDS_TORCH))
def test_a_named_checkpoint_is_still_checked(tmp_path, case):
    path, field, message = _bad_study(tmp_path, case)
    result, _, err = _dry_run(str(path))
    assert result["code"] == 2 and message in err and f"{path}: {field}" in err, err
    assert not {"ray", "diffusers", "transformers"} & set(result["heavy"]), result


@pytest.mark.parametrize("case", sorted(LOADS_A_NETWORK))
def test_a_named_network_is_checked_without_ray(tmp_path, case):
    path, field, message = _bad_study(tmp_path, case)
    result, _, err = _dry_run(str(path))
    assert result["code"] == 2 and message in err and f"{path}: {field}" in err, err
    assert not {"ray", "diffusers"} & set(result["heavy"]), result


NAMES = """
import json, sys
from cat_models.affinity.registry import available_estimators
from cat_models.piti.settings import sampler_names
from cat_models.registered import assigned_names
from harness.families import FAMILIES

def names():
    return {
        "recipes": {f: {r: fam.recipe_options(r) for r in fam.recipes()}
                    for f, fam in FAMILIES.items()},
        "estimators": available_estimators(),
        "text_backends": assigned_names("cat_models.affinity.text_backends", "TEXT_BACKENDS"),
        "inception_layers": assigned_names("cat_models.affinity.feature_backends",
                                           "INCEPTION_LAYERS"),
        "samplers": sampler_names(),
    }

light = names()
assert not {"torch", "diffusers"} & set(sys.modules), "the names imported torch"
from cat_models.affinity import feature_backends, registry, text_backends
from cat_models.oasis.baselines import BASELINES
from cat_models.piti.recipes import RECIPES
from cat_models.piti.sampling import SAMPLERS
registry._import_builtin()
live = {
    "recipes": {"oasis": {r: BASELINES.options(r) for r in BASELINES},
                "piti": {r: RECIPES.options(r) for r in RECIPES}},
    "estimators": sorted(registry.ESTIMATORS),
    "text_backends": list(text_backends.TEXT_BACKENDS),
    "inception_layers": list(feature_backends.INCEPTION_LAYERS),
    "samplers": list(SAMPLERS),
}
print(json.dumps({"light": light, "live": live, "live_via_light": names()}))
"""


def test_names_read_without_importing_equal_the_registries():
    """Recipe names and options, estimators, backends, Inception layers, samplers: read from
    the source in a fresh interpreter, then the same once the heavy modules are imported."""
    proc = subprocess.run([sys.executable, "-c", NAMES], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(got["live"].values())
    assert got["light"] == got["live"]
    assert got["live_via_light"] == got["live"]


def test_the_plan_names_the_statistics_file_the_run_computes(small_benchmark, tmp_path):
    """The dry run's statistics file (from the split's files and the network's identifier)
    is the one the run writes (from the opened dataset and the loaded network)."""
    from cat_models.data import open_dataset
    from cat_models.metrics.feature_net import load_feature_net
    from cat_models.metrics.stats_key import file_view, net_identifier, stats_path

    root = small_benchmark.target_root
    dataset = open_dataset("folder", root, "val", 32)
    net = load_feature_net(None)
    assert net_identifier(None) == net.identifier
    planned = stats_path(file_view("folder", root, "val", 32), net_identifier(None), tmp_path)
    assert planned == stats_path(dataset, net, tmp_path)
    assert planned != stats_path(file_view("folder", root, "val", 48), net.identifier, tmp_path)
