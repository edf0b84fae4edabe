"""Synthetic canonical records with real PNG bytes, written in the ingestion layout.

Images are smooth random fields (a random 8x8 grid, bicubic-upsampled, plus a little noise), so
two seeds give perceptually different images, while a rescaled or brightness-shifted copy of
one stays a near-duplicate.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from PIL import Image

from healthgpt.data.decode.imaging import encode_png
from healthgpt.data.ingest.run import add_identities
from healthgpt.data.schema import RECORD_SCHEMA, SAMPLE_SCHEMA, new_record
from healthgpt.data.shards import (
    ShardInfo,
    ShardWriter,
    read_manifest,
    resolve_images,
    write_manifest,
)
from healthgpt.storage import atomic_directory


def field_image(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    grid = (rng.random((8, 8)) * 255).astype(np.uint8)
    image = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float32)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(image)


def png(seed: int, size: int = 64) -> bytes:
    return encode_png(field_image(seed, size), None)


def near_copy(seed: int, size: int = 64, scale: float = 1.125, shift: int = 12) -> bytes:
    """The image of `seed`, rescaled and brightened: different pixels, near-identical phash."""
    image = field_image(seed, size)
    side = int(round(size * scale))
    array = np.asarray(image.resize((side, side), Image.BICUBIC), dtype=np.int16) + shift
    return encode_png(np.clip(array, 0, 255).astype(np.uint8), None)


def reencoded(data: bytes) -> bytes:
    """Same pixels, different PNG bytes (another compression level)."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def vqa(source, orig_id, split, image, question, answer, answer_type, qtype=None, **kw):
    return new_record(
        source=source,
        orig_id=orig_id,
        split=split,
        kind="vqa",
        modality=kw.pop("modality", "CT"),
        image=image,
        question=question,
        answer=answer,
        answer_type=answer_type,
        meta=json.dumps({"question_type": qtype}) if qtype else None,
        **kw,
    )


def write_ingested(
    root: Path, source: str, records: list[dict[str, Any]], identities: bool = True
) -> Path:
    """Write records like `healthgpt.data.ingest.run` does: data/{split}-NNNNN.parquet, each
    image's identity beside it (unless `identities` is false: the layout of ingestions from
    before the identity columns), and a manifest."""
    if identities:
        records = [add_identities(dict(record)) for record in records]
    out = Path(root) / source
    with atomic_directory(out) as staging:
        shards = []
        for split in sorted({r["split"] for r in records}):
            with ShardWriter(staging / "data", RECORD_SCHEMA, prefix=split) as writer:
                for record in records:
                    if record["split"] == split:
                        writer.write(record)
            shards += [shard.under("data") for shard in writer.shards]
        write_manifest(staging, shards, summary={"source": source, "records": len(records)})
    return out


def standard_sources(
    root: Path,
    identities: bool = True,
    extra: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Path]:
    """A small multi-source input with planted overlaps (see comments), one dir per source
    (`identities`: see `write_ingested`; `extra`: records added after a source's own)."""
    dirs = {}

    def write(source: str, records: list[dict[str, Any]]) -> Path:
        return write_ingested(root, source, [*records, *(extra or {}).get(source, [])], identities)

    img_a, img_b, img_c = png(1), png(2), png(3)
    dirs["vqa_rad"] = write(
        "vqa_rad",
        [
            # image A is asked about in train and in test (VQA-RAD's known overlap)
            vqa("vqa_rad", "q1", "train", img_a, "Is there a fracture?", "yes", "closed", "ABN"),
            vqa("vqa_rad", "q2", "train", img_a, "What organ is shown?", "liver", "open", "ORGAN"),
            vqa("vqa_rad", "q3", "test", img_a, "Is this normal?", "no", "closed", "ABN"),
            vqa("vqa_rad", "q4", "train", img_b, "Is there a mass?", "no", "closed", "PRES"),
            # the exact same question about the same image, under another id: a duplicate
            vqa(
                "vqa_rad",
                "q5",
                "train",
                reencoded(img_b),
                "Is there a mass?",
                "no",
                "closed",
                "PRES",
            ),
            vqa(
                "vqa_rad",
                "q6",
                "train",
                img_b,
                "What modality is this?",
                "ct",
                "closed",
                "MODALITY",
            ),
            vqa("vqa_rad", "q7", "train", png(4), "Which modality?", "mri", "closed", "MODALITY"),
            vqa("vqa_rad", "q8", "train", png(5), "Which modality?", "x-ray", "closed", "MODALITY"),
            vqa("vqa_rad", "q9", "test", img_c, "Where is the lesion?", "left lobe", "open", "POS"),
        ],
    )
    dirs["slake"] = write(
        "slake",
        [
            # a rescaled, brightened copy of VQA-RAD's test image C: a near-duplicate leak
            vqa("slake", "s1", "train", near_copy(3), "Where is the lesion?", "left", "open"),
            vqa("slake", "s2", "train", png(10), "Is the lung healthy?", "yes", "closed"),
            vqa("slake", "s3", "validation", png(11), "Is the lung healthy?", "no", "closed"),
            vqa("slake", "s4", "test", png(12), "What is abnormal?", "nodule", "open"),
            # VQA-RAD's training question q4 again, on a rescaled copy of its image: near-duplicate
            vqa("slake", "s5", "train", near_copy(2), "Is there a mass?", "no", "closed"),
        ],
    )
    dirs["mimic_cxr"] = write(
        "mimic_cxr",
        [
            new_record(
                source="mimic_cxr",
                orig_id=f"r{i}",
                split="test" if i == 0 else "train",
                kind="report",
                modality="X-Ray",
                image=png(20 + i),
                body_part="chest",
                subject_id=f"p{i}",
                text=f"FINDINGS: finding {i}. IMPRESSION: impression {i}.",
            )
            for i in range(4)
        ],
    )
    dirs["ixi"] = write(
        "ixi",
        [
            new_record(
                source="ixi",
                orig_id=f"IXI{s:03d}-T1:{z}",
                split="train",
                kind="image",
                modality="MRI",
                image=png(100 + 10 * s + z),
                body_part="brain",
                subject_id=f"subj{s}",
                orig_path=f"IXI{s:03d}-T1.nii.gz",
                meta=json.dumps({"sequence": "T1"}),
            )
            for s in range(8)
            for z in range(3)
        ],
    )
    dirs["synthrad2023"] = write(
        "synthrad2023",
        [
            new_record(
                source="synthrad2023",
                orig_id=f"{part}{s}:{z}",
                split="train",
                kind="pair",
                modality="MRI",
                image=png(300 + 10 * s + z + (0 if part == "1B" else 500)),
                target_image=png(600 + 10 * s + z + (0 if part == "1B" else 500)),
                target_modality="CT",
                task="mri_to_ct",
                body_part="brain" if part == "1B" else "pelvis",
                subject_id=f"{part}{s}",
            )
            for part in ("1B", "1P")
            for s in range(6)
            for z in range(2)
        ],
    )
    dirs["llava_json"] = write(
        "llava_json",
        [
            new_record(
                source="llava_json",
                orig_id=f"c{i}",
                split="train",
                kind="conversation",
                modality="Other",
                image=png(900 + i),
                conversations=[
                    {"from": "human", "value": "<image>\nWhat is this?"},
                    {"from": "gpt", "value": f"Answer {i}."},
                ],
                meta=json.dumps({"n_images": 2 if i == 0 else 1}),
            )
            for i in range(4)
        ],
    )
    return dirs


@dataclass
class Built:
    """A mixture built from `standard_sources`, with readers for the tests."""

    dirs: dict[str, Path]
    out: Path
    config: Any
    summary: Any

    @property
    def removed_table(self) -> pl.DataFrame:
        return pl.read_parquet(self.out / "removed.parquet")

    def rows(self, subset: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
        shards = sorted((self.out / subset / "data").glob("*.parquet"))
        return [
            row
            for path in shards
            for row in resolve_images(pq.read_table(path, columns=columns), path).to_pylist()
        ]


def build_standard(
    root: Path, extra: dict[str, list[dict[str, Any]]] | None = None, **overrides: Any
) -> Built:
    from healthgpt.data.mixture.build import build_mixture
    from healthgpt.data.mixture.config import sample_preset

    dirs = standard_sources(root / "ingested", extra=extra)
    config = sample_preset(**overrides)
    out = root / "mixture"
    return Built(dirs, out, config, build_mixture(dirs, out, config))


_SHARED: dict[str, Built] = {}


def shared_build(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One standard build per test session, shared by the test modules that only read it."""
    if "standard" not in _SHARED:
        _SHARED["standard"] = build_standard(tmp_path_factory.mktemp("standard"))
    return _SHARED["standard"]


def plant_shard(mixture: Path, subset: str, name: str, rows: list[dict[str, Any]]) -> None:
    """Add a train shard to a built mixture and list it in the manifest, as consumers read."""
    with ShardWriter(mixture / subset / "data", SAMPLE_SCHEMA, prefix=f"train-{name}") as writer:
        for row in rows:
            writer.write(row)
    manifest = read_manifest(mixture)
    listed = [ShardInfo(**s) for s in manifest.pop("shards")]
    planted = [shard.under(f"{subset}/data") for shard in writer.shards]
    write_manifest(mixture, listed + planted, **manifest)


def subset_groups(mixture: Path, subset: str) -> set[tuple[str, str]]:
    """The (source, task) pairs a built subset holds."""
    found = set()
    for path in sorted((mixture / subset / "data").glob("*.parquet")):
        for row in pq.read_table(path, columns=["source", "task"]).to_pylist():
            found.add((row["source"], row["task"]))
    return found
