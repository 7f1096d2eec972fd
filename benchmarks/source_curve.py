"""What the source-quality curve scripts share (`pretrain_curve.py` for OASIS,
`piti_source_quality.py` for PITI): their common options, `FIELD=VALUE` overrides, and the
evaluation data (the embedded source domain, a segmenter trained on its real images, and the
validation label maps that samples are drawn for)."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any


def add_curve_arguments(p: argparse.ArgumentParser, n: int, threads: int) -> None:
    p.add_argument("--segmenter", type=Path, required=True,
                   help="a segmenter trained on real source images (stage segmenter-source)")
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="fields of the model preset")
    p.add_argument("--data-root", type=Path, help="the source domain (default: embedded)")
    p.add_argument("--n", type=int, default=n, help="validation label maps to sample for")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=threads)


def parse_pairs(items: list[str]) -> dict[str, Any]:
    """`["a=1", "b=(2, 3)", "c=ddim"]` -> {"a": 1, "b": (2, 3), "c": "ddim"}."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def evaluation_data(args: argparse.Namespace, resolution: int):
    """(train split, val split, segmenter, val labels [n, H, W]) at `resolution`."""
    import torch

    from cat_models.data import open_dataset
    from cat_models.data.synthetic import ensure_benchmark
    from cat_models.segmenters import load_segmenter

    root = args.data_root or ensure_benchmark(None, 64, 0, 1200, 600).source_root
    train = open_dataset("folder", root, "train", resolution, augment=True)
    val = open_dataset("folder", root, "val", resolution)
    segmenter = load_segmenter(args.segmenter)
    n = min(args.n, len(val))
    labels = torch.stack([torch.as_tensor(val[i]["label"]) for i in range(n)]).long()
    return train, val, segmenter, labels


def print_curve(curve: list[tuple[int, float]]) -> None:
    """The mIoU curve [(iteration, mIoU)] as a markdown table row (for RESULTS_*.md)."""
    print("| " + " | ".join(f"{it:,}" for it, _ in curve) + " |")
    print("|" + "---:|" * len(curve))
    print("| " + " | ".join(f"{m:.1%}" for _, m in curve) + " |")
