"""The embedded benchmark: a procedurally drawn source and target domain, offline.

The stand-in for "large labelled source dataset -> small target dataset with other classes".
Both domains are outdoor scenes drawn by the same scene grammar (sky above a horizon, ground
bands, objects), but with disjoint label sets and different class names. Most target classes
have a source counterpart that is named differently and looks alike but not identical
(`GROUND_TRUTH`, e.g. "sea" ~ water with other waves and hue); two target classes have none.
Every class has a texture, not a flat colour, and class frequencies are uneven, so segmenters,
FID and affinity estimators have something real to measure.

Written to disk in ADE20K layout with `classes.txt`, so the loaders that read real datasets
read it too.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from cat_models.data.cache import cache_root

VERSION = 1  # bump when drawing changes: cached benchmarks are keyed by it

SOURCE_CLASSES = [
    "sky", "grass", "tree", "water", "road", "building",
    "car", "sand", "mountain", "rock", "snow", "flower",
]
TARGET_CLASSES = [
    "cloudy sky", "lawn", "woods", "sea", "street", "house",
    "automobile", "beach", "lava", "solar panel",
]
# target class -> most related source class (None: novel class with no counterpart)
GROUND_TRUTH: dict[str, str | None] = {
    "cloudy sky": "sky", "lawn": "grass", "woods": "tree", "sea": "water",
    "street": "road", "house": "building", "automobile": "car", "beach": "sand",
    "lava": None, "solar panel": None,
}


# --------------------------------------------------------------------------- textures
class NoiseBank:
    """Smooth random fields at several scales, drawn once and reused with random offsets."""

    def __init__(self, rng: np.random.Generator, size: int, count: int = 24) -> None:
        self.size = size
        self.fields: dict[int, np.ndarray] = {}
        for cells in (4, 8, 16, 32):
            grids = rng.standard_normal((count, cells, cells)).astype(np.float32)
            up = [
                np.asarray(Image.fromarray(g, mode="F").resize((size, size), Image.BICUBIC))
                for g in grids
            ]
            stack = np.stack(up)
            self.fields[cells] = stack / (stack.std() + 1e-6)

    def field(self, rng: np.random.Generator, cells: int) -> np.ndarray:
        f = self.fields[cells][rng.integers(len(self.fields[cells]))]
        return np.roll(f, (int(rng.integers(self.size)), int(rng.integers(self.size))), (0, 1))


Texture = Callable[[np.random.Generator, NoiseBank, np.ndarray, np.ndarray], np.ndarray]
LayoutDrawer = Callable[[np.random.Generator, int], np.ndarray]   # (rng, size) -> label map


def _colour(base: tuple[int, int, int], *shades: tuple[np.ndarray, float]) -> np.ndarray:
    out = np.empty(shades[0][0].shape + (3,), np.float32)
    out[:] = base
    for field, amp in shades:
        out += field[..., None] * amp
    return out


def _tinted(base, jitter: float) -> Texture:
    """Base colour + mid and fine luminance noise; `jitter` varies the hue per image."""
    def draw(rng, bank, yy, xx):
        tint = np.asarray(base, np.float32) + rng.normal(0, jitter, 3)
        return _colour(tuple(tint), (bank.field(rng, 8), 14.0), (bank.field(rng, 32), 10.0))
    return draw


def _sky(base, clouds: float) -> Texture:
    def draw(rng, bank, yy, xx):
        img = _colour(base, (bank.field(rng, 4), 6.0))
        img += (yy[..., None] * 40.0)  # lighter towards the horizon
        if clouds:
            c = np.clip(bank.field(rng, 8) + bank.field(rng, 16) * 0.5 - 0.3, 0, None)
            img = img * (1 - np.clip(c * clouds, 0, 1)[..., None]) + 235 * np.clip(
                c * clouds, 0, 1)[..., None]
        return img
    return draw


def _waves(base, freq: float, amp: float) -> Texture:
    def draw(rng, bank, yy, xx):
        phase = rng.uniform(0, 2 * np.pi)
        w = np.sin(yy * freq * 2 * np.pi + xx * 3.0 + phase + bank.field(rng, 16) * 0.8)
        return _colour(base, (w, amp), (bank.field(rng, 8), 10.0))
    return draw


def _stripes(base, period: float, amp: float, fine: float) -> Texture:
    """Vertical mowing stripes + fine blades (grass/lawn)."""
    def draw(rng, bank, yy, xx):
        s = np.sign(np.sin(xx * 2 * np.pi / period + rng.uniform(0, 6.3)))
        return _colour(base, (s, amp), (bank.field(rng, 32), fine), (bank.field(rng, 8), 8.0))
    return draw


def _foliage(base, dark: float) -> Texture:
    def draw(rng, bank, yy, xx):
        blobs = np.tanh(bank.field(rng, 16) * 1.5)
        return _colour(base, (blobs, dark), (bank.field(rng, 32), 12.0))
    return draw


def _windows(base, window: tuple[int, int, int], period: float) -> Texture:
    def draw(rng, bank, yy, xx):
        size = yy.shape[0]
        p = period * size / 64.0
        gy = (np.arange(size)[:, None] + rng.integers(0, 8)) % p < p * 0.45
        gx = (np.arange(size)[None, :] + rng.integers(0, 8)) % p < p * 0.45
        img = _colour(base, (bank.field(rng, 16), 8.0), (bank.field(rng, 32), 6.0))
        mask = (gy & gx)[..., None]
        return np.where(mask, np.asarray(window, np.float32), img)
    return draw


def _vehicle(palette: list[tuple[int, int, int]]) -> Texture:
    def draw(rng, bank, yy, xx):
        base = palette[rng.integers(len(palette))]
        gloss = np.clip(1.0 - yy * 6 % 1.0, 0, 1)  # horizontal highlights
        return _colour(base, (gloss, 35.0), (bank.field(rng, 32), 6.0))
    return draw


def _cracks(base, crack: tuple[int, int, int]) -> Texture:
    def draw(rng, bank, yy, xx):
        f = bank.field(rng, 16)
        mask = (np.abs(f) < 0.25)[..., None]
        img = _colour(base, (bank.field(rng, 8), 25.0), (bank.field(rng, 32), 10.0))
        return np.where(mask, np.asarray(crack, np.float32), img)
    return draw


def _grid(base, line: tuple[int, int, int], period: float) -> Texture:
    def draw(rng, bank, yy, xx):
        size = yy.shape[0]
        p = period * size / 64.0
        lines = ((np.arange(size)[:, None] % p) < 1) | ((np.arange(size)[None, :] % p) < 1)
        img = _colour(base, (bank.field(rng, 16), 6.0))
        return np.where(lines[..., None], np.asarray(line, np.float32), img)
    return draw


def _dots(base, dot: tuple[int, int, int]) -> Texture:
    def draw(rng, bank, yy, xx):
        mask = (bank.field(rng, 32) > 1.0)[..., None]
        img = _colour(base, (bank.field(rng, 16), 12.0))
        return np.where(mask, np.asarray(dot, np.float32), img)
    return draw


CARS = [(190, 30, 30), (30, 60, 180), (230, 200, 40), (40, 40, 45), (220, 220, 225)]
TEXTURES: dict[str, Texture] = {
    # source domain
    "sky": _sky((105, 155, 230), 0.0),
    "grass": _stripes((70, 140, 50), 1e9, 0.0, 22.0),
    "tree": _foliage((35, 95, 40), 25.0),
    "water": _waves((40, 90, 165), 9.0, 18.0),
    "road": _tinted((95, 95, 100), 4.0),
    "building": _windows((150, 135, 125), (60, 70, 90), 8.0),
    "car": _vehicle(CARS),
    "sand": _tinted((205, 185, 125), 6.0),
    "mountain": _foliage((115, 105, 125), 18.0),
    "rock": _cracks((115, 110, 105), (60, 55, 50)),
    "snow": _tinted((236, 238, 246), 3.0),
    "flower": _dots((80, 150, 60), (215, 60, 160)),
    # target domain: counterparts look alike, not identical
    "cloudy sky": _sky((125, 150, 200), 1.6),
    "lawn": _stripes((85, 155, 55), 6.0, 10.0, 14.0),
    "woods": _foliage((28, 78, 32), 30.0),
    "sea": _waves((30, 80, 145), 13.0, 22.0),
    "street": _tinted((82, 82, 88), 4.0),
    "house": _windows((170, 120, 100), (55, 60, 75), 10.0),
    "automobile": _vehicle(CARS[1:] + [(20, 130, 70)]),
    "beach": _tinted((220, 200, 145), 6.0),
    "lava": _cracks((225, 85, 20), (50, 15, 10)),
    "solar panel": _grid((25, 35, 85), (170, 180, 200), 5.0),
}


# --------------------------------------------------------------------------- scenes
@dataclass(frozen=True)
class DomainSpec:
    """The roles the scene grammar draws, with (class, weight) choices per role."""

    classes: list[str]
    sky: str
    ground: list[tuple[str, float]]
    far: list[tuple[str, float]]          # objects standing on the horizon
    scattered: list[tuple[str, float]]    # objects on the ground
    road_objects: str
    road: str
    cap: tuple[str, str] | None = None    # (far class, class drawn on its top)
    boxes: tuple[str, ...] = ()           # far classes drawn as rectangles


SOURCE_SPEC = DomainSpec(
    classes=SOURCE_CLASSES, sky="sky",
    ground=[("grass", 0.34), ("road", 0.22), ("water", 0.2), ("sand", 0.14), ("rock", 0.1)],
    far=[("tree", 0.4), ("building", 0.35), ("mountain", 0.25)],
    scattered=[("tree", 0.6), ("flower", 0.25), ("rock", 0.15)],
    road_objects="car", road="road", cap=("mountain", "snow"), boxes=("building",),
)
TARGET_SPEC = DomainSpec(
    classes=TARGET_CLASSES, sky="cloudy sky",
    ground=[("lawn", 0.3), ("street", 0.22), ("sea", 0.18), ("beach", 0.16), ("lava", 0.14)],
    far=[("woods", 0.55), ("house", 0.45)],
    scattered=[("woods", 0.5), ("solar panel", 0.5)],
    road_objects="automobile", road="street", boxes=("house",),
)


def _pick(rng: np.random.Generator, options: list[tuple[str, float]]) -> str:
    names, weights = zip(*options)
    p = np.asarray(weights) / sum(weights)
    return names[int(rng.choice(len(names), p=p))]


def draw_layout(rng: np.random.Generator, spec: DomainSpec, size: int) -> np.ndarray:
    """A label map (ids 1..N of `spec.classes`) drawn by the scene grammar."""
    ids = {name: i + 1 for i, name in enumerate(spec.classes)}
    canvas = Image.new("L", (size, size), ids[spec.sky])
    draw = ImageDraw.Draw(canvas)
    s = size / 64.0
    horizon = int(size * rng.uniform(0.3, 0.62))
    # ground: 1-3 bands split by slanted boundaries
    n_bands = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    cuts = np.sort(rng.uniform(0, size, n_bands - 1))
    bands = [_pick(rng, spec.ground) for _ in range(n_bands)]
    edges = [0.0, *cuts, float(size)]
    slant = rng.uniform(-0.4, 0.4) * size
    for b, name in enumerate(bands):
        x0, x1 = edges[b], edges[b + 1]
        poly = [(x0, horizon), (x1, horizon), (x1 + slant, size), (x0 + slant, size)]
        if b == 0:
            poly[0], poly[3] = (-size, horizon), (-size, size)
        if b == n_bands - 1:
            poly[1], poly[2] = (2 * size, horizon), (2 * size, size)
        draw.polygon(poly, fill=ids[name])
    # far objects on the horizon
    for _ in range(int(rng.integers(0, 4))):
        name = _pick(rng, spec.far)
        cx, w = rng.uniform(0, size), rng.uniform(8, 22) * s
        h = rng.uniform(8, 26) * s
        if spec.cap is not None and name == spec.cap[0]:
            top = horizon - h * 1.3
            draw.polygon([(cx - w, horizon), (cx, top), (cx + w, horizon)], fill=ids[name])
            if rng.random() < 0.5:
                f = rng.uniform(0.25, 0.4)
                draw.polygon([(cx - w * f, top + h * 1.3 * f), (cx, top),
                              (cx + w * f, top + h * 1.3 * f)], fill=ids[spec.cap[1]])
        elif name in spec.boxes:
            draw.rectangle([cx - w / 2, horizon - h, cx + w / 2, horizon + 2 * s], fill=ids[name])
        else:
            draw.ellipse([cx - w / 2, horizon - h, cx + w / 2, horizon + 3 * s], fill=ids[name])
    # scattered ground objects
    for _ in range(int(rng.integers(0, 4))):
        name = _pick(rng, spec.scattered)
        cx, cy = rng.uniform(0, size), rng.uniform(horizon + 4 * s, size)
        r = rng.uniform(3, 9) * s * (0.5 + (cy - horizon) / size)
        if name == "solar panel":
            r *= 1.6
            draw.polygon([(cx - r * 1.4, cy), (cx + r, cy - r * 0.2), (cx + r * 1.4, cy + r),
                          (cx - r, cy + r * 1.2)], fill=ids[name])
        else:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=ids[name])
    # vehicles on road pixels
    label = np.asarray(canvas).copy()
    road_rows = np.where((label == ids[spec.road]).mean(axis=1) > 0.25)[0]
    if len(road_rows) and rng.random() < 0.8:
        for _ in range(int(rng.integers(1, 4))):
            cy = int(rng.choice(road_rows))
            cols = np.where(label[cy] == ids[spec.road])[0]
            cx = int(rng.choice(cols))
            scale = 0.6 + (cy - horizon) / size
            w, h = 12 * s * scale, 5 * s * scale
            draw.rectangle([cx - w / 2, cy - h, cx + w / 2, cy], fill=ids[spec.road_objects])
            draw.rectangle([cx - w / 3, cy - 1.8 * h, cx + w / 4, cy - h],
                           fill=ids[spec.road_objects])
    return np.asarray(canvas)


def _grammar(spec: DomainSpec) -> LayoutDrawer:
    """`draw_layout` for one domain, as a `write_domain` layout."""
    return lambda rng, size: draw_layout(rng, spec, size)


def render(rng: np.random.Generator, label: np.ndarray, classes: Sequence[str],
           bank: NoiseBank, textures: Mapping[str, Texture] = TEXTURES) -> np.ndarray:
    """An RGB image for `label` (ids 1..N of `classes`): each class's texture from `textures`
    inside its mask, times a random exposure."""
    size = label.shape[0]
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    img = np.zeros((size, size, 3), np.float32)
    for k in np.unique(label):
        mask = label == k
        img[mask] = textures[classes[k - 1]](rng, bank, yy, xx)[mask]
    img *= rng.uniform(0.85, 1.1)  # exposure
    return np.clip(img, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- on disk
@dataclass(frozen=True)
class Benchmark:
    root: Path
    source_root: Path
    target_root: Path


def write_domain(root: Path, classes: Sequence[str], counts: dict[str, int], size: int,
                 rng: np.random.Generator, bank: NoiseBank, desc: str, layout: LayoutDrawer,
                 textures: Mapping[str, Texture] = TEXTURES) -> None:
    """Draw one domain into `root` in ADE20K layout + classes.txt: per split, `counts[split]`
    label maps from `layout(rng, size)`, each rendered right after it is drawn; files are
    named `{desc}_{split}_{i:05d}.png`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for split, n in counts.items():
        img_dir = root / "images" / split
        ann_dir = root / "annotations" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in tqdm(range(n), desc=f"{desc} {split}", leave=False):
            label = layout(rng, size)
            image = render(rng, label, classes, bank, textures)
            stem = f"{desc}_{split}_{i:05d}"
            Image.fromarray(image).save(img_dir / f"{stem}.png", compress_level=1)
            Image.fromarray(label.astype(np.uint8)).save(ann_dir / f"{stem}.png",
                                                         compress_level=1)


def target_counts(n_target: int) -> dict[str, int]:
    """Images per split of a target domain: `n_target` training, 25% (at least 20) validation."""
    return {"training": n_target, "validation": max(20, n_target // 4)}


def check_resolution(resolution: int) -> None:
    """ValueError unless the benchmark resolution is 32..256 pixels."""
    if not 32 <= resolution <= 256:
        raise ValueError(f"synthetic benchmark resolution must be 32..256, got {resolution}")


def generate_benchmark(out: Path, resolution: int = 64, seed: int = 0, n_source: int = 2000,
                       n_target: int = 1000) -> Benchmark:
    """Draw both domains into `out/{source,target}` (ADE20K layout + classes.txt).

    Validation splits add 10% (source) and 25% (target) on top of the training counts.
    """
    check_resolution(resolution)
    rng = np.random.default_rng(seed)
    bank = NoiseBank(rng, resolution)
    out = Path(out)
    write_domain(out / "source", SOURCE_CLASSES,
                 {"training": n_source, "validation": max(20, n_source // 10)},
                 resolution, rng, bank, "source", _grammar(SOURCE_SPEC))
    write_domain(out / "target", TARGET_CLASSES, target_counts(n_target),
                 resolution, rng, bank, "target", _grammar(TARGET_SPEC))
    return Benchmark(out, out / "source", out / "target")


def benchmark_folders(root: str | Path | None = None, resolution: int = 64, seed: int = 0,
                      n_source: int = 2000, n_target: int = 1000) -> Benchmark:
    """Where the benchmark for these settings lives (nothing is drawn):
    `<root or cache_root()>/synthetic/r{res}-s{seed}-n{ns}x{nt}-v{VERSION}`."""
    base = Path(root) if root is not None else cache_root() / "synthetic"
    out = base / f"r{resolution}-s{seed}-n{n_source}x{n_target}-v{VERSION}"
    return Benchmark(out, out / "source", out / "target")


def ensure_benchmark(root: str | Path | None = None, resolution: int = 64, seed: int = 0,
                     n_source: int = 2000, n_target: int = 1000) -> Benchmark:
    """The benchmark for these settings (`benchmark_folders`), generated once and cached; a
    folder without its completion marker (an interrupted generation) is drawn again."""
    bench = benchmark_folders(root, resolution, seed, n_source, n_target)
    ensure_drawn(bench.root, {"resolution": resolution, "seed": seed, "n_source": n_source,
                              "n_target": n_target, "version": VERSION},
                 partial(generate_benchmark, resolution=resolution, seed=seed,
                         n_source=n_source, n_target=n_target))
    return bench


@dataclass(frozen=True)
class DrawnTarget:
    """A target domain drawn on its own random stream into its own cached folder (the aerial
    and the many-class targets): `SeedSequence([stream, seed])` draws `layout` label maps,
    rendered with `textures`, into `<root or cache_root()>/synthetic/
    {prefix}-r{res}-s{seed}-n{n_target}-v{version}` (ADE20K layout + classes.txt)."""

    prefix: str
    version: int          # bump when drawing changes: cached folders are keyed by it
    stream: int           # mixed with the benchmark seed: a stream apart from the other domains
    classes: list[str]
    layout: LayoutDrawer
    textures: Mapping[str, Texture]

    def generate(self, out: Path, resolution: int = 64, seed: int = 0,
                 n_target: int = 1000) -> Path:
        """Draw the domain into `out`: `n_target` training images and 25% (at least 20)
        validation images."""
        check_resolution(resolution)
        rng = np.random.default_rng(np.random.SeedSequence([self.stream, seed]))
        bank = NoiseBank(rng, resolution)
        out = Path(out)
        write_domain(out, self.classes, target_counts(n_target), resolution, rng, bank,
                     self.prefix, self.layout, self.textures)
        return out

    def folder(self, root: str | Path | None = None, resolution: int = 64, seed: int = 0,
               n_target: int = 1000) -> Path:
        """Where the domain for these settings lives (nothing is drawn)."""
        base = Path(root) if root is not None else cache_root() / "synthetic"
        return base / f"{self.prefix}-r{resolution}-s{seed}-n{n_target}-v{self.version}"

    def ensure(self, root: str | Path | None = None, resolution: int = 64, seed: int = 0,
               n_target: int = 1000) -> Path:
        """`folder(...)`, drawn once and cached; a folder without its COMPLETE.json marker
        (an interrupted generation) is drawn again."""
        out = self.folder(root, resolution, seed, n_target)
        ensure_drawn(out, {"resolution": resolution, "seed": seed, "n_target": n_target,
                           "version": self.version},
                     partial(self.generate, resolution=resolution, seed=seed,
                             n_target=n_target))
        return out


def ensure_drawn(out: Path, settings: dict, generate: Callable[[Path], object]) -> None:
    """Run `generate(out)` unless `out/COMPLETE.json` exists; a folder without it (an
    interrupted generation) is removed first. The marker holds `settings` as JSON."""
    marker = out / "COMPLETE.json"
    if not marker.is_file():
        if out.exists():
            shutil.rmtree(out)
        generate(out)
        marker.write_text(json.dumps(settings))
