"""The CUDA, nccl and AMP paths on a GPU machine, in one run: correctness first, then speed.

    python benchmarks/gpu_check.py --out DIR [--carry .devcarry] [--sections a,b,...]
        [--tf32 off]

Each section appends JSON rows to `DIR/gpu_check.jsonl` and prints a line; a section that
fails records its error and the next one runs. Sections:

* `env`: torch / CUDA / cuDNN / nccl versions, the GPU, TF32 settings.
* `cuda_vs_cpu`: the first 5 OASIS steps (bench32, scratch, seed 0) on CPU, on CUDA in fp32
  and on CUDA with bf16 autocast: the reported losses side by side.
* `ddp`: two processes on the one GPU. nccl first (NCCL refuses two ranks on one device; the
  row records what it says), then gloo with CUDA tensors: the same step at global
  batch 8 as 2 x 4 must give the gradients and parameters of one process on 8 (what the
  harness's multi-worker trials rely on; the tolerances of the CPU test of the same claim),
  plus an nccl all-reduce in a one-rank group.
* `oasis_step`: step time of `train_oasis` (bf16 autocast off / on) vs a bare G+D loop of the
  same model (`benchmarks/oasis_step_time.py`), for bench32 (the main job), bench64 and the
  official ADE20K configuration (256 px, 151 labels, batch 32); peak GPU memory.
* `trial`: `harness.trial.run_trial` on CUDA, the main job's CAT trial at size 50, seed 0
  (300 iterations, evaluations of 64 samples at 100 / 200 / 300), with `training.amp` on and
  off. Needs `--carry` from `benchmarks/gpu_prepare.py`. The FID network there is a
  randomly initialised torchvision Inception-v3 of the same architecture (the packaged
  weights do not fit the transfer), so FID / KID there time the evaluation but are not
  comparable with other numbers; mIoU uses the study's own segmenter and is.
* `piti_step` / `piti_sampling`: PITI training step (bf16 off / on) and sampling throughput
  of the embedded preset and of the official base model's configuration (64 px, 338 M).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import pickle
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch

# `--tf32 off` (read here too, so the DDP processes this script spawns see it): fp32
# convolutions and matrix products in full fp32 instead of cuDNN's default TF32.
if os.environ.get("GPU_CHECK_TF32") == "off":
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

OUT: Path = Path(".")
DEVICE = "cuda"      # `--device cpu --quick` rehearses the script on a machine without GPU
QUICK = False
TRIAL_AMPS = (True, False, True)   # `--trial-amps`
TRIAL_THREADS: int | None = None   # `--trial-threads`: torch threads of the trial process


def emit(section: str, **row: Any) -> None:
    row = {"section": section, **row}
    with open(OUT / "gpu_check.jsonl", "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    print(json.dumps(row, default=str), flush=True)


def peak_mb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if DEVICE == "cuda" else None


def reset_peak() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ env
def env() -> None:
    if DEVICE != "cuda":
        emit("env", torch=torch.__version__, device=DEVICE)
        return
    props = torch.cuda.get_device_properties(0)
    emit("env", torch=torch.__version__, cuda=torch.version.cuda,
         cudnn=torch.backends.cudnn.version(), nccl=".".join(map(str, torch.cuda.nccl.version())),
         gpu=props.name, memory_gb=round(props.total_memory / 2 ** 30, 1),
         sms=props.multi_processor_count,
         tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
         tf32_cudnn=torch.backends.cudnn.allow_tf32, python=sys.version.split()[0])


# ------------------------------------------------------------------------------ OASIS bits
def oasis_run(cfg, items, classes: int, steps: int, device: str):
    """`train_oasis` from scratch (seed 0): (reports, state)."""
    from oasis_step_time import train_scratch

    reports: list[dict] = []
    state = train_scratch(cfg, items, classes, steps, device, reports.append)
    return reports, state


def cuda_vs_cpu() -> None:
    from oasis_step_time import data

    from cat_models.oasis import preset

    items = data(32, 12, 32)
    rows = {}
    for name, device, amp in (("cpu", "cpu", False), ("cuda_fp32", DEVICE, False),
                              ("cuda_bf16", DEVICE, True)):
        reports, _ = oasis_run(preset("bench32", amp=amp), items, 12, 5, device)
        rows[name] = [{k: r[k] for k in r if k.startswith(("g_", "d_"))} for r in reports]
    for name in ("cuda_fp32", "cuda_bf16"):
        diffs = [max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-6) for k in b)
                 for a, b in zip(rows[name], rows["cpu"], strict=True)]
        emit("cuda_vs_cpu", run=name, max_rel_diff_per_step=[round(d, 6) for d in diffs],
             losses=rows[name], cpu_losses=rows["cpu"])


# ------------------------------------------------------------------------------------ DDP
def grads_and_params(plan) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    return {f"{prefix}.{name}": (p.detach().cpu(), None if p.grad is None else p.grad.cpu())
            for prefix, module in (("G", plan.generator), ("D", plan.discriminator))
            for name, p in module.named_parameters()}


def differences(single: dict, ddp: dict, cfg) -> dict[str, Any]:
    """How far a DDP rank's gradients and parameters are from one process's: the largest
    relative gradient difference (tensors whose gradient is not float noise, max |g| > 1e-4),
    the largest parameter difference in units of the learning rate (one Adam step moves a
    parameter by about lr), and the tensors outside the tolerances of the CPU test of the same
    claim (tests/oasis/test_train.py)."""
    grad_rel, step_frac, bad = 0.0, 0.0, []
    for name, (param, grad) in single.items():
        d_param, d_grad = ddp[name]
        lr = cfg.lr_g if name.startswith("G.") else cfg.lr_d
        step_frac = max(step_frac, float((param - d_param).abs().max()) / lr)
        if grad is None:
            continue
        scale = float(grad.abs().max())
        ok = torch.allclose(grad, d_grad, rtol=1e-3, atol=1e-3 * scale + 1e-5)
        if scale > 1e-4:
            grad_rel = max(grad_rel, float((grad - d_grad).abs().max()) / scale)
            ok = ok and torch.allclose(param, d_param, rtol=1e-4, atol=1e-6)
        if not ok:
            bad.append(name)
    return {"max_grad_rel_diff": grad_rel, "max_param_diff_in_lr": round(step_frac, 5),
            "outside_test_tolerance": len(bad), "first_outside": bad[:3]}


def _ddp_worker(rank: int, backend: str, init: str, out: str, queue, device: str) -> None:
    try:
        import torch.distributed as dist
        from oasis_step_time import data

        from cat_models.oasis import preset

        if device.startswith("cuda"):
            torch.cuda.set_device(0)
        dist.init_process_group(backend, init_method=init, rank=rank, world_size=2)
        try:
            _, state = oasis_run(preset("bench32", amp=False), data(32, 12, 32), 12, 1, device)
            torch.save(grads_and_params(state.plan), f"{out}/{backend}_rank{rank}.pt")
        finally:
            dist.destroy_process_group()
        queue.put((rank, "ok"))
    except Exception as err:  # noqa: BLE001 - reported to the parent
        queue.put((rank, f"{type(err).__name__}: {err}"[:600]))


def _spawn_two(backend: str, device: str, folder: str, timeout: float = 120) -> list[str]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{folder}/rdv_{backend}_{device.replace(':', '')}"
    procs = [ctx.Process(target=_ddp_worker, args=(r, backend, init, folder, queue, device))
             for r in range(2)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
    outcome = {}
    while not queue.empty():
        rank, msg = queue.get()
        outcome[rank] = msg
    for p in procs:
        if p.is_alive():
            p.kill()
            outcome.setdefault(procs.index(p), f"timed out after {timeout:.0f} s")
    return [outcome.get(r, f"exit code {procs[r].exitcode}") for r in range(2)]


def ddp() -> None:
    import torch.distributed as dist
    from oasis_step_time import data

    from cat_models.oasis import preset

    folder = tempfile.mkdtemp(prefix="ddp-")
    backends = ("nccl", "gloo", "gloo_cpu") if DEVICE == "cuda" else ("gloo_cpu",)
    # one-rank group: the collective itself
    first = backends[0].removesuffix("_cpu")
    dist.init_process_group(first, init_method=f"file://{folder}/rdv1", rank=0, world_size=1)
    t = torch.arange(4.0, device=DEVICE)
    dist.all_reduce(t)
    emit("ddp", run=f"{first}_world1_all_reduce",
         ok=bool(torch.equal(t.cpu(), torch.arange(4.0))))
    dist.destroy_process_group()

    cfg = preset("bench32", amp=False)
    refs = {device: grads_and_params(oasis_run(cfg, data(32, 12, 32), 12, 1, device)[1].plan)
            for device in {"cuda:0" if DEVICE == "cuda" else "cpu", "cpu"}}
    for backend in backends:
        device = "cpu" if backend.endswith("_cpu") or DEVICE != "cuda" else "cuda:0"
        outcome = _spawn_two(backend.removesuffix("_cpu"), device, folder)
        row: dict[str, Any] = {"run": f"{backend} 2 ranks", "device": device, "ranks": outcome}
        if all(o == "ok" for o in outcome):
            for rank in range(2):
                got = torch.load(f"{folder}/{backend.removesuffix('_cpu')}_rank{rank}.pt")
                row[f"rank{rank}"] = differences(refs[device], got, cfg)
        emit("ddp", **row)


# --------------------------------------------------------------------------- step times
def oasis_step() -> None:
    from oasis_step_time import bare_loop, data, our_loop

    from cat_models.oasis import build_discriminator, build_generator, preset

    runs = (("bench32", 12, 32, 40, {}), ("bench64", 12, 64, 40, {}),
            ("official_ade20k", 150, 256, 12, {"batch_size": 32}))
    for name, classes, size, steps, overrides in (((runs[0][:3] + (4, {})),) if QUICK else runs):
        items = data(max(64, overrides.get("batch_size", 8)), classes, size)
        cfg = preset(name, **overrides)
        n_g = sum(p.numel() for p in build_generator(cfg, classes).parameters()) / 1e6
        n_d = sum(p.numel() for p in build_discriminator(cfg, classes).parameters()) / 1e6
        row: dict[str, Any] = {"preset": name, "classes": classes, "batch": cfg.batch_size,
                               "g_params_m": round(n_g, 2), "d_params_m": round(n_d, 2),
                               "steps": steps}
        device = torch.device(DEVICE)
        for label, fn, amp in (("bare_fp32", bare_loop, False), ("train_oasis_fp32", our_loop, False),
                               ("train_oasis_bf16", our_loop, True), ("bare_fp32_again", bare_loop, False)):
            reset_peak()
            row[f"{label}_s"] = round(fn(cfg.replace(amp=amp), items, classes, steps, device), 5)
            row[f"{label}_peak_mb"] = peak_mb()
        bare = statistics.median([row["bare_fp32_s"], row["bare_fp32_again_s"]])
        row["throughput_ratio_fp32"] = round(bare / row["train_oasis_fp32_s"], 3)
        row["bf16_speedup"] = round(row["train_oasis_fp32_s"] / row["train_oasis_bf16_s"], 3)
        emit("oasis_step", **row)


# ----------------------------------------------------------------------------- the trial
def standin_inception(path: Path) -> None:
    """A TorchScript file with clean-fid's `layers` contract ([-1, 1] at 299 px -> [B, 2048,
    1, 1]) holding torchvision's Inception-v3 trunk, randomly initialised (batch-norm
    statistics from random images)."""
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    layers = torch.nn.Sequential(
        net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, torch.nn.MaxPool2d(3, 2),
        net.Conv2d_3b_1x1,
        net.Conv2d_4a_3x3, torch.nn.MaxPool2d(3, 2), net.Mixed_5b, net.Mixed_5c, net.Mixed_5d,
        net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e, net.Mixed_7a,
        net.Mixed_7b, net.Mixed_7c, torch.nn.AdaptiveAvgPool2d(1))

    # batch-norm statistics of random inputs, so the activations neither vanish nor explode
    for m in layers.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    layers.to(DEVICE).train()
    with torch.no_grad():
        for _ in range(4):
            layers(torch.randn(16, 3, 299, 299, device=DEVICE))
    layers.cpu().eval()

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = layers

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    torch.jit.script(Holder().eval()).save(str(path))


def rebase(art, root: Path):
    """`benchmarks/gpu_prepare.py`'s relative paths made absolute under `root`."""
    from gpu_prepare import map_paths

    return map_paths(art, lambda p: p if not p or Path(p).is_absolute() else str(root / p))


def carried_artifacts(carry: Path, prefix: str):
    """(Artifacts, work folder): `gpu_prepare.py`'s pickled Artifacts with their paths under
    `carry`, the stand-in Inception as FID network and a fresh statistics folder."""
    with open(carry / "artifacts.pkl", "rb") as f:
        art = rebase(pickle.load(f), carry.resolve())
    work = Path(tempfile.mkdtemp(prefix=prefix))
    net = work / "standin_inception.pt"
    standin_inception(net)
    return dataclasses.replace(art, feature_net=str(net), stats_cache=str(work / "stats")), work


def trial(carry: Path) -> None:
    from harness.trial import run_trial

    art, work = carried_artifacts(carry, "gpu-trial-")
    params = {"method": art.study.methods[0].label, "target_size": 50, "seed": 0}
    if QUICK:
        art = dataclasses.replace(art, study=art.study.model_copy(update={
            "training": art.study.training.model_copy(update={"iterations": 4, "eval_every": 2,
                                                              "stage1_iterations": 2}),
            "evaluation": art.study.evaluation.model_copy(update={"n_samples": 8})}))
    for amp in ((True,) if QUICK else TRIAL_AMPS):
        study = art.study.model_copy(
            update={"training": art.study.training.model_copy(update={"amp": amp})})
        reports: list[dict] = []
        reset_peak()
        start = time.perf_counter()
        last = run_trial(params, dataclasses.replace(art, study=study),
                         lambda m, c, reports=reports: reports.append(dict(m)), trial_dir=str(work / f"t{amp}"),
                         device=DEVICE, threads=TRIAL_THREADS)
        wall = time.perf_counter() - start
        emit("trial", amp=amp, wall_s=round(wall, 2), loop_s=last["wall_time_s"],
             evaluations=[{k: r.get(k) for k in ("iteration", "wall_time_s", "fid", "kid",
                                                  "miou")} for r in reports],
             final_miou=last.get("final_miou"), peak_mb=peak_mb(), params=params)


# ------------------------------------------------------------------------------------ PITI
def piti_step() -> None:
    from piti_sampling import blocky_labels

    from cat_models.piti import build_piti, label_mask
    from cat_models.piti.settings import PitiTrainConfig
    from cat_models.piti.train import train_piti

    runs = (("embedded", 8, 32, None, 30), ("official_base", 16, 256, (64, 64), 12))
    for name, batch, data_px, image_px, steps in ((("embedded", 8, 32, None, 4),) if QUICK
                                                  else runs):
        row: dict[str, Any] = {"preset": name, "batch": batch, "steps": steps}
        for amp in (False, True):
            model = build_piti(name, seed=0)
            c = model.config
            row["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
            labels = blocky_labels(32, c.num_classes, data_px)
            items = [{"image": torch.rand(3, data_px, data_px) * 2 - 1, "label": lab}
                     for lab in labels]
            cfg = PitiTrainConfig(batch_size=batch, lr=1e-4, image_size=image_px, amp=amp)
            reports: list[dict] = []
            reset_peak()
            train_piti(model, items, cfg, steps, trainable=lambda n: True,
                       mask_fn=lambda lab, c=c: label_mask(lab, c.num_classes), device=DEVICE,
                       on_report=reports.append, report_every=1)
            times = [r["sec_per_iter"] for r in reports[2:]]
            row[f"{'bf16' if amp else 'fp32'}_s"] = round(statistics.median(times), 5)
            row[f"{'bf16' if amp else 'fp32'}_peak_mb"] = peak_mb()
            row[f"{'bf16' if amp else 'fp32'}_last_loss"] = round(reports[-1]["loss"], 5)
            del model
        row["bf16_speedup"] = round(row["fp32_s"] / row["bf16_s"], 3)
        emit("piti_step", **row)


def piti_sampling() -> None:
    from piti_sampling import blocky_labels

    from cat_models.piti import build_piti, label_mask
    from cat_models.piti.sampling import SamplerSettings, sample_images

    runs = (("embedded", 64, (("ddpm", 1000), ("ddpm", 100), ("ddim", 50), ("dpmsolver++", 20))),
            ("official_base", 16, (("ddpm", 100), ("ddim", 50), ("dpmsolver++", 20))))
    for name, images, configs in (((("embedded", 4, (("ddim", 3), ("dpmsolver++", 3))),))
                                  if QUICK else runs):
        model = build_piti(name, seed=0).to(DEVICE).eval()
        c = model.config
        masks = label_mask(blocky_labels(images, c.num_classes, c.mask_resolution), c.num_classes)
        sample_images(model, masks[:4], settings=SamplerSettings("ddim", 2, 1.3),
                      size=c.resolution)
        for sampler, steps in configs:
            sync()
            start = time.perf_counter()
            out = sample_images(model, masks, settings=SamplerSettings(sampler, steps, 1.3),
                                size=c.resolution, batch_size=images, seed=0)
            sync()
            wall = time.perf_counter() - start
            emit("piti_sampling", preset=name, sampler=sampler, steps=steps, images=len(out),
                 batch=images, wall_s=round(wall, 3), images_per_s=round(len(out) / wall, 3),
                 finite=bool(torch.isfinite(out).all()))
        del model


SECTIONS = {"env": env, "cuda_vs_cpu": cuda_vs_cpu, "ddp": ddp, "oasis_step": oasis_step,
            "trial": None, "piti_step": piti_step, "piti_sampling": piti_sampling}


def device_script_args(description: str, sections: dict) -> argparse.ArgumentParser:
    """The arguments every GPU-machine script here takes: --out, --carry, --sections,
    --device, --quick."""
    p = argparse.ArgumentParser(description=description.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--carry", default=str(REPO / ".devcarry"))
    p.add_argument("--sections", default=",".join(sections))
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a rehearsal on CPU)")
    return p


def main() -> int:
    global OUT, DEVICE, QUICK, TRIAL_AMPS, TRIAL_THREADS
    p = device_script_args(__doc__, SECTIONS)
    p.add_argument("--tf32", choices=("default", "off"), default="default")
    p.add_argument("--trial-amps", default="on,off,on", help="one trial per entry")
    p.add_argument("--trial-threads", type=int, default=None)
    args = p.parse_args()
    TRIAL_AMPS = tuple(a == "on" for a in args.trial_amps.split(","))
    TRIAL_THREADS = args.trial_threads
    if args.tf32 == "off":
        os.environ["GPU_CHECK_TF32"] = "off"
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    OUT, DEVICE, QUICK = Path(args.out), args.device, args.quick
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    failed = 0
    for name in args.sections.split(","):
        start = time.perf_counter()
        try:
            trial(Path(args.carry)) if name == "trial" else SECTIONS[name]()
        except Exception:  # noqa: BLE001 - record it, run the next section
            failed += 1
            emit(name, error=traceback.format_exc()[-3000:])
        emit("timing", of=name, seconds=round(time.perf_counter() - start, 1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
