"""Text-based class affinity (paper §3.1): cosine between embeddings of class names.

Each class name is turned into prompts — every template × every synonym — whose normalised
embeddings are averaged into one unit vector per class (prompt ensembling as in CLIP). Names
are cleaned first (`prompt_name`): COCO-Stuff's "sky-other" becomes "sky", "wall-brick"
becomes "brick wall", and a comma-separated name ("car, auto, automobile") lists synonyms.
Cosines are then made non-negative and column-normalised by `normalise_columns`:
"center" by default (the column mean subtracted, then clipped), "clip" (the paper's "A ∝ cos")
or softmax with a temperature. Why not the paper's clip by default: text encoders put every
class name close to every other (MiniLM: all cosines of the embedded benchmark's names lie in
0.31-0.94), so clipped columns are nearly uniform (mean top weight 0.13 over 12 source
classes) and a target class is drawn as a blend of all source classes. Measured training-free
on the embedded benchmark (benchmarks/RESULTS_fidelity.md): clip FID 333.6 / mIoU 4.0%, worse
than a random A (301-314 / 1-4%); center 256.8 / 56.1%, as good as softmax at T = 0.05
(258.7 / 57.9%) without a temperature to tune per encoder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cat_models.affinity.matrix import AffinityError, AffinityMatrix
from cat_models.affinity.normalise import normalise_columns, resolve_nonnegativity
from cat_models.affinity.registry import AffinityInputs, register_estimator
from cat_models.affinity.text_backends import make_text_encoder

# The non-negativity step when neither `nonnegativity` nor a temperature is given.
DEFAULT_NONNEGATIVITY = "center"

# Measured on the embedded benchmark and on Cityscapes -> ADE20K names (benchmarks/
# RESULTS_affinity.md): a short photo prompt beats the bare name for MiniLM.
SENTENCE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
# A small subset of CLIP's ImageNet prompt ensemble.
CLIP_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "a photo of the {}.", "a cropped photo of a {}.",
    "a photo of the large {}.", "a photo of the small {}.",
)
CLIP_ENV_MODEL = "CAT_CLIP_MODEL"
CLIP_ENV_WEIGHTS = "CAT_CLIP_PRETRAINED"
_GENERIC_SUFFIXES = ("other", "stuff", "merged")


def prompt_name(name: str) -> list[str]:
    """A class name -> its synonyms as plain phrases ("floor-wood" -> ["wood floor"])."""
    phrases = []
    for synonym in name.split(","):
        words = synonym.strip().replace("_", " ")
        if "-" in words:
            head, _, modifier = words.partition("-")
            words = head if modifier in _GENERIC_SUFFIXES else f"{modifier} {head}"
        if words:
            phrases.append(words.strip())
    if not phrases:
        raise AffinityError(f"class name {name!r} is empty after cleaning")
    return phrases


def embed_class_names(names: Sequence[str], encoder, templates: Sequence[str]) -> np.ndarray:
    """Unit embedding per class: mean of its normalised prompt embeddings, renormalised."""
    prompts: list[str] = []
    owner: list[int] = []
    for i, name in enumerate(names):
        for phrase in prompt_name(name):
            for template in templates:
                prompts.append(template.format(phrase))
                owner.append(i)
    embeddings = encoder.encode(prompts)
    sums = np.zeros((len(names), embeddings.shape[1]))
    np.add.at(sums, np.asarray(owner), embeddings)
    return sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(min=1e-12)


def resolve_text_backend(backend: str | None, clip_pretrained: str | Path | None) -> str:
    """`None` means open_clip when CLIP weights are configured, else the offline sentence model."""
    if backend is not None:
        return backend
    return "open_clip" if clip_pretrained or os.environ.get(CLIP_ENV_WEIGHTS) else "sentence"


def text_affinity(
    source_names: Sequence[str],
    target_names: Sequence[str],
    backend: str | None = None,
    templates: Sequence[str] | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    nonnegativity: str | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | Path | None = None,
    cache_dir: str | Path | None = None,
    model_path: str | Path | None = None,
    device: str = "cpu",
) -> AffinityMatrix:
    """A (C_S × C_T) from class names (paper §3.1, text-based class affinities).

    nonnegativity: "center" (default), "clip" (paper §3.1) or "softmax" (with `temperature`;
    a temperature alone selects it), see `normalise_columns`.
    backend: "sentence" (offline default) or "open_clip" (`clip_model` + `clip_pretrained`, or
    the env vars CAT_CLIP_MODEL / CAT_CLIP_PRETRAINED). `model_path` points the sentence
    backend at another sentence-transformers folder.
    """
    backend = resolve_text_backend(backend, clip_pretrained)
    if backend == "open_clip":
        options = {
            "model_name": clip_model or os.environ.get(CLIP_ENV_MODEL, "ViT-B-32"),
            "pretrained": clip_pretrained or os.environ.get(CLIP_ENV_WEIGHTS),
            "cache_dir": cache_dir, "device": device,
        }
        templates = CLIP_TEMPLATES if templates is None else templates
    else:
        options = {"model_path": model_path, "device": device}
        templates = SENTENCE_TEMPLATES if templates is None else templates
    if not templates or any("{}" not in t for t in templates):
        raise AffinityError(f"templates: each must contain '{{}}' for the class name, got "
                            f"{list(templates)}")
    encoder = make_text_encoder(backend, **options)
    source = embed_class_names(source_names, encoder, templates)
    target = embed_class_names(target_names, encoder, templates)
    cosine = source @ target.T
    if nonnegativity is None and temperature is None:
        nonnegativity = DEFAULT_NONNEGATIVITY
    mode = resolve_nonnegativity(nonnegativity, temperature)
    return AffinityMatrix(
        normalise_columns(cosine, temperature, top_k, mode), source_names, target_names, "text",
        {"backend": encoder.name, "templates": list(templates), "temperature": temperature,
         "top_k": top_k, "nonnegativity": mode,
         "cosine_min": float(cosine.min()), "cosine_max": float(cosine.max())},
    )


@register_estimator("text")
def estimate_text(inputs: AffinityInputs, **options) -> AffinityMatrix:
    source, target = inputs.names()
    return text_affinity(source, target, **options)
