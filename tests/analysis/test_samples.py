"""Sample grids: comparable trials per method, the final grid, a labelled composite."""

from __future__ import annotations

import numpy as np
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


def test_composite_captions_each_row_of_a_grid_that_names_its_rows(tmp_path):
    from harness.trial import grid_rows, save_grid

    grid = np.full((3 * 20, 40, 3), 200, dtype=np.uint8)
    save_grid(tmp_path / "named.png", grid, scale=2, rows=grid_rows(with_real=True))
    save_grid(tmp_path / "plain.png", grid, scale=2)
    band = 120
    named = np.asarray(Image.open(compose_labelled({"cat": tmp_path / "named.png"},
                                                   tmp_path / "a.png", band=band)))
    plain = np.asarray(Image.open(compose_labelled({"cat": tmp_path / "plain.png"},
                                                   tmp_path / "b.png", band=band)))
    row_h = 2 * 20

    def inked(image, k):  # any text in the band beside row k (below the top line)
        return (image[k * row_h + 14:(k + 1) * row_h, :band] < 200).any()

    assert all(inked(named, k) for k in range(3))
    # without row names only the method name, centred beside the grid: rows 0 and 2 stay blank
    assert inked(plain, 1) and not inked(plain, 0) and not inked(plain, 2)
