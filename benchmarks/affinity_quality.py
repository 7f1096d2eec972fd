"""Quality of the affinity estimators: top-1 agreement with known class correspondences.

    python benchmarks/affinity_quality.py [--target synthetic_aerial]

* embedded benchmark (64 px; the outdoor target, or `--target synthetic_aerial`): text,
  features (several settings), segmentation (harness small segmenter, if
  `cat_models.segmenters` is available), combination — fraction of target classes with a
  counterpart whose ground-truth source class (`GROUND_TRUTHS[target]`) is top-1;
* real names, Cityscapes -> ADE20K, text: how many of the 16 listed pairs land top-1, for
  several prompt-template sets;
* column sharpness: mean over target classes of the largest weight (1 / C_S = uniform).
"""

from __future__ import annotations

import argparse

import torch

from cat_models.affinity import (
    feature_affinity,
    majority_vote,
    segmentation_affinity,
    text_affinity,
)
from cat_models.affinity.feature_backends import InceptionPatchFeatures
from cat_models.data import open_dataset, packaged_class_names
from cat_models.data.synthetic_domains import GROUND_TRUTHS, SOURCE_KIND, domain_root

PAIRS = {
    "road": {"road"}, "sidewalk": {"sidewalk"}, "building": {"building"}, "wall": {"wall"},
    "fence": {"fence"}, "pole": {"pole"}, "traffic light": {"traffic light"},
    "vegetation": {"tree", "plant"}, "terrain": {"grass", "earth"}, "sky": {"sky"},
    "person": {"person"}, "rider": {"person"}, "car": {"car"}, "truck": {"truck"},
    "bus": {"bus"}, "bicycle": {"bicycle"},
}
TEMPLATE_SETS = {
    "{}": ("{}",),
    "a photo of a {}. (default)": ("a photo of a {}.",),
    "4 photo templates": ("a photo of a {}.", "a photo of the {}.", "a picture of a {}.",
                          "an image of a {}."),
}


def top1(a, truth: dict[str, str | None]) -> str:
    hits, counted = a.top1_agreement(truth)
    return f"{hits}/{counted}"


def sharpness(a) -> str:
    return f"{a.values.max(0).mean():.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", choices=sorted(GROUND_TRUTHS), default="synthetic_target")
    args = p.parse_args()
    truth = GROUND_TRUTHS[args.target]
    torch.set_num_threads(2)
    print("## Cityscapes -> ADE20K text pairs (16 listed)\n")
    print("| templates | pairs top-1 | misses |\n|---|---:|---|")
    ade, city = packaged_class_names("ade20k"), packaged_class_names("cityscapes")
    for label, templates in TEMPLATE_SETS.items():
        a = text_affinity(ade, city, templates=templates)
        best = {t: ade[int(i)] for t, i in zip(city, a.argmax_source())}
        misses = {t: best[t] for t, ok in PAIRS.items() if best[t] not in ok}
        print(f"| `{label}` | {16 - len(misses)}/16 | {misses} |")

    settings = {"resolution": 64, "seed": 0, "n_source": 2000, "n_target": 1000}
    source = open_dataset("folder", domain_root(SOURCE_KIND, **settings), "train", resolution=64)
    target = open_dataset("folder", domain_root(args.target, **settings), "train", resolution=64)
    rows = []
    results = {"text": text_affinity(source.class_names, target.class_names)}
    rows.append(("text (MiniLM, clip)", results["text"]))
    rows.append(("text (MiniLM, T=0.05)",
                 text_affinity(source.class_names, target.class_names, temperature=0.05)))
    for layer in ("mixed_2", "mixed_7", "mixed_10"):
        extractor = InceptionPatchFeatures(layer=layer, input_size=128)
        for center in (True, False):
            for seed in (0, 1):
                a = feature_affinity(source, target, extractor=extractor, center=center,
                                     max_source_images=100, max_target_images=100, seed=seed)
                rows.append((f"features {layer}@128 center={center} seed={seed}", a))
                if (layer, center, seed) == ("mixed_7", True, 0):
                    results["features"] = a
    try:
        from cat_models.segmenters import train_small_segmenter
    except ImportError:
        train_small_segmenter = None
    if train_small_segmenter is not None:
        segmenter = train_small_segmenter(source.subset(range(600)), iterations=300, seed=0)
        for soft in (False, True):
            a = segmentation_affinity(segmenter, target, max_images=100, soft=soft)
            rows.append((f"segmentation (SmallSegmenter 300 it) soft={soft}", a))
            if not soft:
                results["segmentation"] = a
        rows.append(("combination (majority vote, default order)", majority_vote(results)))
    known = sum(v is not None for v in truth.values())
    print(f"\n## Embedded benchmark, {args.target} ({known} target classes with a counterpart)\n")
    print("| estimator | top-1 = GROUND_TRUTH | mean max column weight |\n|---|---:|---:|")
    for name, a in rows:
        print(f"| {name} | {top1(a, truth)} | {sharpness(a)} |")


if __name__ == "__main__":
    main()
