"""Step time of `train_oasis` vs the same OASIS model in a bare G+D loop (bench64 preset).

    python benchmarks/oasis_step_time.py [--steps 10] [--threads 2] [--device cpu]

Both loops: batch 8 at 64x64, G step (adversarial loss) + D step (N+1 loss + LabelMix), Adam,
EMA. The bare loop is written inline with torch only (no plan/stages/checkpoint/reporting).
"""

from __future__ import annotations

import argparse
import time

import torch

from cat_models.oasis import build_discriminator, build_generator, build_plan, preset, train_oasis
from cat_models.oasis.losses import discriminator_loss, generator_loss, update_ema
from cat_models.oasis.norms import clone_module


def data(n: int, classes: int, size: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        coarse = torch.randint(0, classes + 1, (1, 1, size // 8, size // 8), generator=gen)
        label = torch.nn.functional.interpolate(coarse.float(), size=(size, size)).long()[0, 0]
        items.append({"image": torch.rand(3, size, size, generator=gen) * 2 - 1, "label": label})
    return items


def bare_loop(cfg, items, classes: int, steps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    g = build_generator(cfg, classes).to(device)
    d = build_discriminator(cfg, classes).to(device)
    ema = clone_module(g)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    images = torch.stack([it["image"] for it in items[:cfg.batch_size]]).to(device)
    lab = torch.stack([it["label"] for it in items[:cfg.batch_size]]).to(device)
    labels = torch.zeros(lab.shape[0], classes + 1, *lab.shape[1:], device=device)
    labels.scatter_(1, lab.unsqueeze(1), 1.0)
    mask = (lab.unsqueeze(1) % 2).float()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        opt_g.zero_grad()
        fake = g(labels)
        generator_loss(d(fake), labels).backward()
        opt_g.step()
        opt_d.zero_grad()
        discriminator_loss(d, images, fake, labels, mask, cfg.lambda_labelmix)["d_total"].backward()
        opt_d.step()
        update_ema(ema, g, cfg.ema_decay)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def train_scratch(cfg, items, classes: int, steps: int, device, on_report, seed: int = 0):
    """`train_oasis` of a freshly initialised (seeded) model, reporting every step."""
    class Items(list):
        num_classes = classes

    torch.manual_seed(seed)
    plan = build_plan("scratch", None, None, classes, cfg=cfg)
    return train_oasis(plan, Items(items), cfg, steps, seed=seed, device=device,
                       on_report=on_report, report_every=1)


def our_loop(cfg, items, classes: int, steps: int, device: torch.device) -> float:
    times: list[float] = []
    last = [time.perf_counter()]

    def on_report(_: dict) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train_scratch(cfg, items, classes, steps, device, on_report)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset("bench64")
    device = torch.device(args.device)
    classes = 12
    items = data(64, classes, 64)
    n_g = sum(p.numel() for p in build_generator(cfg, classes).parameters()) / 1e6
    n_d = sum(p.numel() for p in build_discriminator(cfg, classes).parameters()) / 1e6
    bare = bare_loop(cfg, items, classes, args.steps, device)
    ours = our_loop(cfg, items, classes, args.steps, device)
    print(f"bench64: G {n_g:.2f}M, D {n_d:.2f}M params, batch {cfg.batch_size}, "
          f"{args.threads} threads, {args.device}")
    print(f"median s/step: bare loop {bare:.3f}, train_oasis {ours:.3f} "
          f"(overhead {100 * (ours / bare - 1):+.1f}%)")


if __name__ == "__main__":
    main()
