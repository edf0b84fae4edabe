"""Edits to the bundled sample sources, as a publisher's update would make them."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path


def add_mimic_study(root: Path, subject: str, study: str, dicom: str) -> None:
    """Append one image of a new study to MIMIC-CXR's metadata and split tables."""
    values = {"subject_id": subject, "study_id": study, "dicom_id": dicom}
    extra = {"ViewPosition": "PA", "split": "train"}
    for table in ("metadata", "split"):
        path = next(root.glob(f"mimic-cxr-2.0.0-{table}.csv*"))
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", newline="") as handle:
            header = next(csv.reader(handle))
        with opener(path, "at", newline="") as handle:
            row = {**dict.fromkeys(header, ""), **values, **extra}
            csv.writer(handle).writerow([row[name] for name in header])
