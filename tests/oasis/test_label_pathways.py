"""benchmarks/fidelity_readings.label_pathways reads, from a CAT generator's weights, which
path carries the target classes (A or the residual branches) and how distinct they are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cat_models.oasis.transfer import CATSPADE, cat_generator
from tests.conftest import load_benchmark_script

SOURCE = ["s1", "s2", "s3", "s4", "s5"]
TARGET = ["t1", "t2", "t3"]
TRUTH = {"t1": "s3", "t2": "s1", "t3": None}


@pytest.fixture(scope="module")
def fc():
    return load_benchmark_script("fidelity_readings")


def _generator(g, a):
    return cat_generator(g, len(TARGET), a, split=True, residual=True)


def test_a_right_columns_and_no_residual_at_the_start(fc, source_models):
    _, g, _ = source_models
    a = np.zeros((5, 3))
    a[[2, 0, 4], [0, 1, 2]] = 1.0                 # t1 -> s3, t2 -> s1 (right), t3 -> s5
    out = fc.label_pathways(_generator(g, a), SOURCE, TARGET, TRUTH)
    assert out["a_top1"] == 1.0                    # t3 has no counterpart: not counted
    assert out["a_argmax"] == {"t1": "s3", "t2": "s1", "t3": "s5"}
    assert out["res_share"] == 0.0                 # the residual convs start at zero
    assert out["class_contrast"] > 0.1

    wrong = np.zeros((5, 3))
    wrong[[1, 0, 4], [0, 1, 2]] = 1.0               # t1 -> s2: one of two wrong
    assert fc.label_pathways(_generator(g, wrong), SOURCE, TARGET, TRUTH)["a_top1"] == 0.5


def test_identical_columns_leave_no_contrast_until_the_residuals_learn(fc, source_models):
    _, g, _ = source_models
    gen = _generator(g, np.full((5, 3), 0.2))       # every class drawn as the same blend
    before = fc.label_pathways(gen, SOURCE, TARGET)
    assert before["class_contrast"] < 1e-6
    assert "a_top1" not in before                   # no ground truth given
    torch.manual_seed(0)
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, CATSPADE):
                m.res_gamma.weight.normal_(0, 1.0)
                m.res_beta.weight.normal_(0, 1.0)
    after = fc.label_pathways(gen, SOURCE, TARGET)
    assert after["class_contrast"] > 0.1
    assert 0.0 < after["res_share"] < 1.0


def test_without_residual_branches_only_a_carries_the_classes(fc, source_models):
    _, g, _ = source_models
    a = np.random.default_rng(0).random((5, 3))
    plain = cat_generator(g, len(TARGET), a / a.sum(0), split=True, residual=False)
    out = fc.label_pathways(plain, SOURCE, TARGET, TRUTH)
    assert out["res_share"] == 0.0
    assert out["class_contrast"] > 0.0              # distinct columns, distinct responses
    assert out["a_argmax"]["t1"] == SOURCE[int(np.argmax(a[:, 0]))]
