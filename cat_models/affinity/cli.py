"""`python -m cat_models.affinity`: estimate an affinity matrix and print the top matches.

    python -m cat_models.affinity --source ade20k --target cityscapes --method text --out A.npy
    python -m cat_models.affinity --source folder --source-root SRC --target folder \
        --target-root TGT --method features --out A.npy
    python -m cat_models.affinity --method combination --inputs text.npy seg.npy feat.npy \
        --fid-ranking segmentation,text,features --out A.npy

`--source/--target` take a shipped dataset name (ade20k, coco_stuff, cityscapes) whose class
list is packaged, "folder" (ADE20K layout + classes.txt; needs --*-root), or a path to a
classes.txt. Image-based methods (segmentation, features) read images from --source-root /
--target-root.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cat_models.affinity.matrix import AffinityError, AffinityMatrix, format_top_matches
from cat_models.affinity.registry import AffinityInputs, available_estimators, estimate_affinity

PACKAGED = ("ade20k", "coco_stuff", "cityscapes")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cat_models.affinity",
                                description="Estimate a class affinity matrix (CAT, paper §3.1).")
    p.add_argument("--method", required=True, choices=available_estimators())
    p.add_argument("--source", help="dataset name, 'folder', or a classes.txt path")
    p.add_argument("--target", help="dataset name, 'folder', or a classes.txt path")
    p.add_argument("--source-root", type=Path, help="source dataset root (image-based methods)")
    p.add_argument("--target-root", type=Path, help="target dataset root (image-based methods)")
    p.add_argument("--split", default="train", choices=["train", "val"])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--out", type=Path, required=True, help="output .npy (+ .csv, .json)")
    p.add_argument("--top", type=int, default=3, help="source classes printed per target class")
    p.add_argument("--html", action="store_true", help="also write the heatmap (HTML, PNG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, help="softmax temperature (default: clip at 0)")
    p.add_argument("--top-k", type=int, help="keep the k largest weights per target class")
    g = p.add_argument_group("text")
    g.add_argument("--backend", help="text: sentence|open_clip; features: inception|timm")
    g.add_argument("--template", action="append", dest="templates",
                   help="prompt template with {} (repeatable)")
    g.add_argument("--clip-model", help="open_clip model name, e.g. ViT-B-32")
    g.add_argument("--clip-pretrained", help="local open_clip weights file or cached tag")
    g.add_argument("--sentence-model", type=Path, help="sentence-transformers folder")
    g = p.add_argument_group("segmentation / features")
    g.add_argument("--segmenter", type=Path, help="saved segmenter (cat_models.segmenters)")
    g.add_argument("--max-images", type=int, help="target images used (default: all)")
    g.add_argument("--feature-layer", default="mixed_7", help="inception layer")
    g.add_argument("--input-size", type=int, default=128, help="inception input size")
    g.add_argument("--timm-model", default="vit_small_patch16_224")
    g.add_argument("--timm-checkpoint", type=Path, help="local ViT checkpoint (DINO/iBOT)")
    g = p.add_argument_group("combination / average")
    g.add_argument("--inputs", nargs="+", type=Path, help="saved affinity .npy files")
    g.add_argument("--fid-ranking", help="methods by training-free FID, best first: a,b,c")
    return p


def class_names_for(spec: str | None, root: Path | None) -> list[str] | None:
    from cat_models.data import packaged_class_names, read_classes_txt

    if spec is None:
        return None
    if spec in PACKAGED:
        return packaged_class_names(spec)
    if spec == "folder":
        if root is None:
            raise AffinityError("'folder' needs --source-root/--target-root (with classes.txt)")
        return read_classes_txt(root / "classes.txt")
    path = Path(spec)
    return read_classes_txt(path / "classes.txt" if path.is_dir() else path)


def dataset_for(spec: str | None, root: Path | None, args: argparse.Namespace):
    from cat_models.data import open_dataset

    if root is None:
        return None
    kind = spec if spec in (*PACKAGED, "folder") else "folder"
    return open_dataset(kind, root, split=args.split, resolution=args.resolution)


def method_options(args: argparse.Namespace) -> dict:
    norm = {"temperature": args.temperature, "top_k": args.top_k}
    if args.method == "text":
        return {**norm, "backend": args.backend, "templates": args.templates,
                "clip_model": args.clip_model, "clip_pretrained": args.clip_pretrained,
                "model_path": args.sentence_model}
    if args.method == "segmentation":
        return {**norm, "max_images": args.max_images}
    if args.method == "features":
        backend = args.backend or "inception"
        options = ({"layer": args.feature_layer, "input_size": args.input_size}
                   if backend == "inception"
                   else {"model_name": args.timm_model, "checkpoint": args.timm_checkpoint})
        return {**norm, "backend": backend, "backend_options": options,
                "max_target_images": args.max_images}
    if args.method == "average":
        return {"top_k": args.top_k}
    return {}


def build_inputs(args: argparse.Namespace) -> AffinityInputs:
    matrices = {}
    for path in args.inputs or []:
        m = AffinityMatrix.load(path)
        matrices[m.method if m.method not in matrices else f"{m.method}:{path}"] = m
    segmenter = None
    if args.segmenter is not None:
        from cat_models.segmenters import load_segmenter

        segmenter = load_segmenter(args.segmenter)
    return AffinityInputs(
        source_names=class_names_for(args.source, args.source_root),
        target_names=class_names_for(args.target, args.target_root),
        source_dataset=dataset_for(args.source, args.source_root, args),
        target_dataset=dataset_for(args.target, args.target_root, args),
        segmenter=segmenter, matrices=matrices,
        fid_ranking=args.fid_ranking.split(",") if args.fid_ranking else None, seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        inputs = build_inputs(args)
        options = {k: v for k, v in method_options(args).items() if v is not None}
        affinity = estimate_affinity(args.method, inputs, **options)
    except (AffinityError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    path = affinity.save(args.out)
    print(format_top_matches(affinity, args.top))
    print(f"saved {path} (+ .csv, .json)")
    if args.html:
        from cat_models.affinity.plot import save_heatmap

        for kind, written in save_heatmap(affinity, path).items():
            print(f"saved {kind} {written}")
    return 0
