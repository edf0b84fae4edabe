"""Test doubles and miniature benchmark layouts for the evaluation tests.

`FakeTextModel` and `FakeImageModel` are deterministic stand-ins for HealthGPT: they answer
from a lookup table / copy their input, so every expected score can be computed by hand.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from healthgpt.data.schema import SAMPLE_SCHEMA, new_record
from tests.data.mixture_helpers import write_ingested


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def gray(seed: int, size: int = 32, high: int = 200) -> np.ndarray:
    """A deterministic 8-bit image with values in [0, high)."""
    return np.random.default_rng(seed).integers(0, high, (size, size), dtype=np.uint8)


class FakeTextModel:
    """Test double for a `TextModel`: the reply to a prompt is looked up by the question it
    contains; unknown questions get `default`. Records every batch it was asked."""

    def __init__(self, replies: dict[str, str], default: str = "no idea") -> None:
        self.replies = replies
        self.default = default
        self.batches: list[int] = []

    def generate_text(self, images: list, prompts: list[str]) -> list[str]:
        assert all(image is None or image.mode == "RGB" for image in images)
        self.batches.append(len(prompts))
        out = []
        for prompt in prompts:
            question = prompt.split("\n", 1)[0]
            out.append(self.replies.get(question, self.default))
        return out


class FakeImageModel:
    """Test double for an `ImageModel`: returns its input image unchanged (an identity map)."""

    def __init__(self) -> None:
        self.instructions: list[str] = []

    def generate_image(self, images: list, instructions: list[str]) -> list[Image.Image]:
        self.instructions += instructions
        return [image.copy() for image in images]


# ------------------------------------------------------------------------ VQA shards

# (question, gold, answer_type, fake reply) per source; expected scores are in the tests.
VQA_CASES = {
    "vqa_rad": [
        ("Is there a fracture?", "yes", "closed", "Yes, there is."),
        ("Is the lesion on the left or right?", "left", "closed", "right"),
        ("What organ is shown?", "left kidney", "open", "The kidney"),
        ("How many lesions are there?", "two", "open", "2"),
    ],
    "slake": [
        ("Is this a CT or an MRI?", "CT", "closed", "This is a CT scan."),
        ("Does the image show the chest?", "No", "closed", "no."),
    ],
}


def write_ingested_vqa(data_dir: Path, source: str, cases: list[tuple[str, str, str, str]]) -> Path:
    """`<data>/ingested/<source>/data/{test,train}-00000.parquet` like the ingest step writes."""
    records = [
        _vqa_record(source, index, "test", question, answer, answer_type)
        for index, (question, answer, answer_type, _) in enumerate(cases)
    ]
    records.append(_vqa_record(source, 99, "train", "Train question?", "yes", "closed"))
    return write_ingested(data_dir / "ingested", source, records)


def _vqa_record(source: str, index: int, split: str, question: str, answer: str, kind: str):
    return new_record(
        source=source,
        orig_id=f"{split}-{index}",
        split=split,
        kind="vqa",
        modality="CT",
        image=png(gray(index)),
        question=question,
        answer=answer,
        answer_type=kind,
    )


def vqa_replies() -> dict[str, str]:
    return {q: reply for cases in VQA_CASES.values() for q, _, _, reply in cases}


# ----------------------------------------------------------------- generation pairs


def write_generation_pairs(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mixture-style eval shards: two CT->MRI brain pairs whose target equals the input (an
    identity model scores perfectly), one super-resolution pair whose target is the input + 10
    (MSE exactly 100), and one train pair that must be ignored. Images are 256 x 256, the
    metric size, so no resampling blurs the hand-computed values."""
    pairs = {
        "ct-brain-0": ("ct_to_mri", "head", gray(1, 256), gray(1, 256)),
        "ct-brain-1": ("ct_to_mri", "head", gray(2, 256), gray(2, 256)),
        "sr-0": ("super_resolution", "head", gray(3, 256), gray(3, 256) + 10),
    }
    rows = []
    for pair_id, (task, body_part, image, target) in pairs.items():
        rows.append(_sample(pair_id, "test", task, body_part, image, target))
    rows.append(_sample("train-0", "train", "ct_to_mri", "pelvis", gray(4), gray(4)))
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), directory / "test-00000.parquet"
    )
    return {k: (v[2], v[3]) for k, v in pairs.items()}


def _sample(pair_id, split, task, body_part, image, target):
    return {
        "id": pair_id,
        "record_id": pair_id,
        "source": "synthrad2023",
        "split": split,
        "task": task,
        "task_family": "generation",
        "direction": "CT->MRI",
        "modality": "CT",
        "target_modality": "MRI",
        "body_part": body_part,
        "subject_id": None,
        "image": {"bytes": png(image), "path": None},
        "target_image": {"bytes": png(target), "path": None},
        "conversations": [
            {"from": "human", "value": f"<image>\nPlease do {task}."},
            {"from": "gpt", "value": "<target_image>"},
        ],
        "answer_type": None,
        "meta": "{}",
    }


# ------------------------------------------------------------ multiple-choice layouts

MMMU_ROWS = [
    # id, question, options, answer, question_type, img_type
    ("validation_Clinical_Medicine_1", "Which finding is shown in <image 1>?",
     ["Pneumonia", "Fracture", "Normal", "Edema"], "B", "multiple-choice", "['CT Scans']"),
    ("validation_Clinical_Medicine_2", "What is the likely diagnosis?",
     ["Gout", "Lupus", "Sarcoidosis"], "C", "multiple-choice", "['Microscopic Images']"),
    ("validation_Clinical_Medicine_3", "Give the dose in mg.", "[]", "5", "open", "['Tables']"),
]  # fmt: skip


def write_mmmu(root: Path) -> Path:
    """`<root>/Clinical_Medicine/validation-00000-of-00001.parquet` in HF MMMU's columns,
    plus a non-medical subject that must not be read."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [("id", pa.string()), ("question", pa.string()), ("options", pa.string())]
    fields += [("explanation", pa.string())]
    fields += [(f"image_{k}", image_type) for k in range(1, 8)]
    fields += [(n, pa.string()) for n in ("img_type", "answer", "topic_difficulty")]
    fields += [(n, pa.string()) for n in ("question_type", "subfield")]
    schema = pa.schema(fields)
    rows = []
    for id_, question, options, answer, qtype, img_type in MMMU_ROWS:
        row = {"id": id_, "question": question, "options": str(options), "explanation": ""}
        row.update({f"image_{k}": None for k in range(1, 8)})
        row["image_1"] = {"bytes": png(gray(7)), "path": "image_1.png"}
        row.update(img_type=img_type, answer=answer, topic_difficulty="Easy")
        row.update(question_type=qtype, subfield="Radiology")
        rows.append(row)
    for subject in ("Clinical_Medicine", "Art"):
        (root / subject).mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, root / subject / "validation-00000-of-00001.parquet")
    return root


OMNI_ROWS = [
    {"question_id": "ds_0", "question_type": "Modality Recognition",
     "question": "What modality is used?", "gt_answer": "CT", "image_path": "Images/ds/0.png",
     "option_A": "MRI", "option_B": "CT", "option_C": "X-ray", "option_D": "PET",
     "modality_type": "CT(Computed Tomography)", "dataset": "ds"},
    {"question_id": "ds_1", "question_type": "Disease Diagnosis",
     "question": "Is this fundus normal?", "gt_answer": "Glaucoma", "image_path": "Images/ds/1.png",
     "option_A": "Normal", "option_B": "Glaucoma",
     "modality_type": "Fundus Photography", "dataset": "ds"},
    {"question_id": "ds_2", "question_type": "Disease Diagnosis",
     "question": "Where is the lesion?", "gt_answer": "Nowhere listed",
     "image_path": "Images/ds/0.png",
     "option_A": "Liver", "option_B": "Lung", "modality_type": "CT", "dataset": "ds"},
    {"question_id": "ds_3", "question_type": "Anatomy Identification",
     "question": "Which organ?", "gt_answer": "Liver", "image_path": "Images/ds/missing.png",
     "option_A": "Liver", "option_B": "Lung", "modality_type": "MR (Mag-netic Resonance Imaging)",
     "dataset": "ds"},
]  # fmt: skip


def write_omnimedvqa(root: Path) -> Path:
    """`<root>/QA information/Open-access/ds.json` and `<root>/Images/ds/*.png`."""
    qa = root / "QA information" / "Open-access"
    qa.mkdir(parents=True, exist_ok=True)
    (qa / "ds.json").write_text(json.dumps(OMNI_ROWS))
    images = root / "Images" / "ds"
    images.mkdir(parents=True, exist_ok=True)
    for index in (0, 1):
        (images / f"{index}.png").write_bytes(png(gray(10 + index)))
    return root
