"""PathVQA in miniature, from the one real pathology image that ships in a wheel.

scikit-image's immunohistochemistry picture (colonic glands, DAB for FHL2, hematoxylin
counterstain) is cut into a 3x3 grid of non-overlapping tiles; each tile is a real pathology
image about which the picture's description answers the questions. `build` writes the
authors' pickle layout; `build_parquet` writes the Hugging Face Parquet copy of the same rows.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healthgpt.data.samples import catalog
from healthgpt.data.samples.catalog import CatalogImage
from healthgpt.data.samples.seal import sealed

TILE = 170
# tile index (row-major in the 3x3 grid) -> (release split folder, image name)
TILES = (
    *[("train", f"train_{i:04d}") for i in range(6)],
    ("val", "val_0000"),
    ("test", "test_0000"),
    ("test", "test_0001"),
)
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def _questions(image: CatalogImage) -> list[tuple[str, str]]:
    facts = image.facts
    return [
        ("what reveals the expression of the protein?", facts["stain"].lower()),
        ("what was used as the counterstain?", facts["counterstain"]),
        ("the expression of which protein is revealed?", facts["protein"].lower()),
        ("from which organ was this tissue taken?", image.body_part),
        ("is this an immunohistochemistry stain?", "yes"),
        ("is this a radiograph?", "no"),
        ("is this image in color?", "yes"),
        ("is dab used to reveal protein expression?", "yes"),
    ]


def tiles() -> list[np.ndarray]:
    """The 3x3 grid of tiles of the IHC image, row-major."""
    array = catalog.get("pathology_ihc").array
    return [
        np.ascontiguousarray(array[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE])
        for r in range(3)
        for c in range(3)
    ]


def qa_rows() -> dict[str, list[dict[str, Any]]]:
    """The QA rows of each release split, including the rows that name bad images."""
    questions = _questions(catalog.get("pathology_ihc"))
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for split, name in TILES:
        rows[split] += [{"image": name, "question": q, "answer": a} for q, a in questions]
    for name in ("train_9990", "train_9991", "train_9992"):  # missing, empty, truncated
        rows["train"].append(
            {"image": name, "question": "is this image in color?", "answer": "yes"}
        )
    return rows


@sealed
def build(dest: Path) -> None:
    base = Path(dest) / "pvqa"
    for (split, name), tile in zip(TILES, tiles(), strict=True):
        catalog.write_jpeg(tile, base / "images" / split / f"{name}.jpg")
    catalog.write_empty_jpeg(base / "images" / "train" / "train_9991.jpg")
    ihc = catalog.get("pathology_ihc")
    catalog.write_truncated_jpeg(ihc, base / "images" / "train" / "train_9992.jpg")
    for split, rows in qa_rows().items():
        path = base / "qas" / split / f"{split}_qa.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(rows, protocol=4))
    catalog.write_readme(
        Path(dest),
        "PathVQA sample (healthgpt), authors' pickle layout",
        real=[
            f"the images: 9 non-overlapping {TILE}x{TILE} tiles of " + catalog.provenance(ihc),
            "the answers: from scikit-image's description of that picture (IHC of colonic "
            "glands, FHL2 revealed with DAB, hematoxylin counterstain)",
            "the layout: pvqa/images/<split>/<name>.jpg, pvqa/qas/<split>/<split>_qa.pkl "
            "holding a list of {image, question, answer}",
        ],
        made_up=[
            "image names, question wording, the split assignment",
            "bad inputs in train: train_9990 is missing, train_9991.jpg is empty, "
            "train_9992.jpg is truncated; their rows must be quarantined",
        ],
    )


@sealed
def build_parquet(dest: Path) -> None:
    """The same rows as the Hugging Face copy: data/<split>-00000-of-00001.parquet."""
    dest = Path(dest)
    images = {
        name: catalog.jpeg_bytes(tile) for (_, name), tile in zip(TILES, tiles(), strict=True)
    }
    images["train_9991"] = b""
    images["train_9992"] = catalog.jpeg_bytes(catalog.get("pathology_ihc"))[:2000]
    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("question", pa.string()),
            ("answer", pa.string()),
        ]
    )
    (dest / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in qa_rows().items():
        table = pa.Table.from_pylist(
            [
                {
                    "image": {"bytes": images.get(row["image"]), "path": None},
                    "question": row["question"],
                    "answer": row["answer"],
                }
                for row in rows
            ],
            schema=schema,
        )
        pq.write_table(table, dest / "data" / f"{HF_SPLITS[split]}-00000-of-00001.parquet")
    catalog.write_readme(
        dest,
        "PathVQA sample (healthgpt), Hugging Face Parquet layout",
        real=["the same tiles and answers as the pickle layout sample"],
        made_up=[
            "train rows for train_9990 (no bytes), train_9991 (empty), train_9992 (truncated)"
        ],
    )
