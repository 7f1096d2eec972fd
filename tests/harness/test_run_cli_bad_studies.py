"""A study the schema refuses (`python -m harness.run BAD.yaml`, with and without
`--dry-run`): exit 2, one line naming the file and the field, nothing earlier lost."""

from __future__ import annotations

import pytest

from harness.run import main
from tests.harness.conftest import merge, tiny_study, write_study

BAD_STUDIES = [
    pytest.param({"trainig": {"iterations": 4}}, "trainig", "Extra inputs are not permitted",
                 id="unknown-key"),
    pytest.param({"evaluation": {"n_samples": "many"}}, "evaluation.n_samples",
                 "valid integer", id="wrong-type"),
    pytest.param({"training": {"eval_every": 2, "checkpoint_every": 3}}, "training",
                 "checkpoint_every (3) must be a multiple of eval_every (2)",
                 id="checkpoint-not-multiple-of-eval"),
    pytest.param({"methods": [{"baseline": "stylegan"}]}, "methods.0.baseline",
                 "unknown method 'stylegan'", id="unknown-method"),
    pytest.param({"methods": [{"affinity": "vibes"}]}, "methods.0.affinity",
                 "unknown affinity 'vibes'", id="unknown-affinity"),
    pytest.param({"target": {"subset": {"sampler": "stratified"}}}, "target.subset.sampler",
                 "unknown few-shot sampler 'stratified'; expected one of ['kl_greedy', ",
                 id="unknown-sampler"),
    pytest.param({"target": {"subset": {"sampler": "rare_classes"}}}, "target.subset",
                 "sampler 'rare_classes' needs `rare_classes`", id="rare-sampler-without-classes"),
    pytest.param({"target": {"subset": {"rare_classes": ["house"]}}}, "target.subset",
                 "read by the samplers ['rare_classes'] only, not by 'kl_greedy'",
                 id="rare-classes-for-another-sampler"),
]


@pytest.mark.parametrize("change, field, message", BAD_STUDIES)
@pytest.mark.parametrize("mode", [["--dry-run"], []], ids=["dry-run", "run"])
def test_bad_study_exits_2_naming_file_and_field(tmp_path, capsys, change, field, message,
                                                 mode):
    data = merge(tiny_study(tmp_path / "cache", tmp_path / "out"), change)
    path = write_study(tmp_path / "bad.yaml", data)
    keep = tmp_path / "out" / "tiny" / "earlier-result.txt"       # nothing earlier is lost
    keep.parent.mkdir(parents=True)
    keep.write_text("kept")
    code = main([str(path), *mode])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "Traceback" not in err, err   # one message
    assert err.startswith(f"error: {path}: {field}: "), err
    assert message in err
    assert keep.read_text() == "kept" and not (tmp_path / "cache").exists()
