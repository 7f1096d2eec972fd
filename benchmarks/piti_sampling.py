"""Sampling throughput of a PITI model (images/s) for the samplers and step counts compared in
the quality-vs-speed table: 1,000-step ancestral, 100-step respaced ancestral (PITI's
default), DDIM 50 and DPM-Solver++ 20, all with classifier-free guidance 1.3.

    python benchmarks/piti_sampling.py [--preset embedded] [--images 16] [--batch 16]
        [--threads 2] [--device cpu] [--only ddpm:100,ddim:50] [--out results.json]

Throughput does not depend on the weights, so a freshly initialised model of the preset is
timed (pass `--checkpoint` to time trained weights anyway). Each configuration samples the
same label maps (random blocky maps) once after a one-batch warm-up; the wall time includes
guidance (two model evaluations per step, batched) and the schedulers' own work.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cat_models.piti import build_piti, label_mask
from cat_models.piti.sampling import SamplerSettings, sample_images

CONFIGS = (("ddpm", 1000), ("ddpm", 100), ("ddim", 50), ("dpmsolver++", 20))


def blocky_labels(n: int, num_classes: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, num_classes + 1, (n, 1, 4, 4), generator=gen).float()
    return torch.nn.functional.interpolate(coarse, size=(size, size)).long()[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--checkpoint", default=None, help="a state dict for the preset")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--guidance", type=float, default=1.3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default=None, help="e.g. ddpm:100,ddim:50")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = CONFIGS if args.only is None else tuple(
        (part.split(":")[0], int(part.split(":")[1])) for part in args.only.split(","))

    model = build_piti(args.preset, seed=0).to(args.device)
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location=args.device))
    cfg = model.config
    masks = label_mask(blocky_labels(args.images, cfg.num_classes, cfg.mask_resolution),
                       cfg.num_classes)
    warm = SamplerSettings("ddim", 2, args.guidance)
    sample_images(model, masks[:args.batch], settings=warm, size=cfg.resolution)
    rows = []
    for sampler, steps in configs:
        settings = SamplerSettings(sampler, steps, args.guidance)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        images = sample_images(model, masks, settings=settings, size=cfg.resolution,
                               batch_size=args.batch, seed=0)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        rows.append({"sampler": sampler, "steps": steps, "images": len(images),
                     "wall_s": round(wall, 3), "images_per_s": round(len(images) / wall, 4),
                     "preset": args.preset, "batch": args.batch, "threads": args.threads,
                     "device": args.device, "guidance": args.guidance})
        print(f"| {sampler} | {steps} | {len(images)} | {wall:.1f} s | "
              f"{len(images) / wall:.3f} images/s |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
