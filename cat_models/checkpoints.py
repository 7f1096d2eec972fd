"""Loading weights files with errors a user can act on.

Every place that reads a checkpoint (OASIS source and official files, segmenters, affinity
backends) goes through `load_torch_file` and compares the tensors with the module they are
meant for (`compare_state_dict` / `load_checked`) before loading, so a bad file fails with one
`CheckpointError` naming the file and what is wrong — not torch's `PytorchStreamReader failed
reading zip archive` or a `size mismatch` traceback from deep inside `load_state_dict`:

* missing file / a folder / an empty file (an interrupted write);
* a zip archive that cannot be read (`torch.save` writes zip files: a truncated one has lost its
  central directory);
* bytes that are no checkpoint at all;
* a weights-only load refused because the file holds arbitrary Python objects;
* tensors that do not fit the module: how many are missing / unexpected / of another shape,
  the first few of each by name (with both shapes).

Nothing here imports transformers; `load_transformers_checked` takes the model class to call.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cat_models.errors import CheckpointError

StateDict = Mapping[str, torch.Tensor]
ZIP_MAGIC = b"PK\x03\x04"
SHOWN = 3  # names listed per kind of difference; the counts are always complete


def _first_line(err: BaseException) -> str:
    """The first sentence of an exception's message (torch's run on for several lines)."""
    lines = str(err).strip().splitlines()
    return lines[0].split(". ")[0][:200] if lines else type(err).__name__


def load_torch_file(path: str | Path, what: str = "checkpoint", weights_only: bool = True,
                    map_location: str | torch.device = "cpu") -> Any:
    """`torch.load` (or safetensors for `*.safetensors`) with one `CheckpointError` per failure.

    `what` names the file's role in the message ("source checkpoint", "timm checkpoint", ...).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: {what} not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: {what} is a folder, expected a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: {what} is an empty file (an interrupted write?)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: {what} is not a readable safetensors file "
                                  f"({_first_line(err)})") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        with open(path, "rb") as f:
            head = f.read(4)
        if head == ZIP_MAGIC:
            if weights_only and isinstance(err, pickle.UnpicklingError):
                raise CheckpointError(
                    f"{path}: {what} holds Python objects beyond tensors and plain containers; "
                    f"refused by the weights-only load ({_first_line(err)})") from None
            raise CheckpointError(f"{path}: {what} is truncated or damaged: its zip archive "
                                  f"cannot be read ({_first_line(err)})") from None
        raise CheckpointError(f"{path}: {what} is not a torch checkpoint (starts with bytes "
                              f"{head.hex(' ')}; torch.load: {_first_line(err)})") from None


def as_state_dict(obj: Any, source: str, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """`obj` if it is a {name: tensor} dict, else a `CheckpointError` saying what it is."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: {what} holds a {type(obj).__name__}, expected a "
                              "state dict {name: tensor}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{source}: {what} is not a state dict: {len(bad)} entries are "
                              f"not tensors (first: {bad[0]!r}: {type(obj[bad[0]]).__name__})")
    return dict(obj)


@dataclass(frozen=True)
class StateDictDiff:
    """How a checkpoint's tensors differ from a module's (`missing` = in the module only)."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    # (name, checkpoint shape, module shape)
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, shown: int = SHOWN) -> str:
        """One line: counts of each kind of difference and the first `shown` names of each."""
        def names(keys: tuple[str, ...]) -> str:
            more = f", … {len(keys) - shown} more" if len(keys) > shown else ""
            return ", ".join(keys[:shown]) + more

        parts = []
        if self.mismatched:
            first = [f"{k}: checkpoint {list(a)} vs model {list(b)}"
                     for k, a, b in self.mismatched[:shown]]
            more = f", … {len(self.mismatched) - shown} more" if len(self.mismatched) > shown \
                else ""
            parts.append(f"{len(self.mismatched)} tensor(s) of another shape "
                         f"({'; '.join(first)}{more})")
        if self.missing:
            parts.append(f"{len(self.missing)} missing from the checkpoint "
                         f"({names(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({names(self.unexpected)})")
        return "; ".join(parts) or "all tensors match"


def compare_state_dict(state: StateDict, reference: nn.Module | StateDict,
                       ignore: Callable[[str], bool] | None = None) -> StateDictDiff:
    """Compare names and shapes (not values) of `state` with `reference`'s state dict.

    Keys for which `ignore(key)` is true are left out on both sides (e.g. a classifier head
    the caller replaces). A reference module may live on the meta device: only shapes are read.
    """
    ref = reference.state_dict() if isinstance(reference, nn.Module) else reference
    keep = (lambda k: not ignore(k)) if ignore is not None else (lambda k: True)
    ref_keys = [k for k in ref if keep(k)]
    got_keys = [k for k in state if keep(k)]
    got = set(got_keys)
    missing = tuple(k for k in ref_keys if k not in got)
    unexpected = tuple(k for k in got_keys if k not in ref)
    mismatched = tuple((k, tuple(state[k].shape), tuple(ref[k].shape)) for k in ref_keys
                       if k in got and tuple(state[k].shape) != tuple(ref[k].shape))
    return StateDictDiff(missing, unexpected, mismatched)


def require_match(diff: StateDictDiff, source: str, what: str, hint: str = "") -> None:
    """Raise `CheckpointError("<source>: does not match <what>: <differences>[; hint]")`."""
    if not diff.ok:
        raise CheckpointError(f"{source}: does not match {what}: {diff.describe()}"
                              + (f"; {hint}" if hint else ""))


def load_checked(module: nn.Module, state: StateDict, source: str, what: str,
                 ignore: Callable[[str], bool] | None = None, hint: str = "") -> nn.Module:
    """`module.load_state_dict(state)` after checking every name and shape (ignored keys are
    neither required nor loaded)."""
    require_match(compare_state_dict(state, module, ignore), source, what, hint)
    kept = {k: v for k, v in state.items() if ignore is None or not ignore(k)}
    module.load_state_dict(kept, strict=ignore is None)
    return module


def load_transformers_checked(model_class: Any, path: str | Path, what: str,
                              **kwargs: Any) -> nn.Module:
    """`model_class.from_pretrained(path)` offline, refusing weights that do not fit the config.

    transformers re-initialises missing tensors with only a log line and raises a long report
    for shape mismatches; here either becomes one `CheckpointError` naming the folder, the
    model type of its `config.json` and the first differing tensors. Unexpected tensors (e.g.
    a head the chosen class has no use for) are allowed, as transformers allows them.
    """
    from safetensors import SafetensorError
    from transformers.utils import logging as hf_logging

    path = Path(path)
    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()   # the load report would repeat what the error says
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per load, on stderr
    try:
        model, info = model_class.from_pretrained(
            path, local_files_only=True, output_loading_info=True,
            ignore_mismatched_sizes=True, **kwargs)
    except (OSError, ValueError, RuntimeError, EOFError, SafetensorError) as err:
        raise CheckpointError(f"{path}: transformers could not load {what} "
                              f"({_first_line(err)})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    diff = StateDictDiff(
        missing=tuple(sorted(info.get("missing_keys", ()))),
        unexpected=(),
        mismatched=tuple(sorted((k, tuple(a), tuple(b))
                                for k, a, b in info.get("mismatched_keys", ()))))
    model_type = getattr(model.config, "model_type", "?")
    require_match(diff, str(path), f"{what} ({model_type} as its config.json describes it)",
                  "the weights were saved from a different configuration")
    return model
