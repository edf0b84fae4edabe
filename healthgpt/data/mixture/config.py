"""The VL-Health mixture's knobs, in one plain dataclass, with the paper's and the sample preset.

Plain (no Dagster import) so the library stays usable on its own; the pipeline wraps it in a
`dg.Config`. Every field is a primitive, a list or a str-keyed dict for that reason.

Rules keyed by `"source/task"` (weights, caps, stage membership, task sources) accept `*` for
either side; the most specific rule wins: `source/task` > `source/*` > `*/task` > `*/*`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from healthgpt.data.tasks import (
    CLOSED_STYLE_TASKS,
    CLOSED_STYLES,
    OPTION_LETTERS,
    STAGE1,
    STAGE3,
    TASK_FAMILIES,
    TASKS,
    VQA_TASKS,
)

# Sources whose held-out split is made here, by subject: they publish no usable test split.
SUBJECT_SPLIT_SOURCES = ["ixi", "synthrad2023", "nifti_folder", "dicom_folder"]

STAGE1_INCLUDE = ["*/caption", "*/report", "*/reconstruction"]
STAGE3_INCLUDE = [
    "*/vqa_open",
    "*/vqa_closed",
    "*/vqa_choice",
    "*/conversation",
    "*/report",
    "*/ct_to_mri",
    "*/mri_to_ct",
    "*/super_resolution",
    "*/text_to_image",
]


def _default_task_sources() -> dict[str, list[str]]:
    return {
        "super_resolution": ["ixi", "nifti_folder", "dicom_folder"],
        "text_to_image": ["mimic_cxr"],
        "ct_to_mri": ["synthrad2023"],
        "mri_to_ct": ["synthrad2023"],
    }


@dataclass
class MixtureConfig:
    """How ingested sources become the VL-Health mixture. Defaults follow the paper."""

    seed: int = 0
    # Salt of the subject-level held-out split: kept apart from `seed` so that resampling the
    # mixture never moves a subject between train and test.
    split_salt: str = "vl-health-v1"

    # Task building
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    # task -> sources (dataset names) allowed to feed it; a task not listed takes any source.
    task_sources: dict[str, list[str]] = field(default_factory=_default_task_sources)
    closed_question_style: str = "choice"  # plain | choice | both
    max_choice_options: int = 4
    drop_multi_image: bool = True
    sr_factor: int = 4

    # Splits
    subject_split_sources: list[str] = field(default_factory=lambda: list(SUBJECT_SPLIT_SOURCES))
    generation_test_fraction: float = 0.1
    eval_splits: list[str] = field(default_factory=lambda: ["test"])
    eval_tasks: list[str] = field(
        default_factory=lambda: [t for t in TASKS if t not in ("reconstruction", "caption")]
    )
    include_validation: bool = True  # validation records go to the eval subset, never to training

    # Dedup and decontamination
    dedup: bool = True
    decontaminate: bool = True
    # Sources whose training questions are removed only when an evaluation sample has the same
    # image *and* the same question: their official splits ask different questions about
    # shared images (VQA-RAD). Their other samples, and every other source, match on the image.
    decontaminate_by_question: list[str] = field(default_factory=list)
    near_dup_hamming: int = 4  # phash bits (of 64) within which two images are near-duplicates

    # Stages: membership rules, then per-group weights (expected draws per available sample,
    # > 1 repeats) and caps (hard maximum per group after weighting).
    stage1_include: list[str] = field(default_factory=lambda: list(STAGE1_INCLUDE))
    stage1_weights: dict[str, float] = field(default_factory=dict)
    stage1_caps: dict[str, int] = field(default_factory=dict)
    stage2_size: int = 47_000  # the paper's "Mixed-47k", drawn from stage 1 by (source, task)
    stage3_include: list[str] = field(default_factory=lambda: list(STAGE3_INCLUDE))
    stage3_weights: dict[str, float] = field(default_factory=dict)
    stage3_caps: dict[str, int] = field(default_factory=dict)

    # Output, streaming and parallelism (the output does not depend on `workers`)
    batch_rows: int = 256
    # Processes that hash and degrade images; 0 = one per core (max 8). Above 1 they are
    # spawned, so a script calling build_mixture needs the `if __name__ == "__main__":` guard.
    workers: int = 1
    target_shard_bytes: int = 256 << 20
    row_group_bytes: int = 16 << 20
    manifests_dir: str | None = None  # data_manifests/ for the licenses in the card

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        unknown = [t for t in [*self.tasks, *self.eval_tasks] if t not in TASK_FAMILIES]
        unknown += [t for t in self.task_sources if t not in TASK_FAMILIES]
        if unknown:
            raise ValueError(f"unknown tasks {sorted(set(unknown))}; known: {TASKS}")
        if self.closed_question_style not in CLOSED_STYLES:
            raise ValueError(f"closed_question_style must be one of {CLOSED_STYLES}")
        if not 0.0 <= self.generation_test_fraction < 1.0:
            raise ValueError("generation_test_fraction must be in [0, 1)")
        if not 0 <= self.near_dup_hamming < 32:
            raise ValueError("near_dup_hamming must be in [0, 32)")
        if self.max_choice_options < 2 or self.sr_factor < 2:
            raise ValueError("max_choice_options and sr_factor must be at least 2")
        if self.max_choice_options > len(OPTION_LETTERS):
            raise ValueError(
                f"max_choice_options is at most {len(OPTION_LETTERS)} "
                f"(options are lettered {OPTION_LETTERS[0]}-{OPTION_LETTERS[-1]})"
            )
        for name in self.decontaminate_by_question:
            if not isinstance(name, str) or not name or "/" in name or "*" in name:
                raise ValueError(
                    f"decontaminate_by_question holds dataset names, not {name!r} (no patterns)"
                )
        for rules in (self.stage1_weights, self.stage1_caps, self.stage3_weights, self.stage3_caps):
            for key in rules:
                parse_rule_key(key)
        for pattern in [*self.stage1_include, *self.stage3_include]:
            parse_rule_key(pattern)
        for rules in (self.stage1_weights, self.stage3_weights):
            if any(w < 0 for w in rules.values()):
                raise ValueError("weights must be >= 0")

    def built_tasks(self) -> list[str]:
        """Tasks the builders may emit (the closed style decides between plain and choice)."""
        styled = CLOSED_STYLE_TASKS[self.closed_question_style]
        unstyled = {"vqa_closed", "vqa_choice"} - set(styled)
        return [t for t in TASKS if t in self.tasks and t not in unstyled]

    def required_tasks(self) -> dict[str, list[str]]:
        """Per stage, the tasks this config asks for (stage 2 asks for what stage 1 has)."""
        built = self.built_tasks()
        return {
            STAGE1: [t for t in built if _includes_task(self.stage1_include, t)],
            STAGE3: [t for t in built if _includes_task(self.stage3_include, t)],
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_rule_key(key: str) -> tuple[str, str]:
    """`"source/task"` -> (source, task); `"*"` alone means every source and task."""
    if key == "*":
        return "*", "*"
    parts = key.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"rule key {key!r} must look like 'source/task' (either may be '*')")
    if parts[1] != "*" and parts[1] not in TASK_FAMILIES:
        raise ValueError(f"rule key {key!r}: unknown task {parts[1]!r}")
    return parts[0], parts[1]


def rule_value(rules: dict[str, Any], source: str, task: str, default: Any = None) -> Any:
    """The most specific rule's value for (source, task), or `default`."""
    parsed = {parse_rule_key(k): v for k, v in rules.items()}
    for key in ((source, task), (source, "*"), ("*", task), ("*", "*")):
        if key in parsed:
            return parsed[key]
    return default


def includes(patterns: list[str], source: str, task: str) -> bool:
    """Whether any `source/task` pattern matches."""
    for pattern in patterns:
        src, tsk = parse_rule_key(pattern)
        if src in ("*", source) and tsk in ("*", task):
            return True
    return False


def _includes_task(patterns: list[str], task: str) -> bool:
    return any(parse_rule_key(p)[1] in ("*", task) for p in patterns)


def task_allows_source(config: MixtureConfig, task: str, source: str) -> bool:
    allowed = config.task_sources.get(task)
    return allowed is None or "*" in allowed or source in allowed


# The paper's routing (arXiv 2502.09838, sec. 4 and appendix): per stage, the dataset names
# of the shared registry and the tasks each feeds there. Stage 2 (Mixed-47k) is drawn from
# stage 1. The released VL-Health files are an alternative route to the same stages; their
# generation rows state their task (`meta.task`) and are routed by it.
_CLOSED_AND_OPEN = VQA_TASKS
_CONVERSION = ("ct_to_mri", "mri_to_ct")
#
# The alignment captions are conversations: every reader of these datasets keeps a row's
# turns as they are (kind `conversation`: a caption prompt and its caption), so the paper's
# stage-1 captions are the `conversation` task here, and no route names `caption` (no
# registered reader of a routed dataset emits caption records: the task could never show).
PAPER_ROUTES: dict[str, dict[str, tuple[str, ...]]] = {
    STAGE1: {
        # alignment: caption conversations, and reconstruction of their images
        "llava_558k": ("conversation", "reconstruction"),
        "pubmedvision": ("conversation",),
        "vl_health_alignment": ("conversation",),
        "vl_health_reconstruction": ("reconstruction",),
    },
    STAGE3: {
        # comprehension instructions
        "vqa_rad": _CLOSED_AND_OPEN,
        "slake": _CLOSED_AND_OPEN,
        "pathvqa": _CLOSED_AND_OPEN,
        "llava_med": ("conversation",),
        "pubmedvision": ("conversation",),
        "mimic_cxr": ("report", "text_to_image"),
        "vl_health_comprehension": (*_CLOSED_AND_OPEN, "conversation", "report"),
        # generation instructions
        "synthrad2023": _CONVERSION,
        "ixi": ("super_resolution",),
        "vl_health_generation": (*_CONVERSION, "super_resolution", "text_to_image"),
    },
}


def routed_sources(routes: dict[str, dict[str, tuple[str, ...]]]) -> dict[str, list[str]]:
    """task -> the datasets a routing table lets feed it (a task no route names has none)."""
    sources: dict[str, list[str]] = {task: [] for task in TASKS}
    for stage in routes.values():
        for source, tasks in stage.items():
            for task in tasks:
                if source not in sources[task]:
                    sources[task].append(source)
    return {task: sorted(names) for task, names in sources.items()}


def route_patterns(routes: dict[str, dict[str, tuple[str, ...]]], stage: str) -> list[str]:
    """The `source/task` membership rules of one stage of a routing table."""
    return [f"{source}/{task}" for source, tasks in routes[stage].items() for task in tasks]


def paper_preset(**overrides: Any) -> MixtureConfig:
    """The paper's composition (arXiv 2502.09838, sec. 4 and appendix; VL-Health card).

    - Stage 1 (alignment): the caption conversations (`conversation`) of LLaVA-558k and
      PubMedVision (multi-image instances removed) plus reconstruction of the LLaVA-558k
      images; or the released VL-Health alignment and reconstruction files.
    - Stage 2 (fusion): Mixed-47k, 47k samples drawn from the alignment data.
    - Stage 3 (instruction): VQA-RAD, SLAKE, PathVQA (closed questions as single choice),
      LLaVA-Med and PubMedVision instructions, MIMIC-CXR reports; generation: SynthRAD2023
      CT<->MRI (brain and pelvis), IXI 4x super-resolution, MIMIC-CXR report-to-X-ray; or the
      released VL-Health comprehension and generation files.

    Only the datasets of `PAPER_ROUTES` feed it (`task_sources`); other ingested datasets
    yield nothing (`no_task_for_kind`). The paper reports 765,802 comprehension and 783,045
    generation samples (`card.PAPER_TOTALS`) but no per-source caps, so none are set: every
    available training sample is used once. VQA-RAD is decontaminated by question
    (`decontaminate_by_question`): the paper trains on its official training split, whose
    questions are asked about images that its test questions use too.
    """
    config = MixtureConfig(
        task_sources=routed_sources(PAPER_ROUTES),
        closed_question_style="choice",
        stage1_include=route_patterns(PAPER_ROUTES, STAGE1),
        stage2_size=47_000,
        workers=0,
        stage3_include=route_patterns(PAPER_ROUTES, STAGE3),
        decontaminate_by_question=["vqa_rad"],
    )
    return _apply(config, overrides)


# Tasks the bundled samples cannot show: the MIMIC-CXR sample has one real chest radiograph
# under every study, so decontamination rightly removes every training report and
# report-to-X-ray sample (see `demo_preset`).
SAMPLE_DECONTAMINATED = ("report", "text_to_image")
# Likewise under the paper's routing, where only IXI and the released generation file feed
# super-resolution: the IXI sample's subjects are one real brain template at different
# intensity scales, so every training slice is a near-duplicate of a held-out subject's, and
# the generation file's one super-resolution row shows an image that is held out elsewhere.
PAPER_SAMPLE_DECONTAMINATED = (*SAMPLE_DECONTAMINATED, "super_resolution")
PAPER_SAMPLE_TEST_FRACTION = 0.5


def paper_sample_preset(**overrides: Any) -> MixtureConfig:
    """`paper_preset`'s routing at the size of the bundled miniatures: a small stage 2, the
    sample preset's shard sizes, half the subjects held out, and without the tasks the samples
    cannot show (`PAPER_SAMPLE_DECONTAMINATED`), so the paper's composition runs on them.

    The miniatures share a few real images, so decontamination also removes whole datasets
    from training there (SLAKE, the released generation file: their training images are
    held-out images); the card's "Removed" table and `removed.parquet` say so per group.
    VQA-RAD, decontaminated by question as in `paper_preset`, keeps its training questions:
    none asks what a test question asks about the same image."""
    small = sample_preset()
    defaults: dict[str, Any] = {
        "tasks": [t for t in TASKS if t not in PAPER_SAMPLE_DECONTAMINATED],
        "stage2_size": small.stage2_size,
        # The SynthRAD2023 miniature has three subjects; at the sample preset's fraction none is
        # held out, and the paper's generation tasks would have nothing to be evaluated on.
        "generation_test_fraction": PAPER_SAMPLE_TEST_FRACTION,
        "target_shard_bytes": small.target_shard_bytes,
        "row_group_bytes": small.row_group_bytes,
        "workers": 1,
    }
    return paper_preset(**{**defaults, **overrides})


def sample_preset(**overrides: Any) -> MixtureConfig:
    """For the tiny bundled sample sources: every image source may feed the generation tasks,
    a larger held-out fraction so the few subjects still give a test split, a small stage 2.
    """
    config = MixtureConfig(
        # No bundled source has captions (kind caption): not asked for, so not checked.
        tasks=[t for t in TASKS if t != "caption"],
        task_sources={
            "super_resolution": ["ixi", "nifti_folder", "dicom_folder"],
            "reconstruction": ["*"],
            "text_to_image": ["*"],
        },
        generation_test_fraction=0.25,
        stage2_size=32,
        target_shard_bytes=64 << 20,
        row_group_bytes=4 << 20,
    )
    return _apply(config, overrides)


def demo_preset(**overrides: Any) -> MixtureConfig:
    """`sample_preset` without the report tasks, for the demo on the bundled samples.

    The MIMIC-CXR sample has one real chest radiograph (the only one any package ships) under
    every study, so decontamination rightly removes every training report and report-to-X-ray
    sample; asking the demo for those tasks would fail its check for a reason that is about
    the sample data, not the pipeline. The tests cover both tasks on synthetic records.

    Without captions or reports, stage 1 would align only the generation side; the demo puts
    the closed questions in stage 1 as the comprehension alignment data instead, so that the
    stage 2 fusion set (drawn from stage 1) has comprehension samples to fit the word
    embeddings and LM head on, as the paper's captions would.
    """
    defaults: dict[str, Any] = {
        "tasks": [t for t in TASKS if t != "caption" and t not in SAMPLE_DECONTAMINATED],
        "stage1_include": [*STAGE1_INCLUDE, "*/vqa_choice", "*/vqa_closed"],
        "stage2_size": 128,
        # Plain yes/no: a tiny model learns image-dependent answers from a few hundred
        # samples, but not also the shuffled option letters of the single-choice form.
        "closed_question_style": "plain",
    }
    return sample_preset(**{**defaults, **overrides})


PRESETS: dict[str, Callable[..., MixtureConfig]] = {
    "demo": demo_preset,
    "sample": sample_preset,
    "paper": paper_preset,
    "paper_sample": paper_sample_preset,
}
"""The presets by the name `HEALTHGPT_MIXTURE_PRESET` and the pipeline's config use."""


def preset(name: str, **overrides: Any) -> MixtureConfig:
    """The named preset with `overrides` applied."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, not {name!r}")
    return PRESETS[name](**overrides)


def _apply(config: MixtureConfig, overrides: dict[str, Any]) -> MixtureConfig:
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise KeyError(f"MixtureConfig has no field {key!r}")
        setattr(config, key, value)
    config.validate()
    return config
