"""Affinity heatmaps: target rows × source columns with class names and the top-k marked."""

from __future__ import annotations

import numpy as np
import pytest

from cat_models.plotting import top_k_text
from harness.analysis.heatmaps import (
    affinity_heatmap_figure,
    find_affinities,
    load_affinity,
)
from tests.analysis.conftest import SOURCE, TARGET


def test_top_k_ranks_each_row_and_keeps_source_order_on_ties():
    text = top_k_text(np.array([[0.1, 0.5, 0.5, 0.2], [0.9, 0.0, 0.05, 0.05]]), k=2)
    assert text[0] == ["", "#1 0.50", "#2 0.50", ""]
    assert text[1] == ["#1 0.90", "", "#2 0.05", ""]


def test_heatmap_from_the_study_files_names_classes_and_marks_top_k(study_dir):
    paths = find_affinities(study_dir)
    assert list(paths) == ["combination"]
    matrix = load_affinity(paths["combination"])  # no .json sidecar: names from the CSV
    assert matrix.method == "combination"
    fig = affinity_heatmap_figure(matrix, top_k=2)
    heat = fig.data[0]
    assert list(heat.x) == SOURCE and list(heat.y) == TARGET
    z = np.asarray(heat.z)
    assert z.shape == (3, 4)                      # rows are target classes
    assert z[TARGET.index("street"), SOURCE.index("road")] == pytest.approx(0.8)
    sea = dict(zip(SOURCE, heat.text[TARGET.index("sea")]))
    assert sea == {"sky": "#1 0.70", "grass": "", "water": "#2 0.20", "road": ""}
    assert heat.texttemplate == "%{text}"
    assert "top-2 per target" in fig.layout.title.text
    assert fig.layout.xaxis.title.text == "source class"


def test_an_unreadable_matrix_is_a_value_error_naming_the_file(study_dir):
    (study_dir / "affinities" / "combination.csv").write_text("only-one-column\n")
    with pytest.raises(ValueError, match="combination.npy: cannot read the affinity matrix"):
        load_affinity(study_dir / "affinities" / "combination.npy")
