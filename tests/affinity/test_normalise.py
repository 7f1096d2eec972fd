"""Column normalisation: unit sums, negative cosines, temperature, top-k."""

from __future__ import annotations

import numpy as np
import pytest

from cat_models.affinity import AffinityError, normalise_columns

COSINES = np.array([
    [0.6, -0.2, -0.5],
    [0.2, -0.4, -0.1],
    [-0.3, 0.3, -0.9],
    [0.2, 0.1, -0.2],
])


def test_clip_drops_negative_cosines_then_normalises():
    a = normalise_columns(COSINES)
    np.testing.assert_allclose(a.sum(0), 1.0)
    np.testing.assert_allclose(a[:, 0], [0.6, 0.2, 0.0, 0.2])
    np.testing.assert_allclose(a[:, 1], [0.0, 0.0, 0.75, 0.25])
    # no positive cosine at all: no information -> uniform, never NaN
    np.testing.assert_allclose(a[:, 2], [0.25] * 4)


def test_softmax_temperature_matches_formula_and_sharpens():
    a = normalise_columns(COSINES, temperature=0.5)
    e = np.exp(COSINES[:, 0] / 0.5)
    np.testing.assert_allclose(a[:, 0], e / e.sum())
    np.testing.assert_allclose(a.sum(0), 1.0)
    assert (a > 0).all()  # softmax keeps every class, negatives included
    sharp = normalise_columns(COSINES, temperature=0.01)
    assert sharp[0, 0] > 0.999 and a[0, 0] < 0.5
    with pytest.raises(AffinityError, match="temperature must be > 0"):
        normalise_columns(COSINES, temperature=0.0)


def test_top_k_keeps_k_largest_and_renormalises():
    a = normalise_columns(COSINES, top_k=2)
    np.testing.assert_allclose(a[:, 0], [0.75, 0.25, 0.0, 0.0])  # 0.2 tie: first source kept
    assert ((a > 0).sum(0) <= 2).all()
    np.testing.assert_allclose(a.sum(0), 1.0)
    soft = normalise_columns(COSINES, temperature=1.0, top_k=1)
    np.testing.assert_array_equal(soft.argmax(0), COSINES.argmax(0))
    np.testing.assert_allclose(soft.max(0), 1.0)
    np.testing.assert_allclose(normalise_columns(COSINES, top_k=10), normalise_columns(COSINES))


def test_bad_scores_are_rejected():
    with pytest.raises(AffinityError, match="non-empty C_S × C_T"):
        normalise_columns(np.zeros((0, 3)))
    with pytest.raises(AffinityError, match="NaN or inf"):
        normalise_columns(np.array([[np.inf]]))


def test_center_keeps_only_above_average_sources():
    # All-positive, nearly equal cosines (as sentence embeddings give): clipping leaves the
    # column nearly uniform, centring keeps the sources above the column mean.
    cos = np.array([[0.90, 0.50], [0.60, 0.55], [0.55, 0.80], [0.55, 0.55]])
    clipped = normalise_columns(cos)
    assert clipped[:, 0].max() < 0.35
    a = normalise_columns(cos, nonnegativity="center")
    mean = cos[:, 0].mean()
    expected = np.clip(cos[:, 0] - mean, 0, None)
    np.testing.assert_allclose(a[:, 0], expected / expected.sum())
    assert a[0, 0] > 0.85 and a[3, 0] == 0.0
    np.testing.assert_allclose(a.sum(0), 1.0)
    # a constant column has no above-average source: uniform, never NaN
    np.testing.assert_allclose(normalise_columns(np.full((4, 1), 0.7), nonnegativity="center"),
                               0.25)


def test_nonnegativity_and_temperature_must_agree():
    np.testing.assert_allclose(normalise_columns(COSINES, temperature=0.5),
                               normalise_columns(COSINES, 0.5, nonnegativity="softmax"))
    with pytest.raises(AffinityError, match="'softmax' needs a temperature"):
        normalise_columns(COSINES, nonnegativity="softmax")
    with pytest.raises(AffinityError, match="applies to 'softmax' only"):
        normalise_columns(COSINES, temperature=0.5, nonnegativity="center")
    with pytest.raises(AffinityError, match="nonnegativity: expected one of"):
        normalise_columns(COSINES, nonnegativity="abs")
