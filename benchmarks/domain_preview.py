"""A picture of an embedded target domain: images beside their label maps, with a legend.

    python benchmarks/domain_preview.py [--kind synthetic_aerial] [--out PNG]
        [--resolution 64] [--seed 0] [--count 8]

Draws the domain's first training images (the stream a study with this benchmark seed and
resolution uses; `cat_models.data.synthetic_domains.domain_root`) into a temporary folder
and tiles them: each image, then its label map in the legend's colours, `--count` pairs, two
pairs per row. The default output is `docs/images/<kind>.png`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cat_models.data.synthetic_domains import CLASS_NAMES, TARGET_KINDS, domain_root

# the aerial maps' colours per class id (0 unused), map-like: fields yellow-green, water
# blue, roads grey; other domains get `spread_colours`
AERIAL_LEGEND = np.asarray([
    (0, 0, 0), (196, 214, 90), (24, 110, 36), (40, 110, 235), (95, 95, 100), (225, 70, 45),
    (255, 0, 220), (245, 215, 130), (150, 120, 95), (240, 250, 250), (20, 25, 130),
], np.uint8)
SCALE = 3


def spread_colours(n: int) -> np.ndarray:
    """n + 1 colours (row 0 black, unused): hues spread round the circle, lightness
    alternating so neighbouring ids differ."""
    hsv = [(int(255 * k / n), 200 if k % 2 else 255, 150 if k % 3 == 1 else 235)
           for k in range(n)]
    swatch = Image.new("HSV", (n, 1))
    swatch.putdata(hsv)
    return np.concatenate([np.zeros((1, 3), np.uint8),
                           np.asarray(swatch.convert("RGB"))[0]], 0)


def legend_colours(kind: str) -> np.ndarray:
    """The colour of every class id of domain `kind` (row 0 unused)."""
    return AERIAL_LEGEND if kind == "synthetic_aerial" else spread_colours(len(CLASS_NAMES[kind]))


def _pairs(root: Path, count: int, colours: np.ndarray) -> list[np.ndarray]:
    """[image | label map] strips of the first `count` training images under `root`."""
    images = sorted((root / "images" / "training").glob("*.png"))[:count]
    strips = []
    for path in images:
        image = np.asarray(Image.open(path).convert("RGB"))
        label = np.asarray(Image.open(root / "annotations" / "training" / path.name))
        strips.append(np.concatenate([image, colours[label]], 1))
    return strips


def _legend(width: int, names: list[str], colours: np.ndarray) -> Image.Image:
    """Swatches with the class names, four to a line."""
    font = ImageFont.load_default()
    per_line, line_h = 4, 18
    lines = -(-len(names) // per_line)
    canvas = Image.new("RGB", (width, lines * line_h + 6), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(names):
        x, y = (k % per_line) * width // per_line + 6, (k // per_line) * line_h + 4
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(int(c) for c in colours[k + 1]),
                       outline=(0, 0, 0))
        draw.text((x + 17, y), name, fill=(0, 0, 0), font=font)
    return canvas


def preview(out: Path, kind: str = "synthetic_aerial", resolution: int = 64, seed: int = 0,
            count: int = 8) -> Path:
    """Write the picture of target domain `kind` to `out` and return it."""
    colours = legend_colours(kind)
    with tempfile.TemporaryDirectory() as tmp:
        root = domain_root(kind, tmp, resolution, seed, n_target=max(20, count))
        strips = _pairs(root, count, colours)
    if len(strips) % 2:
        strips.append(np.full_like(strips[0], 255))
    gap = np.full((strips[0].shape[0], 4, 3), 255, np.uint8)
    rows = [np.concatenate([a, gap, b], 1) for a, b in zip(strips[::2], strips[1::2])]
    space = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    grid = Image.fromarray(np.concatenate([x for row in rows for x in (row, space)][:-1], 0))
    grid = grid.resize((grid.width * SCALE, grid.height * SCALE), Image.NEAREST)
    legend = _legend(grid.width, CLASS_NAMES[kind], colours)
    picture = Image.new("RGB", (grid.width, grid.height + legend.height), (255, 255, 255))
    picture.paste(grid, (0, 0))
    picture.paste(legend, (0, grid.height))
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", choices=TARGET_KINDS, default="synthetic_aerial")
    p.add_argument("--out", type=Path, default=None, help="default: docs/images/<kind>.png")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=8)
    args = p.parse_args()
    out = args.out or Path("docs/images") / f"{args.kind}.png"
    print(preview(out, args.kind, args.resolution, args.seed, args.count))


if __name__ == "__main__":
    main()
