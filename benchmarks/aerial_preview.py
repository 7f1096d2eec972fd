"""A picture of the aerial target domain: images beside their label maps, with a legend.

    python benchmarks/aerial_preview.py [--out docs/images/synthetic_aerial.png]
        [--resolution 64] [--seed 0] [--count 8]

Draws the domain's first training images (`generate_aerial`, the stream a study with this
benchmark seed and resolution uses) into a temporary folder and tiles them: each image, then
its label map in the legend's colours, `--count` pairs, two pairs per row.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cat_models.data.synthetic_aerial import AERIAL_CLASSES, generate_aerial

# one colour per class id (0 unused), map-like: fields yellow-green, water blue, roads grey
LEGEND = np.asarray([
    (0, 0, 0), (196, 214, 90), (24, 110, 36), (40, 110, 235), (95, 95, 100), (225, 70, 45),
    (255, 0, 220), (245, 215, 130), (150, 120, 95), (240, 250, 250), (20, 25, 130),
], np.uint8)
SCALE = 3


def _pairs(root: Path, count: int) -> list[np.ndarray]:
    """[image | label map] strips of the first `count` training images under `root`."""
    images = sorted((root / "images" / "training").glob("*.png"))[:count]
    strips = []
    for path in images:
        image = np.asarray(Image.open(path).convert("RGB"))
        label = np.asarray(Image.open(root / "annotations" / "training" / path.name))
        strips.append(np.concatenate([image, LEGEND[label]], 1))
    return strips


def _legend(width: int) -> Image.Image:
    """Swatches with the class names, four to a line."""
    font = ImageFont.load_default()
    per_line, line_h = 4, 18
    lines = -(-len(AERIAL_CLASSES) // per_line)
    canvas = Image.new("RGB", (width, lines * line_h + 6), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(AERIAL_CLASSES):
        x, y = (k % per_line) * width // per_line + 6, (k // per_line) * line_h + 4
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(int(c) for c in LEGEND[k + 1]),
                       outline=(0, 0, 0))
        draw.text((x + 17, y), name, fill=(0, 0, 0), font=font)
    return canvas


def preview(out: Path, resolution: int = 64, seed: int = 0, count: int = 8) -> Path:
    """Write the picture to `out` and return it."""
    with tempfile.TemporaryDirectory() as tmp:
        strips = _pairs(generate_aerial(Path(tmp), resolution, seed, n_target=max(20, count)),
                        count)
    if len(strips) % 2:
        strips.append(np.full_like(strips[0], 255))
    gap = np.full((strips[0].shape[0], 4, 3), 255, np.uint8)
    rows = [np.concatenate([a, gap, b], 1) for a, b in zip(strips[::2], strips[1::2])]
    space = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    grid = Image.fromarray(np.concatenate([x for row in rows for x in (row, space)][:-1], 0))
    grid = grid.resize((grid.width * SCALE, grid.height * SCALE), Image.NEAREST)
    legend = _legend(grid.width)
    picture = Image.new("RGB", (grid.width, grid.height + legend.height), (255, 255, 255))
    picture.paste(grid, (0, 0))
    picture.paste(legend, (0, grid.height))
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/images/synthetic_aerial.png"))
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=8)
    args = p.parse_args()
    print(preview(args.out, args.resolution, args.seed, args.count))


if __name__ == "__main__":
    main()
