"""PITI (Wang et al. 2022) with Class Affinity Transfer (paper §3.3): the networks.

The model contract (what the diffusion process, losses, samplers and training code rely on):

    model(x_t, t, mask, low_res=None) -> Tensor[B, 6, H, W]

- `x_t`: [B, 3, H, W] noisy image, H = W = `model.config.resolution`. An upsampler also takes
  `low_res` [B, 3, h, w] (bilinearly resized to H×W and concatenated: 6 U-Net input
  channels), or x_t with it already concatenated ([B, 6, H, W], low_res None).
- `t`: LongTensor [B] (or a scalar) of timesteps on the 1,000-step scale (floats are accepted:
  the official model receives rescaled respaced timesteps).
- `mask`: one-hot float [B, C_in, Hm, Wm], C_in = num_classes + 1. Channel k - 1 is class k of
  `cat_models.data` (labels 1..N); the last channel (index N) is the "empty"
  (unconditional) mask; an unlabeled pixel (label 0) is the all-zero vector. Build it with
  `label_mask(labels, N)`; `empty_mask(batch, N, H, W)` puts all mass on the empty channel
  (classifier-free guidance: the official all-white mask). Masks of another size are resized
  (nearest) to `config.mask_resolution` (official: 256 px, also for the 64-px base).
- output: channels 0..2 the ε prediction, 3..5 the learned-variance interpolation v
  (GLIDE / guided-diffusion `learn_sigma=True`, "learned range": log σ²_t = f·log β_t +
  (1 − f)·log β̃_t with f = (v + 1) / 2; v is not clamped by the network).
- `model.config`: a `PitiConfig` (`resolution`, `num_classes`, `learn_sigma`, `upsampler`,
  `low_resolution`, widths, ...). With CAT (transfer), `num_classes` is the target's C_T.

Build: `preset`, `build_piti(config, seed=)`, `load_official_piti(path)` (base_mask.pt /
upsample_mask.pt, strict keys, palette folded into conv1).
Transfer: `build_plan(name, source, C_T, **options)` with names in `RECIPES` (CAT-PITI and its
Table 5 switches, "from_glide", "finetune_all", "training_free"); `cat_model`,
`training_free_model`.
This package never imports ray, the harness or another model family.
"""

from cat_models.lazy import lazy_exports

# Imported when first read (cat_models.lazy): importing one light submodule (a config, the
# registered names) does not load the package's networks and torch.
_EXPORTS = {
    "cat_models.piti.config": ("PRESETS", "PitiConfig", "preset"),
    "cat_models.piti.model": ("PitiModel", "build_piti", "empty_mask", "label_mask"),
    "cat_models.piti.official": ("load_official_piti",),
    "cat_models.piti.recipes": (
        "RECIPES", "Stage", "TransferPlan", "build_plan", "recipe_options",
    ),
    "cat_models.piti.transfer": ("cat_model", "training_free_model"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
