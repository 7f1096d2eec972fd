"""One OASIS training loop for source pretraining, CAT finetuning and every baseline.

`train_oasis(plan, data, cfg, ...)` runs a `TransferPlan` (baselines.py): G step, D step, EMA,
stage switches, periodic evaluation/reporting through callbacks, checkpoints. No Ray: the
harness passes `on_report` and `evaluate_fn`.

Determinism: the batch indices, z and the LabelMix bits of step s are drawn from generators
seeded by (seed, s) for the *global* batch, and each DDP rank takes its slice. A resumed run
therefore repeats the next step exactly, and a DDP run computes the same update as one process
on the global batch (batch norm statistics and class-balancing counts are all-reduced too).
With `cfg.d_augment`, the step's augmentation draws (`cat_models.oasis.augment`) come last
from the same generator, so runs without it keep their random streams.
Deviation from the official loop: the D step reuses the G step's (detached) fake batch instead
of generating a second one, which saves a third of the generator compute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from cat_models.data.batching import (
    batch_indices,
    read_items,
    restore_rng_states,
    rng_states,
    step_generator,
    world,
)
from cat_models.errors import NonFiniteLossError
from cat_models.oasis import augment as d_augment
from cat_models.oasis.baselines import TransferPlan
from cat_models.oasis.config import OasisConfig
from cat_models.oasis.losses import discriminator_loss, generator_loss, labelmix_mask, update_ema
from cat_models.oasis.norms import clone_module

Report = Callable[[dict[str, Any]], None]
Evaluate = Callable[[nn.Module, int], dict[str, Any]]

# Layout of the weights and activations while training: channels-last runs these networks'
# convolutions and nearest upsampling faster on CPU (1.3-1.6x for the embedded benchmark's
# D, benchmarks/RESULTS_perf.md) and suits CUDA's convolutions too. Values differ from the
# default layout only in the last bits (another summation order); a run is deterministic in
# either.
MEMORY_FORMAT = torch.channels_last


def load_batch(data: Sequence[dict], indices: torch.Tensor, num_classes: int,
               device: torch.device, seeds: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [B,3,H,W], one-hot labels [B,C+1,H,W]) for dataset items `indices`.

    Items are read by `cat_models.data.batching.read_items` (seeded per item).
    """
    images, labels = read_items(data, indices, seeds)
    images, labels = images.to(device), labels.to(device)
    if int(labels.max()) > num_classes:
        raise ValueError(f"training data: label {int(labels.max())} exceeds the model's "
                         f"{num_classes} classes (one-hot has {num_classes + 1} channels)")
    one_hot = torch.zeros(labels.shape[0], num_classes + 1, *labels.shape[1:], device=device)
    one_hot.scatter_(1, labels.unsqueeze(1), 1.0)
    return (images.contiguous(memory_format=MEMORY_FORMAT),
            one_hot.contiguous(memory_format=MEMORY_FORMAT))


@dataclass
class TrainState:
    """Everything a checkpoint holds besides the plan's modules."""

    plan: TransferPlan
    ema: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def make_state(plan: TransferPlan, cfg: OasisConfig, device: torch.device) -> TrainState:
    plan.generator.to(device, memory_format=MEMORY_FORMAT)
    plan.discriminator.to(device, memory_format=MEMORY_FORMAT)
    opt_g = torch.optim.Adam(plan.generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(plan.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    ema = clone_module(plan.generator).eval().requires_grad_(False)
    if plan.anchor is not None:
        plan.anchor.to(device, MEMORY_FORMAT)
    return TrainState(plan, ema, opt_g, opt_d)


def save_checkpoint(state: TrainState, path: str | Path, cfg: OasisConfig) -> Path:
    """Atomic write of models, EMA, optimisers, step, RNG states and the plan's options."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "G": state.plan.generator.state_dict(), "D": state.plan.discriminator.state_dict(),
        "EMA": state.ema.state_dict(), "opt_g": state.opt_g.state_dict(),
        "opt_d": state.opt_d.state_dict(), "step": state.step, "history": state.history,
        "config": cfg.to_dict(), "plan": {"name": state.plan.name,
                                          **_plain(state.plan.options)},
        "rng": rng_states(),
    }
    if state.plan.anchor is not None:
        payload["anchor_start"] = state.plan.anchor.state_dict()
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(type(v)))
            for k, v in options.items()}


def load_checkpoint(state: TrainState, path: str | Path, device: torch.device) -> None:
    """Restore a `save_checkpoint` file into a state built from the same plan."""
    payload = torch.load(path, map_location=device, weights_only=False)
    for key, module in (("G", state.plan.generator), ("D", state.plan.discriminator),
                        ("EMA", state.ema)):
        try:
            module.load_state_dict(payload[key])
        except RuntimeError as err:
            raise ValueError(f"{path}: '{key}' does not fit the plan "
                             f"'{state.plan.name}' ({err})") from err
    state.opt_g.load_state_dict(payload["opt_g"])
    state.opt_d.load_state_dict(payload["opt_d"])
    state.step = int(payload["step"])
    state.history = list(payload.get("history", []))
    if state.plan.anchor is not None:
        state.plan.anchor.load_state_dict(payload.get("anchor_start"))
    restore_rng_states(payload["rng"])


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t)
    return t


def _wrap(module: nn.Module, device: torch.device) -> nn.Module:
    # Buffers (spectral-norm u/v, batch-norm running stats) evolve identically on every rank
    # (same weights, all-reduced batch statistics), so no per-forward broadcast is needed.
    if world()[1] == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids, broadcast_buffers=False)


def train_step(state: TrainState, g: nn.Module, d: nn.Module, images: torch.Tensor,
               labels: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None,
               cfg: OasisConfig, d_trainable: dict[str, bool],
               augment: d_augment.AugmentParams | None = None,
               anchor_draws: torch.Tensor | None = None) -> dict[str, float]:
    """One OASIS iteration (G then D then EMA). `g`/`d` may be DDP wrappers.

    `augment`: this rank's draws of `cfg.d_augment` for the step (None: D sees the images as
    they are); the G step's fake batch and the D step's inputs get the same transforms.
    `anchor_draws`: this rank's draws of the plan's absent-class anchor (None: no anchor term);
    its probes share the generator's forward with the training label maps."""
    plan = state.plan
    reduce = _all_reduce_sum if world()[1] > 1 else None
    amp = cfg.amp and images.device.type == "cuda"
    balance = {"balance": cfg.class_balancing, "ignore_unlabeled": cfg.ignore_unlabeled,
               "reduce": reduce}

    plan.discriminator.requires_grad_(False)
    state.opt_g.zero_grad(set_to_none=True)
    # A stage may freeze all of G (a D warm-up): then G only draws the fake batch.
    g_trains = any(p.requires_grad for p in plan.generator.parameters())
    anchored = anchor_draws is not None and g_trains
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp), \
            torch.set_grad_enabled(g_trains):
        if anchored:
            probe, probe_mask = plan.anchor.probe(labels, anchor_draws)
            both_labels, both_z = torch.cat([labels, probe]), torch.cat([z, z])
            fake, probe_fake = g(both_labels, both_z).chunk(2)
            with torch.no_grad():
                probe_start = plan.anchor.start(both_labels, both_z).chunk(2)[1]
        else:
            fake = g(labels, z)
        fake_seen, labels_seen, _ = d_augment.apply(augment, fake, labels)
        loss_g = generator_loss(plan.discriminator(fake_seen), labels_seen, **balance)
        total_g = loss_g + (plan.regulariser(g) if plan.regulariser is not None else 0.0)
        if anchored:
            loss_anchor, anchor_mean = plan.anchor.loss(probe_fake, probe_start, probe_mask,
                                                        world()[1], reduce)
            total_g = total_g + plan.anchor.weight * loss_anchor
    if g_trains:
        total_g.backward()
        state.opt_g.step()
    for name, p in plan.discriminator.named_parameters():
        p.requires_grad_(d_trainable[name])

    state.opt_d.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        terms = discriminator_loss(
            d, images, fake, labels, mask, cfg.lambda_labelmix, **balance,
            augment=None if augment is None else partial(d_augment.apply, augment))
    terms["d_total"].backward()
    state.opt_d.step()
    update_ema(state.ema, plan.generator, cfg.ema_decay)
    out = {k: float(v.detach()) for k, v in terms.items()}
    out.update(g_adv=float(loss_g.detach()), g_total=float(total_g.detach()))
    if anchored:
        out["g_anchor"] = anchor_mean   # the global mean (the term is this rank's share)
    return out


# Batches of the training label maps that re-estimate the EMA generator's batch-norm
# statistics before it is evaluated or saved. Official OASIS `update_EMA` uses 50; the default
# 0 keeps the live generator's statistics (the behaviour before issue #13), because at the
# embedded benchmark's scale 50 changed no curve beyond the noise (benchmarks/
# RESULTS_fidelity.md): pass 50 for the official behaviour.
BN_REFRESH_BATCHES = 0


@torch.no_grad()
def refresh_batch_norm(generator: nn.Module, data: Sequence[dict], num_classes: int,
                       batch_size: int, seed: int, batches: int = BN_REFRESH_BATCHES,
                       device: torch.device | str = "cpu") -> None:
    """Re-estimate the batch-norm running statistics of `generator` (an EMA copy) from
    forward passes over `batches` training batches (label maps + fresh z), as official OASIS
    does before every evaluation.

    Why: the EMA's weights average the last ~1/(1 - decay) steps, but the running statistics
    it would otherwise carry are the live generator's (copied in `update_ema`), i.e. those of
    other weights. Once every layer trains (CAT's stage 2), the mismatch grows with each step
    and the evaluated images degrade. Statistics are a plain average over the batches
    (momentum 1/(k+1)), identical under DDP (each rank takes its slice of the global batch,
    `DistributedBatchNorm2d` all-reduces). Only the buffers change; the RNGs are untouched.
    """
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return
    rank, size = world()
    local = batch_size // size
    z_dim = generator.cfg.z_dim
    was_training = generator.training
    momenta = [m.momentum for m in norms]
    # Train mode also steps spectral norm's power iteration (u, v buffers): keep those as
    # they were, so only the batch-norm statistics change.
    bn_buffers = {id(b) for m in norms for b in m.buffers()}
    kept = [(b, b.clone()) for b in generator.buffers() if id(b) not in bn_buffers]
    for m in norms:
        m.reset_running_stats()
    generator.train()
    try:
        for k in range(batches):
            for m in norms:
                m.momentum = 1.0 / (k + 1)
            gen = torch.Generator().manual_seed(seed * 1_000_003 + 999_983 + k)
            idx = batch_indices(len(data), batch_size, gen)
            z = torch.randn(batch_size, z_dim, generator=gen)
            augment = torch.randint(2 ** 62, (batch_size,), generator=gen)
            part = slice(rank * local, (rank + 1) * local)
            _, labels = load_batch(data, idx[part], num_classes, device, augment[part])
            generator(labels, z[part].to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        for b, value in kept:
            b.copy_(value)
        generator.train(was_training)


def train_oasis(plan: TransferPlan, data: Sequence[dict], cfg: OasisConfig, iterations: int,
                *, seed: int = 0, device: str | torch.device = "cpu",
                checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
                resume: str | Path | None = None, on_report: Report | None = None,
                report_every: int = 10, evaluate_fn: Evaluate | None = None,
                eval_every: int = 0, report_all_ranks: bool = False,
                bn_refresh_batches: int = BN_REFRESH_BATCHES) -> TrainState:
    """Train `plan` on `data` (items: {"image": [3,H,W], "label": [H,W]}) up to `iterations`.

    `cfg.batch_size` is the global batch; under `torch.distributed` every rank takes its
    share (batch must divide by the world size). `evaluate_fn(ema_generator, step)` runs on
    rank 0 every `eval_every` steps and after the last step, and its dict is merged into the
    report; `on_report` gets {"iteration", "stage", "wall_time_s", "sec_per_iter", losses...,
    metrics...} on rank 0 (on every rank with `report_all_ranks`, e.g. for Ray Train, whose
    `report` every worker must call; the other ranks' reports hold no metrics).
    Checkpoints go to `checkpoint_dir/latest.pt` every `checkpoint_every` steps and at the
    end, written before that step's report, which then names it under "checkpoint";
    `resume` restores one (same plan) and continues from its step.
    A plan with an absent-class anchor (`anchor.py`) first reads which classes `data` never
    shows; with none, the run is the plan without it, bit for bit.
    Before an evaluation, a checkpoint and the return, the EMA's batch-norm statistics are
    re-estimated from `bn_refresh_batches` training batches (`refresh_batch_norm`; 0 keeps
    the live generator's statistics, the behaviour before issue #13).
    """
    device = torch.device(device)
    rank, size = world()
    if cfg.batch_size % size:
        raise ValueError(f"OasisConfig.batch_size {cfg.batch_size} must divide by the "
                         f"world size {size}")
    local = cfg.batch_size // size
    num_classes = plan.generator.semantic_nc - 1
    policy = d_augment.parse_augment_policy(cfg.d_augment)
    if plan.anchor is not None:   # before make_state: a copy with nothing to guard is dropped
        plan.anchor.fit(data, num_classes)
    state = make_state(plan, cfg, device)
    if resume is not None:
        load_checkpoint(state, resume, device)
    plan.generator.train()
    plan.discriminator.train()
    stage, g, d = -1, plan.generator, plan.discriminator
    start, last_report = time.perf_counter(), time.perf_counter()
    last_step = state.step
    while state.step < iterations:
        if plan.stage_index(state.step) != stage:
            stage = plan.apply_stage(state.step)
            d_trainable = {n: p.requires_grad for n, p in plan.discriminator.named_parameters()}
            g, d = _wrap(plan.generator, device), _wrap(plan.discriminator, device)
        gen = step_generator(seed, state.step)
        idx = batch_indices(len(data), cfg.batch_size, gen)
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=gen)
        part = slice(rank * local, (rank + 1) * local)
        augment = torch.randint(2 ** 62, (cfg.batch_size,), generator=gen)
        images, labels = load_batch(data, idx[part], num_classes, device, augment[part])
        mask = None
        if cfg.lambda_labelmix > 0:
            # Bits drawn per class for the global batch, so every rank mixes the same way.
            mask = labelmix_mask(labels, gen)
        # Drawn last, for the global batch: a run without augmentation draws nothing.
        aug = d_augment.draw(policy, cfg.batch_size, tuple(labels.shape[-2:]), gen)
        anchor = None
        if plan.anchor is not None and plan.anchor.active:   # drawn after everything else
            anchor = plan.anchor.draw(cfg.batch_size, gen)[part]
        losses = train_step(state, g, d, images, labels, z[part].to(device), mask, cfg,
                            d_trainable, None if aug is None else aug.part(part), anchor)
        bad = sorted(k for k, v in losses.items() if not math.isfinite(v))
        if bad:
            raise NonFiniteLossError(f"non-finite loss at iteration {state.step + 1} "
                                     f"({', '.join(f'{k} = {losses[k]}' for k in bad)})")
        state.step += 1
        report: dict[str, Any] = {}
        last = state.step == iterations
        evaluating = evaluate_fn is not None and (
            (eval_every and state.step % eval_every == 0) or last)
        saving = checkpoint_dir is not None and (
            (checkpoint_every and state.step % checkpoint_every == 0) or last)
        if evaluating or saving or last:
            # every rank: under DDP the statistics are all-reduced
            refresh_batch_norm(state.ema, data, num_classes, cfg.batch_size, seed,
                               bn_refresh_batches, device)
        if evaluating and rank == 0:
            report.update(evaluate_fn(state.ema, state.step))
        if saving and rank == 0:
            report["checkpoint"] = str(save_checkpoint(state, Path(checkpoint_dir) /
                                                       "latest.pt", cfg))
        if evaluating or report or (report_every and state.step % report_every == 0) or last:
            now = time.perf_counter()
            report.update(losses, iteration=state.step, stage=stage,
                          wall_time_s=now - start,
                          sec_per_iter=(now - last_report) / max(1, state.step - last_step))
            last_report, last_step = now, state.step
            state.history.append(report)
            if on_report is not None and (rank == 0 or report_all_ranks):
                on_report(report)
    return state
