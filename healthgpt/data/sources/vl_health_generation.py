"""The released VL-Health generation files: an instruction, an input image and the image the
model must produce (modality conversion, super-resolution, reconstruction, report to X-ray).

A row is a LLaVA-style sample with one more image field:

    {"id": ..., "task": "ct_to_mri" (optional), "image": "<input image>",
     "output_image": "<image to produce>",
     "conversations": [{"from": "human", "value": "<image>\\nConvert this CT ..."},
                       {"from": "gpt", "value": ...}],
     "modality": ... (optional)}

The released card shows the input field (`image`) and the conversations but not the name
of the output field; `options.extra["output_image_field"]` (default `output_image`) and
`options.extra["task_field"]` (default `task`) name them.

Records take the shapes the mixture's planners already read, with the row's task in the
record's `task` column:

- ct_to_mri / mri_to_ct / super_resolution (and reconstruction with a distinct output):
  kind "pair", `image` the input, `target_image` the output, `modality` / `target_modality`
  (CT and MRI for the conversions; the row's label, else the one its instruction names, for
  the others), like SynthRAD2023's pairs;
- reconstruction whose output is the input (or names none): kind "image", like IXI's slices;
- text_to_image (no input image): kind "report", `image` the X-ray to produce and `text` the
  instruction (the report), like MIMIC-CXR's reports.

The task is the row's task field, else read from the instruction (`task_from_instruction`);
a row whose task cannot be told is quarantined. Turns are scrubbed of PHI like the other
paper datasets. A row's two images are one chunk unit when they share a folder (the chunk
key of an image is its folder).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from healthgpt.data.schema import TASK_FAMILIES, new_record
from healthgpt.data.sources.base import ITEM_FILE_SUFFIXES, BadInput, meta_json
from healthgpt.data.sources.llava_json import (
    LlavaJsonReader,
    check_placeholders,
    image_list,
    row_split,
)
from healthgpt.data.tasks import IMAGE_TOKEN
from healthgpt.data.vocab import modality_from_text, normalize_body_part

GENERATION_TASKS = tuple(t for t, family in TASK_FAMILIES.items() if family == "generation")
# Input and output modality of the tasks that fix them.
TASK_MODALITIES = {"ct_to_mri": ("CT", "MRI"), "mri_to_ct": ("MRI", "CT")}
# Other spellings of a task field's value.
TASK_ALIASES = {
    "sr": "super_resolution",
    "superresolution": "super_resolution",
    "report_to_cxr": "text_to_image",
    "report_to_xray": "text_to_image",
    "ct2mri": "ct_to_mri",
    "mri2ct": "mri_to_ct",
}
_SUPER_RESOLUTION = re.compile(
    r"super[- ]?resol|higher resolution|increase the resolution|\bupscal|\bupsampl", re.I
)
_RECONSTRUCTION = re.compile(r"\breconstruct|\breproduce the (?:input )?image", re.I)
_CT = re.compile(r"\bct\b|computed tomography", re.I)
_MR = re.compile(r"\bmri?\b|magnetic resonance", re.I)
# The modality named right after "this" or "from" is the one the instruction starts from.
_SOURCE = re.compile(
    r"\b(?:this|from)\s+(?:[a-z\-]+\s+){0,3}?"
    r"(?P<m>ct\b|computed tomography|mri?\b|magnetic resonance)",
    re.I,
)


# A VQ code token of the official generation code's vocabulary (`<idx_123>`).
_VQ_CODE = re.compile(r"<idx_\d{1,6}>")


def normalize_task(value: Any) -> str:
    """A task field's value as a generation task of the mixture's vocabulary."""
    key = re.sub(r"[\s\-]+", "_", str(value).strip().lower())
    key = TASK_ALIASES.get(key, key)
    if key not in GENERATION_TASKS:
        raise BadInput(f"task {str(value)[:40]!r} is not one of {', '.join(GENERATION_TASKS)}")
    return key


def task_from_instruction(text: str, has_input: bool) -> str | None:
    """The task an instruction asks for: text_to_image when there is no input image, else
    super-resolution, reconstruction, or a conversion whose source modality is the one named
    after "this" or "from" (else the one named first); None when it names none of these."""
    if not has_input:
        return "text_to_image"
    if _SUPER_RESOLUTION.search(text):
        return "super_resolution"
    if _RECONSTRUCTION.search(text):
        return "reconstruction"
    ct, mr = _CT.search(text), _MR.search(text)
    if not (ct and mr):
        return None
    source = _SOURCE.search(text)
    if source:
        return "ct_to_mri" if _CT.fullmatch(source["m"]) else "mri_to_ct"
    return "ct_to_mri" if ct.start() < mr.start() else "mri_to_ct"


def instruction_text(turns: list[dict[str, str]]) -> str:
    """The human turns without the `<image>` token: the instruction (or the report)."""
    parts = [t["value"].replace(IMAGE_TOKEN, "") for t in turns if t["from"] == "human"]
    return "\n".join(p.strip() for p in parts if p.strip())


class VlHealthGenerationReader(LlavaJsonReader):
    name = "vl_health_generation"
    listing_globs = ("*.json",)
    scrub_turns = True
    public_names = True
    # The task of every row, whatever the row says (the reconstruction file).
    fixed_task: ClassVar[str | None] = None
    extra_keys = LlavaJsonReader.extra_keys | {"output_image_field", "task_field"}
    expected_layout = """\
<root>/                (the generation instruction folder of lintw/VL-Health)
  *.json               [{id, task?, image: <input>, output_image: <output>,
                         conversations: [human "<image>\\n<instruction>", gpt ...], modality?}]
  the images the rows name, relative to the root (options.extra.image_root, image_prefix
  for files that carry absolute paths); a row's input and output in one folder
(options.extra.output_image_field / task_field name the output image and task fields)"""

    def output_field(self) -> str:
        return str(self.options.extra.get("output_image_field", "output_image"))

    def chunk_key(self, rel_path: str) -> str | None:
        """An image's folder: a row's input and output image are one unit when they share
        it, so a changed output rebuilds the chunk of the row that reads it."""
        if not rel_path.lower().endswith(ITEM_FILE_SUFFIXES):
            return None
        folder = rel_path.rpartition("/")[0]
        return f"{folder}/" if folder else rel_path

    def no_output_reason(self, task: str, turns: list[dict[str, str]]) -> str:
        """Why a row without its output image is quarantined: the field expected, and, when
        the answer holds VQ code tokens instead (`<idx_N>`, as the official generation
        code writes them), that codes are not read (they need the VQ tokenizer they were
        made with; see data_manifests/vl_health_generation.yaml)."""
        reason = f"{task} row names no {self.output_field()} (the target image file expected)"
        if any(_VQ_CODE.search(t["value"]) for t in turns if t["from"] in ("gpt", "assistant")):
            reason += "; its answer holds VQ code tokens, which are not read"
        return reason

    def path_fields(self) -> tuple[str, ...]:
        return ("image", self.output_field())

    def key_image(self, sample: Any) -> str | None:
        if not isinstance(sample, dict):
            return None
        output = sample.get(self.output_field())
        return super().key_image(sample) or (output if isinstance(output, str) else None)

    def task_of(self, sample: dict[str, Any], instruction: str, has_input: bool) -> tuple[str, str]:
        """(task, where it came from: "dataset", "field" or "instruction")."""
        if self.fixed_task:
            return self.fixed_task, "dataset"
        value = sample.get(str(self.options.extra.get("task_field", "task")))
        if value not in (None, ""):
            return normalize_task(value), "field"
        task = task_from_instruction(instruction, has_input)
        if task is None:
            raise BadInput(
                "cannot tell the generation task: no task field, and the instruction names none"
            )
        return task, "instruction"

    def _records(
        self, sample: Any, file_name: str, index: int, roots: list[Path]
    ) -> list[dict[str, Any]]:
        if not isinstance(sample, dict):
            raise BadInput("sample is not a JSON object")
        turns = self.turns(sample)
        inputs = image_list(sample)
        output = sample.get(self.output_field())
        if output is not None and not (isinstance(output, str) and output.strip()):
            raise BadInput(f"{self.output_field()} is not an image path")
        check_placeholders(turns, len(inputs), answer_images=1)
        instruction = instruction_text(turns)
        task, task_from = self.task_of(sample, instruction, bool(inputs))
        row_label = modality_from_text(sample.get("modality"))
        label = row_label or modality_from_text(instruction)
        if task == "text_to_image" and inputs:
            raise BadInput("text_to_image row names an input image (the task has none)")
        if task in TASK_MODALITIES and row_label not in (None, TASK_MODALITIES[task][0]):
            raise BadInput(
                f"modality label {row_label} contradicts task {task} "
                f"(input {TASK_MODALITIES[task][0]})"
            )
        common: dict[str, Any] = {
            "source": self.name,
            "orig_id": self.orig_id(sample, file_name, index),
            "split": row_split(sample),
            "task": task,
            "body_part": normalize_body_part(sample.get("body_part")),
            "conversations": turns,
            "meta": meta_json(
                sample_id=self.shown_id(sample),
                file=file_name,
                n_images=len(inputs),  # input images: the mixture drops rows with more
                has_output=bool(output),
                # The mixture plans a row that states its task as that one sample.
                task=task,
                task_from=task_from,
                modality_label=sample.get("modality"),
            ),
        }
        target = self._resolve(output.strip(), roots) if output else None
        if task == "text_to_image":
            if target is None:
                raise BadInput(self.no_output_reason(task, turns))
            if not instruction:
                raise BadInput("text_to_image row has no report text")
            return [
                new_record(
                    kind="report",
                    modality=label or "X-Ray",
                    image=self.png(target),
                    text=instruction,
                    orig_path=self.found_path(target),
                    **common,
                )
            ]
        if not inputs:
            raise BadInput(f"{task} row names no input image")
        source = self._resolve(inputs[0], roots)
        if task == "reconstruction" and target in (None, source):
            return [
                new_record(
                    kind="image",
                    modality=label or "Other",
                    image=self.png(source),
                    orig_path=self.found_path(source),
                    **common,
                )
            ]
        if target is None:
            raise BadInput(self.no_output_reason(task, turns))
        if task == "super_resolution" and target == source:
            raise BadInput("super_resolution row's output image is its input image")
        modality, target_modality = TASK_MODALITIES.get(task, (label or "Other",) * 2)
        return [
            new_record(
                kind="pair",
                modality=modality,
                target_modality=target_modality,
                image=self.png(source),
                target_image=self.png(target),
                orig_path=self.found_path(source),
                **common,
            )
        ]


class VlHealthReconstructionReader(VlHealthGenerationReader):
    """The released LLaVA-558k reconstruction file: every row is a reconstruction of its
    image (kind "image", task "reconstruction")."""

    name = "vl_health_reconstruction"
    fixed_task = "reconstruction"
    listing_globs = ("*.json", "Alignment/generation/*.json")
    expected_layout = """\
<root>/                (lintw/VL-Health's LLaVA-558k reconstruction file, or its folder)
  *.json               [{id, image: "00453/004539375.jpg",
                         conversations: [human "<image>\\n<instruction>", gpt ...]}]
  the LLaVA-558k images the rows name (options.extra.image_root, image_prefix)"""
