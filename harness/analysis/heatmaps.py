"""Affinity heatmaps for the report: target classes × source classes, top-k per target marked.

Reads the matrices the harness saved under `<study>/affinities/<method>.npy` (+ `.csv`/`.json`
names, `cat_models.affinity.matrix` format). Rows are target classes so each row reads as
"which source classes does this new class borrow from" (paper §3.1, A_{k,l}).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing cat_models.affinity pulls in torch: only when a matrix is read
    from cat_models.affinity.matrix import AffinityMatrix


def find_affinities(study_dir: str | Path) -> dict[str, Path]:
    """{method: .npy path} for every matrix under `<study_dir>/affinities/`."""
    folder = Path(study_dir) / "affinities"
    return {p.stem: p for p in sorted(folder.glob("*.npy"))} if folder.is_dir() else {}


def affinity_heatmap_figure(affinity: AffinityMatrix, top_k: int = 3,
                            title: str | None = None) -> Any:
    """plotly heatmap, rows = target classes, columns = source classes, top-k annotated."""
    from cat_models.plotting import heatmap_figure

    return heatmap_figure(affinity, rows="target", top_k=max(1, top_k), title=title)


def load_affinity(path: Path) -> AffinityMatrix:
    """AffinityMatrix.load with the method named after the file when the sidecar lacks it."""
    from cat_models.affinity.matrix import AffinityError, AffinityMatrix

    try:
        matrix = AffinityMatrix.load(path)
    except (AffinityError, ValueError, OSError) as err:
        raise AffinityError(f"{path}: cannot read the affinity matrix: {err}") from None
    if matrix.method == "unknown":
        matrix = matrix.with_values(matrix.values, method=path.stem)
    return matrix
