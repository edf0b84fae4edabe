"""The canonical record schema: defined once, as pyarrow and as HF `datasets.Features`.

Every source reader yields records of this shape; every later step (mixture, training,
evaluation) reads it. The pyarrow schema is the storage truth; the HF features are derived
from the same field list so the two can never drift apart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from healthgpt.data.tasks import TASK_FAMILIES as TASK_FAMILIES
from healthgpt.data.tasks import TASKS as TASKS

SPLITS = ("train", "validation", "test")

# Normalized modality vocabulary. Readers map their source's labels onto these.
MODALITIES = (
    "CT",
    "MRI",
    "X-Ray",
    "Pathology",
    "Ultrasound",
    "Fundus",
    "Microscopy",
    "Nuclear Medicine",
    "OCT",
    "Dermoscopy",
    "Endoscopy",
    "Other",
)

ANSWER_TYPES = ("closed", "open")

# Record kinds: what a record is, before the mixture turns it into training tasks.
KINDS = ("vqa", "caption", "report", "image", "pair", "conversation")

# HF's Image feature stores images as a struct of PNG bytes and an optional path.
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TURN_TYPE = pa.struct([("from", pa.string()), ("value", pa.string())])
# An image's identity (`healthgpt.data.decode.identity`): hex 128-bit pixel hash and 64-bit phash,
# the xxh3-128 of the encoded bytes it was computed for, and how it was computed.
IMAGE_HASH_TYPE = pa.struct(
    [
        ("key", pa.string()),
        ("phash", pa.uint64()),
        ("bytes_xxh128", pa.string()),
        ("method", pa.string()),
    ]
)

RECORD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("body_part", pa.string()),
        pa.field("subject_id", pa.string()),
        pa.field("image", IMAGE_TYPE),
        pa.field("target_image", IMAGE_TYPE),
        pa.field("target_modality", pa.string()),
        pa.field("task", pa.string()),
        pa.field("question", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("answer_type", pa.string()),
        pa.field("text", pa.string()),
        pa.field("conversations", pa.list_(TURN_TYPE)),
        pa.field("orig_path", pa.string()),
        pa.field("orig_id", pa.string()),
        pa.field("meta", pa.string()),
        pa.field("image_hash", IMAGE_HASH_TYPE),
        pa.field("target_image_hash", IMAGE_HASH_TYPE),
    ],
    metadata={"healthgpt.schema": "record/v3"},
)
"""One row per training-ready item.

- `id`: stable hash of (source, orig_id, slice) so the same input gives the same id anywhere.
- `kind`: vqa | caption | report | image | pair | conversation.
- `subject_id`: salted pseudonym of the patient / volume, used for subject-level splits.
- `image` / `target_image`: PNG bytes in HF's Image struct; `target_image` only for pairs.
- `task`: for pairs, the direction (`ct_to_mri`, `mri_to_ct`, `t2_to_pd`, ...).
- `orig_path`: path relative to the source root (pseudonymized where it would carry PHI).
- `meta`: a JSON object with source-specific fields (question_type, location, ...).
- `image_hash` / `target_image_hash`: the image's identity (pixel hash, phash), filled by
  ingestion when it writes the record, so the mixture never decodes an image to dedup it.
  Absent in record/v1 shards (the mixture decodes their images); in record/v2 shards bound
  to their bytes by a sha256 (`bytes_sha256`) instead of an xxh3-128.
"""
HASH_COLUMNS = {"image": "image_hash", "target_image": "target_image_hash"}
"""Image column -> the column holding its identity."""

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("item", pa.string(), nullable=False),
        pa.field("rel_path", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
    ],
    metadata={"healthgpt.schema": "quarantine/v1"},
)
"""One row per input item that could not become records, with the reason."""


def hf_features(schema: pa.Schema = RECORD_SCHEMA):
    """HF `datasets.Features` for a pyarrow schema, with image structs typed as `Image()`.

    Imported lazily: `datasets` is heavy and only the HF-facing code paths need it.
    """
    import datasets

    features = datasets.Features.from_arrow_schema(schema)
    for field in schema:
        if field.type == IMAGE_TYPE:
            features[field.name] = datasets.Image()
    return features


def hf_features_metadata(schema: pa.Schema = RECORD_SCHEMA) -> dict[bytes, bytes]:
    """Schema metadata that makes `datasets.load_dataset("parquet")` decode image columns."""
    import json

    features = hf_features(schema)
    return {b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}


def stable_id(source: str, *parts: Any) -> str:
    """A 20-hex-digit id that depends only on the source and the given identifying parts."""
    key = "\x1f".join([source, *map(str, parts)])
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def image_value(png: bytes | None) -> dict[str, Any] | None:
    """The HF Image struct for PNG bytes (no path: paths may carry PHI)."""
    return None if png is None else {"bytes": png, "path": None}


@dataclass(frozen=True)
class Quarantined:
    """An input item that produced no record, and why."""

    item: str
    reason: str
    rel_path: str | None = None

    def row(self, source: str) -> dict[str, Any]:
        return {
            "source": source,
            "item": self.item,
            "rel_path": self.rel_path,
            "reason": self.reason,
        }


def new_record(
    *,
    source: str,
    orig_id: str,
    split: str,
    kind: str,
    modality: str,
    image: bytes | None,
    id_parts: tuple[Any, ...] = (),
    **fields: Any,
) -> dict[str, Any]:
    """Build a canonical record, validating the closed vocabularies at the point of creation.

    Unknown field names raise, so a typo in a reader fails its tests instead of silently
    dropping a column.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} not in {SPLITS}")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} not in {KINDS}")
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} not in {MODALITIES}")
    answer_type = fields.get("answer_type")
    if answer_type is not None and answer_type not in ANSWER_TYPES:
        raise ValueError(f"answer_type {answer_type!r} not in {ANSWER_TYPES}")
    record: dict[str, Any] = {name: None for name in RECORD_SCHEMA.names}
    unknown = set(fields) - set(record)
    if unknown:
        raise KeyError(f"unknown record fields: {sorted(unknown)}")
    record.update(fields)
    if "target_image" in fields:
        record["target_image"] = image_value(fields["target_image"])
    record.update(
        id=stable_id(source, orig_id, *id_parts),
        source=source,
        split=split,
        kind=kind,
        modality=modality,
        image=image_value(image),
        orig_id=orig_id,
    )
    return record


# --- VL-Health mixture samples -------------------------------------------------------------

# The closed task vocabulary of the mixture lives in `healthgpt.data.tasks` (one `TaskSpec`
# per task); re-exported here beside the sample schema that stores it.

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("task_family", pa.string(), nullable=False),
        pa.field("direction", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("target_modality", pa.string()),
        pa.field("body_part", pa.string()),
        pa.field("subject_id", pa.string()),
        pa.field("image", IMAGE_TYPE),
        pa.field("target_image", IMAGE_TYPE),
        pa.field("conversations", pa.list_(TURN_TYPE), nullable=False),
        pa.field("answer_type", pa.string()),
        pa.field("meta", pa.string()),
    ],
    metadata={"healthgpt.schema": "sample/v1"},
)
"""One row per training or evaluation sample of the VL-Health mixture.

- `id`: stable hash of (record id, task); a sample repeated by an up-weighting gets `-rN`.
- `record_id`: the canonical record it was built from (lineage back to the ingested shards).
- `source`: the name the ingested directory was given to the mixture (normally the source).
- `task` / `task_family`: from `TASKS` / `TASK_FAMILIES`.
- `direction`: what goes in and what comes out, e.g. `image->text`, `MRI->CT`, `text->X-Ray`.
- `image`: the input image (none for text_to_image); `target_image`: the image a generation
  task must produce (none for comprehension).
- `conversations`: LLaVA-style turns; generation answers are the `TARGET_IMAGE_TOKEN` placeholder.
- `meta`: JSON with task details (choice options, degradation, prompt template index).
"""
