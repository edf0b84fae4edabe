"""A NIfTI folder sample: a small BIDS-like tree plus a lab-style folder, from real volumes.

Real: nibabel's test volumes (`anatomical.nii`, a 2 mm T1 stored LAS; `example4d.nii.gz`, a
4D EPI run) and nilearn's MNI152 2009 T1 template (at 4 mm, stored left-right flipped).
Planted: fictitious PHI in a folder name and in a sidecar (dcm2niix copies such fields), which
must not reach the shards. Bad input: a truncated .nii.gz.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from nibabel.testing import data_path

from healthgpt.data.samples.brain import flip_storage, load_brain, save_nifti, truncate_copy
from healthgpt.data.samples.seal import sealed

PLANTED_PHI = ("DOE_JANE", "MRN12345678", "St Example Hospital", "DOE^JANE", "19700101")
MNI_PATH = "DOE_JANE_MRN12345678/t1_mni_4mm.nii"

README = """\
NIfTI folder sample source (built by healthgpt.data.samples.nifti_folder)

REAL:      sub-01/anat/sub-01_T1w.nii.gz           nibabel test data anatomical.nii (2 mm T1, LAS)
           sub-02/func/sub-02_task-rest_bold.nii.gz nibabel test data example4d.nii.gz (4D EPI;
                                                   the reader uses volume 0)
           DOE_JANE_MRN12345678/t1_mni_4mm.nii      nilearn's MNI152 2009c T1 at 4 mm, stored
                                                   left-right flipped (LAS), no sidecar
PLANTED:   fictitious PHI in the folder name DOE_JANE_MRN12345678 and in sub-01's sidecar
           (PatientName, InstitutionName, AcquisitionDateTime); none may reach the shards.
BAD INPUT: sub-03/anat/sub-03_T1w.nii.gz is the first half of sub-01's file (truncated).
"""


@sealed
def build(dest: Path) -> None:
    """Write the sample under `dest` (deterministic bytes)."""
    anatomical = Path(data_path) / "anatomical.nii"
    anat_gz = gzip.compress(anatomical.read_bytes(), mtime=0)
    _write(dest / "sub-01/anat/sub-01_T1w.nii.gz", anat_gz)
    _sidecar(
        dest / "sub-01/anat/sub-01_T1w.json",
        {
            "Modality": "MR",
            "BodyPartExamined": "BRAIN",
            "PatientName": "DOE^JANE",
            "InstitutionName": "St Example Hospital",
            "AcquisitionDateTime": "19700101T120000",
        },
    )
    _write(
        dest / "sub-02/func/sub-02_task-rest_bold.nii.gz",
        (Path(data_path) / "example4d.nii.gz").read_bytes(),
    )
    _sidecar(dest / "sub-02/func/sub-02_task-rest_bold.json", {"Modality": "MR"})
    brain = load_brain((4.0, 4.0, 4.0))
    data, affine = flip_storage(brain.t1.data, brain.affine, axis=0)
    save_nifti(data, affine, dest / MNI_PATH)
    truncate_copy(anat_gz, dest / "sub-03/anat/sub-03_T1w.nii.gz")
    (dest / "SAMPLE_README.txt").write_text(README)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _sidecar(path: Path, fields: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
