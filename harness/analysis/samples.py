"""Sample grids for the report: one trial per method at the same setting, stacked and labelled.

Each trial folder holds `samples/*.png` (grids of label map | real | generated written by the
trainer on fixed validation label maps, so trials of one study show the same maps). We take,
per method, the trial at the study's most common target size with the lowest seed, and its
final grid ("final" in the name, else the last one in natural order).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def final_sample(trial_dir: Path) -> Path | None:
    """The trial's final sample grid PNG, or None when it wrote none."""
    files = sorted((trial_dir / "samples").glob("*.png"), key=_natural)
    finals = [f for f in files if "final" in f.name.lower()]
    return (finals or files or [None])[-1]


def representative_samples(final: pd.DataFrame, root: Path, by: str = "method",
                           order: list[Any] | None = None) -> dict[Any, Path]:
    """{method: sample PNG} choosing comparable trials (same size, lowest seed, finished first)."""
    rows = final.copy()
    rows["_png"] = [final_sample(root / d) for d in rows["trial_dir"]]
    rows = rows[rows["_png"].notna()]
    if rows.empty:
        return {}
    if "target_size" in rows and rows["target_size"].notna().any():
        counts = rows["target_size"].value_counts()
        size = max(s for s in counts.index if counts[s] == counts.max())
        rows = rows[rows["target_size"] == size]
    rows["_unfinished"] = rows.get("status", "complete") != "complete"
    sort = [c for c in ("_unfinished", "seed", "trial_dir") if c in rows]
    rows = rows.sort_values(sort)
    labels = [x for x in (order or []) if x in set(rows[by])]
    labels += [x for x in rows[by].drop_duplicates() if x not in labels]
    return {label: Path(rows[rows[by] == label]["_png"].iloc[0]) for label in labels}


def compose_labelled(images: dict[Any, Path], out: Path, band: int = 150) -> Path:
    """Stack the grids vertically with the method name in a left band (PIL, no fonts needed).

    A grid that names its rows (the PNG text chunk `rows`, written by the trial) gets the
    method name at its top and each row's caption ("label map", "real", "generated") beside
    that row; otherwise the name is centred beside the grid.
    """
    from PIL import Image, ImageDraw

    opened = []
    for label, p in images.items():
        with Image.open(p) as im:
            rows = [r for r in str(im.info.get("rows", "")).split("|") if r]
            opened.append((str(label), rows, im.convert("RGB")))
    width = band + max(im.width for _, _, im in opened)
    canvas = Image.new("RGB", (width, sum(im.height + 4 for _, _, im in opened)), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for label, rows, im in opened:
        canvas.paste(im, (band, y))
        if rows:
            draw.text((6, y + 2), label[:24], fill="black")
            step = im.height / len(rows)
            for k, row in enumerate(rows):
                draw.text((16, y + int((k + 0.5) * step) - 2), row[:22], fill=(90, 90, 90))
        else:
            draw.text((6, y + im.height // 2 - 6), label[:24], fill="black")
        y += im.height + 4
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
