"""Export the mixture to the LLaVA layout that LLaVA-family trainers read.

    <out>/<subset>_<split>.json    a JSON list of {"id", "image", "conversations", ...}
    <out>/images/ab/abcdef....png  every image once, named by the sha256 of its PNG bytes

`image` is the path of the input image relative to `<out>` (the trainer's `image_folder`),
absent for text-only inputs (text_to_image). Generation samples also carry `target_image`,
the path of the image to generate, and their answer turn is the `<target_image>`
placeholder (`data.tasks.TARGET_IMAGE_TOKEN`): a HealthGPT trainer swaps it for the VQ codes
of `target_image`; a plain LLaVA trainer, which ignores the extra key, should be given
comprehension samples only.
Entries are written as they are read (the JSON list is streamed), so memory stays flat.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from healthgpt.data.shards import open_shard, resolve_images, shard_paths
from healthgpt.data.tasks import SUBSETS
from healthgpt.storage import atomic_directory


def _store(images: Path, data: bytes) -> str:
    name = hashlib.sha256(data).hexdigest()[:32]
    path = images / name[:2] / f"{name}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return f"images/{name[:2]}/{name}.png"


def _entry(row: dict[str, Any], images: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": row["id"]}
    if row["image"] and row["image"]["bytes"]:
        entry["image"] = _store(images, row["image"]["bytes"])
    if row["target_image"] and row["target_image"]["bytes"]:
        entry["target_image"] = _store(images, row["target_image"]["bytes"])
    entry["conversations"] = row["conversations"]
    for key in ("task", "task_family", "direction", "source", "modality", "split"):
        entry[key] = row[key]
    if row.get("meta"):
        entry["meta"] = json.loads(row["meta"])
    return entry


def export_llava(mixture: Path, out: Path, subsets: tuple[str, ...] = SUBSETS) -> dict[str, int]:
    """Write the LLaVA JSON files and image folder for `subsets`; returns entries per file."""
    counts: dict[str, int] = {}
    with atomic_directory(Path(out)) as staging:
        images = staging / "images"
        for subset in subsets:
            shards = shard_paths(mixture, f"{subset}/data/")
            for split in sorted({p.name.split("-")[0] for p in shards}):
                name = f"{subset}_{split}.json"
                counts[name] = _write_json(
                    staging / name, [p for p in shards if p.name.startswith(f"{split}-")], images
                )
    return counts


def _write_json(path: Path, shards: list[Path], images: Path) -> int:
    written = 0
    with open(path, "w") as handle:
        handle.write("[")
        for shard in shards:
            parquet = open_shard(shard)
            for batch in parquet.iter_batches(batch_size=256, use_threads=False):
                for row in resolve_images(batch, shard).to_pylist():
                    handle.write(",\n" if written else "\n")
                    handle.write(json.dumps(_entry(row, images), ensure_ascii=False))
                    written += 1
        handle.write("\n]\n")
    return written
