"""A third embedded target domain: outdoor scenes with many classes and a long tail.

The other two embedded targets have 10 classes, fewer than the source's 12, and every class
is common enough that a 25-image set shows it in several images. The paper's targets are
not like that: ADE20K and COCO-Stuff have 150-180 classes, more than a source may have, and
most of them are rare, so a small set shows many classes once or not at all, and several
target classes share their closest source class (a random matrix cannot then be one-to-one,
and CAT draws those classes alike until finetuning separates them).

This domain is that regime at the embedded benchmark's scale: 25 target classes (C_T > C_S =
12) drawn by the outdoor scene grammar of `cat_models.data.synthetic`, each role with several
variants of very uneven frequency. 22 classes have a source counterpart (`LONGTAIL_GROUND_TRUTH`;
up to three share one, e.g. apartment block, barn and tower ~ building), three have none.
The sky and the vehicle class are chosen once per image, so a scene has one sky and one kind
of vehicle. Drawn from its own random stream into its own cached folder, so the other
domains' files do not depend on this module.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cat_models.data.synthetic import (
    DomainSpec,
    DrawnTarget,
    Texture,
    _cracks,
    _dots,
    _foliage,
    _grid,
    _pick,
    _sky,
    _stripes,
    _tinted,
    _vehicle,
    _waves,
    _windows,
    draw_layout,
)

LONGTAIL_VERSION = 1   # bump when drawing changes: cached domains are keyed by it
LONGTAIL_STREAM = 0x10C7A1   # mixed with the benchmark seed: a stream of its own

# per role: (class, weight); the weights make the tail (lava, tent, marsh, tower, ...)
SKIES: list[tuple[str, float]] = [("overcast sky", 0.78), ("dusk sky", 0.22)]
VEHICLES: list[tuple[str, float]] = [("taxi", 0.55), ("bus", 0.3), ("truck", 0.15)]
GROUND: list[tuple[str, float]] = [
    ("meadow", 0.27), ("pavement", 0.2), ("lake", 0.14), ("desert", 0.1), ("gravel", 0.09),
    ("sports field", 0.08), ("marsh", 0.05), ("dirt track", 0.05), ("lava", 0.02),
]
FAR: list[tuple[str, float]] = [
    ("forest", 0.36), ("apartment block", 0.24), ("hill", 0.2), ("barn", 0.12), ("tower", 0.08),
]
SCATTERED: list[tuple[str, float]] = [
    ("bush", 0.38), ("flower bed", 0.26), ("boulder", 0.2), ("solar panel", 0.1), ("tent", 0.06),
]
CAP = ("hill", "glacier")   # snow-capped hills, half of them

LONGTAIL_CLASSES: list[str] = [
    *(name for options in (SKIES, GROUND, FAR) for name, _ in options), CAP[1],
    *(name for name, _ in SCATTERED), *(name for name, _ in VEHICLES),
]
# class -> most related source class (None: novel class with no counterpart)
LONGTAIL_GROUND_TRUTH: dict[str, str | None] = {
    "overcast sky": "sky", "dusk sky": "sky",
    "meadow": "grass", "pavement": "road", "lake": "water", "desert": "sand", "gravel": "rock",
    "sports field": "grass", "marsh": "water", "dirt track": "road", "lava": None,
    "forest": "tree", "apartment block": "building", "hill": "mountain", "barn": "building",
    "tower": "building", "glacier": "snow",
    "bush": "tree", "flower bed": "flower", "boulder": "rock", "solar panel": None, "tent": None,
    "taxi": "car", "bus": "car", "truck": "car",
}
LONGTAIL_SPEC = DomainSpec(
    classes=LONGTAIL_CLASSES, sky=SKIES[0][0], ground=GROUND, far=FAR, scattered=SCATTERED,
    road_objects=VEHICLES[0][0], road="pavement", cap=CAP,
    boxes=("apartment block", "barn", "tower"),
)

# textures: counterparts of one source class differ from it and from each other
LONGTAIL_TEXTURES: dict[str, Texture] = {
    "overcast sky": _sky((150, 158, 178), 2.2),
    "dusk sky": _sky((205, 125, 95), 0.6),
    "meadow": _stripes((92, 152, 62), 1e9, 0.0, 26.0),
    "pavement": _tinted((112, 110, 114), 5.0),
    "lake": _waves((52, 112, 162), 5.0, 10.0),
    "desert": _waves((228, 186, 112), 11.0, 12.0),
    "gravel": _dots((132, 126, 118), (84, 80, 76)),
    "sports field": _stripes((58, 150, 72), 4.0, 14.0, 8.0),
    "marsh": _waves((72, 102, 70), 7.0, 14.0),
    "dirt track": _tinted((142, 104, 70), 8.0),
    "lava": _cracks((225, 85, 20), (50, 15, 10)),
    "forest": _foliage((30, 84, 46), 32.0),
    "apartment block": _windows((186, 180, 170), (70, 90, 122), 6.0),
    "hill": _foliage((102, 132, 92), 15.0),
    "barn": _windows((162, 50, 40), (92, 30, 26), 14.0),
    "tower": _windows((120, 126, 142), (202, 212, 232), 5.0),
    "glacier": _tinted((208, 230, 246), 4.0),
    "bush": _foliage((72, 122, 52), 20.0),
    "flower bed": _dots((90, 120, 50), (240, 200, 40)),
    "boulder": _cracks((142, 132, 122), (82, 76, 70)),
    "solar panel": _grid((25, 35, 85), (170, 180, 200), 5.0),
    "tent": _tinted((236, 122, 40), 10.0),
    "taxi": _vehicle([(236, 200, 30)]),
    "bus": _vehicle([(200, 40, 36), (30, 90, 182)]),
    "truck": _vehicle([(226, 226, 230), (120, 120, 126)]),
}


def draw_longtail(rng: np.random.Generator, size: int) -> np.ndarray:
    """A label map (ids 1..25 of `LONGTAIL_CLASSES`): this image's sky and vehicle class, then
    the outdoor grammar (ground bands, far objects, scattered objects, vehicles on pavement)."""
    spec = dataclasses.replace(LONGTAIL_SPEC, sky=_pick(rng, SKIES),
                               road_objects=_pick(rng, VEHICLES))
    return draw_layout(rng, spec, size)


LONGTAIL = DrawnTarget("longtail", LONGTAIL_VERSION, LONGTAIL_STREAM, LONGTAIL_CLASSES,
                       draw_longtail, LONGTAIL_TEXTURES)
# draw into a folder; where the cached folder for (root, resolution, seed, n_target) lives;
# that folder, drawn once and cached
generate_longtail, longtail_folder, ensure_longtail = (LONGTAIL.generate, LONGTAIL.folder,
                                                       LONGTAIL.ensure)
