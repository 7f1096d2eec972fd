"""Are the embedded source PITI's samples recognisable, and how fast do they get there?

    python benchmarks/piti_source_quality.py --segmenter SEG.pt [--iterations 1500]
        [--eval-every 250] [--set model_channels=48 ...] [--train lr=1e-3 --train batch_size=8]
        [--sampler ddim --steps 25 --guidance 1.3] [--n 48] [--fid] [--save CKPT.pt]
        [--load CKPT.pt] [--resume CKPT.pt] [--grid docs/images/piti_source_samples.png]
        [--data-root DIR] [--samplers ddpm:1000,ddpm:100,ddim:50,dpmsolver++:20]

Pretrains the `embedded` PITI preset (fields replaced with `--set`) from scratch on the source
training split of the embedded benchmark (32 px) with `pretrain_piti` (settings replaced with
`--train`, default `PRETRAIN_SETTINGS`), and every `--eval-every` steps scores the EMA model the
way `benchmarks/source_quality.py` scores OASIS: the mIoU that a segmenter trained on real
source images finds in samples drawn for the first `--n` validation label maps (fixed noise).
The last evaluation also scores a freshly initialised model and, with `--fid`, FID/KID against
the real validation images. `--load` skips training and scores a saved checkpoint; `--resume`
continues one (same settings) up to `--iterations`. Prints one JSON line per evaluation and a
markdown row of the curve at the end.

`--load CKPT --samplers S:N,...` is the quality-vs-speed table instead: for each sampler and
step count (guidance `--guidance`), the saved model's EMA samples the first `--n` validation
label maps (fixed noise); the row gives the sampling wall time and images/s (`--threads`), and
FID / KID against the statistics of all real validation images, with the real-data floor at
the same n (the first n real training images against those statistics) and the segmenter's
mIoU on the samples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from source_curve import add_curve_arguments, evaluation_data, parse_pairs, print_curve


def main() -> int:
    from cat_models.metrics.miou import miou
    from cat_models.piti import build_piti, label_mask, preset
    from cat_models.piti.sampling import SamplerSettings, sample_images
    from cat_models.piti.train import PRETRAIN_SETTINGS, PitiTrainState, pretrain_piti

    p = argparse.ArgumentParser()
    add_curve_arguments(p, n=48, threads=2)
    p.add_argument("--train", action="append", default=[], metavar="FIELD=VALUE",
                   help="PitiTrainConfig fields of PRETRAIN_SETTINGS")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", default="25")
    p.add_argument("--guidance", type=float, default=1.3)
    p.add_argument("--fid", action="store_true", help="FID/KID of the final model too")
    p.add_argument("--save", type=Path)
    p.add_argument("--load", type=Path)
    p.add_argument("--resume", type=Path, help="continue a --save checkpoint to --iterations")
    p.add_argument("--grid", type=Path)
    p.add_argument("--samplers", default=None, metavar="S:N,...",
                   help="with --load: the quality-vs-speed table of these samplers")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    steps = int(args.steps) if args.steps.isdigit() else args.steps
    settings = SamplerSettings(args.sampler, steps, args.guidance)
    train, val, segmenter, labels = evaluation_data(args, 32)
    classes = train.num_classes
    cfg = preset("embedded", num_classes=classes, **parse_pairs(args.set))
    tcfg = PRETRAIN_SETTINGS.replace(**parse_pairs(args.train))

    def mask_fn(lab: torch.Tensor) -> torch.Tensor:
        return label_mask(lab, classes)

    def generate(model: torch.nn.Module, lab: torch.Tensor) -> torch.Tensor:
        return sample_images(model, mask_fn(lab), settings=settings, seed=0, batch_size=16)

    def evaluate(model: torch.nn.Module, step: int) -> dict:
        t0 = time.perf_counter()
        with torch.no_grad():
            images = generate(model, labels)
            predicted = segmenter.predict(images)
        return {"miou": miou(predicted, labels, classes)["miou"],
                "eval_s": time.perf_counter() - t0}

    start = time.perf_counter()
    curve: list[tuple[int, float]] = []
    times: list[float] = []

    def report(r: dict) -> None:
        if "sec_per_iter" in r and "miou" not in r:
            times.append(r["sec_per_iter"])
        if "miou" in r:
            curve.append((r["iteration"], r["miou"]))
        keep = ("iteration", "loss", "mse", "miou", "sec_per_iter", "eval_s")
        print(json.dumps({k: round(r[k], 4) for k in keep if k in r}
                         | {"seconds": round(time.perf_counter() - start)}), flush=True)

    if args.load:
        payload = torch.load(args.load, map_location="cpu", weights_only=False)
        model = build_piti(cfg, seed=args.seed)
        model.load_state_dict(payload["model"])
        state = PitiTrainState(model, list(payload["ema"]), payload["ema"],
                               torch.optim.SGD(model.parameters(), lr=0.0))
        ema = state.ema_model()
    else:
        model = build_piti(cfg, seed=args.seed)
        print(f"parameters: {sum(p.numel() for p in model.parameters()):,}", flush=True)
        state = pretrain_piti(model, train, tcfg, args.iterations, mask_fn=mask_fn,
                              seed=args.seed, on_report=report, report_every=25,
                              evaluate_fn=evaluate, eval_every=args.eval_every,
                              checkpoint_dir=args.save.parent if args.save else None,
                              # a run stopped early still leaves its last evaluated state
                              checkpoint_every=args.eval_every,
                              resume=args.resume)
        if args.save and args.save.name != "latest.pt":
            (args.save.parent / "latest.pt").replace(args.save)
        ema = state.ema_model()
        train_s = time.perf_counter() - start
    if args.samplers:
        quality_vs_speed(args, ema, train, val, segmenter, mask_fn, len(labels))
        return 0
    rows = [("pretrained (EMA)", ema)]
    if args.fid or args.load:
        rows.append(("random init", build_piti(cfg, seed=args.seed + 1).eval()))
    if args.fid:
        from cat_models.metrics.evaluator import Evaluator

        evaluator = Evaluator(val, val, segmenter, n_samples=len(labels), batch_size=16)
        for name, m in rows:
            r = evaluator.evaluate(lambda lab, m=m: generate(m, lab))
            print(f"| {name} | {r['fid']:.1f} | {r['kid']:.3f} | {r['miou']:.1%} |", flush=True)
    elif args.load:
        for name, m in rows:
            print(f"| {name} | mIoU {evaluate(m, 0)['miou']:.1%} |", flush=True)
    if args.grid:
        from harness.trial import sample_grid, save_grid

        k = 10
        real = torch.stack([torch.as_tensor(val[i]["image"]) for i in range(k)])
        save_grid(args.grid, sample_grid(labels[:k], real, generate(ema, labels[:k]), classes),
                  scale=3)
        print(f"sample grid: {args.grid}")
    if not args.load:
        mean = sum(times) / max(1, len(times))
        print(f"\nconfig {cfg.to_dict()}\ntrain {tcfg.to_dict()}\nsampler {settings}")
        print(f"{args.iterations} iterations, {train_s:.0f} s wall incl. evaluations, "
              f"{mean:.3f} s/iteration (training only, mean of reports)")
        print_curve(curve)
    return 0


def quality_vs_speed(args: argparse.Namespace, ema: torch.nn.Module, train, val, segmenter,
                     mask_fn, n: int) -> None:
    """One row per `--samplers` entry: wall time and images/s of sampling n validation label
    maps, FID / KID (± std) against all validation images, the real floor at n, and mIoU."""
    from cat_models.data.dataset import SegmentationDataset
    from cat_models.metrics.evaluator import Evaluator
    from cat_models.piti.sampling import SamplerSettings, sample_images

    held_out = SegmentationDataset(train.files, train.size_hw, augment=False)
    evaluator = Evaluator(val, val, segmenter, n_samples=n, batch_size=16,
                          floor_dataset=held_out)
    print("| sampler | steps | images | wall | images/s | FID | KID ± std | FID floor | mIoU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for part in args.samplers.split(","):
        sampler, steps = part.rsplit(":", 1)
        settings = SamplerSettings(sampler, int(steps), args.guidance)
        timed: dict[str, float] = {}

        def generate(lab: torch.Tensor, settings=settings, timed=timed) -> torch.Tensor:
            t0 = time.perf_counter()
            with torch.no_grad():
                out = sample_images(ema, mask_fn(lab), settings=settings, seed=0,
                                    batch_size=16)
            timed["s"] = time.perf_counter() - t0
            return out

        r = evaluator.evaluate(generate)
        row = {"sampler": sampler, "steps": int(steps), "images": n, "wall_s": timed["s"],
               "images_per_s": n / timed["s"], "fid": r["fid"], "kid": r["kid"],
               "kid_std": r["kid_std"], "fid_floor": r.get("fid_floor"), "miou": r["miou"],
               "guidance": args.guidance, "threads": args.threads}
        rows.append(row)
        floor = "—" if row["fid_floor"] is None else f"{row['fid_floor']:.1f}"
        print(f"| {sampler} | {steps} | {n} | {row['wall_s']:.1f} s | "
              f"{row['images_per_s']:.3f} | {row['fid']:.1f} | {row['kid']:.3f} ± "
              f"{row['kid_std']:.3f} | {floor} | {row['miou']:.1%} |", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    raise SystemExit(main())
