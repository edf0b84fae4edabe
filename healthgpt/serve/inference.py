"""Ask a question about an image, or run a generation task, with one loaded model.

The CLI (`healthgpt ask`, `healthgpt generate`) and the web app (`healthgpt app`) both go
through `Inference`, so the two can never disagree on how a model is chosen, how an image is
decoded or how a prompt is worded:

- the model: the evaluation's loader (`healthgpt.eval.models.load_healthgpt`), given a
  pipeline checkpoint (a path, or the newest stage output under `<data>/checkpoints/`, found
  as the evaluation assets find it: `resolve_checkpoint`) or the released weights directory
  (with its base LM and VQGAN when given), so strict loading and the VQ checks are the
  evaluation's too;
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
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from healthgpt.data.decode.imaging import load_image_bytes
from healthgpt.data.errors import BadInput
from healthgpt.data.limits import Limits
from healthgpt.data.mixture.config import MixtureConfig
from healthgpt.data.tasks import NEEDS_IMAGE, PROMPTS
from healthgpt.data.vocab import normalize_body_part
from healthgpt.eval import models
from healthgpt.eval.predict import HealthGPTImage, HealthGPTText
from healthgpt.storage import file_sha256

TASKS = ("ct_to_mri", "mri_to_ct", "super_resolution", "reconstruction", "text_to_image")
# Source and target modality of the conversions, as the mixture writes them in prompts.
CONVERSIONS = {"ct_to_mri": ("CT", "MRI"), "mri_to_ct": ("MRI", "CT")}
DEFAULT_BODY_PART = {"ct_to_mri": "head", "mri_to_ct": "head", "text_to_image": "chest"}
MAX_IMAGE_BYTES = 20 << 20  # an upload or an image file larger than this is refused unread
MAX_TEXT_CHARS = 20_000  # a question or a report longer than this is refused
MAX_FIELD_CHARS = 200  # a task, modality, body part or file name longer than this is refused
# Width x height an uploaded image may declare (checked from its header, before decoding):
# far below the ingest limit, since each request decodes while others wait.
MAX_UPLOAD_PIXELS = 4096 * 4096


class ServeError(ValueError):
    """Input the model cannot be run on (missing checkpoint, unreadable image, wrong task):
    the CLI prints it as one line, the app shows it on the page."""


@dataclass(frozen=True)
class ModelChoice:
    """Which model to load. `official` (the released weights directory) wins over
    `checkpoint`; no checkpoint means the newest `stage` output under the checkpoints root.
    `base_model` and the VQGAN (`vqgan`: a taming `last.ckpt` with its `vqgan_yaml`, or a
    `save_vq` safetensors file) replace the preset's (released weights only);
    `vq_dry_run` lets a preset that needs a trained VQGAN generate with a random one. No
    `max_new_tokens` means the model's own (`models.default_max_new_tokens`)."""

    checkpoint: str | None = None
    official: str | None = None
    preset: str = ""
    base_model: str | None = None
    vqgan: str | None = None
    vqgan_yaml: str | None = None
    vq_dry_run: bool = False
    allow_partial_weights: bool = False
    stage: str = "stage3"
    max_new_tokens: int | None = None


def checkpoints_root(data_dir: Path) -> Path:
    """Where the training stages write (the evaluation assets' default)."""
    return Path(data_dir) / "checkpoints"


def vq_files(choice: ModelChoice) -> dict[str, str | None]:
    """The `ModelSpec` VQ fields of `choice`: each file with the sha256 of its bytes now.

    The VQ loader loads a file only with a recorded sha256, so that a file swapped between
    its registration and its load is refused. Here the user names the file at the moment it
    is loaded, so hashing it now records exactly what they chose; the loader checks the bytes
    it parses against that hash."""
    if not choice.vqgan:
        if choice.vqgan_yaml:
            raise ServeError("--vqgan-yaml is the model.yaml of a --vqgan checkpoint; give both")
        return {}
    taming = not choice.vqgan.endswith(".safetensors")
    if taming and not choice.vqgan_yaml:
        raise ServeError(f"{choice.vqgan}: a taming checkpoint needs its --vqgan-yaml model.yaml")
    named = {"vq_path": choice.vqgan, "vq_yaml_path": choice.vqgan_yaml if taming else None}
    found: dict[str, str | None] = {}
    for key, path in named.items():
        if path is None:
            continue
        if not Path(path).is_file():
            raise ServeError(f"VQGAN file not found: {path}")
        found[key] = path
        found[key.replace("_path", "_sha256")] = file_sha256(Path(path))
    return found


def model_spec(choice: ModelChoice, data_dir: Path) -> models.ModelSpec:
    """The evaluation's `ModelSpec` for `choice`, refusing a missing checkpoint early."""
    common = {
        "preset": choice.preset,
        "max_new_tokens": choice.max_new_tokens,
        "vq_dry_run": choice.vq_dry_run,
    }
    if choice.official:
        if not Path(choice.official).is_dir():
            raise ServeError(f"released weights directory not found: {choice.official}")
        models.official_files(choice.official)  # names the files it expected when absent
        return models.ModelSpec(
            official_dir=choice.official,
            base_model=choice.base_model,
            allow_partial_weights=choice.allow_partial_weights,
            **vq_files(choice),
            **common,
        )
    if choice.base_model or choice.vqgan or choice.vqgan_yaml:
        raise ServeError(
            "--base-model and --vqgan replace parts of the released model: use them with "
            "--official DIR (a pipeline checkpoint records its own)"
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
    return models.ModelSpec(checkpoint=str(checkpoint), **common)


def _one_line(error: models.ModelUnavailable) -> str:
    """The loader's refusal as one line: incomplete official weights by their count and the
    first few keys (the full list is thousands of keys long), anything else as it reads."""
    from healthgpt.model.weights import IncompleteWeights

    cause = error.__cause__
    if isinstance(cause, IncompleteWeights):
        first = ", ".join(cause.missing[:3])
        return (
            f"official weights incomplete: {len(cause.missing)} expected tensors missing "
            f"({first}, ...); pass --allow-partial-weights to load them anyway"
        )
    return " ".join(str(error).split())


def read_image(data: bytes, name: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Encoded image bytes (PNG, JPEG...) as the RGB image the model is shown; size-capped and
    decoded by the project's guarded decoder. `max_pixels` lowers the pixel limit the header
    is checked against (never raises it). Nothing is written anywhere."""
    if not data:
        raise ServeError(f"{name}: empty file")
    if len(data) > MAX_IMAGE_BYTES:
        raise ServeError(f"{name}: {len(data)} bytes, more than the {MAX_IMAGE_BYTES} allowed")
    limits = Limits.from_options()
    if max_pixels is not None and max_pixels < limits.max_image_pixels:
        limits = replace(limits, max_image_pixels=max_pixels)
    try:
        return load_image_bytes(data, name, limits).convert("RGB")
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


def _text(value: str | None, what: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`value` stripped; refused when it is not a string, is empty or is over `limit`."""
    if value is not None and not isinstance(value, str):
        raise ServeError(f"{what} must be text, not {type(value).__name__}")
    text = (value or "").strip()
    if not text:
        raise ServeError(f"{what} is empty")
    if len(text) > limit:
        raise ServeError(f"{what} has {len(text)} characters, more than {limit}")
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
    if not isinstance(task, str) or task not in TASKS:
        shown = repr(task[:MAX_FIELD_CHARS]) if isinstance(task, str) else type(task).__name__
        raise ServeError(f"unknown task {shown}; one of {', '.join(TASKS)}")
    modality = _text(modality, "the modality", MAX_FIELD_CHARS)
    if body_part:
        body_part = _text(body_part, "the body part", MAX_FIELD_CHARS)
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
            model, notes = models.load_healthgpt(spec)
        except models.ModelUnavailable as error:
            raise ServeError(_one_line(error)) from None
        seconds = time.perf_counter() - started
        budget = spec.max_new_tokens or models.default_max_new_tokens(model)
        return cls(
            HealthGPTText(model, max_new_tokens=budget, notes=notes),
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
        from healthgpt.model.healthgpt import VQNotTrained

        try:
            return self.image.generate_image([image], [prompt])[0]
        except VQNotTrained:
            raise ServeError(
                f"preset {self.image.model.config.name!r} needs a trained VQGAN to generate "
                "images: give --vqgan (a taming last.ckpt with --vqgan-yaml, or a .safetensors "
                "file), or --vq-dry-run to generate with a random one"
            ) from None


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
