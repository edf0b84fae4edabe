"""Ask a question about an image, or run a generation task, with one loaded model.

The CLI (`healthgpt ask`, `healthgpt generate`) and the web app (`healthgpt app`) both go
through `Inference`, so the two can never disagree on how a model is chosen, how an image is
decoded or how a prompt is worded:

- the model: the evaluation's loader (`healthgpt.eval.models.load_healthgpt`), given a
  pipeline checkpoint (a path, or the newest stage output under `<data>/checkpoints/`, found
  as the evaluation assets find it: `resolve_checkpoint`) or the released weights directory;
- the image: decoded by the project's guarded decoder (`load_image_bytes`: declared size
  checked before any pixel is allocated, truncated files refused), then RGB as the
  evaluation shows images to the model;
- the prompt: a question is asked as written (the trained form of an open question: the
  image placeholder, a newline, the question); a generation task uses the first training
  template of that task (`healthgpt.data.tasks.PROMPTS`), filled the way the
  mixture fills it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from healthgpt.data.decode.imaging import load_image_bytes
from healthgpt.data.errors import BadInput
from healthgpt.data.mixture.config import MixtureConfig
from healthgpt.data.tasks import NEEDS_IMAGE, PROMPTS
from healthgpt.data.vocab import normalize_body_part
from healthgpt.eval import models
from healthgpt.eval.predict import HealthGPTImage, HealthGPTText

TASKS = ("ct_to_mri", "mri_to_ct", "super_resolution", "reconstruction", "text_to_image")
# Source and target modality of the conversions, as the mixture writes them in prompts.
CONVERSIONS = {"ct_to_mri": ("CT", "MRI"), "mri_to_ct": ("MRI", "CT")}
DEFAULT_BODY_PART = {"ct_to_mri": "head", "mri_to_ct": "head", "text_to_image": "chest"}
MAX_IMAGE_BYTES = 20 << 20  # an upload or an image file larger than this is refused unread
MAX_TEXT_CHARS = 20_000  # a question or a report longer than this is refused


class ServeError(ValueError):
    """Input the model cannot be run on (missing checkpoint, unreadable image, wrong task):
    the CLI prints it as one line, the app shows it on the page."""


@dataclass(frozen=True)
class ModelChoice:
    """Which model to load. `official` (the released weights directory) wins over
    `checkpoint`; no checkpoint means the newest `stage` output under the checkpoints root.
    `base_model` / `vqgan` replace the preset's base LM and VQGAN (released weights only)."""

    checkpoint: str | None = None
    official: str | None = None
    preset: str = ""
    base_model: str | None = None
    vqgan: str | None = None
    stage: str = "stage3"
    max_new_tokens: int = 128


def checkpoints_root(data_dir: Path) -> Path:
    """Where the training stages write (the evaluation assets' default)."""
    return Path(data_dir) / "checkpoints"


def model_spec(choice: ModelChoice, data_dir: Path) -> models.ModelSpec:
    """The evaluation's `ModelSpec` for `choice`, refusing a missing checkpoint early."""
    if choice.official:
        if not Path(choice.official).is_dir():
            raise ServeError(f"released weights directory not found: {choice.official}")
        models.official_files(choice.official)  # names the files it expected when absent
        return models.ModelSpec(
            preset=choice.preset, official_dir=choice.official, max_new_tokens=choice.max_new_tokens
        )
    if choice.checkpoint:
        path = Path(choice.checkpoint)
        if not path.exists():
            raise ServeError(f"checkpoint not found: {path}")
        checkpoint = path
    else:
        root = checkpoints_root(data_dir)
        checkpoint = models.resolve_checkpoint(root, choice.stage)
        if checkpoint is None:
            raise ServeError(
                f"no {choice.stage} checkpoint under {root}: train it (dagster asset "
                f"materialize --select train_{choice.stage}), or pass --checkpoint PATH or "
                "--official DIR"
            )
    models.checkpoint_file(checkpoint)  # a directory without weights is named here
    return models.ModelSpec(
        preset=choice.preset, checkpoint=str(checkpoint), max_new_tokens=choice.max_new_tokens
    )


def _load(choice: ModelChoice, spec: models.ModelSpec) -> tuple[Any, list[str]]:
    """The model and its loading notes, through the evaluation's loader. A base model or
    VQGAN override goes through the same model package calls with the preset changed."""
    if not (spec.official_dir and (choice.base_model or choice.vqgan)):
        return models.load_healthgpt(spec)
    from healthgpt.model import get_preset, load_model
    from healthgpt.model.presets import OfficialWeights

    config = get_preset(spec.preset or models.DEFAULT_OFFICIAL_PRESET)
    if choice.base_model:
        config.lm.name_or_path = choice.base_model
    if choice.vqgan:
        config.vq.ckpt_path = choice.vqgan
    config.official_weights = OfficialWeights(**models.official_files(spec.official_dir))
    model = load_model(config)
    reports = getattr(model, "load_reports", {})
    return model, [f"official {name} weights: {r.summary()}" for name, r in reports.items()]


def read_image(data: bytes, name: str = "image") -> Image.Image:
    """Encoded image bytes (PNG, JPEG...) as the RGB image the model is shown; size-capped and
    decoded by the project's guarded decoder. Nothing is written anywhere."""
    if not data:
        raise ServeError(f"{name}: empty file")
    if len(data) > MAX_IMAGE_BYTES:
        raise ServeError(f"{name}: {len(data)} bytes, more than the {MAX_IMAGE_BYTES} allowed")
    try:
        return load_image_bytes(data, name).convert("RGB")
    except BadInput as error:
        raise ServeError(f"{name}: not a readable image: {error}") from None


def read_image_file(path: str | Path) -> Image.Image:
    """`read_image` of a file, checked for existence and size before it is read."""
    path = Path(path)
    if not path.is_file():
        raise ServeError(f"image not found: {path}")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise ServeError(f"{path}: larger than the {MAX_IMAGE_BYTES} bytes allowed")
    return read_image(path.read_bytes(), path.name)


def _text(value: str | None, what: str) -> str:
    text = (value or "").strip()
    if not text:
        raise ServeError(f"{what} is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise ServeError(f"{what} has {len(text)} characters, more than {MAX_TEXT_CHARS}")
    return text


def instruction(
    task: str,
    *,
    report: str | None = None,
    body_part: str | None = None,
    modality: str = "MRI",
    factor: int = MixtureConfig.sr_factor,
) -> str:
    """The instruction of a generation task, worded as the mixture's first training template
    of that task (`tasks.PROMPTS[task][0]`) with the fields it fills."""
    if task not in TASKS:
        raise ServeError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    src, dst = CONVERSIONS.get(task, (modality, None))
    part = normalize_body_part(body_part) or DEFAULT_BODY_PART.get(task, "body")
    text = _text(report, "the report") if task == "text_to_image" else ""
    return PROMPTS[task][0].format(
        modality=src, src=src, dst=dst, part=part, factor=factor, text=text
    )


@dataclass
class Inference:
    """A loaded model behind the evaluation's adapters; `load` times it."""

    text: HealthGPTText
    image: HealthGPTImage
    label: str
    notes: list[str] = field(default_factory=list)
    load_seconds: float = 0.0

    @classmethod
    def load(cls, choice: ModelChoice, data_dir: Path) -> Inference:
        started = time.perf_counter()
        try:
            spec = model_spec(choice, data_dir)
            model, notes = _load(choice, spec)
        except models.ModelUnavailable as error:
            raise ServeError(str(error)) from None
        seconds = time.perf_counter() - started
        return cls(
            HealthGPTText(model, max_new_tokens=spec.max_new_tokens, notes=notes),
            HealthGPTImage(model, notes=notes),
            spec.label,
            notes,
            seconds,
        )

    def ask(self, image: Image.Image | None, question: str) -> str:
        """The comprehension plugin's greedy answer to `question` about `image`."""
        return self.text.generate_text([image], [_text(question, "the question")])[0]

    def generate(
        self,
        task: str,
        image: Image.Image | None = None,
        *,
        report: str | None = None,
        body_part: str | None = None,
        modality: str = "MRI",
    ) -> Image.Image:
        """The generation plugin's image for `task` (an input image, or a report for
        text_to_image)."""
        prompt = instruction(task, report=report, body_part=body_part, modality=modality)
        if task in NEEDS_IMAGE and image is None:
            raise ServeError(f"task {task} needs an input image")
        if task not in NEEDS_IMAGE and image is not None:
            raise ServeError(f"task {task} takes a report, not an image")
        if task in NEEDS_IMAGE and report:
            raise ServeError(f"task {task} takes an image, not a report")
        return self.image.generate_image([image], [prompt])[0]


def startup_line(inference: Inference, startup_seconds: float) -> str:
    """What the app logs once ready: the model, load and start-up time, peak memory (the
    accelerator's when the model is on one, else the process's peak resident memory)."""
    from healthgpt.train.loop import peak_memory_bytes

    device = next(inference.text.model.parameters()).device
    peak = peak_memory_bytes(device) / (1 << 20)
    return (
        f"healthgpt app: {inference.label} on {device}: model loaded in "
        f"{inference.load_seconds:.1f} s, start-up {startup_seconds:.1f} s, "
        f"peak memory {peak:.0f} MiB"
    )
