"""Image-task evaluation: modality conversion, super-resolution and reconstruction.

Pairs are the held-out test samples of the mixture (rows with a `task` among
`GENERATION_TASKS`, an input `image` and a `target_image`). Each pair's instruction is the
sample's own human turn (or its `question`), else `DEFAULT_INSTRUCTIONS[task]`. The model's
output is scored against the target with `metrics.image_metrics` (conventions there), and
each pair lands in a table column of the paper: CT->MRI and MRI->CT per body region
(`ct2mri_brain`, `mri2ct_pelvis`, ...), `super_resolution`, `reconstruction`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from healthgpt.data.shards import (
    ShardInfo,
    ShardWriter,
    listed_shards,
    open_shard,
    resolve_images,
)
from healthgpt.data.tasks import PLACEHOLDERS
from healthgpt.eval.metrics import LpipsFn, image_metrics, to_gray_uint8
from healthgpt.eval.predict import ImageModel, batched, decode_image
from healthgpt.eval.stats import Running
from healthgpt.progress import Progress

GENERATION_TASKS = ("ct_to_mri", "mri_to_ct", "super_resolution", "reconstruction")
DEFAULT_INSTRUCTIONS = {
    "ct_to_mri": "Convert this CT image to the corresponding MRI image.",
    "mri_to_ct": "Convert this MRI image to the corresponding CT image.",
    "super_resolution": "Reconstruct this low-resolution image at 4x higher resolution.",
    "reconstruction": "Reconstruct this image.",
}
_REGIONS = {"head": "brain", "brain": "brain", "pelvis": "pelvis"}
_PREFIX = {"ct_to_mri": "ct2mri", "mri_to_ct": "mri2ct"}


def table_column(task: str, body_part: str | None) -> str:
    """The paper's table column of a pair: `ct2mri_brain`, `super_resolution`, ..."""
    if task in _PREFIX:
        region = _REGIONS.get(str(body_part or "").lower(), str(body_part or "other").lower())
        return f"{_PREFIX[task]}_{region.replace(' ', '_')}"
    return task


@dataclass(frozen=True)
class Pair:
    id: str
    task: str
    source: str | None
    body_part: str | None
    instruction: str
    image: bytes
    target: bytes

    @property
    def column(self) -> str:
        return table_column(self.task, self.body_part)


def _instruction(row: dict[str, Any]) -> str:
    for turn in row.get("conversations") or []:
        if turn.get("from") == "human":
            text = str(turn.get("value") or "")
            for placeholder in PLACEHOLDERS:
                text = text.replace(placeholder, "")
            if text.strip():
                return text.strip()
    if row.get("question"):
        return str(row["question"]).strip()
    return DEFAULT_INSTRUCTIONS[row["task"]]


def pair_files(directory: Path) -> list[Path]:
    """Every shard under `directory` (a mixture, one of its subsets, or any folder of shards)."""
    return listed_shards(directory)


def read_pairs(
    directory: Path, split: str = "test", tasks: Sequence[str] = GENERATION_TASKS, limit: int = 0
) -> Iterator[Pair]:
    """Held-out generation pairs from mixture (or canonical record) shards under `directory`."""
    count = 0
    for path in pair_files(directory):
        parquet = open_shard(path)
        names = set(parquet.schema_arrow.names)
        if not {"task", "image", "target_image", "split"} <= names:
            continue
        wanted = ["id", "split", "task", "source", "body_part", "image", "target_image"]
        columns = [c for c in [*wanted, "conversations", "question"] if c in names]
        for batch in parquet.iter_batches(columns=columns, batch_size=64):
            for row in resolve_images(batch, path).to_pylist():
                if row["split"] != split or row["task"] not in tasks:
                    continue
                image, target = row.get("image") or {}, row.get("target_image") or {}
                if not image.get("bytes") or not target.get("bytes"):
                    continue
                yield Pair(
                    id=row["id"],
                    task=row["task"],
                    source=row.get("source"),
                    body_part=row.get("body_part"),
                    instruction=_instruction(row),
                    image=image["bytes"],
                    target=target["bytes"],
                )
                count += 1
                if limit and count >= limit:
                    return


GENERATION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("column", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("body_part", pa.string()),
        pa.field("instruction", pa.string()),
        pa.field("ssim", pa.float64()),
        pa.field("psnr", pa.float64()),
        pa.field("mse", pa.float64()),
        pa.field("lpips", pa.float64()),
        pa.field("generated", pa.binary()),
    ],
    metadata={"healthgpt.schema": "generation-predictions/v2"},
)
"""One row per pair: its metrics and (optionally) the generated image as an 8-bit gray PNG
at the metric size, so a score can be checked by looking at what was scored."""


METRICS = ("ssim", "psnr", "mse", "lpips")
# Percent-scaled metrics print x100 (as the paper does) and are bounded in [0, 1] before that.
_SCALE = {"ssim": (100.0, (-1.0, 1.0)), "psnr": (1.0, None), "mse": (1.0, None)}
_SCALE["lpips"] = (100.0, (0.0, 1.0))


@dataclass
class GenerationTally:
    """Per table column and per source: running sums of each metric (memory stays flat)."""

    sums: dict[tuple[str, str], dict[str, Running]] = field(default_factory=dict)

    def add(self, column: str, source: str | None, metrics: dict[str, float | None]) -> None:
        slot = self.sums.setdefault((column, source or "unknown"), {m: Running() for m in METRICS})
        for name in METRICS:
            if metrics.get(name) is not None:
                slot[name].add(float(metrics[name]))

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per column: n, each metric as {value, n, ci} (SSIM and LPIPS x 100, PSNR dB, MSE),
        and the same per source under `by_source`."""
        merged: dict[str, dict[str, Running]] = {}
        for (column, _), slot in self.sums.items():
            into = merged.setdefault(column, {m: Running() for m in METRICS})
            for name, running in slot.items():
                into[name].n += running.n
                into[name].total += running.total
                into[name].squares += running.squares
                into[name].binary = False
        out: dict[str, dict[str, Any]] = {}
        for column, slot in sorted(merged.items()):
            out[column] = _cells(slot)
            out[column]["by_source"] = {
                source: _cells(s) for (c, source), s in sorted(self.sums.items()) if c == column
            }
        return out


def _cells(slot: dict[str, Running]) -> dict[str, Any]:
    cells: dict[str, Any] = {"n": slot["ssim"].n}
    for name, running in slot.items():
        running.binary = False
        scale, bounds = _SCALE[name]
        cells[name] = running.summary(scale, bounds)
    return cells


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@dataclass
class GenerationResult:
    scores: dict[str, dict[str, Any]]
    shards: list[ShardInfo]
    grid_png: bytes | None


def evaluate_generation(
    model: ImageModel,
    pairs: Iterator[Pair],
    out_dir: Path,
    batch_size: int = 4,
    window: str = "gaussian",
    lpips_fn: LpipsFn | None = None,
    keep_images: bool = True,
    grid_per_column: int = 3,
) -> GenerationResult:
    """Generate for every pair, score it, write the predictions table, and draw the grid."""
    tally = GenerationTally()
    examples: dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]] = {}
    writer = ShardWriter(Path(out_dir), GENERATION_SCHEMA, prefix="predictions", hf_images=False)
    with writer, Progress("eval generation", unit="pairs") as progress:
        for batch in batched(pairs, batch_size):
            outputs = model.generate_image(
                [decode_image(p.image) for p in batch], [p.instruction for p in batch]
            )
            if len(outputs) != len(batch):
                raise RuntimeError(f"model returned {len(outputs)} images for {len(batch)} pairs")
            progress.update(len(batch))
            for pair, output in zip(batch, outputs, strict=True):
                target = to_gray_uint8(Image.open(io.BytesIO(pair.target)))
                generated = to_gray_uint8(output)
                metrics = image_metrics(target, generated, window=window, lpips_fn=lpips_fn)
                tally.add(pair.column, pair.source, metrics)
                writer.write(
                    {
                        "id": pair.id,
                        "task": pair.task,
                        "column": pair.column,
                        "source": pair.source,
                        "body_part": pair.body_part,
                        "instruction": pair.instruction,
                        **metrics,
                        "generated": png_bytes(generated) if keep_images else None,
                    }
                )
                shown = examples.setdefault(pair.column, [])
                if len(shown) < grid_per_column:
                    source = to_gray_uint8(Image.open(io.BytesIO(pair.image)))
                    shown.append((pair.id, source, target, generated))
    grid = comparison_grid(examples) if examples else None
    return GenerationResult(tally.summary(), writer.shards, grid)


TILE = 128
GAP = 4
LABEL_W = 150
HEADER_H = 18


def comparison_grid(
    examples: dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]],
) -> bytes:
    """A PNG: one row per example (label, input, target, generated), grouped by column."""
    rows = [(column, *example) for column, items in examples.items() for example in items]
    width = LABEL_W + 3 * (TILE + GAP)
    canvas = Image.new("L", (width, HEADER_H + (TILE + GAP) * len(rows)), color=255)
    draw = ImageDraw.Draw(canvas)
    for i, title in enumerate(("input", "target", "generated")):
        draw.text((LABEL_W + i * (TILE + GAP) + 4, 3), title, fill=0)
    for r, (column, pair_id, *images) in enumerate(rows):
        top = HEADER_H + r * (TILE + GAP)
        draw.text((4, top + 4), column, fill=0)
        draw.text((4, top + 20), pair_id[:16], fill=0)
        for c, array in enumerate(images):
            tile = Image.fromarray(array).resize((TILE, TILE), Image.Resampling.BILINEAR)
            canvas.paste(tile, (LABEL_W + c * (TILE + GAP), top))
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()
