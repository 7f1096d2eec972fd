"""The PITI model stages, `pretrain_piti` on the source training split (cached like OASIS's,
so `--dry-run` reports them):

- `source-model`: the source PITI, or the user's checkpoint (one written by this stage, or the
  official `base_mask.pt`);
- `generic-model` (only for a study with a `from_glide` method): the paper's from-GLIDE
  baseline puts a new encoder on GLIDE's decoder, a diffusion model trained on other images
  without masks. At the embedded scale its stand-in is the same architecture pretrained on
  the source images with every mask replaced by the empty mask (`uncond_p` = 1): a decoder
  that learned the source images' statistics and never saw a layout. Same data, budget and
  seed as the source model, so the two baselines differ only in what the decoder was given.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from harness import stages_common as common
from harness.cache import StageRunner, file_hash, input_hash
from harness.config import Study, StudyError
from harness.stages_common import CODE_VERSION, ref_key, set_threads
from harness.stages_data import DatasetRef

GENERIC_UNCOND_P = 1.0   # the generic model's pretraining: the empty mask, always


def piti_source_inputs(study: Study, source: DatasetRef, generic: bool = False
                       ) -> dict[str, Any]:
    """The cache key of the PITI source model (or, `generic`, of the mask-free generic
    model): data, architecture, pretraining settings."""
    p = study.piti.pretrain
    res = study.resolution if isinstance(study.resolution, int) else study.resolution[0]
    try:   # the class count is the source dataset's (part of `ref`), set when it is built
        cfg = study.piti.config(1, res).to_dict()
    except (TypeError, ValueError) as err:
        raise StudyError(f"piti.overrides: {err}") from None
    cfg.pop("num_classes")
    train = p.train_config()
    if generic:
        train["uncond_p"] = GENERIC_UNCOND_P
    return {"ref": ref_key(source), "cfg": cfg,
            "train": train, "iterations": p.iterations, "seed": p.seed,
            "code": CODE_VERSION}


def _pretrain_piti_task(ref: DatasetRef, inputs: dict, out: str, cpus: float,
                        device: str) -> str:
    """Ray task: pretrain the source PITI (resumable from `out`'s folder)."""
    set_threads(cpus)
    import torch

    from cat_models.piti.config import PitiConfig
    from cat_models.piti.model import PitiModel, label_mask
    from cat_models.piti.train import PitiTrainConfig, pretrain_piti
    from harness.families.piti import save_source

    data = ref.open("train", augment=True)
    values = {**inputs["cfg"], "num_classes": data.num_classes}
    for key in ("channel_mult", "attention_resolutions", "cnn_channels"):
        values[key] = tuple(values[key])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(inputs["seed"])
        model = PitiModel(PitiConfig.from_dict(values))
    cfg = PitiTrainConfig(**inputs["train"])
    iterations = inputs["iterations"]
    work = Path(out).parent
    resume = work / "latest.pt"
    start = time.perf_counter()

    def progress(r: dict) -> None:
        done = r["iteration"]
        eta = (time.perf_counter() - start) / max(1, done) * (iterations - done)
        print(f"[pretrain-piti] {done}/{iterations}  loss {r.get('loss', 0):.4f}  "
              f"{r.get('sec_per_iter', 0):.2f} s/it  eta {eta / 60:.1f} min", flush=True)

    state = pretrain_piti(model, data, cfg, iterations,
                          mask_fn=lambda labels: label_mask(labels, data.num_classes),
                          seed=inputs["seed"], device=device, checkpoint_dir=work,
                          checkpoint_every=max(50, iterations // 10),
                          resume=resume if resume.is_file() else None,
                          on_report=progress, report_every=max(10, iterations // 20))
    return str(save_source(state, out))


def stage_piti_source(study: Study, source: DatasetRef, runner: StageRunner,
                      cluster: dict[str, float]) -> tuple[str, str]:
    """(checkpoint path, content hash) of the PITI source model; planning, ("", "") while it
    is not there."""
    log = runner.log
    ckpt = study.source.checkpoint
    if ckpt is not None:
        return common.user_source(
            Path(ckpt), log, runner.plan, runner.report, Path.is_file, file_hash,
            f"source.checkpoint: {ckpt} is not a file (expected a PITI source-model file or "
            "the official base_mask.pt)")
    folder = _pretrained(study, source, runner, cluster, "source")
    if folder is None:
        return "", ""
    return str(folder / "source.pt"), file_hash(folder / "source.pt")


# role -> (stage, file and work-folder stem, what the log line says it pretrains)
PRETRAINED = {"source": ("source-model", "source", "source model: pretraining PITI"),
              "generic": ("generic-model", "generic", ("generic model (from_glide's decoder): "
                                                        "pretraining PITI with the empty mask only"))}


def _pretrained(study: Study, source: DatasetRef, runner: StageRunner,
                cluster: dict[str, float], role: str) -> Path | None:
    """The cached stage folder holding `<role>.pt`, pretrained as a Ray task (resumable from
    the cache's work folder); planning, None while it is not there."""
    stage, stem, what = PRETRAINED[role]
    inputs = piti_source_inputs(study, source, generic=role == "generic")
    work = runner.cache / "work" / f"{stem}-piti-{input_hash(inputs)}"   # resumable
    cpus, gpus = common.source_task_resources(study, cluster)

    def build(out: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        runner.log(f"[stage] {what} ({study.piti.preset}) for {inputs['iterations']} "
                   f"iterations on {source.name} as a Ray task ({cpus:g} CPU, {gpus:g} GPU)")
        path = common.run_task(_pretrain_piti_task, source, inputs, str(work / f"{stem}.pt"),
                               cpus, "cuda" if gpus else "cpu", cpus=cpus, gpus=gpus,
                               name=f"pretrain-{stem}-piti")
        shutil.copy2(path, out / f"{stem}.pt")

    return runner.stage(stage, inputs, build)


def needs_generic(study: Study) -> bool:
    """Whether the study has a method that starts from the generic model (from_glide)."""
    return study.model == "piti" and any(m.baseline == "from_glide" for m in study.methods)


def stage_piti_generic(study: Study, source: DatasetRef, runner: StageRunner,
                       cluster: dict[str, float]) -> str:
    """Path of the generic (mask-free) PITI for from_glide, pretrained and cached; "" when the
    study has no from_glide method, or while planning and it is not there."""
    if not needs_generic(study):
        return ""
    folder = _pretrained(study, source, runner, cluster, "generic")
    return "" if folder is None else str(folder / "generic.pt")
