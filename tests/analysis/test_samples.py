"""Sample grids: comparable trials per method, the final grid, a labelled composite."""

from __future__ import annotations

from PIL import Image

from harness.analysis import load_study
from harness.analysis.samples import compose_labelled, final_sample, representative_samples
from tests.analysis.conftest import METHODS, trial_dir_of


def test_final_grid_wins_over_intermediate_ones(study_dir):
    trial = trial_dir_of(study_dir, "freezed", 25, 0)
    assert final_sample(trial).name == "final.png"
    (trial / "samples" / "final.png").unlink()
    Image.new("RGB", (4, 4)).save(trial / "samples" / "iter_000900.png")
    assert final_sample(trial).name == "iter_000900.png"  # the latest, in natural order
    assert final_sample(trial_dir_of(study_dir, "freezed", 25, 1)) is None


def test_one_comparable_trial_per_method_in_declared_order(study_dir):
    results = load_study(study_dir)
    chosen = representative_samples(results.final, study_dir,
                                    order=list(reversed(METHODS)))
    assert list(chosen) == list(reversed(METHODS))
    for method, png in chosen.items():
        # sizes tie on trial count: the larger one, seed 0 (the trials that saved samples)
        assert png == trial_dir_of(study_dir, method, 100, 0) / "samples" / "final.png"


def test_composite_stacks_grids_under_a_label_band(study_dir, tmp_path):
    chosen = representative_samples(load_study(study_dir).final, study_dir)
    out = compose_labelled(chosen, tmp_path / "grid.png", band=50)
    image = Image.open(out)
    assert image.size == (50 + 96, 3 * (32 + 4))
    # the second grid (cat-random, green shade 100) sits right of the band in the 2nd slot
    assert image.getpixel((60, 36 + 10)) == (0, 100, 0)
    assert image.getpixel((60, 10)) == (0, 40, 0)
