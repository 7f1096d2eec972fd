""""Iterations to convergence" from a trial's metric history (paper §4.3, Fig. 4 right panel).

The paper reports the number of training iterations before convergence without a formula; the
definition used here:

    smooth the metric with a trailing moving average over `window` evaluations;
    best = the best smoothed value over the whole history;
    converged at the first evaluation iteration from which the smoothed metric stays within
    `tolerance` (relative, e.g. 0.05 = 5%) of `best` for every later evaluation.

None when the history is empty or the last smoothed value is not within the band (the run
ended while drifting away from its best: it has not converged). Non-finite values never count
as within the band. Pure functions of the history, so the analysis can recompute it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last `window` values (fewer at the start)."""
    if window < 1:
        raise ValueError(f"moving_average: window must be >= 1, got {window}")
    v = np.asarray(values, dtype=np.float64)
    out = np.empty_like(v)
    for i in range(len(v)):
        out[i] = v[max(0, i - window + 1):i + 1].mean()
    return out


def iterations_to_convergence(iterations: Sequence[int], values: Sequence[float],
                              tolerance: float = 0.05, window: int = 3,
                              lower_is_better: bool = True) -> int | None:
    """The first iteration after which the smoothed metric stays within `tolerance` of its best.

    `iterations` and `values` are the evaluation history in order (e.g. FID every N steps);
    FID and KID: lower_is_better=True; mIoU: False.
    """
    if len(iterations) != len(values):
        raise ValueError(f"iterations_to_convergence: {len(iterations)} iterations but "
                         f"{len(values)} values")
    if tolerance < 0:
        raise ValueError(f"iterations_to_convergence: tolerance must be >= 0, got {tolerance}")
    if len(values) == 0:
        return None
    smoothed = moving_average(values, window)
    finite = np.isfinite(smoothed)
    if not finite.any():
        return None
    best = smoothed[finite].min() if lower_is_better else smoothed[finite].max()
    band = abs(best) * tolerance
    with np.errstate(invalid="ignore"):
        within = finite & ((smoothed <= best + band) if lower_is_better
                           else (smoothed >= best - band))
    if not within[-1]:
        return None
    outside = np.flatnonzero(~within)
    first = 0 if len(outside) == 0 else int(outside[-1]) + 1
    return int(iterations[first])
