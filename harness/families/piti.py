"""The PITI family: `cat_models.piti` behind the model-family seam.

- Source model: a file written by the PITI source stage (`save_source`: config + EMA weights)
  or a user's checkpoint: ours, or the official `base_mask.pt` (`load_official_piti`, palette
  folded into conv1, COCO-Stuff's 182 classes).
- Finetuning: `build_plan(recipe, source, C_T, ...)` gives the target model and its training
  stages; each stage is one `train_piti` call over its trainable set (the library's loop takes
  one set), the steps of later stages counted on from the earlier ones. A checkpoint folder
  records the stage its `latest.pt` belongs to (`stage.json`), so a resumed trial continues
  in that stage; a stage starts with a fresh optimiser and EMA (as a new finetuning run).
- "from_glide" needs a generic model (a decoder trained without masks: GLIDE in the paper).
  At the embedded scale it is the `generic-model` stage's (`harness.stages_piti`: the same
  architecture pretrained on the source images with the empty mask only); the recipe puts a
  new encoder on it. It does not start from the source model.
- Sampling: `sample_images` with the study's `piti` sampler, step count and guidance scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.families.base import FinetuneJob, ModelFamily

if TYPE_CHECKING:
    import torch

STAGE_FILE = "stage.json"


def save_source(state: Any, path: str | Path) -> Path:
    """The source stage's file: the EMA model's config and weights."""
    import torch

    model = state.ema_model()
    path = Path(path)
    torch.save({"config": model.config.to_dict(), "model": model.state_dict()}, path)
    return path


def load_source(path: str | Path):
    """A PitiModel from `save_source`'s file or an official base_mask.pt."""
    import torch

    from cat_models.piti import PitiConfig, PitiModel, load_official_piti

    payload = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(payload, dict) and set(payload) == {"config", "model"}:
        values = dict(payload["config"])
        for key in ("channel_mult", "attention_resolutions", "cnn_channels"):
            values[key] = tuple(values[key])
        model = PitiModel(PitiConfig.from_dict(values))
        model.load_state_dict(payload["model"])
        return model.eval()
    return load_official_piti(path).eval()


def train_config(trial: Any):
    """The trial's `PitiTrainConfig`: the training section and the study's `piti` block."""
    from cat_models.piti.settings import PitiTrainConfig

    t, p = trial.training, trial.settings
    return PitiTrainConfig(batch_size=t.batch_size, lr=p.lr,
                           ema_decay=t.ema_decay if t.ema_decay is not None else p.ema_decay,
                           uncond_p=p.uncond_p, amp=t.amp)


def sampler_settings(settings: Any):
    from cat_models.piti.settings import SamplerSettings

    return SamplerSettings(settings.sampler, settings.sampling_steps, settings.guidance_scale)


class PitiFamily(ModelFamily):
    name = "piti"
    RECIPE_MODULE = "cat_models.piti.recipes"
    RECIPE_REGISTRY = "RECIPES"
    RECIPE_SETTINGS: ClassVar[dict[str, str]] = {"stage1_iters": "stage1_iterations"}
    LOSS_KEYS: ClassVar[tuple[str, ...]] = ("loss", "mse", "vb")
    TRAINING_FREE_RECIPES: ClassVar[tuple[str, ...]] = ("training_free",)

    def trial_settings(self, study: Any, params: Any) -> Any:
        return study.piti.for_trial(params)

    def needs_source(self, recipe: str) -> bool:
        return recipe != "from_glide"     # it starts from the generic model instead

    def open_source(self, art: Any) -> Any:
        return load_source(art.source_checkpoint)

    def source_classes(self, source: Any) -> int:
        return int(source.config.num_classes)

    def plan(self, job: FinetuneJob):
        from cat_models.piti.recipes import build_plan

        options = dict(job.options)
        if options.get("use_affinity") is False:
            options.pop("affinity", None)          # "w/o CAT": no A to initialise
        if "prompt_count" in self.recipe_options(job.trial.method.baseline) \
                and "prompt_count" not in options and job.trial.settings.prompt_count is not None:
            options["prompt_count"] = job.trial.settings.prompt_count
        classes = job.data.num_classes if hasattr(job.data, "num_classes") else None
        classes = classes or job.art.target_ref.open("val").num_classes
        generic = None
        if job.trial.method.baseline == "from_glide":
            if not job.art.generic_checkpoint:
                raise ValueError("from_glide: the study's artifacts hold no generic model "
                                 "(the generic-model stage runs for studies with a "
                                 "from_glide method)")
            generic = load_source(job.art.generic_checkpoint)
        return build_plan(job.trial.method.baseline, job.source, classes, generic,
                          seed=job.trial.seed, **options)

    def finetune(self, job: FinetuneJob) -> None:
        from cat_models.piti.model import label_mask
        from cat_models.piti.train import train_piti

        plan = self.plan(job)
        model = plan.model
        classes = model.config.num_classes
        cfg = train_config(job.trial)
        training = job.trial.training
        ends, end = [], 0
        for stage in plan.stages:
            end = job.iterations if stage.iters is None else min(job.iterations,
                                                                 end + stage.iters)
            ends.append(end)
        ends[-1] = job.iterations
        first, resume = 0, job.restore_file
        if resume is not None:
            marker = Path(resume).parent / STAGE_FILE
            first = json.loads(marker.read_text())["stage"] if marker.is_file() else 0
        begin = 0 if first == 0 else ends[first - 1]
        for index in range(first, len(plan.stages)):
            offset = begin

            def shifted(report: dict[str, Any], offset: int = offset, index: int = index
                        ) -> None:
                report = {**report, "iteration": int(report["iteration"]) + offset,
                          "stage": index}
                if report.get("checkpoint"):
                    (Path(report["checkpoint"]).parent / STAGE_FILE).write_text(
                        json.dumps({"stage": index, "offset": offset}))
                job.on_report(report)

            def evaluate(ema: torch.nn.Module, step: int, offset: int = offset
                         ) -> dict[str, Any]:
                return job.evaluate(ema, step + offset)

            steps = ends[index] - begin
            if steps > 0:
                state = train_piti(
                    model, job.data, cfg, steps, trainable=plan.stages[index].train,
                    mask_fn=lambda labels: label_mask(labels, classes),
                    seed=job.trial.seed + 1000 * index, device=job.device,
                    checkpoint_dir=job.checkpoint_dir,
                    checkpoint_every=training.checkpoint_every, resume=resume,
                    on_report=shifted, report_every=training.eval_every,
                    evaluate_fn=evaluate, eval_every=training.eval_every,
                    report_all_ranks=True)
                model = state.model
            resume, begin = None, ends[index]

    def sample(self, model: torch.nn.Module, labels: torch.Tensor, seed: int,
               trial: Any) -> torch.Tensor:
        from cat_models.piti.model import label_mask
        from cat_models.piti.sampling import sample_images

        masks = label_mask(labels.long(), model.config.num_classes)
        return sample_images(model, masks, settings=sampler_settings(trial.settings),
                             seed=seed, batch_size=16)

    def training_free(self, source: Any, affinity: Any, trial: Any) -> torch.nn.Module:
        from cat_models.piti.recipes import build_plan

        values = getattr(affinity, "values", affinity)
        return build_plan("training_free", source, int(values.shape[1]), affinity=affinity,
                          seed=trial.seed).model
