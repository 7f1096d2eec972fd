"""One PITI training loop for source pretraining, CAT finetuning and every baseline.

`train_piti(model, data, cfg, iterations, trainable=...)` trains the parameters `trainable`
names (a predicate or a list; a finetuning recipe's plan gives it) with GLIDE's hybrid loss
(losses.py), classifier-free dropout (the mask replaced by the empty mask with probability
`uncond_p`), AdamW and an EMA of the trained parameters; `pretrain_piti` is the same loop over
every parameter. No Ray: the harness passes `on_report` / `evaluate_fn`.

The model is any module called as `model(x_t, t, mask, low_res=None) -> [B, 2C, H, W]`
(sampling.py). Data items are the datasets' {"image": [3, H, W] in [-1, 1], "label": [H, W]
long, 0 = unlabeled}; `mask_fn` turns a label batch into the model's one-hot mask (the mask
layout belongs to the network, so the caller passes it; the empty mask is its last channel).

Determinism: the batch indices, augmentation seeds, timesteps, dropout bits and noise of step
s come from a generator seeded by (seed, s) for the *global* batch, each DDP rank taking its
slice; randomness inside the model (dropout layers) draws from torch's RNG re-seeded from the
same generator (and the rank) for that step, in a fork, so the caller's RNG is untouched. A
resumed run therefore repeats the next steps exactly, and a DDP run computes the update of one
process on the global batch (for models without dropout: a dropout mask depends on how the
batch is split).

Deviations from PITI's loop: timesteps are drawn uniformly (PITI's finetuning scripts use the
"loss-second-moment" importance sampler, whose loss history would make a step depend on
earlier ones beyond the parameters); the upsampler's `low_res` is the image downsampled
(bicubic, antialiased) instead of PITI's BSRGAN-style degradation; no fp16 loss scaling
(bf16 autocast on CUDA with `amp`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from cat_models.data import batching
from cat_models.errors import NonFiniteLossError
from cat_models.piti.diffusion import GaussianDiffusion, make_diffusion
from cat_models.piti.losses import hybrid_loss
from cat_models.piti.sampling import empty_mask_like

# The settings are plain dataclasses (settings.py: validated without torch); re-exported here.
from cat_models.piti.settings import PRETRAIN_SETTINGS, PitiTrainConfig  # noqa: F401

Report = Callable[[dict[str, Any]], None]
Evaluate = Callable[[nn.Module, int], dict[str, Any]]
Trainable = Callable[[str], bool] | Iterable[str]
MaskFn = Callable[[torch.Tensor], torch.Tensor]


def resolve_trainable(model: nn.Module, trainable: Trainable) -> list[str]:
    """Names of the parameters to train, in the model's order; unknown names are an error."""
    names = [n for n, _ in model.named_parameters()]
    if callable(trainable):
        chosen = [n for n in names if trainable(n)]
    else:
        wanted = set(trainable)
        unknown = sorted(wanted - set(names))
        if unknown:
            raise ValueError(f"trainable: {len(unknown)} names are not parameters of the "
                             f"model, e.g. {unknown[:3]}")
        chosen = [n for n in names if n in wanted]
    if not chosen:
        raise ValueError("trainable: selects no parameter of the model")
    return chosen


@dataclass
class PitiTrainState:
    """Everything a checkpoint holds: the model, the trained names, EMA, optimiser, step."""

    model: nn.Module
    trainable: list[str]
    ema: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def ema_model(self) -> nn.Module:
        """A copy of the model with the EMA weights in the trained parameters, eval mode."""
        model = copy.deepcopy(self.model)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.ema.items():
                params[name].copy_(value)
        return model.eval().requires_grad_(False)


def make_state(model: nn.Module, trainable: Trainable, cfg: PitiTrainConfig,
               device: torch.device) -> PitiTrainState:
    model.to(device)
    names = resolve_trainable(model, trainable)
    chosen = set(names)
    params = dict(model.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in chosen)
    opt = torch.optim.AdamW([params[n] for n in names], lr=cfg.lr, betas=cfg.betas,
                            weight_decay=cfg.weight_decay)
    ema = {n: params[n].detach().clone() for n in names}
    return PitiTrainState(model, names, ema, opt)


def save_checkpoint(state: PitiTrainState, path: str | Path, cfg: PitiTrainConfig) -> Path:
    """Atomic write of model, EMA, optimiser, step, history, config and RNG states."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": state.model.state_dict(), "ema": state.ema, "trainable": state.trainable,
        "optimizer": state.optimizer.state_dict(), "step": state.step,
        "history": state.history, "config": cfg.to_dict(),
        "rng": batching.rng_states(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(state: PitiTrainState, path: str | Path, device: torch.device) -> None:
    """Restore a `save_checkpoint` file into a state built with the same trained names."""
    payload = torch.load(path, map_location=device, weights_only=False)
    if list(payload["trainable"]) != state.trainable:
        raise ValueError(f"{path}: trains {len(payload['trainable'])} parameters, the run "
                         f"{len(state.trainable)}; resume needs the same `trainable` set")
    try:
        state.model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: 'model' does not fit the model ({err})") from err
    with torch.no_grad():
        for name in state.trainable:
            state.ema[name].copy_(payload["ema"][name])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.step = int(payload["step"])
    state.history = list(payload.get("history", []))
    batching.restore_rng_states(payload["rng"])


def _update_ema(state: PitiTrainState, decay: float) -> None:
    params = dict(state.model.named_parameters())
    with torch.no_grad():
        for name, avg in state.ema.items():
            avg.lerp_(params[name].detach(), 1.0 - decay)


def _wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if batching.world()[1] == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    # Buffers (if any) follow rank 0's, the default; PITI's networks have none that change.
    return DDP(model, device_ids=ids)


def train_piti(model: nn.Module, data: Sequence[dict], cfg: PitiTrainConfig, iterations: int,
               *, trainable: Trainable, mask_fn: MaskFn, seed: int = 0,
               device: str | torch.device = "cpu", checkpoint_dir: str | Path | None = None,
               checkpoint_every: int = 0, resume: str | Path | None = None,
               on_report: Report | None = None, report_every: int = 10,
               evaluate_fn: Evaluate | None = None, eval_every: int = 0,
               report_all_ranks: bool = False) -> PitiTrainState:
    """Train the `trainable` parameters of `model` on `data` up to `iterations` steps.

    `mask_fn(labels [B, H, W]) -> mask [B, C_in, H, W]` builds the model's one-hot input.

    `cfg.batch_size` is the global batch; under `torch.distributed` every rank takes its share.
    `evaluate_fn(ema_model, step)` runs on rank 0 every `eval_every` steps and after the last;
    `on_report` gets {"iteration", "loss", "mse", "vb" (global batch means), "lr",
    "wall_time_s", "sec_per_iter", metrics...} every `report_every` steps and at the end, on
    rank 0 (every rank with `report_all_ranks`). Checkpoints go to `checkpoint_dir/latest.pt`
    every `checkpoint_every` steps and at the end, written before that step's report is sent
    (the report names it under "checkpoint" and is in its history); `resume` continues from
    one. A non-finite loss raises NonFiniteLossError before the update.
    """
    device = torch.device(device)
    rank, size = batching.world()
    if cfg.batch_size % size:
        raise ValueError(f"PitiTrainConfig.batch_size {cfg.batch_size} must divide by the "
                         f"world size {size}")
    diffusion = make_diffusion(cfg.schedule, cfg.num_timesteps)
    state = make_state(model, trainable, cfg, device)
    if resume is not None:
        load_checkpoint(state, resume, device)
    net = _wrap(model, device)
    model.train()
    local = cfg.batch_size // size
    part = slice(rank * local, (rank + 1) * local)
    start = last_time = time.perf_counter()
    last_step = state.step
    while state.step < iterations:
        gen = batching.step_generator(seed, state.step)
        idx = batching.batch_indices(len(data), cfg.batch_size, gen)
        augment = torch.randint(2 ** 62, (cfg.batch_size,), generator=gen)
        t = torch.randint(diffusion.num_timesteps, (cfg.batch_size,), generator=gen)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.uncond_p
        model_seed = int(torch.randint(2 ** 62, (1,), generator=gen)) + rank
        images, labels = batching.read_items(data, idx[part], augment[part])
        if cfg.image_size is not None and tuple(images.shape[-2:]) != cfg.image_size:
            images = F.interpolate(images, size=cfg.image_size, mode="bicubic",
                                   antialias=True, align_corners=False).clamp(-1, 1)
        noise = torch.randn(cfg.batch_size, *images.shape[1:], generator=gen)[part]
        lr = cfg.lr_at(state.step, iterations)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        losses = _train_step(state, net, diffusion, images.to(device), mask_fn(labels.to(device)),
                             t[part].to(device), noise.to(device), drop[part].to(device),
                             model_seed, cfg)
        state.step += 1
        report: dict[str, Any] = {}
        last = state.step == iterations
        evaluating = evaluate_fn is not None and (
            (eval_every and state.step % eval_every == 0) or last)
        if evaluating and rank == 0:
            report.update(evaluate_fn(state.ema_model(), state.step))
        saving = checkpoint_dir is not None and rank == 0 and (
            (checkpoint_every and state.step % checkpoint_every == 0) or last)
        if saving:
            report["checkpoint"] = str(Path(checkpoint_dir) / "latest.pt")
        reporting = bool(evaluating or report or (report_every and state.step % report_every == 0)
                         or last)
        if reporting:
            now = time.perf_counter()
            report.update(losses, iteration=state.step, lr=lr, wall_time_s=now - start,
                          sec_per_iter=(now - last_time) / max(1, state.step - last_step))
            last_time, last_step = now, state.step
            state.history.append(report)
        if saving:   # after the history holds this step's report, before anyone is told
            save_checkpoint(state, report["checkpoint"], cfg)
        if reporting and on_report is not None and (rank == 0 or report_all_ranks):
            on_report(report)
    return state


def _train_step(state: PitiTrainState, net: nn.Module, diffusion: GaussianDiffusion,
                images: torch.Tensor, masks: torch.Tensor, t: torch.Tensor,
                noise: torch.Tensor, drop: torch.Tensor, model_seed: int,
                cfg: PitiTrainConfig) -> dict[str, float]:
    """One AdamW step on the hybrid loss of a local batch; returns global-batch means."""
    if bool(drop.any()):
        masks = torch.where(drop.view(-1, 1, 1, 1), empty_mask_like(masks), masks)
    low_res = None
    if cfg.low_res_size is not None:
        low_res = F.interpolate(images, size=cfg.low_res_size, mode="bicubic",
                                antialias=True, align_corners=False).clamp(-1, 1)
    x_t = diffusion.q_sample(images, t, noise)
    amp = cfg.amp and images.device.type == "cuda"
    devices = [images.device] if images.device.type == "cuda" else []
    state.optimizer.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(model_seed)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = net(x_t, t, masks, low_res=low_res)
        terms = hybrid_loss(diffusion, out.float(), images, x_t, t, noise)
        loss = terms["loss"].mean()
        stats = torch.stack([loss.detach(), terms["mse"].detach().mean(),
                             terms["vb"].detach().mean()])
        if batching.world()[1] > 1:
            # every rank sees the same (global) values, so all of them stop together
            dist.all_reduce(stats)
            stats /= batching.world()[1]
        if not bool(torch.isfinite(stats).all()):
            raise NonFiniteLossError(f"non-finite loss at iteration {state.step + 1} "
                                     f"(loss {float(stats[0])}, mse {float(stats[1])}, "
                                     f"vb {float(stats[2])})")
        loss.backward()
    state.optimizer.step()
    _update_ema(state, cfg.ema_decay)
    return {"loss": float(stats[0]), "mse": float(stats[1]), "vb": float(stats[2])}


def pretrain_piti(model: nn.Module, data: Sequence[dict], cfg: PitiTrainConfig,
                  iterations: int, **kwargs: Any) -> PitiTrainState:
    """Train a source PITI from scratch on the source dataset: `train_piti` over every
    parameter (keyword options as there; `uncond_p` > 0 so the model learns the empty mask
    that classifier-free guidance needs)."""
    if "trainable" in kwargs:
        raise ValueError("pretrain_piti trains every parameter; use train_piti for a subset")
    if cfg.uncond_p == 0:
        raise ValueError("pretrain_piti: PitiTrainConfig.uncond_p is 0, so the model would "
                         "never see the empty mask that guided sampling needs")
    return train_piti(model, data, cfg, iterations, trainable=lambda name: True, **kwargs)
