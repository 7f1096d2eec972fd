"""A second embedded target domain: aerial (top-down) maps, drawn independently of the first.

The embedded target (`cat_models.data.synthetic`) shares the source's outdoor scene grammar;
this one does not. There is no sky and no horizon: field patches tile the map (a stretched
Voronoi diagram), a river crosses it as a thick meandering band, highways as straight or
gently curved strips with vehicles on them, and villages of roofs, greenhouse rows, solar
farms and clusters of tree canopies stand on the fields. Class names, shapes and textures
differ from both outdoor domains. Eight classes have a source counterpart that looks related
but is drawn differently (`AERIAL_GROUND_TRUTH`, e.g. "river" ~ water), two have none.

Drawn from its own random stream (the benchmark seed mixed with `AERIAL_STREAM`), into its own
cached folder, so the outdoor benchmark's files do not depend on this module.
"""

from __future__ import annotations

import numpy as np

from cat_models.data.synthetic import (
    CARS,
    DrawnTarget,
    Texture,
    _colour,
    _foliage,
    _grid,
    _pick,
    _tinted,
    _vehicle,
    _waves,
)

AERIAL_VERSION = 1   # bump when drawing changes: cached aerial domains are keyed by it
AERIAL_STREAM = 0xAE51A1   # mixed with the benchmark seed: a stream apart from the outdoor draw

AERIAL_CLASSES = [
    "crop field", "canopy", "river", "highway", "roof",
    "vehicle", "dune", "quarry", "greenhouse", "solar farm",
]
# aerial class -> most related source class (None: novel class with no counterpart)
AERIAL_GROUND_TRUTH: dict[str, str | None] = {
    "crop field": "grass", "canopy": "tree", "river": "water", "highway": "road",
    "roof": "building", "vehicle": "car", "dune": "sand", "quarry": "rock",
    "greenhouse": None, "solar farm": None,
}
# terrain of the field patches, with weights
PATCHES: list[tuple[str, float]] = [
    ("crop field", 0.62), ("dune", 0.16), ("quarry", 0.1), ("canopy", 0.12),
]
_IDS = {name: i + 1 for i, name in enumerate(AERIAL_CLASSES)}


# --------------------------------------------------------------------------- textures
def _rows(palette: list[tuple[int, int, int]], period: float, amp: float,
          square: bool = False, patchy: float = 0.0) -> Texture:
    """Parallel rows at a random angle, `period` pixels apart at 64 px (ploughed rows, roof
    tiles, panel rows); `patchy` shifts large patches towards yellow (ripe vs green fields)."""
    def draw(rng, bank, yy, xx):
        angle = rng.uniform(0, np.pi)   # yy, xx run 0..1 over the image
        along = (xx * np.cos(angle) + yy * np.sin(angle)) * 64.0 / period
        wave = np.sin(2 * np.pi * along + rng.uniform(0, 2 * np.pi))
        if square:
            wave = np.sign(wave)
        base = palette[int(rng.integers(len(palette)))]
        img = _colour(base, (wave, amp), (bank.field(rng, 32), 6.0), (bank.field(rng, 8), 6.0))
        if patchy:
            ripe = np.clip(bank.field(rng, 4), -0.4, None)[..., None]
            img += ripe * np.asarray([1.0, 0.6, -0.4]) * patchy
        return img
    return draw


def _terraces(base: tuple[int, int, int], rings: float, step: float) -> Texture:
    """Concentric benches around a random centre, `rings` per image width, each a light
    ledge and a slope, darker towards the rim (an open-pit quarry)."""
    def draw(rng, bank, yy, xx):
        cy, cx = rng.uniform(0.2, 0.8, 2)
        r = np.hypot(yy - cy, xx - cx) * rings + bank.field(rng, 16) * 0.15
        bench = np.where(r % 1.0 < 0.3, 1.0, 0.0) - np.floor(r) * 0.15
        return _colour(base, (bench, step), (bank.field(rng, 32), 6.0))
    return draw


ROOFS = [(178, 84, 58), (150, 66, 52), (122, 122, 134), (190, 110, 70)]
AERIAL_TEXTURES: dict[str, Texture] = {
    "crop field": _rows([(150, 165, 70), (172, 162, 82), (112, 150, 58)], 3.0, 13.0,
                        patchy=30.0),
    "canopy": _foliage((50, 102, 44), 34.0),
    "river": _waves((48, 108, 138), 4.0, 9.0),
    "highway": _tinted((66, 66, 72), 3.0),
    "roof": _rows(ROOFS, 2.0, 16.0),
    "vehicle": _vehicle([(240, 240, 244), *CARS[:2], (250, 140, 20)]),
    "dune": _waves((216, 176, 108), 20.0, 18.0),
    "quarry": _terraces((172, 162, 146), 9.0, 34.0),
    "greenhouse": _grid((206, 222, 224), (150, 168, 172), 3.0),
    "solar farm": _rows([(26, 36, 80)], 2.5, 30.0, square=True),
}


# --------------------------------------------------------------------------- map grammar
def _to_frame(x: np.ndarray, y: np.ndarray, cx: float, cy: float,
              angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u along `angle`, v across it) of points (x, y) relative to (cx, cy)."""
    c, s = np.cos(angle), np.sin(angle)
    return (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c


def _frame(size: int, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """`_to_frame` of every pixel centre of a `size`-pixel map."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return _to_frame(xx, yy, cx, cy, angle)


def _box(size: int, cx: float, cy: float, angle: float, half: tuple[float, float]) -> np.ndarray:
    """A rotated rectangle's mask: half-length `half[0]` along `angle`, half-width `half[1]`."""
    u, v = _frame(size, cx, cy, angle)
    return (np.abs(u) < half[0]) & (np.abs(v) < half[1])


def _field_patches(rng: np.random.Generator, size: int) -> np.ndarray:
    """The ground: a Voronoi diagram stretched along a random axis, one terrain per cell."""
    n = int(rng.integers(4, 10))
    centres = rng.uniform(0, size, (n, 2))
    angle = rng.uniform(0, np.pi)
    u, v = _frame(size, size / 2, size / 2, angle)
    cu, cv = _to_frame(centres[:, 0], centres[:, 1], size / 2, size / 2, angle)
    stretch = rng.uniform(1.5, 3.0)
    dist = ((u[..., None] - cu) / stretch) ** 2 + (v[..., None] - cv) ** 2
    terrain = np.asarray([_IDS[_pick(rng, PATCHES)] for _ in range(n)], np.uint8)
    return terrain[dist.argmin(-1)]


def _meander(rng: np.random.Generator, size: int, width: float,
             bend: float) -> tuple[np.ndarray, np.ndarray]:
    """A band of `width` pixels across the map along a sine of amplitude `bend` (pixels):
    its mask and, per pixel, the signed offset from its centre line."""
    u, v = _frame(size, rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size,
                  rng.uniform(0, np.pi))
    wavelength = rng.uniform(0.8, 1.6) * size
    offset = v - bend * np.sin(2 * np.pi * u / wavelength + rng.uniform(0, 2 * np.pi))
    return np.abs(offset) < width / 2, offset


def _river(rng: np.random.Generator, label: np.ndarray, s: float) -> None:
    """A river 5-10 px wide (at 64 px) meandering across the map."""
    mask, _ = _meander(rng, label.shape[0], rng.uniform(5, 10) * s, rng.uniform(3, 9) * s)
    label[mask] = _IDS["river"]


def _canopy(rng: np.random.Generator, label: np.ndarray, s: float) -> None:
    """A clump of tree crowns: 3-9 overlapping circles around a random centre."""
    size = label.shape[0]
    cx, cy = rng.uniform(0, size, 2)
    for _ in range(int(rng.integers(3, 10))):
        u, v = _frame(size, cx + rng.normal(0, 4 * s), cy + rng.normal(0, 4 * s), 0.0)
        r = rng.uniform(1.5, 3.5) * s + 0.6
        label[(u * u + v * v < r * r) & (label != _IDS["river"])] = _IDS["canopy"]


def _village(rng: np.random.Generator, label: np.ndarray, s: float) -> None:
    """Roofs: 2-7 rectangles sharing one orientation, scattered around a centre."""
    size = label.shape[0]
    cx, cy, angle = *rng.uniform(0, size, 2), rng.uniform(0, np.pi)
    for _ in range(int(rng.integers(2, 8))):
        half = (rng.uniform(2, 5) * s + 0.6, rng.uniform(1.5, 3.5) * s + 0.6)
        box = _box(size, cx + rng.normal(0, 7 * s), cy + rng.normal(0, 7 * s), angle, half)
        label[box & (label != _IDS["river"])] = _IDS["roof"]


def _rows_of(rng: np.random.Generator, label: np.ndarray, name: str, s: float,
             count: tuple[int, int], half: tuple[float, float], gap: float) -> None:
    """`count[0]` to `count[1] - 1` parallel rotated rectangles of class `name` (greenhouse
    rows), `gap` pixels (at 64 px) between centres."""
    size = label.shape[0]
    cx, cy, angle = *rng.uniform(0.15, 0.85, 2) * size, rng.uniform(0, np.pi)
    n = int(rng.integers(*count))
    for k in range(n):
        shift = (k - (n - 1) / 2) * gap * s
        box = _box(size, cx - shift * np.sin(angle), cy + shift * np.cos(angle), angle,
                   (half[0] * s, half[1] * s + 0.5))
        label[box & (label != _IDS["river"])] = _IDS[name]


def _solar_farm(rng: np.random.Generator, label: np.ndarray, s: float) -> None:
    """One rotated rectangle of panels, 12-22 by 10-18 px at 64 px."""
    size = label.shape[0]
    half = (rng.uniform(5, 10) * s + 1, rng.uniform(4, 8) * s + 1)
    box = _box(size, *rng.uniform(0.2, 0.8, 2) * size, rng.uniform(0, np.pi), half)
    label[box & (label != _IDS["river"])] = _IDS["solar farm"]


def _highway(rng: np.random.Generator, label: np.ndarray, s: float) -> None:
    """A straight or gently curved highway strip (bridging the river) with 1-3 vehicles
    near its centre line, none on 15% of highways."""
    size = label.shape[0]
    width = max(rng.uniform(3.5, 5.5) * s, 2.5)
    road, offset = _meander(rng, size, width, rng.choice([0.0, rng.uniform(2, 6) * s]))
    label[road] = _IDS["highway"]
    if rng.random() < 0.15:
        return
    ys, xs = np.nonzero(road & (np.abs(offset) < width / 4))
    if not len(ys):
        return
    gy, gx = np.gradient(offset)   # across the road: a vehicle lies along its normal
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(len(ys)))
        y, x = ys[k], xs[k]
        angle = np.arctan2(gy[y, x], gx[y, x]) + np.pi / 2
        car = _box(size, x + 0.5, y + 0.5, angle, (1.8 * s + 0.7, 0.9 * s + 0.5))
        label[car] = _IDS["vehicle"]


def draw_aerial(rng: np.random.Generator, size: int) -> np.ndarray:
    """A top-down label map (ids 1..10 of `AERIAL_CLASSES`): field patches, then a river,
    buildings and trees, then highways with vehicles."""
    s = size / 64.0
    label = _field_patches(rng, size)
    if rng.random() < 0.6:
        _river(rng, label, s)
    for _ in range(int(rng.choice([0, 1, 2], p=[0.35, 0.45, 0.2]))):
        _village(rng, label, s)
    if rng.random() < 0.3:
        _rows_of(rng, label, "greenhouse", s, (2, 5), (rng.uniform(5, 9), 1.6), 4.4)
    if rng.random() < 0.22:
        _solar_farm(rng, label, s)
    for _ in range(int(rng.integers(0, 4))):
        _canopy(rng, label, s)
    for _ in range(int(rng.choice([0, 1, 2], p=[0.3, 0.5, 0.2]))):
        _highway(rng, label, s)
    return label


# --------------------------------------------------------------------------- on disk
AERIAL = DrawnTarget("aerial", AERIAL_VERSION, AERIAL_STREAM, AERIAL_CLASSES, draw_aerial,
                     AERIAL_TEXTURES)
# draw into a folder; where the cached folder for (root, resolution, seed, n_target) lives;
# that folder, drawn once and cached
generate_aerial, aerial_folder, ensure_aerial = AERIAL.generate, AERIAL.folder, AERIAL.ensure
