"""Checks of a validated study against what it names (the embedded target's size, the
discriminator's depth, the augmentation policies): each raises one `StudyError` naming the
file and the field, before anything runs."""

from __future__ import annotations

from typing import Any

from harness.config import SYNTHETIC_TARGET_KINDS, Study, StudyError
from harness.schema_search import Choice, Grid, IntRange


def check_study(study: Study, origin: str) -> None:
    """Every check below, in order."""
    check_sizes(study, origin)
    check_rare_classes(study, origin)
    check_freeze_d(study, origin)
    check_augment_policies(study, origin)


def searched_values(space: Any) -> list[Any]:
    """The values a `search.space` entry can take: a grid's or choice's list, an int range's
    every integer, or the fixed value itself."""
    if isinstance(space, (Grid, Choice)):
        return list(next(iter(space.model_dump().values())))
    if isinstance(space, IntRange):
        return list(space.int)
    return [space]


def check_augment_policies(study: Study, origin: str) -> None:
    """A swept `d_augment` names known policies (`training.d_augment` is checked by its
    field); otherwise every trial of that value would fail."""
    from cat_models.oasis.config import parse_augment_policy

    space = study.search.space.get("d_augment")
    if space is None:
        return
    for value in searched_values(space):
        if not isinstance(value, str):
            raise StudyError(f"{origin}: search.space.d_augment: {value!r} is not a policy "
                             "string (e.g. 'color,translation')")
        try:
            parse_augment_policy(value)
        except ValueError as err:
            raise StudyError(f"{origin}: search.space.{err}") from None


def freeze_d_values(study: Study) -> dict[str, list[int]]:
    """Every frozen-D depth a study can ask for, by the field that asks."""
    found = {"training.freeze_d": [study.training.freeze_d]}
    space = study.search.space.get("freeze_d")
    if isinstance(space, (Grid, Choice, IntRange, int)):
        found["search.space.freeze_d"] = searched_values(space)
    for i, m in enumerate(study.methods):
        if "freeze_d" in m.options:
            found[f"methods.{i}.options.freeze_d"] = [m.options["freeze_d"]]
    return found


def check_freeze_d(study: Study, origin: str) -> None:
    """FreezeD depths beyond the pretrained discriminator's layers fail before anything runs
    (known here when the source is pretrained from a preset; a checkpoint is checked when
    its trials build the model)."""
    from cat_models.oasis.config import preset

    if study.source.checkpoint is not None or study.model != "oasis":
        return
    try:
        cfg = preset(study.oasis.preset, **study.oasis.overrides)
    except (TypeError, ValueError):
        return                     # reported with the field's own message when the model is built
    layers = len(cfg.discriminator_layer_names())
    for field, values in freeze_d_values(study).items():
        bad = [v for v in values if not isinstance(v, int) or not 0 <= v < layers]
        if bad:
            raise StudyError(f"{origin}: {field}: {bad} out of range: the discriminator of "
                             f"oasis.preset {study.oasis.preset!r} has {layers} layers, so "
                             f"freeze_d is 0..{layers - 1}")


def check_sizes(study: Study, origin: str) -> None:
    """Sizes larger than an embedded target's training split (`benchmark.n_target` images, for
    every synthetic target kind) fail before anything runs (real datasets are checked when
    they are opened, in the subsets stage)."""
    if study.target.dataset.kind in SYNTHETIC_TARGET_KINDS:
        pool = study.benchmark.n_target
        too_big = [s for s in study.target_sizes if s > pool]
        if too_big:
            raise StudyError(f"{origin}: target_sizes: {too_big} exceed the {pool} images of the "
                             "embedded target's training split (benchmark.n_target)")


def check_rare_classes(study: Study, origin: str) -> None:
    """`target.subset.rare_classes` must be classes of the target; known before anything runs
    for the embedded targets (a real dataset's names are checked when its subsets are drawn,
    `harness.stages_data.rare_class_ids`)."""
    kind = study.target.dataset.kind
    if not study.target.subset.rare_classes or kind not in SYNTHETIC_TARGET_KINDS:
        return
    from cat_models.data.synthetic_domains import CLASS_NAMES
    from harness.stages_data import rare_class_ids

    rare_class_ids(study, CLASS_NAMES[kind], origin, f"the embedded target {kind!r}")
