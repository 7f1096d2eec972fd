"""The OASIS family: `cat_models.oasis` behind the model-family seam."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from harness.families.base import FinetuneJob, ModelFamily

if TYPE_CHECKING:
    import torch


def oasis_trial_config(art: Any, trial: Any, source: Any):
    """The OASIS settings of a trial: the source's architecture, the trial's optimiser."""
    from harness.stages_common import oasis_config

    cfg = source.cfg if source is not None else oasis_config(art.study)
    t = trial.training
    return cfg.replace(lr_g=t.lr_g, lr_d=t.lr_d, batch_size=t.batch_size,
                       ema_decay=t.ema_decay or cfg.ema_decay,
                       lambda_labelmix=t.labelmix_lambda, amp=t.amp, d_augment=t.d_augment)


class OasisFamily(ModelFamily):
    name = "oasis"
    RECIPE_MODULE = "cat_models.oasis.baselines"
    RECIPE_REGISTRY = "BASELINES"
    RECIPE_SETTINGS: ClassVar[dict[str, str]] = {"freeze_d": "freeze_d", "stage1_iters": "stage1_iterations"}
    LOSS_KEYS: ClassVar[tuple[str, ...]] = ("g_total", "d_total")

    def needs_source(self, recipe: str) -> bool:
        return recipe != "scratch"

    def open_source(self, art: Any) -> Any:
        from harness.stages_common import open_source

        return open_source(art)

    def source_classes(self, source: Any) -> int:
        return int(source.num_classes)

    def finetune(self, job: FinetuneJob) -> None:
        from cat_models.oasis.finetune import finetune_oasis

        training = job.trial.training
        eval_every = training.eval_every
        finetune_oasis(job.trial.method.baseline, job.source, job.data, job.iterations,
                       oasis_trial_config(job.art, job.trial, job.source),
                       seed=job.trial.seed, device=job.device,
                       checkpoint_dir=job.checkpoint_dir,
                       checkpoint_every=training.checkpoint_every,
                       resume=job.restore_file, on_report=job.on_report,
                       report_every=eval_every, evaluate_fn=job.evaluate,
                       eval_every=eval_every, report_all_ranks=True, **job.options)

    def sample(self, model: torch.nn.Module, labels: torch.Tensor, seed: int,
               trial: Any) -> torch.Tensor:
        from cat_models.oasis.sampling import sample_images

        device = next(model.parameters()).device
        return sample_images(model, labels.to(device), seed=seed).cpu()

    def training_free(self, source: Any, affinity: Any, trial: Any) -> torch.nn.Module:
        from cat_models.oasis.sampling import training_free_generator

        return training_free_generator(source, affinity)
