"""The task vocabulary of the VL-Health mixture, declared once.

Each task is one `TaskSpec`: its family, the record kinds it is built from, its training
prompt templates and the form its evaluation asks it in. The mixture's task builders, the
stage rules, the card, the LLaVA export, the training prompt code and the evaluation prompts
all read this table, so a task, a stage name, a placeholder or the single-choice instruction
has one spelling in the code base.

No project imports: the canonical schema (`schema.py`) and the label vocabularies
(`vocab.py`) build on this module.
"""

from __future__ import annotations

from dataclasses import dataclass

# ------------------------------------------------------------------------- names

COMPREHENSION = "comprehension"  # answers in text
GENERATION = "generation"  # answers with an image (`target_image`)
FAMILIES = (COMPREHENSION, GENERATION)

# The training stages (each a mixture subset of the same name) and the held-out subset.
STAGES = ("stage1", "stage2", "stage3")
STAGE1, STAGE2, STAGE3 = STAGES
EVAL_SUBSET = "eval"
SUBSETS = (*STAGES, EVAL_SUBSET)
STAGE_ROLES = {
    STAGE1: "alignment: captions/descriptions and image reconstruction",
    STAGE2: "heterogeneous fusion: a stratified draw from stage 1 (the paper's Mixed-47k)",
    STAGE3: "instruction tuning: comprehension and generation tasks",
    EVAL_SUBSET: "evaluation: benchmark test splits and the held-out generation subjects",
}

# Placeholders in conversation text: where the input image goes, and the generation answer
# (trainers replace it with the target image's VQ codes).
IMAGE_TOKEN = "<image>"
TARGET_IMAGE_TOKEN = "<target_image>"
PLACEHOLDERS = (IMAGE_TOKEN, TARGET_IMAGE_TOKEN)
# The speakers a conversation turn's `from` may name, and the chat role each takes: readers
# quarantine any other, and the trainer's prompt formatter maps them to its roles.
SPEAKER_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}

# The letters of single-choice options: what training prompts write and evaluation parses,
# so a config may not ask for more options than there are letters.
OPTION_LETTERS = "ABCDEFGHIJ"
CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
# A single-choice question: the question, its lettered options one per line ("A. ..."), the
# instruction.
CHOICE_TEMPLATE = "{question}\n{options}\n" + CHOICE_INSTRUCTION

# How a task's question is asked (training and evaluation alike).
PLAIN = "plain"  # the question as it is
SINGLE_CHOICE = "single choice"  # question, lettered options, CHOICE_INSTRUCTION
TEMPLATE = "template"  # a prompt from the task's templates
PASSTHROUGH = "passthrough"  # the record's own conversation turns

# What the answer turn holds.
ANSWER_TEXT = "text"
ANSWER_LETTER = "letter"
ANSWER_IMAGE = TARGET_IMAGE_TOKEN

# ----------------------------------------------------------------------- prompts

CAPTION_PROMPTS = (
    "Describe this image.",
    "Can you describe the image for me?",
    "What is shown in this image?",
    "Provide a brief description of the given image.",
    "Summarize the visual content of this medical image.",
    "Write a short caption for this image.",
)
REPORT_PROMPTS = (
    "Write the findings and impression for this {modality} image.",
    "Generate a radiology report for this {modality} image.",
    "Describe the findings in this {modality} image as a radiologist would.",
    "What are the findings and the impression of this {modality} study?",
    "Please write a report for this {modality} image.",
)
CONVERSION_PROMPTS = (
    "Convert this {src} image of the {part} into the corresponding {dst} image.",
    "Translate this {src} slice of the {part} into a {dst} slice.",
    "Generate the {dst} image that corresponds to this {src} image of the {part}.",
    "Synthesize a {dst} scan from this {src} scan of the {part}.",
)
SUPER_RESOLUTION_PROMPTS = (
    "Increase the resolution of this {modality} image by a factor of {factor}.",
    "This {modality} image is low resolution; reconstruct it at {factor}x higher resolution.",
    "Super-resolve this {modality} image ({factor}x).",
    "Restore the fine detail of this {factor}x downsampled {modality} image.",
)
RECONSTRUCTION_PROMPTS = (
    "Reconstruct this image.",
    "Reproduce the input image exactly.",
    "Encode and then reproduce this {modality} image.",
    "Output the same image as the input.",
)
TEXT_TO_IMAGE_PROMPTS = (
    "Generate a {part} X-ray image that matches this report:\n{text}",
    "Create a frontal {part} radiograph consistent with these findings and impression:\n{text}",
    "Draw the {part} X-ray described by this radiology report:\n{text}",
)


@dataclass(frozen=True)
class TaskSpec:
    """One task: what it is built from and how it is asked and answered.

    - `kinds`: the record kinds (`schema.KINDS`) that may feed it.
    - `prompt`: how the human turn is made (`PLAIN`, `SINGLE_CHOICE`, `TEMPLATE`,
      `PASSTHROUGH`); `prompts` are the templates when it is `TEMPLATE`.
    - `answer`: what the answer turn holds (`ANSWER_TEXT`, `ANSWER_LETTER`, `ANSWER_IMAGE`).
    - `needs_image`: the human turn starts with `IMAGE_TOKEN` and the sample has an input image.
    - `eval_form`: the form an evaluation of the task asks its question in (None: not a
      question benchmarks ask).
    """

    name: str
    family: str
    kinds: tuple[str, ...]
    prompt: str
    answer: str
    prompts: tuple[str, ...] = ()
    needs_image: bool = True
    eval_form: str | None = None

    @property
    def needs_target(self) -> bool:
        return self.family == GENERATION

    @property
    def placeholders(self) -> tuple[str, ...]:
        """The placeholders a rendered sample of this task carries."""
        image = (IMAGE_TOKEN,) if self.needs_image else ()
        return (*image, TARGET_IMAGE_TOKEN) if self.needs_target else image


_VQA = ("vqa",)
# Reconstruction skips vqa (many questions share one image: they would all be duplicates)
# and pairs (their slices already feed conversion).
_RECONSTRUCTION_KINDS = ("image", "caption", "conversation", "report")

TASK_SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("vqa_open", COMPREHENSION, _VQA, PLAIN, ANSWER_TEXT, eval_form=PLAIN),
        TaskSpec("vqa_closed", COMPREHENSION, _VQA, PLAIN, ANSWER_TEXT, eval_form=PLAIN),
        TaskSpec(
            "vqa_choice", COMPREHENSION, _VQA, SINGLE_CHOICE, ANSWER_LETTER, eval_form=SINGLE_CHOICE
        ),
        TaskSpec("caption", COMPREHENSION, ("caption",), TEMPLATE, ANSWER_TEXT, CAPTION_PROMPTS),
        TaskSpec("report", COMPREHENSION, ("report",), TEMPLATE, ANSWER_TEXT, REPORT_PROMPTS),
        TaskSpec("conversation", COMPREHENSION, ("conversation",), PASSTHROUGH, ANSWER_TEXT),
        TaskSpec("ct_to_mri", GENERATION, ("pair",), TEMPLATE, ANSWER_IMAGE, CONVERSION_PROMPTS),
        TaskSpec("mri_to_ct", GENERATION, ("pair",), TEMPLATE, ANSWER_IMAGE, CONVERSION_PROMPTS),
        TaskSpec(
            "super_resolution",
            GENERATION,
            ("image",),
            TEMPLATE,
            ANSWER_IMAGE,
            SUPER_RESOLUTION_PROMPTS,
        ),
        TaskSpec(
            "reconstruction",
            GENERATION,
            _RECONSTRUCTION_KINDS,
            TEMPLATE,
            ANSWER_IMAGE,
            RECONSTRUCTION_PROMPTS,
        ),
        TaskSpec(
            "text_to_image",
            GENERATION,
            ("report",),
            TEMPLATE,
            ANSWER_IMAGE,
            TEXT_TO_IMAGE_PROMPTS,
            needs_image=False,
        ),
    )
}

# Derived views: every other module reads these, never a table of its own.
TASKS = tuple(TASK_SPECS)
TASK_FAMILIES: dict[str, str] = {name: spec.family for name, spec in TASK_SPECS.items()}
TASK_KINDS: dict[str, tuple[str, ...]] = {name: spec.kinds for name, spec in TASK_SPECS.items()}
PROMPTS: dict[str, tuple[str, ...]] = {
    name: spec.prompts for name, spec in TASK_SPECS.items() if spec.prompt == TEMPLATE
}
NEEDS_IMAGE = frozenset(name for name, spec in TASK_SPECS.items() if spec.needs_image)
NEEDS_TARGET = frozenset(name for name, spec in TASK_SPECS.items() if spec.needs_target)
VQA_TASKS = tuple(name for name, spec in TASK_SPECS.items() if spec.kinds == _VQA)
EVAL_FORMS: dict[str, str] = {
    name: spec.eval_form for name, spec in TASK_SPECS.items() if spec.eval_form
}
# Which VQA task a closed question becomes under each `closed_question_style` ("both":
# single choice is the one evaluation asks, as the paper does).
CLOSED_STYLE_TASKS: dict[str, tuple[str, ...]] = {
    "plain": ("vqa_closed",),
    "choice": ("vqa_choice",),
    "both": ("vqa_choice", "vqa_closed"),
}
CLOSED_STYLES = tuple(CLOSED_STYLE_TASKS)


def closed_question_form(style: str) -> str:
    """The evaluation form of a closed question trained under `closed_question_style` `style`
    (the form of the style's first task: single choice for "choice" and "both")."""
    return EVAL_FORMS[CLOSED_STYLE_TASKS[style][0]]


def tasks_of(family: str) -> tuple[str, ...]:
    """The tasks of one family, in table order."""
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} not in {FAMILIES}")
    return tuple(name for name, fam in TASK_FAMILIES.items() if fam == family)


def choice_prompt(question: str, options: list[str] | tuple[str, ...]) -> str:
    """A single-choice question as training writes it and evaluation asks it."""
    listed = "\n".join(f"{OPTION_LETTERS[i]}. {option}" for i, option in enumerate(options))
    return CHOICE_TEMPLATE.format(question=question.strip(), options=listed)


def with_image(text: str) -> str:
    """The human turn of a task with an input image: the image placeholder, then the text."""
    return f"{IMAGE_TOKEN}\n{text}"


def strip_image(text: str) -> str:
    """A human turn without its leading image placeholder (the prompt a model is asked)."""
    return text.removeprefix(f"{IMAGE_TOKEN}\n")
