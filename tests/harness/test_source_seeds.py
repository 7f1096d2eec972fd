"""A study with `source_seeds` through `python -m harness.run`: one run per source-pretraining
seed, each with its own source model, then one analysis that pools them. (Each sub-study is
an ordinary study, so its stages are cached and reused as `test_end_to_end.py` checks.)"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.harness.conftest import tiny_study, write_study
from tests.harness.test_end_to_end import result_rows, run_harness, summary_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("source-seeds")
    data = tiny_study(tmp / "cache", tmp / "out", source_seeds=[0, 1])
    data["methods"] = data["methods"][:1]           # one trial per source seed
    study = write_study(tmp / "tiny.yaml", data)
    return study, tmp / "out" / "tiny", run_harness(str(study), timeout=500)


def test_each_source_seed_gets_its_own_source_model_and_trials(pooled):
    _, out, proc = pooled
    summary = summary_of(proc.stdout)
    assert summary["source_seeds"] == [0, 1]
    assert (summary["trials"], summary["finished_trials"], summary["failed_trials"]) == (2, 2, 0)
    hashes = []
    for seed in (0, 1):
        sub = out / f"source_seed_{seed}"
        assert summary["per_source_seed"][str(seed)] == str(sub)
        resolved = (sub / "study.yaml").read_text()
        assert f"name: tiny-source{seed}\n" in resolved
        (trial,) = sorted((sub / "tune").glob("train_*"))
        assert json.loads((trial / "params.json").read_text())["method"] == "no-cat"
        hashes.append(result_rows(trial)[-1]["source_ckpt_hash"])
        assert (sub / "analysis" / "tables" / "main.md").is_file()
    assert hashes[0] != hashes[1]           # two pretrainings, two source models
    # the second source model was built, not taken from the first one's cache entry
    assert proc.stdout.count("[stage] source-model: building") == 2


def test_pooled_analysis_spans_the_source_seeds(pooled):
    _, out, _ = pooled
    final = pd.read_csv(out / "analysis" / "results_final.csv")
    assert sorted(final["source_seed"]) == [0, 1]
    assert final["source_ckpt_hash"].nunique() == 2
    table = (out / "analysis" / "tables" / "main.md").read_text()
    (row,) = [line for line in table.splitlines() if line.startswith("| no-cat |")]
    fids = final["fid"].to_numpy()
    # one row for both trials: mean ± sample std over the two source models
    assert f"{fids.mean():.1f} ± {fids.std(ddof=1):.1f}" in row
    assert "source_seed" in (out / "analysis" / "report.html").read_text()

