"""The VL-Health mixture's knobs, in one plain dataclass, with the paper's and the sample preset.

Plain (no Dagster import) so the library stays usable on its own; the pipeline wraps it in a
`dg.Config`. Every field is a primitive, a list or a str-keyed dict for that reason.

Rules keyed by `"source/task"` (weights, caps, stage membership, task sources) accept `*` for
either side; the most specific rule wins: `source/task` > `source/*` > `*/task` > `*/*`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from healthgpt.data.schema import TASK_FAMILIES, TASKS
from healthgpt.data.vocab import OPTION_LETTERS

CLOSED_STYLES = ("plain", "choice", "both")
STAGES = ("stage1", "stage2", "stage3")

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
        tasks = set(self.tasks)
        if self.closed_question_style == "choice":
            tasks.discard("vqa_closed")
        elif self.closed_question_style == "plain":
            tasks.discard("vqa_choice")
        return [t for t in TASKS if t in tasks]

    def required_tasks(self) -> dict[str, list[str]]:
        """Per stage, the tasks this config asks for (stage 2 asks for what stage 1 has)."""
        built = self.built_tasks()
        return {
            "stage1": [t for t in built if _includes_task(self.stage1_include, t)],
            "stage3": [t for t in built if _includes_task(self.stage3_include, t)],
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


def paper_preset(**overrides: Any) -> MixtureConfig:
    """The paper's composition (arXiv 2502.09838, sec. 4 and appendix; VL-Health card).

    - Stage 1 (alignment): image captioning from LLaVA-558k and PubMedVision (ingested from
      their LLaVA JSON as conversations, multi-image instances removed) plus image
      reconstruction of the LLaVA-558k images.
    - Stage 2 (fusion): Mixed-47k, 47k samples drawn from the alignment data.
    - Stage 3 (instruction): VQA-RAD, SLAKE, PathVQA (closed questions as single choice),
      LLaVA-Med / PubMedVision instructions, MIMIC-CXR; generation: SynthRAD2023 CT<->MRI
      (brain and pelvis), IXI 4x super-resolution, MIMIC-CXR report-to-X-ray.

    The paper reports about 765k comprehension and 783k generation samples in total but no
    per-source caps, so none are set: every available training sample is used once.
    Dataset names `llava_558k`, `pubmedvision` and `llava_med` are the names to give the
    corresponding `llava_json` ingestions in `build_mixture(ingested_dirs=...)`.
    """
    config = MixtureConfig(
        task_sources={
            "reconstruction": ["llava_558k", "llava_json"],
            "super_resolution": ["ixi"],
            "text_to_image": ["mimic_cxr"],
            "ct_to_mri": ["synthrad2023"],
            "mri_to_ct": ["synthrad2023"],
        },
        closed_question_style="choice",
        stage1_include=[
            "llava_558k/conversation",
            "pubmedvision/conversation",
            "*/caption",
            "*/reconstruction",
        ],
        stage2_size=47_000,
        workers=0,
        stage3_include=[
            "*/vqa_open",
            "*/vqa_closed",
            "*/vqa_choice",
            "llava_med/conversation",
            "pubmedvision/conversation",
            "llava_json/conversation",
            "*/report",
            "*/ct_to_mri",
            "*/mri_to_ct",
            "*/super_resolution",
            "*/text_to_image",
        ],
    )
    return _apply(config, overrides)


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
        "tasks": [t for t in TASKS if t not in ("caption", "report", "text_to_image")],
        "stage1_include": [*STAGE1_INCLUDE, "*/vqa_choice", "*/vqa_closed"],
        "stage2_size": 128,
        # Plain yes/no: a tiny model learns image-dependent answers from a few hundred
        # samples, but not also the shuffled option letters of the single-choice form.
        "closed_question_style": "plain",
    }
    return sample_preset(**{**defaults, **overrides})


def _apply(config: MixtureConfig, overrides: dict[str, Any]) -> MixtureConfig:
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise KeyError(f"MixtureConfig has no field {key!r}")
        setattr(config, key, value)
    config.validate()
    return config
