"""A study's input checks, run before Ray starts and by `--dry-run` (the same calls).

Datasets (`cat_models.data.check_dataset`: every file's header and end, the few-shot subsets
and a sample fully decoded), target sizes against the training pool, the source checkpoint
(`cat_models.oasis.source.check_source`: file, format, resolution, every tensor), the segmenter
and backend files the study names, and the output folder (writable, room left). Each failure
is one `StudyError` (or the library's `InputError`) naming the file or field.

A network file the study names is loaded here when a method will use it, by the loader the
run uses (segmenters, the text encoder, the timm feature network), so weights that do not fit
the named model stop the run before Ray with the library's message (the file, the model and
the first differing tensors) instead of failing inside a stage. The packaged defaults (the
sentence model, the Inception) are not loaded: the dry run of a study that names no file
imports no torch.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from cat_models.errors import InputError
from harness.config import Study, StudyError

Log = Callable[[str], None]
MIN_FREE_MB = 200   # less free space than this in the output / cache folder stops the run


def check_inputs(study: Study, cache: Path, origin: str, out: Path,
                 subsets: dict | None = None, log: Log = print) -> None:
    """Every input check of a run; `subsets` are the few-shot indices when known."""
    from cat_models.data import check_dataset
    from harness.stages_data import planned_ref

    indices = sorted({i for idx in (subsets or {}).values() for i in idx})
    pools = {}
    for role in ("source", "target"):
        ref = planned_ref(study, cache, role)
        if ref.name.startswith("synthetic") and not Path(ref.root).is_dir():
            log(f"[check] {role} dataset: the embedded benchmark, drawn by the run")
            continue
        for split in ("train", "val"):
            chosen = indices if (role, split) == ("target", "train") else ()
            try:
                result = check_dataset(ref.kind, ref.root, split, indices=chosen)
            except InputError as err:
                raise StudyError(f"{origin}: {role}.dataset: {err}") from None
            pools[(role, split)] = result.pairs
        log(f"[check] {role} dataset {ref.root}: {pools[(role, 'train')]} training and "
            f"{pools[(role, 'val')]} validation pairs")
    pool = pools.get(("target", "train"))
    too_big = [s for s in study.target_sizes if pool is not None and s > pool]
    if too_big:
        raise StudyError(f"{origin}: target_sizes: {too_big} exceed the {pool} images of the "
                         f"target training split ({planned_ref(study, cache, 'target').root})")
    check_output(out, origin)
    check_output(cache, origin, what="cache folder")
    check_source_checkpoint(study, cache, origin, log)
    check_files(study, origin)      # last: it may load networks


def check_subset_images(study: Study, target, subsets: dict, origin: str) -> None:
    """Decode every image of the few-shot subsets (once they are drawn) with the checks of
    `check_dataset` (the benchmark, drawn by the run, is checked here the first time)."""
    from cat_models.data import check_dataset

    indices = sorted({i for idx in subsets.values() for i in idx})
    try:
        check_dataset(target.kind, target.root, "train", indices=indices, sample=0)
    except InputError as err:
        raise StudyError(f"{origin}: target.dataset: {err}") from None


def check_source_checkpoint(study: Study, cache: Path, origin: str, log: Log) -> None:
    if study.source.checkpoint is None:
        return
    from cat_models.data.layouts import read_layout
    from cat_models.oasis.source import check_source
    from harness.stages_data import planned_ref

    path = Path(study.source.checkpoint)
    names = None
    if path.is_dir():   # an official release folder takes the source dataset's class names
        ref = planned_ref(study, cache, "source")
        try:
            names = list(read_layout(ref.kind, ref.root, "train").class_names)
        except InputError as err:
            raise StudyError(f"{origin}: source.dataset: {err}") from None
    try:
        cfg = check_source(path, study.resolution, class_names=names)
    except InputError as err:
        raise StudyError(f"{origin}: source.checkpoint: {err}") from None
    log(f"[check] source checkpoint {path}: OASIS {cfg.resolution[0]}×{cfg.resolution[1]}")


def _load_segmenter(study: Study, path: Path) -> None:
    from cat_models.segmenters import load_segmenter

    load_segmenter(path)


def _load_text_encoder(study: Study, path: Path) -> None:
    from cat_models.affinity.text import text_affinity

    text_affinity(["a"], ["b"], **study.affinity_backends.text.options())


def _load_feature_network(study: Study, path: Path) -> None:
    from cat_models.affinity.feature_backends import make_feature_extractor

    options = study.affinity_backends.features.options()
    make_feature_extractor(options["backend"], **options["backend_options"])


Loader = Callable[[Study, Path], None]


def _file_fields(study: Study) -> dict[str, tuple[str | None, str | None, str | None,
                                                 Loader | None]]:
    """field -> (its value, the value that names no file, the estimator that reads it (None:
    every run), the loader the run uses (None: only its existence is checked here))."""
    b = study.affinity_backends
    return {
        "evaluation.segmenter": (study.evaluation.segmenter, "small", None, _load_segmenter),
        "evaluation.fid_feature_net": (study.evaluation.fid_feature_net, "default", None, None),
        "affinity_backends.segmentation.segmenter": (b.segmentation.segmenter, None,
                                                     "segmentation", _load_segmenter),
        "affinity_backends.text.sentence_model": (b.text.sentence_model, None, "text",
                                                  _load_text_encoder),
        "affinity_backends.features.checkpoint": (getattr(b.features, "checkpoint", None), None,
                                                  "features", _load_feature_network),
    }


def named_files(study: Study) -> dict[str, str]:
    """field -> path of every file or folder the study names (besides datasets, source)."""
    return {field: value for field, (value, none, _, _) in _file_fields(study).items()
            if value and value != none}


def check_files(study: Study, origin: str) -> None:
    """The named files exist; the networks in them that the run will use are loaded (their
    own checks say what is wrong)."""
    from harness.stages_common import needed_affinities

    needed = set(needed_affinities(study))
    text = study.affinity_backends.text
    text_backend = None
    if "text" in needed and (text.sentence_model or text.clip_pretrained):
        from cat_models.affinity.text import resolve_text_backend

        text_backend = resolve_text_backend(text.backend, text.clip_pretrained)
    uses = _file_fields(study)
    for field, value in named_files(study).items():
        _, _, reader, load = uses[field]
        if reader is not None and reader not in needed:
            continue
        path = Path(value)
        if not path.exists():
            raise StudyError(f"{origin}: {field}: {path} does not exist")
        if field == "affinity_backends.text.sentence_model" and text_backend != "sentence":
            continue          # the study's text backend is open_clip: this folder is unused
        if load is not None:
            _loaded(origin, field, load, study, path)
    if text_backend == "open_clip" and text.clip_pretrained:
        # a local file or a tag in the open_clip cache: only the load tells
        _loaded(origin, "affinity_backends.text.clip_pretrained", _load_text_encoder, study,
                Path(text.clip_pretrained))


def _loaded(origin: str, field: str, load: Loader, study: Study, path: Path) -> None:
    from cat_models.affinity.matrix import AffinityError

    try:
        load(study, path)
    except (InputError, AffinityError) as err:
        raise StudyError(f"{origin}: {field}: {err}") from None


def check_output(folder: Path, origin: str, what: str = "output folder") -> None:
    """`folder` (or its nearest existing parent) is a writable folder with room left."""
    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise StudyError(f"{origin}: {what} {folder}: {probe} is a file, not a folder")
    try:   # a probe file in the nearest existing folder: a dry run creates nothing
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".cat-write-test-") as f:
            f.write(b"x" * 4096)
            f.flush()
    except OSError as err:
        raise StudyError(f"{origin}: {what} {folder} is not writable "
                         f"({err.strerror or err})") from None
    free_mb = shutil.disk_usage(probe).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise StudyError(f"{origin}: {what} {folder}: only {free_mb:.0f} MB free "
                         f"(a study needs at least {MIN_FREE_MB} MB for checkpoints and results)")
