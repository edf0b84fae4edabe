"""MIMIC-CXR-JPG in miniature: the PhysioNet layout, with the one real chest radiograph
that ships in a wheel (pydicom-data RG1_UNCR.dcm, CR, CHEST, PA) standing in for every image.

Identifiers are fake but well-formed (p10/p10000032/s5.../<dicom_id>.jpg), and PHI-like
values are planted where they must not leak: in paths, in the metadata's StudyDate /
StudyTime columns and in report sections other than FINDINGS and IMPRESSION.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from pathlib import Path

from healthgpt.data.samples import catalog
from healthgpt.data.samples.seal import sealed
from healthgpt.data.sources.mimic_cxr import CHEXPERT, CHEXPERT_LABELS, METADATA, SPLIT

# (subject_id, study_id, split, [(image label, ViewPosition, JPEG longer side)], report?)
STUDIES = (
    ("10000032", "50414267", "train", [("a", "PA", 512), ("b", "LL", 512)], True),
    ("10000032", "53189527", "train", [("c", "PA", 480)], True),
    ("10000764", "57375967", "train", [("d", "PA", 448), ("e", "", 448)], True),
    ("10000898", "50771383", "train", [("f", "PA", 416)], True),
    ("10001038", "58224387", "train", [("g", "PA", 384)], True),
    ("10001122", "54889211", "validate", [("h", "PA", 512)], True),
    ("10000935", "51178377", "test", [("i", "PA", 512)], True),
    ("10000935", "55697293", "test", [("j", "PA", 448)], True),
    # bad inputs: missing JPEG, empty JPEG, truncated JPEG, study without a report
    ("10002428", "59365520", "train", [("missing", "PA", 0), ("empty", "PA", 0)], True),
    ("10002428", "52000137", "train", [("truncated", "PA", 0)], True),
    ("10003400", "56705215", "train", [("noreport", "PA", 384)], False),
)
METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LL": "left lateral"}

REPORT = """\
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA)

 INDICATION:  ___ year old patient, MRN {subject_id}, accession {study_id}.

 TECHNIQUE:  Computed radiography of the chest.

 COMPARISON:  None.

 FINDINGS:

 Single frontal (posteroanterior) view of the chest, acquired with
 computed radiography.

 IMPRESSION:

 Frontal chest radiograph.

 NOTIFICATION:  Findings discussed with Dr. ___ on ___ at 10:15, study {study_id}.
"""


def dicom_id(subject_id: str, study_id: str, label: str) -> str:
    """A well-formed fake MIMIC dicom_id (five groups of eight hex digits)."""
    digest = hashlib.sha1(f"{subject_id}/{study_id}/{label}".encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def _write_csv_gz(path: Path, header: tuple[str, ...] | list[str], rows: list[list]) -> None:
    """gzip with mtime 0 so the bytes are the same on every build."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(text.getvalue().encode())


@sealed
def build(dest: Path) -> None:
    dest = Path(dest)
    chest = catalog.get("cr_chest_pa")
    metadata, splits, chexpert = [], [], []
    for number, (subject, study, split, images, has_report) in enumerate(STUDIES):
        study_dir = dest / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        study_dir.mkdir(parents=True, exist_ok=True)
        if has_report:
            report = REPORT.format(subject_id=subject, study_id=study)
            study_dir.with_suffix(".txt").write_text(report, encoding="utf-8")
        for label, view, side in images:
            image_id = dicom_id(subject, study, label)
            path = study_dir / f"{image_id}.jpg"
            if label == "empty":
                catalog.write_empty_jpeg(path)
            elif label == "truncated":
                catalog.write_truncated_jpeg(chest, path)
            elif label != "missing":
                catalog.write_jpeg(chest, path, max_side=side)
            width, height = catalog.to_pil(chest, side or 512).size
            metadata.append(
                [
                    image_id,
                    subject,
                    study,
                    "CHEST (PA AND LAT)",
                    view,
                    height,
                    width,
                    21800506 + number,  # shifted dates, as in MIMIC: still must not leak
                    f"{213014 + number}.531",
                    "CHEST (PA AND LAT)",
                    _VIEW_MEANING.get(view, ""),
                    "Erect",
                ]
            )
            splits.append([image_id, study, subject, split])
        chexpert.append([subject, study, *[""] * len(CHEXPERT_LABELS)])
    _write_csv_gz(dest / METADATA, METADATA_COLUMNS, metadata)
    _write_csv_gz(dest / SPLIT, ("dicom_id", "study_id", "subject_id", "split"), splits)
    _write_csv_gz(dest / CHEXPERT, ("subject_id", "study_id", *CHEXPERT_LABELS), chexpert)
    catalog.write_readme(
        dest,
        "MIMIC-CXR-JPG sample (healthgpt)",
        real=[
            "every JPEG is the same real PA chest radiograph, "
            + catalog.provenance(chest)
            + ", rendered by healthgpt.data.decode.dicom at several sizes (no real MIMIC data: "
            "MIMIC-CXR needs credentialed PhysioNet access); the test split therefore shares "
            "its image with train, which the mixture's decontamination must flag",
            "the report FINDINGS and IMPRESSION state only what that image's header states "
            "(a frontal PA computed radiograph of the chest)",
            "the layout, file names and CSV columns of MIMIC-CXR-JPG 2.0.0 and of the "
            "MIMIC-CXR reports",
        ],
        made_up=[
            "subject, study and dicom ids (fake, well-formed), StudyDate / StudyTime, the "
            "split assignment; PHI-like values are planted in paths, dates and the "
            "INDICATION / NOTIFICATION sections, none of which may reach the shards",
            "the ViewPosition LL of one image (its JPEG is the PA radiograph: no lateral chest "
            "film ships in any package) and a blank ViewPosition on another: both are "
            "skipped by frontal_only",
            "CheXpert labels are all blank (not mentioned), which is what the reports say",
            "bad inputs: a missing JPEG, an empty JPEG, a truncated JPEG, and a study with no "
            "report; their images must be quarantined",
        ],
    )
