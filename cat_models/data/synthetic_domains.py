"""The embedded benchmark's domains by dataset kind: class names, ground truth, folders.

`synthetic_source` and `synthetic_target` are the outdoor benchmark
(`cat_models.data.synthetic`); `synthetic_aerial` is the aerial target
(`cat_models.data.synthetic_aerial`) and `synthetic_longtail` the many-class, long-tailed
outdoor target (`cat_models.data.synthetic_longtail`), each drawn into its own folder from its
own random stream. Every domain is on disk in the `folder` layout (ADE20K layout + classes.txt).
"""

from __future__ import annotations

from pathlib import Path

from cat_models.data import synthetic, synthetic_aerial, synthetic_longtail

SOURCE_KIND = "synthetic_source"
# targets for the synthetic source
TARGET_KINDS = ("synthetic_target", "synthetic_aerial", "synthetic_longtail")
CLASS_NAMES: dict[str, list[str]] = {
    SOURCE_KIND: synthetic.SOURCE_CLASSES,
    "synthetic_target": synthetic.TARGET_CLASSES,
    "synthetic_aerial": synthetic_aerial.AERIAL_CLASSES,
    "synthetic_longtail": synthetic_longtail.LONGTAIL_CLASSES,
}
# per target kind: target class -> most related source class (None: no counterpart)
GROUND_TRUTHS: dict[str, dict[str, str | None]] = {
    "synthetic_target": synthetic.GROUND_TRUTH,
    "synthetic_aerial": synthetic_aerial.AERIAL_GROUND_TRUTH,
    "synthetic_longtail": synthetic_longtail.LONGTAIL_GROUND_TRUTH,
}
# the targets drawn on their own stream into their own folder
SEPARATE_TARGETS: dict[str, synthetic.DrawnTarget] = {
    "synthetic_aerial": synthetic_aerial.AERIAL,
    "synthetic_longtail": synthetic_longtail.LONGTAIL,
}


def domain_root(kind: str, root: str | Path | None = None, resolution: int = 64,
                seed: int = 0, n_source: int = 2000, n_target: int = 1000,
                materialise: bool = True) -> Path:
    """The folder of domain `kind` for these benchmark settings (under `root`, else
    `cache_root()/synthetic`); drawn first (once, cached) unless `materialise` is False."""
    if kind in SEPARATE_TARGETS:
        target = SEPARATE_TARGETS[kind]
        return (target.ensure if materialise else target.folder)(root, resolution, seed,
                                                                  n_target)
    if kind not in CLASS_NAMES:
        raise ValueError(f"unknown synthetic dataset kind {kind!r}; known: {list(CLASS_NAMES)}")
    where_both = synthetic.ensure_benchmark if materialise else synthetic.benchmark_folders
    bench = where_both(root, resolution, seed, n_source, n_target)
    return bench.source_root if kind == SOURCE_KIND else bench.target_root
